//! [`TestServerBuilder`]: the kit's settings, and starting it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::{
    Counters, DEFAULT_JWT_SECRET, DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_FILES_PER_REQUEST,
    DEFAULT_MAX_SUBSCRIPTIONS_PER_USER, DEFAULT_MAX_WS_MESSAGES_PER_SEC, DEFAULT_ROOT_PASSWORD,
    DEFAULT_TOPIC_VISIBILITY_TIMEOUT, State, TestServer, WsControls, WsLimits, files, http, limits, now_rfc3339_millis,
    sql, unix_now_ms,
};

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
    clock_offset: i64,
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
                drop_every_nth_change: None,
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
            clock_offset: 0,
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

    /// Drops every `n`-th change notification of each live subscription,
    /// silently (no frame, no error), as the real server drops the
    /// notifications that do not fit its per-subscription channel under a
    /// burst (of a 5,000-row burst a client gets about 2,600–3,500 rows):
    /// to test an application's own handling (a re-read with
    /// `LiveQuery::resync`, or a topic for lossless delivery). `n` below 2
    /// is taken as 2.
    pub fn drop_every_nth_change(mut self, n: u64) -> Self {
        self.limits.drop_every_nth_change = Some(n.max(2));
        self
    }

    /// Runs the kit's clock `secs` ahead of this machine's (negative:
    /// behind), as a server whose clock disagrees with its clients': it
    /// issues tokens, judges their expiry and dates its answers on it.
    pub fn clock_offset(mut self, secs: i64) -> Self {
        self.clock_offset = secs;
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
            invalidated: Mutex::new(HashSet::new()),
            clock_offset: self.clock_offset,
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
