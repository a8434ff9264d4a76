//! The contract under failure, at the core: every caller answered, nothing
//! held behind something it does not need.

mod support;

use kalam_proto::{AuthProvider, ClientConfig, ConnectionOptions, KalamLinkTimeouts, RequestKind};
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
