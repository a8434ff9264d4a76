//! # kalam-tokio: a KalamDB client on Tokio
//!
//! A thin driver of the [`kalam_proto`] machines: one task per client owns
//! the auth machine, sends the requests it asks for over a pooled hyper
//! client, calls the application's credential callbacks, and arms its timer.
//! All protocol logic (login, token expiry, refresh, `TOKEN_EXPIRED`
//! recovery, error decoding) lives in `kalam-proto`.
//!
//! ```no_run
//! use kalam_tokio::{AuthProvider, KalamLinkClient};
//!
//! # async fn run() -> kalam_tokio::Result<()> {
//! let client = KalamLinkClient::builder()
//!     .base_url("http://localhost:2900")
//!     .auth(AuthProvider::basic_auth("admin".into(), "kalamdb123".into()))
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
//! When a live query's consumer falls behind and its buffer
//! ([`ConnectionOptions::subscription_buffer`]) fills, that query alone
//! ends with [`Error::SubscriptionLagged`] after the buffered events; the
//! others are not delayed.
//!
//! Features: `auth-flows` (default: explicit [`KalamLinkClient::login`] and
//! [`KalamLinkClient::refresh_access_token`]), `rustls` (https and wss),
//! `gzip` (accept compressed WebSocket frames).

#![forbid(unsafe_code)]

mod client;
mod driver;
mod http;
mod live;
mod ws;

pub use client::{DEFAULT_BASE_URL, KalamLinkClient, KalamLinkClientBuilder};
pub use kalam_proto::{
    AuthProvider, AuthRefreshCallback, CellError, ConnectionOptions, DynamicAuthProvider, Error, ErrorCode,
    KalamDataType, KalamLinkTimeouts, LoginResponse, MeResponse, QueryRequest, QueryResponse, QueryResult, Result, Row,
    SchemaField, Secret, ServerError, TransportError, UserInfo,
};
pub use kalam_proto::{LiveEvent, LiveRow, LiveRows, SubId, SubscriptionOptions};
pub use live::{LiveEvents, LiveQuery};
