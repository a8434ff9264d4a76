//! # kalam-driver: the runtime-neutral half of the kalam client
//!
//! (Not `kalam-client`: that is the name of upstream's official Rust client.)
//!
//! The application-facing API of the kalam KalamDB client, written once for
//! every runtime: [`KalamLinkClient`] and its builder, the live-query
//! streams [`LiveEvents`] and [`LiveQuery`], the topic consumer
//! [`TopicConsumer`], and the driver task that owns
//! `kalam-proto`'s [`ClientCore`](kalam_proto::ClientCore) and polls the
//! HTTP exchanges and the WebSocket itself. It is generic over a small
//! [`Runtime`] trait (spawn, clock, timer, an HTTP client, file open, a
//! connected byte stream for the WebSocket), as sqlx keeps one core over
//! several runtimes.
//!
//! Applications use an adapter crate, which names the types for its
//! runtime: `kalam-tokio` (Tokio, hyper) or `kalam-async-std` (async-std,
//! async-h1). Nothing here makes a protocol decision: those are all in
//! `kalam-proto`; nothing here does I/O: that is the adapter's.
//!
//! FILE columns: [`KalamLinkClient::execute_with_files`] streams uploads
//! from paths, bytes or async readers ([`FileUpload`], with
//! [`UploadProgress`]), and [`KalamLinkClient::download_file`] streams a
//! [`FileRef`](kalam_proto::FileRef)'s file to any `AsyncWrite`; framing,
//! limits and retries are `kalam-proto`'s ([`kalam_proto::files`]).
//!
//! The handle and stream plumbing (reply slots, the command channel,
//! subscriber queues) is `std` `Mutex` + `Waker`, so it works on any
//! executor; no lock is held across an `.await`.

#![forbid(unsafe_code)]
// docs.rs shows which feature each gated item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod adapter;
mod client;
mod consumer;
mod drive;
mod driver;
mod files;
mod live;
mod msg;
mod socket;
mod sync;
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub mod tls;

pub use client::{DEFAULT_BASE_URL, EventHandlers, KalamLinkClient, KalamLinkClientBuilder};
pub use consumer::{ConsumerBuilder, TopicConsumer};
pub use files::{FileDownload, FileSource, FileUpload, UploadProgress};

/// The names an application uses, re-exported by each adapter beside its
/// own `KalamLinkClient` and `KalamLinkClientBuilder`.
pub mod prelude {
    pub use crate::DEFAULT_BASE_URL;
    pub use crate::client::EventHandlers;
    pub use crate::consumer::{ConsumerBuilder, TopicConsumer};
    pub use crate::files::{FileDownload, FileSource, FileUpload, UploadProgress};
    pub use crate::live::{LiveEvents, LiveEventsAs, LiveQuery, LiveQueryAs};
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub use crate::tls::TlsConfig;
    /// Rows into the application's types: the wire rules, [`Timestamp`],
    /// and (feature `time`) `rows::time_columns`.
    pub use kalam_proto::rows;
    pub use kalam_proto::rows::Timestamp;
    pub use kalam_proto::{
        AckResponse, AutoOffsetReset, ClusterHealth, ClusterNode, ConsumerRecord, HealthResponse, SetupRequest,
        SetupResponse, SetupStatus, TopicOp,
    };
    pub use kalam_proto::{
        AuthProvider, AuthRefreshCallback, CellError, ConnectionOptions, DownloadInfo, DynamicAuthProvider, Error,
        ErrorCode, FileRef, KalamDataType, KalamLinkTimeouts, LiveEvent, LiveRow, LiveRows, LiveRowsAs, LoginResponse,
        MeResponse, Param, QueryRequest, QueryResponse, QueryResult, Result, Row, SchemaField, Secret, ServerError,
        SubId, SubscriptionInfo, SubscriptionOptions, SubscriptionState, TlsFailure, TransportError, TypedLiveEvent,
        UserInfo,
    };
    pub use kalam_proto::{HttpVersion, ProxyConfig, ProxyMode};
}
/// The runtime an adapter supplies (see [`adapter`]); code generic over
/// the runtime, such as a test suite run on both, names it here.
pub use adapter::Runtime;
pub use live::{LiveEvents, LiveEventsAs, LiveQuery, LiveQueryAs};
