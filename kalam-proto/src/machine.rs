//! The auth lifecycle machine.
//!
//! [`AuthMachine`] owns the client's credentials and tokens and every HTTP
//! exchange that needs them. It is a pure state machine in the style of
//! `quinn-proto`: inputs go in through `submit` / `handle_*` with the current
//! time, and what must happen next comes out of [`AuthMachine::poll_output`].
//! Nothing happens between calls.
//!
//! ```text
//!                 ┌──────────── login / refresh / callback fails ───────────┐
//!                 ▼                                                         │
//!  Unauthenticated ──need token──► LoggingIn / FetchingCredentials ──ok──► Authenticated
//!                                                                          │   ▲
//!                 exp − skew passed, or a query answered TOKEN_EXPIRED      │   │ ok
//!                                                                          ▼   │
//!                                                  Expired ──need token──► Refreshing
//! ```
//!
//! Rules it keeps:
//! - A token counts as expired `skew` (default 30 s) before its `exp`; an
//!   expired token is never handed out. With a refresh token, the machine
//!   refreshes `refresh_ahead` (default 60 s) before `exp`, while the old
//!   token still serves.
//! - Single flight: however many operations wait, at most one login, refresh
//!   or credential callback is in flight.
//! - A query answered `TOKEN_EXPIRED` is retried once after recovery. Recovery
//!   tries, in order: the refresh token from an earlier login, the
//!   application's refresher, the dynamic provider, the stored basic
//!   credentials. (With no token yet, the provider is asked before the
//!   refresher.) If none works, every waiter gets the same typed error.
//! - Refused credentials (wrong password, `INVALID_CREDENTIALS` for a token
//!   the application gave) are final until the application supplies new
//!   ones: no request is repeated in a loop.
//! - An answer to a request the machine no longer waits for is ignored.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use http::{HeaderValue, Request, Response};

use crate::admin::{self, HealthResponse, SetupRequest, SetupResponse, SetupStatus};
use crate::auth::{AuthProvider, bearer_header};
use crate::error::{Error, Result, TransportError};
use crate::files::{self, DownloadInfo, FileLimits, UploadPlan, UploadRequest};
use crate::framing::{self, Endpoints, QueryRequest};
use crate::jwt::{self, JwtClaims};
use crate::secret::Secret;
use crate::time::{Instant, Now};
use crate::topics::{self, AckRequest, AckResponse, ConsumeRequest, ConsumeResponse};
use crate::types::{LoginResponse, MeResponse, QueryResponse};

/// Identifies one operation submitted to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Identifies one HTTP request the machine asked the driver to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Identifies one call for credentials the machine asked the driver to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialRequestId(pub u64);

/// Settings of the auth machine.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// A token counts as expired this long before its `exp` (clock skew and
    /// flight time). Default 30 s.
    pub skew: Duration,
    /// With a refresh token, refresh this long before `exp` (at least
    /// `skew`). Default 60 s.
    pub refresh_ahead: Duration,
    /// The application configured a `DynamicAuthProvider`.
    pub has_dynamic_provider: bool,
    /// The application configured an `AuthRefreshCallback`.
    pub has_refresher: bool,
    /// Most operation requests in flight at once; more wait in order
    /// (the machine's own logins and refreshes never wait). Default 64.
    pub max_in_flight: usize,
    /// Limits checked before an upload is sent.
    pub files: FileLimits,
    /// Seeds the multipart boundaries of uploads.
    pub boundary_seed: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            skew: Duration::from_secs(30),
            refresh_ahead: Duration::from_secs(60),
            has_dynamic_provider: false,
            has_refresher: false,
            max_in_flight: 64,
            files: FileLimits::default(),
            boundary_seed: 0,
        }
    }
}

/// What an operation asks for.
#[derive(Debug, Clone)]
pub enum Operation {
    /// Run SQL (`POST /v1/api/sql`) with a valid token.
    Query(QueryRequest),
    /// `GET /v1/api/auth/me` with a valid token.
    Me,
    /// Hand out a valid access token (for the WebSocket `authenticate`).
    /// With `fresh`, a configured dynamic provider is asked again rather
    /// than a cached token handed out (every WebSocket reconnect does this).
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
    /// token, like a query (retried once after `TOKEN_EXPIRED`).
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
    /// For [`Operation::Query`].
    Query(QueryResponse),
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
    /// For [`Operation::Download`]: the file is there; its bytes are in
    /// the answer's body, which the driver streams.
    Download(DownloadInfo),
}

/// Which kind of HTTP exchange a request is (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// `POST /v1/api/sql` with files: sent as [`Output::TransmitUpload`];
    /// the answer is decoded like a query's.
    Upload,
    /// `GET /v1/files/…`: the body of a 2xx answer is the file, streamed to
    /// the caller (see [`crate::files::download_streams_body`]); only the
    /// head is decoded.
    Download,
}

/// An HTTP answer decoded by [`decode`], ready for
/// [`AuthMachine::handle_decoded`].
#[derive(Debug)]
pub enum Decoded {
    /// The answer to a [`RequestKind::Query`].
    Query(Result<QueryResponse>),
    /// The answer to a [`RequestKind::Me`].
    Me(Result<MeResponse>),
    /// The answer to a [`RequestKind::Login`] or [`RequestKind::Refresh`].
    Login(Result<LoginResponse>),
    /// The answer to a [`RequestKind::ConsumeTopic`].
    Consume(Result<ConsumeResponse>),
    /// The answer to a [`RequestKind::AckTopic`].
    Ack(Result<AckResponse>),
    /// The answer to a [`RequestKind::Health`].
    Health(Result<HealthResponse>),
    /// The answer to a [`RequestKind::SetupStatus`].
    SetupStatus(Result<SetupStatus>),
    /// The answer to a [`RequestKind::Setup`].
    Setup(Result<SetupResponse>),
    /// The answer to a [`RequestKind::Download`] (its head only when 2xx).
    Download(Result<DownloadInfo>),
}

/// Decodes an answer with the decoder its request's kind calls for. Pure and
/// `Send`: a driver may run it in the request's own task, in parallel with
/// other answers, and feed the result to [`AuthMachine::handle_decoded`];
/// every decision (retry, refusal, recovery) stays in the machine.
pub fn decode(kind: RequestKind, status: http::StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Decoded {
    match kind {
        RequestKind::Query | RequestKind::Upload => Decoded::Query(framing::decode_query(status, headers, body)),
        RequestKind::Download => Decoded::Download(files::decode_download(status, headers, body)),
        RequestKind::Me => Decoded::Me(framing::decode_me(status, headers, body)),
        RequestKind::Login | RequestKind::Refresh => Decoded::Login(framing::decode_login(status, headers, body)),
        RequestKind::ConsumeTopic => Decoded::Consume(topics::decode_consume(status, headers, body)),
        RequestKind::AckTopic => Decoded::Ack(topics::decode_ack(status, headers, body)),
        RequestKind::Health => Decoded::Health(admin::decode_health(status, headers, body)),
        RequestKind::SetupStatus => Decoded::SetupStatus(admin::decode_setup_status(status, headers, body)),
        RequestKind::Setup => Decoded::Setup(admin::decode_setup(status, headers, body)),
    }
}

/// Whose credentials the driver must fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// Call the application's `DynamicAuthProvider::get_auth`.
    DynamicProvider,
    /// Call the application's `AuthRefreshCallback`.
    Refresher,
}

/// What the driver must do next. Its `Debug` shows no header and no body.
pub enum Output {
    /// Send this request; feed the answer to [`AuthMachine::handle_response`]
    /// or the failure to [`AuthMachine::handle_transport_error`].
    Transmit {
        /// Echo this back with the answer.
        id: RequestId,
        /// What the request is.
        kind: RequestKind,
        /// The request, complete with headers.
        request: Request<Vec<u8>>,
    },
    /// Ask the application for credentials; feed the result to
    /// [`AuthMachine::handle_credentials`].
    FetchCredentials {
        /// Echo this back with the result.
        id: CredentialRequestId,
        /// Which callback.
        source: CredentialSource,
    },
    /// Send this upload: the request's head, and its body as a plan to
    /// stream from the caller's sources; feed the answer (decoded as
    /// [`RequestKind::Upload`]) like a [`Output::Transmit`]'s.
    TransmitUpload {
        /// Echo this back with the answer.
        id: RequestId,
        /// The head, complete with headers but `Content-Length`, which is
        /// [`UploadPlan::content_length`].
        request: Request<()>,
        /// The body.
        plan: UploadPlan,
    },
    /// An operation finished.
    Done {
        /// The operation.
        op: OpId,
        /// Its result.
        result: Result<Reply>,
    },
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Transmit { id, kind, request } => f
                .debug_struct("Transmit")
                .field("id", id)
                .field("kind", kind)
                .field("request", &framing::RequestSummary(request))
                .finish(),
            Output::FetchCredentials { id, source } => f
                .debug_struct("FetchCredentials")
                .field("id", id)
                .field("source", source)
                .finish(),
            Output::TransmitUpload { id, request, plan } => f
                .debug_struct("TransmitUpload")
                .field("id", id)
                .field("request", &format_args!("{} {}", request.method(), request.uri()))
                .field("plan", plan)
                .finish(),
            Output::Done { op, result } => f.debug_struct("Done").field("op", op).field("result", result).finish(),
        }
    }
}

/// The auth lifecycle state, as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthState {
    /// No token yet.
    Unauthenticated,
    /// A login is in flight.
    LoggingIn,
    /// The application's provider or refresher is being asked.
    FetchingCredentials,
    /// A usable token is held (a proactive refresh may be in flight).
    Authenticated,
    /// The token expired; it will be renewed when next needed.
    Expired,
    /// A refresh with the refresh token is in flight and no usable token is held.
    Refreshing,
}

/// Where the current access token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Given by the application (builder or `set_auth`).
    Configured,
    /// From a login or refresh this machine made.
    Issued,
    /// From the dynamic provider or the refresher.
    Callback,
}

#[derive(Debug, Clone)]
struct Token {
    secret: Secret,
    header: HeaderValue,
    claims: Option<JwtClaims>,
    origin: Origin,
}

impl Token {
    fn new(secret: Secret, origin: Origin) -> Result<Token> {
        let claims = jwt::inspect(secret.expose()).ok();
        if claims.as_ref().is_some_and(JwtClaims::is_refresh) {
            return Err(Error::RefreshTokenAsAccessToken);
        }
        let header = bearer_header(secret.expose())?;
        // The first clone of a value built from a String moves its buffer to
        // shared storage (one allocation). Pay it here, once per token, so
        // that stamping requests never allocates.
        drop(header.clone());
        Ok(Token {
            secret,
            header,
            claims,
            origin,
        })
    }

    fn exp(&self) -> Option<u64> {
        self.claims.as_ref().and_then(|c| c.exp)
    }

    fn usable_at(&self, now: Now, skew: Duration) -> bool {
        self.claims
            .as_ref()
            .is_none_or(|c| !c.is_expired_at(now.unix_secs(), skew.as_secs()))
    }
}

/// The steps of recovery, tried in order, each at most once per episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rung {
    RefreshToken,
    Refresher,
    Provider,
    Login,
}

#[derive(Debug)]
enum Phase {
    Idle,
    LoggingIn {
        req: RequestId,
        configured: bool,
    },
    Refreshing {
        req: RequestId,
    },
    Fetching {
        id: CredentialRequestId,
        source: CredentialSource,
    },
}

#[derive(Debug)]
enum InFlight {
    /// An operation's request, sent with the token of generation `token_gen`.
    Op { op: OpId, token_gen: u64 },
    /// The machine's own login or refresh (checked against `phase`).
    Recovery,
}

#[derive(Debug)]
struct PendingOp {
    operation: Operation,
    /// The prepared SQL body, kept for the one retry.
    body: Vec<u8>,
    /// An upload's framed body.
    plan: Option<UploadPlan>,
    retried: bool,
}

/// The auth lifecycle machine. See the [module docs](self).
#[derive(Debug)]
pub struct AuthMachine {
    endpoints: Endpoints,
    config: AuthConfig,
    credentials: AuthProvider,
    access: Option<Token>,
    token_gen: u64,
    had_token: bool,
    refresh: Option<(Secret, Option<u64>)>,
    /// Sticky refusal of the configured credentials.
    rejected: Option<Error>,
    /// The provider answered "no credentials": send without a token.
    anonymous_ok: bool,
    phase: Phase,
    tried: Vec<Rung>,
    last_error: Option<Error>,
    waiting: VecDeque<OpId>,
    ops: BTreeMap<OpId, PendingOp>,
    inflight: BTreeMap<RequestId, (RequestKind, InFlight)>,
    /// Operation requests among `inflight` (the cap counts these).
    op_requests: usize,
    out: VecDeque<Output>,
    timer: Option<Instant>,
    /// The token generation for which a refresh ahead of expiry was tried.
    ahead_tried: Option<u64>,
    /// A fresh token was asked for: the dynamic provider goes first.
    prefer_provider: bool,
    next_id: u64,
}

impl AuthMachine {
    /// A machine for the server at `endpoints` with the application's
    /// credentials. Nothing is sent until an operation needs it; a token
    /// given here arms the expiry timer at once.
    pub fn new(endpoints: Endpoints, credentials: AuthProvider, config: AuthConfig, now: Now) -> Self {
        let mut m = AuthMachine {
            endpoints,
            config,
            credentials: AuthProvider::None,
            access: None,
            token_gen: 0,
            had_token: false,
            refresh: None,
            rejected: None,
            anonymous_ok: false,
            phase: Phase::Idle,
            tried: Vec::new(),
            last_error: None,
            waiting: VecDeque::new(),
            ops: BTreeMap::new(),
            inflight: BTreeMap::new(),
            op_requests: 0,
            out: VecDeque::new(),
            timer: None,
            ahead_tried: None,
            prefer_provider: false,
            next_id: 1,
        };
        m.install_credentials(credentials);
        m.update_timer(now);
        m
    }

    /// The endpoints of the server.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The credentials the application configured (not tokens obtained with them).
    pub fn credentials(&self) -> &AuthProvider {
        &self.credentials
    }

    /// The state of the auth lifecycle.
    pub fn state(&self) -> AuthState {
        match self.phase {
            Phase::LoggingIn { .. } => AuthState::LoggingIn,
            Phase::Fetching { .. } => AuthState::FetchingCredentials,
            Phase::Refreshing { .. } if self.access.is_none() => AuthState::Refreshing,
            _ if self.access.is_some() => AuthState::Authenticated,
            _ if self.had_token => AuthState::Expired,
            _ => AuthState::Unauthenticated,
        }
    }

    /// The current access token, if one is held and usable at `now`.
    pub fn access_token(&self, now: Now) -> Option<&Secret> {
        self.access
            .as_ref()
            .filter(|t| t.usable_at(now, self.config.skew))
            .map(|t| &t.secret)
    }

    /// The cached `Authorization` header value of the usable token at `now`.
    /// Cloning it does not allocate.
    pub fn authorization(&self, now: Now) -> Option<&HeaderValue> {
        self.access
            .as_ref()
            .filter(|t| t.usable_at(now, self.config.skew))
            .map(|t| &t.header)
    }

    /// Operations submitted and not yet done.
    pub fn pending_ops(&self) -> usize {
        self.ops.len()
    }

    // ----------------------------------------------------------------- inputs

    /// Submits an operation. Its result comes out as [`Output::Done`].
    pub fn submit(&mut self, operation: Operation, now: Now) -> OpId {
        let op = OpId(self.fresh_id());
        let body = match &operation {
            Operation::Query(q) => q.to_body(),
            Operation::ConsumeTopic(r) => r.to_body(),
            Operation::AckTopic(r) => r.to_body(),
            Operation::Setup(r) => r.to_body(),
            _ => Ok(Vec::new()),
        };
        let mut body = match body {
            Ok(b) => b,
            Err(e) => {
                self.out.push_back(Output::Done { op, result: Err(e) });
                return op;
            }
        };
        let plan = match &operation {
            Operation::Upload(u) => {
                match files::multipart_plan(u, &self.config.files, self.config.boundary_seed, op.0) {
                    Ok(plan) => Some(plan),
                    Err(e) => {
                        // Refused before anything is sent.
                        self.out.push_back(Output::Done { op, result: Err(e) });
                        return op;
                    }
                }
            }
            _ => None,
        };
        let fresh = matches!(operation, Operation::Token { fresh: true }) && self.config.has_dynamic_provider;
        let explicit = match &operation {
            Operation::Login { user, password } => Some((
                RequestKind::Login,
                Ok(framing::login_request(&self.endpoints, user, password)),
            )),
            Operation::Refresh { refresh_token } => Some((
                RequestKind::Refresh,
                framing::refresh_request(&self.endpoints, refresh_token),
            )),
            // No token: these endpoints are open (to localhost).
            Operation::Health => Some((RequestKind::Health, Ok(admin::health_request(&self.endpoints)))),
            Operation::SetupStatus => Some((
                RequestKind::SetupStatus,
                Ok(admin::setup_status_request(&self.endpoints)),
            )),
            Operation::Setup(_) => Some((
                RequestKind::Setup,
                // The body holds passwords: it goes out and is not kept.
                Ok(admin::setup_request(&self.endpoints, std::mem::take(&mut body))),
            )),
            _ => None,
        };
        self.ops.insert(
            op,
            PendingOp {
                operation,
                body,
                plan,
                retried: false,
            },
        );
        match explicit {
            Some((kind, Ok(request))) => {
                self.transmit(kind, request, InFlight::Op { op, token_gen: 0 });
            }
            Some((_, Err(e))) => self.finish(op, Err(e)),
            None => {
                if fresh && !matches!(self.phase, Phase::Fetching { .. }) {
                    // Ask the provider again rather than reuse the cached token.
                    if self.access.take().is_some() {
                        self.token_gen += 1;
                    }
                    self.prefer_provider = true;
                }
                self.waiting.push_back(op);
                self.drive(now);
            }
        }
        op
    }

    /// Replaces the credentials (`set_auth` / `update_shared_auth`). Tokens
    /// obtained with the old credentials are dropped, an in-flight login or
    /// refresh is forgotten (its answer will be ignored), a sticky refusal is
    /// cleared, and waiting operations go on with the new credentials.
    /// Setting credentials equal to the current ones changes nothing.
    pub fn set_credentials(&mut self, credentials: AuthProvider, now: Now) {
        if credentials == self.credentials && self.rejected.is_none() {
            return;
        }
        self.install_credentials(credentials);
        self.phase = Phase::Idle;
        self.tried.clear();
        self.last_error = None;
        self.drive(now);
        self.update_timer(now);
    }

    /// Feeds the answer to a request from [`Output::Transmit`].
    pub fn handle_response<B: AsRef<[u8]>>(&mut self, id: RequestId, response: &Response<B>, now: Now) {
        let Some(&(kind, _)) = self.inflight.get(&id) else {
            return; // not waited for (any more)
        };
        let decoded = decode(kind, response.status(), response.headers(), response.body().as_ref());
        self.handle_decoded(id, decoded, now);
    }

    /// Feeds an answer already decoded with [`decode`] (same effect as
    /// [`handle_response`](Self::handle_response) with the raw answer).
    /// An answer decoded for another kind of request than `id` is ignored,
    /// like an answer to a request no longer waited for.
    pub fn handle_decoded(&mut self, id: RequestId, decoded: Decoded, now: Now) {
        let fits = match self.inflight.get(&id) {
            Some((RequestKind::Query | RequestKind::Upload, _)) => matches!(decoded, Decoded::Query(_)),
            Some((RequestKind::Download, _)) => matches!(decoded, Decoded::Download(_)),
            Some((RequestKind::Me, _)) => matches!(decoded, Decoded::Me(_)),
            Some((RequestKind::Login | RequestKind::Refresh, _)) => matches!(decoded, Decoded::Login(_)),
            Some((RequestKind::ConsumeTopic, _)) => matches!(decoded, Decoded::Consume(_)),
            Some((RequestKind::AckTopic, _)) => matches!(decoded, Decoded::Ack(_)),
            Some((RequestKind::Health, _)) => matches!(decoded, Decoded::Health(_)),
            Some((RequestKind::SetupStatus, _)) => matches!(decoded, Decoded::SetupStatus(_)),
            Some((RequestKind::Setup, _)) => matches!(decoded, Decoded::Setup(_)),
            None => false, // not waited for (any more)
        };
        if !fits {
            return;
        }
        let Some((_, inflight)) = self.take_inflight(id) else {
            return;
        };
        match inflight {
            InFlight::Op { op, token_gen } => match decoded {
                Decoded::Query(Ok(r)) => self.finish(op, Ok(Reply::Query(r))),
                Decoded::Query(Err(e)) => self.op_failed(op, token_gen, e, now),
                Decoded::Me(r) => self.finish(op, r.map(Reply::Me)),
                Decoded::Login(r) => self.finish(op, r.map(Reply::Login)),
                Decoded::Consume(Ok(r)) => self.finish(op, Ok(Reply::Consume(r))),
                Decoded::Consume(Err(e)) => self.op_failed(op, token_gen, e, now),
                Decoded::Ack(Ok(r)) => self.finish(op, Ok(Reply::Ack(r))),
                Decoded::Ack(Err(e)) => self.op_failed(op, token_gen, e, now),
                Decoded::Health(r) => self.finish(op, r.map(Reply::Health)),
                Decoded::SetupStatus(r) => self.finish(op, r.map(Reply::SetupStatus)),
                Decoded::Setup(r) => self.finish(op, r.map(Reply::Setup)),
                Decoded::Download(Ok(info)) => self.finish(op, Ok(Reply::Download(info))),
                Decoded::Download(Err(e)) => self.op_failed(op, token_gen, e, now),
            },
            InFlight::Recovery => {
                if let Decoded::Login(result) = decoded {
                    self.recovery_answered(id, result, now);
                }
            }
        }
        self.drive(now);
        self.update_timer(now);
    }

    /// Feeds the answer to a [`RequestKind::Query`] request already decoded
    /// with [`framing::decode_query`]. Ignored for any other request.
    pub fn handle_query_answer(&mut self, id: RequestId, answer: Result<QueryResponse>, now: Now) {
        self.handle_decoded(id, Decoded::Query(answer), now);
    }

    /// Feeds a request's failure to get an answer.
    pub fn handle_transport_error(&mut self, id: RequestId, error: TransportError, now: Now) {
        let Some((_, inflight)) = self.take_inflight(id) else {
            return;
        };
        match inflight {
            // Never retried: the statement may have run.
            InFlight::Op { op, .. } => self.finish(op, Err(Error::Transport(error))),
            InFlight::Recovery => self.recovery_answered(id, Err(Error::Transport(error)), now),
        }
        self.drive(now);
        self.update_timer(now);
    }

    /// Feeds the application's answer to [`Output::FetchCredentials`].
    pub fn handle_credentials(&mut self, id: CredentialRequestId, result: Result<AuthProvider>, now: Now) {
        let source = match self.phase {
            Phase::Fetching { id: current, source } if current == id => source,
            _ => return, // forgotten by set_credentials
        };
        self.phase = Phase::Idle;
        // What the application's callback returns becomes the current
        // credentials: setting the earlier ones again is then a change.
        if let Ok(credentials @ (AuthProvider::JwtToken(_) | AuthProvider::BasicAuth { .. })) = &result {
            self.credentials = credentials.clone();
        }
        match result {
            Ok(AuthProvider::JwtToken(secret)) => match Token::new(secret, Origin::Callback) {
                Ok(t) if !t.usable_at(now, self.config.skew) => {
                    self.last_error = Some(Error::TokenExpired);
                }
                Ok(t) => {
                    if source == CredentialSource::DynamicProvider {
                        // A provider's token replaces any refresh token of earlier logins.
                        self.refresh = None;
                    }
                    self.install_token(t);
                }
                Err(e) => self.last_error = Some(e),
            },
            Ok(AuthProvider::BasicAuth { user, password }) => {
                // This login is the login rung of this episode.
                self.tried.push(Rung::Login);
                let request = framing::login_request(&self.endpoints, &user, &password);
                let req = self.transmit(RequestKind::Login, request, InFlight::Recovery);
                self.phase = Phase::LoggingIn { req, configured: false };
            }
            Ok(AuthProvider::None) => self.anonymous_ok = true,
            Err(e) => self.last_error = Some(Error::CredentialCallback(std::sync::Arc::new(e))),
        }
        self.drive(now);
        self.update_timer(now);
    }

    /// Call when [`poll_timeout`](Self::poll_timeout)'s instant is reached.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.timer.is_some_and(|t| t <= now.instant) {
            self.timer = None;
            self.expire_if_due(now);
            self.maybe_refresh_ahead(now);
            self.drive(now);
        }
        self.update_timer(now);
    }

    /// Call when a server refused the current token outside the HTTP path
    /// (a WebSocket `auth_error`): the token is dropped and the next
    /// operation that needs one recovers as after `TOKEN_EXPIRED`.
    pub fn handle_token_rejected(&mut self, token: &Secret, now: Now) {
        if self.access.as_ref().is_some_and(|t| &t.secret == token) {
            if let Some(t) = self.access.take()
                && t.origin == Origin::Configured
            {
                // The application's own token: final until it gives another.
                self.rejected = Some(Error::WsAuthFailed("the server refused the configured token".into()));
            }
            self.token_gen += 1;
        }
        self.update_timer(now);
    }

    // ---------------------------------------------------------------- outputs

    /// The next thing the driver must do, until `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    // -------------------------------------------------------------- internals

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn install_credentials(&mut self, credentials: AuthProvider) {
        self.access = None;
        self.token_gen += 1;
        self.had_token = false;
        self.refresh = None;
        self.rejected = None;
        self.anonymous_ok = false;
        if let AuthProvider::JwtToken(secret) = &credentials {
            match Token::new(secret.clone(), Origin::Configured) {
                Ok(t) => self.install_token(t),
                Err(e) => self.rejected = Some(e),
            }
        }
        self.credentials = credentials;
    }

    fn install_token(&mut self, token: Token) {
        self.prefer_provider = false;
        self.access = Some(token);
        self.token_gen += 1;
        self.had_token = true;
        self.tried.clear();
        self.last_error = None;
    }

    /// Removes a request from those in flight; a freed place goes to the
    /// next waiting operation.
    fn take_inflight(&mut self, id: RequestId) -> Option<(RequestKind, InFlight)> {
        let taken = self.inflight.remove(&id);
        if matches!(taken, Some((_, InFlight::Op { .. }))) {
            self.op_requests -= 1;
        }
        taken
    }

    fn transmit(&mut self, kind: RequestKind, request: Request<Vec<u8>>, inflight: InFlight) -> RequestId {
        let id = RequestId(self.fresh_id());
        if matches!(inflight, InFlight::Op { .. }) {
            self.op_requests += 1;
        }
        self.inflight.insert(id, (kind, inflight));
        self.out.push_back(Output::Transmit { id, kind, request });
        id
    }

    fn finish(&mut self, op: OpId, result: Result<Reply>) {
        if self.ops.remove(&op).is_some() {
            self.out.push_back(Output::Done { op, result });
        }
    }

    /// A query failed: decide between retry, sticky refusal and plain failure.
    fn op_failed(&mut self, op: OpId, token_gen: u64, error: Error, now: Now) {
        let current = token_gen == self.token_gen;
        if error.is_token_expired() {
            // The server refused the token: never send it again, whether or
            // not this operation may be retried.
            if current {
                self.access = None;
                self.token_gen += 1;
            }
            let Some(pending) = self.ops.get_mut(&op) else {
                return;
            };
            if pending.retried {
                return self.finish(op, Err(error));
            }
            pending.retried = true;
            self.waiting.push_front(op);
            self.drive(now);
            return;
        }
        if error.is_credentials_rejected() && current {
            if let Some(t) = self.access.take() {
                self.token_gen += 1;
                if t.origin == Origin::Configured {
                    self.rejected = Some(error.clone());
                }
            }
        }
        self.finish(op, Err(error));
    }

    /// Serves waiting operations with a usable token, or starts recovery.
    fn drive(&mut self, now: Now) {
        self.expire_if_due(now);
        self.maybe_refresh_ahead(now);
        if self.waiting.is_empty() && matches!(self.phase, Phase::Idle) {
            // No episode in progress: the next one starts afresh.
            self.tried.clear();
            self.last_error = None;
            self.prefer_provider = false;
        }
        while !self.waiting.is_empty() {
            // A clone of the cached header value is a reference-count bump:
            // dispatching allocates nothing but each request's own body.
            if let Some(header) = self.access.as_ref().map(|t| t.header.clone()) {
                while self.op_requests < self.config.max_in_flight.max(1) {
                    let Some(op) = self.waiting.pop_front() else { break };
                    self.dispatch(op, Some(&header));
                }
                return;
            }
            if self.anonymous_allowed() {
                while self.op_requests < self.config.max_in_flight.max(1) {
                    let Some(op) = self.waiting.pop_front() else { break };
                    self.dispatch(op, None);
                }
                return;
            }
            if !matches!(self.phase, Phase::Idle) {
                return; // single flight: wait for the one in progress
            }
            if !self.start_next_rung(now) {
                let error = self.final_error();
                self.tried.clear();
                self.last_error = None;
                let waiting: Vec<OpId> = self.waiting.drain(..).collect();
                for op in waiting {
                    self.finish(op, Err(error.clone()));
                }
            }
        }
    }

    fn anonymous_allowed(&self) -> bool {
        self.anonymous_ok
            || (self.credentials == AuthProvider::None
                && self.rejected.is_none()
                && !self.config.has_dynamic_provider
                && !self.config.has_refresher)
    }

    fn dispatch(&mut self, op: OpId, authorization: Option<&HeaderValue>) {
        let Some(pending) = self.ops.get(&op) else {
            return;
        };
        let inflight = InFlight::Op {
            op,
            token_gen: self.token_gen,
        };
        match &pending.operation {
            Operation::Query(_) => {
                let request = framing::sql_request(&self.endpoints, pending.body.clone(), authorization);
                self.transmit(RequestKind::Query, request, inflight);
            }
            Operation::Me => match authorization {
                Some(a) => {
                    let request = framing::me_request(&self.endpoints, a);
                    self.transmit(RequestKind::Me, request, inflight);
                }
                None => self.finish(op, Err(Error::MissingCredentials)),
            },
            Operation::Token { .. } => {
                let r = self
                    .access
                    .as_ref()
                    .map(|t| Reply::Token(t.secret.clone()))
                    .ok_or(Error::MissingCredentials);
                self.finish(op, r);
            }
            Operation::ConsumeTopic(_) => {
                let request = topics::consume_request(&self.endpoints, pending.body.clone(), authorization);
                self.transmit(RequestKind::ConsumeTopic, request, inflight);
            }
            Operation::AckTopic(_) => {
                let request = topics::ack_request(&self.endpoints, pending.body.clone(), authorization);
                self.transmit(RequestKind::AckTopic, request, inflight);
            }
            Operation::Login { .. }
            | Operation::Refresh { .. }
            | Operation::Health
            | Operation::SetupStatus
            | Operation::Setup(_) => {}
            Operation::Upload(upload) => {
                if pending.retried && !upload.replayable {
                    // Refused once with TOKEN_EXPIRED; the token is renewed
                    // now, but the reader's data is gone: say so, do not
                    // send half an upload.
                    return self.finish(op, Err(Error::UploadNotReplayable));
                }
                if let Some(plan) = pending.plan.clone() {
                    let request = files::upload_request(&self.endpoints, &plan, authorization);
                    let id = RequestId(self.fresh_id());
                    self.op_requests += 1;
                    self.inflight.insert(id, (RequestKind::Upload, inflight));
                    self.out.push_back(Output::TransmitUpload { id, request, plan });
                }
            }
            Operation::Download { path, sink } => match files::download_request(&self.endpoints, path, authorization) {
                Ok(mut request) => {
                    request.extensions_mut().insert(files::DownloadSink(*sink));
                    self.transmit(RequestKind::Download, request, inflight);
                }
                Err(e) => self.finish(op, Err(e)),
            },
        }
    }

    /// Starts the next untried way to get a token. False when none is left.
    fn start_next_rung(&mut self, now: Now) -> bool {
        let skew = self.config.skew.as_secs();
        let refresh_ok = self
            .refresh
            .as_ref()
            .is_some_and(|(_, exp)| exp.is_none_or(|e| now.unix_secs().saturating_add(skew) < e));
        let callbacks = if self.had_token {
            [Rung::Refresher, Rung::Provider]
        } else {
            [Rung::Provider, Rung::Refresher]
        };
        let order = if self.prefer_provider {
            [Rung::Provider, Rung::RefreshToken, Rung::Refresher, Rung::Login]
        } else {
            [Rung::RefreshToken, callbacks[0], callbacks[1], Rung::Login]
        };
        for rung in order {
            if self.tried.contains(&rung) {
                continue;
            }
            let available = match rung {
                Rung::RefreshToken => refresh_ok,
                Rung::Refresher => self.config.has_refresher,
                Rung::Provider => self.config.has_dynamic_provider,
                Rung::Login => self.credentials.is_basic() && self.rejected.is_none(),
            };
            if !available {
                continue;
            }
            self.tried.push(rung);
            match rung {
                Rung::RefreshToken => {
                    let Some((secret, _)) = &self.refresh else {
                        continue;
                    };
                    match framing::refresh_request(&self.endpoints, secret) {
                        Ok(request) => {
                            let req = self.transmit(RequestKind::Refresh, request, InFlight::Recovery);
                            self.phase = Phase::Refreshing { req };
                        }
                        Err(e) => {
                            self.last_error = Some(e);
                            continue;
                        }
                    }
                }
                Rung::Refresher | Rung::Provider => {
                    let source = if rung == Rung::Refresher {
                        CredentialSource::Refresher
                    } else {
                        CredentialSource::DynamicProvider
                    };
                    let id = CredentialRequestId(self.fresh_id());
                    self.phase = Phase::Fetching { id, source };
                    self.out.push_back(Output::FetchCredentials { id, source });
                }
                Rung::Login => {
                    let AuthProvider::BasicAuth { user, password } = &self.credentials else {
                        continue;
                    };
                    let request = framing::login_request(&self.endpoints, user, password);
                    let req = self.transmit(RequestKind::Login, request, InFlight::Recovery);
                    self.phase = Phase::LoggingIn { req, configured: true };
                }
            }
            return true;
        }
        false
    }

    fn final_error(&self) -> Error {
        if let Some(e) = &self.last_error {
            return e.clone();
        }
        if let Some(e) = &self.rejected {
            return e.clone();
        }
        if self.had_token || self.access.is_some() {
            return Error::TokenExpired;
        }
        match self.credentials {
            AuthProvider::JwtToken(_) => Error::TokenExpired,
            _ => Error::MissingCredentials,
        }
    }

    /// The machine's own login or refresh was answered.
    fn recovery_answered(&mut self, id: RequestId, result: Result<LoginResponse>, now: Now) {
        let configured_login = match self.phase {
            Phase::LoggingIn { req, configured } if req == id => configured,
            Phase::Refreshing { req } if req == id => false,
            _ => return, // forgotten by set_credentials
        };
        let was_refresh = matches!(self.phase, Phase::Refreshing { .. });
        self.phase = Phase::Idle;
        let skew = self.config.skew;
        match result.and_then(|login| {
            let token = Token::new(Secret::new(login.access_token), Origin::Issued)?;
            if !token.usable_at(now, skew) {
                // Already expired by this client's clock (a token lifetime
                // shorter than the skew, or clocks far apart). Using it would
                // break the rule; retrying would loop. This rung fails.
                return Err(Error::TokenExpired);
            }
            let refresh_exp = jwt::inspect(&login.refresh_token).ok().and_then(|c| c.exp);
            Ok((token, Secret::new(login.refresh_token), refresh_exp))
        }) {
            Ok((token, refresh, refresh_exp)) => {
                self.install_token(token);
                self.refresh = Some((refresh, refresh_exp));
            }
            Err(e) => {
                if was_refresh && e.is_credentials_rejected() {
                    self.refresh = None; // that refresh token is no good
                }
                if configured_login && e.is_credentials_rejected() {
                    self.rejected = Some(e.clone()); // final for these credentials
                }
                self.last_error = Some(e);
            }
        }
        self.drive(now);
    }

    fn expire_if_due(&mut self, now: Now) {
        if self
            .access
            .as_ref()
            .is_some_and(|t| !t.usable_at(now, self.config.skew))
        {
            self.access = None;
            self.token_gen += 1;
        }
    }

    /// With a refresh token and nothing in flight, refresh ahead of expiry,
    /// once per token.
    fn maybe_refresh_ahead(&mut self, now: Now) {
        if !self.refresh_ahead_armed() {
            return;
        }
        let due = self
            .access
            .as_ref()
            .and_then(Token::exp)
            .is_some_and(|exp| now.unix_secs().saturating_add(self.ahead().as_secs()) >= exp);
        if !due {
            return;
        }
        self.ahead_tried = Some(self.token_gen);
        if let Some((secret, _)) = &self.refresh
            && let Ok(request) = framing::refresh_request(&self.endpoints, secret)
        {
            let req = self.transmit(RequestKind::Refresh, request, InFlight::Recovery);
            self.phase = Phase::Refreshing { req };
        }
    }

    fn refresh_ahead_armed(&self) -> bool {
        self.refresh.is_some()
            && self.access.is_some()
            && matches!(self.phase, Phase::Idle)
            && self.ahead_tried != Some(self.token_gen)
    }

    fn ahead(&self) -> Duration {
        self.config.refresh_ahead.max(self.config.skew)
    }

    fn update_timer(&mut self, now: Now) {
        let armed = self.refresh_ahead_armed();
        self.timer = self.access.as_ref().and_then(Token::exp).map(|exp| {
            let at = if armed {
                exp.saturating_sub(self.ahead().as_secs())
            } else {
                exp.saturating_sub(self.config.skew.as_secs())
            };
            now.instant_at_unix(at)
        });
    }
}
