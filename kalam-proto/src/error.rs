//! Typed errors.
//!
//! Every failure is a variant of [`Error`]. Answers from the server keep the
//! server's own code ([`ErrorCode`]), the HTTP status and the message, whichever
//! of the server's error body shapes they came in. No error ever carries a
//! password or token.

use std::fmt;
use std::sync::Arc;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong.
///
/// `Error` is `Clone` so one failure (a refused login, say) can be handed to
/// every request that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error (any of its error body shapes), or
    /// with `status: "error"` in a 200 answer.
    #[error("{0}")]
    Server(#[from] ServerError),

    /// The server's answer could not be understood (not JSON where JSON was
    /// due, a truncated stream, a missing field).
    #[error("could not decode the server's answer: {0}")]
    Decode(#[from] DecodeError),

    /// The request never got an answer: connection refused or reset, DNS,
    /// TLS, or a timeout.
    #[error("transport error: {0}")]
    Transport(#[from] TransportError),

    /// A cell of a result row could not be read as asked (no such column, or
    /// a value of another type), so `row.get("id")?` works in a function
    /// that returns this crate's `Result`.
    #[error("{0}")]
    Cell(#[from] crate::types::CellError),

    /// A parameter is a NaN or infinite float. JSON has no such numbers, so
    /// it would reach the server as NULL; it is refused before sending.
    #[error("parameter ${position} is {value}, which JSON cannot carry (it would reach the server as NULL)")]
    NonFiniteParameter {
        /// The parameter's position (`$1` is 1).
        position: usize,
        /// The value.
        value: f64,
    },

    /// The base URL given to the builder is not usable.
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },

    /// A setting given to the builder, or read from the environment, is
    /// not usable (a proxy URL, a PEM certificate or key).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Basic credentials are exchanged for a JWT at login and never stamped
    /// on a request (see [`AuthProvider::apply_to_request`](crate::AuthProvider::apply_to_request)).
    #[error("basic credentials are only sent to the login endpoint; log in first and use the JWT")]
    BasicAuthNotStampable,

    /// A refresh token was offered where an access token is required.
    #[error("a refresh token was given where an access token is required")]
    RefreshTokenAsAccessToken,

    /// The access token is expired (by the server's clock as the client
    /// estimates it, with its skew) and the client has no way to get a new
    /// one: no refresh token, refresher, dynamic provider or password.
    #[error("the access token has expired and no way to renew it is configured")]
    TokenExpired,

    /// A token the client just obtained was already expired by the server's
    /// own clock (as estimated from its answers), past even the server's
    /// leeway: the clocks, or the server's token lifetime, are wrong.
    #[error(
        "the token from {from} expired {ago_secs} s before it arrived (by the server's clock, \
         estimated {offset_secs:+} s from this client's); check the clocks and the token lifetime"
    )]
    StaleToken {
        /// Where it came from: `login`, `refresh`, `the refresher`, `the provider`.
        from: &'static str,
        /// How long before its arrival it expired.
        ago_secs: u64,
        /// The server's clock minus the client's, as estimated.
        offset_secs: i64,
    },

    /// A warning, not a failure (through the `on_error` hook only): the
    /// server's clock differs from this client's by this much. Token
    /// expiry is judged on the server's clock, so nothing breaks; other
    /// time-based logic of the application may.
    #[error("the server's clock is {offset_secs:+} s from this client's; token expiry is corrected for it")]
    ClockSkew {
        /// The server's clock minus the client's, in seconds.
        offset_secs: i64,
    },

    /// The server refused the WebSocket authentication (`auth_error`; the
    /// server does not say why: bad, expired or refresh token alike).
    #[error("WebSocket authentication refused: {0}")]
    WsAuthFailed(String),

    /// No credentials are configured for an operation that needs them.
    #[error("no credentials are configured")]
    MissingCredentials,

    /// The application's `DynamicAuthProvider` or `AuthRefreshCallback`
    /// returned an error.
    #[error("the credential callback failed: {0}")]
    CredentialCallback(Arc<Error>),

    /// Invalid input from the caller (for example a parameter that cannot be
    /// encoded).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The client cannot run here (for example it was built outside the
    /// async runtime its adapter needs).
    #[error("runtime: {0}")]
    Runtime(String),

    /// A live query's consumer fell behind: its buffer of `capacity` events
    /// filled up, so the subscription was ended (others were not affected).
    /// Subscribe again from the last `_seq` processed to continue.
    #[error("the live query's consumer fell behind (buffer of {capacity} events full); subscription ended")]
    SubscriptionLagged {
        /// The buffer size.
        capacity: usize,
    },

    /// The server did not acknowledge a subscription in time
    /// ([`KalamLinkTimeouts::subscribe_timeout`](crate::KalamLinkTimeouts::subscribe_timeout)).
    #[error("the server did not acknowledge the subscription within {0:?}")]
    SubscribeTimeout(std::time::Duration),

    /// The server answers this endpoint (health, setup) only to a client on
    /// its own machine (a loopback peer), and this client is not one. A
    /// remote client checks readiness with an authenticated `SELECT 1`.
    #[error(
        "the server answers {endpoint} only to clients on its own machine (localhost); \
         from elsewhere, check readiness with an authenticated query such as SELECT 1 ({server})"
    )]
    LocalhostOnly {
        /// The endpoint's path.
        endpoint: &'static str,
        /// The server's 403 answer.
        server: ServerError,
    },

    /// A file of an upload is larger than
    /// [`ConnectionOptions::max_file_bytes`](crate::ConnectionOptions::max_file_bytes);
    /// nothing was sent.
    #[error("file {name:?} is {size} bytes; at most {limit} bytes per file are accepted")]
    FileTooLarge {
        /// The file's name.
        name: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// An upload has more files than
    /// [`ConnectionOptions::max_files_per_request`](crate::ConnectionOptions::max_files_per_request);
    /// nothing was sent.
    #[error("{count} files in one upload; at most {limit} are accepted")]
    TooManyFiles {
        /// Files given.
        count: usize,
        /// The limit.
        limit: usize,
    },

    /// An upload's body (files and framing) is larger than
    /// [`ConnectionOptions::max_upload_body_bytes`](crate::ConnectionOptions::max_upload_body_bytes);
    /// nothing was sent.
    #[error("the upload would be {size} bytes; at most {limit} bytes per request are accepted")]
    UploadTooLarge {
        /// The body's size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// The server answered `TOKEN_EXPIRED` to an upload whose data came from
    /// an async reader, which cannot be read twice. The upload was sent
    /// once and not run; the token has been renewed, so uploading again
    /// (with a new reader) will go through.
    #[error(
        "the server refused the upload's token (TOKEN_EXPIRED) and its reader cannot be sent twice; the token was renewed, upload again"
    )]
    UploadNotReplayable,

    /// A local file given to an upload (`FileUpload::from_path`) could not
    /// be opened or read for its length; nothing was sent. `source.kind()`
    /// says why (not found, permission denied…).
    #[error("cannot open {path:?} for the upload: {source}")]
    FileSource {
        /// The path given.
        path: std::path::PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },

    /// The client (its driver task) has shut down.
    #[error("the client is closed")]
    Closed,

    /// A statement that may change data was sent to a cluster node, and
    /// its answer was lost (the connection failed after the request was
    /// written, or the node could not forward it): it may or may not have
    /// run. It was not sent again, so it ran at most once; check before
    /// repeating it (only with several nodes configured; see the
    /// [`nodes`](crate::nodes) module).
    #[error("the outcome is unknown: {node} failed after the statement was sent ({source}); it was not sent again")]
    OutcomeUnknown {
        /// The base URL of the node it was sent to.
        node: String,
        /// What failed.
        source: Box<Error>,
    },

    /// An error from application code, carried through (for example from a
    /// token store inside a `DynamicAuthProvider`).
    #[error("{0}")]
    Other(Arc<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Wraps any application error.
    pub fn other<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        Error::Other(Arc::new(e))
    }

    /// A plain message as an application error.
    pub fn msg(message: impl Into<String>) -> Self {
        #[derive(Debug)]
        struct Msg(String);
        impl fmt::Display for Msg {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for Msg {}
        Error::Other(Arc::new(Msg(message.into())))
    }

    /// The server's error, if this is one.
    pub fn server(&self) -> Option<&ServerError> {
        match self {
            Error::Server(e) | Error::LocalhostOnly { server: e, .. } => Some(e),
            _ => None,
        }
    }

    /// The server's error code, if this is a server error.
    pub fn code(&self) -> Option<&ErrorCode> {
        self.server().map(|e| &e.code)
    }

    /// Whether the server said the token expired (the one answer worth a
    /// refresh and a retry), or the client found it expired itself.
    pub fn is_token_expired(&self) -> bool {
        matches!(self, Error::TokenExpired) || self.code() == Some(&ErrorCode::TokenExpired)
    }

    /// Whether a cluster node said it cannot serve the request now
    /// (`NOT_LEADER`, `CLUSTER_UNAVAILABLE`, `FORWARD_FAILED`): another
    /// node, or the same one after an election, may.
    pub fn is_cluster_transient(&self) -> bool {
        self.is_not_leader()
            || matches!(
                self.code(),
                Some(ErrorCode::ClusterUnavailable | ErrorCode::ForwardFailed)
            )
    }

    /// Whether a cluster node refused the request because it does not lead
    /// the data's shard (so it did not run it): `NOT_LEADER`, or the
    /// server's `400 SQL_EXECUTION_ERROR` "Not leader for shard" (seen
    /// during elections; the one message this client reads, for want of a
    /// code).
    pub fn is_not_leader(&self) -> bool {
        match self.server() {
            Some(e) => {
                e.code == ErrorCode::NotLeader
                    || (e.code == ErrorCode::SqlExecutionError && e.message.contains("Not leader for shard"))
            }
            None => false,
        }
    }

    /// Whether something between the client and a node answered for it:
    /// `502`, `503` or `504` without a KalamDB error body (a proxy or load
    /// balancer that could not reach or hear from the node). With several
    /// nodes, that node is left as if it had failed.
    pub fn is_gateway_failure(&self) -> bool {
        matches!(self, Error::Server(e) if matches!(e.status, 502..=504) && e.code == ErrorCode::Unspecified)
    }

    /// Whether the request may have run although its answer was lost
    /// ([`Error::OutcomeUnknown`]).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. })
    }

    /// Whether the credentials themselves were refused (wrong password,
    /// unknown user, bad or foreign token). Retrying with the same
    /// credentials cannot help.
    pub fn is_credentials_rejected(&self) -> bool {
        match self {
            Error::Server(e) => e.is_credentials_rejected(),
            Error::RefreshTokenAsAccessToken => true,
            _ => false,
        }
    }
}

/// The server's error code, from any of its error shapes. Known codes have
/// their own variant; anything else is kept verbatim in [`ErrorCode::Other`].
///
/// Which code a failure gets is the server's choice, and not always the one
/// its name suggests (PROTOCOL §3.3):
/// - A wrong password at login is [`Unauthorized`](Self::Unauthorized)
///   (401); a token refused on a query is
///   [`InvalidCredentials`](Self::InvalidCredentials).
///   [`Error::is_credentials_rejected`] covers both.
/// - Over SQL, every execution failure is
///   [`SqlExecutionError`](Self::SqlExecutionError): an unknown table or
///   namespace, a duplicate key, "already exists". For a user without an
///   admin role the server even replaces the message of some (a missing
///   table reads `SQL statement failed`). There is no code for "already
///   exists": use `CREATE … IF NOT EXISTS`. [`NotFound`](Self::NotFound)
///   comes from a live query on an unknown table and from the topic and
///   file endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    // Bearer authentication on /v1/api/sql and friends (PROTOCOL §2.9.2).
    /// `TOKEN_EXPIRED`: the only answer that calls for refresh-and-retry.
    TokenExpired,
    /// `INVALID_CREDENTIALS`: the token was refused (bad signature, the
    /// user's role changed, the server's secret rotated). Not a wrong
    /// password: that is [`Unauthorized`](Self::Unauthorized).
    InvalidCredentials,
    /// `MISSING_AUTHORIZATION`.
    MissingAuthorization,
    /// `AUTHENTICATION_ERROR`.
    AuthenticationError,
    // Auth endpoints (§2.9.1), lower-case kinds on the wire.
    /// `unauthorized` (login with a wrong password, a refused refresh…).
    Unauthorized,
    /// `account_locked` (or `ACCOUNT_LOCKED`).
    AccountLocked,
    /// `forbidden`.
    Forbidden,
    /// `setup_required` (or `SETUP_REQUIRED`).
    SetupRequired,
    /// `rate_limited` (auth endpoints: more than 20 per second).
    RateLimited,
    /// `internal_error` / `INTERNAL_ERROR`.
    InternalError,
    // First-time setup (§2.8).
    /// `already_configured`: setup was done already (root has a password).
    AlreadyConfigured,
    /// `weak_password`: a setup password is too short or too simple.
    WeakPassword,
    /// `invalid_user`: the setup's user id is not acceptable.
    InvalidUser,
    /// `user_exists`: the setup's user exists already.
    UserExists,
    // SQL (§3.3).
    /// `INVALID_SQL`.
    InvalidSql,
    /// `SQL_EXECUTION_ERROR`: anything that failed while running, an unknown
    /// table or namespace and "already exists" included.
    SqlExecutionError,
    /// `EMPTY_SQL`.
    EmptySql,
    /// `INVALID_INPUT`.
    InvalidInput,
    /// `INVALID_PARAMETER`.
    InvalidParameter,
    /// `PARAMS_WITH_BATCH`.
    ParamsWithBatch,
    /// `BATCH_PARSE_ERROR`.
    BatchParseError,
    /// `PERMISSION_DENIED`.
    PermissionDenied,
    /// `RATE_LIMIT_EXCEEDED` (queries per user, or the protection middleware).
    RateLimitExceeded,
    /// `IP_BANNED`.
    IpBanned,
    /// `BODY_TOO_LARGE`.
    BodyTooLarge,
    /// `NOT_LEADER` (cluster).
    NotLeader,
    /// `CLUSTER_UNAVAILABLE` (cluster).
    ClusterUnavailable,
    /// `FORWARD_FAILED` (cluster).
    ForwardFailed,
    /// `NOT_FOUND` (or `not_found`): a live query on an unknown table, an
    /// unknown topic. Not sent for SQL over HTTP (an unknown table there is
    /// [`SqlExecutionError`](Self::SqlExecutionError)).
    NotFound,
    /// The answer carried no code at all (a plain-text 400, an HTML 502 page…):
    /// only the HTTP status says what happened.
    Unspecified,
    /// Any other code, verbatim.
    Other(String),
}

impl ErrorCode {
    /// Parses a code as the server writes it (upper-case SQL codes or
    /// lower-case auth kinds).
    pub fn parse(s: &str) -> ErrorCode {
        use ErrorCode::*;
        match s {
            "TOKEN_EXPIRED" => TokenExpired,
            "INVALID_CREDENTIALS" => InvalidCredentials,
            "MISSING_AUTHORIZATION" => MissingAuthorization,
            "AUTHENTICATION_ERROR" => AuthenticationError,
            "unauthorized" | "UNAUTHORIZED" => Unauthorized,
            "account_locked" | "ACCOUNT_LOCKED" => AccountLocked,
            "forbidden" | "FORBIDDEN" => Forbidden,
            "setup_required" | "SETUP_REQUIRED" => SetupRequired,
            "rate_limited" => RateLimited,
            "internal_error" | "INTERNAL_ERROR" => InternalError,
            "already_configured" => AlreadyConfigured,
            "weak_password" => WeakPassword,
            "invalid_user" => InvalidUser,
            "user_exists" => UserExists,
            "INVALID_SQL" => InvalidSql,
            "SQL_EXECUTION_ERROR" => SqlExecutionError,
            "EMPTY_SQL" => EmptySql,
            "INVALID_INPUT" => InvalidInput,
            "INVALID_PARAMETER" => InvalidParameter,
            "PARAMS_WITH_BATCH" => ParamsWithBatch,
            "BATCH_PARSE_ERROR" => BatchParseError,
            "PERMISSION_DENIED" => PermissionDenied,
            "RATE_LIMIT_EXCEEDED" => RateLimitExceeded,
            "IP_BANNED" => IpBanned,
            "BODY_TOO_LARGE" => BodyTooLarge,
            "NOT_LEADER" => NotLeader,
            "CLUSTER_UNAVAILABLE" => ClusterUnavailable,
            "FORWARD_FAILED" => ForwardFailed,
            "NOT_FOUND" | "not_found" => NotFound,
            "" => Unspecified,
            other => Other(other.to_owned()),
        }
    }

    /// The code as the server writes it.
    pub fn as_str(&self) -> &str {
        use ErrorCode::*;
        match self {
            TokenExpired => "TOKEN_EXPIRED",
            InvalidCredentials => "INVALID_CREDENTIALS",
            MissingAuthorization => "MISSING_AUTHORIZATION",
            AuthenticationError => "AUTHENTICATION_ERROR",
            Unauthorized => "unauthorized",
            AccountLocked => "account_locked",
            Forbidden => "forbidden",
            SetupRequired => "setup_required",
            RateLimited => "rate_limited",
            InternalError => "INTERNAL_ERROR",
            AlreadyConfigured => "already_configured",
            WeakPassword => "weak_password",
            InvalidUser => "invalid_user",
            UserExists => "user_exists",
            InvalidSql => "INVALID_SQL",
            SqlExecutionError => "SQL_EXECUTION_ERROR",
            EmptySql => "EMPTY_SQL",
            InvalidInput => "INVALID_INPUT",
            InvalidParameter => "INVALID_PARAMETER",
            ParamsWithBatch => "PARAMS_WITH_BATCH",
            BatchParseError => "BATCH_PARSE_ERROR",
            PermissionDenied => "PERMISSION_DENIED",
            RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            IpBanned => "IP_BANNED",
            BodyTooLarge => "BODY_TOO_LARGE",
            NotLeader => "NOT_LEADER",
            ClusterUnavailable => "CLUSTER_UNAVAILABLE",
            ForwardFailed => "FORWARD_FAILED",
            NotFound => "NOT_FOUND",
            Unspecified => "",
            Other(s) => s,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Unspecified => f.write_str("(no code)"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// An error answer from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// HTTP status of the answer (200 when the server put `status: "error"`
    /// in a 200 answer).
    pub status: u16,
    /// The server's code.
    pub code: ErrorCode,
    /// The server's message (or the start of a non-JSON body).
    pub message: String,
    /// `error.details` of the SQL envelope (the failing statement; admins only).
    pub details: Option<String>,
    /// Seconds to wait before retrying, from `Retry-After` or
    /// `retry_after_seconds`, when the server said.
    pub retry_after_secs: Option<u64>,
}

impl ServerError {
    /// Whether the credentials themselves were refused, as opposed to
    /// expired or rate-limited: `INVALID_CREDENTIALS`, `MISSING_AUTHORIZATION`,
    /// or an auth endpoint's 401 `unauthorized`.
    pub fn is_credentials_rejected(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::InvalidCredentials | ErrorCode::MissingAuthorization
        ) || (self.code == ErrorCode::Unauthorized && self.status == 401)
    }

    /// Whether waiting and retrying may help (rate limits, cluster hand-overs).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::RateLimited
                | ErrorCode::RateLimitExceeded
                | ErrorCode::NotLeader
                | ErrorCode::ClusterUnavailable
                | ErrorCode::ForwardFailed
        ) || self.status == 429
            || self.status == 503
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            // Over the WebSocket there is no HTTP status.
            0 => write!(f, "server refused it: {}: {}", self.code, self.message),
            status => write!(f, "server answered {status} {}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for ServerError {}

/// The server's answer was not what the protocol says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (HTTP {status}): {detail}")]
pub struct DecodeError {
    /// HTTP status of the undecodable answer (0 for WebSocket frames).
    pub status: u16,
    /// What was being decoded.
    pub what: &'static str,
    /// The parser's complaint.
    pub detail: String,
}

impl DecodeError {
    pub(crate) fn new(status: u16, what: &'static str, detail: impl fmt::Display) -> Self {
        DecodeError {
            status,
            what,
            detail: detail.to_string(),
        }
    }
}

/// Why a request got no answer. Drivers map their runtime's errors onto these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The TCP (or TLS) connection could not be made.
    #[error("could not connect: {0}")]
    Connect(String),
    /// No answer within the configured time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The answer was larger than the client accepts.
    #[error("response body over {limit} bytes")]
    BodyTooLarge {
        /// The limit that was hit.
        limit: usize,
    },
    /// The connection failed mid-exchange.
    #[error("I/O error: {0}")]
    Io(String),
    /// A kept-alive connection closed before any byte of an answer came.
    /// The server's idle timeout may have raced the request (then the
    /// server never read it), or the server may have failed while running
    /// it: the client cannot tell, so the request was not sent again. A
    /// read-only request is safe to repeat.
    #[error("the server closed a kept-alive connection before answering; the request may not have reached it")]
    ClosedBeforeAnswer,
    /// The TLS handshake failed: what went wrong, and the TLS library's
    /// words.
    #[error("TLS handshake failed: {failure} ({detail})")]
    Tls {
        /// What went wrong.
        failure: TlsFailure,
        /// The TLS library's message.
        detail: String,
    },
    /// The HTTP proxy did not open a tunnel to the server.
    #[error("the proxy {proxy} answered {status} to CONNECT {target}{hint}", hint = proxy_hint(*status))]
    ProxyRefused {
        /// The proxy (`http://host:port`, never its credentials).
        proxy: String,
        /// The `host:port` the tunnel was for.
        target: String,
        /// The proxy's status code (`407`: it wants credentials, or
        /// refused those given).
        status: u16,
    },
}

fn proxy_hint(status: u16) -> &'static str {
    match status {
        407 => " (proxy authentication required: put the credentials in the proxy URL)",
        _ => "",
    }
}

/// Why a TLS handshake failed ([`TransportError::Tls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate is not signed by a trusted root: add the
    /// private CA's certificate (`TlsConfig::add_root_pem`), or install it
    /// in the system's store.
    #[error("the server's certificate is from an unknown issuer")]
    UnknownIssuer,
    /// The certificate is not for the host name in the URL.
    #[error("the server's certificate is not valid for this host name")]
    WrongHostName,
    /// The certificate has expired.
    #[error("the server's certificate has expired")]
    Expired,
    /// The certificate is not valid yet (or this machine's clock is behind).
    #[error("the server's certificate is not valid yet")]
    NotYetValid,
    /// The certificate was revoked.
    #[error("the server's certificate was revoked")]
    Revoked,
    /// The certificate was refused for another reason.
    #[error("the server's certificate was refused")]
    BadCertificate,
    /// The server wants a client certificate (mutual TLS) and none was
    /// configured.
    #[error("the server requires a client certificate")]
    ClientCertificateRequired,
    /// The server refused the handshake, this client's certificate, or
    /// every protocol version and cipher offered.
    #[error("the server refused the handshake")]
    HandshakeRefused,
    /// The peer does not speak TLS (a plain HTTP server, say).
    #[error("the peer does not speak TLS")]
    NotTls,
    /// Anything else.
    #[error("TLS error")]
    Other,
}

impl TransportError {
    /// The same error, saying where it happened: `context` (the request's
    /// method and URL, the WebSocket's URL) goes before the message of a
    /// [`Connect`](Self::Connect) or [`Io`](Self::Io) error. The other
    /// variants say enough on their own.
    pub fn at(self, context: &str) -> TransportError {
        match self {
            TransportError::Connect(m) => TransportError::Connect(format!("{context}: {m}")),
            TransportError::Io(m) => TransportError::Io(format!("{context}: {m}")),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_error_says_where() {
        let e =
            TransportError::Connect("Connection refused (os error 111)".into()).at("POST http://db:2900/v1/api/sql");
        assert_eq!(
            e.to_string(),
            "could not connect: POST http://db:2900/v1/api/sql: Connection refused (os error 111)"
        );
        assert_eq!(
            TransportError::ClosedBeforeAnswer.at("x"),
            TransportError::ClosedBeforeAnswer
        );
    }

    #[test]
    fn codes_round_trip() {
        for s in [
            "TOKEN_EXPIRED",
            "INVALID_CREDENTIALS",
            "MISSING_AUTHORIZATION",
            "INVALID_SQL",
            "SQL_EXECUTION_ERROR",
            "unauthorized",
            "account_locked",
            "RATE_LIMIT_EXCEEDED",
            "already_configured",
            "weak_password",
            "invalid_user",
            "user_exists",
            "SOMETHING_NEW",
        ] {
            assert_eq!(ErrorCode::parse(s).as_str(), s);
        }
        assert_eq!(
            ErrorCode::parse("SOMETHING_NEW"),
            ErrorCode::Other("SOMETHING_NEW".into())
        );
    }

    #[test]
    fn credentials_rejected_classification() {
        let e = |status, code| ServerError {
            status,
            code,
            message: String::new(),
            details: None,
            retry_after_secs: None,
        };
        assert!(e(401, ErrorCode::InvalidCredentials).is_credentials_rejected());
        assert!(e(401, ErrorCode::Unauthorized).is_credentials_rejected());
        assert!(!e(401, ErrorCode::TokenExpired).is_credentials_rejected());
        assert!(!e(429, ErrorCode::RateLimited).is_credentials_rejected());
        assert!(e(429, ErrorCode::RateLimited).is_transient());
        assert!(Error::from(e(401, ErrorCode::TokenExpired)).is_token_expired());
    }
}
