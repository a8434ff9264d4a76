//! Deterministic tests of the WebSocket session machine: no runtime, no
//! sockets, hand-made time.

use std::time::Duration;

use kalam_proto::{
    Endpoints, Error, Incoming, LiveEvent, Now, Secret, SubId, SubscriptionOptions, WsConfig, WsEvent, WsOutput,
    WsSession, WsState,
};

fn t(ms: u64) -> Now {
    Now::new(
        kalam_proto::Instant::from_millis(ms),
        Duration::from_secs(1_800_000_000) + Duration::from_millis(ms),
    )
}

fn session(config: WsConfig) -> WsSession {
    WsSession::new(&Endpoints::new("http://127.0.0.1:2900").unwrap(), config)
}

fn drain(s: &mut WsSession) -> Vec<WsOutput> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn texts(out: &[WsOutput]) -> Vec<serde_json::Value> {
    out.iter()
        .filter_map(|o| match o {
            WsOutput::SendText(t) => Some(serde_json::from_str(t).unwrap()),
            _ => None,
        })
        .collect()
}

fn connect_attempt(out: &[WsOutput]) -> u64 {
    out.iter()
        .find_map(|o| match o {
            WsOutput::Connect { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .expect("a Connect output")
}

/// Drives a session from "want" to Ready with token `tok`; returns the outputs
/// after auth_success and the attempt id.
fn bring_up(s: &mut WsSession, tok: &str, at: u64) -> (Vec<WsOutput>, u64) {
    let out = drain(s);
    assert!(out.iter().any(|o| matches!(o, WsOutput::NeedToken { .. })), "{out:?}");
    s.handle_token(Ok(Secret::new(tok)), t(at));
    let out = drain(s);
    let attempt = connect_attempt(&out);
    let WsOutput::Connect { url, .. } = &out[0] else {
        panic!()
    };
    assert!(url.starts_with("ws://127.0.0.1:2900/v1/ws"), "{url}");
    assert!(s.handle_connected(attempt, t(at)));
    let out = drain(s);
    let auth = &texts(&out)[0];
    assert_eq!(auth["type"], "authenticate");
    assert_eq!(auth["token"], tok);
    assert_eq!(auth["protocol"]["serialization"], "json");
    s.handle_frame(Incoming::Text(r#"{"type":"auth_success","user":"root","role":"system","protocol":{"serialization":"json","compression":"none"}}"#), t(at));
    (drain(s), attempt)
}

#[test]
fn lazy_subscribe_connects_authenticates_and_subscribes() {
    let mut s = session(WsConfig::default());
    assert_eq!(s.state(), WsState::Disconnected);
    let a = s
        .subscribe(
            "SELECT * FROM demo.items",
            Some(SubscriptionOptions::default().with_batch_size(100)),
            t(0),
        )
        .unwrap();
    let b = s.subscribe("SELECT * FROM demo.other", None, t(0)).unwrap();
    let (out, _) = bring_up(&mut s, "tok1", 10);
    assert!(matches!(out[0], WsOutput::Event(WsEvent::Connected)));
    let subs = texts(&out);
    assert_eq!(subs.len(), 2, "both subscriptions share the one socket");
    assert_eq!(subs[0]["subscription"]["sql"], "SELECT * FROM demo.items");
    assert_eq!(subs[0]["subscription"]["options"]["batch_size"], 100);
    assert!(
        subs[1]["subscription"].get("options").is_none(),
        "no options: live only"
    );
    assert_ne!(a, b);
    assert_eq!(s.state(), WsState::Ready);
}

#[test]
fn initial_pages_then_changes_track_seq() {
    let mut s = session(WsConfig::default());
    let a = s
        .subscribe(
            "SELECT * FROM demo.many",
            Some(SubscriptionOptions::default().with_batch_size(3)),
            t(0),
        )
        .unwrap();
    bring_up(&mut s, "tok", 0);
    let wire = "k1";
    s.handle_frame(Incoming::Text(&format!(r#"{{"type":"subscription_ack","subscription_id":"{wire}","total_rows":0,"batch_control":{{"batch_num":0,"has_more":true,"status":"loading","last_seq_id":382978087716753410}},"schema":[{{"name":"id","data_type":"BigInt","index":0,"flags":["pk"]}}]}}"#)), t(1));
    s.handle_frame(Incoming::Text(&format!(r#"{{"type":"initial_data_batch","subscription_id":"{wire}","rows":[{{"id":"1","_seq":"382978087716753408"}},{{"id":"3","_seq":"382978087716753410"}}],"batch_control":{{"batch_num":0,"has_more":true,"status":"loading","last_seq_id":382978087716753410}}}}"#)), t(2));
    let out = drain(&mut s);
    assert!(
        matches!(&out[0], WsOutput::Event(WsEvent::Sub(id, LiveEvent::Subscribed { resumed_from: None, .. })) if *id == a)
    );
    assert!(
        matches!(&out[1], WsOutput::Event(WsEvent::Sub(_, LiveEvent::InitialRows { has_more: true, rows })) if rows.len() == 2)
    );
    assert!(texts(&out).is_empty(), "the next page waits for the consumer's room");
    s.handle_subscriber_room(a, t(2));
    let out = drain(&mut s);
    let next = &texts(&out)[0];
    assert_eq!(next["type"], "next_batch");
    // A JSON number above 2^53, exactly.
    assert_eq!(next["last_seq_id"].as_i64(), Some(382_978_087_716_753_410));
    s.handle_frame(Incoming::Text(&format!(r#"{{"type":"initial_data_batch","subscription_id":"{wire}","rows":[],"batch_control":{{"batch_num":1,"has_more":false,"status":"ready","last_seq_id":null}}}}"#)), t(3));
    let out = drain(&mut s);
    assert!(matches!(&out[1], WsOutput::Event(WsEvent::Sub(_, LiveEvent::Ready))));
    assert!(texts(&out).is_empty(), "no next_batch after the last page");
    s.handle_frame(Incoming::Text(&format!(r#"{{"type":"change","subscription_id":"{wire}","change_type":"delete","old_values":[{{"id":"1","_seq":"382978087716760000","_deleted":true}}]}}"#)), t(4));
    let out = drain(&mut s);
    assert!(matches!(&out[0], WsOutput::Event(WsEvent::Sub(_, LiveEvent::Delete { old })) if old["id"] == "1"));
    assert_eq!(s.last_seq(a), Some(382_978_087_716_760_000), "a deletion's _seq counts");
}

#[test]
fn reconnect_resubscribes_from_last_seq_with_fresh_credentials() {
    let mut s = session(WsConfig::default());
    let a = s.subscribe("SELECT * FROM demo.items", None, t(0)).unwrap();
    let (_, attempt) = bring_up(&mut s, "tok", 0);
    s.handle_frame(Incoming::Text(r#"{"type":"subscription_ack","subscription_id":"k1","total_rows":0,"batch_control":{"batch_num":0,"has_more":false,"status":"ready","last_seq_id":null},"schema":[]}"#), t(1));
    s.handle_frame(
        Incoming::Text(
            r#"{"type":"change","subscription_id":"k1","change_type":"insert","rows":[{"id":"7","_seq":"1000"}]}"#,
        ),
        t(2),
    );
    drain(&mut s);
    // The server drops the socket.
    s.handle_closed(attempt, None, "", t(3));
    let out = drain(&mut s);
    assert!(matches!(
        &out[0],
        WsOutput::Event(WsEvent::Disconnected {
            will_reconnect: true,
            ..
        })
    ));
    assert_eq!(s.state(), WsState::BackingOff);
    let wake = s.poll_timeout().unwrap();
    assert!(wake > t(3).instant);
    s.handle_timeout(Now::new(wake, t(3).unix));
    let out = drain(&mut s);
    assert!(
        matches!(out[0], WsOutput::NeedToken { fresh: true }),
        "every reconnect asks for fresh credentials: {out:?}"
    );
    let at = wake.as_duration().as_millis() as u64;
    s.handle_token(Ok(Secret::new("tok2")), t(at));
    let attempt2 = connect_attempt(&drain(&mut s));
    assert_ne!(attempt, attempt2);
    // A stale report about the old socket is ignored.
    s.handle_closed(attempt, Some(1000), "old", t(at));
    assert!(s.handle_connected(attempt2, t(at)));
    drain(&mut s);
    s.handle_frame(
        Incoming::Text(r#"{"type":"auth_success","user":"root","role":"system"}"#),
        t(at),
    );
    let out = drain(&mut s);
    let sub = &texts(&out)[0];
    assert_eq!(sub["subscription"]["options"]["from"].as_i64(), Some(1000), "{sub}");
    s.handle_frame(
        Incoming::Text(r#"{"type":"subscription_ack","subscription_id":"k1","total_rows":0,"schema":[]}"#),
        t(at),
    );
    let out = drain(&mut s);
    assert!(
        matches!(&out[0], WsOutput::Event(WsEvent::Sub(id, LiveEvent::Subscribed { resumed_from: Some(1000), .. })) if *id == a)
    );
}

#[test]
fn backoff_grows_with_jitter_is_capped_and_deterministic() {
    let config = WsConfig {
        reconnect_delay: Duration::from_millis(100),
        max_reconnect_delay: Duration::from_millis(1600),
        ..WsConfig::default()
    };
    let schedule = |seed: u64| {
        let mut s = session(WsConfig { seed, ..config.clone() });
        s.connect(t(0));
        let mut now = 0u64;
        let mut delays = vec![];
        for _ in 0..8 {
            drain(&mut s);
            s.handle_token(Ok(Secret::new("tok")), t(now));
            let attempt = connect_attempt(&drain(&mut s));
            s.handle_closed(attempt, None, "refused", t(now));
            drain(&mut s);
            let wake = s.poll_timeout().unwrap().as_duration().as_millis() as u64;
            delays.push(wake - now);
            now = wake;
            s.handle_timeout(t(now));
        }
        delays
    };
    let d = schedule(7);
    assert_eq!(d, schedule(7), "same seed, same schedule");
    assert_ne!(d, schedule(8), "another seed, other jitter");
    for (i, &ms) in d.iter().enumerate() {
        let cap = (100u64 << i).min(1600);
        assert!(
            ms >= cap / 2 && ms <= cap,
            "attempt {i}: {ms} ms not in [{}, {cap}]",
            cap / 2
        );
    }
}

#[test]
fn gives_up_after_max_attempts() {
    let mut s = session(WsConfig {
        max_reconnect_attempts: Some(2),
        ..WsConfig::default()
    });
    s.connect(t(0));
    let mut now = 0;
    for _ in 0..3 {
        drain(&mut s);
        s.handle_token(Ok(Secret::new("tok")), t(now));
        let attempt = connect_attempt(&drain(&mut s));
        s.handle_closed(attempt, None, "refused", t(now));
        if let Some(w) = s.poll_timeout() {
            now = w.as_duration().as_millis() as u64;
            drain(&mut s);
            s.handle_timeout(t(now));
        }
    }
    let out = drain(&mut s);
    assert!(
        out.iter().any(|o| matches!(
            o,
            WsOutput::Event(WsEvent::Disconnected {
                will_reconnect: false,
                ..
            })
        )),
        "{out:?}"
    );
    assert_eq!(s.state(), WsState::Failed);
    assert_eq!(s.poll_timeout(), None, "no more attempts scheduled");
}

#[test]
fn auth_error_rejects_token_never_reuses_it_and_surfaces_once() {
    let mut s = session(WsConfig::default());
    let sub = s.subscribe("SELECT * FROM demo.items", None, t(0)).unwrap();
    drain(&mut s);
    s.handle_token(Ok(Secret::new("bad")), t(0));
    let attempt = connect_attempt(&drain(&mut s));
    s.handle_connected(attempt, t(0));
    drain(&mut s);
    s.handle_frame(
        Incoming::Text(r#"{"type":"auth_error","message":"Invalid credentials"}"#),
        t(5),
    );
    let out = drain(&mut s);
    assert!(matches!(&out[0], WsOutput::TokenRejected(tok) if tok.expose() == "bad"));
    assert!(out.iter().any(|o| matches!(o, WsOutput::Close { .. })));
    assert!(
        !out.iter().any(|o| matches!(o, WsOutput::Event(WsEvent::Error(_)))),
        "not reported yet: new credentials may fix it: {out:?}"
    );
    // The server's close 1008 arrives after: nothing more happens.
    s.handle_closed(attempt, Some(1008), "Authentication failed", t(6));
    assert!(drain(&mut s).is_empty());
    // After the backoff, new credentials are asked for…
    let wake = s.poll_timeout().unwrap();
    s.handle_timeout(Now::new(wake, t(0).unix));
    assert!(matches!(drain(&mut s)[..], [WsOutput::NeedToken { fresh: true }]));
    // …and if the only answer is the same refused token, the session stops,
    // reporting the refusal once, to the hook and in the subscription.
    s.handle_token(Ok(Secret::new("bad")), t(7));
    let out = drain(&mut s);
    assert!(
        out.iter().all(|o| !matches!(o, WsOutput::Connect { .. })),
        "no blind retry: {out:?}"
    );
    let errors = out
        .iter()
        .filter(|o| matches!(o, WsOutput::Event(WsEvent::Error(Error::WsAuthFailed(m))) if m == "Invalid credentials"))
        .count();
    assert_eq!(errors, 1, "{out:?}");
    assert!(out.iter().any(|o| matches!(o,
        WsOutput::Event(WsEvent::Sub(id, LiveEvent::Closed(Some(Error::WsAuthFailed(_))))) if *id == sub)));
    assert_eq!(s.state(), WsState::Failed);
    assert_eq!(s.poll_timeout(), None);
    // New credentials revive it.
    s.handle_credentials_changed(t(8));
    assert!(matches!(drain(&mut s)[..], [WsOutput::NeedToken { .. }]));
}

#[test]
fn auth_error_then_fresh_credentials_reconnects_silently() {
    let mut s = session(WsConfig::default());
    s.connect(t(0));
    drain(&mut s);
    s.handle_token(Ok(Secret::new("old")), t(0));
    let attempt = connect_attempt(&drain(&mut s));
    s.handle_connected(attempt, t(0));
    s.handle_frame(
        Incoming::Text(r#"{"type":"auth_error","message":"Invalid credentials"}"#),
        t(1),
    );
    drain(&mut s);
    let wake = s.poll_timeout().unwrap();
    s.handle_timeout(Now::new(wake, t(0).unix));
    drain(&mut s);
    let at = wake.as_duration().as_millis() as u64;
    let (out, _) = {
        s.handle_token(Ok(Secret::new("new")), t(at));
        let attempt = connect_attempt(&drain(&mut s));
        assert!(s.handle_connected(attempt, t(at)));
        drain(&mut s);
        s.handle_frame(
            Incoming::Text(r#"{"type":"auth_success","user":"root","role":"system"}"#),
            t(at),
        );
        (drain(&mut s), ())
    };
    assert!(matches!(out[0], WsOutput::Event(WsEvent::Connected)));
    assert!(!out.iter().any(|o| matches!(o, WsOutput::Event(WsEvent::Error(_)))));
}

#[test]
fn auth_rate_limit_does_not_reject_the_token() {
    let mut s = session(WsConfig::default());
    s.connect(t(0));
    drain(&mut s);
    s.handle_token(Ok(Secret::new("good")), t(0));
    let attempt = connect_attempt(&drain(&mut s));
    s.handle_connected(attempt, t(0));
    drain(&mut s);
    s.handle_frame(
        Incoming::Text(r#"{"type":"auth_error","message":"Too many authentication attempts. Please retry shortly."}"#),
        t(1),
    );
    let out = drain(&mut s);
    assert!(!out.iter().any(|o| matches!(o, WsOutput::TokenRejected(_))), "{out:?}");
    assert_eq!(s.state(), WsState::BackingOff);
}

#[test]
fn no_credentials_fails_without_loop() {
    let mut s = session(WsConfig::default());
    s.connect(t(0));
    drain(&mut s);
    s.handle_token(Err(Error::MissingCredentials), t(0));
    let out = drain(&mut s);
    assert!(matches!(
        &out[..],
        [WsOutput::Event(WsEvent::Error(Error::MissingCredentials))]
    ));
    assert_eq!(s.state(), WsState::Failed);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn pings_when_idle_and_detects_silence() {
    let mut s = session(WsConfig::default());
    s.connect(t(0));
    bring_up(&mut s, "tok", 0);
    // Nothing sent since the authenticate at 0: ping at 5 s.
    assert_eq!(s.poll_timeout(), Some(kalam_proto::Instant::from_millis(5000)));
    s.handle_timeout(t(5000));
    assert!(matches!(drain(&mut s)[..], [WsOutput::SendPing]));
    s.handle_frame(Incoming::Control, t(5001)); // pong
    assert_eq!(s.poll_timeout(), Some(kalam_proto::Instant::from_millis(10_000)));
    // A frame sent pushes the next ping back without re-arming anything.
    let _ = s.subscribe("SELECT * FROM demo.x", None, t(7000)).unwrap();
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(kalam_proto::Instant::from_millis(12_000)));
    // No answer to anything for the silence limit (15 s since 5001): dead.
    for ms in [12_000, 17_000] {
        s.handle_timeout(t(ms));
        drain(&mut s);
    }
    s.handle_timeout(t(20_001));
    let out = drain(&mut s);
    assert!(out.iter().any(|o| matches!(o, WsOutput::Close { .. })), "{out:?}");
    assert_eq!(s.state(), WsState::BackingOff);
}

#[test]
fn subscription_errors_and_connection_errors_are_routed() {
    let mut s = session(WsConfig::default());
    let a = s.subscribe("SELECT * FROM nope", None, t(0)).unwrap();
    let b = s.subscribe("SELECT * FROM demo.ok", None, t(0)).unwrap();
    bring_up(&mut s, "tok", 0);
    s.handle_frame(Incoming::Text(r#"{"type":"error","subscription_id":"k1","code":"INVALID_SQL","message":"Invalid SQL: Query must use namespace.table format"}"#), t(1));
    // The server dropped the next frame (k2's subscribe) for its rate limit:
    // not an error for the application, a retry after a pause.
    s.handle_frame(Incoming::Text(r#"{"type":"error","subscription_id":"rate_limit","code":"RATE_LIMIT_EXCEEDED","message":"Too many messages"}"#), t(2));
    s.handle_frame(Incoming::Text("not json at all ☃"), t(3));
    s.handle_frame(Incoming::Binary(&[0x93, 0x01]), t(3));
    let out = drain(&mut s);
    assert!(
        matches!(&out[0], WsOutput::Event(WsEvent::Sub(id, LiveEvent::Closed(Some(e)))) if *id == a && e.code() == Some(&kalam_proto::ErrorCode::InvalidSql))
    );
    assert!(matches!(&out[1], WsOutput::Event(WsEvent::Error(Error::Decode(_)))));
    assert!(matches!(&out[2], WsOutput::Event(WsEvent::Error(Error::Decode(_)))));
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(s.subscriptions(), 1);
    assert_eq!(s.state(), WsState::Ready, "bad frames lose nothing else");
    // After the pause, k2 is sent again under a new wire id.
    assert_eq!(s.poll_timeout(), Some(kalam_proto::Instant::from_millis(1002)));
    s.handle_timeout(t(1002));
    let out = drain(&mut s);
    assert_eq!(texts(&out)[0]["subscription"]["id"], "k2.1");
    s.unsubscribe(b, t(1004));
    let out = drain(&mut s);
    assert_eq!(
        texts(&out)[0],
        serde_json::json!({"type":"unsubscribe","subscription_id":"k2.1"})
    );
    let _ = SubId(0);
}

#[test]
fn too_long_subscription_is_refused_locally() {
    let mut s = session(WsConfig::default());
    let sql = format!("SELECT * FROM demo.t WHERE name = '{}'", "é".repeat(40_000));
    assert!(matches!(s.subscribe(sql, None, t(0)), Err(Error::InvalidInput(_))));
    assert!(drain(&mut s).is_empty(), "nothing sent, no connection opened");
}

#[test]
fn disconnect_ends_subscriptions_and_stops() {
    let mut s = session(WsConfig::default());
    let a = s.subscribe("SELECT * FROM demo.ok", None, t(0)).unwrap();
    let (_, attempt) = bring_up(&mut s, "tok", 0);
    s.disconnect(t(1));
    let out = drain(&mut s);
    assert!(matches!(out[0], WsOutput::Close { code: 1000, .. }));
    assert!(matches!(&out[1], WsOutput::Event(WsEvent::Sub(id, LiveEvent::Closed(None))) if *id == a));
    assert!(matches!(
        &out[2],
        WsOutput::Event(WsEvent::Disconnected {
            will_reconnect: false,
            ..
        })
    ));
    s.handle_closed(attempt, Some(1000), "bye", t(2));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn explicit_connect_after_giving_up_may_try_the_refused_token_once() {
    let mut s = session(WsConfig::default());
    s.connect(t(0));
    drain(&mut s);
    s.handle_token(Ok(Secret::new("tok")), t(0));
    let attempt = connect_attempt(&drain(&mut s));
    s.handle_connected(attempt, t(0));
    s.handle_frame(
        Incoming::Text(r#"{"type":"auth_error","message":"Invalid credentials"}"#),
        t(1),
    );
    let wake = s.poll_timeout().unwrap();
    s.handle_timeout(Now::new(wake, t(0).unix));
    drain(&mut s);
    s.handle_token(Ok(Secret::new("tok")), t(2));
    assert_eq!(
        s.state(),
        WsState::Failed,
        "automatic retry with the refused token: refused"
    );
    drain(&mut s);
    // The application asks again (connect() or a new subscription).
    let _ = s.subscribe("SELECT * FROM demo.x", None, t(3)).unwrap();
    assert!(matches!(drain(&mut s)[..], [WsOutput::NeedToken { fresh: false }]));
    s.handle_token(Ok(Secret::new("tok")), t(3));
    assert!(
        drain(&mut s).iter().any(|o| matches!(o, WsOutput::Connect { .. })),
        "one explicit attempt"
    );
}
