//! The contract under failure, at the core: every caller answered, nothing
//! held behind something it does not need.

mod support;

use kalam_proto::{
    AuthProvider, ClientConfig, ConnectionOptions, Error, Hook, KalamLinkTimeouts, RequestKind, TransportError,
};
use support::{OK, Pump, T0, jwt};

/// The WebSocket's token request takes no HTTP slot: with the in-flight cap
/// full (one slow query, cap 1), a subscribe still gets its socket.
#[test]
fn the_sockets_token_does_not_wait_behind_the_http_cap() {
    let options = ConnectionOptions::default().with_http_max_connections(1);
    let config = ClientConfig::new(&options, &KalamLinkTimeouts::default(), 7);
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 3600, "a")), config);
    let slow = p.query("SELECT sleep");
    assert_eq!(p.sent_of(RequestKind::Query).len(), 1, "the cap is full");
    let queued = p.query("SELECT 2");
    assert_eq!(p.sent_of(RequestKind::Query).len(), 1, "the next query waits its turn");
    let (_, sub) = p.subscribe("SELECT * FROM app.t", None);
    assert!(sub.is_some());
    assert_eq!(p.opens.len(), 1, "a socket is asked for at once");
    // The queries go on in order once the slow one is answered.
    let first = p.sent_of(RequestKind::Query)[0].id;
    p.answer(first, 200, OK);
    let second = p.sent_of(RequestKind::Query)[1].id;
    p.answer(second, 200, OK);
    assert!(p.query_ok(slow) && p.query_ok(queued));
}

/// A socket that opens and then dies before `auth_success` (a 1011, a
/// proxy's reset) fails `connect()` with the cause, and both hooks fire,
/// however many reconnects would follow (none is the limit by default).
#[test]
fn connect_is_answered_when_the_socket_dies_during_authentication() {
    let mut p = Pump::new(
        AuthProvider::jwt_token(jwt("access", T0 + 3600, "a")),
        support::config(),
    );
    let w = p.connect();
    let (attempt, _) = p.opens.last().cloned().expect("a socket");
    assert!(p.socket_open(attempt));
    assert_eq!(p.frames_of("authenticate").len(), 1);
    p.socket_closed(Some(1011), "internal error");
    match p.error(w) {
        Some(Error::Transport(TransportError::Connect(why))) => {
            assert!(why.contains("1011") && why.contains("authenticate"), "{why}")
        }
        other => panic!("connect: {other:?} ({:?})", p.result(w)),
    }
    assert!(p.hooks.iter().any(|h| matches!(h, Hook::Error(_))), "{:?}", p.hooks);
    assert!(
        p.hooks.iter().any(|h| matches!(h, Hook::Disconnected(_))),
        "{:?}",
        p.hooks
    );
    assert_eq!(p.core.pending_waiters(), 0);
}

/// A socket that opens and never hears `auth_success` fails `connect()` at
/// the auth timeout, typed, with both hooks.
#[test]
fn connect_is_answered_when_authenticate_is_never_answered() {
    let timeouts = KalamLinkTimeouts::default();
    let config = ClientConfig::new(&ConnectionOptions::default(), &timeouts, 7);
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 3600, "a")), config);
    let w = p.connect();
    let (attempt, _) = p.opens.last().cloned().expect("a socket");
    assert!(p.socket_open(attempt));
    let deadline = timeouts.auth_timeout.as_millis() as u64;
    p.run_until(deadline);
    assert!(
        matches!(p.error(w), Some(Error::Transport(TransportError::Timeout(d))) if *d == timeouts.auth_timeout),
        "{:?}",
        p.result(w)
    );
    assert!(p.hooks.iter().any(|h| matches!(h, Hook::Error(_))));
    assert!(p.hooks.iter().any(|h| matches!(h, Hook::Disconnected(_))));
}

/// A download answered 2xx keeps its place under the in-flight cap while
/// its body streams (its connection is busy): with cap 1, the next request
/// waits until the body is done.
#[test]
fn a_streaming_download_counts_against_the_cap_until_its_body_ends() {
    let options = ConnectionOptions::default().with_http_max_connections(1);
    let config = ClientConfig::new(&options, &KalamLinkTimeouts::default(), 7);
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 3600, "a")), config);
    let d = p.submit(kalam_proto::Operation::Download {
        path: "/v1/files/p/docs/f0001/1-a.txt".into(),
        sink: 1,
    });
    let download = p.last_http().id;
    p.answer(download, 200, "");
    assert!(p.result(d).is_some_and(|r| r.is_ok()), "{:?}", p.result(d));
    let q = p.query("SELECT 1");
    assert_eq!(
        p.sent_of(RequestKind::Query).len(),
        0,
        "the body still holds the only place"
    );
    p.core.handle_body_done(download, p.now);
    p.pump();
    assert_eq!(p.sent_of(RequestKind::Query).len(), 1);
    let id = p.last_http().id;
    p.answer(id, 200, OK);
    assert!(p.query_ok(q));
    // A second report changes nothing.
    p.core.handle_body_done(download, p.now);
}

/// A socket that opens and then stays silent past the silence limit before
/// `auth_success` (an auth timeout configured longer than the silence
/// limit) fails `connect()` then, with the timeout: it does not wait for
/// the next attempt.
#[test]
fn connect_is_answered_when_the_server_stays_silent_during_authentication() {
    let timeouts = KalamLinkTimeouts::default().with_auth_timeout(std::time::Duration::from_secs(60));
    let config = ClientConfig::new(&ConnectionOptions::default(), &timeouts, 7);
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 3600, "a")), config);
    let w = p.connect();
    let attempt = p.opening.expect("a socket asked for");
    assert!(p.socket_open(attempt));
    let silence = p.core.config().ws.silence_limit;
    assert!(silence < std::time::Duration::from_secs(60));
    // Keepalive pings go out meanwhile; nothing comes back.
    p.run_until(silence.as_millis() as u64);
    match p.result(w) {
        Some(Err(Error::Transport(TransportError::Timeout(d)))) => assert_eq!(*d, silence),
        other => panic!("connect() answered {other:?}"),
    }
}
