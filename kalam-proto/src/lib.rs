//! # kalam-proto: the sans-IO core of a KalamDB client
//!
//! This crate holds everything a KalamDB client knows about the protocol and
//! nothing about how bytes move. It never opens a socket, never reads a clock,
//! never draws a random number and never spawns a task. The runtime adapters
//! (`kalam-tokio`, `kalam-async-std`) do that and feed the results in.
//!
//! ## Inputs and outputs
//!
//! A machine takes three kinds of input:
//!
//! - **user operations**: [`AuthMachine::submit`] (run SQL, fetch a token…),
//!   [`AuthMachine::set_credentials`];
//! - **network data**: [`AuthMachine::handle_response`] (an HTTP answer),
//!   [`AuthMachine::handle_transport_error`];
//! - **time**: [`AuthMachine::handle_timeout`] when [`AuthMachine::poll_timeout`]
//!   is reached, and a [`Now`] with every other input.
//!
//! It gives three kinds of output, drained with [`AuthMachine::poll_output`]:
//! a request to send ([`Output::Transmit`]), a call for the application's
//! credentials ([`Output::FetchCredentials`]), and an operation's result
//! ([`Output::Done`]). Plus one timer: [`AuthMachine::poll_timeout`].
//!
//! Everything is `&mut self`; nothing happens between calls, so every state
//! transition can be tested by calling functions with hand-made times.
//!
//! ## The run loop
//!
//! A driver is a loop like this (here with a fake transport that answers every
//! login and query at once):
//!
//! ```
//! use std::time::Duration;
//! use kalam_proto::{AuthConfig, AuthMachine, AuthProvider, Endpoints, Now, Operation, Output, QueryRequest, Reply};
//!
//! # fn send(req: &http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
//! #     let body = if req.uri().path().ends_with("/login") {
//! #         r#"{"user":{"id":"root","role":"system","email":null},"admin_ui_access":true,
//! #             "expires_at":"x","access_token":"t","refresh_token":"r","refresh_expires_at":"x"}"#
//! #     } else {
//! #         r#"{"status":"success","results":[{"row_count":0,"message":"ok","as_user":"root"}],"took":1.0}"#
//! #     };
//! #     http::Response::new(body.as_bytes().to_vec())
//! # }
//! let endpoints = Endpoints::new("http://localhost:2900")?;
//! let auth = AuthProvider::system_user_auth("kalamdb123".into());
//! let mut now = Now::from_secs(0, 1_800_000_000);
//! let mut machine = AuthMachine::new(endpoints, auth, AuthConfig::default(), now);
//!
//! let op = machine.submit(Operation::Query(QueryRequest::new("SELECT 1")), now);
//! loop {
//!     match machine.poll_output() {
//!         // A real driver sends this over HTTP, concurrently with other work.
//!         Some(Output::Transmit { id, request, .. }) => {
//!             let response = send(&request);
//!             now = now.advance(Duration::from_millis(2));
//!             machine.handle_response(id, &response, now);
//!         }
//!         Some(Output::FetchCredentials { .. }) => unreachable!("no callbacks configured"),
//!         Some(Output::Done { op: done, result }) => {
//!             assert_eq!(done, op);
//!             assert!(matches!(result?, Reply::Query(_)));
//!             break;
//!         }
//!         // Nothing to do: wait for the network or `machine.poll_timeout()`.
//!         None => break,
//!     }
//! }
//! # Ok::<(), kalam_proto::Error>(())
//! ```
//!
//! The basic credentials went to the login endpoint once; the query carried
//! the JWT that came back.
//!
//! ## What else is here
//!
//! - [`framing`]: requests as `http::Request<Vec<u8>>` values and decoders for
//!   every answer, including the server's three error body shapes.
//! - [`jwt`]: reading a token's claims (`exp`, `token_type`…) without verifying it.
//! - [`types`]: login answers, query results, rows with typed access
//!   (64-bit integers arrive as strings and read back as `i64`).
//! - [`AuthProvider`], [`Error`] and its server [`ErrorCode`]s, [`Secret`].
//!
//! `clippy.toml` in this crate forbids `Instant::now`, `SystemTime::now`,
//! threads and `std::net`, so the discipline is checked, not just promised.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod callbacks;
pub mod client;
mod error;
pub mod framing;
pub mod gzip;
pub mod jwt;
mod live;
pub mod machine;
mod options;
mod secret;
mod time;
pub mod types;
pub mod ws;
pub mod ws_messages;

pub use auth::{AuthProvider, SYSTEM_USER, bearer_header};
pub use callbacks::{AuthFuture, AuthRefreshCallback, DynamicAuthProvider};
pub use client::{Answer, ClientConfig, ClientCore, CoreOutput, Hook};
pub use error::{DecodeError, Error, ErrorCode, Result, ServerError, TransportError};
pub use framing::{Endpoints, QueryRequest};
pub use live::LiveRows;
pub use machine::{
    AuthConfig, AuthMachine, AuthState, CredentialRequestId, CredentialSource, Decoded, OpId, Operation, Output, Reply,
    RequestId, RequestKind, decode,
};
pub use options::{ConnectionOptions, KalamLinkTimeouts};
pub use secret::Secret;
pub use time::{Instant, Now};
pub use types::{
    CellError, ColumnRef, FromValue, KalamDataType, LoginResponse, MeResponse, QueryResponse, QueryResult, QueryStatus,
    Row, SchemaField, UserInfo,
};
pub use ws::{DEFAULT_SEND_BURST, DEFAULT_SEND_RATE};
pub use ws::{Incoming, LiveEvent, SubId, WsConfig, WsEvent, WsOutput, WsSession, WsState};
pub use ws_messages::{LiveRow, SubscriptionOptions};
