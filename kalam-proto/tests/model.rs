//! Model checking of the client core: a breadth-first explorer that tries
//! every interleaving, up to a depth, of what a driver can feed a
//! [`ClientCore`](kalam_proto::ClientCore): HTTP answers and transport
//! errors for each request in flight, time passing (to the core's timer or
//! to an exchange's receive timeout, which the driver's transport enforces),
//! credential-callback answers, socket opens, failed upgrades, drops in
//! every phase (before `auth_success`, during initial pages, during a
//! resubscribe) and server frames, and the application's commands: a query,
//! `GET /auth/me`, a non-replayable upload, subscriptions, credentials,
//! connect and disconnect; and in two scenarios every other request kind
//! (health, setup status, setup, topic consume and ack, a download, an
//! explicit login and refresh). Two scenarios run the core over a cluster of
//! three nodes ([`Commands::Cluster`], [`Commands::ClusterDown`]): requests
//! also fail as a cluster's do (a refused connection, an answer lost after
//! sending, `NOT_LEADER`, `FORWARD_FAILED`), once with every node down, and
//! the commands include a write that must not run twice.
//!
//! The core is not `Clone`: a state is its trace of actions from the start,
//! replayed on a fresh [`Pump`] (the core is deterministic, its jitter
//! seeded). States are deduplicated by a fingerprint of what the explorer
//! can observe (see [`Model::fingerprint`]), so the search scales with the
//! abstract state space, not with the number of traces.
//!
//! Every transition is checked by the pump's own contract checks and by the
//! invariants of [`Model::check`]: safety (no expired or refused token
//! sent, one login at a time, no storm, no subscribe twice, a non-replayable
//! upload sent once, a refused token recovered on every kind of request
//! that carries it; on a cluster, no statement that must not run twice sent
//! again once it may have run, its caller told the outcome is unknown when
//! its answer was lost, every request and socket to a node of the cluster)
//! and **bounded liveness**: every caller is answered by a
//! deadline derived from the configured timeouts ([`Model::register`]), and
//! while it waits, something (the core's timer or a receive timeout) is due
//! before that deadline, so no interleaving can leave it waiting past it.
//! Every newly found state is then drained ([`Model::drain`]) to check that
//! no waiter or subscription is left behind; in the cluster scenarios it is
//! also drained with every node down and no disconnect
//! ([`Model::drain_down`]): every caller must be answered all the same. A violation panics with the
//! shortest trace that reaches it (breadth-first order).
//!
//! `KALAM_MODEL_DEPTH` (default [`CI_DEPTH`], [`CI_DEPTH_EVERY_KIND`] for
//! the every-request-kind scenarios and [`CI_DEPTH_CLUSTER`] for the cluster
//! ones) bounds the depth, `KALAM_MODEL_STATES` (default [`CI_STATES`]) the
//! distinct states per scenario, and `KALAM_MODEL_ONLY` picks the scenarios
//! whose name contains it; a deeper run:
//! `KALAM_MODEL_DEPTH=7 cargo test --release -p kalam-proto --test model -- --nocapture`.

mod support;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use std::time::Duration;

use kalam_proto::{
    AckRequest, AuthProvider, ClientConfig, ConnectionOptions, ConsumeRequest, Error, Instant, KalamLinkTimeouts,
    LiveEvent, Operation, QueryRequest, RequestKind, Secret, SetupRequest, SubId, TokenUse, TransportError, WsState,
};
use support::{
    AUTH_ERROR, AUTH_SUCCESS, BAD_LOGIN, EXPIRED, INVALID, OK, Pump, RATE_LIMITED, T0, ack_frame, batch_frame,
    change_frame, jwt, login_body, sub_error_frame,
};

/// Depth explored by a plain `cargo test`.
const CI_DEPTH: usize = 6;
/// Depth of the every-request-kind scenarios in a plain `cargo test` (ten
/// commands each: depth 6 is 610,000 states there, 100,000 at depth 5).
const CI_DEPTH_EVERY_KIND: usize = 5;
/// Depth of the cluster scenarios in a plain `cargo test` (three commands,
/// five answers a request: 10,000 and 20,000 states at depth 7; a depth
/// more triples them).
const CI_DEPTH_CLUSTER: usize = 7;

/// A `GET /auth/me` answer.
const ME: &str =
    r#"{"user":{"id":"root","role":"system","email":null,"created_at":"x","updated_at":"x"},"admin_ui_access":true}"#;
/// Answers of the open and topic endpoints.
const HEALTH: &str = r#"{"api_version":"v1","build_date":"x","status":"healthy","version":"0.4.3-rc.4"}"#;
const SETUP_STATUS: &str = r#"{"needs_setup":true,"message":"Server requires initial setup"}"#;
const SETUP: &str =
    r#"{"user":{"id":"dba","role":"dba","email":null,"created_at":"x","updated_at":"x"},"message":"ok"}"#;
const CONSUMED: &str = r#"{"messages":[],"next_offset":5,"has_more":false}"#;
const ACKED: &str = r#"{"success":true,"acknowledged_offset":4}"#;

/// The other request kinds an application can send (besides queries, `GET
/// /auth/me` and uploads), each once per run in the scenarios that explore
/// them ([`Commands::EveryKind`]).
const OTHER_KINDS: [RequestKind; 8] = [
    RequestKind::Health,
    RequestKind::SetupStatus,
    RequestKind::Setup,
    RequestKind::ConsumeTopic,
    RequestKind::AckTopic,
    RequestKind::Download,
    RequestKind::Login,
    RequestKind::Refresh,
];

fn operation_of(kind: RequestKind) -> Operation {
    match kind {
        RequestKind::Health => Operation::Health,
        RequestKind::SetupStatus => Operation::SetupStatus,
        RequestKind::Setup => Operation::Setup(SetupRequest::new("dba", "Str0ng-Passw0rd", "R00t-Passw0rd")),
        RequestKind::ConsumeTopic => Operation::ConsumeTopic(ConsumeRequest::new("app.t", "g")),
        RequestKind::AckTopic => Operation::AckTopic(AckRequest {
            topic_id: "app.t".into(),
            group_id: "g".into(),
            partition_id: 0,
            upto_offset: 4,
        }),
        RequestKind::Download => Operation::Download {
            path: "/v1/files/p/docs/f0001/1-a.txt".into(),
            sink: 1,
        },
        RequestKind::Login => Operation::Login {
            user: "root".into(),
            password: Secret::new("pw"),
        },
        RequestKind::Refresh => Operation::Refresh {
            refresh_token: Secret::new(jwt("refresh", T0 + 1_000_000, "explicit")),
        },
        other => unreachable!("{other:?} is not among the other kinds"),
    }
}

/// The driver's receive timeout: an HTTP exchange with no answer by then
/// fails with [`TransportError::Timeout`] (the explorer's `Tick` does it, as
/// a driver's transport would).
fn receive_timeout() -> Duration {
    KalamLinkTimeouts::default().receive_timeout
}

/// Distinct states per scenario at most (the CI depth stays well below).
const CI_STATES: usize = 2_000_000;

/// Lifetime of the access tokens the model's server and callbacks hand out:
/// refresh-ahead after 15 s, expired by the client's rule after 45 s, so
/// that expiry is a few timer jumps away.
const TOKEN_LIFETIME: u64 = 75;
/// A login answer whose token is already expired by the client's rule.
const STALE_LIFETIME: u64 = 10;

// ------------------------------------------------------------------ actions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpAnswer {
    /// A query's success, or a login / refresh with a fresh token pair.
    Ok,
    /// A login / refresh with an access token already expired by the client's rule.
    Stale,
    /// `TOKEN_EXPIRED` (queries).
    Expired,
    /// `INVALID_CREDENTIALS` (queries).
    Invalid,
    /// A refused login / refresh.
    Refused,
    /// No answer: the connection could not be made (nothing was sent).
    Transport,
    /// The answer was lost after the request was sent: a reset for a request
    /// at an even index of `pump.http`, a connection closed before the
    /// answer for one at an odd index (the core treats both alike).
    Lost,
    /// 503 `NOT_LEADER` (naming the second node as the leader).
    NotLeader,
    /// 502 `FORWARD_FAILED`.
    ForwardFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CredAnswer {
    Token,
    Error,
    Panic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Answer `pump.http[i]`.
    Http(usize, HttpAnswer),
    /// Answer `pump.fetch_log[i]`.
    Cred(usize, CredAnswer),
    /// Time passes to the next thing due: the core's `poll_timeout`, or an
    /// HTTP exchange's receive timeout (which fails it, as the driver's
    /// transport would); both are handled.
    Tick,
    /// The socket being opened opens / fails to open.
    Open(u64),
    OpenFail(u64),
    /// Server frames on the open socket.
    AuthSuccess,
    AuthError,
    /// Acknowledge / refuse / drop for rate the earliest subscribe the server holds.
    Ack,
    Refuse,
    RateLimit,
    /// The initial page of the earliest subscription loading.
    Batch,
    /// A change on the earliest live subscription.
    Change,
    /// The open socket drops.
    Drop,
    /// Application commands: a query, then `GET /auth/me`.
    Query,
    /// The cluster scenarios' [`WRITE`].
    Write,
    /// One of [`OTHER_KINDS`], by index.
    Other(u8),
    /// A FILE upload whose data comes from a reader: it cannot be sent twice.
    UploadReader,
    SetAuth,
    Subscribe,
    Unsubscribe,
    Connect,
    Disconnect,
}

// ---------------------------------------------------------------- scenarios

struct Scenario {
    name: &'static str,
    credentials: fn() -> AuthProvider,
    config: fn() -> ClientConfig,
    /// New credentials for `set_auth` (`n`: a counter, `exp`: unix secs).
    set_auth: fn(u64, u64) -> AuthProvider,
    /// Where the exploration starts: these actions from a fresh core (they
    /// are checked like any other), so that states deep in a session are
    /// within the depth bound.
    prefix: &'static [Action],
    /// The server's clock minus the client's, in seconds: tokens are minted
    /// and answers dated on the server's clock.
    server_offset: i64,
    /// The nodes' base URLs: one, or the nodes of a cluster (then the
    /// alphabet also fails requests the ways a cluster does, see
    /// [`Model::actions`]).
    nodes: &'static [&'static str],
    /// The application's commands.
    commands: Commands,
}

/// The application's commands a scenario explores (besides a query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commands {
    /// `GET /auth/me`, subscriptions, an upload, credentials, connect and
    /// disconnect.
    Session,
    /// Every other request kind ([`OTHER_KINDS`]).
    EveryKind,
    /// A cluster's: one read (`SELECT 1`), one write that must not run twice
    /// ([`WRITE`]) and one subscription. Every node answers.
    Cluster,
    /// The same and `connect()`, with every node down: HTTP requests are
    /// answered only by a refused connection or a lost answer (or time
    /// out), and no socket opens.
    ClusterDown,
}

/// The node of the single-node scenarios ([`Pump::new`]'s).
const ONE_NODE: &[&str] = &["http://127.0.0.1:2900"];
/// A cluster of three nodes; the model's `NOT_LEADER` names the second.
const CLUSTER: &[&str] = &["http://10.0.0.1:2900", "http://10.0.0.2:2900", "http://10.0.0.3:2900"];
/// The cluster scenarios' write: not retry-safe (it may not run twice).
const WRITE: &str = "INSERT INTO a.b VALUES (1)";
/// Cluster errors: the node is not the leader (it did not run the
/// statement), or could not forward it to the leader (it may have run).
const NOT_LEADER: &str = r#"{"status":"error","results":[],"took":0.1,"error":{"code":"NOT_LEADER","message":"Not leader for shard. Leader: 10.0.0.2:2900"}}"#;
const FORWARD_FAILED: &str = r#"{"status":"error","results":[],"took":0.1,"error":{"code":"FORWARD_FAILED","message":"Failed to forward request to leader: connection reset"}}"#;

fn basic() -> AuthProvider {
    AuthProvider::basic_auth("root".into(), "pw".into())
}

fn basic_config() -> ClientConfig {
    support::config().with_refresher(true)
}

fn new_password(n: u64, _: u64) -> AuthProvider {
    AuthProvider::basic_auth("root".into(), format!("pw{n}"))
}

fn scenarios() -> Vec<Scenario> {
    use Action::*;
    vec![
        Scenario {
            name: "basic credentials + refresher",
            credentials: basic,
            config: basic_config,
            set_auth: new_password,
            prefix: &[],
            server_offset: 0,
            nodes: ONE_NODE,
            commands: Commands::Session,
        },
        Scenario {
            name: "configured token + dynamic provider, one reconnect attempt",
            credentials: || AuthProvider::jwt_token(jwt("access", T0 + TOKEN_LIFETIME, "configured")),
            config: || {
                let options = ConnectionOptions::default().with_max_reconnect_attempts(Some(1));
                ClientConfig::new(&options, &KalamLinkTimeouts::default(), 7).with_dynamic_provider(true)
            },
            set_auth: |n, exp| AuthProvider::jwt_token(jwt("access", exp, &format!("set{n}"))),
            prefix: &[],
            server_offset: 0,
            nodes: ONE_NODE,
            commands: Commands::Session,
        },
        Scenario {
            name: "basic + refresher, two subscriptions on a ready socket",
            credentials: basic,
            config: basic_config,
            set_auth: new_password,
            prefix: &[Subscribe, Subscribe, Cred(0, CredAnswer::Token), Open(1), AuthSuccess],
            server_offset: 0,
            nodes: ONE_NODE,
            commands: Commands::Session,
        },
        Scenario {
            name: "basic + refresher, a live subscription after a drop",
            credentials: basic,
            config: basic_config,
            set_auth: new_password,
            prefix: &[
                Subscribe,
                Query,
                Cred(0, CredAnswer::Token),
                Open(1),
                AuthSuccess,
                Ack,
                Change,
                Drop,
            ],
            server_offset: 0,
            nodes: ONE_NODE,
            commands: Commands::Session,
        },
        Scenario {
            name: "basic credentials + refresher, the client's clock 10 min ahead of the server's",
            credentials: basic,
            config: basic_config,
            set_auth: new_password,
            prefix: &[],
            server_offset: -600,
            nodes: ONE_NODE,
            commands: Commands::Session,
        },
        Scenario {
            name: "basic credentials + refresher, one HTTP request in flight at a time",
            credentials: basic,
            config: || {
                let options = ConnectionOptions::default().with_http_max_connections(1);
                ClientConfig::new(&options, &KalamLinkTimeouts::default(), 7).with_refresher(true)
            },
            set_auth: new_password,
            prefix: &[],
            server_offset: 0,
            nodes: ONE_NODE,
            commands: Commands::Session,
        },
        Scenario {
            name: "basic credentials + refresher, every request kind",
            credentials: basic,
            config: basic_config,
            set_auth: new_password,
            prefix: &[],
            server_offset: 0,
            nodes: ONE_NODE,
            commands: Commands::EveryKind,
        },
        Scenario {
            name: "configured token + dynamic provider, every request kind",
            credentials: || AuthProvider::jwt_token(jwt("access", T0 + TOKEN_LIFETIME, "configured")),
            config: || support::config().with_dynamic_provider(true),
            set_auth: |n, exp| AuthProvider::jwt_token(jwt("access", exp, &format!("set{n}"))),
            prefix: &[],
            server_offset: 0,
            nodes: ONE_NODE,
            commands: Commands::EveryKind,
        },
        Scenario {
            name: "a cluster of three nodes, basic credentials: a write, a read and a subscription",
            credentials: basic,
            config: support::config,
            set_auth: new_password,
            prefix: &[],
            server_offset: 0,
            nodes: CLUSTER,
            commands: Commands::Cluster,
        },
        Scenario {
            name: "a cluster of three nodes, every node refuses",
            credentials: || AuthProvider::jwt_token(jwt("access", T0 + 3600, "configured")),
            config: support::config,
            set_auth: new_password,
            prefix: &[],
            server_offset: 0,
            nodes: CLUSTER,
            commands: Commands::ClusterDown,
        },
    ]
}

// ------------------------------------------------------------------- model

/// What the explorer's server knows about the open socket. It handles the
/// frames it received strictly in order, as KalamDB does: an `unsubscribe`
/// takes effect once every subscribe before it was answered.
#[derive(Default, Clone)]
struct Server {
    /// Frames received and not yet handled, in order: `Some((wire id, pages
    /// follow the ack))` for a subscribe, `None` with the wire id for an
    /// unsubscribe.
    pending: VecDeque<(String, Option<bool>)>,
    /// Acknowledged, initial page not yet sent.
    loading: VecDeque<String>,
    /// Acknowledged and live.
    live: Vec<String>,
}

impl Server {
    /// Handles the unsubscribes now at the front of the queue.
    fn settle(&mut self) {
        while let Some((wire, None)) = self.pending.front() {
            let wire = wire.clone();
            self.pending.pop_front();
            self.loading.retain(|w| *w != wire);
            self.live.retain(|w| *w != wire);
        }
    }

    /// Takes the subscribe at the front (after [`settle`](Self::settle)).
    fn take(&mut self) -> (String, bool) {
        match self.pending.pop_front() {
            Some((wire, Some(pages))) => (wire, pages),
            other => panic!("a subscribe to answer, not {other:?}"),
        }
    }
}

/// What the explorer tracks of one subscription.
#[derive(Clone)]
struct SubModel {
    id: SubId,
    waiter: u64,
    /// An acknowledgement is awaited since (the call, or the last subscribe frame).
    awaiting: Option<Instant>,
    /// The socket on which it was last acknowledged.
    acked_on: Option<u64>,
}

struct Model {
    p: Pump,
    scenario: usize,
    commands: Commands,
    /// The scenario's nodes, as `host:port`.
    hosts: Vec<String>,
    /// For each of `pump.http`: the statement, if it must not run twice (a
    /// write's SQL, the first-time setup).
    statements: Vec<Option<String>>,
    /// `pump.http` indexes that did not run: answered with a refused
    /// connection (they never reached a server) or refused for their token
    /// (`TOKEN_EXPIRED`, `INVALID_CREDENTIALS`).
    unreached: HashSet<usize>,
    /// `pump.http` indexes whose answer was lost (a lost connection, a
    /// receive timeout, `FORWARD_FAILED`): they may have run.
    lost: HashSet<usize>,
    minted: u64,
    seq: i64,
    /// Tokens the server refused (`TOKEN_EXPIRED`, `INVALID_CREDENTIALS`, `auth_error`).
    refused: HashSet<String>,
    /// `set_auth` calls so far; requests and callbacks of earlier credentials are forgotten.
    epoch: u64,
    http_epoch: Vec<u64>,
    fetch_epoch: Vec<u64>,
    seen_http: usize,
    seen_frames: usize,
    seen_delivered: usize,
    seen_fetches: usize,
    /// Logins, refreshes and credential calls the core had asked for after
    /// the previous step.
    recoveries_started: usize,
    seen_opens: usize,
    /// The usable token when the core last asked for a socket (the one the
    /// session holds for it).
    socket_token: Option<String>,
    server: Server,
    /// The socket the server model belongs to.
    server_socket: Option<u64>,
    /// Wire ids subscribed on the current socket.
    wires_on_socket: HashSet<String>,
    /// Subscriptions with a subscribe frame on the current socket.
    subs_on_socket: HashSet<SubId>,
    subs: Vec<SubModel>,
    /// Every caller handed in, with the deadline it must be answered by.
    waiters: Vec<Waiter>,
    /// [`OTHER_KINDS`] sent so far (a bit each).
    others: u8,
    /// `pump.http` indexes of explicit logins and refreshes (the
    /// application's, not recoveries).
    explicit: HashSet<usize>,
    /// `auth_error` frames so far.
    auth_errors: usize,
    queries: u8,
    /// The waiter of the cluster scenarios' [`WRITE`], once asked for.
    write: Option<u64>,
    /// The waiter of the one non-replayable upload, once asked for.
    upload: Option<u64>,
    subscribes: u8,
    set_auths: u8,
    connects: u8,
    disconnects: u8,
    unsubscribes: u8,
}

/// A caller, and when it must have been answered.
#[derive(Clone)]
struct Waiter {
    w: u64,
    what: &'static str,
    /// For an HTTP operation, its kind.
    kind: Option<RequestKind>,
    due: Instant,
    /// Sockets asked for, and `auth_error`s, before it was handed in.
    opens: usize,
    auth_errors: usize,
}

fn token_of(header: &str) -> &str {
    header.strip_prefix("Bearer ").unwrap_or(header)
}

fn sub_of_wire(wire: &str) -> Option<SubId> {
    let rest = wire.strip_prefix('k')?;
    let n = rest.split('.').next()?;
    n.parse().ok().map(SubId)
}

/// The `host:port` of a URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// The statement a request carries if it must not run twice: a query's SQL
/// that is not [`retry_safe`](QueryRequest::retry_safe) (the model's
/// statements are never marked idempotent), the first-time setup.
fn statement_of(s: &support::SentHttp) -> Option<String> {
    match s.kind {
        RequestKind::Query | RequestKind::QueryRows => {
            let body: serde_json::Value = serde_json::from_slice(&s.body).expect("a JSON query body");
            let sql = body["sql"].as_str().expect("a query's SQL");
            (!QueryRequest::new(sql).retry_safe()).then(|| sql.to_owned())
        }
        RequestKind::Setup => Some("setup".into()),
        _ => None,
    }
}

fn ms(i: Instant) -> i64 {
    i.as_duration().as_millis() as i64
}

impl Model {
    fn new(scenario: usize) -> Model {
        let sc = &scenarios()[scenario];
        let mut p = Pump::with_nodes(sc.nodes, (sc.credentials)(), (sc.config)());
        p.server_offset = sc.server_offset;
        let mut m = Model {
            p,
            scenario,
            commands: sc.commands,
            hosts: sc.nodes.iter().map(|u| authority(u).to_owned()).collect(),
            statements: Vec::new(),
            unreached: HashSet::new(),
            lost: HashSet::new(),
            minted: 0,
            seq: 0,
            refused: HashSet::new(),
            epoch: 0,
            http_epoch: Vec::new(),
            fetch_epoch: Vec::new(),
            seen_http: 0,
            seen_frames: 0,
            seen_delivered: 0,
            seen_fetches: 0,
            recoveries_started: 0,
            seen_opens: 0,
            socket_token: None,
            server: Server::default(),
            server_socket: None,
            wires_on_socket: HashSet::new(),
            subs_on_socket: HashSet::new(),
            subs: Vec::new(),
            waiters: Vec::new(),
            others: 0,
            explicit: HashSet::new(),
            auth_errors: 0,
            queries: 0,
            write: None,
            upload: None,
            subscribes: 0,
            set_auths: 0,
            connects: 0,
            disconnects: 0,
            unsubscribes: 0,
        };
        m.check(None);
        for a in sc.prefix {
            m.apply(*a);
        }
        m
    }

    fn replay(scenario: usize, trace: &[Action]) -> Model {
        let mut m = Model::new(scenario);
        for a in trace {
            m.apply(*a);
        }
        m
    }

    fn mint(&mut self, lifetime: u64) -> String {
        self.minted += 1;
        jwt("access", self.p.server_now() + lifetime, &format!("t{}", self.minted))
    }

    fn now_ms(&self) -> i64 {
        ms(self.p.now.instant)
    }

    /// The earliest receive timeout of an HTTP exchange in flight.
    fn driver_deadline(&self) -> Option<Instant> {
        self.p
            .http
            .iter()
            .filter(|s| !s.answered)
            .map(|s| s.at.instant + receive_timeout())
            .min()
    }

    /// When the core or its driver next acts with nobody else acting.
    fn next_wake(&self) -> Option<Instant> {
        match (self.p.core.poll_timeout(), self.driver_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The deadline of a caller handed in now, from the configured timeouts
    /// (`rc`: the longer of the receive timeout and the callback deadline).
    /// An HTTP operation may wait for a token (the renewal ladder: a
    /// refresh, the refresher callback, a login; and a clock probe: four
    /// `rc`), then for the requests ahead of it when the cap is one (three
    /// at most here, an exchange and a retry each), then its own exchange,
    /// the ladder again after a refused token, and its one retry: sixteen
    /// `rc`; the bound is twenty. A cluster needs no more here: a login of
    /// the machine's own goes to each node once at most (three `rc` with
    /// three nodes, where the refresher and the clock probe are not
    /// configured), and an operation's failover retries start within its
    /// retry budget (one `rc` from its submission), each then taking one
    /// `rc` at most. The longest waits the cluster scenarios reach at depth
    /// 10 are under five `rc` (a token renewal timing out on every node, then
    /// the write's own exchange timing out): well within the bound. `connect()` answers with its first
    /// attempt's outcome: a token (the ladder), the socket's connect
    /// timeout, and the auth timeout.
    fn register(&mut self, w: u64, what: &'static str, kind: Option<RequestKind>) {
        let cfg = self.p.core.config();
        let rc = receive_timeout().max(cfg.callback_timeout);
        let bound = match what {
            "connect" => rc * 4 + cfg.ws.connect_timeout + cfg.ws.auth_timeout,
            "disconnect" => Duration::ZERO,
            _ => rc * 20,
        };
        self.waiters.push(Waiter {
            w,
            what,
            kind,
            due: self.p.now.instant + bound,
            opens: self.p.opens.len(),
            auth_errors: self.auth_errors,
        });
    }

    // ------------------------------------------------------------ alphabet

    /// The actions that apply to what is outstanding.
    ///
    /// In the cluster scenarios, a request is answered by success, a refused
    /// connection, a lost answer, `NOT_LEADER` or (but a login)
    /// `FORWARD_FAILED`; with every node down, only by a refused connection
    /// or a lost answer (and its receive timeout, by `Tick`), and a socket
    /// only fails to open. Token refusals, refused subscriptions and
    /// `auth_error` are left to the single-node scenarios there: the nodes
    /// change nothing in how they are handled.
    fn actions(&self) -> Vec<Action> {
        use HttpAnswer::*;
        let p = &self.p;
        let mut v = Vec::new();
        let down = self.commands == Commands::ClusterDown;
        for (i, s) in p.http.iter().enumerate() {
            if s.answered {
                continue;
            }
            // Logins and refreshes answer a token pair; every other request
            // is answered like a query.
            let token = matches!(s.kind, RequestKind::Login | RequestKind::Refresh);
            let answers: &[HttpAnswer] = match self.commands {
                Commands::ClusterDown => &[Transport, Lost],
                Commands::Cluster if token => &[Ok, Transport, Lost, NotLeader],
                Commands::Cluster => &[Ok, Transport, Lost, NotLeader, ForwardFailed],
                _ if token => &[Ok, Stale, Refused, Transport],
                _ => &[Ok, Expired, Invalid, Transport],
            };
            v.extend(answers.iter().map(|a| Action::Http(i, *a)));
        }
        for (i, f) in p.fetch_log.iter().enumerate() {
            if !f.answered && !f.expired {
                v.extend([CredAnswer::Token, CredAnswer::Error, CredAnswer::Panic].map(|a| Action::Cred(i, a)));
            }
        }
        if self.next_wake().is_some() {
            v.push(Action::Tick);
        }
        let cluster = matches!(self.commands, Commands::Cluster | Commands::ClusterDown);
        if let Some(a) = p.opening {
            if !down {
                v.push(Action::Open(a));
            }
            v.push(Action::OpenFail(a));
        }
        if p.socket.is_some() {
            if !p.authed {
                v.push(Action::AuthSuccess);
                if !cluster {
                    v.push(Action::AuthError);
                }
            } else {
                if !self.server.pending.is_empty() {
                    v.push(Action::Ack);
                    if !cluster {
                        v.extend([Action::Refuse, Action::RateLimit]);
                    }
                }
                if !self.server.loading.is_empty() {
                    v.push(Action::Batch);
                }
                if !self.server.live.is_empty() {
                    v.push(Action::Change);
                }
            }
            v.push(Action::Drop);
        }
        if cluster {
            if self.queries < 1 {
                v.push(Action::Query);
            }
            if self.write.is_none() {
                v.push(Action::Write);
            }
            if self.subscribes < 1 {
                v.push(Action::Subscribe);
            }
            if down && self.connects < 1 {
                v.push(Action::Connect);
            }
            return v;
        }
        if self.queries < 2 {
            v.push(Action::Query);
        }
        if self.commands == Commands::EveryKind {
            for k in 0..OTHER_KINDS.len() as u8 {
                if self.others & (1 << k) == 0 {
                    v.push(Action::Other(k));
                }
            }
            return v;
        }
        if self.upload.is_none() {
            v.push(Action::UploadReader);
        }
        if self.set_auths < 1 {
            v.push(Action::SetAuth);
        }
        if self.subscribes < 2 {
            v.push(Action::Subscribe);
        }
        if self.unsubscribes < 1 && self.live_subs().next().is_some() {
            v.push(Action::Unsubscribe);
        }
        if self.connects < 1 {
            v.push(Action::Connect);
        }
        if self.disconnects < 1 {
            v.push(Action::Disconnect);
        }
        v
    }

    /// Logins, refreshes and credential calls the core has asked for.
    fn recoveries_total(&self) -> usize {
        self.p
            .http
            .iter()
            .enumerate()
            .filter(|(i, s)| matches!(s.kind, RequestKind::Login | RequestKind::Refresh) && !self.explicit.contains(i))
            .count()
            + self.p.fetch_log.len()
    }

    fn live_subs(&self) -> impl Iterator<Item = &SubModel> {
        self.subs
            .iter()
            .filter(|s| self.p.ended.iter().all(|(e, _)| *e != s.id))
    }

    // --------------------------------------------------------- transitions

    fn apply(&mut self, a: Action) {
        let socket_before = self.p.socket;
        let mut frames_on = self.p.socket;
        match a {
            Action::Http(i, answer) => {
                let (id, kind) = (self.p.http[i].id, self.p.http[i].kind);
                let sent_with = self.p.http[i].auth.as_deref().map(|h| token_of(h).to_owned());
                match answer {
                    HttpAnswer::Ok if matches!(kind, RequestKind::Query | RequestKind::Upload) => {
                        self.p.answer(id, 200, OK)
                    }
                    HttpAnswer::Ok if kind == RequestKind::Me => self.p.answer(id, 200, ME),
                    HttpAnswer::Ok if kind == RequestKind::Health => self.p.answer(id, 200, HEALTH),
                    HttpAnswer::Ok if kind == RequestKind::SetupStatus => self.p.answer(id, 200, SETUP_STATUS),
                    HttpAnswer::Ok if kind == RequestKind::Setup => self.p.answer(id, 200, SETUP),
                    HttpAnswer::Ok if kind == RequestKind::ConsumeTopic => self.p.answer(id, 200, CONSUMED),
                    HttpAnswer::Ok if kind == RequestKind::AckTopic => self.p.answer(id, 200, ACKED),
                    HttpAnswer::Ok if kind == RequestKind::Download => {
                        // The head; the driver then reads the body to its end.
                        self.p.answer(id, 200, "abc");
                        self.p.core.handle_body_done(id, self.p.now);
                        self.p.pump();
                    }
                    HttpAnswer::Ok | HttpAnswer::Stale => {
                        let lifetime = if answer == HttpAnswer::Ok {
                            TOKEN_LIFETIME
                        } else {
                            STALE_LIFETIME
                        };
                        let access = self.mint(lifetime);
                        let refresh = jwt("refresh", T0 + 1_000_000, &format!("r{}", self.minted));
                        self.p.answer(id, 200, &login_body(&access, &refresh));
                    }
                    HttpAnswer::Expired | HttpAnswer::Invalid => {
                        // A late refusal of a token the core has already
                        // replaced (it holds another, usable one) starts no
                        // recovery: the request goes again with the current
                        // token. (Five requests refused one after the other
                        // must not give five logins.)
                        let held = self
                            .p
                            .core
                            .auth()
                            .access_token(self.p.now)
                            .map(|t| t.expose().to_owned());
                        let with_access = matches!(kind.endpoint().token, TokenUse::Access { .. });
                        let replaced = with_access && sent_with.is_some() && held.is_some() && held != sent_with;
                        let started_before = self.recoveries_total();
                        // A first refusal of the token the core holds: the
                        // start of a recovery episode.
                        let fresh_refusal = with_access
                            && sent_with.is_some()
                            && held == sent_with
                            && !sent_with.as_ref().is_some_and(|t| self.refused.contains(t));
                        self.refused.extend(sent_with.clone());
                        self.unreached.insert(i);
                        let body = if answer == HttpAnswer::Expired {
                            EXPIRED
                        } else {
                            INVALID
                        };
                        let sent_of_kind = self.p.http.iter().filter(|s| s.kind == kind).count();
                        self.p.answer(id, 401, body);
                        assert!(
                            !replaced || self.recoveries_total() == started_before,
                            "a late refusal of a replaced token started a recovery"
                        );
                        // Recovery on every kind that carries the access
                        // token: a request refused the first time, for the
                        // token the core holds, is not answered with the
                        // refusal (the token is renewed, the request sent
                        // again).
                        if fresh_refusal
                            && sent_of_kind == 1
                            && kind != RequestKind::Upload
                            && let Some(waiter) = self.waiters.iter().find(|w| w.kind == Some(kind))
                            && let Some(Err(e)) = self.p.result(waiter.w)
                        {
                            assert!(
                                !(e.is_token_expired() || e.is_credentials_rejected()),
                                "a {kind:?} request refused for its token was not recovered: {e}"
                            );
                        }
                    }
                    HttpAnswer::Refused => self.p.answer(id, 401, BAD_LOGIN),
                    HttpAnswer::Transport => {
                        self.unreached.insert(i);
                        self.p.fail(id, TransportError::Connect("refused".into()))
                    }
                    HttpAnswer::Lost => {
                        self.lost.insert(i);
                        let e = if i % 2 == 0 {
                            TransportError::Io("connection reset by peer".into())
                        } else {
                            TransportError::ClosedBeforeAnswer
                        };
                        self.p.fail(id, e)
                    }
                    HttpAnswer::NotLeader => {
                        self.p.answer(id, 503, NOT_LEADER);
                        // The node refused the write, it did not run it:
                        // its caller has the refusal as it is.
                        if self.statements[i].as_deref() == Some(WRITE)
                            && let Some(w) = self.write
                        {
                            let code = self.p.error(w).and_then(Error::code);
                            assert_eq!(
                                code,
                                Some(&kalam_proto::ErrorCode::NotLeader),
                                "a write refused with NOT_LEADER: its caller got {:?}",
                                self.p.result(w)
                            );
                        }
                    }
                    HttpAnswer::ForwardFailed => {
                        self.lost.insert(i);
                        self.p.answer(id, 502, FORWARD_FAILED)
                    }
                }
            }
            Action::Cred(i, answer) => {
                let id = self.p.fetch_log[i].id;
                match answer {
                    CredAnswer::Token => {
                        let t = self.mint(TOKEN_LIFETIME);
                        self.p.credentials(id, Ok(AuthProvider::jwt_token(t)));
                    }
                    CredAnswer::Error => self.p.credentials(id, Err(Error::Runtime("no credentials".into()))),
                    CredAnswer::Panic => {
                        self.p.fetch_log[i].answered = true;
                        self.p.core.handle_callback_panicked(id, self.p.now);
                        self.p.pump();
                    }
                }
            }
            Action::Tick => {
                let at = self.next_wake().expect("something due");
                let d = at.saturating_duration_since(self.p.now.instant);
                self.p.advance(d);
                let now = self.p.now.instant;
                // The driver's transport gives up on exchanges unanswered
                // for the receive timeout; then the core's timer.
                let due: Vec<_> = self
                    .p
                    .http
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !s.answered && s.at.instant + receive_timeout() <= now)
                    .map(|(i, s)| (i, s.id))
                    .collect();
                for (i, id) in &due {
                    self.lost.insert(*i);
                    self.p.fail(*id, TransportError::Timeout(receive_timeout()));
                }
                let fired = self.p.tick();
                assert!(fired || !due.is_empty(), "the timer was not due at its time");
            }
            Action::Open(attempt) => {
                if self.p.socket_open(attempt) {
                    frames_on = Some(attempt);
                }
            }
            Action::OpenFail(attempt) => self.p.closed(attempt, None, "connection refused"),
            Action::AuthSuccess => self.p.frame(AUTH_SUCCESS),
            Action::AuthError => {
                // The server refuses the token of the socket's authenticate.
                let auth = self.p.frames.iter().rev().find(|(_, f)| f["type"] == "authenticate");
                if let Some(t) = auth.and_then(|(_, f)| f["token"].as_str()) {
                    self.refused.insert(t.to_owned());
                }
                self.auth_errors += 1;
                self.p.frame(AUTH_ERROR);
            }
            Action::Ack => {
                let (wire, pages) = self.server.take();
                if pages {
                    self.server.loading.push_back(wire.clone());
                } else {
                    self.server.live.push(wire.clone());
                }
                self.p.frame(&ack_frame(&wire, pages));
            }
            Action::Refuse => {
                let (wire, _) = self.server.take();
                self.p.frame(&sub_error_frame(&wire));
            }
            Action::RateLimit => {
                // The server drops the subscribe: it is the client's to send
                // again, after a pause that is not counted against its
                // acknowledgement deadline (which runs again when it leaves).
                let (wire, _) = self.server.take();
                let sub = sub_of_wire(&wire).expect("a subscription's wire id");
                self.subs_on_socket.remove(&sub);
                if let Some(s) = self.subs.iter_mut().find(|s| s.id == sub) {
                    s.awaiting = None;
                }
                self.p.frame(RATE_LIMITED);
            }
            Action::Batch => {
                let wire = self.server.loading.pop_front().expect("a loading subscription");
                self.seq += 1;
                self.server.live.push(wire.clone());
                self.p.frame(&batch_frame(&wire, 0, false, self.seq));
            }
            Action::Change => {
                let wire = self.server.live[0].clone();
                self.seq += 1;
                self.p.frame(&change_frame(&wire, 0, self.seq));
            }
            Action::Drop => self.p.socket_closed(None, "reset"),
            Action::Query => {
                // The second is `GET /auth/me`: the other request kind that
                // carries the access token and recovers from TOKEN_EXPIRED.
                self.queries += 1;
                if self.queries == 2 {
                    let w = self.p.submit(kalam_proto::Operation::Me);
                    self.register(w, "GET /auth/me", Some(RequestKind::Me));
                } else {
                    let w = self.p.query("SELECT 1");
                    self.register(w, "query", Some(RequestKind::Query));
                }
            }
            Action::Write => {
                let w = self.p.query(WRITE);
                self.write = Some(w);
                self.register(w, "write", Some(RequestKind::Query));
            }
            Action::Other(k) => {
                self.others |= 1 << k;
                let kind = OTHER_KINDS[usize::from(k)];
                let before = self.p.http.len();
                let w = self.p.submit(operation_of(kind));
                if matches!(kind, RequestKind::Login | RequestKind::Refresh) {
                    self.explicit
                        .extend((before..self.p.http.len()).filter(|i| self.p.http[*i].kind == kind));
                }
                self.register(w, "an HTTP operation", Some(kind));
            }
            Action::UploadReader => {
                let op = kalam_proto::Operation::Upload(kalam_proto::UploadRequest {
                    query: kalam_proto::QueryRequest::new(r#"INSERT INTO demo.f (id, f) VALUES (1, FILE("doc"))"#),
                    files: vec![kalam_proto::UploadFile {
                        placeholder: "doc".into(),
                        filename: "a.bin".into(),
                        mime: "application/octet-stream".into(),
                        len: 3,
                    }],
                    replayable: false,
                    sources: 1,
                });
                let w = self.p.submit(op);
                self.upload = Some(w);
                self.register(w, "upload", Some(RequestKind::Upload));
            }
            Action::SetAuth => {
                self.set_auths += 1;
                self.epoch += 1;
                let exp = self.p.now.unix_secs() + TOKEN_LIFETIME;
                let c = (scenarios()[self.scenario].set_auth)(self.epoch, exp);
                self.p.set_credentials(c);
            }
            Action::Subscribe => {
                self.subscribes += 1;
                let (waiter, sub) = self
                    .p
                    .subscribe(&format!("SELECT * FROM demo.t{}", self.subscribes), None);
                let id = sub.expect("a subscription id");
                self.subs.push(SubModel {
                    id,
                    waiter,
                    awaiting: Some(self.p.now.instant),
                    acked_on: None,
                });
            }
            Action::Unsubscribe => {
                self.unsubscribes += 1;
                let id = self.live_subs().next().expect("a live subscription").id;
                self.p.unsubscribe(id);
            }
            Action::Connect => {
                self.connects += 1;
                let w = self.p.connect();
                self.register(w, "connect", None);
            }
            Action::Disconnect => {
                self.disconnects += 1;
                let w = self.p.disconnect();
                self.register(w, "disconnect", None);
            }
        }
        if frames_on.is_none() {
            frames_on = socket_before;
        }
        self.check(frames_on);
    }

    // ---------------------------------------------------------- invariants

    /// The invariants, over what the last transition produced. `frames_on`:
    /// the socket its frames and deliveries belong to.
    fn check(&mut self, frames_on: Option<u64>) {
        let now = self.p.now;
        // A token the server refuses: past its exp and the server's leeway,
        // on the server's clock (the client uses one at most 50 s past exp,
        // and only one that arrived that close to expiry).
        let server_now = self.p.server_now();
        let not_usable = |token: &str| {
            kalam_proto::jwt::inspect(token).is_ok_and(|c| c.exp.is_some_and(|exp| server_now >= exp + 50))
        };

        // The server model follows the socket.
        if self.p.socket != self.server_socket {
            self.server = Server::default();
            self.server_socket = self.p.socket;
            self.wires_on_socket.clear();
            self.subs_on_socket.clear();
        }

        // HTTP requests: no expired or refused token; to a node of the
        // scenario's.
        while self.seen_http < self.p.http.len() {
            let s = &self.p.http[self.seen_http];
            self.http_epoch.push(self.epoch);
            self.statements.push(statement_of(s));
            assert!(
                self.hosts.contains(&s.host),
                "a {:?} request to {}, not a node of {:?}",
                s.kind,
                s.host,
                self.hosts
            );
            if let Some(h) = s.auth.as_deref() {
                let t = token_of(h);
                assert!(!not_usable(t), "a {:?} request with a token the server refuses", s.kind);
                assert!(
                    !self.refused.contains(t),
                    "a {:?} request with a token the server refused",
                    s.kind
                );
            }
            self.seen_http += 1;
        }
        // A body read from a reader is sent once at most; the upload succeeds
        // only through that one request.
        let uploads = self.p.http.iter().filter(|s| s.kind == RequestKind::Upload).count();
        assert!(uploads <= 1, "a non-replayable upload was sent {uploads} times");
        if let Some(w) = self.upload
            && let Some(Ok(_)) = self.p.result(w)
        {
            assert_eq!(uploads, 1, "an upload answered Ok without being sent");
        }
        // No statement that must not run twice sent twice: of its requests,
        // one at most may have run (a request answered with a refused
        // connection or a token refusal did not; one in flight, lost or
        // answered otherwise may have). And once its one request's answer was lost, the caller is
        // told the outcome is unknown.
        let mut reached: Vec<&str> = self
            .statements
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.unreached.contains(i))
            .filter_map(|(_, st)| st.as_deref())
            .collect();
        reached.sort_unstable();
        if let Some(w) = reached.windows(2).find(|w| w[0] == w[1]) {
            panic!(
                "{:?} may have run twice (its requests: {:?})",
                w[0],
                self.sent_hosts(w[0])
            );
        }
        if let Some(w) = self.write {
            let lost = self
                .statements
                .iter()
                .enumerate()
                .any(|(i, st)| st.as_deref() == Some(WRITE) && self.lost.contains(&i));
            if lost {
                assert!(
                    matches!(self.p.result(w), Some(Err(Error::OutcomeUnknown { .. }))),
                    "the write's answer was lost, and its caller got {:?}",
                    self.p.result(w)
                );
            }
        }
        if self.seen_opens < self.p.opens.len() {
            for (_, url) in &self.p.opens[self.seen_opens..] {
                assert!(
                    self.hosts.iter().any(|h| h == authority(url)),
                    "a socket to {url}, not a node of {:?}",
                    self.hosts
                );
            }
            self.seen_opens = self.p.opens.len();
            self.socket_token = self.p.core.auth().access_token(now).map(|t| t.expose().to_owned());
        }
        while self.seen_fetches < self.p.fetch_log.len() {
            self.fetch_epoch.push(self.epoch);
            self.seen_fetches += 1;
        }

        // Frames: authenticate with a usable, unrefused token; the server
        // learns of subscribes and unsubscribes; no subscribe twice.
        while self.seen_frames < self.p.frames.len() {
            let (at, f) = &self.p.frames[self.seen_frames];
            self.seen_frames += 1;
            match f["type"].as_str() {
                Some("authenticate") => {
                    let t = f["token"].as_str().unwrap_or_default();
                    assert!(!not_usable(t), "authenticate with a token the server refuses");
                    assert!(
                        !self.refused.contains(t),
                        "authenticate with a token the server refused"
                    );
                }
                Some("subscribe") if frames_on == self.p.socket => {
                    let wire = f["subscription"]["id"].as_str().expect("an id").to_owned();
                    let pages = !f["subscription"]["options"].is_null();
                    let sub = sub_of_wire(&wire).expect("a subscription's wire id");
                    assert!(
                        self.wires_on_socket.insert(wire.clone()),
                        "{wire} subscribed twice on one socket"
                    );
                    self.subs_on_socket.insert(sub);
                    if let Some(s) = self.subs.iter_mut().find(|s| s.id == sub) {
                        s.awaiting = Some(*at);
                    }
                    self.server.pending.push_back((wire, Some(pages)));
                }
                Some("unsubscribe") if frames_on == self.p.socket => {
                    let wire = f["subscription_id"].as_str().unwrap_or_default().to_owned();
                    self.server.pending.push_back((wire, None));
                }
                _ => {}
            }
        }

        self.server.settle();

        // Deliveries: one acknowledgement per socket.
        while self.seen_delivered < self.p.delivered.len() {
            let (sub, e) = &self.p.delivered[self.seen_delivered];
            self.seen_delivered += 1;
            if let LiveEvent::Subscribed { .. } = e {
                let s = self
                    .subs
                    .iter_mut()
                    .find(|s| s.id == *sub)
                    .expect("a known subscription");
                assert!(
                    frames_on.is_none() || s.acked_on != frames_on,
                    "{sub:?} acknowledged twice on socket {frames_on:?}"
                );
                s.acked_on = frames_on;
                s.awaiting = None;
            }
        }

        // No storm: one step (an answer, a refusal, a tick, a command) starts
        // at most one login, refresh or credential call. A refused token
        // (TOKEN_EXPIRED, INVALID_CREDENTIALS, auth_error) is one episode,
        // however many requests carried it.
        let started = self.recoveries_total();
        assert!(
            started <= self.recoveries_started + 1,
            "{} logins, refreshes or credential calls started in one step",
            started - self.recoveries_started
        );
        self.recoveries_started = started;

        // Single flight: one login, refresh or credential callback at a time
        // (those of credentials replaced since are forgotten by the core).
        let recoveries = self
            .p
            .http
            .iter()
            .zip(&self.http_epoch)
            .enumerate()
            .filter(|(i, (s, e))| {
                !s.answered
                    && **e == self.epoch
                    && matches!(s.kind, RequestKind::Login | RequestKind::Refresh)
                    && !self.explicit.contains(i)
            })
            .count();
        let callbacks = self
            .p
            .fetch_log
            .iter()
            .zip(&self.fetch_epoch)
            .filter(|(f, e)| !f.answered && !f.expired && **e == self.epoch)
            .count();
        assert!(
            recoveries + callbacks <= 1,
            "{recoveries} logins/refreshes and {callbacks} credential callbacks in flight at once"
        );

        // Acknowledgement deadlines: the core wakes by each one, and a
        // subscription still unanswered at its deadline is a violation.
        let timeout = self.p.core.config().ws.subscribe_timeout;
        let next = self.p.core.poll_timeout();
        let ended: Vec<SubId> = self.p.ended.iter().map(|(s, _)| *s).collect();
        for s in &self.subs {
            if ended.contains(&s.id) {
                continue;
            }
            if let Some(since) = s.awaiting {
                let due = since + timeout;
                assert!(
                    now.instant < due,
                    "{:?} neither acknowledged nor ended by its deadline ({:?}, now {:?})",
                    s.id,
                    due,
                    now.instant
                );
                assert!(
                    next.is_some_and(|n| n <= due),
                    "{:?}: the core would sleep past its acknowledgement deadline",
                    s.id
                );
            }
        }

        // No subscription lost across reconnects: on a ready socket with
        // nothing left to send, every live subscription was (re)subscribed.
        let session = self.p.core.session();
        if session.state() == WsState::Ready && session.queued_frames() == 0 {
            for s in &self.subs {
                assert!(
                    ended.contains(&s.id) || self.subs_on_socket.contains(&s.id),
                    "{:?} not resubscribed on the ready socket",
                    s.id
                );
            }
        }

        // The WebSocket's token request waits for nothing but a token: not
        // behind the HTTP cap, nor behind other requests. With no token work
        // under way (a login, refresh, clock probe or credential callback),
        // the session never rests waiting for one while the core holds a
        // usable token.
        let token_work = self.p.pending_fetches().next().is_some()
            || self.p.http.iter().any(|s| {
                !s.answered && matches!(s.kind, RequestKind::Login | RequestKind::Refresh | RequestKind::Health)
            });
        if session.state() == WsState::WaitingToken && !token_work {
            assert!(
                self.p.core.auth().access_token(now).is_none(),
                "the WebSocket waits for a token the core holds (auth {:?}, {} operations waiting)",
                self.p.core.auth().state(),
                self.p.core.auth().pending_ops()
            );
        }

        // Backoff within its cap.
        if session.state() == WsState::BackingOff {
            let at = session.poll_timeout().expect("a reconnect time");
            assert!(at.saturating_duration_since(now.instant) <= self.p.core.config().ws.max_reconnect_delay);
        }

        // Bounded liveness: every caller is answered by its deadline, and
        // while it waits, the core (its timer) or its driver (a receive
        // timeout) acts by then even if nothing else happens.
        let wake = self.next_wake();
        for w in &self.waiters {
            if self.p.result(w.w).is_some() {
                continue;
            }
            assert!(
                now.instant <= w.due,
                "a {} caller not answered by its deadline ({:?}, now {:?})",
                w.what,
                w.due,
                now.instant
            );
            assert!(
                wake.is_some_and(|t| t <= w.due),
                "a {} caller waits past its deadline ({:?}) with nothing due before it (next: {wake:?})",
                w.what,
                w.due
            );
        }

        // `connect()` answers with its first attempt's outcome: once a
        // socket asked for after the call has opened and closed, or failed
        // to open (the session backs off, gives up or stops), its caller
        // has the answer. (An attempt whose token the server refused with
        // `auth_error` is recovered, as an HTTP request is: the attempt
        // with the renewed token is the one that answers.)
        let attempt_over = matches!(
            session.state(),
            WsState::BackingOff | WsState::Failed | WsState::Disconnected
        );
        for w in &self.waiters {
            let attempts = self.p.opens.len() - w.opens;
            let refused = self.auth_errors - w.auth_errors;
            if w.what == "connect" && attempts > refused && attempt_over {
                assert!(
                    self.p.result(w.w).is_some(),
                    "connect() not answered with its first attempt's outcome (the session is {:?})",
                    session.state()
                );
            }
        }

        // Nothing outstanding and no timer: nobody may be left waiting.
        if self.quiescent() {
            assert_eq!(
                self.p.core.pending_waiters(),
                0,
                "waiters left behind with nothing outstanding and no timer"
            );
        }
    }

    /// Where the requests carrying `statement` went, and how they ended.
    fn sent_hosts(&self, statement: &str) -> Vec<(String, &'static str)> {
        self.p
            .http
            .iter()
            .enumerate()
            .filter(|(i, _)| self.statements[*i].as_deref() == Some(statement))
            .map(|(i, s)| {
                let fate = if self.unreached.contains(&i) {
                    "not run"
                } else if self.lost.contains(&i) {
                    "lost"
                } else if s.answered {
                    "answered"
                } else {
                    "in flight"
                };
                (s.host.clone(), fate)
            })
            .collect()
    }

    fn quiescent(&self) -> bool {
        let p = &self.p;
        p.http.iter().all(|s| s.answered)
            && p.pending_fetches().next().is_none()
            && p.opening.is_none()
            && p.socket.is_none()
            && p.core.poll_timeout().is_none()
    }

    /// Ends the run as a driver whose application disconnects and whose
    /// network fails everything: every waiter must then be answered once and
    /// every subscription ended once.
    fn drain(mut self) {
        self.disconnects += 1;
        self.p.disconnect();
        self.check(self.p.socket);
        for _ in 0..200 {
            if let Some(i) = self.p.http.iter().position(|s| !s.answered) {
                self.apply(Action::Http(i, HttpAnswer::Transport));
            } else if let Some(i) = self.p.fetch_log.iter().position(|f| !f.answered && !f.expired) {
                self.apply(Action::Cred(i, CredAnswer::Error));
            } else if let Some(a) = self.p.opening {
                self.apply(Action::OpenFail(a));
            } else if self.p.socket.is_some() {
                self.apply(Action::Drop);
            } else if self.p.core.poll_timeout().is_some() {
                self.apply(Action::Tick);
            } else {
                break;
            }
        }
        assert!(self.quiescent(), "the drain did not come to rest");
        assert_eq!(self.p.core.pending_waiters(), 0, "waiters left after the drain");
        assert!(
            self.p.unanswered().is_empty(),
            "waiters never answered: {:?}",
            self.p.unanswered()
        );
        for s in &self.subs {
            let ends = self.p.ended.iter().filter(|(e, _)| *e == s.id).count();
            assert_eq!(ends, 1, "{:?} ended {ends} times", s.id);
            assert!(
                self.p.result(s.waiter).is_some(),
                "{:?}: its caller never answered",
                s.id
            );
        }
        assert_eq!(self.p.core.subscriptions(), 0);
    }

    /// Ends the run as a driver whose every node is down while the
    /// application waits (it does not disconnect): requests fail with a
    /// refused connection (even `pump.http` indexes) or a lost answer (odd
    /// ones), sockets fail to open, credential calls fail. Every caller must
    /// then be answered, each by its deadline (checked at every step).
    fn drain_down(mut self) {
        for _ in 0..1_000 {
            if self.p.core.pending_waiters() == 0 {
                return;
            }
            if let Some(i) = self.p.http.iter().position(|s| !s.answered) {
                let answer = if i % 2 == 0 {
                    HttpAnswer::Transport
                } else {
                    HttpAnswer::Lost
                };
                self.apply(Action::Http(i, answer));
            } else if let Some(i) = self.p.fetch_log.iter().position(|f| !f.answered && !f.expired) {
                self.apply(Action::Cred(i, CredAnswer::Error));
            } else if let Some(a) = self.p.opening {
                self.apply(Action::OpenFail(a));
            } else if self.p.socket.is_some() {
                self.apply(Action::Drop);
            } else if self.next_wake().is_some() {
                self.apply(Action::Tick);
            } else {
                break;
            }
        }
        assert_eq!(
            self.p.core.pending_waiters(),
            0,
            "callers left waiting with every node down: {:?} (now {:?})",
            self.p.unanswered(),
            self.p.now.instant
        );
    }

    // --------------------------------------------------------- fingerprint

    /// A hash of the observable state, with times relative to now.
    fn fingerprint(&self) -> u64 {
        let p = &self.p;
        let now = p.now;
        let now_ms = self.now_ms();
        let rel = |i: Option<Instant>| i.map(|i| ms(i) - now_ms);
        let token_class = |t: &str| {
            let exp = kalam_proto::jwt::inspect(t).ok().and_then(|c| c.exp);
            (exp.map(|e| e as i64 - now.unix_secs() as i64), self.refused.contains(t))
        };
        let mut h = DefaultHasher::new();
        self.scenario.hash(&mut h);
        (p.core.auth().state() as u8).hash(&mut h);
        (p.core.session().state() as u8).hash(&mut h);
        p.core.pending_waiters().hash(&mut h);
        p.core.subscriptions().hash(&mut h);
        p.core.session().queued_frames().hash(&mut h);
        rel(p.core.poll_timeout()).hash(&mut h);
        rel(p.core.auth().poll_timeout()).hash(&mut h);
        rel(p.core.session().poll_timeout()).hash(&mut h);
        p.core
            .auth()
            .access_token(now)
            .map(|t| token_class(t.expose()))
            .hash(&mut h);
        std::mem::discriminant(p.core.credentials()).hash(&mut h);
        let node_of = |host: &str| self.hosts.iter().position(|h| h == host);
        let mut http: Vec<_> = p
            .http
            .iter()
            .zip(&self.http_epoch)
            .zip(&self.statements)
            .filter(|((s, _), _)| !s.answered)
            .map(|((s, e), st)| {
                (
                    s.kind as u8,
                    *e == self.epoch,
                    s.auth.as_deref().map(|a| token_class(token_of(a))),
                    node_of(&s.host),
                    st.is_some(),
                )
            })
            .collect();
        http.sort();
        http.hash(&mut h);
        let fetches: Vec<_> = p
            .fetch_log
            .iter()
            .zip(&self.fetch_epoch)
            .filter(|(f, _)| !f.answered && !f.expired)
            .map(|(f, e)| (f.source as u8, *e == self.epoch, ms(f.at) - now_ms))
            .collect();
        fetches.hash(&mut h);
        (p.opening.is_some(), p.socket.is_some(), p.authed).hash(&mut h);
        // The nodes: the one in use, those avoided and until when (the
        // earliest), where the socket goes, and how often a statement that
        // must not run twice was sent (and lost).
        let nodes = p.core.auth().nodes();
        if nodes.is_cluster() {
            nodes.current().hash(&mut h);
            (0..nodes.len())
                .map(|i| nodes.is_avoided(i, now.instant))
                .collect::<Vec<_>>()
                .hash(&mut h);
            rel(nodes.next_available(now.instant)).hash(&mut h);
            p.opens.last().map(|(_, url)| node_of(authority(url))).hash(&mut h);
            let sent: Vec<_> = self
                .statements
                .iter()
                .enumerate()
                .filter(|(_, st)| st.is_some())
                .map(|(i, _)| (self.unreached.contains(&i), self.lost.contains(&i)))
                .collect();
            sent.hash(&mut h);
            // Every request sent so far (an operation's attempts and a
            // login's nodes are bounded by their counts).
            p.http.len().hash(&mut h);
        }
        let current = p.core.auth().access_token(now).map(|t| t.expose());
        if p.opening.is_some() {
            let held = self.socket_token.as_deref();
            (held.map(token_class), held == current).hash(&mut h);
        }
        p.core.auth().pending_ops().hash(&mut h);
        self.server
            .pending
            .iter()
            .map(|(_, b)| *b)
            .collect::<Vec<_>>()
            .hash(&mut h);
        (self.server.loading.len(), self.server.live.len()).hash(&mut h);
        for s in &self.subs {
            (
                p.ended.iter().any(|(e, _)| *e == s.id),
                p.result(s.waiter).is_some(),
                rel(s.awaiting),
                s.acked_on.is_some() && s.acked_on == p.socket,
                self.subs_on_socket.contains(&s.id),
                p.core.session().is_acknowledged(s.id),
                p.core.session().last_seq(s.id).is_some(),
            )
                .hash(&mut h);
        }
        let waiting: Vec<_> = self
            .waiters
            .iter()
            .filter(|w| p.result(w.w).is_none())
            .map(|w| (w.what, w.kind.map(|k| k as u8), ms(w.due) - now_ms))
            .collect();
        waiting.hash(&mut h);
        let http_due: Vec<_> = p
            .http
            .iter()
            .filter(|s| !s.answered)
            .map(|s| ms(s.at.instant) - now_ms)
            .collect();
        http_due.hash(&mut h);
        (
            self.others,
            self.queries,
            self.write.map(|w| p.result(w).is_some()),
            self.upload.map(|w| p.result(w).is_some()),
            self.subscribes,
            self.set_auths,
            self.connects,
            self.disconnects,
            self.unsubscribes,
        )
            .hash(&mut h);
        h.finish()
    }
}

// ----------------------------------------------------------------- explorer

struct Report {
    states: usize,
    transitions: usize,
    depth: usize,
    complete: bool,
    /// Wall-clock time of the exploration.
    took: Duration,
}

fn env_usize(name: &str, default: usize) -> usize {
    #[allow(clippy::disallowed_methods)] // a test knob, not the library
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Applies `action` after `trace`, checking everything; on a violation,
/// panics with the trace.
fn step(scenario: usize, parent: Option<Model>, trace: &[Action], action: Action) -> Model {
    let run = catch_unwind(AssertUnwindSafe(|| {
        let mut m = parent.unwrap_or_else(|| Model::replay(scenario, trace));
        m.apply(action);
        m
    }));
    match run {
        Ok(m) => m,
        Err(e) => {
            eprintln!(
                "model: violation in scenario {:?} after {} steps: {:?} then {action:?}",
                scenarios()[scenario].name,
                trace.len() + 1,
                trace
            );
            resume_unwind(e)
        }
    }
}

fn drain(scenario: usize, m: Model, trace: &[Action]) {
    if matches!(m.commands, Commands::Cluster | Commands::ClusterDown)
        && let Err(e) = catch_unwind(AssertUnwindSafe(|| Model::replay(scenario, trace).drain_down()))
    {
        eprintln!(
            "model: violation with every node down in scenario {:?} after {:?}",
            scenarios()[scenario].name,
            trace
        );
        resume_unwind(e)
    }
    if let Err(e) = catch_unwind(AssertUnwindSafe(|| m.drain())) {
        eprintln!(
            "model: violation in the drain of scenario {:?} after {:?}",
            scenarios()[scenario].name,
            trace
        );
        resume_unwind(e)
    }
}

/// Explores `scenario`, timing it (the wall clock of a test, not of the
/// library).
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn explore_timed(scenario: usize, max_depth: usize, budget: usize) -> Report {
    let start = std::time::Instant::now();
    let mut report = explore(scenario, max_depth, budget);
    report.took = start.elapsed();
    report
}

fn explore(scenario: usize, max_depth: usize, budget: usize) -> Report {
    let mut seen: HashSet<u64> = HashSet::new();
    let start = Model::new(scenario);
    seen.insert(start.fingerprint());
    drain(scenario, Model::new(scenario), &[]);
    let mut frontier: Vec<Vec<Action>> = vec![Vec::new()];
    let mut report = Report {
        states: 1,
        transitions: 0,
        depth: 0,
        complete: true,
        took: Duration::ZERO,
    };
    'levels: for depth in 0..max_depth {
        let mut next = Vec::new();
        for trace in &frontier {
            let parent = Model::replay(scenario, trace);
            let actions = parent.actions();
            let mut parent = Some(parent);
            for a in actions {
                let m = step(scenario, parent.take(), trace, a);
                report.transitions += 1;
                if seen.insert(m.fingerprint()) {
                    let mut t = trace.clone();
                    t.push(a);
                    drain(scenario, m, &t);
                    next.push(t);
                    if seen.len() >= budget {
                        report.complete = false;
                        report.depth = depth + 1;
                        break 'levels;
                    }
                }
            }
        }
        report.depth = depth + 1;
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    report.states = seen.len();
    report
}

#[test]
fn the_client_core_keeps_its_invariants_in_every_interleaving() {
    let depth = env_usize("KALAM_MODEL_DEPTH", 0);
    let budget = env_usize("KALAM_MODEL_STATES", CI_STATES);
    let depth_of = |sc: &Scenario| match (depth, sc.commands) {
        (0, Commands::EveryKind) => CI_DEPTH_EVERY_KIND,
        (0, Commands::Cluster | Commands::ClusterDown) => CI_DEPTH_CLUSTER,
        (0, Commands::Session) => CI_DEPTH,
        (d, _) => d,
    };
    // `KALAM_MODEL_ONLY`: only the scenarios whose name contains it.
    #[allow(clippy::disallowed_methods)] // a test knob, not the library
    let only = std::env::var("KALAM_MODEL_ONLY").unwrap_or_default();
    let chosen: Vec<usize> = scenarios()
        .iter()
        .enumerate()
        .filter(|(_, sc)| sc.name.contains(only.as_str()))
        .map(|(i, _)| i)
        .collect();
    // One thread per scenario: they share nothing.
    let reports: Vec<Report> = std::thread::scope(|s| {
        let runs: Vec<_> = chosen
            .iter()
            .map(|&i| {
                let d = depth_of(&scenarios()[i]);
                s.spawn(move || explore_timed(i, d, budget))
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap_or_else(|e| resume_unwind(e)))
            .collect()
    });
    for (&i, r) in chosen.iter().zip(&reports) {
        eprintln!(
            "model: {:?}: {} distinct states, {} transitions, depth {}, {:.1} s{}",
            scenarios()[i].name,
            r.states,
            r.transitions,
            r.depth,
            r.took.as_secs_f64(),
            if r.complete {
                " (complete)"
            } else {
                " (state budget reached)"
            }
        );
    }
    let states: usize = reports.iter().map(|r| r.states).sum();
    let reached = reports.iter().map(|r| r.depth).min().unwrap_or(0);
    eprintln!("model: {states} distinct states in all, depth {reached} reached (budget {budget} per scenario)");
}

/// The shortest traces by which the explorer found violations, fixed since
/// in the core; replayed here with every check.
#[test]
fn the_violations_found_stay_fixed() {
    use Action::*;
    // The token held for a socket being opened was refused by the server
    // (TOKEN_EXPIRED on a query) before the socket opened: it was then sent
    // in `authenticate` all the same.
    let trace = [
        Query,
        Cred(0, CredAnswer::Token),
        Subscribe,
        Http(0, HttpAnswer::Expired),
        Open(1),
    ];
    let m = Model::replay(0, &trace);
    assert!(m.p.frames_of("authenticate").is_empty());
    drain(0, m, &trace);
    // A retried query answered TOKEN_EXPIRED again failed without dropping
    // the token: the next query to recover went out with it.
    let trace = [
        Query,
        Query,
        Http(0, HttpAnswer::Expired),
        Cred(0, CredAnswer::Token),
        Http(2, HttpAnswer::Expired),
        Http(1, HttpAnswer::Expired),
    ];
    let m = Model::replay(1, &trace);
    drain(1, m, &trace);
}
