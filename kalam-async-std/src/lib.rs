//! # kalam-async-std: a KalamDB client for async-std and smol applications
//!
//! The same client as `kalam-tokio`, name for name (`KalamLinkClient`, its
//! builder, `AuthProvider`, `DynamicAuthProvider`, `auth_refresher`, live
//! queries, hooks, options, the topic consumer [`TopicConsumer`],
//! `health_check` and `setup`), on async-std I/O: this crate only gives
//! [`kalam_driver`] an async-std runtime ([`rt::AsyncStd`]: spawn, clock,
//! timer, HTTP/1.1 with async-h1, async-std TCP under the WebSocket). The
//! API and the driver task are written once in `kalam-driver`; every
//! protocol decision is `kalam-proto`'s.
//!
//! ```no_run
//! use kalam_async_std::{AuthProvider, KalamLinkClient};
//!
//! # async fn run() -> kalam_async_std::Result<()> {
//! let client = KalamLinkClient::builder()
//!     .base_url("http://localhost:2900")
//!     .auth(AuthProvider::basic_auth("root".into(), "kalamdb123".into()))
//!     .build()?;
//! let response = client.execute_query("SELECT 1").await?;
//! println!("{} rows", response.rows().count());
//! # Ok(())
//! # }
//! ```
//!
//! **smol.** The client's own tasks run on async-std's global executor, and
//! its handles and streams work on any executor, so an application that runs
//! on `smol` uses this crate as it is (a test runs a session from
//! `smol::block_on`).
//!
//! **Maintenance.** async-std is discontinued upstream in favour of smol,
//! and surf (whose HTTP/1.1 engine, async-h1, this crate uses directly) is
//! no longer maintained. This crate keeps them behind two small modules
//! (`rt` and `http`), so the runtime and the HTTP backend can be swapped
//! without touching the client.
//!
//! **Where the driver runs.** A caller waiting for an answer (in
//! `block_on`, `#[async_std::main]`, `smol::block_on` or a task) polls the
//! client's driver on its own thread while no one else is, so a query costs
//! no cross-thread wake-up; the driver's own task takes over whenever no
//! caller waits, and within 10 ms of a wake-up a caller left unused.
//!
//! **surf** (feature `surf`). Every request goes through a `surf::Client`:
//! by default one over this crate's own pool, with the application's
//! middleware added by [`HttpBackend::surf_with`](rt::HttpBackend), or the
//! application's own client ([`HttpBackend::surf`](rt::HttpBackend)), given
//! to [`KalamLinkClientBuilder::http_backend`](generic::KalamLinkClientBuilder::http_backend).
//! Over this crate's pool nothing else changes: the connection cap, early
//! answers to uploads, closing a cancelled request's connection, streamed
//! uploads and downloads, proxies and TLS all hold. The application's own
//! client sends with its own connections, proxies and TLS (a proxy that
//! would apply to the server is refused: surf would ignore it); surf's
//! `h1-client` pool writes an upload whole before reading the answer (an
//! early refusal is a transport error), takes back a connection whose
//! request was cancelled mid-way, and brings Tokio (through deadpool 0.7).
//! Without the feature, and with it over this crate's pool, there is no
//! Tokio in the tree.
//!
//! Features: `auth-flows` (default: explicit [`KalamLinkClient::login`] and
//! [`KalamLinkClient::refresh_access_token`]), `rustls` (`https://` and
//! `wss://`, pure-Rust TLS with the webpki roots: no C dependency), `gzip`
//! (accept compressed WebSocket frames), `time` (TIMESTAMP, DATE and TIME
//! columns into the `time` crate's types: `rows::time_columns`), `surf`
//! (above).

#![forbid(unsafe_code)]
// docs.rs shows which feature each gated item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod deadline;
mod http;
mod net;
pub mod rt;
#[cfg(feature = "surf")]
mod surf;

/// The client and its builder as written once, for any runtime, with every
/// method documented here. An application names them through the aliases
/// [`KalamLinkClient`] and [`KalamLinkClientBuilder`] (these, on
/// [`rt::AsyncStd`]); code generic over the runtime uses them directly.
pub mod generic {
    #[doc(inline)]
    pub use kalam_driver::{KalamLinkClient, KalamLinkClientBuilder};
}

/// A KalamDB client on async-std: [`generic::KalamLinkClient`] on
/// [`rt::AsyncStd`], where every method is documented (`execute_query`,
/// `live_events`, `live`, `consumer`, `upload`/`download`, `connect`, …).
pub type KalamLinkClient = generic::KalamLinkClient<rt::AsyncStd>;
/// Builds a [`KalamLinkClient`]: [`generic::KalamLinkClientBuilder`] on
/// [`rt::AsyncStd`], where every option is documented.
pub type KalamLinkClientBuilder = generic::KalamLinkClientBuilder<rt::AsyncStd>;

pub use kalam_driver::prelude::*;
