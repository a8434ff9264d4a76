//! # kalam-testkit: an in-process KalamDB-compatible server
//!
//! A server that speaks KalamDB's wire protocol (HTTP and WebSocket, as in
//! `../shared/PROTOCOL.md`) inside the test process, bound to 127.0.0.1 on a
//! free port, with a real SQL engine (SQLite) behind `POST /v1/api/sql`,
//! real HS256 JWTs, and controls to make it misbehave on purpose.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use kalam_testkit::{Mint, TestServer};
//!
//! let server = TestServer::builder().token_lifetime(Duration::from_secs(3600)).start().await;
//! let url = server.url(); // http://127.0.0.1:PORT, root / kalamdb123
//! let expired = server.mint_token(Mint::access("root").expired());
//! server.force_expire_all(); // every token issued so far now answers TOKEN_EXPIRED
//! assert_eq!(server.counters().logins, 0);
//! server.shutdown().await;
//! # let _ = (url, expired);
//! # }
//! ```
//!
//! Like the server, it limits each WebSocket to 50 text messages a second
//! (a burst over that is dropped, one `RATE_LIMIT_EXCEEDED` error frame per
//! message) and each user to 10 live subscriptions across connections
//! (`SUBSCRIPTION_LIMIT_EXCEEDED`); the builder can change both. A live
//! query sees exactly the changes committed after the server registered it.
//!
//! Topics (`CREATE TOPIC`, `ALTER TOPIC … ADD SOURCE`, and
//! `POST /v1/api/topics/consume` / `ack`) work as on the server: see
//! [Topics](#topics) below and PROTOCOL §5.
//!
//! FILE columns work too (PROTOCOL §3.6): a multipart `POST /v1/api/sql`
//! with `file:<placeholder>` parts stores each file in memory and the
//! FileRef JSON (`id`, `sub`, `name`, `size`, `mime`, `sha256`) in the
//! column; `GET /v1/files/{ns}/{table}/{sub}/{stored_name}` (see
//! [`stored_name`]) serves it back. [`TestServerBuilder::max_file_size`]
//! lowers the 25 MiB per-file limit so `FILE_TOO_LARGE` can be tested.
//!
//! The localhost-only endpoints (`/health`, `/v1/api/healthcheck`,
//! `/v1/api/cluster/health`, `/v1/api/auth/status`, `POST /v1/api/auth/setup`)
//! answer as on a local server; [`TestServerBuilder::remote_peers`] makes
//! them answer as to a remote caller, and [`TestServerBuilder::needs_setup`]
//! starts a server whose root has no password yet.
//!
//! It is not KalamDB: it has no Raft and no storage (everything is in
//! memory), and SQL is SQLite's with KalamDB's namespaces, types and answer
//! shapes on top.
//!
//! # Topics
//!
//! A topic is created with `CREATE TOPIC ns.name [PARTITIONS n]` and fed by
//! `ALTER TOPIC ns.name ADD SOURCE ns.table ON INSERT|UPDATE|DELETE
//! [WITH (payload = 'key')]` (admins only). Each committed change of a routed
//! table becomes a message: the row as JSON (base64 in the answer) with
//! `_seq`, `_deleted`, `_commit_seq` and `_table`, its primary key as `key`,
//! the writer as `user` (USER and STREAM tables), on the partition the key
//! hashes to. `consume` needs a `service`, `dba` or `system` role; it reads
//! from the group's committed offset + 1, else from `start`; the range it
//! hands out stays claimed by the group (not handed out to it again) until
//! acknowledged or until [`TestServerBuilder::topic_visibility_timeout`]
//! passes, as on the server.
//!
//! ## Where the kit differs from the server on purpose
//!
//! Every recorded WebSocket session of `../shared/wire-samples` replays
//! frame for frame on the kit and on the real server (`tests/ws_replay.rs`).
//! Kept different, each for a reason:
//! - The auth timeout (3 s) is checked at once, not on the server's 5 s
//!   heartbeat tick (the server closes between 3 and about 8 s); the
//!   heartbeat timeout is [`TestServerBuilder::ws_idle_timeout`]
//!   (default 10 s), also checked at once rather than on the tick. Tests
//!   stay fast and the timing stays within the server's documented range.
//! - System tables (`system.users`) can be subscribed to, as on the
//!   server, but have no initial rows and never change: the kit keeps its
//!   users outside its tables.
//! - Subscription SQL is parsed by hand: the recorded error texts are the
//!   server's; other malformed queries get texts in the server's style
//!   that were not checked against it.
//! - Frame limits are the WebSocket library's: a frame over 64 KiB is
//!   accepted (the server drops the TCP connection) and a fragmented
//!   message is put together (the server ignores it).
//!
//! [`TestServerBuilder::ws_idle_timeout`]: crate::TestServerBuilder::ws_idle_timeout

#![forbid(unsafe_code)]
// docs.rs shows which feature each gated item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

// The server's parts, each by concern: the builder and the running server
// (its controls), what a test reads and provokes (`controls`), the shared
// state, the HTTP routes, the SQL engine, the WebSocket side, topics, files,
// rate limits, first-time setup, tokens, and the dates the server writes.
mod builder;
pub mod cluster;
mod controls;
mod dates;
mod files;
pub mod forward_proxy;
mod http;
pub mod jwt;
mod limits;
mod proxy;
pub mod real;
pub mod real_cluster;
mod server;
mod setup;
pub mod shape;
mod sql;
mod state;
pub mod tls;
mod topics;
mod ws;

pub use builder::TestServerBuilder;
pub use cluster::KitCluster;
pub use controls::{Counters, Fault, Mint, SeenRequest};
pub use files::{DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_FILES_PER_REQUEST, sha256_hex, stored_name};
pub use forward_proxy::HttpProxy;
pub use jwt::{Claims, Refusal, sign as sign_jwt, verify as verify_jwt};
pub use proxy::{FaultProxy, SeenRequest as ProxiedRequest};
pub use real::RealServer;
pub use real_cluster::RealCluster;
pub use server::TestServer;
pub use sql::Change;
pub use tls::{Issued, TestCa, TlsTerminator, Validity};
pub use topics::DEFAULT_TOPIC_VISIBILITY_TIMEOUT;

pub(crate) use dates::{http_date, now_rfc3339_millis, rfc3339, unix_now, unix_now_ms};
pub(crate) use state::{State, WsControls, WsLimits};

/// The root password unless the builder says otherwise.
pub const DEFAULT_ROOT_PASSWORD: &str = "kalamdb123";
/// The JWT secret unless the builder says otherwise (the real server's test secret).
pub const DEFAULT_JWT_SECRET: &str = "local-test-secret-0123456789abcdefghijklmnop";
/// The server version the kit claims.
pub const VERSION: &str = "0.4.3-rc.4";
/// The `build_date` of the kit's health answers.
pub const BUILD_DATE: &str = "kalam-testkit";

/// The real server's defaults of its WebSocket limits (PROTOCOL §6,
/// `[rate_limit]`).
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_USER: usize = 10;
/// Text messages per second per WebSocket connection (token bucket of this
/// capacity, refilled at this rate).
pub const DEFAULT_MAX_WS_MESSAGES_PER_SEC: u32 = 50;
