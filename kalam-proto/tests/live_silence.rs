//! A live stream is never silent about its connection: it hears when the
//! socket drops (`Reconnecting`) and when the subscription is back
//! (`Subscribed { resumed_from }`); a subscription that could never be sent
//! because nothing would connect fails with that cause, not with "no
//! acknowledgement".

mod support;

use kalam_proto::{Error, Instant, LiveEvent, TransportError};
use support::{AUTH_SUCCESS, Pump, ack_frame, change_frame};

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

#[test]
fn a_stream_hears_of_the_drop_and_of_the_resume() {
    let mut p = Pump::with_token("t");
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
    let before = p.events(sub).len();

    p.socket_closed(None, "connection reset by peer");
    let events = p.events(sub);
    match &events[before..] {
        [LiveEvent::Reconnecting { reason }] => assert!(reason.contains("connection reset"), "{reason}"),
        other => panic!("expected Reconnecting, got {other:?}"),
    }
    // A few failed attempts say nothing more to the stream.
    for _ in 0..3 {
        let attempt = next_socket(&mut p);
        p.closed(attempt, None, "connection refused");
    }
    assert_eq!(p.events(sub).len(), before + 1, "one event per drop, not per attempt");

    let attempt = next_socket(&mut p);
    assert!(p.socket_open(attempt));
    p.frame(AUTH_SUCCESS);
    let id = p.frames_of("subscribe").last().unwrap()["subscription"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    p.frame(&ack_frame(&id, false));
    let events = p.events(sub);
    assert!(
        matches!(
            events[before + 1..].first(),
            Some(LiveEvent::Subscribed {
                resumed_from: Some(5),
                ..
            })
        ),
        "{:?}",
        &events[before + 1..]
    );
    assert!(p.ended.iter().all(|(s, _)| *s != sub));
}

#[test]
fn a_subscription_nothing_could_connect_for_fails_with_the_cause() {
    let mut p = Pump::with_token("t");
    let (w, sub) = p.subscribe("SELECT * FROM app.t", None);
    let sub = sub.expect("a subscription");
    // Every attempt is refused, until the acknowledgement deadline.
    for _ in 0..100 {
        if p.result(w).is_some() {
            break;
        }
        let attempt = next_socket(&mut p);
        p.closed(attempt, None, "Connection refused (os error 111)");
    }
    match p.error(w) {
        Some(Error::Transport(TransportError::Connect(why))) => {
            assert!(why.contains("Connection refused") && why.contains("ws://"), "{why}")
        }
        other => panic!("expected the connect failure, got {other:?}"),
    }
    assert!(p.ended.iter().any(|(s, _)| *s == sub));
}

#[test]
fn a_subscription_reports_where_it_stands() {
    use kalam_proto::{SubscriptionOptions, SubscriptionState};
    use support::batch_frame;

    let mut p = Pump::with_token("t");
    let state = |p: &Pump| p.core.subscription_infos()[0].state;
    let (_, sub) = p.subscribe(
        "SELECT * FROM app.t",
        Some(SubscriptionOptions::default().with_batch_size(10)),
    );
    let sub = sub.unwrap();
    assert!(!p.core.is_connected());
    assert_eq!(state(&p), SubscriptionState::Subscribing);
    p.bring_up();
    assert!(p.core.is_connected());
    let id = p.frames_of("subscribe")[0]["subscription"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    p.frame(&ack_frame(&id, true));
    assert_eq!(state(&p), SubscriptionState::Loading);
    p.frame(&batch_frame(&id, 0, false, 3));
    assert_eq!(state(&p), SubscriptionState::Live);
    let info = &p.core.subscription_infos()[0];
    assert_eq!(
        (info.id, info.sql.as_str(), info.last_seq),
        (sub, "SELECT * FROM app.t", Some(3))
    );
    assert!(info.last_event.is_some());
    p.socket_closed(None, "reset");
    assert!(!p.core.is_connected());
    assert_eq!(state(&p), SubscriptionState::Resubscribing);
    p.unsubscribe(sub);
    assert!(p.core.subscription_infos().is_empty());
}
