//! Topics: the consumer API (PROTOCOL §5), pure.
//!
//! - Framing: [`ConsumeRequest`] / [`AckRequest`] bodies and requests,
//!   [`decode_consume`] / [`decode_ack`] for the answers. Messages come out
//!   as [`ConsumerRecord`]s with the payload already decoded from base64.
//! - [`ConsumerState`]: every decision of a consumer loop, with time as an
//!   argument: where the next poll starts, when it may go out (the server
//!   does not long-poll, so an empty poll backs off), when a batch is
//!   committed (auto-commit), and which errors end the consumer. A driver asks
//!   [`next_step`](ConsumerState::next_step), performs it, and feeds the
//!   result back.
//!
//! Requests go through the auth machine like SQL
//! ([`Operation::ConsumeTopic`](crate::Operation::ConsumeTopic),
//! [`Operation::AckTopic`](crate::Operation::AckTopic)): they carry the JWT,
//! count against the in-flight cap, and a `TOKEN_EXPIRED` answer is recovered
//! from and retried once.
//!
//! Delivery is **at least once**: the server resumes a group at its last
//! committed offset + 1, and claims the records a poll hands out for the
//! group until they are acknowledged or the claim expires (60 s by default),
//! so whatever was handed out and not acknowledged in time is delivered
//! again.

use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, Error, ErrorCode, Result};
use crate::framing;
use crate::time::Instant;

/// Where a consumer group starts reading a partition when it has no
/// committed offset there (the server ignores it once the group has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum AutoOffsetReset {
    /// Only messages produced from now on (the server's default).
    #[default]
    Latest,
    /// From the first message still stored.
    Earliest,
    /// From this offset.
    Offset(u64),
}

/// The body of `POST /v1/api/topics/consume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumeRequest {
    /// The topic.
    pub topic_id: String,
    /// The consumer group.
    pub group_id: String,
    /// Where to start without a committed offset.
    pub start: AutoOffsetReset,
    /// Most messages in one answer (server default 100).
    pub limit: u64,
    /// The partition (default 0).
    pub partition_id: u32,
}

impl ConsumeRequest {
    /// A request for `topic` in `group`: from `Latest`, 100 messages, partition 0.
    pub fn new(topic: impl Into<String>, group: impl Into<String>) -> Self {
        ConsumeRequest {
            topic_id: topic.into(),
            group_id: group.into(),
            start: AutoOffsetReset::Latest,
            limit: 100,
            partition_id: 0,
        }
    }

    /// The JSON body; an empty topic or group is refused before sending.
    pub fn to_body(&self) -> Result<Vec<u8>> {
        check_names(&self.topic_id, &self.group_id)?;
        if self.limit == 0 {
            return Err(Error::InvalidInput(
                "a consume limit of 0 would never return a message".into(),
            ));
        }
        serde_json::to_vec(self).map_err(|e| Error::InvalidInput(e.to_string()))
    }
}

/// The body of `POST /v1/api/topics/ack`: commit `upto_offset` (inclusive)
/// as the group's last processed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AckRequest {
    /// The topic.
    pub topic_id: String,
    /// The consumer group.
    pub group_id: String,
    /// The partition.
    pub partition_id: u32,
    /// The last offset processed.
    pub upto_offset: u64,
}

impl AckRequest {
    /// The JSON body; an empty topic or group is refused before sending.
    pub fn to_body(&self) -> Result<Vec<u8>> {
        check_names(&self.topic_id, &self.group_id)?;
        serde_json::to_vec(self).map_err(|e| Error::InvalidInput(e.to_string()))
    }
}

fn check_names(topic: &str, group: &str) -> Result<()> {
    if topic.trim().is_empty() {
        return Err(Error::InvalidInput("the consumer needs a topic".into()));
    }
    if group.trim().is_empty() {
        return Err(Error::InvalidInput("the consumer needs a group id".into()));
    }
    Ok(())
}

/// The operation that produced a topic message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicOp {
    /// A row was inserted.
    Insert,
    /// A row was updated.
    Update,
    /// A row was deleted.
    Delete,
    /// Anything else, verbatim.
    Other(String),
}

impl<'de> Deserialize<'de> for TopicOp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.to_ascii_lowercase().as_str() {
            "insert" => TopicOp::Insert,
            "update" => TopicOp::Update,
            "delete" => TopicOp::Delete,
            _ => TopicOp::Other(s),
        })
    }
}

/// One message of a topic, its payload decoded from base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic_id: String,
    /// The partition.
    pub partition_id: u32,
    /// Its offset in the partition: acknowledge it with this.
    pub offset: u64,
    /// The message key, if any.
    pub key: Option<String>,
    /// When it was produced, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The user whose change produced it, when the server says.
    pub user: Option<String>,
    /// The operation that produced it.
    pub op: TopicOp,
    /// The payload bytes (for table-change topics, the row as JSON), or why
    /// they could not be decoded from the server's base64. A message with a
    /// bad payload still comes through, with its offset, so that one bad
    /// message never holds up the batch or the group: acknowledge it to
    /// skip it.
    pub payload: std::result::Result<Vec<u8>, DecodeError>,
}

impl ConsumerRecord {
    /// The payload read as JSON into any `Deserialize` type
    /// (`serde_json::Value` for the row as it is).
    pub fn payload_json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(self.payload_bytes()?)
            .map_err(|e| DecodeError::new(0, "topic message payload", e).into())
    }

    /// The payload bytes, or why they could not be decoded.
    pub fn payload_bytes(&self) -> Result<&[u8]> {
        self.payload.as_deref().map_err(|e| Error::Decode(e.clone()))
    }

    /// The payload as UTF-8 text.
    pub fn payload_str(&self) -> Result<&str> {
        std::str::from_utf8(self.payload_bytes()?).map_err(|e| DecodeError::new(0, "topic message payload", e).into())
    }
}

/// The answer of `POST /v1/api/topics/consume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeResponse {
    /// The messages, in offset order.
    pub messages: Vec<ConsumerRecord>,
    /// The offset after the last message (the start offset when none came).
    pub next_offset: u64,
    /// Exactly `limit` messages came back: more may be waiting.
    pub has_more: bool,
}

/// The answer of `POST /v1/api/topics/ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct AckResponse {
    /// Always true in a success answer.
    #[serde(default)]
    pub success: bool,
    /// The offset now committed for the group.
    pub acknowledged_offset: u64,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    topic_id: String,
    #[serde(default)]
    partition_id: u32,
    offset: u64,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    timestamp_ms: i64,
    #[serde(default)]
    user: Option<String>,
    op: TopicOp,
}

#[derive(Deserialize)]
struct WireConsume {
    messages: Vec<WireMessage>,
    next_offset: u64,
    #[serde(default)]
    has_more: bool,
}

/// Decodes the answer of `/v1/api/topics/consume`. Errors keep the server's
/// code: `FORBIDDEN` (403, the role may not consume), `NOT_FOUND` (404, no
/// such topic), `TOKEN_EXPIRED`…
pub fn decode_consume(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<ConsumeResponse> {
    if !status.is_success() {
        return Err(framing::decode_error(status, headers, body).into());
    }
    let bad = |e: &dyn std::fmt::Display| Error::from(DecodeError::new(status.as_u16(), "topic consume answer", e));
    let wire: WireConsume = serde_json::from_slice(body).map_err(|e| bad(&e))?;
    let mut messages = Vec::with_capacity(wire.messages.len());
    for m in wire.messages {
        let payload = base64::engine::general_purpose::STANDARD
            .decode(m.payload.as_bytes())
            .map_err(|e| {
                DecodeError::new(
                    status.as_u16(),
                    "topic message payload",
                    format_args!("offset {} is not base64: {e}", m.offset),
                )
            });
        messages.push(ConsumerRecord {
            topic_id: m.topic_id,
            partition_id: m.partition_id,
            offset: m.offset,
            key: m.key,
            timestamp_ms: m.timestamp_ms,
            user: m.user,
            op: m.op,
            payload,
        });
    }
    Ok(ConsumeResponse {
        messages,
        next_offset: wire.next_offset,
        has_more: wire.has_more,
    })
}

/// Decodes the answer of `/v1/api/topics/ack`.
pub fn decode_ack(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<AckResponse> {
    if !status.is_success() {
        return Err(framing::decode_error(status, headers, body).into());
    }
    serde_json::from_slice(body).map_err(|e| DecodeError::new(status.as_u16(), "topic ack answer", e).into())
}

// ------------------------------------------------------------------ consumer

/// What a consumer is set to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group_id: String,
    /// The partition.
    pub partition_id: u32,
    /// Where to start when the group has no committed offset.
    pub start: AutoOffsetReset,
    /// Most messages per poll.
    pub max_poll_records: u64,
    /// The wait after an empty poll; it doubles with each further empty poll.
    pub poll_interval: Duration,
    /// The longest wait between polls.
    pub max_backoff: Duration,
    /// Commit each batch when the next one is asked for.
    pub auto_commit: bool,
}

impl ConsumerConfig {
    /// Defaults: `Latest`, partition 0, 100 records per poll, 200 ms poll
    /// interval backing off to 5 s, manual acknowledgement.
    pub fn new(topic: impl Into<String>, group_id: impl Into<String>) -> Self {
        ConsumerConfig {
            topic: topic.into(),
            group_id: group_id.into(),
            partition_id: 0,
            start: AutoOffsetReset::Latest,
            max_poll_records: 100,
            poll_interval: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            auto_commit: false,
        }
    }
}

/// The longest a consumer waits because the server said `Retry-After`
/// (the real server asks for a second or two when rate limiting).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What a consumer loop must do next ([`ConsumerState::next_step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerStep {
    /// Commit this (auto-commit of the batch handed out); feed the result to
    /// [`ConsumerState::handle_ack`] or [`ConsumerState::handle_error`].
    Ack(AckRequest),
    /// Poll; feed the result to [`ConsumerState::handle_consume`] or
    /// [`ConsumerState::handle_error`].
    Consume(ConsumeRequest),
    /// Nothing before this instant (the back-off after an empty poll or an error).
    Wait(Instant),
}

/// The decisions of one consumer: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ConsumerState {
    config: ConsumerConfig,
    /// The offset after the highest one handed out (or where `Latest` was).
    position: Option<u64>,
    /// The highest offset handed out.
    delivered: Option<u64>,
    /// The highest offset this consumer committed.
    committed: Option<u64>,
    /// Empty polls (or errors) in a row.
    idle_streak: u32,
    not_before: Option<Instant>,
}

impl ConsumerState {
    /// A consumer that has handed out nothing yet.
    pub fn new(config: ConsumerConfig) -> Self {
        ConsumerState {
            config,
            position: None,
            delivered: None,
            committed: None,
            idle_streak: 0,
            not_before: None,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// The next offset the consumer will hand out, once known.
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// The highest offset this consumer has handed out.
    pub fn delivered(&self) -> Option<u64> {
        self.delivered
    }

    /// The highest offset this consumer committed.
    pub fn committed(&self) -> Option<u64> {
        self.committed
    }

    /// The wait before the next poll after `streak` empty polls in a row:
    /// `poll_interval`, doubling, at most `max_backoff`.
    pub fn backoff(&self, streak: u32) -> Duration {
        let base = self.config.poll_interval;
        let factor = 1u32 << streak.saturating_sub(1).min(16);
        base.saturating_mul(factor).min(self.config.max_backoff.max(base))
    }

    /// What to do at `now`.
    pub fn next_step(&self, now: Instant) -> ConsumerStep {
        if let Some(at) = self.not_before.filter(|at| *at > now) {
            return ConsumerStep::Wait(at);
        }
        if let Some(upto) = self.pending_commit() {
            return ConsumerStep::Ack(self.ack_request(upto));
        }
        ConsumerStep::Consume(ConsumeRequest {
            topic_id: self.config.topic.clone(),
            group_id: self.config.group_id.clone(),
            // After the first poll the consumer knows where it stands: asking
            // from there again means nothing produced meanwhile is skipped
            // (`Latest` would move to the end each time).
            start: self.position.map_or(self.config.start, AutoOffsetReset::Offset),
            limit: self.config.max_poll_records.max(1),
            partition_id: self.config.partition_id,
        })
    }

    /// The offset auto-commit will commit before the next poll, if any.
    pub fn pending_commit(&self) -> Option<u64> {
        let delivered = self.delivered?;
        (self.config.auto_commit && self.committed.is_none_or(|c| c < delivered)).then_some(delivered)
    }

    /// The request that commits everything up to `offset` (an explicit `ack`).
    pub fn ack_request(&self, offset: u64) -> AckRequest {
        AckRequest {
            topic_id: self.config.topic.clone(),
            group_id: self.config.group_id.clone(),
            partition_id: self.config.partition_id,
            upto_offset: offset,
        }
    }

    /// A poll's answer: returns the messages to hand out and schedules the
    /// next poll: at once after messages, after the back-off when there were
    /// none. Messages the server hands out again (their claim expired before
    /// an acknowledgement) are handed out again: that is at-least-once.
    pub fn handle_consume(&mut self, response: ConsumeResponse, now: Instant) -> Vec<ConsumerRecord> {
        match response.messages.iter().map(|m| m.offset).max() {
            Some(last) => {
                let after = last.saturating_add(1).max(response.next_offset);
                self.position = Some(self.position.map_or(after, |p| p.max(after)));
                self.delivered = Some(self.delivered.map_or(last, |d| d.max(last)));
                self.idle_streak = 0;
                self.not_before = None;
            }
            None => {
                // Nothing new. The first empty answer pins where `Latest` was.
                if self.position.is_none() {
                    self.position = Some(response.next_offset);
                }
                self.idle(now, None);
            }
        }
        response.messages
    }

    /// An acknowledgement went through.
    pub fn handle_ack(&mut self, response: AckResponse) {
        let acked = response.acknowledged_offset;
        self.committed = Some(self.committed.map_or(acked, |c| c.max(acked)));
    }

    /// A poll or a commit failed. Returns whether the consumer should stop:
    /// the role may not consume (`FORBIDDEN`), the topic does not exist
    /// (`NOT_FOUND`), the credentials were refused, the request itself was
    /// refused, or the client has shut down ([`Error::Closed`]). Otherwise the next step waits for the back-off, or for the
    /// server's `Retry-After` when that is longer, up to
    /// [`MAX_RETRY_AFTER`] (a larger number from the network does not park
    /// the consumer for years).
    pub fn handle_error(&mut self, error: &Error, now: Instant) -> bool {
        let fatal = error.is_credentials_rejected()
            || matches!(
                error,
                Error::InvalidInput(_) | Error::MissingCredentials | Error::Closed
            )
            || matches!(error.code(), Some(ErrorCode::Forbidden | ErrorCode::NotFound));
        let retry_after = error
            .server()
            .and_then(|e| e.retry_after_secs)
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        self.idle(now, retry_after);
        fatal
    }

    fn idle(&mut self, now: Instant, at_least: Option<Duration>) {
        self.idle_streak = self.idle_streak.saturating_add(1);
        let wait = self.backoff(self.idle_streak).max(at_least.unwrap_or_default());
        self.not_before = Some(now + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn answer(offsets: &[u64], next: u64, has_more: bool) -> Vec<u8> {
        let msgs: Vec<String> = offsets
            .iter()
            .map(|o| {
                format!(
                    r#"{{"topic_id":"t","partition_id":0,"offset":{o},"payload":"{}","key":null,"timestamp_ms":1700000000000,"user":"root","op":"Insert"}}"#,
                    b64(&format!(r#"{{"id":{o}}}"#))
                )
            })
            .collect();
        format!(
            r#"{{"messages":[{}],"next_offset":{next},"has_more":{has_more}}}"#,
            msgs.join(",")
        )
        .into_bytes()
    }

    fn decode(body: &[u8]) -> ConsumeResponse {
        decode_consume(StatusCode::OK, &HeaderMap::new(), body).unwrap()
    }

    #[test]
    fn request_bodies() {
        let mut r = ConsumeRequest::new("app.orders", "billing");
        assert_eq!(
            String::from_utf8(r.to_body().unwrap()).unwrap(),
            r#"{"topic_id":"app.orders","group_id":"billing","start":"Latest","limit":100,"partition_id":0}"#
        );
        r.start = AutoOffsetReset::Offset(7);
        assert!(
            String::from_utf8(r.to_body().unwrap())
                .unwrap()
                .contains(r#""start":{"Offset":7}"#)
        );
        r.start = AutoOffsetReset::Earliest;
        assert!(
            String::from_utf8(r.to_body().unwrap())
                .unwrap()
                .contains(r#""start":"Earliest""#)
        );
        assert!(matches!(
            ConsumeRequest::new("", "g").to_body(),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            ConsumeRequest::new("t", " ").to_body(),
            Err(Error::InvalidInput(_))
        ));
        let ack = AckRequest {
            topic_id: "t".into(),
            group_id: "g".into(),
            partition_id: 0,
            upto_offset: 41,
        };
        assert_eq!(
            ack.to_body().unwrap(),
            br#"{"topic_id":"t","group_id":"g","partition_id":0,"upto_offset":41}"#
        );
    }

    #[test]
    fn decodes_messages_and_errors() {
        let r = decode(&answer(&[3, 4], 5, true));
        assert_eq!((r.next_offset, r.has_more, r.messages.len()), (5, true, 2));
        let m = &r.messages[0];
        assert_eq!(
            (m.offset, m.op.clone(), m.user.as_deref()),
            (3, TopicOp::Insert, Some("root"))
        );
        assert_eq!(m.payload_json::<serde_json::Value>().unwrap()["id"], 3);
        assert_eq!(m.payload_str().unwrap(), r#"{"id":3}"#);
        let h = HeaderMap::new();
        let e = decode_consume(
            StatusCode::FORBIDDEN,
            &h,
            br#"{"error":"Topic consumption requires service, dba, or system role","code":"FORBIDDEN"}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.code(), e.server().map(|s| s.status)),
            (Some(&ErrorCode::Forbidden), Some(403))
        );
        let e = decode_consume(
            StatusCode::NOT_FOUND,
            &h,
            br#"{"error":"Topic not found: x","code":"NOT_FOUND"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::NotFound));
        let e = decode_consume(
            StatusCode::UNAUTHORIZED,
            &h,
            br#"{"error":{"code":"TOKEN_EXPIRED","message":"Invalid credentials"},"results":[],"status":"error","took":0.1}"#,
        )
        .unwrap_err();
        assert!(e.is_token_expired());
        // A payload that is not base64 spoils its own message, not the batch.
        let bad = br#"{"messages":[{"offset":1,"payload":"%%%","op":"Insert"},{"offset":2,"payload":"e30=","op":"Insert"}],"next_offset":3,"has_more":false}"#;
        let r = decode_consume(StatusCode::OK, &h, bad).unwrap();
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[0].offset, 1);
        assert!(matches!(
            r.messages[0].payload_json::<serde_json::Value>(),
            Err(Error::Decode(_))
        ));
        assert!(r.messages[0].payload_str().is_err());
        assert_eq!(r.messages[1].payload_str().unwrap(), "{}");
        let garbage = br#"{"messages":[{"offset":"x"}],"next_offset":3,"has_more":false}"#;
        assert!(matches!(
            decode_consume(StatusCode::OK, &h, garbage),
            Err(Error::Decode(_))
        ));
        let ack = decode_ack(StatusCode::OK, &h, br#"{"success":true,"acknowledged_offset":9}"#).unwrap();
        assert_eq!(ack.acknowledged_offset, 9);
        let op: TopicOp = serde_json::from_str(r#""Truncate""#).unwrap();
        assert_eq!(op, TopicOp::Other("Truncate".into()));
    }

    fn consume(step: ConsumerStep) -> ConsumeRequest {
        match step {
            ConsumerStep::Consume(r) => r,
            other => panic!("expected a poll, got {other:?}"),
        }
    }

    #[test]
    fn empty_polls_back_off_and_messages_reset_it() {
        let mut c = ConsumerState::new(ConsumerConfig::new("t", "g"));
        let t0 = Instant::from_secs(100);
        assert_eq!(consume(c.next_step(t0)).start, AutoOffsetReset::Latest);
        // Empty: 200 ms, then 400, 800, … capped at 5 s.
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(c.handle_consume(decode(&answer(&[], 10, false)), now).is_empty());
            let ConsumerStep::Wait(at) = c.next_step(now) else {
                panic!("an empty poll must wait")
            };
            waits.push(at.saturating_duration_since(now).as_millis());
            // Just before the deadline, still waiting; at it, a poll.
            assert!(matches!(
                c.next_step(at - Duration::from_millis(1)),
                ConsumerStep::Wait(_)
            ));
            now = at;
            // `Latest` was pinned where it was: nothing produced meanwhile is skipped.
            assert_eq!(consume(c.next_step(now)).start, AutoOffsetReset::Offset(10));
        }
        assert_eq!(waits, vec![200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // Messages: at once again, from after them, and the back-off starts over.
        assert_eq!(c.handle_consume(decode(&answer(&[10, 11], 12, false)), now).len(), 2);
        assert_eq!(consume(c.next_step(now)).start, AutoOffsetReset::Offset(12));
        c.handle_consume(decode(&answer(&[], 12, false)), now);
        assert_eq!(c.next_step(now), ConsumerStep::Wait(now + Duration::from_millis(200)));
    }

    #[test]
    fn auto_commit_commits_each_batch_before_the_next_poll() {
        let mut cfg = ConsumerConfig::new("t", "g");
        cfg.auto_commit = true;
        cfg.start = AutoOffsetReset::Earliest;
        let mut c = ConsumerState::new(cfg);
        let now = Instant::ZERO;
        assert_eq!(consume(c.next_step(now)).start, AutoOffsetReset::Earliest);
        c.handle_consume(decode(&answer(&[0, 1, 2], 3, true)), now);
        let ConsumerStep::Ack(ack) = c.next_step(now) else {
            panic!("the batch is committed before the next poll")
        };
        assert_eq!(ack.upto_offset, 2);
        c.handle_ack(AckResponse {
            success: true,
            acknowledged_offset: 2,
        });
        assert_eq!(c.committed(), Some(2));
        assert_eq!(consume(c.next_step(now)).start, AutoOffsetReset::Offset(3));
        // A failed commit is retried after the back-off, not skipped.
        c.handle_consume(decode(&answer(&[3], 4, false)), now);
        let err = Error::Transport(crate::TransportError::Connect("down".into()));
        assert!(!c.handle_error(&err, now));
        assert!(matches!(c.next_step(now), ConsumerStep::Wait(_)));
        assert!(matches!(c.next_step(now + Duration::from_secs(1)), ConsumerStep::Ack(a) if a.upto_offset == 3));
    }

    #[test]
    fn manual_ack_never_commits_and_redeliveries_are_handed_out_again() {
        let mut c = ConsumerState::new(ConsumerConfig::new("t", "g"));
        let now = Instant::ZERO;
        c.handle_consume(decode(&answer(&[5, 6], 7, false)), now);
        assert!(c.pending_commit().is_none());
        assert!(
            matches!(c.next_step(now), ConsumerStep::Consume(_)),
            "no wait after messages"
        );
        // Not acknowledged in time: the server hands 5 and 6 out again.
        let got = c.handle_consume(decode(&answer(&[5, 6, 7], 8, false)), now + Duration::from_secs(61));
        assert_eq!(got.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![5, 6, 7]);
        assert_eq!((c.position(), c.delivered()), (Some(8), Some(7)));
        // An older answer never moves the position back.
        c.handle_consume(decode(&answer(&[5], 6, false)), now + Duration::from_secs(122));
        assert_eq!(c.position(), Some(8));
    }

    #[test]
    fn errors_that_end_the_consumer() {
        let h = HeaderMap::new();
        let mut c = ConsumerState::new(ConsumerConfig::new("t", "g"));
        let now = Instant::ZERO;
        let forbidden = decode_consume(StatusCode::FORBIDDEN, &h, br#"{"error":"no","code":"FORBIDDEN"}"#).unwrap_err();
        assert!(c.handle_error(&forbidden, now));
        let missing = decode_consume(StatusCode::NOT_FOUND, &h, br#"{"error":"no","code":"NOT_FOUND"}"#).unwrap_err();
        assert!(c.handle_error(&missing, now));
        // A client whose driver is gone answers nothing ever again.
        assert!(c.handle_error(&Error::Closed, now));
        let mut h429 = HeaderMap::new();
        h429.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("3"));
        let limited = decode_consume(StatusCode::TOO_MANY_REQUESTS, &h429, b"slow down").unwrap_err();
        let mut c = ConsumerState::new(ConsumerConfig::new("t", "g"));
        assert!(!c.handle_error(&limited, now));
        assert_eq!(c.next_step(now), ConsumerStep::Wait(now + Duration::from_secs(3)));
        // A Retry-After of u64::MAX seconds: at most MAX_RETRY_AFTER.
        let mut huge = HeaderMap::new();
        huge.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("18446744073709551615"),
        );
        let limited = decode_consume(StatusCode::TOO_MANY_REQUESTS, &huge, b"slow down").unwrap_err();
        assert_eq!(limited.server().and_then(|s| s.retry_after_secs), Some(u64::MAX));
        assert!(!c.handle_error(&limited, now));
        assert_eq!(c.next_step(now), ConsumerStep::Wait(now + MAX_RETRY_AFTER));
    }
}
