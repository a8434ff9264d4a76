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

mod files;
mod http;
pub mod jwt;
mod limits;
mod proxy;
pub mod real;
mod setup;
pub mod shape;
mod sql;
mod topics;
mod ws;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch};

pub use jwt::{Claims, Refusal, sign as sign_jwt, verify as verify_jwt};
pub use proxy::{FaultProxy, SeenRequest as ProxiedRequest};
pub use real::RealServer;
pub use sql::Change;

/// The root password unless the builder says otherwise.
pub const DEFAULT_ROOT_PASSWORD: &str = "kalamdb123";
/// The JWT secret unless the builder says otherwise (the real server's test secret).
pub const DEFAULT_JWT_SECRET: &str = "local-test-secret-0123456789abcdefghijklmnop";
/// The server version the kit claims.
pub const VERSION: &str = "0.4.3-rc.4";
/// The `build_date` of the kit's health answers.
pub const BUILD_DATE: &str = "kalam-testkit";

/// Counters of what the server saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Successful logins.
    pub logins: usize,
    /// Refused logins.
    pub failed_logins: usize,
    /// Successful refreshes.
    pub refreshes: usize,
    /// `POST /v1/api/sql` requests (answered in any way).
    pub queries: usize,
    /// WebSocket upgrades.
    pub ws_upgrades: usize,
    /// Successful WebSocket authentications.
    pub ws_auths: usize,
    /// `subscribe` messages received.
    pub ws_subscribes: usize,
    /// `unsubscribe` messages received.
    pub ws_unsubscribes: usize,
    /// WebSocket text messages dropped by the per-connection message rate
    /// limit (each answered with a `RATE_LIMIT_EXCEEDED` error frame).
    pub ws_rate_limited: usize,
    /// Subscriptions refused with `SUBSCRIPTION_LIMIT_EXCEEDED`.
    pub ws_subscriptions_refused: usize,
    /// `POST /v1/api/topics/consume` requests (answered in any way).
    pub topic_consumes: usize,
    /// `POST /v1/api/topics/ack` requests (answered in any way).
    pub topic_acks: usize,
    /// Multipart `POST /v1/api/sql` requests (file uploads, answered in any way).
    pub uploads: usize,
    /// `GET /v1/files/…` requests (answered in any way).
    pub downloads: usize,
}

/// One request, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// Method.
    pub method: String,
    /// Path (without query).
    pub path: String,
    /// The raw `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl SeenRequest {
    /// The scheme of the `Authorization` header (`Bearer`, `Basic`…).
    pub fn auth_scheme(&self) -> Option<&str> {
        self.authorization.as_deref().and_then(|a| a.split(' ').next())
    }
}

/// An answer to give instead of the real one (see [`TestServer::fail_next`]).
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests to this path (any path if `None`).
    pub path: Option<String>,
    /// Status.
    pub status: u16,
    /// Body.
    pub body: String,
    /// Content type.
    pub content_type: String,
}

impl Fault {
    /// A fault answering `status` with a JSON `body`.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Fault {
            path: None,
            status,
            body: body.into(),
            content_type: "application/json".into(),
        }
    }

    /// A fault answering `status` with a plain-text (or HTML) `body`.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Fault {
            path: None,
            status,
            body: body.into(),
            content_type: "text/html".into(),
        }
    }

    /// Only for requests to `path`.
    pub fn on(mut self, path: &str) -> Self {
        self.path = Some(path.to_owned());
        self
    }
}

/// A token to mint with [`TestServer::mint_token`].
#[derive(Debug, Clone)]
pub struct Mint {
    /// User id.
    pub user: String,
    /// Role (default: the user's role, else `user`).
    pub role: Option<String>,
    /// `access` or `refresh`.
    pub token_type: String,
    /// Issued at (default now).
    pub iat: Option<u64>,
    /// Expiry (default now + the server's lifetime).
    pub exp: Option<u64>,
    /// Sign with another secret.
    pub wrong_signature: bool,
}

impl Mint {
    /// An access token for `user`.
    pub fn access(user: &str) -> Self {
        Mint {
            user: user.to_owned(),
            role: None,
            token_type: "access".into(),
            iat: None,
            exp: None,
            wrong_signature: false,
        }
    }

    /// A refresh token for `user`.
    pub fn refresh(user: &str) -> Self {
        Mint {
            token_type: "refresh".into(),
            ..Mint::access(user)
        }
    }

    /// Expired an hour ago (well past the 60 s leeway).
    pub fn expired(mut self) -> Self {
        let now = unix_now();
        self.iat = Some(now - 7200);
        self.exp = Some(now - 3600);
        self
    }

    /// Expires in `secs` seconds.
    pub fn expires_in(mut self, secs: u64) -> Self {
        self.exp = Some(unix_now().saturating_add(secs));
        self
    }

    /// Explicit `iat` and `exp`.
    pub fn times(mut self, iat: u64, exp: u64) -> Self {
        self.iat = Some(iat);
        self.exp = Some(exp);
        self
    }

    /// With a role claim.
    pub fn role(mut self, role: &str) -> Self {
        self.role = Some(role.to_owned());
        self
    }

    /// Signed with the wrong secret.
    pub fn wrong_signature(mut self) -> Self {
        self.wrong_signature = true;
        self
    }
}

/// The real server's defaults of its WebSocket limits (PROTOCOL §6,
/// `[rate_limit]`).
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_USER: usize = 10;
/// Text messages per second per WebSocket connection (token bucket of this
/// capacity, refilled at this rate).
pub const DEFAULT_MAX_WS_MESSAGES_PER_SEC: u32 = 50;

pub use files::{DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_FILES_PER_REQUEST, sha256_hex, stored_name};
pub use topics::DEFAULT_TOPIC_VISIBILITY_TIMEOUT;

/// The server's WebSocket limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WsLimits {
    pub(crate) max_subscriptions_per_user: usize,
    pub(crate) max_messages_per_sec: u32,
}

/// Controls of the WebSocket side.
pub(crate) struct WsControls {
    pub(crate) refuse_auth: AtomicBool,
    pub(crate) stall: watch::Sender<bool>,
    /// Bumped to drop every socket.
    pub(crate) drop_generation: watch::Sender<u64>,
    /// Bumped to send one malformed frame on every socket.
    pub(crate) malformed_generation: watch::Sender<u64>,
    pub(crate) idle_timeout: Mutex<Duration>,
    pub(crate) limits: WsLimits,
    /// Subscription slots taken per user, across all connections (as the
    /// server counts them: see `ws::Session`).
    pub(crate) subscriptions: Mutex<HashMap<String, usize>>,
}

/// The server's shared state.
pub(crate) struct State {
    pub(crate) root_password: String,
    pub(crate) secret: String,
    pub(crate) lifetime: Duration,
    pub(crate) engine: Mutex<sql::Engine>,
    pub(crate) changes: broadcast::Sender<Arc<Change>>,
    pub(crate) counters: Mutex<Counters>,
    pub(crate) seen: Mutex<Vec<SeenRequest>>,
    pub(crate) issued: Mutex<HashSet<String>>,
    pub(crate) expired: Mutex<HashSet<String>>,
    pub(crate) faults: Mutex<VecDeque<(usize, Fault)>>,
    pub(crate) latency: Mutex<Duration>,
    pub(crate) ws: WsControls,
    pub(crate) open_sockets: AtomicUsize,
    /// Files uploaded into FILE columns.
    pub(crate) files: Mutex<files::Files>,
    pub(crate) file_limits: files::FileLimits,
    /// Every peer is treated as remote (the localhost-only endpoints refuse).
    pub(crate) remote_peers: bool,
    pub(crate) started: std::time::Instant,
    /// Auth and SQL request rates (off unless the builder sets them).
    pub(crate) rates: limits::RateLimits,
}

impl State {
    pub(crate) fn count(&self, f: impl FnOnce(&mut Counters)) {
        if let Ok(mut c) = self.counters.lock() {
            f(&mut c);
        }
    }

    /// Issues a token (recorded, so `force_expire_all` can expire it).
    pub(crate) fn issue(&self, user: &str, role: &str, email: Option<String>, token_type: &str) -> (String, u64) {
        let now = unix_now();
        let lifetime = self.lifetime.as_secs();
        let exp = now.saturating_add(if token_type == "refresh" {
            lifetime.saturating_mul(7)
        } else {
            lifetime
        });
        let claims = Claims {
            sub: user.to_owned(),
            iss: "kalamdb".into(),
            exp,
            iat: now,
            email,
            role: role.to_owned(),
            token_type: token_type.to_owned(),
        };
        let mut claims = claims;
        let mut token = jwt::sign(&self.secret, &claims);
        // Tokens are a pure function of their claims: one issued in the same
        // second as a token `force_expire_all` expired would be that token.
        // Move it a second on (well within the 60 s leeway) until it is new.
        while self.expired.lock().map(|e| e.contains(&token)).unwrap_or(false) {
            claims.iat += 1;
            claims.exp = claims.exp.saturating_add(1);
            token = jwt::sign(&self.secret, &claims);
        }
        if let Ok(mut i) = self.issued.lock() {
            i.insert(token.clone());
        }
        (token, claims.exp)
    }

    /// Verifies a token of `token_type` against the user store.
    pub(crate) fn verify(&self, token: &str, token_type: &str) -> Result<(Claims, String), jwt::Refusal> {
        let claims = jwt::verify(&self.secret, token, unix_now(), 60)?;
        if self.expired.lock().map(|e| e.contains(token)).unwrap_or(false) {
            return Err(jwt::Refusal::Expired);
        }
        if claims.token_type != token_type {
            return Err(jwt::Refusal::Invalid);
        }
        let engine = self.engine.lock().map_err(|_| jwt::Refusal::Invalid)?;
        let user = engine.users.get(&claims.sub).ok_or(jwt::Refusal::Invalid)?;
        if user.role != claims.role {
            return Err(jwt::Refusal::Invalid);
        }
        let role = user.role.clone();
        Ok((claims, role))
    }
}

/// Builds a [`TestServer`].
#[derive(Debug, Clone)]
pub struct TestServerBuilder {
    root_password: String,
    secret: String,
    lifetime: Duration,
    latency: Duration,
    idle_timeout: Duration,
    limits: WsLimits,
    topic_visibility_timeout: Duration,
    file_limits: files::FileLimits,
    needs_setup: bool,
    remote_peers: bool,
    auth_rate: Option<u32>,
    query_rate: Option<u32>,
}

impl Default for TestServerBuilder {
    fn default() -> Self {
        TestServerBuilder {
            root_password: DEFAULT_ROOT_PASSWORD.into(),
            secret: DEFAULT_JWT_SECRET.into(),
            lifetime: Duration::from_secs(24 * 3600),
            latency: Duration::ZERO,
            idle_timeout: Duration::from_secs(10),
            limits: WsLimits {
                max_subscriptions_per_user: DEFAULT_MAX_SUBSCRIPTIONS_PER_USER,
                max_messages_per_sec: DEFAULT_MAX_WS_MESSAGES_PER_SEC,
            },
            topic_visibility_timeout: DEFAULT_TOPIC_VISIBILITY_TIMEOUT,
            file_limits: files::FileLimits {
                max_file_size: DEFAULT_MAX_FILE_SIZE,
                max_files: DEFAULT_MAX_FILES_PER_REQUEST,
            },
            needs_setup: false,
            remote_peers: false,
            auth_rate: None,
            query_rate: None,
        }
    }
}

impl TestServerBuilder {
    /// The root password (default `kalamdb123`).
    pub fn root_password(mut self, p: &str) -> Self {
        self.root_password = p.to_owned();
        self
    }

    /// The HS256 secret.
    pub fn jwt_secret(mut self, s: &str) -> Self {
        self.secret = s.to_owned();
        self
    }

    /// Lifetime of new access tokens (refresh tokens last 7×). Default 24 h.
    pub fn token_lifetime(mut self, d: Duration) -> Self {
        self.lifetime = d;
        self
    }

    /// Added latency before every answer.
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }

    /// How long a silent WebSocket client is kept (default 10 s, as the server).
    pub fn ws_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Live subscriptions one user may hold across all connections
    /// (default 10, as the server's `rate_limit.max_subscriptions_per_user`).
    /// One more is refused with a `SUBSCRIPTION_LIMIT_EXCEEDED` error frame;
    /// a slot is freed by `unsubscribe` or when the socket closes.
    pub fn max_subscriptions_per_user(mut self, n: usize) -> Self {
        self.limits.max_subscriptions_per_user = n;
        self
    }

    /// WebSocket text messages per second per connection (default 50, as
    /// the server's `rate_limit.max_messages_per_sec`): a token bucket of
    /// that capacity, refilled at that rate. A text message over the limit
    /// (`authenticate` and `{"type":"ping"}` included; binary and control
    /// frames are not counted) is dropped and answered with
    /// `{"type":"error","subscription_id":"rate_limit","code":"RATE_LIMIT_EXCEEDED",…}`;
    /// the connection stays open.
    pub fn max_ws_messages_per_sec(mut self, n: u32) -> Self {
        self.limits.max_messages_per_sec = n;
        self
    }

    /// How long a range of topic messages handed out by
    /// `POST /v1/api/topics/consume` stays claimed by its consumer group
    /// without an ack (default 60 s, [`DEFAULT_TOPIC_VISIBILITY_TIMEOUT`], as
    /// the server): until then the group's next consumes skip it; after, it
    /// is handed out again. Measured on Tokio's clock, so a test with paused
    /// time can advance past it.
    pub fn topic_visibility_timeout(mut self, d: Duration) -> Self {
        self.topic_visibility_timeout = d;
        self
    }

    /// The largest file one `file:<placeholder>` part of a multipart
    /// `POST /v1/api/sql` may carry (default 25 MiB,
    /// [`DEFAULT_MAX_FILE_SIZE`], as the server's `files.max_size_bytes`).
    /// A larger part is refused with `400 FILE_TOO_LARGE` ("File '…'
    /// exceeds maximum size of … bytes"). Lower it to test that refusal
    /// without 25 MiB bodies (a body over 10 MiB is refused first, with
    /// `413 BODY_TOO_LARGE`, as by the server).
    pub fn max_file_size(mut self, bytes: usize) -> Self {
        self.file_limits.max_file_size = bytes;
        self
    }

    /// The most `file:` parts one multipart request may carry (default 20,
    /// [`DEFAULT_MAX_FILES_PER_REQUEST`]); one more is refused with
    /// `400 TOO_MANY_FILES`.
    pub fn max_files_per_request(mut self, n: usize) -> Self {
        self.file_limits.max_files = n;
        self
    }

    /// Start as a server that needs first-time setup (PROTOCOL §2.8): root
    /// has no password, `GET /v1/api/auth/status` says `needs_setup: true`,
    /// logging in as root with an empty password answers
    /// `428 setup_required`, and `POST /v1/api/auth/setup` (user, password,
    /// root_password, email) sets root's password and creates the first DBA
    /// user, with the server's validation (`weak_password`, `invalid_user`,
    /// `user_exists`, then `409 already_configured`). Default `false`.
    /// [`TestServer::root_password`] stays the builder's value.
    pub fn needs_setup(mut self, on: bool) -> Self {
        self.needs_setup = on;
        self
    }

    /// Treat every peer as remote (default `false`: the kit's peers are
    /// loopback). The localhost-only endpoints then answer as the server
    /// answers a remote caller: `/health` and `/v1/api/healthcheck`
    /// `403 {"error":"Access denied. Health endpoint is localhost-only."}`,
    /// `/v1/api/cluster/health` the same for "Cluster health",
    /// `/v1/api/auth/status` and `/v1/api/auth/setup`
    /// `403 {"error":"forbidden","message":…}`; and root without a password
    /// cannot log in (`403 forbidden`).
    pub fn remote_peers(mut self, on: bool) -> Self {
        self.remote_peers = on;
        self
    }

    /// Limit authentication requests (login, refresh, setup) to `n` a
    /// second, as the server's `rate_limit.max_auth_requests_per_ip_per_sec`
    /// (20 on the server; off in the kit unless set): a token bucket of
    /// capacity `n` refilled at `n` per second on Tokio's clock. One over
    /// answers `429 {"error":"rate_limited","message":"Too many
    /// authentication attempts. Please retry shortly."}` (setup: "Too many
    /// setup attempts…"). WebSocket authentication is not counted.
    pub fn max_auth_requests_per_sec(mut self, n: u32) -> Self {
        self.auth_rate = Some(n);
        self
    }

    /// Limit `POST /v1/api/sql` to `n` requests a second per user, as the
    /// server's `rate_limit.max_queries_per_sec` (100 on the server; off in
    /// the kit unless set). One over answers `429` in the SQL envelope with
    /// `RATE_LIMIT_EXCEEDED` ("Too many queries per second. Please slow
    /// down.").
    pub fn max_queries_per_sec(mut self, n: u32) -> Self {
        self.query_rate = Some(n);
        self
    }

    /// Binds 127.0.0.1 on a free port and starts serving.
    pub async fn start(self) -> TestServer {
        let (changes, _) = broadcast::channel(4096);
        let mut engine = sql::Engine::new(changes.clone());
        engine.topics.visibility_timeout = self.topic_visibility_timeout;
        let hash = if self.needs_setup {
            String::new()
        } else {
            bcrypt::hash(&self.root_password, 4).expect("bcrypt")
        };
        engine.users.insert(
            "root".into(),
            sql::UserRecord {
                role: "system".into(),
                hash,
                email: Some("root@localhost".into()),
                created_at: now_rfc3339_millis(),
                created_ms: unix_now_ms(),
            },
        );
        let state = Arc::new(State {
            root_password: self.root_password,
            secret: self.secret,
            lifetime: self.lifetime,
            engine: Mutex::new(engine),
            changes,
            counters: Mutex::new(Counters::default()),
            seen: Mutex::new(Vec::new()),
            issued: Mutex::new(HashSet::new()),
            expired: Mutex::new(HashSet::new()),
            faults: Mutex::new(VecDeque::new()),
            latency: Mutex::new(self.latency),
            ws: WsControls {
                refuse_auth: AtomicBool::new(false),
                stall: watch::channel(false).0,
                drop_generation: watch::channel(0).0,
                malformed_generation: watch::channel(0).0,
                idle_timeout: Mutex::new(self.idle_timeout),
                limits: self.limits,
                subscriptions: Mutex::new(HashMap::new()),
            },
            open_sockets: AtomicUsize::new(0),
            files: Mutex::new(files::Files::default()),
            file_limits: self.file_limits,
            remote_peers: self.remote_peers,
            started: std::time::Instant::now(),
            rates: limits::RateLimits::new(self.auth_rate, self.query_rate),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(http::serve(listener, state.clone(), stopped));
        TestServer {
            addr,
            state,
            stop,
            task: Mutex::new(Some(task)),
        }
    }
}

/// A running in-process server. Stops on [`shutdown`](Self::shutdown) or drop.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// A server with the defaults (root / `kalamdb123`).
    pub async fn start() -> TestServer {
        TestServerBuilder::default().start().await
    }

    /// A builder.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The root password.
    pub fn root_password(&self) -> &str {
        &self.state.root_password
    }

    /// The JWT secret.
    pub fn jwt_secret(&self) -> &str {
        &self.state.secret
    }

    /// Mints a token with any user, role, type, `iat`, `exp` or signature
    /// (role and e-mail default to the user's). Counted as issued, so
    /// [`force_expire_all`](Self::force_expire_all) expires it too.
    pub fn mint_token(&self, m: Mint) -> String {
        let now = unix_now();
        let known = self
            .state
            .engine
            .lock()
            .ok()
            .and_then(|e| e.users.get(&m.user).map(|u| (u.role.clone(), u.email.clone())));
        let (role, email) = match known {
            Some((role, email)) => (m.role.unwrap_or(role), email),
            None => (m.role.unwrap_or_else(|| "user".into()), None),
        };
        let mut claims = Claims {
            sub: m.user,
            iss: "kalamdb".into(),
            exp: m.exp.unwrap_or(now.saturating_add(self.state.lifetime.as_secs())),
            iat: m.iat.unwrap_or(now),
            email,
            role,
            token_type: m.token_type,
        };
        let secret = if m.wrong_signature {
            "a-different-secret-entirely-0123456789"
        } else {
            &self.state.secret
        };
        let mut t = jwt::sign(secret, &claims);
        // As in `State::issue`: with default times, never hand out a token
        // that `force_expire_all` already expired (tokens are a pure
        // function of their claims).
        while m.iat.is_none() && self.state.expired.lock().map(|e| e.contains(&t)).unwrap_or(false) {
            claims.iat += 1;
            if m.exp.is_none() {
                claims.exp = claims.exp.saturating_add(1);
            }
            t = jwt::sign(secret, &claims);
        }
        if let Ok(mut i) = self.state.issued.lock() {
            i.insert(t.clone());
        }
        t
    }

    /// Every token issued or minted so far answers `TOKEN_EXPIRED` from now on.
    pub fn force_expire_all(&self) {
        let issued: Vec<String> = self
            .state
            .issued
            .lock()
            .map(|i| i.iter().cloned().collect())
            .unwrap_or_default();
        if let Ok(mut e) = self.state.expired.lock() {
            e.extend(issued);
        }
    }

    /// What the server counted so far.
    pub fn counters(&self) -> Counters {
        self.state.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Every HTTP request seen so far, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The `Authorization` header of every request to `path` so far, in
    /// order (`None` where there was none): e.g. to prove that no `Basic`
    /// header ever reached `/v1/api/sql`.
    pub fn authorizations(&self, path: &str) -> Vec<Option<String>> {
        self.state
            .seen
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|r| r.path == path)
                    .map(|r| r.authorization.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The next `n` requests (to the fault's path, if it has one) get this
    /// answer instead of the real one.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        if let Ok(mut f) = self.state.faults.lock() {
            f.push_back((n, fault));
        }
    }

    /// Added latency before every answer from now on.
    pub fn set_latency(&self, d: Duration) {
        if let Ok(mut l) = self.state.latency.lock() {
            *l = d;
        }
    }

    /// Drops every open WebSocket now, without a close frame.
    pub fn drop_all_sockets(&self) {
        self.state.ws.drop_generation.send_modify(|g| *g += 1);
    }

    /// Refuse WebSocket authentication (`auth_error` + close 1008) while `on`.
    pub fn refuse_ws_auth(&self, on: bool) {
        self.state.ws.refuse_auth.store(on, Ordering::SeqCst);
    }

    /// Stop sending anything on WebSockets while `on` (frames are held back).
    pub fn stall_ws(&self, on: bool) {
        self.state.ws.stall.send_replace(on);
    }

    /// Send one malformed (non-JSON) text frame on every open socket.
    pub fn send_malformed_frame(&self) {
        self.state.ws.malformed_generation.send_modify(|g| *g += 1);
    }

    /// WebSockets open right now.
    pub fn open_sockets(&self) -> usize {
        self.state.open_sockets.load(Ordering::SeqCst)
    }

    /// Subscription slots `user` holds right now, across all connections
    /// (see [`TestServerBuilder::max_subscriptions_per_user`]).
    pub fn subscriptions_of(&self, user: &str) -> usize {
        self.state
            .ws
            .subscriptions
            .lock()
            .map(|s| s.get(user).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The offset consumer group `group` last acknowledged
    /// (`POST /v1/api/topics/ack`) on `partition` of `topic`, if any: what a
    /// test of an at-least-once consumer checks after processing.
    pub fn committed_offset(&self, topic: &str, group: &str, partition: u32) -> Option<u64> {
        self.state
            .engine
            .lock()
            .ok()
            .and_then(|e| e.topics.committed(topic, group, partition))
    }

    /// Messages in `partition` of `topic` (`None` for no such topic or
    /// partition), whatever any group consumed.
    pub fn topic_len(&self, topic: &str, partition: u32) -> Option<usize> {
        self.state
            .engine
            .lock()
            .ok()
            .and_then(|e| e.topics.len(topic, partition))
    }

    /// A receiver of every committed row change.
    pub fn changes(&self) -> broadcast::Receiver<Arc<Change>> {
        self.state.changes.subscribe()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.drop_all_sockets();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Restarts the server on the same port, keeping its data (tables,
    /// rows, users, issued tokens), as a server process restarted by an
    /// operator: every connection is cut (WebSockets without a close frame),
    /// the port refuses connections for a moment, then it serves again.
    /// Subscriptions are gone, as on the real server.
    pub async fn restart(&self) {
        let _ = self.stop.send(true);
        self.drop_all_sockets();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await; // the listener is closed
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                // Not free yet: the old listener is going away.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("the test server could not bind {} again: {e}", self.addr),
            }
        };
        self.stop.send_replace(false);
        let task = tokio::spawn(http::serve(listener, self.state.clone(), self.stop.subscribe()));
        if let Ok(mut t) = self.task.lock() {
            *t = Some(task);
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.drop_all_sockets();
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

pub(crate) fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// Now as RFC 3339 with milliseconds and `+00:00`, like the server.
pub(crate) fn now_rfc3339_millis() -> String {
    rfc3339(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(), 3)
}

/// `(year, month, day)` of a day count since the Unix epoch (Howard
/// Hinnant's civil-from-days).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 (UTC, `+00:00`) with `digits` fractional digits.
pub(crate) fn rfc3339(since_epoch: Duration, digits: usize) -> String {
    let secs = since_epoch.as_secs() as i64;
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let nanos = format!("{:09}", since_epoch.subsec_nanos());
    let frac = &nanos[..digits.min(9)];
    let dot = if frac.is_empty() { "" } else { "." };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{dot}{frac}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

/// An HTTP date (`Mon, 23 Nov 2026 19:37:56 GMT`), as in cookie `Expires`.
pub(crate) fn http_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = unix_secs as i64;
    let days = secs.div_euclid(86_400);
    let (y, m, d) = civil(days);
    let rem = secs.rem_euclid(86_400);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1).clamp(0, 11) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_as_the_server_writes_them() {
        // From wire-samples/http_login_success.json (exp 1795462676).
        assert_eq!(http_date(1_795_462_676), "Mon, 23 Nov 2026 19:37:56 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            rfc3339(Duration::new(1_795_462_676, 625_643_585), 9),
            "2026-11-23T19:37:56.625643585+00:00"
        );
        assert_eq!(
            rfc3339(Duration::new(1_795_462_676, 0), 3),
            "2026-11-23T19:37:56.000+00:00"
        );
        assert_eq!(rfc3339(Duration::new(951_782_400, 0), 0), "2000-02-29T00:00:00+00:00");
    }
}
