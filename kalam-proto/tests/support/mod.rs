//! The one test pump of kalam-proto's tests: a [`ClientCore`] driven by hand,
//! with hand-made time, recording everything it asks for. Tests answer the
//! requests and frames they choose, in the order they choose.

#![allow(dead_code)]

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use kalam_proto::{
    Answer, AuthProvider, ClientConfig, ClientCore, ConnectionOptions, CoreOutput, CredentialRequestId,
    CredentialSource, Endpoints, Error, Hook, Incoming, Instant, KalamLinkTimeouts, LiveEvent, Now, Operation,
    QueryRequest, Reply, RequestId, RequestKind, SubId, SubscriptionOptions, TransportError,
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

/// An HTTP request the core asked to send.
#[derive(Debug)]
pub struct SentHttp {
    pub id: RequestId,
    pub kind: RequestKind,
    /// The `Authorization` header, if any.
    pub auth: Option<String>,
    pub body: Vec<u8>,
    pub answered: bool,
}

/// A waiter's handle in the pump: the number handed to the core.
pub type W = u64;

/// The pump.
pub struct Pump {
    pub core: ClientCore<W>,
    pub now: Now,
    next_waiter: W,
    pub http: Vec<SentHttp>,
    pub fetches: Vec<(CredentialRequestId, CredentialSource)>,
    pub completed: Vec<(W, Result<Answer, Error>)>,
    /// Sockets opened: (attempt, url).
    pub opens: Vec<(u64, String)>,
    /// The open socket's attempt, as the pump sees it.
    pub socket: Option<u64>,
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
}

/// Client settings for the pump: the defaults with a fixed seed.
pub fn config() -> ClientConfig {
    ClientConfig::new(&ConnectionOptions::default(), &KalamLinkTimeouts::default(), 7)
}

impl Pump {
    /// A core with these credentials and settings, at time zero.
    pub fn new(credentials: AuthProvider, config: ClientConfig) -> Pump {
        let now = Now::new(Instant::ZERO, Duration::from_secs(T0));
        let endpoints = Endpoints::new("http://127.0.0.1:2900").unwrap();
        let mut p = Pump {
            core: ClientCore::new(endpoints, credentials, config, now),
            now,
            next_waiter: 1,
            http: Vec::new(),
            fetches: Vec::new(),
            completed: Vec::new(),
            opens: Vec::new(),
            socket: None,
            frames: Vec::new(),
            pings: 0,
            closes: Vec::new(),
            delivered: Vec::new(),
            deliveries: 0,
            ended: Vec::new(),
            hooks: Vec::new(),
            full: HashSet::new(),
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
            self.core.handle_timeout(self.now);
            self.pump();
        }
        self.now = self.now.advance(target.saturating_duration_since(self.now.instant));
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
            .body(body.as_bytes().to_vec())
            .unwrap();
        if let Some(s) = self.http.iter_mut().find(|s| s.id == id) {
            s.answered = true;
        }
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

    pub fn fail(&mut self, id: RequestId, e: TransportError) {
        if let Some(s) = self.http.iter_mut().find(|s| s.id == id) {
            s.answered = true;
        }
        self.core.handle_http_error(id, e, self.now);
        self.pump();
    }

    pub fn credentials(&mut self, id: CredentialRequestId, r: Result<AuthProvider, Error>) {
        self.core.handle_credentials(id, r, self.now);
        self.pump();
    }

    pub fn socket_open(&mut self, attempt: u64) -> bool {
        let wanted = self.core.handle_socket_open(attempt, self.now);
        if wanted {
            self.socket = Some(attempt);
        }
        self.pump();
        wanted
    }

    /// A text frame from the server on the open socket.
    pub fn frame(&mut self, text: &str) {
        let attempt = self.socket.expect("an open socket");
        self.core.handle_frame(attempt, Incoming::Text(text), self.now);
        self.pump();
    }

    pub fn socket_closed(&mut self, code: Option<u16>, reason: &str) {
        let attempt = self.socket.take().or(self.opens.last().map(|o| o.0)).expect("a socket");
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

    /// Drains the core's outputs into the records.
    pub fn pump(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                CoreOutput::SendHttp { id, kind, request } => self.http.push(SentHttp {
                    id,
                    kind,
                    auth: request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .map(|v| v.to_str().unwrap().to_owned()),
                    body: request.into_body(),
                    answered: false,
                }),
                CoreOutput::OpenSocket { url, attempt } => self.opens.push((attempt, url)),
                CoreOutput::SendText(t) => {
                    assert!(self.socket.is_some(), "a frame with no socket open: {t}");
                    self.frames
                        .push((self.now.instant, serde_json::from_str(&t).expect("JSON frames")));
                }
                CoreOutput::SendPing => self.pings += 1,
                CoreOutput::CloseSocket { code, reason } => {
                    self.socket = None;
                    self.closes.push((code, reason));
                }
                CoreOutput::FetchCredentials { id, source } => self.fetches.push((id, source)),
                CoreOutput::Complete { waiter, result } => {
                    assert!(
                        self.completed.iter().all(|(w, _)| *w != waiter),
                        "waiter {waiter} answered twice"
                    );
                    self.completed.push((waiter, result));
                }
                CoreOutput::Deliver { sub, events } => {
                    assert!(
                        self.ended.iter().all(|(s, _)| *s != sub),
                        "events for {sub:?} after its end"
                    );
                    self.deliveries += 1;
                    if self.full.contains(&sub) {
                        self.core.handle_subscriber_full(sub, self.now);
                    } else {
                        self.delivered.extend(events.into_iter().map(|e| (sub, e)));
                    }
                }
                CoreOutput::EndSubscription { sub, error } => {
                    assert!(self.ended.iter().all(|(s, _)| *s != sub), "{sub:?} ended twice");
                    self.ended.push((sub, error));
                }
                CoreOutput::Hook(h) => self.hooks.push(h),
            }
        }
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

    /// Events delivered to `sub`.
    pub fn events(&self, sub: SubId) -> Vec<&LiveEvent> {
        self.delivered
            .iter()
            .filter(|(s, _)| *s == sub)
            .map(|(_, e)| e)
            .collect()
    }
}
