//! The catalogue of operations, and the one table that declares every
//! HTTP endpoint.
//!
//! An [`Operation`] is what a caller asks of the client; its result is a
//! [`Reply`]. Each operation but [`Operation::Token`] is one HTTP request of
//! a [`RequestKind`], and [`ENDPOINTS`] is the single place where a kind's
//! route, method, token, decoder and recovery rule are declared: the auth
//! machine, the request builder ([`crate::framing::request`]) and the
//! decoder ([`decode`]) all read it, so none of them matches on kinds.
//!
//! Adding an endpoint means: a variant in [`Operation`], [`RequestKind`]
//! and [`Reply`] (all three below), one row of [`ENDPOINTS`], the decoder
//! it names, and its tests.
//!
//! ## The recovery rule
//!
//! A request that carries the client's access token ([`TokenUse::Access`])
//! and is refused with `TOKEN_EXPIRED`, or with `INVALID_CREDENTIALS` while
//! the client has a way to another token, is retried once after the token
//! is renewed, shared by every request waiting ([`Endpoint::recovers`]). The
//! server refuses such a request before running it, so sending it again is
//! safe (an upload from a reader excepted: its data cannot be read twice).
//! Requests that carry no access token (login, refresh, health, setup)
//! cannot be helped by a new one: their errors go straight to the caller.

use http::{HeaderMap, Method, StatusCode};

use crate::admin::{self, ClusterHealth, HealthResponse, SetupRequest, SetupResponse, SetupStatus};
use crate::error::{Error, Result};
use crate::files::{self, DownloadInfo, UploadRequest};
use crate::framing::{self, QueryRequest};
use crate::secret::Secret;
use crate::topics::{self, AckRequest, AckResponse, ConsumeRequest, ConsumeResponse};
use crate::types::{LoginResponse, MeResponse, QueryResponse};

/// What an operation asks for.
#[derive(Debug, Clone)]
pub enum Operation {
    /// Run SQL (`POST /v1/api/sql`) with a valid token.
    Query(QueryRequest),
    /// Run SQL like [`Operation::Query`], and answer a successful answer's
    /// bytes ([`Reply::QueryBody`]) for the caller to read its rows
    /// straight into its own types ([`crate::rows::answer_rows_as`]).
    /// Refusals are decoded, and recovered from, as a query's.
    QueryRows(QueryRequest),
    /// `GET /v1/api/auth/me` with a valid token.
    Me,
    /// Hand out a valid access token (for the WebSocket `authenticate`).
    /// With `fresh`, a configured dynamic provider is asked again rather
    /// than a cached token handed out (every WebSocket reconnect does this).
    /// Not an HTTP request of its own.
    Token {
        /// Ask the dynamic provider for new credentials.
        fresh: bool,
    },
    /// An explicit login; answers the token pair and changes no state.
    Login {
        /// User id.
        user: String,
        /// Password.
        password: Secret,
    },
    /// An explicit refresh; answers the token pair and changes no state.
    Refresh {
        /// The refresh token.
        refresh_token: Secret,
    },
    /// Read topic messages (`POST /v1/api/topics/consume`) with a valid
    /// token, like a query.
    ConsumeTopic(ConsumeRequest),
    /// Commit a consumer group's offset (`POST /v1/api/topics/ack`) with a
    /// valid token, like a query.
    AckTopic(AckRequest),
    /// `GET /v1/api/healthcheck`, without a token (localhost only).
    Health,
    /// `GET /v1/api/auth/status`, without a token (localhost only).
    SetupStatus,
    /// `POST /v1/api/auth/setup`, without a token (localhost only).
    Setup(SetupRequest),
    /// `GET /v1/api/cluster/health`, without a token (localhost only).
    ClusterHealth,
    /// Run one SQL statement with files (multipart `POST /v1/api/sql`) with
    /// a valid token. Retried after `TOKEN_EXPIRED` like a query when its
    /// data can be read again; otherwise answered
    /// [`Error::UploadNotReplayable`] once the token is renewed.
    Upload(UploadRequest),
    /// `GET` a FILE column's file (the path from
    /// [`FileRef::download_path`](crate::FileRef::download_path)) with a
    /// valid token. Answers the head; the driver streams the body.
    Download {
        /// `/v1/files/…`.
        path: String,
        /// The driver's name for where the body goes, attached to the
        /// request as a [`DownloadSink`](crate::files::DownloadSink).
        sink: u64,
    },
}

/// The result of an operation.
#[derive(Debug, Clone)]
pub enum Reply {
    /// For [`Operation::Query`] and [`Operation::Upload`].
    Query(QueryResponse),
    /// For [`Operation::QueryRows`]: the body of a 2xx answer, not yet
    /// read (a `status: "error"` inside it is found by the reader).
    QueryBody(Vec<u8>),
    /// For [`Operation::Me`].
    Me(MeResponse),
    /// For [`Operation::Token`].
    Token(Secret),
    /// For [`Operation::Login`] and [`Operation::Refresh`].
    Login(LoginResponse),
    /// For [`Operation::ConsumeTopic`].
    Consume(ConsumeResponse),
    /// For [`Operation::AckTopic`].
    Ack(AckResponse),
    /// For [`Operation::Health`].
    Health(HealthResponse),
    /// For [`Operation::SetupStatus`].
    SetupStatus(SetupStatus),
    /// For [`Operation::Setup`].
    Setup(SetupResponse),
    /// For [`Operation::ClusterHealth`].
    ClusterHealth(ClusterHealth),
    /// For [`Operation::Download`]: the file is there; its bytes are in
    /// the answer's body, which the driver streams.
    Download(DownloadInfo),
}

/// Which kind of HTTP exchange a request is. Its row of [`ENDPOINTS`]
/// ([`RequestKind::endpoint`]) says everything else about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `POST /v1/api/auth/login`.
    Login,
    /// `POST /v1/api/auth/refresh`.
    Refresh,
    /// `GET /v1/api/auth/me`.
    Me,
    /// `POST /v1/api/sql`.
    Query,
    /// `POST /v1/api/topics/consume`.
    ConsumeTopic,
    /// `POST /v1/api/topics/ack`.
    AckTopic,
    /// `GET /v1/api/healthcheck`.
    Health,
    /// `GET /v1/api/auth/status`.
    SetupStatus,
    /// `POST /v1/api/auth/setup`.
    Setup,
    /// `POST /v1/api/sql` with files: sent as
    /// [`AuthOutput::TransmitUpload`](crate::AuthOutput::TransmitUpload);
    /// the answer is decoded like a query's.
    Upload,
    /// `GET /v1/files/…`: the body of a 2xx answer is the file, streamed to
    /// the caller (see [`crate::files::download_streams_body`]); only the
    /// head is decoded.
    Download,
    /// `GET /v1/api/cluster/health`.
    ClusterHealth,
    /// `POST /v1/api/sql`, for rows read by the caller
    /// ([`Operation::QueryRows`]).
    QueryRows,
}

/// Which credential a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// None: the endpoint is open (to localhost, for health and setup), or
    /// the credentials travel in the body (login).
    None,
    /// The refresh token, as `Authorization: Bearer`.
    Refresh,
    /// The client's access token, as `Authorization: Bearer`. With
    /// `required`, a client without credentials fails the operation with
    /// [`Error::MissingCredentials`] instead of sending it anonymously.
    Access {
        /// No anonymous request.
        required: bool,
    },
}

/// One HTTP endpoint: everything the client knows about a [`RequestKind`].
#[derive(Debug)]
pub struct Endpoint {
    /// The kind this row describes (its index in [`ENDPOINTS`]).
    pub kind: RequestKind,
    /// The HTTP method.
    pub method: Method,
    /// The path under the base URL (for [`RequestKind::Download`], the
    /// route every download path must start with).
    pub path: &'static str,
    /// Which credential it carries.
    pub token: TokenUse,
    /// Refused with `TOKEN_EXPIRED`, or `INVALID_CREDENTIALS` while the
    /// client has a way to another token: renew the token and send it once
    /// more (see the [module docs](self)).
    pub recovers: bool,
    /// Turns a whole answer into a reply, or the server's typed error.
    pub decode: fn(StatusCode, &HeaderMap, &[u8]) -> Result<Reply>,
}

const ACCESS: TokenUse = TokenUse::Access { required: false };

/// Every endpoint, indexed by [`RequestKind`] (`ENDPOINTS[kind as usize]`).
pub static ENDPOINTS: [Endpoint; 13] = [
    Endpoint {
        kind: RequestKind::Login,
        method: Method::POST,
        path: "/v1/api/auth/login",
        token: TokenUse::None,
        recovers: false,
        decode: |s, h, b| framing::decode_login(s, h, b).map(Reply::Login),
    },
    Endpoint {
        kind: RequestKind::Refresh,
        method: Method::POST,
        path: "/v1/api/auth/refresh",
        token: TokenUse::Refresh,
        recovers: false,
        decode: |s, h, b| framing::decode_login(s, h, b).map(Reply::Login),
    },
    Endpoint {
        kind: RequestKind::Me,
        method: Method::GET,
        path: "/v1/api/auth/me",
        token: TokenUse::Access { required: true },
        recovers: true,
        decode: |s, h, b| framing::decode_me(s, h, b).map(Reply::Me),
    },
    Endpoint {
        kind: RequestKind::Query,
        method: Method::POST,
        path: "/v1/api/sql",
        token: ACCESS,
        recovers: true,
        decode: |s, h, b| framing::decode_query(s, h, b).map(Reply::Query),
    },
    Endpoint {
        kind: RequestKind::ConsumeTopic,
        method: Method::POST,
        path: "/v1/api/topics/consume",
        token: ACCESS,
        recovers: true,
        decode: |s, h, b| topics::decode_consume(s, h, b).map(Reply::Consume),
    },
    Endpoint {
        kind: RequestKind::AckTopic,
        method: Method::POST,
        path: "/v1/api/topics/ack",
        token: ACCESS,
        recovers: true,
        decode: |s, h, b| topics::decode_ack(s, h, b).map(Reply::Ack),
    },
    Endpoint {
        kind: RequestKind::Health,
        method: Method::GET,
        path: "/v1/api/healthcheck",
        token: TokenUse::None,
        recovers: false,
        decode: |s, h, b| admin::decode_health(s, h, b).map(Reply::Health),
    },
    Endpoint {
        kind: RequestKind::SetupStatus,
        method: Method::GET,
        path: "/v1/api/auth/status",
        token: TokenUse::None,
        recovers: false,
        decode: |s, h, b| admin::decode_setup_status(s, h, b).map(Reply::SetupStatus),
    },
    Endpoint {
        kind: RequestKind::Setup,
        method: Method::POST,
        path: "/v1/api/auth/setup",
        token: TokenUse::None,
        recovers: false,
        decode: |s, h, b| admin::decode_setup(s, h, b).map(Reply::Setup),
    },
    Endpoint {
        kind: RequestKind::Upload,
        method: Method::POST,
        path: "/v1/api/sql",
        token: ACCESS,
        recovers: true,
        decode: |s, h, b| framing::decode_query(s, h, b).map(Reply::Query),
    },
    Endpoint {
        kind: RequestKind::Download,
        method: Method::GET,
        path: "/v1/files/",
        token: ACCESS,
        recovers: true,
        decode: |s, h, b| files::decode_download(s, h, b).map(Reply::Download),
    },
    Endpoint {
        kind: RequestKind::ClusterHealth,
        method: Method::GET,
        path: "/v1/api/cluster/health",
        token: TokenUse::None,
        recovers: false,
        decode: |s, h, b| admin::decode_cluster_health(s, h, b).map(Reply::ClusterHealth),
    },
    Endpoint {
        kind: RequestKind::QueryRows,
        method: Method::POST,
        path: "/v1/api/sql",
        token: ACCESS,
        recovers: true,
        decode: |s, h, b| framing::query_body(s, h, b).map(Reply::QueryBody),
    },
];

impl RequestKind {
    /// This kind's row of [`ENDPOINTS`].
    pub fn endpoint(self) -> &'static Endpoint {
        &ENDPOINTS[self as usize]
    }
}

/// An HTTP answer decoded for the kind of request it answers, ready for
/// [`AuthMachine::handle_decoded`](crate::AuthMachine::handle_decoded).
#[derive(Debug)]
pub struct Decoded {
    /// The kind of request it answers (a reply for another kind is ignored).
    pub kind: RequestKind,
    /// The reply, or the server's typed error.
    pub result: Result<Reply>,
    /// The answer's `Date` header (the server's clock, Unix seconds), when
    /// it had a valid one.
    pub date: Option<u64>,
}

/// Decodes an answer with the decoder its request's kind calls for. Pure and
/// `Send`: a driver may run it in the request's own task, in parallel with
/// other answers, and feed the result to
/// [`AuthMachine::handle_decoded`](crate::AuthMachine::handle_decoded);
/// every decision (retry, refusal, recovery) stays in the machine.
pub fn decode(kind: RequestKind, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Decoded {
    Decoded {
        kind,
        result: (kind.endpoint().decode)(status, headers, body),
        date: headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth_machine::parse_http_date),
    }
}

impl Operation {
    /// The kind of request this operation sends; `None` for
    /// [`Operation::Token`], which sends none of its own.
    pub fn kind(&self) -> Option<RequestKind> {
        Some(match self {
            Operation::Query(_) => RequestKind::Query,
            Operation::QueryRows(_) => RequestKind::QueryRows,
            Operation::Me => RequestKind::Me,
            Operation::Token { .. } => return None,
            Operation::Login { .. } => RequestKind::Login,
            Operation::Refresh { .. } => RequestKind::Refresh,
            Operation::ConsumeTopic(_) => RequestKind::ConsumeTopic,
            Operation::AckTopic(_) => RequestKind::AckTopic,
            Operation::Health => RequestKind::Health,
            Operation::SetupStatus => RequestKind::SetupStatus,
            Operation::Setup(_) => RequestKind::Setup,
            Operation::Upload(_) => RequestKind::Upload,
            Operation::Download { .. } => RequestKind::Download,
            Operation::ClusterHealth => RequestKind::ClusterHealth,
        })
    }

    /// Whether it may be sent again after its answer was lost (the
    /// connection failed after the request was written, or a cluster node
    /// answered `NOT_LEADER`, `CLUSTER_UNAVAILABLE` or `FORWARD_FAILED`):
    /// what reads or can run twice without harm. Login, refresh, health and
    /// the other reads; a topic consume (what it hands out stays claimed
    /// until acknowledged or its visibility timeout passes, so a lost answer
    /// is handed out again later) and an acknowledgement (committing the
    /// same offset twice changes nothing); SQL that is
    /// [`retry_safe`](QueryRequest::retry_safe). Never: other SQL, uploads,
    /// the first-time setup.
    pub fn retry_safe(&self) -> bool {
        match self {
            Operation::Query(q) | Operation::QueryRows(q) => q.retry_safe(),
            Operation::Upload(_) | Operation::Setup(_) => false,
            Operation::Me
            | Operation::Token { .. }
            | Operation::Login { .. }
            | Operation::Refresh { .. }
            | Operation::ConsumeTopic(_)
            | Operation::AckTopic(_)
            | Operation::Health
            | Operation::SetupStatus
            | Operation::ClusterHealth
            | Operation::Download { .. } => true,
        }
    }

    /// The JSON body of its request (empty when it has none). Refused
    /// input (a non-finite parameter, an oversized statement) is an error
    /// before anything is sent.
    pub(crate) fn body(&self) -> Result<Vec<u8>> {
        match self {
            Operation::Query(q) | Operation::QueryRows(q) => q.to_body(),
            Operation::ConsumeTopic(r) => r.to_body(),
            Operation::AckTopic(r) => r.to_body(),
            Operation::Setup(r) => r.to_body(),
            Operation::Login { user, password } => Ok(framing::login_body(user, password)),
            _ => Ok(Vec::new()),
        }
    }
}

impl Reply {
    /// The reply of a different type than asked for: a bug in whoever
    /// routed it, never the server's doing.
    pub fn unexpected(self) -> Error {
        Error::Runtime(format!("the driver answered with the wrong kind of reply: {self:?}"))
    }
}

macro_rules! reply_conversions {
    ($($variant:ident => $ty:ty),* $(,)?) => {$(
        impl TryFrom<Reply> for $ty {
            type Error = Reply;
            fn try_from(reply: Reply) -> std::result::Result<Self, Reply> {
                match reply {
                    Reply::$variant(r) => Ok(r),
                    other => Err(other),
                }
            }
        }
    )*};
}

reply_conversions! {
    Query => QueryResponse,
    QueryBody => Vec<u8>,
    Me => MeResponse,
    Token => Secret,
    Login => LoginResponse,
    Consume => ConsumeResponse,
    Ack => AckResponse,
    Health => HealthResponse,
    SetupStatus => SetupStatus,
    Setup => SetupResponse,
    ClusterHealth => ClusterHealth,
    Download => DownloadInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_by_kind() {
        for (i, e) in ENDPOINTS.iter().enumerate() {
            assert_eq!(e.kind as usize, i, "{:?} is out of place", e.kind);
            assert!(std::ptr::eq(e.kind.endpoint(), e));
        }
    }

    #[test]
    fn exactly_the_requests_with_an_access_token_recover() {
        for e in &ENDPOINTS {
            assert_eq!(e.recovers, matches!(e.token, TokenUse::Access { .. }), "{:?}", e.kind);
        }
    }
}
