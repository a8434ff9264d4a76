//! # kalam-tokio: a KalamDB client on Tokio
//!
//! The kalam client for Tokio applications. This crate is I/O only: it
//! gives [`kalam_driver`] a Tokio runtime ([`rt::Tokio`]: spawn, clock, timer,
//! HTTP/1.1 on hyper's connection API, Tokio TCP and tokio-rustls under the
//! WebSocket). The client's API and its driver task (which polls the HTTP
//! exchanges and the WebSocket itself) are written once, in `kalam-driver`;
//! every protocol decision (login, token expiry, refresh, `TOKEN_EXPIRED`
//! recovery, subscriptions, pacing, reconnects) is made by `kalam-proto`'s
//! [`ClientCore`](kalam_proto::ClientCore).
//!
//! ```no_run
//! use kalam_tokio::{AuthProvider, KalamLinkClient};
//!
//! # async fn run() -> kalam_tokio::Result<()> {
//! let client = KalamLinkClient::builder()
//!     .base_url("http://localhost:2900")
//!     .auth(AuthProvider::basic_auth("root".into(), "kalamdb123".into()))
//!     .build()?;
//!
//! // Basic credentials are exchanged for a JWT at login, once; queries carry the JWT.
//! let response = client.execute_query("SELECT 1").await?;
//! for row in response.rows() {
//!     println!("{row:?}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Live queries share one WebSocket, which reconnects by itself, asks a
//! `DynamicAuthProvider` again, and resumes every subscription from the
//! last `_seq` it delivered:
//!
//! ```no_run
//! use kalam_tokio::{AuthProvider, ConnectionOptions, KalamLinkClient, LiveEvent};
//!
//! # async fn run() -> kalam_tokio::Result<()> {
//! let client = KalamLinkClient::builder()
//!     .base_url("http://localhost:2900")
//!     .auth(AuthProvider::system_user_auth("kalamdb123".into()))
//!     .connection_options(ConnectionOptions::default().with_ws_lazy_connect(false))
//!     .on_disconnect(|reason| eprintln!("socket closed: {reason}"))
//!     .build()?;
//!
//! // The current rows, kept up to date.
//! let mut orders = client.live("SELECT * FROM shop.orders").await?;
//! if let Some(rows) = orders.next().await {
//!     println!("{} orders", rows?.len());
//! }
//!
//! // Or the changes themselves.
//! let mut events = client.live_events("SELECT * FROM shop.orders WHERE qty > 10").await?;
//! while let Some(event) = events.next().await {
//!     if let LiveEvent::Insert { row } = event? {
//!         println!("big order: {row:?}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `live()` and `live_events()` return once the server has acknowledged the
//! subscription (within [`KalamLinkTimeouts::subscribe_timeout`]); a refused
//! subscription is an `Err` from the call. Subscribe frames are paced below
//! the server's 50 messages per second per connection.
//!
//! The driver task runs while any handle is alive: a client clone or a live
//! stream. A live stream keeps delivering after the client is dropped;
//! dropping the last handle closes the WebSocket and stops the task.
//!
//! When a live query's consumer falls behind and its buffer
//! ([`ConnectionOptions::subscription_buffer`]) fills, that query alone
//! ends with [`Error::SubscriptionLagged`] after the buffered events; the
//! others are not delayed.
//!
//! Topics are read with a consumer group, at least once: acknowledge after
//! processing ([`TopicConsumer::ack`]), or commit each batch when the next is
//! asked for ([`ConsumerBuilder::enable_auto_commit`]). An empty poll backs
//! off on Tokio's clock (the server does not hold polls open):
//!
//! ```no_run
//! use kalam_tokio::{AutoOffsetReset, KalamLinkClient};
//!
//! # async fn run(client: KalamLinkClient) -> kalam_tokio::Result<()> {
//! let mut consumer = client
//!     .consumer()
//!     .topic("shop.order_events")
//!     .group_id("shipping")
//!     .auto_offset_reset(AutoOffsetReset::Earliest)
//!     .build()?;
//! while let Some(record) = consumer.next().await {
//!     let record = record?;
//!     let order: serde_json::Value = record.payload_json()?;
//!     println!("{} {order}", record.offset);
//!     consumer.ack(record.offset).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`KalamLinkClient::health_check`], [`KalamLinkClient::needs_setup`] and
//! [`KalamLinkClient::setup`] need no token; the server answers them only on
//! its own machine ([`Error::LocalhostOnly`] from elsewhere).
//!
//! Features: `auth-flows` (default: explicit [`KalamLinkClient::login`] and
//! [`KalamLinkClient::refresh_access_token`]), `rustls` (https and wss),
//! `gzip` (accept compressed WebSocket frames), `http2`, `time` (TIMESTAMP,
//! DATE and TIME columns into the `time` crate's types:
//! `rows::time_columns`).

#![forbid(unsafe_code)]
// docs.rs shows which feature each gated item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod compat;
#[cfg(feature = "http2")]
mod h2;
mod http;
mod net;
pub mod rt;

pub use compat::compat;

/// The client and its builder as written once, for any runtime, with every
/// method documented here. An application names them through the aliases
/// [`KalamLinkClient`] and [`KalamLinkClientBuilder`] (these, on
/// [`rt::Tokio`]); code generic over the runtime uses them directly.
pub mod generic {
    #[doc(inline)]
    pub use kalam_driver::{KalamLinkClient, KalamLinkClientBuilder};
}

/// A KalamDB client on Tokio: [`generic::KalamLinkClient`] on
/// [`rt::Tokio`], where every method is documented (`execute_query`,
/// `live_events`, `live`, `consumer`, `upload`/`download`, `connect`, …).
pub type KalamLinkClient = generic::KalamLinkClient<rt::Tokio>;
/// Builds a [`KalamLinkClient`]: [`generic::KalamLinkClientBuilder`] on
/// [`rt::Tokio`], where every option is documented.
pub type KalamLinkClientBuilder = generic::KalamLinkClientBuilder<rt::Tokio>;

pub use kalam_driver::prelude::*;
