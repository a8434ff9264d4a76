//! `max_retries`: a request whose connection could not be made (nothing
//! was written) is sent again after a back-off; one that may have reached
//! the server never is.

mod support;

use kalam_proto::{AuthProvider, ClientConfig, ConnectionOptions, Error, KalamLinkTimeouts, TransportError};
use support::{OK, Pump, T0, jwt};

fn pump(retries: u32) -> Pump {
    let options = ConnectionOptions::default().with_max_retries(retries);
    let config = ClientConfig::new(&options, &KalamLinkTimeouts::default(), 7);
    Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 3600, "t")), config)
}

fn refused() -> TransportError {
    TransportError::Connect("Connection refused (os error 111)".into())
}

#[test]
fn a_refused_connection_is_tried_again_after_a_back_off() {
    let mut p = pump(2);
    let w = p.query("SELECT 1");
    let first = p.pending_http().expect("sent").id;
    p.fail(first, refused());
    assert!(p.result(w).is_none(), "waits for the back-off");
    assert!(p.pending_http().is_none(), "not at once");
    p.run_until(99);
    assert!(p.pending_http().is_none(), "not before 100 ms");
    p.run_until(100);
    let second = p.pending_http().expect("sent again after 100 ms").id;
    p.fail(second, refused());
    p.run_until(299);
    assert!(p.pending_http().is_none(), "the back-off doubles");
    p.run_until(300);
    let third = p.pending_http().expect("sent a third time").id;
    p.answer(third, 200, OK);
    assert!(matches!(p.result(w), Some(Ok(_))), "{:?}", p.result(w));
}

#[test]
fn retries_end_with_the_cause() {
    let mut p = pump(1);
    let w = p.query("SELECT 1");
    let id = p.pending_http().expect("sent").id;
    p.fail(id, refused());
    p.run_until(100);
    let id = p.pending_http().expect("sent again").id;
    p.fail(id, refused());
    match p.result(w) {
        Some(Err(Error::Transport(TransportError::Connect(why)))) => assert!(why.contains("refused"), "{why}"),
        other => panic!("expected the connect error, got {other:?}"),
    }
}

#[test]
fn what_may_have_reached_the_server_is_never_sent_again() {
    for error in [
        TransportError::Io("connection reset by peer".into()),
        TransportError::ClosedBeforeAnswer,
        TransportError::Timeout(std::time::Duration::from_secs(30)),
    ] {
        let mut p = pump(5);
        let w = p.query("INSERT INTO t VALUES (1)");
        let id = p.pending_http().expect("sent").id;
        p.fail(id, error.clone());
        assert!(
            matches!(p.result(w), Some(Err(Error::Transport(_)))),
            "{error:?}: {:?}",
            p.result(w)
        );
        p.run_until(10_000);
        assert!(p.pending_http().is_none(), "{error:?} was sent again");
    }
}

#[test]
fn off_by_default() {
    let mut p = pump(ConnectionOptions::default().max_retries);
    let w = p.query("SELECT 1");
    let id = p.pending_http().expect("sent").id;
    p.fail(id, refused());
    assert!(matches!(
        p.result(w),
        Some(Err(Error::Transport(TransportError::Connect(_))))
    ));
}
