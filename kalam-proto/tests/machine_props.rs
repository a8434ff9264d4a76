//! Property tests of the auth machine over random event sequences. After
//! every step:
//!
//! - single flight: at most one login, refresh or credential call of the
//!   machine's own is outstanding (one the application abandoned with
//!   `set_credentials` does not count, but its late answer must change
//!   nothing);
//! - no query or `/auth/me` request carries a token expired at `now` by the
//!   client's rule (30 s skew);
//! - no Basic header anywhere, and the password only in a login body;
//! - no query goes out more than twice, no operation is done twice;
//! - the timer never asks to be woken in the past without progress.
//!
//! At the end everything outstanding is answered successfully, and every
//! operation must then be done exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use kalam_proto::{
    AuthConfig, AuthMachine, AuthProvider, CredentialRequestId, Endpoints, Error, Instant, Now, OpId, Operation,
    Output, QueryRequest, RequestId, RequestKind, TransportError, jwt,
};
use proptest::prelude::*;

const PASSWORD: &str = "s3cret-P4ss";
const T0: u64 = 1_800_000_000;

fn token(kind: &str, exp: u64, n: u64) -> String {
    let claims = format!(
        r#"{{"sub":"root","iss":"kalamdb","exp":{exp},"iat":{},"role":"system","token_type":"{kind}","n":{n}}}"#,
        exp.saturating_sub(60)
    );
    format!(
        "{}.{}.sig",
        B64.encode(r#"{"typ":"JWT","alg":"HS256"}"#),
        B64.encode(claims)
    )
}

#[derive(Debug, Clone)]
enum Answer {
    Ok { ttl: u64 },
    TokenExpired,
    Invalid,
    Unauthorized,
    ServerError,
    Garbage,
    Transport,
}

#[derive(Debug, Clone)]
enum Creds {
    Token { ttl: u64 },
    Basic,
    Fails,
    Expired,
    Nothing,
}

#[derive(Debug, Clone)]
enum Ev {
    Query,
    Token { fresh: bool },
    Me,
    Answer { pick: usize, answer: Answer },
    Credentials { pick: usize, creds: Creds },
    Advance { secs: u64 },
    Timeout,
    SetCredentials { creds: Creds },
    Stale,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => (0u64..20_000).prop_map(|ttl| Answer::Ok { ttl }),
        2 => Just(Answer::TokenExpired),
        1 => Just(Answer::Invalid),
        1 => Just(Answer::Unauthorized),
        1 => Just(Answer::ServerError),
        1 => Just(Answer::Garbage),
        1 => Just(Answer::Transport),
    ]
}

fn creds() -> impl Strategy<Value = Creds> {
    prop_oneof![
        3 => (0u64..20_000).prop_map(|ttl| Creds::Token { ttl }),
        1 => Just(Creds::Basic),
        1 => Just(Creds::Fails),
        1 => Just(Creds::Expired),
        1 => Just(Creds::Nothing),
    ]
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => Just(Ev::Query),
        1 => any::<bool>().prop_map(|fresh| Ev::Token { fresh }),
        1 => Just(Ev::Me),
        6 => (any::<usize>(), answer()).prop_map(|(pick, answer)| Ev::Answer { pick, answer }),
        2 => (any::<usize>(), creds()).prop_map(|(pick, creds)| Ev::Credentials { pick, creds }),
        2 => prop_oneof![0u64..10, 0u64..600, 0u64..30_000].prop_map(|secs| Ev::Advance { secs }),
        2 => Just(Ev::Timeout),
        1 => creds().prop_map(|creds| Ev::SetCredentials { creds }),
        1 => Just(Ev::Stale),
    ]
}

struct World {
    m: AuthMachine,
    now: Now,
    n: u64,
    /// Outstanding requests: id, kind, whether an operation (not the
    /// machine's own recovery) sent it.
    requests: Vec<(RequestId, RequestKind, Option<String>)>,
    fetches: Vec<CredentialRequestId>,
    abandoned: BTreeSet<u64>,
    ops: BTreeMap<OpId, usize>,
    sends: BTreeMap<String, usize>,
}

impl World {
    fn provider(&mut self, c: &Creds) -> Result<AuthProvider, Error> {
        self.n += 1;
        match c {
            Creds::Token { ttl } => Ok(AuthProvider::jwt_token(token(
                "access",
                self.now.unix_secs() + ttl,
                self.n,
            ))),
            Creds::Basic => Ok(AuthProvider::basic_auth("root".into(), PASSWORD.into())),
            Creds::Fails => Err(Error::msg("callback failed")),
            Creds::Expired => Ok(AuthProvider::jwt_token(token(
                "access",
                self.now.unix_secs().saturating_sub(100),
                self.n,
            ))),
            Creds::Nothing => Ok(AuthProvider::none()),
        }
    }

    /// Drains outputs, checking the per-output rules.
    fn pump(&mut self) -> Result<bool, TestCaseError> {
        let mut progressed = false;
        while let Some(o) = self.m.poll_output() {
            progressed = true;
            match o {
                Output::Transmit { id, kind, request } => {
                    let auth = request
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let body = String::from_utf8_lossy(request.body()).into_owned();
                    prop_assert!(
                        auth.as_deref().is_none_or(|a| a.starts_with("Bearer ")),
                        "non-Bearer header {auth:?}"
                    );
                    prop_assert!(
                        kind == RequestKind::Login || !body.contains(PASSWORD),
                        "password outside login"
                    );
                    prop_assert!(auth.as_deref().is_none_or(|a| !a.contains(PASSWORD)));
                    if matches!(kind, RequestKind::Query | RequestKind::Me)
                        && let Some(a) = &auth
                        && let Ok(c) = jwt::inspect(&a["Bearer ".len()..])
                    {
                        prop_assert!(
                            !c.is_expired_at(self.now.unix_secs(), 30),
                            "sent a token expired by the client's own rule"
                        );
                    }
                    if kind == RequestKind::Query {
                        let n = self.sends.entry(body.clone()).or_default();
                        *n += 1;
                        prop_assert!(*n <= 2, "a query sent {} times", n);
                    }
                    self.requests.push((id, kind, auth));
                }
                Output::FetchCredentials { id, .. } => self.fetches.push(id),
                Output::Done { op, .. } => {
                    let n = self
                        .ops
                        .get_mut(&op)
                        .ok_or_else(|| TestCaseError::fail("unknown op done"))?;
                    *n += 1;
                    prop_assert_eq!(*n, 1, "an operation done twice");
                }
            }
        }
        let recovery = self
            .requests
            .iter()
            .filter(|(id, k, _)| {
                matches!(k, RequestKind::Login | RequestKind::Refresh) && !self.abandoned.contains(&id.0)
            })
            .count();
        let fetches = self.fetches.iter().filter(|f| !self.abandoned.contains(&f.0)).count();
        prop_assert!(
            recovery + fetches <= 1,
            "{recovery} recovery requests and {fetches} fetches"
        );
        Ok(progressed)
    }

    fn respond(&mut self, i: usize, a: &Answer) {
        let (id, kind, _) = self.requests.remove(i);
        self.n += 1;
        let now = self.now.unix_secs();
        let (status, body) = match (a, kind) {
            (Answer::Ok { ttl }, RequestKind::Login | RequestKind::Refresh) => (
                200,
                format!(
                    r#"{{"user":{{"id":"root","role":"system","email":null}},"admin_ui_access":true,"expires_at":"x","access_token":"{}","refresh_token":"{}","refresh_expires_at":"x"}}"#,
                    token("access", now + ttl, self.n),
                    token("refresh", now + 7 * ttl, self.n)
                ),
            ),
            (Answer::Ok { .. }, RequestKind::Me) => (200, r#"{"user":{"id":"root","role":"system","email":null},"admin_ui_access":true}"#.into()),
            (Answer::Ok { .. }, _) => (200, r#"{"status":"success","results":[],"took":1}"#.into()),
            (Answer::TokenExpired, _) => (401, r#"{"error":{"code":"TOKEN_EXPIRED","message":"Invalid credentials"},"results":[],"status":"error","took":0}"#.into()),
            (Answer::Invalid, _) => (401, r#"{"error":{"code":"INVALID_CREDENTIALS","message":"Invalid credentials"},"results":[],"status":"error","took":0}"#.into()),
            (Answer::Unauthorized, _) => (401, r#"{"error":"unauthorized","message":"Invalid credentials"}"#.into()),
            (Answer::ServerError, _) => (503, "<html>unavailable</html>".into()),
            (Answer::Garbage, _) => (200, "{\"status\":".into()),
            (Answer::Transport, _) => {
                self.m.handle_transport_error(id, TransportError::Io("reset".into()), self.now);
                return;
            }
        };
        let mut r = http::Response::new(body.into_bytes());
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        self.m.handle_response(id, &r, self.now);
    }

    fn step(&mut self, ev: &Ev) -> Result<(), TestCaseError> {
        match ev {
            Ev::Query => {
                self.n += 1;
                let op = self.m.submit(
                    Operation::Query(QueryRequest::new(format!("SELECT {}", self.n))),
                    self.now,
                );
                self.ops.insert(op, 0);
            }
            Ev::Token { fresh } => {
                let op = self.m.submit(Operation::Token { fresh: *fresh }, self.now);
                self.ops.insert(op, 0);
            }
            Ev::Me => {
                let op = self.m.submit(Operation::Me, self.now);
                self.ops.insert(op, 0);
            }
            Ev::Answer { pick, answer } => {
                if !self.requests.is_empty() {
                    let i = pick % self.requests.len();
                    self.respond(i, answer);
                }
            }
            Ev::Credentials { pick, creds } => {
                if !self.fetches.is_empty() {
                    let id = self.fetches.remove(pick % self.fetches.len());
                    let c = self.provider(creds);
                    self.m.handle_credentials(id, c, self.now);
                }
            }
            Ev::Advance { secs } => self.now = self.now.advance(Duration::from_secs(*secs)),
            Ev::Timeout => {
                if let Some(t) = self.m.poll_timeout()
                    && t <= self.now.instant
                {
                    self.m.handle_timeout(self.now);
                    let progressed = self.pump()?;
                    let next = self.m.poll_timeout();
                    prop_assert!(
                        progressed || next.is_none_or(|n| n > self.now.instant),
                        "woken with nothing to do, and asks to be woken in the past again"
                    );
                }
            }
            Ev::SetCredentials { creds } => {
                if let Ok(c) = self.provider(creds) {
                    // What is in flight for the old credentials is abandoned.
                    for (id, k, _) in &self.requests {
                        if matches!(k, RequestKind::Login | RequestKind::Refresh) {
                            self.abandoned.insert(id.0);
                        }
                    }
                    self.abandoned.extend(self.fetches.iter().map(|f| f.0));
                    self.m.set_credentials(c, self.now);
                }
            }
            Ev::Stale => {
                self.m.handle_response(
                    RequestId(u64::MAX - self.n),
                    &http::Response::new(Vec::<u8>::new()),
                    self.now,
                );
                self.n += 1;
            }
        }
        self.pump()?;
        Ok(())
    }

    /// Answers everything successfully until nothing is outstanding.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..1000 {
            self.pump()?;
            if !self.requests.is_empty() {
                self.respond(0, &Answer::Ok { ttl: 10_000 });
            } else if let Some(id) = self.fetches.pop() {
                let c = self.provider(&Creds::Token { ttl: 10_000 });
                self.m.handle_credentials(id, c, self.now);
            } else {
                self.pump()?;
                if self.requests.is_empty() && self.fetches.is_empty() {
                    return Ok(());
                }
            }
        }
        Err(TestCaseError::fail("did not settle"))
    }
}

fn initial() -> impl Strategy<Value = (u8, bool, bool)> {
    (0u8..4, any::<bool>(), any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_rules_hold_over_random_histories(
        (start, refresher, provider) in initial(),
        events in prop::collection::vec(event(), 1..60),
    ) {
        let now = Now::new(Instant::ZERO, Duration::from_secs(T0));
        let credentials = match start {
            0 => AuthProvider::basic_auth("root".into(), PASSWORD.into()),
            1 => AuthProvider::jwt_token(token("access", T0 + 5000, 0)),
            2 => AuthProvider::jwt_token(token("access", T0 + 40, 0)),
            _ => AuthProvider::none(),
        };
        let config = AuthConfig { has_refresher: refresher, has_dynamic_provider: provider, ..AuthConfig::default() };
        let mut w = World {
            m: AuthMachine::new(Endpoints::new("http://127.0.0.1:1").unwrap(), credentials, config, now),
            now,
            n: 0,
            requests: Vec::new(),
            fetches: Vec::new(),
            abandoned: BTreeSet::new(),
            ops: BTreeMap::new(),
            sends: BTreeMap::new(),
        };
        w.pump()?;
        for ev in &events {
            w.step(ev)?;
        }
        w.drain()?;
        let pending: BTreeSet<_> = w.ops.iter().filter(|(_, n)| **n != 1).map(|(op, _)| *op).collect();
        prop_assert!(pending.is_empty(), "operations never done: {:?}", pending);
        prop_assert_eq!(w.m.pending_ops(), 0);
    }
}

/// 400 cases by default; `KALAM_PROP_CASES` for a longer hunt.
fn cases() -> u32 {
    std::env::var("KALAM_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}
