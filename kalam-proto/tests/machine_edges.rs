//! One test per edge of the auth lifecycle machine, driven only through its
//! public API with hand-made time and hand-made answers.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use kalam_proto::{
    AuthConfig, AuthMachine, AuthProvider, AuthState, CredentialRequestId, CredentialSource, Endpoints, Error,
    ErrorCode, Instant, Now, OpId, Operation, Output, QueryRequest, Reply, RequestId, RequestKind, TransportError,
};

const T0: u64 = 1_800_000_000;

fn jwt(kind: &str, exp: u64, tag: &str) -> String {
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

fn login_body(access: &str, refresh: &str) -> String {
    format!(
        r#"{{"user":{{"id":"root","role":"system","email":null}},"admin_ui_access":true,"expires_at":"x","access_token":"{access}","refresh_token":"{refresh}","refresh_expires_at":"x"}}"#
    )
}

const OK: &str = r#"{"status":"success","results":[{"schema":[{"name":"x","data_type":"Int","index":0}],"rows":[[1]],"row_count":1,"as_user":"root"}],"took":1.0,"error":null}"#;
const EXPIRED: &str =
    r#"{"error":{"code":"TOKEN_EXPIRED","message":"Invalid credentials"},"results":[],"status":"error","took":0.1}"#;
const INVALID: &str = r#"{"error":{"code":"INVALID_CREDENTIALS","message":"Invalid credentials"},"results":[],"status":"error","took":0.1}"#;
const BAD_LOGIN: &str = r#"{"error":"unauthorized","message":"Invalid credentials"}"#;

struct Sent {
    id: RequestId,
    kind: RequestKind,
    auth: Option<String>,
    body: Vec<u8>,
}

/// A machine, a clock, and what it asked for.
struct H {
    m: AuthMachine,
    now: Now,
    sent: Vec<Sent>,
    fetches: Vec<(CredentialRequestId, CredentialSource)>,
    done: Vec<(OpId, Result<Reply, Error>)>,
}

impl H {
    fn new(auth: AuthProvider, config: AuthConfig) -> H {
        let now = Now::new(Instant::ZERO, Duration::from_secs(T0));
        H {
            m: AuthMachine::new(Endpoints::new("http://127.0.0.1:2900").unwrap(), auth, config, now),
            now,
            sent: Vec::new(),
            fetches: Vec::new(),
            done: Vec::new(),
        }
    }

    fn basic() -> H {
        H::new(
            AuthProvider::basic_auth("root".into(), "pw".into()),
            AuthConfig::default(),
        )
    }

    fn pump(&mut self) {
        while let Some(o) = self.m.poll_output() {
            match o {
                Output::Transmit { id, kind, request } => self.sent.push(Sent {
                    id,
                    kind,
                    auth: request
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned()),
                    body: request.body().clone(),
                }),
                Output::FetchCredentials { id, source } => self.fetches.push((id, source)),
                Output::Done { op, result } => self.done.push((op, result)),
            }
        }
    }

    fn query(&mut self, sql: &str) -> OpId {
        let op = self.m.submit(Operation::Query(QueryRequest::new(sql)), self.now);
        self.pump();
        op
    }

    fn answer(&mut self, id: RequestId, status: u16, body: &str) {
        let mut r = http::Response::new(body.as_bytes().to_vec());
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        self.m.handle_response(id, &r, self.now);
        self.pump();
    }

    fn give(&mut self, id: CredentialRequestId, auth: Result<AuthProvider, Error>) {
        self.m.handle_credentials(id, auth, self.now);
        self.pump();
    }

    fn advance(&mut self, secs: u64) {
        self.now = self.now.advance(Duration::from_secs(secs));
    }

    fn tick(&mut self) {
        self.m.handle_timeout(self.now);
        self.pump();
    }

    fn of(&self, kind: RequestKind) -> Vec<&Sent> {
        self.sent.iter().filter(|s| s.kind == kind).collect()
    }

    fn last(&self) -> &Sent {
        self.sent.last().expect("something sent")
    }

    fn result(&self, op: OpId) -> &Result<Reply, Error> {
        &self
            .done
            .iter()
            .find(|(o, _)| *o == op)
            .unwrap_or_else(|| panic!("{op:?} not done"))
            .1
    }

    fn ok(&self, op: OpId) -> bool {
        matches!(self.result(op), Ok(Reply::Query(_)))
    }

    /// Logs in with a token expiring `ttl` seconds from now.
    fn logged_in(ttl: u64) -> (H, String, String) {
        let mut h = H::basic();
        let op = h.query("SELECT 1");
        let access = jwt("access", T0 + ttl, "a1");
        let refresh = jwt("refresh", T0 + 7 * ttl, "r1");
        let login = h.last().id;
        h.answer(login, 200, &login_body(&access, &refresh));
        let q = h.last().id;
        h.answer(q, 200, OK);
        assert!(h.ok(op));
        (h, access, refresh)
    }
}

#[test]
fn first_query_with_basic_credentials_logs_in_once_then_uses_bearer() {
    let mut h = H::basic();
    assert_eq!(h.m.state(), AuthState::Unauthenticated);
    let op = h.query("SELECT 1");
    assert_eq!(h.m.state(), AuthState::LoggingIn);
    assert_eq!(h.sent.len(), 1);
    let login = &h.sent[0];
    assert_eq!(login.kind, RequestKind::Login);
    assert_eq!(login.auth, None, "no Basic header, ever");
    assert_eq!(login.body, br#"{"user":"root","password":"pw"}"#);
    let access = jwt("access", T0 + 3600, "a");
    h.answer(h.sent[0].id, 200, &login_body(&access, &jwt("refresh", T0 + 7200, "r")));
    assert_eq!(h.m.state(), AuthState::Authenticated);
    let q = h.last();
    assert_eq!(q.kind, RequestKind::Query);
    assert_eq!(q.auth.as_deref(), Some(format!("Bearer {access}").as_str()));
    assert!(!String::from_utf8_lossy(&q.body).contains("pw"));
    let id = q.id;
    h.answer(id, 200, OK);
    assert!(h.ok(op));
}

#[test]
fn concurrent_first_queries_share_one_login() {
    let mut h = H::basic();
    let ops: Vec<OpId> = (0..20).map(|i| h.query(&format!("SELECT {i}"))).collect();
    assert_eq!(h.of(RequestKind::Login).len(), 1);
    assert_eq!(h.of(RequestKind::Query).len(), 0);
    h.answer(
        h.sent[0].id,
        200,
        &login_body(&jwt("access", T0 + 3600, "a"), &jwt("refresh", T0 + 9999, "r")),
    );
    let queries: Vec<RequestId> = h.of(RequestKind::Query).iter().map(|s| s.id).collect();
    assert_eq!(queries.len(), 20);
    for id in queries {
        h.answer(id, 200, OK);
    }
    assert!(ops.iter().all(|op| h.ok(*op)));
    assert_eq!(h.of(RequestKind::Login).len(), 1);
}

#[test]
fn a_static_jwt_is_used_directly() {
    let token = jwt("access", T0 + 3600, "s");
    let mut h = H::new(AuthProvider::jwt_token(token.clone()), AuthConfig::default());
    assert_eq!(h.m.state(), AuthState::Authenticated);
    h.query("SELECT 1");
    assert_eq!(h.sent.len(), 1);
    assert_eq!(h.sent[0].auth.as_deref(), Some(format!("Bearer {token}").as_str()));
}

#[test]
fn a_token_within_the_skew_of_exp_is_never_sent() {
    // Expires in 20 s: inside the default 30 s skew.
    let mut h = H::new(
        AuthProvider::jwt_token(jwt("access", T0 + 20, "s")),
        AuthConfig::default(),
    );
    let op = h.query("SELECT 1");
    assert!(h.sent.is_empty(), "nothing sent");
    assert!(matches!(h.result(op), Err(Error::TokenExpired)));
}

#[test]
fn refresh_ahead_of_expiry_while_the_old_token_serves() {
    let (mut h, access, refresh) = H::logged_in(3600);
    // The timer is set for exp - 60 s.
    let wake = h.m.poll_timeout().unwrap();
    assert_eq!(wake, Instant::from_secs(3600 - 60));
    h.now = Now::new(wake, Duration::from_secs(T0 + 3600 - 60));
    h.tick();
    let r = h.last();
    assert_eq!(r.kind, RequestKind::Refresh);
    assert_eq!(r.auth.as_deref(), Some(format!("Bearer {refresh}").as_str()));
    let refresh_id = r.id;
    assert_eq!(h.m.state(), AuthState::Authenticated, "the old token still serves");
    h.query("SELECT 2");
    assert_eq!(h.last().auth.as_deref(), Some(format!("Bearer {access}").as_str()));
    let access2 = jwt("access", T0 + 7200, "a2");
    h.answer(
        refresh_id,
        200,
        &login_body(&access2, &jwt("refresh", T0 + 99999, "r2")),
    );
    h.query("SELECT 3");
    assert_eq!(h.last().auth.as_deref(), Some(format!("Bearer {access2}").as_str()));
    assert_eq!(h.of(RequestKind::Login).len(), 1);
}

#[test]
fn token_expired_refreshes_and_retries_once() {
    let (mut h, _, refresh) = H::logged_in(3600);
    let op = h.query("SELECT 2");
    let q = h.last().id;
    h.answer(q, 401, EXPIRED);
    assert_eq!(h.m.state(), AuthState::Refreshing);
    let r = h.last();
    assert_eq!(
        (r.kind, r.auth.clone()),
        (RequestKind::Refresh, Some(format!("Bearer {refresh}")))
    );
    let access2 = jwt("access", T0 + 7200, "a2");
    let rid = r.id;
    h.answer(rid, 200, &login_body(&access2, &jwt("refresh", T0 + 99999, "r2")));
    let retry = h.last();
    assert_eq!(retry.kind, RequestKind::Query);
    assert_eq!(retry.auth.as_deref(), Some(format!("Bearer {access2}").as_str()));
    let id = retry.id;
    h.answer(id, 200, OK);
    assert!(h.ok(op));
}

#[test]
fn token_expired_in_a_200_envelope_is_treated_the_same() {
    let (mut h, _, _) = H::logged_in(3600);
    let op = h.query("SELECT 2");
    let q = h.last().id;
    h.answer(q, 200, EXPIRED);
    assert_eq!(h.last().kind, RequestKind::Refresh);
    assert!(!h.done.iter().any(|(o, _)| *o == op), "still waiting for the retry");
}

#[test]
fn token_expired_again_on_the_retry_is_final() {
    let (mut h, _, _) = H::logged_in(3600);
    let op = h.query("SELECT 2");
    let q = h.last().id;
    h.answer(q, 401, EXPIRED);
    let rid = h.last().id;
    h.answer(
        rid,
        200,
        &login_body(&jwt("access", T0 + 7200, "a2"), &jwt("refresh", T0 + 99999, "r2")),
    );
    let retry = h.last().id;
    h.answer(retry, 401, EXPIRED);
    assert!(h.result(op).as_ref().is_err_and(Error::is_token_expired));
    assert_eq!(
        h.of(RequestKind::Query).len(),
        3,
        "first query, the query, one retry; no third"
    );
}

#[test]
fn a_refused_refresh_falls_back_to_refresher_then_provider_then_login() {
    let mut h = H::new(
        AuthProvider::basic_auth("root".into(), "pw".into()),
        AuthConfig {
            has_refresher: true,
            has_dynamic_provider: true,
            ..AuthConfig::default()
        },
    );
    // With no token yet, the provider comes first: it hands basic credentials.
    let op0 = h.query("SELECT 0");
    assert_eq!(h.fetches.len(), 1);
    assert_eq!(h.fetches[0].1, CredentialSource::DynamicProvider);
    let f = h.fetches[0].0;
    h.give(f, Ok(AuthProvider::basic_auth("root".into(), "pw".into())));
    let login = h.last().id;
    h.answer(
        login,
        200,
        &login_body(&jwt("access", T0 + 3600, "a"), &jwt("refresh", T0 + 9999, "r")),
    );
    let q = h.last().id;
    h.answer(q, 200, OK);
    assert!(h.ok(op0));
    // Expired on the server: refresh token → refused → refresher → error →
    // provider → error → stored basic credentials → login.
    let op = h.query("SELECT 1");
    let q = h.last().id;
    h.answer(q, 401, EXPIRED);
    let r = h.last().id;
    assert_eq!(h.last().kind, RequestKind::Refresh);
    h.answer(r, 401, BAD_LOGIN);
    assert_eq!(h.fetches.last().unwrap().1, CredentialSource::Refresher);
    let f = h.fetches.last().unwrap().0;
    h.give(f, Err(Error::msg("refresher down")));
    assert_eq!(h.fetches.last().unwrap().1, CredentialSource::DynamicProvider);
    let f = h.fetches.last().unwrap().0;
    h.give(f, Err(Error::msg("provider down")));
    assert_eq!(h.last().kind, RequestKind::Login);
    let l = h.last().id;
    h.answer(
        l,
        200,
        &login_body(&jwt("access", T0 + 7200, "a2"), &jwt("refresh", T0 + 99999, "r2")),
    );
    let retry = h.last().id;
    h.answer(retry, 200, OK);
    assert!(h.ok(op));
    assert_eq!(h.fetches.len(), 3);
}

#[test]
fn the_refresher_is_called_once_for_many_waiters() {
    let mut h = H::new(
        AuthProvider::jwt_token(jwt("access", T0 + 10, "old")),
        AuthConfig {
            has_refresher: true,
            ..AuthConfig::default()
        },
    );
    let ops: Vec<OpId> = (0..10).map(|i| h.query(&format!("SELECT {i}"))).collect();
    assert_eq!(h.m.state(), AuthState::FetchingCredentials);
    assert_eq!(h.fetches.len(), 1, "single flight");
    assert!(h.sent.is_empty());
    let f = h.fetches[0].0;
    let fresh = jwt("access", T0 + 3600, "new");
    h.give(f, Ok(AuthProvider::jwt_token(fresh.clone())));
    assert_eq!(h.of(RequestKind::Query).len(), 10);
    assert!(
        h.sent
            .iter()
            .all(|s| s.auth.as_deref() == Some(format!("Bearer {fresh}").as_str()))
    );
    let ids: Vec<RequestId> = h.sent.iter().map(|s| s.id).collect();
    for id in ids {
        h.answer(id, 200, OK);
    }
    assert!(ops.iter().all(|o| h.ok(*o)));
}

#[test]
fn the_provider_is_asked_when_there_is_no_token_and_again_after_expiry() {
    let mut h = H::new(
        AuthProvider::none(),
        AuthConfig {
            has_dynamic_provider: true,
            ..AuthConfig::default()
        },
    );
    h.query("SELECT 1");
    assert_eq!(h.fetches.len(), 1);
    let f = h.fetches[0].0;
    h.give(f, Ok(AuthProvider::jwt_token(jwt("access", T0 + 100, "p1"))));
    assert_eq!(h.of(RequestKind::Query).len(), 1);
    // 80 s later the token is inside the skew: asked again.
    h.advance(80);
    h.query("SELECT 2");
    assert_eq!(h.fetches.len(), 2);
    assert_eq!(h.fetches[1].1, CredentialSource::DynamicProvider);
}

#[test]
fn a_provider_error_reaches_every_waiter_typed() {
    let mut h = H::new(
        AuthProvider::none(),
        AuthConfig {
            has_dynamic_provider: true,
            ..AuthConfig::default()
        },
    );
    let ops: Vec<OpId> = (0..3).map(|_| h.query("SELECT 1")).collect();
    let f = h.fetches[0].0;
    h.give(f, Err(Error::msg("vault sealed")));
    for op in ops {
        assert!(matches!(h.result(op), Err(Error::CredentialCallback(e)) if e.to_string() == "vault sealed"));
    }
    assert!(h.sent.is_empty());
}

#[test]
fn a_refused_password_is_final_until_new_credentials() {
    let mut h = H::basic();
    let ops: Vec<OpId> = (0..3).map(|_| h.query("SELECT 1")).collect();
    h.answer(h.sent[0].id, 401, BAD_LOGIN);
    for op in &ops {
        let e = h.result(*op).as_ref().unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::Unauthorized));
    }
    let again = h.query("SELECT 2");
    assert!(h.result(again).is_err());
    assert_eq!(
        h.of(RequestKind::Login).len(),
        1,
        "no second login with the same password"
    );
    h.m.set_credentials(AuthProvider::basic_auth("root".into(), "right".into()), h.now);
    h.pump();
    h.query("SELECT 3");
    assert_eq!(h.of(RequestKind::Login).len(), 2);
}

#[test]
fn an_answer_to_a_forgotten_login_is_ignored() {
    let mut h = H::basic();
    let op = h.query("SELECT 1");
    let old_login = h.sent[0].id;
    let new = jwt("access", T0 + 3600, "new");
    h.m.set_credentials(AuthProvider::jwt_token(new.clone()), h.now);
    h.pump();
    // The waiting query went on with the new token.
    assert_eq!(h.last().kind, RequestKind::Query);
    let q = h.last().id;
    // The old login's answer arrives late: ignored, the token is not replaced.
    h.answer(
        old_login,
        200,
        &login_body(&jwt("access", T0 + 3600, "stale"), &jwt("refresh", T0 + 9, "r")),
    );
    assert_eq!(h.sent.len(), 2);
    h.answer(q, 200, OK);
    assert!(h.ok(op));
    h.query("SELECT 2");
    assert_eq!(h.last().auth.as_deref(), Some(format!("Bearer {new}").as_str()));
}

#[test]
fn unknown_request_ids_are_ignored() {
    let (mut h, _, _) = H::logged_in(3600);
    let before = (h.sent.len(), h.done.len());
    h.answer(RequestId(987_654), 200, OK);
    h.m.handle_transport_error(RequestId(987_655), TransportError::Io("x".into()), h.now);
    h.pump();
    assert_eq!((h.sent.len(), h.done.len()), before);
}

#[test]
fn a_transport_error_on_a_query_is_not_retried() {
    let (mut h, _, _) = H::logged_in(3600);
    let op = h.query("INSERT INTO t VALUES (1)");
    let q = h.last().id;
    h.m.handle_transport_error(q, TransportError::Timeout(Duration::from_secs(30)), h.now);
    h.pump();
    assert!(matches!(
        h.result(op),
        Err(Error::Transport(TransportError::Timeout(_)))
    ));
    assert_eq!(h.of(RequestKind::Query).len(), 2, "the first query and this one, once");
}

#[test]
fn a_refresh_token_given_as_access_token_is_refused() {
    let mut h = H::new(
        AuthProvider::jwt_token(jwt("refresh", T0 + 3600, "r")),
        AuthConfig::default(),
    );
    let op = h.query("SELECT 1");
    assert!(h.sent.is_empty());
    assert!(matches!(h.result(op), Err(Error::RefreshTokenAsAccessToken)));
}

#[test]
fn no_credentials_sends_without_authorization() {
    let mut h = H::new(AuthProvider::none(), AuthConfig::default());
    h.query("SELECT 1");
    assert_eq!(h.sent.len(), 1);
    assert_eq!(h.sent[0].auth, None);
    let me = h.m.submit(Operation::Me, h.now);
    h.pump();
    assert!(matches!(h.result(me), Err(Error::MissingCredentials)));
}

#[test]
fn the_timer_expires_a_token_with_no_way_to_renew_it() {
    let mut h = H::new(
        AuthProvider::jwt_token(jwt("access", T0 + 100, "s")),
        AuthConfig::default(),
    );
    // Expired by the client's rule at exp - 30 s.
    assert_eq!(h.m.poll_timeout(), Some(Instant::from_secs(70)));
    h.now = Now::new(Instant::from_secs(70), Duration::from_secs(T0 + 70));
    h.tick();
    assert_eq!(h.m.state(), AuthState::Expired);
    assert_eq!(h.m.poll_timeout(), None, "nothing more to wake for");
    let op = h.query("SELECT 1");
    assert!(matches!(h.result(op), Err(Error::TokenExpired)));
    assert!(h.sent.is_empty());
}

#[test]
fn an_opaque_token_is_sent_and_judged_by_the_server() {
    let mut h = H::new(AuthProvider::jwt_token("not-a-jwt".into()), AuthConfig::default());
    assert_eq!(h.m.poll_timeout(), None, "no exp, no timer");
    let op = h.query("SELECT 1");
    let q = h.last().id;
    h.answer(q, 401, INVALID);
    assert!(h.result(op).as_ref().is_err_and(Error::is_credentials_rejected));
    // Refused credentials the application gave are final: nothing is sent.
    let again = h.query("SELECT 2");
    assert!(h.result(again).as_ref().is_err_and(Error::is_credentials_rejected));
    assert_eq!(h.sent.len(), 1);
}

#[test]
fn garbage_answers_are_typed_errors() {
    let (mut h, _, _) = H::logged_in(3600);
    for (status, body) in [
        (200, "not json"),
        (200, r#"{"status":"success","results":[{"rows":[["#),
        (502, "<html>Bad Gateway</html>"),
        (500, ""),
        (200, "[]"),
    ] {
        let op = h.query("SELECT 1");
        let q = h.last().id;
        h.answer(q, status, body);
        match h.result(op) {
            Err(Error::Decode(_)) => assert_eq!(status, 200),
            Err(Error::Server(s)) => assert_eq!(s.status, status),
            other => panic!("{status} {body:?}: {other:?}"),
        }
    }
    assert_eq!(h.m.state(), AuthState::Authenticated, "garbage does not cost the token");
}

#[test]
fn explicit_login_and_refresh_change_nothing() {
    let (mut h, access, _) = H::logged_in(3600);
    let op = h.m.submit(
        Operation::Login {
            user: "alice".into(),
            password: kalam_proto::Secret::new("x"),
        },
        h.now,
    );
    h.pump();
    let id = h.last().id;
    h.answer(
        id,
        200,
        &login_body(&jwt("access", T0 + 3600, "alice"), &jwt("refresh", T0 + 9999, "ra")),
    );
    assert!(matches!(h.result(op), Ok(Reply::Login(_))));
    h.query("SELECT 1");
    assert_eq!(
        h.last().auth.as_deref(),
        Some(format!("Bearer {access}").as_str()),
        "still root's token"
    );
}

#[test]
fn a_token_about_to_expire_is_refreshed_before_it_is_handed_out() {
    let (mut h, old, _) = H::logged_in(100);
    // 75 s later the token is inside the 30 s skew.
    h.advance(75);
    let op = h.m.submit(Operation::Token { fresh: false }, h.now);
    h.pump();
    assert!(!h.done.iter().any(|(o, _)| *o == op), "not handed out");
    assert_eq!(h.last().kind, RequestKind::Refresh);
    let new = jwt("access", T0 + 75 + 3600, "fresh");
    let rid = h.last().id;
    h.answer(rid, 200, &login_body(&new, &jwt("refresh", T0 + 99_999, "r2")));
    match h.result(op) {
        Ok(Reply::Token(t)) => {
            assert_eq!(t.expose(), new);
            assert_ne!(t.expose(), old);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_fresh_token_request_asks_the_provider_again() {
    let mut h = H::new(
        AuthProvider::none(),
        AuthConfig {
            has_dynamic_provider: true,
            ..AuthConfig::default()
        },
    );
    let first = h.m.submit(Operation::Token { fresh: false }, h.now);
    h.pump();
    let f = h.fetches[0].0;
    h.give(f, Ok(AuthProvider::jwt_token(jwt("access", T0 + 3600, "p1"))));
    assert!(matches!(h.result(first), Ok(Reply::Token(_))));
    // A cached token would do, but a reconnect asks for fresh credentials.
    let again = h.m.submit(Operation::Token { fresh: true }, h.now);
    h.pump();
    assert_eq!(h.fetches.len(), 2, "the provider is asked again");
    let f = h.fetches[1].0;
    let p2 = jwt("access", T0 + 3600, "p2");
    h.give(f, Ok(AuthProvider::jwt_token(p2.clone())));
    assert!(matches!(h.result(again), Ok(Reply::Token(t)) if t.expose() == p2));
}

#[test]
fn a_query_answer_decoded_elsewhere_is_handled_like_the_raw_one() {
    let (mut h, _, _) = H::logged_in(3600);
    // Success.
    let op = h.query("SELECT 2");
    let q = h.last().id;
    let decoded = kalam_proto::framing::decode_query(http::StatusCode::OK, &http::HeaderMap::new(), OK.as_bytes());
    h.m.handle_query_answer(q, decoded, h.now);
    h.pump();
    assert!(h.ok(op));
    // TOKEN_EXPIRED decoded elsewhere still triggers the refresh and one retry.
    let op = h.query("SELECT 3");
    let q = h.last().id;
    let decoded = kalam_proto::framing::decode_query(
        http::StatusCode::UNAUTHORIZED,
        &http::HeaderMap::new(),
        EXPIRED.as_bytes(),
    );
    h.m.handle_query_answer(q, decoded, h.now);
    h.pump();
    assert_eq!(h.last().kind, RequestKind::Refresh);
    assert!(!h.done.iter().any(|(o, _)| *o == op));
    // Not a query it waits for: ignored (a login's id, an unknown id).
    let refresh = h.last().id;
    let before = h.done.len();
    h.m.handle_query_answer(refresh, Err(Error::TokenExpired), h.now);
    h.m.handle_query_answer(RequestId(424_242), Err(Error::TokenExpired), h.now);
    h.pump();
    assert_eq!(h.done.len(), before);
    assert_eq!(h.last().id, refresh, "the refresh is still awaited");
}
