//! A token the server refuses while the client can get another (the server
//! rotated its JWT secret, the user's role changed): `INVALID_CREDENTIALS`
//! on a request that carried it is recovered from like `TOKEN_EXPIRED`:
//! one recovery shared by every request waiting, each refused request sent
//! once more, and a second refusal is final. On the WebSocket, an
//! `auth_error` for such a token gets one new token and one new
//! `authenticate`, and the subscriptions resume.

mod support;

use kalam_proto::{
    AuthProvider, ClientConfig, ConnectionOptions, CredentialSource, Error, ErrorCode, Instant, KalamLinkTimeouts,
    LiveEvent, Operation, QueryRequest, RequestKind, UploadFile, UploadRequest,
};
use support::{AUTH_ERROR, AUTH_SUCCESS, BAD_LOGIN, INVALID, OK, Pump, T0, W, ack_frame, change_frame, jwt};

/// Logged in with basic credentials, holding a1 and its refresh token r1.
fn logged_in() -> (Pump, String) {
    let mut p = Pump::basic();
    let w = p.query("SELECT 0");
    let access = jwt("access", T0 + 3600, "a1");
    let login = p.last_http().id;
    p.answer_login(login, &access, &jwt("refresh", T0 + 7200, "r1"));
    let q = p.last_http().id;
    p.answer(q, 200, OK);
    assert!(p.query_ok(w));
    (p, access)
}

/// Runs timeouts until the core asks for a socket; returns its attempt.
fn next_socket(p: &mut Pump) -> u64 {
    for _ in 0..100 {
        if let Some(attempt) = p.opening {
            return attempt;
        }
        let Some(at) = p.core.poll_timeout() else { break };
        p.run_until(at.saturating_duration_since(Instant::ZERO).as_millis() as u64);
    }
    panic!("no socket asked for");
}

/// Runs every timeout due in the next `ms` milliseconds.
fn run_for(p: &mut Pump, ms: u64) {
    let now = p.now.instant.saturating_duration_since(Instant::ZERO).as_millis() as u64;
    p.run_until(now + ms);
}

fn is_invalid_credentials(e: &Error) -> bool {
    e.code() == Some(&ErrorCode::InvalidCredentials)
}

#[test]
fn queries_refused_after_a_secret_rotation_recover_once_and_all_succeed() {
    let (mut p, old) = logged_in();
    let waiters: Vec<W> = (0..10).map(|i| p.query(&format!("SELECT {i}"))).collect();
    let sent: Vec<_> = p.sent_of(RequestKind::Query).iter().skip(1).map(|s| s.id).collect();
    assert_eq!(sent.len(), 10);
    for id in sent {
        p.answer(id, 401, INVALID);
    }
    // One recovery for all ten: the refresh token first (signed with the
    // old secret too, so refused), then the stored password.
    assert_eq!(p.sent_of(RequestKind::Refresh).len(), 1);
    let refresh = p.last_http().id;
    p.answer(refresh, 401, BAD_LOGIN);
    assert_eq!(p.sent_of(RequestKind::Login).len(), 2, "one new login");
    let login = p.last_http().id;
    let new = jwt("access", T0 + 3600, "a2");
    p.answer_login(login, &new, &jwt("refresh", T0 + 7200, "r2"));
    let retries: Vec<_> = p
        .sent_of(RequestKind::Query)
        .iter()
        .skip(11)
        .map(|s| (s.id, s.auth.clone()))
        .collect();
    assert_eq!(retries.len(), 10, "each refused query is sent once more");
    for (id, auth) in retries {
        assert_eq!(auth, Some(format!("Bearer {new}")), "never the refused token {old}");
        p.answer(id, 200, OK);
    }
    assert!(waiters.iter().all(|w| p.query_ok(*w)), "the application sees no error");
}

#[test]
fn a_new_token_refused_again_is_final_and_nothing_loops() {
    let (mut p, _) = logged_in();
    let w = p.query("SELECT 1");
    let q = p.last_http().id;
    p.answer(q, 401, INVALID);
    let refresh = p.last_http().id;
    let a2 = jwt("access", T0 + 3600, "a2");
    p.answer_login(refresh, &a2, &jwt("refresh", T0 + 7200, "r2"));
    let retry = p.last_http().id;
    assert_eq!(p.last_http().kind, RequestKind::Query);
    p.answer(retry, 401, INVALID);
    assert!(
        p.error(w).is_some_and(is_invalid_credentials),
        "typed: {:?}",
        p.result(w)
    );
    assert!(p.pending_http().is_none(), "no request left going: {:?}", p.last_http());
    assert_eq!(
        p.sent_of(RequestKind::Refresh).len() + p.sent_of(RequestKind::Login).len(),
        2,
        "the first login and one recovery"
    );
}

#[test]
fn a_refused_password_during_recovery_stays_final() {
    let (mut p, _) = logged_in();
    let w = p.query("SELECT 1");
    let q = p.last_http().id;
    p.answer(q, 401, INVALID);
    let refresh = p.last_http().id;
    p.answer(refresh, 401, BAD_LOGIN);
    let login = p.last_http().id;
    assert_eq!(p.last_http().kind, RequestKind::Login);
    p.answer(login, 401, BAD_LOGIN);
    assert!(
        p.error(w).is_some_and(Error::is_credentials_rejected),
        "{:?}",
        p.result(w)
    );
    let again = p.query("SELECT 2");
    assert!(p.error(again).is_some_and(Error::is_credentials_rejected));
    assert_eq!(
        p.sent_of(RequestKind::Login).len(),
        2,
        "the refused password is not sent again"
    );
}

#[test]
fn the_applications_token_refused_is_renewed_by_its_refresher() {
    let config =
        ClientConfig::new(&ConnectionOptions::default(), &KalamLinkTimeouts::default(), 7).with_refresher(true);
    let given = jwt("access", T0 + 3600, "given");
    let mut p = Pump::new(AuthProvider::jwt_token(given.clone()), config);
    let w = p.query("SELECT 1");
    let q = p.last_http().id;
    p.answer(q, 401, INVALID);
    let fetch = p.pending_fetches().next().copied().expect("the refresher is asked");
    assert_eq!(fetch.source, CredentialSource::Refresher);
    let renewed = jwt("access", T0 + 3600, "renewed");
    p.credentials(fetch.id, Ok(AuthProvider::jwt_token(renewed.clone())));
    let retry = p.last_http();
    assert_eq!(retry.auth, Some(format!("Bearer {renewed}")));
    let retry = retry.id;
    p.answer(retry, 200, OK);
    assert!(p.query_ok(w));
}

#[test]
fn the_applications_token_refused_with_no_way_to_renew_is_final() {
    let mut p = Pump::new(
        AuthProvider::jwt_token(jwt("access", T0 + 3600, "given")),
        support::config(),
    );
    let w = p.query("SELECT 1");
    let q = p.last_http().id;
    p.answer(q, 401, INVALID);
    assert!(p.error(w).is_some_and(is_invalid_credentials));
    let again = p.query("SELECT 2");
    assert!(p.error(again).is_some_and(Error::is_credentials_rejected));
    assert_eq!(p.http.len(), 1, "nothing sent again");
}

#[test]
fn an_upload_from_a_reader_refused_is_not_sent_twice() {
    let (mut p, _) = logged_in();
    let w = p.submit(Operation::Upload(UploadRequest {
        query: QueryRequest::new(r#"INSERT INTO p.docs (id, f) VALUES (1, FILE("doc"))"#),
        files: vec![UploadFile {
            placeholder: "doc".into(),
            filename: "a.bin".into(),
            mime: "application/octet-stream".into(),
            len: 3,
        }],
        replayable: false,
        sources: 1,
    }));
    let up = p.last_http().id;
    p.answer(up, 401, INVALID);
    let refresh = p.last_http().id;
    p.answer_login(
        refresh,
        &jwt("access", T0 + 3600, "a2"),
        &jwt("refresh", T0 + 7200, "r2"),
    );
    assert!(
        matches!(p.error(w), Some(Error::UploadNotReplayable)),
        "{:?}",
        p.result(w)
    );
    assert_eq!(p.sent_of(RequestKind::Upload).len(), 1);
}

#[test]
fn an_auth_error_on_the_socket_gets_one_new_token_and_the_subscription_resumes() {
    let (mut p, old) = logged_in();
    let (w, sub) = p.subscribe("SELECT * FROM app.t", None);
    let sub = sub.expect("a subscription");
    p.bring_up();
    let id = p.frames_of("subscribe")[0]["subscription"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    p.frame(&ack_frame(&id, false));
    assert!(matches!(p.result(w), Some(Ok(_))));
    p.frame(&change_frame(&id, 1, 5));
    // The server restarts with a new secret: the socket drops, and the
    // reconnect's authenticate (with the old token) is refused.
    p.socket_closed(Some(1012), "restart");
    let attempt = next_socket(&mut p);
    assert!(p.socket_open(attempt));
    assert_eq!(p.frames_of("authenticate").last().unwrap()["token"], old.as_str());
    p.frame(AUTH_ERROR);
    // One new token, by the recovery ladder: the refresh token is refused
    // too, the password is not.
    while p.pending_http().is_none() {
        let at = p.core.poll_timeout().expect("a reconnect is scheduled");
        p.run_until(at.saturating_duration_since(Instant::ZERO).as_millis() as u64);
    }
    let refresh = p.last_http().id;
    assert_eq!(p.last_http().kind, RequestKind::Refresh);
    p.answer(refresh, 401, BAD_LOGIN);
    let login = p.last_http().id;
    assert_eq!(p.last_http().kind, RequestKind::Login);
    let new = jwt("access", T0 + 3600, "a2");
    p.answer_login(login, &new, &jwt("refresh", T0 + 7200, "r2"));
    let attempt = next_socket(&mut p);
    assert!(p.socket_open(attempt));
    let auths = p.frames_of("authenticate");
    assert_eq!(auths.len(), 3, "{auths:?}");
    assert_eq!(auths[2]["token"], new.as_str(), "never the refused token again");
    p.frame(AUTH_SUCCESS);
    let resubscribe = p.frames_of("subscribe").last().cloned().unwrap();
    assert_eq!(
        resubscribe["subscription"]["options"]["from"], 5,
        "resumed after the last change seen"
    );
    assert!(p.ended.iter().all(|(s, _)| *s != sub), "the subscription did not end");
}

#[test]
fn an_auth_error_for_the_applications_token_with_no_way_to_renew_ends_the_subscriptions() {
    let mut p = Pump::new(
        AuthProvider::jwt_token(jwt("access", T0 + 3600, "given")),
        support::config(),
    );
    let (_, sub) = p.subscribe("SELECT * FROM app.t", None);
    let (attempt, _) = p.opens.last().cloned().expect("a socket");
    assert!(p.socket_open(attempt));
    p.frame(AUTH_ERROR);
    run_for(&mut p, 60_000);
    assert!(p.ended.iter().any(|(s, _)| Some(*s) == sub), "ended with the refusal");
    assert_eq!(
        p.frames_of("authenticate").len(),
        1,
        "the refused token is not sent again"
    );
    let events: Vec<_> = sub.map(|s| p.events(s)).unwrap_or_default();
    assert!(!events.iter().any(|e| matches!(e, LiveEvent::Subscribed { .. })));
}

/// Requests in flight with a token the server refuses, refused late, after
/// the recovery's own token was refused too: no new recovery each (the
/// server refuses whatever it is given), every caller answered typed.
#[test]
fn late_refusals_after_a_refused_recovery_start_no_more_recoveries() {
    let (mut p, _) = logged_in();
    let ws: Vec<W> = (0..5).map(|i| p.query(&format!("SELECT {i}"))).collect();
    let sent: Vec<_> = p.sent_of(RequestKind::Query).iter().skip(1).map(|s| s.id).collect();
    p.answer(sent[0], 401, INVALID);
    let refresh = p.last_http().id;
    p.answer(refresh, 401, BAD_LOGIN);
    let login = p.last_http().id;
    p.answer_login(login, &jwt("access", T0 + 3600, "a2"), &jwt("refresh", T0 + 7200, "r2"));
    // Q1's retry (with the new token) is refused first; the refusals of
    // Q2-Q5 (sent with the first token) come after it.
    let retry = p.last_http().id;
    assert_eq!(p.last_http().kind, RequestKind::Query);
    p.answer(retry, 401, INVALID);
    while let Some(s) = p.pending_http() {
        let (id, kind) = (s.id, s.kind);
        assert_eq!(kind, RequestKind::Query, "no further recovery: {:?}", p.http);
        p.answer(id, 401, INVALID);
    }
    assert!(ws.iter().all(|w| p.error(*w).is_some_and(is_invalid_credentials)));
    assert_eq!(p.sent_of(RequestKind::Refresh).len(), 1);
    assert_eq!(
        p.sent_of(RequestKind::Login).len(),
        2,
        "the first login and one recovery"
    );
}

fn with_refresher() -> ClientConfig {
    ClientConfig::new(&ConnectionOptions::default(), &KalamLinkTimeouts::default(), 7).with_refresher(true)
}

/// The refresher hands back the very token the server just refused (a
/// cache not yet updated): it is not sent again; the caller gets the
/// server's refusal, typed.
#[test]
fn a_callback_that_returns_the_refused_token_again_is_not_trusted() {
    let given = jwt("access", T0 + 3600, "given");
    let mut p = Pump::new(AuthProvider::jwt_token(given.clone()), with_refresher());
    let w = p.query("SELECT 1");
    let q = p.last_http().id;
    p.answer(q, 401, INVALID);
    p.answer_fetch(Ok(AuthProvider::jwt_token(given.clone())));
    assert_eq!(
        p.sent_of(RequestKind::Query).len(),
        1,
        "the refused token is not sent again"
    );
    assert!(p.error(w).is_some_and(is_invalid_credentials), "{:?}", p.result(w));
    // A later, different token from the refresher is used.
    let w = p.query("SELECT 2");
    let renewed = jwt("access", T0 + 3600, "renewed");
    p.answer_fetch(Ok(AuthProvider::jwt_token(renewed.clone())));
    assert_eq!(p.last_http().auth, Some(format!("Bearer {renewed}")));
    p.answer_next(200, OK);
    assert!(p.query_ok(w));
}

/// A request goes out with the application's token; the application then
/// sets a new one; the old one is refused. The request is sent again with
/// the new token (it never ran), not failed with the old token's refusal.
#[test]
fn a_request_refused_with_a_token_since_replaced_is_retried_with_the_new_one() {
    let mut p = Pump::new(
        AuthProvider::jwt_token(jwt("access", T0 + 3600, "old")),
        support::config(),
    );
    let w = p.query("SELECT 1");
    let q = p.last_http().id;
    let new = jwt("access", T0 + 3600, "new");
    p.set_credentials(AuthProvider::jwt_token(new.clone()));
    p.answer(q, 401, INVALID);
    let retry = p.last_http();
    assert_eq!(retry.auth, Some(format!("Bearer {new}")));
    p.answer_next(200, OK);
    assert!(p.query_ok(w));
    assert_eq!(p.sent_of(RequestKind::Query).len(), 2);
}

/// The socket refuses the application's token, which a refresher can
/// renew: the refusal is not final. The refresher's token authenticates
/// and the subscription goes on; an error later names what failed then,
/// not the old refusal.
#[test]
fn an_auth_error_for_the_applications_token_with_a_refresher_is_not_final() {
    let mut p = Pump::new(
        AuthProvider::jwt_token(jwt("access", T0 + 3600, "given")),
        with_refresher(),
    );
    let (_, sub) = p.subscribe("SELECT * FROM app.t", None);
    let (attempt, _) = p.opens.last().cloned().expect("a socket");
    assert!(p.socket_open(attempt));
    p.frame(AUTH_ERROR);
    let renewed = jwt("access", T0 + 3600, "renewed");
    for _ in 0..100 {
        if p.pending_fetches().next().is_some() {
            break;
        }
        run_for(&mut p, 1_000);
    }
    p.answer_fetch(Ok(AuthProvider::jwt_token(renewed.clone())));
    let attempt = next_socket(&mut p);
    assert!(p.socket_open(attempt));
    let auths = p.frames_of("authenticate");
    assert_eq!(auths.len(), 2);
    assert!(auths[1].to_string().contains(&renewed), "the refresher's token");
    assert!(p.ended.iter().all(|(s, _)| Some(*s) != sub), "not ended");
    // The refresher fails later: the caller sees that failure, not a
    // leftover "refused configured token".
    let w = p.query("SELECT 1");
    p.answer_next(401, INVALID);
    p.answer_fetch(Err(Error::msg("vault sealed")));
    assert!(
        matches!(p.error(w), Some(Error::CredentialCallback(e)) if e.to_string() == "vault sealed"),
        "{:?}",
        p.result(w)
    );
}

/// A refresh token past its own expiry is no way to renew: a refused
/// token with only that left is final at once, and the expired refresh
/// token is never sent.
#[test]
fn an_expired_refresh_token_is_not_a_way_to_renew() {
    let mut p = Pump::basic();
    let w = p.query("SELECT 0");
    let login = p.last_http().id;
    p.answer_login(login, &jwt("access", T0 + 3600, "a1"), &jwt("refresh", T0 + 60, "r1"));
    p.answer_next(200, OK);
    assert!(p.query_ok(w));
    // The password is refused from now on (it was changed), and the refresh
    // token has expired.
    p.run_until(120_000);
    let w = p.query("SELECT 1");
    p.answer_next(401, INVALID);
    let next = p.last_http().kind;
    assert_eq!(next, RequestKind::Login, "the password, not the expired refresh token");
    p.answer_next(401, BAD_LOGIN);
    assert!(p.error(w).is_some());
    assert!(
        p.sent_of(RequestKind::Refresh).is_empty(),
        "the expired refresh token is never sent"
    );
}
