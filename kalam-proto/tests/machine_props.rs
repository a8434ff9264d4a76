//! Property tests of the auth lifecycle over random event sequences, driven
//! through the client core with the shared pump. After every step:
//!
//! - single flight: at most one login, refresh or credential call of the
//!   machine's own is outstanding (one the application abandoned with
//!   `set_credentials` does not count, but its late answer must change
//!   nothing);
//! - no query or `/auth/me` request carries a token the server refuses: at
//!   most 50 s past its `exp` (the server's leeway is 60 s; a token is used
//!   past `exp - 30 s` only when it arrived already that close to expiry);
//! - no Basic header anywhere, and the password only in a login body;
//! - no query goes out more than twice, no operation is done twice (the
//!   pump checks that every waiter is answered at most once);
//! - the timer never asks to be woken in the past without progress (the
//!   pump checks it whenever it handles a timeout).
//!
//! The core also gives up on a credential call at its deadline; such a call
//! no longer counts as outstanding, and its late answer must change nothing.
//!
//! At the end everything outstanding is answered successfully, and every
//! operation must then be done exactly once.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kalam_proto::{AuthProvider, CredentialRequestId, Error, Operation, RequestId, RequestKind, TransportError};
use proptest::prelude::*;
use support::{Pump, T0, config, login_body};

const PASSWORD: &str = "s3cret-P4ss";

fn token(kind: &str, exp: u64, n: u64) -> String {
    support::jwt(kind, exp, &n.to_string())
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
    p: Pump,
    n: u64,
    /// Recovery requests and credential calls in flight when the
    /// application replaced the credentials.
    abandoned: BTreeSet<RequestId>,
    abandoned_fetches: BTreeSet<CredentialRequestId>,
    /// Requests already checked.
    checked: usize,
    sends: BTreeMap<Vec<u8>, usize>,
}

impl World {
    fn provider(&mut self, c: &Creds) -> Result<AuthProvider, Error> {
        self.n += 1;
        let now = self.p.now.unix_secs();
        match c {
            Creds::Token { ttl } => Ok(AuthProvider::jwt_token(token("access", now + ttl, self.n))),
            Creds::Basic => Ok(AuthProvider::basic_auth("root".into(), PASSWORD.into())),
            Creds::Fails => Err(Error::msg("callback failed")),
            Creds::Expired => Ok(AuthProvider::jwt_token(token(
                "access",
                now.saturating_sub(100),
                self.n,
            ))),
            Creds::Nothing => Ok(AuthProvider::none()),
        }
    }

    /// Checks the requests sent since the last check, and single flight.
    fn check(&mut self) -> Result<(), TestCaseError> {
        for s in &self.p.http[self.checked..] {
            let auth = s.auth.as_deref();
            let body = String::from_utf8_lossy(&s.body);
            prop_assert!(
                auth.is_none_or(|a| a.starts_with("Bearer ")),
                "non-Bearer header {auth:?}"
            );
            prop_assert!(
                s.kind == RequestKind::Login || !body.contains(PASSWORD),
                "password outside login"
            );
            prop_assert!(auth.is_none_or(|a| !a.contains(PASSWORD)));
            if matches!(s.kind, RequestKind::Query | RequestKind::Me)
                && let Some(a) = auth
                && let Ok(c) = kalam_proto::jwt::inspect(&a["Bearer ".len()..])
            {
                prop_assert!(
                    c.exp.is_none_or(|exp| s.at.unix_secs() < exp + 50),
                    "sent a token the server refuses"
                );
            }
            if s.kind == RequestKind::Query {
                let n = self.sends.entry(s.body.clone()).or_default();
                *n += 1;
                prop_assert!(*n <= 2, "a query sent {} times", n);
            }
        }
        self.checked = self.p.http.len();
        let recovery = self
            .p
            .http
            .iter()
            .filter(|s| {
                !s.answered
                    && matches!(s.kind, RequestKind::Login | RequestKind::Refresh)
                    && !self.abandoned.contains(&s.id)
            })
            .count();
        let fetches = self
            .p
            .pending_fetches()
            .filter(|f| !self.abandoned_fetches.contains(&f.id))
            .count();
        prop_assert!(
            recovery + fetches <= 1,
            "{recovery} recovery requests and {fetches} fetches"
        );
        Ok(())
    }

    /// Requests not answered yet, oldest first.
    fn outstanding(&self) -> Vec<(RequestId, RequestKind)> {
        self.p
            .http
            .iter()
            .filter(|s| !s.answered)
            .map(|s| (s.id, s.kind))
            .collect()
    }

    /// Credential calls not answered yet (the core may have given up on
    /// them: the application's callback still runs), oldest first.
    fn unanswered_fetches(&self) -> Vec<CredentialRequestId> {
        self.p.fetch_log.iter().filter(|f| !f.answered).map(|f| f.id).collect()
    }

    fn respond(&mut self, (id, kind): (RequestId, RequestKind), a: &Answer) {
        self.n += 1;
        let now = self.p.now.unix_secs();
        let (status, body) = match (a, kind) {
            (Answer::Ok { ttl }, RequestKind::Login | RequestKind::Refresh) => (
                200,
                login_body(
                    &token("access", now + ttl, self.n),
                    &token("refresh", now + 7 * ttl, self.n),
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
                self.p.fail(id, TransportError::Io("reset".into()));
                return;
            }
        };
        self.p.answer(id, status, &body);
    }

    fn step(&mut self, ev: &Ev) -> Result<(), TestCaseError> {
        match ev {
            Ev::Query => {
                self.n += 1;
                self.p.query(&format!("SELECT {}", self.n));
            }
            Ev::Token { fresh } => {
                self.p.submit(Operation::Token { fresh: *fresh });
            }
            Ev::Me => {
                self.p.submit(Operation::Me);
            }
            Ev::Answer { pick, answer } => {
                let open = self.outstanding();
                if !open.is_empty() {
                    self.respond(open[pick % open.len()], answer);
                }
            }
            Ev::Credentials { pick, creds } => {
                let open = self.unanswered_fetches();
                if !open.is_empty() {
                    let id = open[pick % open.len()];
                    let c = self.provider(creds);
                    self.p.credentials(id, c);
                }
            }
            Ev::Advance { secs } => self.p.advance(Duration::from_secs(*secs)),
            Ev::Timeout => {
                self.p.tick();
            }
            Ev::SetCredentials { creds } => {
                if let Ok(c) = self.provider(creds) {
                    // What is in flight for the old credentials is abandoned.
                    for (id, k) in self.outstanding() {
                        if matches!(k, RequestKind::Login | RequestKind::Refresh) {
                            self.abandoned.insert(id);
                        }
                    }
                    self.abandoned_fetches.extend(self.unanswered_fetches());
                    self.p.set_credentials(c);
                }
            }
            Ev::Stale => {
                self.p.answer(RequestId(u64::MAX - self.n), 200, "");
                self.n += 1;
            }
        }
        self.check()
    }

    /// Answers everything successfully until nothing is outstanding; with
    /// operations still waiting (a back-off), runs the timer.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..1000 {
            self.check()?;
            if let Some(&first) = self.outstanding().first() {
                self.respond(first, &Answer::Ok { ttl: 10_000 });
            } else if let Some(&id) = self.unanswered_fetches().last() {
                let c = self.provider(&Creds::Token { ttl: 10_000 });
                self.p.credentials(id, c);
            } else if !self.p.unanswered().is_empty()
                && let Some(at) = self.p.core.poll_timeout()
            {
                let ms = at.saturating_duration_since(kalam_proto::Instant::ZERO).as_millis() as u64;
                self.p.run_until(ms);
            } else {
                return self.check();
            }
        }
        Err(TestCaseError::fail("did not settle"))
    }
}

fn initial() -> impl Strategy<Value = (u8, bool, bool)> {
    (0u8..4, any::<bool>(), any::<bool>())
}

/// One history: these starting credentials (0: a password, 1: a token, 2:
/// a token about to expire, 3: none) and callbacks, then the events, then
/// everything outstanding answered successfully.
fn run(start: u8, refresher: bool, provider: bool, events: &[Ev]) -> Result<(), TestCaseError> {
    let credentials = match start {
        0 => AuthProvider::basic_auth("root".into(), PASSWORD.into()),
        1 => AuthProvider::jwt_token(token("access", T0 + 5000, 0)),
        2 => AuthProvider::jwt_token(token("access", T0 + 40, 0)),
        _ => AuthProvider::none(),
    };
    let config = config().with_refresher(refresher).with_dynamic_provider(provider);
    let mut w = World {
        p: Pump::new(credentials, config),
        n: 0,
        abandoned: BTreeSet::new(),
        abandoned_fetches: BTreeSet::new(),
        checked: 0,
        sends: BTreeMap::new(),
    };
    w.check()?;
    for ev in events {
        w.step(ev)?;
    }
    w.drain()?;
    // Every operation done exactly once (never twice: the pump checks).
    let pending = w.p.unanswered();
    prop_assert!(pending.is_empty(), "operations never done: {:?}", pending);
    prop_assert_eq!(w.p.core.auth().pending_ops(), 0);
    prop_assert_eq!(w.p.core.pending_waiters(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_rules_hold_over_random_histories(
        (start, refresher, provider) in initial(),
        events in prop::collection::vec(event(), 1..60),
    ) {
        run(start, refresher, provider, &events)?;
    }
}

/// The history that failed when the machine was driven directly (see
/// `machine_props.proptest-regressions`), kept as it was.
#[test]
fn past_failures_hold() {
    let events = [Ev::Query, Ev::SetCredentials { creds: Creds::Expired }];
    if let Err(e) = run(0, true, false, &events) {
        panic!("{e}");
    }
}

/// 400 cases by default; `KALAM_PROP_CASES` for a longer hunt.
fn cases() -> u32 {
    #[allow(clippy::disallowed_methods)] // a test knob, not the library
    std::env::var("KALAM_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}
