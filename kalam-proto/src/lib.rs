//! # kalam-proto: the sans-IO core of a KalamDB client
//!
//! This crate holds everything a KalamDB client knows about the protocol and
//! nothing about how bytes move. It never opens a socket, never reads a clock,
//! never draws a random number and never spawns a task. The driver in
//! `kalam-driver`, on a runtime adapter (`kalam-tokio`, `kalam-async-std`),
//! does that and feeds the results in.
//!
//! ## The client core
//!
//! [`ClientCore`] is the whole client without its I/O. It owns the auth
//! lifecycle machine ([`AuthMachine`]: login, expiry, refresh, `TOKEN_EXPIRED`
//! recovery, single flight) and the WebSocket session ([`WsSession`]:
//! authenticate, subscriptions, paging, keepalive, pacing, backoff, resume),
//! and makes every decision between them. Each machine also works alone.
//!
//! It takes three kinds of input, each with the current time ([`Now`]):
//!
//! - **commands**: [`submit`](ClientCore::submit) (SQL, `me`, login…),
//!   [`subscribe`](ClientCore::subscribe), [`connect`](ClientCore::connect),
//!   [`set_credentials`](ClientCore::set_credentials), …, each with a *waiter*:
//!   any value of the driver's choosing (a reply channel, a number), given
//!   back exactly once with its result;
//! - **network and application data**: [`handle_http`](ClientCore::handle_http),
//!   [`handle_frame`](ClientCore::handle_frame),
//!   [`handle_credentials`](ClientCore::handle_credentials), …;
//! - **time**: [`handle_timeout`](ClientCore::handle_timeout) when
//!   [`poll_timeout`](ClientCore::poll_timeout) is reached.
//!
//! What must happen next comes out of [`poll_output`](ClientCore::poll_output):
//! send a request or a frame, open or close the socket, call a credential
//! callback, answer a waiter, deliver events to a subscription, notify a hook.
//! Everything is `&mut self`; nothing happens between calls; the crate never
//! calls `Instant::now()`, spawns nothing and owns no threads.
//!
//! ## The run loop
//!
//! A driver is one loop like this one, which answers HTTP from a fake server
//! (a real driver runs exchanges concurrently, and decodes them with
//! [`decode`] wherever it likes):
//!
//! ```
//! use std::time::Duration;
//! use kalam_proto::*;
//!
//! # fn exchange(req: &http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
//! #     let body = if req.uri().path().ends_with("/login") {
//! #         r#"{"user":{"id":"root","role":"system","email":null},"admin_ui_access":true,
//! #             "expires_at":"x","access_token":"t","refresh_token":"r","refresh_expires_at":"x"}"#
//! #     } else {
//! #         r#"{"status":"success","results":[{"row_count":0,"message":"ok","as_user":"root"}],"took":1.0}"#
//! #     };
//! #     http::Response::new(body.as_bytes().to_vec())
//! # }
//! let config = ClientConfig::new(&ConnectionOptions::default(), &KalamLinkTimeouts::default(), 42);
//! let auth = AuthProvider::system_user_auth("kalamdb123".into());
//! let mut now = Now::from_secs(0, 1_800_000_000);
//! let mut core = ClientCore::new(Endpoints::new("http://localhost:2900")?, auth, config, now);
//!
//! core.submit(Operation::Query(QueryRequest::new("SELECT 1")), "my query", now);
//! 'run: loop {
//!     while let Some(output) = core.poll_output() {
//!         match output {
//!             CoreOutput::SendHttp { id, request, .. } => {
//!                 let response = exchange(&request);
//!                 now = now.advance(Duration::from_millis(2));
//!                 core.handle_http_response(id, &response, now);
//!             }
//!             CoreOutput::OpenSocket { attempt, .. } => {
//!                 // Open it; report `handle_socket_open(attempt, now)`, every
//!                 // frame with `handle_frame`, the end with `handle_socket_closed`.
//!                 core.handle_socket_closed(attempt, None, "no sockets here", now);
//!             }
//!             CoreOutput::SendUpload { .. } => {} // see `files`: streamed by a real driver
//!             CoreOutput::SendText(_) | CoreOutput::SendPing | CoreOutput::CloseSocket { .. } => {}
//!             CoreOutput::FetchCredentials { id, .. } => {
//!                 // Await the application's callback, then:
//!                 core.handle_credentials(id, Err(Error::MissingCredentials), now);
//!             }
//!             CoreOutput::Deliver { sub, events } => {
//!                 // Into the subscriber's bounded queue; if it is full:
//!                 // core.handle_subscriber_full(sub, now);
//!                 let _ = (sub, events);
//!             }
//!             CoreOutput::EndSubscription { .. } => {} // end that stream
//!             CoreOutput::Hook(hook) => println!("{hook:?}"),
//!             CoreOutput::Complete { waiter, result } => {
//!                 assert_eq!(waiter, "my query");
//!                 assert!(matches!(result?, Answer::Reply(Reply::Query(_))));
//!                 break 'run;
//!             }
//!         }
//!     }
//!     // Nothing to do: wait for the network, or for the next deadline.
//!     let Some(at) = core.poll_timeout() else { break };
//!     now = now.advance(at.saturating_duration_since(now.instant));
//!     core.handle_timeout(now);
//! }
//! # Ok::<(), kalam_proto::Error>(())
//! ```
//!
//! The basic credentials went to the login endpoint once; the query carried
//! the JWT that came back. `kalam-driver` runs exactly this loop on any
//! async runtime.

//! ## What else is here
//!
//! - [`client`]: the core; [`auth_machine`] and [`ws`]: the two machines.
//! - [`ops`]: the operations, their replies, and [`ENDPOINTS`], the one
//!   table that declares every HTTP endpoint (route, method, token,
//!   decoder, recovery rule).
//! - [`framing`]: requests as `http::Request<Vec<u8>>` values and decoders for
//!   every answer, including the server's three error body shapes.
//! - [`topics`]: the topic consumer's framing and its pure poll/commit/back-off
//!   state machine ([`ConsumerState`]); [`admin`]: health check and first-time setup.
//! - [`files`]: FILE columns: multipart upload plans and their limits,
//!   [`FileRef`], download paths.
//! - [`ws_messages`]: WebSocket messages, [`LiveRow`] and
//!   [`SubscriptionOptions`]; [`gzip`]: compressed frames (feature `gzip`).
//! - [`jwt`]: reading a token's claims (`exp`, `token_type`…) without verifying it.
//! - [`types`]: login answers, query results, rows with typed access
//!   (64-bit integers arrive as strings and read back as `i64`).
//! - [`AuthProvider`], [`Error`] and its server [`ErrorCode`]s, [`Secret`].
//!
//! `clippy.toml` in this crate forbids `Instant::now`, `SystemTime::now`,
//! threads and `std::net`, so the discipline is checked, not just promised.

#![forbid(unsafe_code)]
// docs.rs shows which feature each gated item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod admin;
mod auth;
pub mod auth_machine;
mod callbacks;
pub mod client;
mod error;
pub mod files;
pub mod framing;
pub mod gzip;
pub mod jwt;
pub mod live;
pub mod nodes;
pub mod ops;
mod options;
pub mod proxy;
pub mod rows;
mod secret;
mod statement;
mod time;
pub mod topics;
pub mod types;
pub mod ws;
pub mod ws_messages;

pub use admin::{ClusterHealth, ClusterNode, HealthResponse, SetupRequest, SetupResponse, SetupStatus};
pub use auth::{AuthProvider, SYSTEM_USER, bearer_header};
pub use auth_machine::{
    AuthConfig, AuthMachine, AuthOutput, AuthState, CredentialRequestId, CredentialSource, OpId, RequestId,
};
pub use callbacks::{AuthFuture, AuthRefreshCallback, DynamicAuthProvider};
pub use client::{Answer, ClientConfig, ClientCore, CoreOutput, Hook};
pub use error::{DecodeError, Error, ErrorCode, Result, ServerError, TlsFailure, TransportError};
pub use files::{DownloadInfo, FileLimits, FileRef, Segment, UploadFile, UploadPlan, UploadRequest};
pub use framing::{Endpoints, Param, QueryRequest};
pub use live::{LiveEvent, LiveRow, LiveRows, LiveRowsAs, SubscriptionInfo, SubscriptionState, TypedLiveEvent};
pub use nodes::{NodeFailure, NodeSwitch, Nodes};
pub use ops::{Decoded, ENDPOINTS, Endpoint, Operation, Reply, RequestKind, TokenUse, decode};
pub use options::{ConnectionOptions, HttpVersion, KalamLinkTimeouts};
pub use proxy::{ProxyConfig, ProxyMode};
pub use rows::Timestamp;
pub use secret::Secret;
pub use time::{Instant, Now};
pub use topics::{
    AckRequest, AckResponse, AutoOffsetReset, ConsumeRequest, ConsumeResponse, ConsumerConfig, ConsumerRecord,
    ConsumerState, ConsumerStep, TopicOp,
};
pub use types::{
    CellError, ColumnRef, FromValue, KalamDataType, LoginResponse, MeResponse, QueryResponse, QueryResult, QueryStatus,
    Row, SchemaField, UserInfo,
};
pub use ws::{DEFAULT_SEND_BURST, DEFAULT_SEND_RATE};
pub use ws::{Incoming, SubId, WsConfig, WsEvent, WsOutput, WsSession, WsState};
pub use ws_messages::SubscriptionOptions;
