//! The one test pump of kalam-proto's tests: a [`ClientCore`] driven by hand,
//! with hand-made time, recording everything it asks for. Tests answer the
//! requests and frames they choose, in the order they choose.
//!
//! While it drains the core, the pump checks the core's contract with its
//! driver, for every test that uses it:
//! - every waiter handed in is answered at most once, and only waiters
//!   handed in are answered; the core's count of waiting callers matches;
//! - a subscription's events stop at its end, which comes once, and only for
//!   subscriptions the core handed out; the core's and the session's count
//!   of live subscriptions match the ends seen;
//! - no `Authorization` header but a Bearer one, and no query or `/auth/me`
//!   request carries a token expired by the client's own rule;
//! - at most one socket is current at a time; text frames and pings go out
//!   only on the open socket, and nothing but `authenticate` before the
//!   server's `auth_success` on it; the pump's socket is open exactly while
//!   the session is authenticating or ready;
//! - a reconnect is never scheduled beyond the configured maximum delay;
//! - woken by its timer, the core either does something or asks to be woken
//!   later.

#![allow(dead_code)]

pub mod drive;

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use kalam_proto::{
    Answer, AuthProvider, ClientConfig, ClientCore, ConnectionOptions, CoreOutput, CredentialRequestId,
    CredentialSource, Decoded, Endpoints, Error, Hook, Incoming, Instant, KalamLinkTimeouts, LiveEvent, Now, Operation,
    QueryRequest, Reply, RequestId, RequestKind, SubId, SubscriptionOptions, TransportError, WsState,
};

/// Wall-clock seconds at the pump's time zero.
pub const T0: u64 = 1_800_000_000;

/// An unsigned JWT with the server's claim set (`kind`: access or refresh).
pub fn jwt(kind: &str, exp: u64, tag: &str) -> String {
    let claims = format!(
        r#"{{"sub":"root","iss":"kalamdb","exp":{exp},"iat":{},"role":"system","token_type":"{kind}","tag":"{tag}"}}"#,
        exp.saturating_sub(3600)
    );
    format!(
        "{}.{}.sig",
        B64.encode(r#"{"typ":"JWT","alg":"HS256"}"#),
        B64.encode(claims)
    )
}

/// A login answer's body.
pub fn login_body(access: &str, refresh: &str) -> String {
    format!(
        r#"{{"user":{{"id":"root","role":"system","email":null}},"admin_ui_access":true,"expires_at":"x","access_token":"{access}","refresh_token":"{refresh}","refresh_expires_at":"x"}}"#
    )
}

/// A one-row SQL success.
pub const OK: &str = r#"{"status":"success","results":[{"schema":[{"name":"x","data_type":"Int","index":0}],"rows":[[1]],"row_count":1,"as_user":"root"}],"took":1.0,"error":null}"#;
/// A `TOKEN_EXPIRED` answer.
pub const EXPIRED: &str =
    r#"{"error":{"code":"TOKEN_EXPIRED","message":"Invalid credentials"},"results":[],"status":"error","took":0.1}"#;
/// An `INVALID_CREDENTIALS` answer of the SQL endpoint.
pub const INVALID: &str = r#"{"error":{"code":"INVALID_CREDENTIALS","message":"Invalid credentials"},"results":[],"status":"error","took":0.1}"#;
/// A refused login.
pub const BAD_LOGIN: &str = r#"{"error":"unauthorized","message":"Invalid credentials"}"#;
/// The server's `auth_success` frame.
pub const AUTH_SUCCESS: &str =
    r#"{"type":"auth_success","user":"root","role":"system","protocol":{"serialization":"json","compression":"none"}}"#;
/// The server's `auth_error` frame.
pub const AUTH_ERROR: &str = r#"{"type":"auth_error","message":"Invalid credentials"}"#;
/// The server dropped a frame for its per-connection rate limit.
pub const RATE_LIMITED: &str =
    r#"{"type":"error","subscription_id":"rate_limit","code":"RATE_LIMIT_EXCEEDED","message":"Too many messages"}"#;

/// A `subscription_ack` for wire id `id` (`has_more`: initial pages follow).
pub fn ack_frame(id: &str, has_more: bool) -> String {
    format!(
        r#"{{"type":"subscription_ack","subscription_id":"{id}","total_rows":0,"batch_control":{{"batch_num":0,"has_more":{has_more},"status":"ready","last_seq_id":null}},"schema":[{{"name":"id","data_type":"BigInt","index":0,"flags":["pk"]}}]}}"#
    )
}

/// Initial page `batch` of one row with `_seq` `seq`.
pub fn batch_frame(id: &str, batch: u32, has_more: bool, seq: i64) -> String {
    format!(
        r#"{{"type":"initial_data_batch","subscription_id":"{id}","rows":[{{"id":"1","_seq":"{seq}"}}],"batch_control":{{"batch_num":{batch},"has_more":{has_more},"status":"loading","last_seq_id":{seq}}}}}"#
    )
}

/// A change of one row: `kind` 0 insert, 1 update, else delete.
pub fn change_frame(id: &str, kind: u8, seq: i64) -> String {
    let (t, body) = match kind {
        0 => ("insert", format!(r#""rows":[{{"id":"1","_seq":"{seq}"}}]"#)),
        1 => (
            "update",
            format!(r#""rows":[{{"id":"1","_seq":"{seq}"}}],"old_values":[{{"id":"1","_seq":"1"}}]"#),
        ),
        _ => (
            "delete",
            format!(r#""old_values":[{{"id":"1","_seq":"{seq}","_deleted":true}}]"#),
        ),
    };
    format!(r#"{{"type":"change","subscription_id":"{id}","change_type":"{t}",{body}}}"#)
}

/// The server refused subscription `id`.
pub fn sub_error_frame(id: &str) -> String {
    format!(r#"{{"type":"error","subscription_id":"{id}","code":"NOT_FOUND","message":"x"}}"#)
}

/// An HTTP request the core asked to send.
#[derive(Debug)]
pub struct SentHttp {
    pub id: RequestId,
    pub kind: RequestKind,
    pub method: http::Method,
    /// The URL's path.
    pub path: String,
    /// The URL's `host:port`: which node it went to.
    pub host: String,
    /// The `Authorization` header, if any.
    pub auth: Option<String>,
    pub body: Vec<u8>,
    /// A download's sink (from the request's extensions).
    pub sink: Option<u64>,
    pub answered: bool,
    /// When it was asked for.
    pub at: Now,
}

/// A credential callback the core asked for.
#[derive(Debug, Clone, Copy)]
pub struct Fetch {
    pub id: CredentialRequestId,
    pub source: CredentialSource,
    /// When it was asked for.
    pub at: Instant,
    /// The test answered it.
    pub answered: bool,
    /// The core gave up on it at its deadline (it counts as failed).
    pub expired: bool,
}

/// A waiter's handle in the pump: the number handed to the core.
pub type W = u64;

/// The pump.
pub struct Pump {
    pub core: ClientCore<W>,
    pub now: Now,
    /// The simulated server's clock minus the client's, in seconds: every
    /// answer's `Date` header reads the server's clock.
    pub server_offset: i64,
    next_waiter: W,
    pub http: Vec<SentHttp>,
    pub fetches: Vec<(CredentialRequestId, CredentialSource)>,
    /// The same calls, with their fate.
    pub fetch_log: Vec<Fetch>,
    pub completed: Vec<(W, Result<Answer, Error>)>,
    /// Sockets opened: (attempt, url).
    pub opens: Vec<(u64, String)>,
    /// A socket asked for and not yet reported open or closed, while the
    /// session still wants it.
    pub opening: Option<u64>,
    /// The open socket's attempt, as the pump sees it.
    pub socket: Option<u64>,
    /// The server said `auth_success` on the open socket.
    pub authed: bool,
    /// Text frames sent, parsed, with the time they left.
    pub frames: Vec<(Instant, serde_json::Value)>,
    pub pings: usize,
    pub closes: Vec<(u16, &'static str)>,
    pub delivered: Vec<(SubId, LiveEvent)>,
    /// How many `Deliver` outputs there were (events come batched).
    pub deliveries: usize,
    pub ended: Vec<(SubId, Option<Error>)>,
    pub hooks: Vec<Hook>,
    /// Subscriptions whose queue the test declares full.
    pub full: HashSet<SubId>,
    /// Subscriptions the core handed out, in order.
    pub subs: Vec<SubId>,
    /// Outputs drained so far (of any kind).
    pub outputs: usize,
}

/// Client settings for the pump: the defaults with a fixed seed.
pub fn config() -> ClientConfig {
    ClientConfig::new(&ConnectionOptions::default(), &KalamLinkTimeouts::default(), 7)
}

impl Pump {
    /// A core with these credentials and settings, at time zero.
    pub fn new(credentials: AuthProvider, config: ClientConfig) -> Pump {
        Pump::with_nodes(&["http://127.0.0.1:2900"], credentials, config)
    }

    /// A core for the nodes at `urls` (a cluster when several).
    pub fn with_nodes(urls: &[&str], credentials: AuthProvider, config: ClientConfig) -> Pump {
        let now = Now::new(Instant::ZERO, Duration::from_secs(T0));
        let nodes = kalam_proto::Nodes::new(urls.iter().map(|u| Endpoints::new(u).unwrap()).collect()).unwrap();
        let mut p = Pump {
            core: ClientCore::new(nodes, credentials, config, now),
            now,
            server_offset: 0,
            next_waiter: 1,
            http: Vec::new(),
            fetches: Vec::new(),
            fetch_log: Vec::new(),
            completed: Vec::new(),
            opens: Vec::new(),
            opening: None,
            socket: None,
            authed: false,
            frames: Vec::new(),
            pings: 0,
            closes: Vec::new(),
            delivered: Vec::new(),
            deliveries: 0,
            ended: Vec::new(),
            hooks: Vec::new(),
            full: HashSet::new(),
            subs: Vec::new(),
            outputs: 0,
        };
        p.pump();
        p
    }

    /// Basic credentials, default settings.
    pub fn basic() -> Pump {
        Pump::new(AuthProvider::basic_auth("root".into(), "pw".into()), config())
    }

    /// A valid configured JWT, default settings.
    pub fn with_token(tag: &str) -> Pump {
        Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 3600, tag)), config())
    }

    // ------------------------------------------------------------------ time

    /// Moves the clocks forward by `d` (no timeout handled).
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.advance(d);
    }

    /// Moves to `ms` after time zero, handling every timeout due on the way,
    /// in order.
    pub fn run_until(&mut self, ms: u64) {
        let target = Instant::from_millis(ms);
        while let Some(at) = self.core.poll_timeout() {
            if at > target {
                break;
            }
            let at = at.max(self.now.instant);
            self.now = self.now.advance(at.saturating_duration_since(self.now.instant));
            self.fire();
        }
        self.now = self.now.advance(target.saturating_duration_since(self.now.instant));
    }

    /// Handles the core's timeout if it is due now (time does not move).
    /// Returns whether it was due.
    pub fn tick(&mut self) -> bool {
        match self.core.poll_timeout() {
            Some(at) if at <= self.now.instant => {
                self.fire();
                true
            }
            _ => false,
        }
    }

    /// `handle_timeout` now. The core must do something, or ask to be woken
    /// later: woken again in the past with nothing done, a driver would spin.
    fn fire(&mut self) {
        let before = self.outputs;
        self.core.handle_timeout(self.now);
        // The core gives up on a credential call at its deadline.
        let limit = self.core.config().callback_timeout;
        let now = self.now.instant;
        for f in &mut self.fetch_log {
            if !f.answered && f.at + limit <= now {
                f.expired = true;
            }
        }
        self.pump();
        let next = self.core.poll_timeout();
        assert!(
            self.outputs > before || next.is_none_or(|n| n > now),
            "woken with nothing to do, and asks to be woken in the past again ({next:?} at {now:?})"
        );
    }

    // -------------------------------------------------------------- commands

    fn waiter(&mut self) -> W {
        let w = self.next_waiter;
        self.next_waiter += 1;
        w
    }

    pub fn submit(&mut self, op: Operation) -> W {
        let w = self.waiter();
        self.core.submit(op, w, self.now);
        self.pump();
        w
    }

    pub fn query(&mut self, sql: &str) -> W {
        self.submit(Operation::Query(QueryRequest::new(sql)))
    }

    pub fn set_credentials(&mut self, c: AuthProvider) {
        self.core.set_credentials(c, self.now);
        self.pump();
    }

    pub fn connect(&mut self) -> W {
        let w = self.waiter();
        self.core.connect(Some(w), self.now);
        self.pump();
        w
    }

    pub fn disconnect(&mut self) -> W {
        let w = self.waiter();
        self.core.disconnect(Some(w), self.now);
        self.pump();
        w
    }

    pub fn subscribe(&mut self, sql: &str, options: Option<SubscriptionOptions>) -> (W, Option<SubId>) {
        let w = self.waiter();
        let sub = self.core.subscribe(sql, options, w, self.now);
        self.subs.extend(sub);
        self.pump();
        (w, sub)
    }

    pub fn unsubscribe(&mut self, sub: SubId) {
        self.core.unsubscribe(sub, self.now);
        self.pump();
    }

    // ---------------------------------------------------------------- inputs

    /// Answers request `id` with `status` and a JSON body.
    pub fn answer(&mut self, id: RequestId, status: u16, body: &str) {
        let response = http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("date", http_date(self.server_now()))
            .body(body.as_bytes().to_vec())
            .unwrap();
        self.mark_answered(id);
        self.core.handle_http_response(id, &response, self.now);
        self.pump();
    }

    /// Answers the oldest unanswered request.
    pub fn answer_next(&mut self, status: u16, body: &str) -> RequestKind {
        let s = self.http.iter().find(|s| !s.answered).expect("a request to answer");
        let (id, kind) = (s.id, s.kind);
        self.answer(id, status, body);
        kind
    }

    /// The oldest unanswered request.
    pub fn pending_http(&self) -> Option<&SentHttp> {
        self.http.iter().find(|s| !s.answered)
    }

    /// Answers request `id` with an answer decoded elsewhere.
    pub fn answer_decoded(&mut self, id: RequestId, decoded: Decoded) {
        self.mark_answered(id);
        self.core.handle_http(id, decoded, self.now);
        self.pump();
    }

    /// The simulated server's clock, Unix seconds.
    pub fn server_now(&self) -> u64 {
        (self.now.unix_secs() as i64 + self.server_offset).max(0) as u64
    }

    /// Whether the server still takes a token with this `exp` (its 60 s
    /// leeway, PROTOCOL §2.3).
    pub fn server_accepts(&self, exp: Option<u64>) -> bool {
        exp.is_none_or(|e| self.server_now() < e + kalam_proto::auth_machine::SERVER_LEEWAY.as_secs())
    }

    /// Answers the login or refresh request `id` with a token pair.
    pub fn answer_login(&mut self, id: RequestId, access: &str, refresh: &str) {
        self.answer(id, 200, &login_body(access, refresh));
    }

    fn mark_answered(&mut self, id: RequestId) {
        if let Some(s) = self.http.iter_mut().find(|s| s.id == id) {
            s.answered = true;
        }
    }

    pub fn fail(&mut self, id: RequestId, e: TransportError) {
        self.mark_answered(id);
        self.core.handle_http_error(id, e, self.now);
        self.pump();
    }

    /// Answers credential call `id`.
    pub fn credentials(&mut self, id: CredentialRequestId, r: Result<AuthProvider, Error>) {
        if let Some(f) = self.fetch_log.iter_mut().find(|f| f.id == id) {
            f.answered = true;
        }
        self.core.handle_credentials(id, r, self.now);
        self.pump();
    }

    /// Answers the latest credential call.
    pub fn answer_fetch(&mut self, r: Result<AuthProvider, Error>) {
        let (id, _) = *self.fetches.last().expect("a credential call");
        self.credentials(id, r);
    }

    /// The socket of `attempt` opened (it need not be the current one).
    pub fn socket_open(&mut self, attempt: u64) -> bool {
        let wanted = self.core.handle_socket_open(attempt, self.now);
        if self.opening == Some(attempt) {
            self.opening = None;
        }
        if wanted {
            self.socket = Some(attempt);
            self.authed = false;
        }
        self.pump();
        wanted
    }

    /// A text frame from the server on the open socket.
    pub fn frame(&mut self, text: &str) {
        let attempt = self.socket.expect("an open socket");
        if text.contains("auth_success")
            && serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v["type"] == "auth_success")
        {
            self.authed = true;
        }
        self.core.handle_frame(attempt, Incoming::Text(text), self.now);
        self.pump();
    }

    /// The open socket closed (or, with none open, the one being opened
    /// failed).
    pub fn socket_closed(&mut self, code: Option<u16>, reason: &str) {
        let attempt = self
            .socket
            .or(self.opening)
            .or(self.opens.last().map(|o| o.0))
            .expect("a socket");
        self.closed(attempt, code, reason);
    }

    /// The socket of `attempt` closed or failed to open (it need not be the
    /// current one).
    pub fn closed(&mut self, attempt: u64, code: Option<u16>, reason: &str) {
        if self.socket == Some(attempt) {
            self.socket = None;
            self.authed = false;
        }
        if self.opening == Some(attempt) {
            self.opening = None;
        }
        self.core.handle_socket_closed(attempt, code, reason, self.now);
        self.pump();
    }

    /// Opens the socket the core asked for last and authenticates it.
    pub fn bring_up(&mut self) {
        let (attempt, _) = self.opens.last().cloned().expect("the core asked for a socket");
        assert!(self.socket_open(attempt));
        let auth = self.frames.last().expect("authenticate sent").1.clone();
        assert_eq!(auth["type"], "authenticate");
        self.frame(AUTH_SUCCESS);
    }

    /// Drains the core's outputs into the records, checking the contract
    /// (see the module docs).
    pub fn pump(&mut self) {
        while let Some(o) = self.core.poll_output() {
            self.outputs += 1;
            match o {
                CoreOutput::SendHttp { id, kind, request } => {
                    let auth = request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .map(|v| v.to_str().unwrap().to_owned());
                    self.check_authorization(kind, auth.as_deref());
                    let sink = request
                        .extensions()
                        .get::<kalam_proto::files::DownloadSink>()
                        .map(|s| s.0);
                    self.http.push(SentHttp {
                        id,
                        kind,
                        method: request.method().clone(),
                        path: request.uri().path().to_owned(),
                        host: request.uri().authority().map(|a| a.to_string()).unwrap_or_default(),
                        auth,
                        sink,
                        body: request.into_body(),
                        answered: false,
                        at: self.now,
                    })
                }
                CoreOutput::SendUpload { id, request, plan } => {
                    let auth = request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .map(|v| v.to_str().unwrap().to_owned());
                    self.check_authorization(RequestKind::Upload, auth.as_deref());
                    // The body as sent, each file's data as that many `*`.
                    let mut body = Vec::new();
                    for segment in &plan.segments {
                        match segment {
                            kalam_proto::Segment::Framed(b) => body.extend_from_slice(b),
                            kalam_proto::Segment::File { len, .. } => body.resize(body.len() + *len as usize, b'*'),
                        }
                    }
                    self.http.push(SentHttp {
                        id,
                        kind: RequestKind::Upload,
                        method: request.method().clone(),
                        path: request.uri().path().to_owned(),
                        host: request.uri().authority().map(|a| a.to_string()).unwrap_or_default(),
                        auth,
                        sink: None,
                        body,
                        answered: false,
                        at: self.now,
                    })
                }
                CoreOutput::OpenSocket { url, attempt } => {
                    assert!(
                        self.socket.is_none() && self.opening.is_none(),
                        "a second socket ({attempt}) while one is live"
                    );
                    self.opening = Some(attempt);
                    self.opens.push((attempt, url));
                }
                CoreOutput::SendText(t) => {
                    assert!(self.socket.is_some(), "a frame with no socket open: {t}");
                    let frame: serde_json::Value = serde_json::from_str(&t).expect("JSON frames");
                    assert!(
                        self.authed || frame["type"] == "authenticate",
                        "{} before auth_success",
                        frame["type"]
                    );
                    self.frames.push((self.now.instant, frame));
                }
                CoreOutput::SendPing => {
                    assert!(self.socket.is_some(), "a ping with no socket open");
                    self.pings += 1;
                }
                CoreOutput::CloseSocket { code, reason } => {
                    assert!(self.socket.is_some(), "a close with no socket open");
                    self.socket = None;
                    self.authed = false;
                    self.closes.push((code, reason));
                }
                CoreOutput::FetchCredentials { id, source } => {
                    self.fetches.push((id, source));
                    self.fetch_log.push(Fetch {
                        id,
                        source,
                        at: self.now.instant,
                        answered: false,
                        expired: false,
                    });
                }
                CoreOutput::Complete { waiter, result } => {
                    assert!(
                        waiter >= 1 && waiter < self.next_waiter,
                        "waiter {waiter} was never handed in"
                    );
                    assert!(
                        self.completed.iter().all(|(w, _)| *w != waiter),
                        "waiter {waiter} answered twice"
                    );
                    self.completed.push((waiter, result));
                }
                CoreOutput::Deliver { sub, events } => {
                    assert!(self.subs.contains(&sub), "events for {sub:?}, never handed out");
                    assert!(
                        self.ended.iter().all(|(s, _)| *s != sub),
                        "events for {sub:?} after its end"
                    );
                    self.deliveries += 1;
                    if self.full.contains(&sub) {
                        self.core.handle_subscriber_full(sub, self.now);
                    } else {
                        // A consumer that reads at once: it always has room.
                        self.delivered.extend(events.into_iter().map(|e| (sub, e)));
                        self.core.handle_subscriber_room(sub, self.now);
                    }
                }
                CoreOutput::EndSubscription { sub, error } => {
                    assert!(self.subs.contains(&sub), "{sub:?} ended, never handed out");
                    assert!(self.ended.iter().all(|(s, _)| *s != sub), "{sub:?} ended twice");
                    self.ended.push((sub, error));
                }
                CoreOutput::Hook(h) => self.hooks.push(h),
            }
        }
        self.check_state();
    }

    /// Requests carry a Bearer token or nothing, and never one expired by the
    /// client's own rule on a query or `/auth/me`.
    fn check_authorization(&self, kind: RequestKind, auth: Option<&str>) {
        let Some(auth) = auth else { return };
        let token = auth
            .strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("a non-Bearer Authorization header on a {kind:?} request"));
        if matches!(
            kind,
            RequestKind::Query | RequestKind::QueryRows | RequestKind::Me | RequestKind::Upload | RequestKind::Download
        ) && let Ok(claims) = kalam_proto::jwt::inspect(token)
        {
            assert!(
                !claims.is_expired_at(self.server_now(), 0) || self.server_accepts(claims.exp),
                "a {kind:?} request with a token the server refuses (exp {:?}, server time {})",
                claims.exp,
                self.server_now()
            );
        }
    }

    /// After every drain: the pump's picture matches the core's.
    fn check_state(&mut self) {
        let session = self.core.session();
        let state = session.state();
        if state != WsState::Connecting {
            // Abandoned while opening: refused when it opens, then dropped.
            self.opening = None;
        }
        assert_eq!(
            self.socket.is_some(),
            matches!(state, WsState::Authenticating | WsState::Ready),
            "the open socket ({:?}) and the session's state ({state:?}) disagree",
            self.socket
        );
        if state == WsState::BackingOff {
            let at = session.poll_timeout().expect("a reconnect time");
            let max = self.core.config().ws.max_reconnect_delay;
            assert!(
                at.saturating_duration_since(self.now.instant) <= max,
                "backoff beyond the maximum: {at:?} at {:?}",
                self.now.instant
            );
        }
        let handed_in = (self.next_waiter - 1) as usize;
        assert_eq!(
            self.core.pending_waiters() + self.completed.len(),
            handed_in,
            "waiters the core holds + waiters answered != waiters handed in"
        );
        let live = self.subs.len() - self.ended.len();
        assert_eq!(self.core.subscriptions(), live, "subscriptions not ended");
        assert_eq!(session.subscriptions(), live, "the session's subscriptions");
    }

    // --------------------------------------------------------------- queries

    /// The result of waiter `w`, if answered.
    pub fn result(&self, w: W) -> Option<&Result<Answer, Error>> {
        self.completed.iter().find(|(x, _)| *x == w).map(|(_, r)| r)
    }

    /// The query reply of waiter `w`: panics if it is not a successful query.
    pub fn query_ok(&self, w: W) -> bool {
        matches!(self.result(w), Some(Ok(Answer::Reply(Reply::Query(_)))))
    }

    /// The error of waiter `w`.
    pub fn error(&self, w: W) -> Option<&Error> {
        match self.result(w) {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }

    /// Text frames of `type`.
    pub fn frames_of(&self, ty: &str) -> Vec<&serde_json::Value> {
        self.frames
            .iter()
            .filter(|(_, f)| f["type"] == ty)
            .map(|(_, f)| f)
            .collect()
    }

    /// The operation reply of waiter `w`: panics if it is not answered, or
    /// answered with something else than an operation's reply.
    pub fn reply(&self, w: W) -> Result<&Reply, &Error> {
        match self.result(w) {
            Some(Ok(Answer::Reply(r))) => Ok(r),
            Some(Err(e)) => Err(e),
            other => panic!("waiter {w}: {other:?}"),
        }
    }

    /// Waiters handed in and not answered.
    pub fn unanswered(&self) -> Vec<W> {
        (1..self.next_waiter)
            .filter(|w| self.completed.iter().all(|(x, _)| x != w))
            .collect()
    }

    /// The last request sent.
    pub fn last_http(&self) -> &SentHttp {
        self.http.last().expect("a request sent")
    }

    /// Requests of `kind`, in order.
    pub fn sent_of(&self, kind: RequestKind) -> Vec<&SentHttp> {
        self.http.iter().filter(|s| s.kind == kind).collect()
    }

    /// Credential calls neither answered nor given up by the core.
    pub fn pending_fetches(&self) -> impl Iterator<Item = &Fetch> {
        self.fetch_log.iter().filter(|f| !f.answered && !f.expired)
    }

    /// Events delivered to `sub`.
    pub fn events(&self, sub: SubId) -> Vec<&LiveEvent> {
        self.delivered
            .iter()
            .filter(|(s, _)| *s == sub)
            .map(|(_, e)| e)
            .collect()
    }
}

/// An HTTP `Date` header value (IMF-fixdate) for Unix seconds.
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
