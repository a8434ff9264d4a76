//! One test per edge of the auth lifecycle, driven through the client core
//! with the shared pump: hand-made time and hand-made answers. Where the
//! core adds nothing of its own (the auth machine's state), it is read with
//! `pump.core.auth()`.

mod support;

use std::time::Duration;

use kalam_proto::{
    AuthProvider, AuthState, CredentialSource, Decoded, Error, ErrorCode, Instant, Operation, Reply, RequestId,
    RequestKind, TransportError,
};
use support::{BAD_LOGIN, EXPIRED, INVALID, OK, Pump, T0, W, config, jwt};

/// Logs in with a token expiring `ttl` seconds from now.
fn logged_in(ttl: u64) -> (Pump, String, String) {
    let mut p = Pump::basic();
    let w = p.query("SELECT 1");
    let access = jwt("access", T0 + ttl, "a1");
    let refresh = jwt("refresh", T0 + 7 * ttl, "r1");
    let login = p.last_http().id;
    p.answer_login(login, &access, &refresh);
    let q = p.last_http().id;
    p.answer(q, 200, OK);
    assert!(p.query_ok(w));
    (p, access, refresh)
}

fn state(p: &Pump) -> AuthState {
    p.core.auth().state()
}

#[test]
fn first_query_with_basic_credentials_logs_in_once_then_uses_bearer() {
    let mut p = Pump::basic();
    assert_eq!(state(&p), AuthState::Unauthenticated);
    let w = p.query("SELECT 1");
    assert_eq!(state(&p), AuthState::LoggingIn);
    assert_eq!(p.http.len(), 1);
    let login = &p.http[0];
    assert_eq!(login.kind, RequestKind::Login);
    assert_eq!(login.auth, None, "no Basic header, ever");
    assert_eq!(login.body, br#"{"user":"root","password":"pw"}"#);
    let access = jwt("access", T0 + 3600, "a");
    p.answer_login(p.http[0].id, &access, &jwt("refresh", T0 + 7200, "r"));
    assert_eq!(state(&p), AuthState::Authenticated);
    let q = p.last_http();
    assert_eq!(q.kind, RequestKind::Query);
    assert_eq!(q.auth.as_deref(), Some(format!("Bearer {access}").as_str()));
    assert!(!String::from_utf8_lossy(&q.body).contains("pw"));
    let id = q.id;
    p.answer(id, 200, OK);
    assert!(p.query_ok(w));
}

#[test]
fn concurrent_first_queries_share_one_login() {
    let mut p = Pump::basic();
    let ws: Vec<W> = (0..20).map(|i| p.query(&format!("SELECT {i}"))).collect();
    assert_eq!(p.sent_of(RequestKind::Login).len(), 1);
    assert_eq!(p.sent_of(RequestKind::Query).len(), 0);
    p.answer_login(
        p.http[0].id,
        &jwt("access", T0 + 3600, "a"),
        &jwt("refresh", T0 + 9999, "r"),
    );
    let queries: Vec<RequestId> = p.sent_of(RequestKind::Query).iter().map(|s| s.id).collect();
    assert_eq!(queries.len(), 20);
    for id in queries {
        p.answer(id, 200, OK);
    }
    assert!(ws.iter().all(|w| p.query_ok(*w)));
    assert_eq!(p.sent_of(RequestKind::Login).len(), 1);
}

#[test]
fn a_static_jwt_is_used_directly() {
    let token = jwt("access", T0 + 3600, "s");
    let mut p = Pump::new(AuthProvider::jwt_token(token.clone()), config());
    assert_eq!(state(&p), AuthState::Authenticated);
    p.query("SELECT 1");
    assert_eq!(p.http.len(), 1);
    assert_eq!(p.http[0].auth.as_deref(), Some(format!("Bearer {token}").as_str()));
}

#[test]
fn a_token_that_arrives_within_the_skew_is_used_while_the_server_takes_it() {
    // Expires in 20 s: inside the default 30 s skew already when given. The
    // server takes it until 60 s past exp; the client uses it until 50 s past.
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 20, "s")), config());
    let w = p.query("SELECT 1");
    let q = p.last_http().id;
    p.answer(q, 200, OK);
    assert!(p.query_ok(w));
    assert_eq!(p.core.poll_timeout(), Some(Instant::from_secs(70)));
    p.run_until(70_000);
    let late = p.query("SELECT 2");
    assert_eq!(p.http.len(), 1, "not sent past the server's leeway");
    assert!(matches!(p.reply(late), Err(Error::TokenExpired)));
}

#[test]
fn a_token_that_was_fresh_on_arrival_is_never_sent_within_the_skew() {
    // 100 s left on arrival (at least twice the skew): unusable from exp - 30 s.
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 100, "s")), config());
    p.query("SELECT 1");
    p.answer_next(200, OK); // its Date tells the server's time
    p.run_until(70_000);
    let w = p.query("SELECT 2");
    assert_eq!(p.http.len(), 1, "nothing more sent");
    assert!(matches!(p.reply(w), Err(Error::TokenExpired)));
}

#[test]
fn a_token_barely_longer_than_the_skew_is_not_cut_short() {
    // 40 s left on arrival: were it dropped 30 s before exp, it would serve
    // 10 s and a client with a password would log in every 10 s. It is
    // used while the server takes it (up to 50 s past exp).
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 40, "s")), config());
    p.query("SELECT 1");
    p.answer_next(200, OK);
    p.run_until(85_000);
    let w = p.query("SELECT 2");
    assert_eq!(p.sent_of(RequestKind::Query).len(), 2, "still used 45 s past exp");
    p.answer_next(200, OK);
    assert!(p.query_ok(w));
    p.run_until(90_000);
    let late = p.query("SELECT 3");
    assert_eq!(p.http.len(), 2, "not past exp + 50 s");
    assert!(matches!(p.reply(late), Err(Error::TokenExpired)));
}

#[test]
fn before_the_server_time_is_known_the_local_clock_does_not_condemn_a_token() {
    // The client's clock runs 25 h ahead. The configured token is valid on
    // the server's clock but long expired on ours: one tokenless probe
    // (any answer carries the server's Date) and the token is used.
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 3600, "s")), config());
    p.server_offset = -25 * 3600;
    p.advance(Duration::from_secs(25 * 3600)); // the local clock, not the server's
    p.run_until(25 * 3600 * 1000 + 5_000); // timers fire: the token is not dropped
    assert_eq!(state(&p), AuthState::Authenticated);
    let ws: Vec<W> = (0..3).map(|i| p.query(&format!("SELECT {i}"))).collect();
    assert_eq!(p.http.len(), 1, "the probe alone");
    assert_eq!(p.answer_next(403, r#"{"error":"localhost only"}"#), RequestKind::Health);
    assert_eq!(p.sent_of(RequestKind::Query).len(), 3, "then the token is used");
    for _ in 0..3 {
        p.answer_next(200, OK);
    }
    assert!(ws.iter().all(|w| p.query_ok(*w)));
    // The probe is made once: later queries go straight out.
    let w = p.query("SELECT 4");
    assert_eq!(p.http.len(), 5);
    p.answer_next(200, OK);
    assert!(p.query_ok(w));
}

#[test]
fn the_probe_confirms_a_truly_expired_token_and_nothing_is_sent_with_it() {
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 - 120, "old")), config());
    let w = p.query("SELECT 1");
    assert_eq!(p.answer_next(403, r#"{"error":"localhost only"}"#), RequestKind::Health);
    assert!(matches!(p.reply(w), Err(Error::TokenExpired)));
    assert_eq!(p.http.len(), 1, "only the probe");
    // A probe that gets no answer at all leaves the local clock to judge.
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 - 120, "old")), config());
    let w = p.query("SELECT 1");
    let probe = p.last_http().id;
    p.fail(probe, TransportError::Connect("refused".into()));
    assert!(matches!(p.reply(w), Err(Error::TokenExpired)));
    let w = p.query("SELECT 2");
    assert_eq!(p.http.len(), 1, "never probed twice");
    assert!(matches!(p.reply(w), Err(Error::TokenExpired)));
}

#[test]
fn refresh_ahead_of_expiry_while_the_old_token_serves() {
    let (mut p, access, refresh) = logged_in(3600);
    // The timer is set for exp - 60 s.
    let wake = p.core.poll_timeout().unwrap();
    assert_eq!(wake, Instant::from_secs(3600 - 60));
    p.run_until(wake.as_duration().as_millis() as u64);
    let r = p.last_http();
    assert_eq!(r.kind, RequestKind::Refresh);
    assert_eq!(r.auth.as_deref(), Some(format!("Bearer {refresh}").as_str()));
    let refresh_id = r.id;
    assert_eq!(state(&p), AuthState::Authenticated, "the old token still serves");
    p.query("SELECT 2");
    assert_eq!(p.last_http().auth.as_deref(), Some(format!("Bearer {access}").as_str()));
    let access2 = jwt("access", T0 + 7200, "a2");
    p.answer_login(refresh_id, &access2, &jwt("refresh", T0 + 99999, "r2"));
    p.query("SELECT 3");
    assert_eq!(
        p.last_http().auth.as_deref(),
        Some(format!("Bearer {access2}").as_str())
    );
    assert_eq!(p.sent_of(RequestKind::Login).len(), 1);
}

#[test]
fn token_expired_refreshes_and_retries_once() {
    let (mut p, _, refresh) = logged_in(3600);
    let w = p.query("SELECT 2");
    let q = p.last_http().id;
    p.answer(q, 401, EXPIRED);
    assert_eq!(state(&p), AuthState::Refreshing);
    let r = p.last_http();
    assert_eq!(
        (r.kind, r.auth.clone()),
        (RequestKind::Refresh, Some(format!("Bearer {refresh}")))
    );
    let access2 = jwt("access", T0 + 7200, "a2");
    let rid = r.id;
    p.answer_login(rid, &access2, &jwt("refresh", T0 + 99999, "r2"));
    let retry = p.last_http();
    assert_eq!(retry.kind, RequestKind::Query);
    assert_eq!(retry.auth.as_deref(), Some(format!("Bearer {access2}").as_str()));
    let id = retry.id;
    p.answer(id, 200, OK);
    assert!(p.query_ok(w));
}

#[test]
fn token_expired_in_a_200_envelope_is_treated_the_same() {
    let (mut p, _, _) = logged_in(3600);
    let w = p.query("SELECT 2");
    let q = p.last_http().id;
    p.answer(q, 200, EXPIRED);
    assert_eq!(p.last_http().kind, RequestKind::Refresh);
    assert!(p.result(w).is_none(), "still waiting for the retry");
}

#[test]
fn token_expired_again_on_the_retry_is_final() {
    let (mut p, _, _) = logged_in(3600);
    let w = p.query("SELECT 2");
    let q = p.last_http().id;
    p.answer(q, 401, EXPIRED);
    let rid = p.last_http().id;
    p.answer_login(rid, &jwt("access", T0 + 7200, "a2"), &jwt("refresh", T0 + 99999, "r2"));
    let retry = p.last_http().id;
    p.answer(retry, 401, EXPIRED);
    assert!(p.reply(w).is_err_and(Error::is_token_expired));
    assert_eq!(
        p.sent_of(RequestKind::Query).len(),
        3,
        "first query, the query, one retry; no third"
    );
}

#[test]
fn a_refused_refresh_falls_back_to_refresher_then_provider_then_login() {
    let mut p = Pump::new(
        AuthProvider::basic_auth("root".into(), "pw".into()),
        config().with_refresher(true).with_dynamic_provider(true),
    );
    // With no token yet, the provider comes first: it hands basic credentials.
    let w0 = p.query("SELECT 0");
    assert_eq!(p.fetches.len(), 1);
    assert_eq!(p.fetches[0].1, CredentialSource::DynamicProvider);
    p.answer_fetch(Ok(AuthProvider::basic_auth("root".into(), "pw".into())));
    let login = p.last_http().id;
    p.answer_login(login, &jwt("access", T0 + 3600, "a"), &jwt("refresh", T0 + 9999, "r"));
    let q = p.last_http().id;
    p.answer(q, 200, OK);
    assert!(p.query_ok(w0));
    // Expired on the server: refresh token → refused → refresher → error →
    // provider → error → stored basic credentials → login.
    let w = p.query("SELECT 1");
    let q = p.last_http().id;
    p.answer(q, 401, EXPIRED);
    let r = p.last_http().id;
    assert_eq!(p.last_http().kind, RequestKind::Refresh);
    p.answer(r, 401, BAD_LOGIN);
    assert_eq!(p.fetches.last().unwrap().1, CredentialSource::Refresher);
    p.answer_fetch(Err(Error::msg("refresher down")));
    assert_eq!(p.fetches.last().unwrap().1, CredentialSource::DynamicProvider);
    p.answer_fetch(Err(Error::msg("provider down")));
    assert_eq!(p.last_http().kind, RequestKind::Login);
    let l = p.last_http().id;
    p.answer_login(l, &jwt("access", T0 + 7200, "a2"), &jwt("refresh", T0 + 99999, "r2"));
    let retry = p.last_http().id;
    p.answer(retry, 200, OK);
    assert!(p.query_ok(w));
    assert_eq!(p.fetches.len(), 3);
}

#[test]
fn the_refresher_is_called_once_for_many_waiters() {
    let mut p = Pump::new(
        AuthProvider::jwt_token(jwt("access", T0 - 120, "old")),
        config().with_refresher(true),
    );
    let ws: Vec<W> = (0..10).map(|i| p.query(&format!("SELECT {i}"))).collect();
    assert_eq!(p.answer_next(403, "{}"), RequestKind::Health, "the clock probe first");
    assert_eq!(state(&p), AuthState::FetchingCredentials);
    assert_eq!(p.fetches.len(), 1, "single flight");
    p.http.clear();
    let fresh = jwt("access", T0 + 3600, "new");
    p.answer_fetch(Ok(AuthProvider::jwt_token(fresh.clone())));
    assert_eq!(p.sent_of(RequestKind::Query).len(), 10);
    assert!(
        p.http
            .iter()
            .all(|s| s.auth.as_deref() == Some(format!("Bearer {fresh}").as_str()))
    );
    let ids: Vec<RequestId> = p.http.iter().map(|s| s.id).collect();
    for id in ids {
        p.answer(id, 200, OK);
    }
    assert!(ws.iter().all(|w| p.query_ok(*w)));
}

#[test]
fn the_provider_is_asked_when_there_is_no_token_and_again_after_expiry() {
    let mut p = Pump::new(AuthProvider::none(), config().with_dynamic_provider(true));
    p.query("SELECT 1");
    assert_eq!(p.fetches.len(), 1);
    p.answer_fetch(Ok(AuthProvider::jwt_token(jwt("access", T0 + 100, "p1"))));
    assert_eq!(p.sent_of(RequestKind::Query).len(), 1);
    p.answer_next(200, OK);
    // 80 s later the token is inside the skew: asked again.
    p.advance(Duration::from_secs(80));
    p.query("SELECT 2");
    assert_eq!(p.fetches.len(), 2);
    assert_eq!(p.fetches[1].1, CredentialSource::DynamicProvider);
}

#[test]
fn a_provider_error_reaches_every_waiter_typed() {
    let mut p = Pump::new(AuthProvider::none(), config().with_dynamic_provider(true));
    let ws: Vec<W> = (0..3).map(|_| p.query("SELECT 1")).collect();
    p.answer_fetch(Err(Error::msg("vault sealed")));
    for w in ws {
        assert!(matches!(p.reply(w), Err(Error::CredentialCallback(e)) if e.to_string() == "vault sealed"));
    }
    assert!(p.http.is_empty());
}

#[test]
fn a_refused_password_is_final_until_new_credentials() {
    let mut p = Pump::basic();
    let ws: Vec<W> = (0..3).map(|_| p.query("SELECT 1")).collect();
    p.answer(p.http[0].id, 401, BAD_LOGIN);
    for w in &ws {
        let e = p.reply(*w).unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::Unauthorized));
    }
    let again = p.query("SELECT 2");
    assert!(p.reply(again).is_err());
    assert_eq!(
        p.sent_of(RequestKind::Login).len(),
        1,
        "no second login with the same password"
    );
    p.set_credentials(AuthProvider::basic_auth("root".into(), "right".into()));
    p.query("SELECT 3");
    assert_eq!(p.sent_of(RequestKind::Login).len(), 2);
}

#[test]
fn an_answer_to_a_forgotten_login_is_ignored() {
    let mut p = Pump::basic();
    let w = p.query("SELECT 1");
    let old_login = p.http[0].id;
    let new = jwt("access", T0 + 3600, "new");
    p.set_credentials(AuthProvider::jwt_token(new.clone()));
    // The waiting query went on with the new token.
    assert_eq!(p.last_http().kind, RequestKind::Query);
    let q = p.last_http().id;
    // The old login's answer arrives late: ignored, the token is not replaced.
    p.answer_login(
        old_login,
        &jwt("access", T0 + 3600, "stale"),
        &jwt("refresh", T0 + 9, "r"),
    );
    assert_eq!(p.http.len(), 2);
    p.answer(q, 200, OK);
    assert!(p.query_ok(w));
    p.query("SELECT 2");
    assert_eq!(p.last_http().auth.as_deref(), Some(format!("Bearer {new}").as_str()));
}

#[test]
fn unknown_request_ids_are_ignored() {
    let (mut p, _, _) = logged_in(3600);
    let before = (p.http.len(), p.completed.len(), p.outputs);
    p.answer(RequestId(987_654), 200, OK);
    p.fail(RequestId(987_655), TransportError::Io("x".into()));
    assert_eq!((p.http.len(), p.completed.len(), p.outputs), before);
}

#[test]
fn a_transport_error_on_a_query_is_not_retried() {
    let (mut p, _, _) = logged_in(3600);
    let w = p.query("INSERT INTO t VALUES (1)");
    let q = p.last_http().id;
    p.fail(q, TransportError::Timeout(Duration::from_secs(30)));
    assert!(matches!(p.reply(w), Err(Error::Transport(TransportError::Timeout(_)))));
    assert_eq!(
        p.sent_of(RequestKind::Query).len(),
        2,
        "the first query and this one, once"
    );
}

#[test]
fn a_refresh_token_given_as_access_token_is_refused() {
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("refresh", T0 + 3600, "r")), config());
    let w = p.query("SELECT 1");
    assert!(p.http.is_empty());
    assert!(matches!(p.reply(w), Err(Error::RefreshTokenAsAccessToken)));
}

#[test]
fn no_credentials_sends_without_authorization() {
    let mut p = Pump::new(AuthProvider::none(), config());
    p.query("SELECT 1");
    assert_eq!(p.http.len(), 1);
    assert_eq!(p.http[0].auth, None);
    let me = p.submit(Operation::Me);
    assert!(matches!(p.reply(me), Err(Error::MissingCredentials)));
}

#[test]
fn the_timer_expires_a_token_with_no_way_to_renew_it() {
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 100, "s")), config());
    // Expired by the client's rule at exp - 30 s. The server's time is not
    // known yet: the timer asks it first (one tokenless request), and its
    // answer settles it.
    assert_eq!(p.core.poll_timeout(), Some(Instant::from_secs(70)));
    p.run_until(70_000);
    assert_eq!(
        state(&p),
        AuthState::Authenticated,
        "not on the local clock's word alone"
    );
    assert_eq!(p.core.poll_timeout(), None, "the probe's answer wakes it");
    assert_eq!(p.answer_next(403, "{}"), RequestKind::Health);
    p.http.clear();
    assert_eq!(state(&p), AuthState::Expired);
    assert_eq!(p.core.poll_timeout(), None, "nothing more to wake for");
    let w = p.query("SELECT 1");
    assert!(matches!(p.reply(w), Err(Error::TokenExpired)));
    assert!(p.http.is_empty());
}

#[test]
fn an_opaque_token_is_sent_and_judged_by_the_server() {
    let mut p = Pump::new(AuthProvider::jwt_token("not-a-jwt".into()), config());
    assert_eq!(p.core.poll_timeout(), None, "no exp, no timer");
    let w = p.query("SELECT 1");
    let q = p.last_http().id;
    p.answer(q, 401, INVALID);
    assert!(p.reply(w).is_err_and(Error::is_credentials_rejected));
    // Refused credentials the application gave are final: nothing is sent.
    let again = p.query("SELECT 2");
    assert!(p.reply(again).is_err_and(Error::is_credentials_rejected));
    assert_eq!(p.http.len(), 1);
}

#[test]
fn garbage_answers_are_typed_errors() {
    let (mut p, _, _) = logged_in(3600);
    for (status, body) in [
        (200, "not json"),
        (200, r#"{"status":"success","results":[{"rows":[["#),
        (502, "<html>Bad Gateway</html>"),
        (500, ""),
        (200, "[]"),
    ] {
        let w = p.query("SELECT 1");
        let q = p.last_http().id;
        p.answer(q, status, body);
        match p.reply(w) {
            Err(Error::Decode(_)) => assert_eq!(status, 200),
            Err(Error::Server(s)) => assert_eq!(s.status, status),
            other => panic!("{status} {body:?}: {other:?}"),
        }
    }
    assert_eq!(state(&p), AuthState::Authenticated, "garbage does not cost the token");
}

#[test]
fn explicit_login_and_refresh_change_nothing() {
    let (mut p, access, _) = logged_in(3600);
    let w = p.submit(Operation::Login {
        user: "alice".into(),
        password: kalam_proto::Secret::new("x"),
    });
    let id = p.last_http().id;
    p.answer_login(id, &jwt("access", T0 + 3600, "alice"), &jwt("refresh", T0 + 9999, "ra"));
    assert!(matches!(p.reply(w), Ok(Reply::Login(_))));
    p.query("SELECT 1");
    assert_eq!(
        p.last_http().auth.as_deref(),
        Some(format!("Bearer {access}").as_str()),
        "still root's token"
    );
}

#[test]
fn a_token_about_to_expire_is_refreshed_before_it_is_handed_out() {
    let (mut p, old, _) = logged_in(100);
    // 75 s later the token is inside the 30 s skew.
    p.advance(Duration::from_secs(75));
    let w = p.submit(Operation::Token { fresh: false });
    assert!(p.result(w).is_none(), "not handed out");
    assert_eq!(p.last_http().kind, RequestKind::Refresh);
    let new = jwt("access", T0 + 75 + 3600, "fresh");
    let rid = p.last_http().id;
    p.answer_login(rid, &new, &jwt("refresh", T0 + 99_999, "r2"));
    match p.reply(w) {
        Ok(Reply::Token(t)) => {
            assert_eq!(t.expose(), new);
            assert_ne!(t.expose(), old);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_fresh_token_request_asks_the_provider_again() {
    let mut p = Pump::new(AuthProvider::none(), config().with_dynamic_provider(true));
    let first = p.submit(Operation::Token { fresh: false });
    p.answer_fetch(Ok(AuthProvider::jwt_token(jwt("access", T0 + 3600, "p1"))));
    assert!(matches!(p.reply(first), Ok(Reply::Token(_))));
    // A cached token would do, but a reconnect asks for fresh credentials.
    let again = p.submit(Operation::Token { fresh: true });
    assert_eq!(p.fetches.len(), 2, "the provider is asked again");
    let p2 = jwt("access", T0 + 3600, "p2");
    p.answer_fetch(Ok(AuthProvider::jwt_token(p2.clone())));
    assert!(matches!(p.reply(again), Ok(Reply::Token(t)) if t.expose() == p2));
}

fn decoded_query(status: http::StatusCode, body: &str) -> Decoded {
    kalam_proto::decode(RequestKind::Query, status, &http::HeaderMap::new(), body.as_bytes())
}

#[test]
fn a_query_answer_decoded_elsewhere_is_handled_like_the_raw_one() {
    let (mut p, _, _) = logged_in(3600);
    // Success.
    let w = p.query("SELECT 2");
    let q = p.last_http().id;
    p.answer_decoded(q, decoded_query(http::StatusCode::OK, OK));
    assert!(p.query_ok(w));
    // TOKEN_EXPIRED decoded elsewhere still triggers the refresh and one retry.
    let w = p.query("SELECT 3");
    let q = p.last_http().id;
    p.answer_decoded(q, decoded_query(http::StatusCode::UNAUTHORIZED, EXPIRED));
    assert_eq!(p.last_http().kind, RequestKind::Refresh);
    assert!(p.result(w).is_none());
    // Not a query it waits for: ignored (one already answered, an unknown id).
    let refresh = p.last_http().id;
    let before = (p.completed.len(), p.outputs);
    p.answer_decoded(q, expired(RequestKind::Query));
    p.answer_decoded(RequestId(424_242), expired(RequestKind::Query));
    assert_eq!((p.completed.len(), p.outputs), before);
    assert_eq!(p.last_http().id, refresh, "the refresh is still awaited");
}

/// An answer decoded for another kind of request (a driver's mistake) is
/// ignored, like a stale one: a query answer fed for the refresh in flight
/// neither fails the refresh nor starts a login.
#[test]
fn a_query_answer_for_a_login_or_refresh_is_ignored() {
    let (mut p, _, _) = logged_in(3600);
    let w = p.query("SELECT 2");
    let q = p.last_http().id;
    p.answer(q, 401, EXPIRED);
    let refresh = p.last_http().id;
    assert_eq!(p.last_http().kind, RequestKind::Refresh);
    let before = (p.completed.len(), p.http.len());
    p.answer_decoded(refresh, expired(RequestKind::Query));
    assert_eq!((p.completed.len(), p.http.len()), before, "ignored");
    assert_eq!(p.last_http().id, refresh, "the refresh is still awaited");
    assert!(p.result(w).is_none());
}

fn expired(kind: RequestKind) -> Decoded {
    Decoded {
        kind,
        result: Err(Error::TokenExpired),
        date: None,
    }
}
