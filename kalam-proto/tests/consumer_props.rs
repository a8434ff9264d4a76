//! Properties of the consumer state machine ([`ConsumerState`]) over random
//! runs: answers with records or none, failures of every kind, clocks that
//! jump. Checked after every step:
//!
//! - a wait is never longer than the back-off cap (or the server's
//!   `Retry-After`), never in the past, and nothing goes out before it;
//! - after records, the next poll may go out at once;
//! - the position never moves back, and a poll never asks from before it;
//! - auto-commit commits only what was handed out, each offset once, and
//!   before the next poll; without it nothing is committed by the machine;
//! - only the errors waiting cannot fix end the consumer.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use kalam_proto::framing::decode_error;
use kalam_proto::topics::decode_consume;
use kalam_proto::{
    AckResponse, AutoOffsetReset, ConsumeResponse, ConsumerConfig, ConsumerState, ConsumerStep, Error, Instant,
    TransportError,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Event {
    /// The server answers the poll with this many records (0: none).
    Records(u8),
    /// The poll or commit fails: 0 transport, 1 rate limit (Retry-After
    /// seconds in the second field), 2 forbidden, 3 unknown topic.
    Fails(u8, u8),
    /// Time passes (milliseconds).
    Elapse(u16),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => Just(Event::Records(0)),
        2 => (1u8..5).prop_map(Event::Records),
        1 => (0u8..4, 0u8..4).prop_map(|(k, s)| Event::Fails(k, s)),
        3 => (0u16..12_000).prop_map(Event::Elapse),
    ]
}

fn answer(first: u64, n: u8) -> ConsumeResponse {
    let msgs: Vec<String> = (0..u64::from(n))
        .map(|i| {
            format!(
                r#"{{"topic_id":"t","partition_id":0,"offset":{},"payload":"e30=","key":null,"timestamp_ms":1,"op":"Insert"}}"#,
                first + i
            )
        })
        .collect();
    let body = format!(
        r#"{{"messages":[{}],"next_offset":{},"has_more":false}}"#,
        msgs.join(","),
        first + u64::from(n)
    );
    decode_consume(StatusCode::OK, &HeaderMap::new(), body.as_bytes()).unwrap()
}

fn server_error(status: u16, body: &str) -> Error {
    let status = StatusCode::from_u16(status).unwrap();
    Error::Server(decode_error(status, &HeaderMap::new(), body.as_bytes()))
}

fn failure(kind: u8, secs: u8) -> Error {
    match kind {
        0 => Error::Transport(TransportError::Connect("down".into())),
        1 => server_error(
            429,
            &format!(r#"{{"error":"RATE_LIMIT_EXCEEDED","message":"slow","retry_after_seconds":{secs}}}"#),
        ),
        2 => server_error(403, r#"{"error":"no","code":"FORBIDDEN"}"#),
        _ => server_error(404, r#"{"error":"no","code":"NOT_FOUND"}"#),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn consumer_decisions_hold(auto_commit in any::<bool>(), events in proptest::collection::vec(event(), 1..120)) {
        let mut config = ConsumerConfig::new("t", "g");
        config.auto_commit = auto_commit;
        config.start = AutoOffsetReset::Earliest;
        config.poll_interval = Duration::from_millis(200);
        config.max_backoff = Duration::from_secs(5);
        let cap = config.max_backoff;
        let mut c = ConsumerState::new(config);
        let mut now = Instant::from_secs(1);
        let mut produced = 0u64; // the server's next offset
        let mut handed_out: Option<u64> = None;
        let mut committed = Vec::new();
        let mut last_position = None;
        let mut retry_after = Duration::ZERO;
        let mut just_delivered = false;
        for e in events {
            let step = c.next_step(now);
            if just_delivered && !(auto_commit && matches!(step, ConsumerStep::Ack(_))) {
                prop_assert!(matches!(step, ConsumerStep::Consume(_)), "after records, at once: {step:?}");
            }
            match (&step, e) {
                (ConsumerStep::Wait(at), Event::Elapse(ms)) => {
                    prop_assert!(*at > now, "a wait in the past");
                    prop_assert!(at.saturating_duration_since(now) <= cap.max(retry_after), "wait over the cap");
                    now = now + Duration::from_millis(u64::from(ms));
                    just_delivered = false;
                }
                (ConsumerStep::Wait(at), _) => {
                    // Nothing may go out: the driver sleeps until then.
                    now = *at;
                    just_delivered = false;
                }
                (ConsumerStep::Ack(ack), Event::Fails(k, s)) => {
                    prop_assert!(auto_commit);
                    prop_assert_eq!(Some(ack.upto_offset), handed_out, "commits what was handed out");
                    retry_after = Duration::from_secs(u64::from(s));
                    let fatal = c.handle_error(&failure(k, s), now);
                    prop_assert_eq!(fatal, k >= 2);
                    if fatal { return Ok(()); }
                    just_delivered = false;
                }
                (ConsumerStep::Ack(ack), _) => {
                    prop_assert!(auto_commit);
                    prop_assert_eq!(Some(ack.upto_offset), handed_out, "commits what was handed out");
                    prop_assert!(!committed.contains(&ack.upto_offset), "each offset committed once");
                    committed.push(ack.upto_offset);
                    c.handle_ack(AckResponse { success: true, acknowledged_offset: ack.upto_offset });
                    just_delivered = false;
                }
                (ConsumerStep::Consume(req), Event::Records(n)) => {
                    if let Some(p) = last_position {
                        prop_assert_eq!(req.start, AutoOffsetReset::Offset(p), "asks from where it stands");
                    }
                    prop_assert!(!auto_commit || c.pending_commit().is_none(), "committed before polling");
                    let got = c.handle_consume(answer(produced, n), now);
                    prop_assert_eq!(got.len(), usize::from(n));
                    produced += u64::from(n);
                    if n > 0 {
                        handed_out = Some(produced - 1);
                    }
                    just_delivered = n > 0;
                    retry_after = Duration::ZERO;
                }
                (ConsumerStep::Consume(_), Event::Fails(k, s)) => {
                    retry_after = Duration::from_secs(u64::from(s));
                    let fatal = c.handle_error(&failure(k, s), now);
                    prop_assert_eq!(fatal, k >= 2);
                    if fatal { return Ok(()); }
                    just_delivered = false;
                }
                (ConsumerStep::Consume(_), Event::Elapse(ms)) => {
                    now = now + Duration::from_millis(u64::from(ms));
                    just_delivered = false;
                    continue;
                }
            }
            if let (Some(before), Some(after)) = (last_position, c.position()) {
                prop_assert!(after >= before, "the position moved back");
            }
            last_position = c.position().or(last_position);
        }
        if !auto_commit {
            prop_assert!(committed.is_empty() && c.committed().is_none(), "manual: the machine commits nothing");
        }
    }
}
