//! The client core's decisions, one test each, with no runtime: token
//! routing, connect failures, subscription acknowledgements and deadlines,
//! pacing and rate-limit retries, the lag policy, credential-callback
//! deadlines and panics, decoding by request kind, batching, settings.

mod support;

use std::time::Duration;

use kalam_proto::{
    Answer, AuthProvider, ClientConfig, ConnectionOptions, CredentialSource, Decoded, Error, ErrorCode, Hook,
    KalamLinkTimeouts, LiveEvent, Operation, QueryRequest, Reply, RequestKind, SubId, SubscriptionOptions,
    TransportError,
};
use support::{EXPIRED, OK, Pump, T0, config, jwt, login_body};

fn ack(id: &str) -> String {
    format!(
        r#"{{"type":"subscription_ack","subscription_id":"{id}","total_rows":0,"batch_control":{{"batch_num":0,"has_more":false,"status":"ready","last_seq_id":null}},"schema":[{{"name":"id","data_type":"BigInt","index":0}}]}}"#
    )
}

fn insert(id: &str, seq: i64) -> String {
    format!(
        r#"{{"type":"change","subscription_id":"{id}","change_type":"insert","rows":[{{"id":"1","_seq":"{seq}"}}]}}"#
    )
}

/// A pump with a valid token and `n` subscriptions (changes only) sent on a
/// ready socket; returns their waiters and ids.
fn subscribed(n: usize) -> (Pump, Vec<(u64, SubId)>) {
    let mut p = Pump::with_token("a");
    let subs: Vec<(u64, SubId)> = (0..n)
        .map(|i| {
            let (w, sub) = p.subscribe(&format!("SELECT * FROM demo.t{i}"), None);
            (w, sub.unwrap())
        })
        .collect();
    p.bring_up();
    (p, subs)
}

#[test]
fn the_session_gets_its_token_from_the_auth_machine() {
    let mut p = Pump::basic();
    let (w, sub) = p.subscribe("SELECT * FROM demo.t", None);
    assert!(sub.is_some());
    // The session asked for a token; the core routed that to the auth
    // machine, which logs in: no socket before there is a token.
    assert!(p.opens.is_empty());
    let access = jwt("access", T0 + 3600, "from-login");
    assert_eq!(
        p.answer_next(200, &login_body(&access, &jwt("refresh", T0 + 7200, "r"))),
        RequestKind::Login
    );
    assert_eq!(p.opens.len(), 1, "the token went to the session");
    assert!(p.socket_open(p.opens[0].0));
    assert_eq!(p.frames_of("authenticate")[0]["token"], access.as_str());
    assert!(p.result(w).is_none(), "the caller waits for the acknowledgement");
}

#[test]
fn subscribe_answers_the_caller_at_the_ack_not_before() {
    let (mut p, subs) = subscribed(1);
    let (w, sub) = subs[0];
    assert_eq!(p.frames_of("subscribe").len(), 1);
    assert!(p.result(w).is_none());
    let before = p.deliveries;
    p.frame(&ack("k1"));
    assert!(matches!(p.result(w), Some(Ok(Answer::Subscribed(s))) if *s == sub));
    // Subscribed and Ready (no initial data) arrive in one batch.
    assert_eq!(p.deliveries, before + 1);
    let events = p.events(sub);
    assert!(matches!(events[0], LiveEvent::Subscribed { resumed_from: None, .. }));
    assert!(matches!(events[1], LiveEvent::Ready));
    p.frame(&insert("k1", 5));
    assert!(matches!(p.events(sub)[2], LiveEvent::Insert { .. }));
}

#[test]
fn a_refused_subscription_is_an_err_from_the_call() {
    let (mut p, subs) = subscribed(1);
    let (w, sub) = subs[0];
    p.frame(
        r#"{"type":"error","subscription_id":"k1","code":"NOT_FOUND","message":"Not found: Table not found: demo:t0"}"#,
    );
    let e = p.error(w).expect("an error for the caller");
    assert_eq!(e.code(), Some(&ErrorCode::NotFound));
    assert!(p.events(sub).is_empty());
    assert_eq!(p.ended.len(), 1, "the stream's queue is released once");
    assert_eq!(p.core.subscriptions(), 0);
}

#[test]
fn an_unacknowledged_subscription_times_out_and_is_stopped() {
    let (mut p, subs) = subscribed(1);
    let (w, sub) = subs[0];
    p.run_until(4_999);
    assert!(p.result(w).is_none());
    p.run_until(5_000);
    assert!(matches!(p.error(w), Some(Error::SubscribeTimeout(d)) if *d == Duration::from_secs(5)));
    assert!(matches!(p.ended[..], [(s, None)] if s == sub));
    // In case the server answers late, it is told to stop.
    assert_eq!(p.frames_of("unsubscribe")[0]["subscription_id"], "k1");
    // A late ack is not routed anywhere.
    p.frame(&ack("k1"));
    assert!(p.events(sub).is_empty());
}

#[test]
fn resubscribes_after_a_reconnect_wait_on_nobody_but_have_a_deadline() {
    let (mut p, subs) = subscribed(1);
    let (w, sub) = subs[0];
    p.frame(&ack("k1"));
    p.frame(&insert("k1", 42));
    let answered = p.completed.len();
    p.socket_closed(None, "reset");
    p.run_until(2_000); // backoff (≤ 500 ms with jitter), then a fresh token
    assert_eq!(p.opens.len(), 2);
    p.bring_up();
    let resub = p.frames_of("subscribe")[1].clone();
    assert_eq!(
        resub["subscription"]["options"]["from"], 42,
        "resumes after the last _seq"
    );
    p.frame(&ack("k1"));
    assert_eq!(p.completed.len(), answered, "nobody waits on a resubscribe");
    assert!(matches!(p.result(w), Some(Ok(Answer::Subscribed(_)))));
    assert!(matches!(
        p.events(sub)
            .iter()
            .filter(|e| matches!(e, LiveEvent::Subscribed { .. }))
            .count(),
        2
    ));
    // A resubscribe that is never acknowledged ends the stream with a typed
    // error by its deadline.
    p.socket_closed(None, "reset");
    p.run_until(4_500);
    p.bring_up();
    let t = p.now.instant.as_duration().as_millis() as u64;
    p.run_until(t + 5_000);
    assert!(matches!(p.ended.last(), Some((s, Some(Error::SubscribeTimeout(_)))) if *s == sub));
}

/// The server's per-connection limit as it counts it: a bucket of 50 that
/// refills 50 per second, in whole tokens, at most every 10 ms.
struct ServerBucket {
    tokens: u64,
    last_refill_ms: u64,
}

impl ServerBucket {
    fn admit(&mut self, at_ms: u64) -> bool {
        let elapsed = at_ms - self.last_refill_ms;
        if elapsed >= 10 {
            let add = elapsed * 50 / 1000;
            if add > 0 {
                self.tokens = (self.tokens + add).min(50);
                self.last_refill_ms = at_ms;
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[test]
fn eighty_subscriptions_are_paced_below_the_server_rate() {
    let (mut p, subs) = subscribed(80);
    let at_once = p.frames.len();
    assert!(at_once <= 41, "authenticate plus a burst: {at_once}");
    p.run_until(4_000);
    assert_eq!(p.frames_of("subscribe").len(), 80, "all sent well within the deadline");
    let mut bucket = ServerBucket {
        tokens: 50,
        last_refill_ms: 0,
    };
    for (at, f) in &p.frames {
        let ms = at.as_duration().as_millis() as u64;
        assert!(bucket.admit(ms), "the server would refuse {f} at {ms} ms");
    }
    for i in 1..=80 {
        p.frame(&ack(&format!("k{i}")));
    }
    assert!(subs.iter().all(|(w, _)| matches!(p.result(*w), Some(Ok(_)))));
}

#[test]
fn a_frame_refused_for_rate_is_sent_again_and_a_late_answer_is_not_taken_twice() {
    let (mut p, subs) = subscribed(2);
    let (w1, s1) = subs[0];
    // The server refused k1's subscribe (the earliest unanswered frame).
    p.frame(
        r#"{"type":"error","subscription_id":"rate_limit","code":"RATE_LIMIT_EXCEEDED","message":"Too many messages"}"#,
    );
    assert!(p.result(w1).is_none(), "a rate refusal is not the caller's error");
    assert!(p.hooks.iter().all(|h| !matches!(h, Hook::Error(_))));
    let sent = p.frames.len();
    p.run_until(999);
    assert_eq!(p.frames.len(), sent, "paused");
    p.run_until(1_000);
    let retry = p.frames.last().unwrap().1.clone();
    assert_eq!(retry["subscription"]["id"], "k1.1");
    // The original was taken after all (the refused frame was another):
    // its ack is stopped, not delivered.
    p.frame(&ack("k1"));
    assert!(p.result(w1).is_none());
    assert_eq!(p.frames.last().unwrap().1["subscription_id"], "k1");
    p.frame(&ack("k1.1"));
    assert!(matches!(p.result(w1), Some(Ok(Answer::Subscribed(s))) if *s == s1));
    assert_eq!(
        p.events(s1)
            .iter()
            .filter(|e| matches!(e, LiveEvent::Subscribed { .. }))
            .count(),
        1
    );
    p.frame(&insert("k1.1", 3));
    p.frame(&insert("k1", 3)); // the stopped attempt's last gasp
    assert_eq!(
        p.events(s1)
            .iter()
            .filter(|e| matches!(e, LiveEvent::Insert { .. }))
            .count(),
        1
    );
}

#[test]
fn a_repeated_initial_page_is_dropped() {
    let mut p = Pump::with_token("a");
    let (_, sub) = p.subscribe(
        "SELECT * FROM demo.t",
        Some(SubscriptionOptions::default().with_batch_size(1)),
    );
    let sub = sub.unwrap();
    p.bring_up();
    let page = |n: u32, more: bool| {
        format!(
            r#"{{"type":"initial_data_batch","subscription_id":"k1","rows":[{{"id":"{n}","_seq":"{n}"}}],"batch_control":{{"batch_num":{n},"has_more":{more},"status":"loading","last_seq_id":{n}}}}}"#
        )
    };
    p.frame(&ack("k1"));
    p.frame(&page(0, true));
    p.frame(&page(0, true));
    p.frame(&page(1, false));
    let pages = p
        .events(sub)
        .iter()
        .filter(|e| matches!(e, LiveEvent::InitialRows { .. }))
        .count();
    assert_eq!(pages, 2);
    assert_eq!(p.frames_of("next_batch").len(), 1);
}

#[test]
fn a_full_queue_ends_that_subscription_only() {
    let (mut p, subs) = subscribed(2);
    p.frame(&ack("k1"));
    p.frame(&ack("k2"));
    let (a, b) = (subs[0].1, subs[1].1);
    p.full.insert(a);
    p.frame(&insert("k1", 1));
    assert!(matches!(p.ended[..], [(s, Some(Error::SubscriptionLagged { capacity: 1024 }))] if s == a));
    assert_eq!(p.frames_of("unsubscribe")[0]["subscription_id"], "k1");
    p.frame(&insert("k2", 2));
    assert!(matches!(p.events(b).last(), Some(LiveEvent::Insert { .. })));
}

fn with_provider() -> Pump {
    Pump::new(AuthProvider::None, config().with_dynamic_provider(true))
}

#[test]
fn a_credential_callback_that_never_answers_fails_at_its_deadline() {
    let mut p = with_provider();
    let w = p.query("SELECT 1");
    assert_eq!(p.fetches.len(), 1);
    assert_eq!(p.fetches[0].1, CredentialSource::DynamicProvider);
    p.run_until(29_999);
    assert!(p.result(w).is_none());
    p.run_until(30_000);
    match p.error(w) {
        Some(Error::CredentialCallback(inner)) => {
            assert!(
                matches!(**inner, Error::Transport(TransportError::Timeout(_))),
                "{inner:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Its late answer changes nothing and answers nobody twice.
    let id = p.fetches[0].0;
    p.credentials(id, Ok(AuthProvider::jwt_token(jwt("access", T0 + 3600, "late"))));
    assert!(p.http.is_empty());
}

#[test]
fn a_panicking_callback_counts_as_failed() {
    let mut p = with_provider();
    let w = p.query("SELECT 1");
    let id = p.fetches[0].0;
    p.core.handle_callback_panicked(id, p.now);
    p.pump();
    assert!(matches!(p.error(w), Some(Error::CredentialCallback(e)) if e.to_string().contains("panicked")));
    assert_eq!(p.core.poll_timeout(), None, "no deadline left behind");
}

#[test]
fn the_decoder_follows_the_request_kind() {
    let h = http::HeaderMap::new();
    let me = r#"{"user":{"id":"root","role":"system","email":null,"created_at":"x","updated_at":"x"},"admin_ui_access":true}"#;
    assert!(matches!(
        kalam_proto::decode(RequestKind::Me, http::StatusCode::OK, &h, me.as_bytes()),
        Decoded {
            kind: RequestKind::Me,
            result: Ok(Reply::Me(_)),
            ..
        }
    ));
    assert!(matches!(
        kalam_proto::decode(RequestKind::Query, http::StatusCode::OK, &h, EXPIRED.as_bytes()),
        Decoded { kind: RequestKind::Query, result: Err(e), .. } if e.is_token_expired()
    ));
    assert!(matches!(
        kalam_proto::decode(RequestKind::Login, http::StatusCode::OK, &h, b"not json"),
        Decoded {
            result: Err(Error::Decode(_)),
            ..
        }
    ));
    // A driver that decodes in the request's own task feeds the result in.
    let mut p = Pump::with_token("a");
    let w = p.query("SELECT 1");
    let id = p.http[0].id;
    let decoded = kalam_proto::decode(RequestKind::Query, http::StatusCode::OK, &h, OK.as_bytes());
    p.core.handle_http(id, decoded, p.now);
    p.pump();
    assert!(p.query_ok(w));
}

#[test]
fn connect_fails_when_the_session_gives_up_and_succeeds_when_ready() {
    let options = ConnectionOptions::default().with_max_reconnect_attempts(Some(0));
    let config = ClientConfig::new(&options, &KalamLinkTimeouts::default(), 1);
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 3600, "a")), config);
    let w = p.connect();
    assert_eq!(p.opens.len(), 1);
    p.socket_closed(None, "could not connect: connection refused");
    assert!(matches!(p.error(w), Some(Error::Transport(TransportError::Connect(_)))));
    assert!(p.hooks.iter().any(|h| matches!(h, Hook::Error(_))));
    // An explicit connect tries again; once ready, a connect answers at once.
    let w = p.connect();
    p.bring_up();
    assert!(matches!(p.result(w), Some(Ok(Answer::Connected))));
    assert!(p.hooks.iter().any(|h| matches!(h, Hook::Connected)));
    let w = p.connect();
    assert!(matches!(p.result(w), Some(Ok(Answer::Connected))));
}

#[test]
fn disconnect_ends_every_subscription_once_and_answers_waiting_callers() {
    let (mut p, subs) = subscribed(2);
    p.frame(&ack("k1"));
    let w = p.disconnect();
    assert!(matches!(p.result(w), Some(Ok(Answer::Disconnected))));
    assert!(
        matches!(p.error(subs[1].0), Some(Error::Closed)),
        "k2 was never acknowledged"
    );
    assert_eq!(p.ended.len(), 2);
    assert_eq!(p.closes, vec![(1000, "client disconnect")]);
    assert!(p.hooks.iter().any(|h| matches!(h, Hook::Disconnected(_))));
    assert_eq!(p.core.pending_waiters(), 0);
}

#[test]
fn settings_come_from_the_options() {
    let options = ConnectionOptions::default()
        .with_ws_lazy_connect(false)
        .with_subscription_buffer(8);
    let mut options = options;
    options.ping_interval = Duration::from_secs(20);
    let timeouts = KalamLinkTimeouts::default()
        .with_subscribe_timeout(Duration::from_millis(1500))
        .with_receive_timeout(Duration::from_secs(7));
    let c = ClientConfig::new(&options, &timeouts, 3)
        .with_refresher(true)
        .with_token_expiry_skew(Duration::from_secs(5));
    assert_eq!(
        c.ws.ping_interval,
        Duration::from_secs(5),
        "clamped below the server's 10 s"
    );
    assert_eq!(c.ws.subscribe_timeout, Duration::from_millis(1500));
    assert_eq!(c.callback_timeout, Duration::from_secs(7));
    assert_eq!(c.subscription_buffer, 8);
    assert!(c.eager_connect && c.auth.has_refresher && !c.auth.has_dynamic_provider);
    assert_eq!(c.auth.skew, Duration::from_secs(5));
    // Eager: the socket is asked for as soon as the core exists.
    let p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 3600, "a")), c);
    assert_eq!(p.opens.len(), 1);
}

#[test]
fn credentials_from_the_refresher_become_current() {
    let a = jwt("access", T0 + 3600, "initial");
    let b = jwt("access", T0 + 3600, "from-refresher");
    let mut p = Pump::new(AuthProvider::jwt_token(a.clone()), config().with_refresher(true));
    let w = p.query("SELECT 1");
    p.answer_next(401, EXPIRED);
    let (id, source) = p.fetches[0];
    assert_eq!(source, CredentialSource::Refresher);
    p.credentials(id, Ok(AuthProvider::jwt_token(b.clone())));
    assert_eq!(p.http[1].auth.as_deref(), Some(format!("Bearer {b}").as_str()));
    p.answer_next(200, OK);
    assert!(p.query_ok(w));
    assert_eq!(p.core.credentials(), &AuthProvider::jwt_token(b.clone()));
    // Setting the initial credentials again is a change, and takes effect.
    p.set_credentials(AuthProvider::jwt_token(a.clone()));
    let w = p.query("SELECT 1");
    assert_eq!(p.http[2].auth.as_deref(), Some(format!("Bearer {a}").as_str()));
    // The next expiry calls the refresher again.
    p.answer_next(401, EXPIRED);
    assert_eq!(p.fetches.len(), 2);
    assert!(p.result(w).is_none());
}

#[test]
fn an_explicit_operation_reply_goes_to_its_waiter() {
    let mut p = Pump::with_token("a");
    let w = p.submit(Operation::Query(QueryRequest::new("SELECT 1")));
    let other = p.query("SELECT 2");
    p.answer(p.http[1].id, 200, OK);
    assert!(p.query_ok(other) && p.result(w).is_none());
    p.answer(p.http[0].id, 200, OK);
    assert!(matches!(p.result(w), Some(Ok(Answer::Reply(Reply::Query(_))))));
}

#[test]
fn requests_in_flight_are_capped_and_the_rest_wait_in_order() {
    let options = ConnectionOptions::default().with_http_max_connections(2);
    let config = ClientConfig::new(&options, &KalamLinkTimeouts::default(), 1);
    let mut p = Pump::new(AuthProvider::basic_auth("root".into(), "pw".into()), config);
    let waiters: Vec<u64> = (0..5).map(|i| p.query(&format!("SELECT {i}"))).collect();
    let login = login_body(&jwt("access", T0 + 3600, "a"), &jwt("refresh", T0 + 9000, "r"));
    assert_eq!(p.answer_next(200, &login), RequestKind::Login);
    let queries = |p: &Pump| {
        p.http
            .iter()
            .filter(|s| !s.answered && s.kind == RequestKind::Query)
            .count()
    };
    assert_eq!(queries(&p), 2, "two in flight, three waiting");
    let first = p.pending_http().unwrap().id;
    p.answer(first, 200, OK);
    assert_eq!(queries(&p), 2, "a freed place goes to the next one");
    let body: serde_json::Value = serde_json::from_slice(&p.http.last().unwrap().body).unwrap();
    assert_eq!(body["sql"], "SELECT 2", "in order");
    // The server rejects the token: one refresh, which does not wait for a
    // place, then the rest go with the new token, still two at a time.
    let second = p.pending_http().unwrap().id;
    p.answer(second, 401, EXPIRED);
    let refreshed = login_body(&jwt("access", T0 + 7200, "b"), &jwt("refresh", T0 + 9000, "r2"));
    while let Some(s) = p.pending_http() {
        assert!(queries(&p) <= 2);
        let (id, kind) = (s.id, s.kind);
        if kind == RequestKind::Refresh {
            p.answer(id, 200, &refreshed);
        } else {
            p.answer(id, 200, OK);
        }
    }
    assert!(waiters.iter().all(|w| p.query_ok(*w)));
    let sent = |k: RequestKind| p.http.iter().filter(|s| s.kind == k).count();
    assert_eq!(
        (
            sent(RequestKind::Login),
            sent(RequestKind::Refresh),
            sent(RequestKind::Query)
        ),
        (1, 1, 6)
    );
}

#[test]
fn pacing_never_counts_against_the_acknowledgement_deadline() {
    // 200 subscriptions take longer than the 5 s limit to leave at 30 per
    // second; each still gets the full limit from the moment it is sent. The
    // server acknowledges each one 100 ms after it arrives.
    let (mut p, subs) = subscribed(200);
    let mut acked = 0;
    for t in (0..=6_000).step_by(100) {
        p.run_until(t);
        let sent: Vec<String> = p
            .frames_of("subscribe")
            .iter()
            .map(|f| f["subscription"]["id"].as_str().unwrap().to_owned())
            .collect();
        for id in &sent[acked..] {
            p.frame(&ack(id));
        }
        acked = sent.len();
    }
    assert_eq!(acked, 200);
    let last_sent = p.frames_of("subscribe").len();
    assert_eq!(last_sent, 200);
    let last_at = p.frames.last().unwrap().0.as_duration().as_millis() as u64;
    assert!(last_at > 5_000, "the last one left after {last_at} ms");
    assert!(subs.iter().all(|(w, _)| matches!(p.result(*w), Some(Ok(_)))));
}

#[test]
fn an_unsubscribe_that_may_have_been_dropped_for_rate_is_sent_again() {
    let (mut p, subs) = subscribed(2);
    p.frame(&ack("k1"));
    // k1 is dropped by the application, and k3 subscribed, at once: the
    // server then refuses one frame for rate, which cannot be told apart.
    p.unsubscribe(subs[0].1);
    let (w3, _) = p.subscribe("SELECT * FROM demo.t3", None);
    p.frame(&ack("k2"));
    let unsubscribes = p.frames_of("unsubscribe").len();
    p.frame(
        r#"{"type":"error","subscription_id":"rate_limit","code":"RATE_LIMIT_EXCEEDED","message":"Too many messages"}"#,
    );
    p.run_until(p.now.instant.as_duration().as_millis() as u64 + 1_000);
    assert_eq!(
        p.frames_of("unsubscribe").len(),
        unsubscribes + 1,
        "k1's unsubscribe went again"
    );
    assert_eq!(
        p.frames.last().unwrap().1["subscription"]["id"],
        "k3.1",
        "and k3's subscribe"
    );
    p.frame(&ack("k3.1"));
    assert!(matches!(p.result(w3), Some(Ok(Answer::Subscribed(_)))));
}
