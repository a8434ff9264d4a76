//! Topics (PROTOCOL §5): table-change topics fed by INSERT / UPDATE /
//! DELETE, and `POST /v1/api/topics/consume` / `POST /v1/api/topics/ack`.
//!
//! As on the server:
//! - a topic is created by `CREATE TOPIC ns.name [PARTITIONS n]` and fed by
//!   `ALTER TOPIC ns.name ADD SOURCE ns.table ON INSERT|UPDATE|DELETE
//!   [WHERE …] [WITH (payload = 'full'|'key')]` (admins only; a `WHERE` is
//!   accepted and, like the server, not applied). `DROP TOPIC` and
//!   `CLEAR TOPIC` remove the topic or its messages.
//! - a message's payload is the changed row as JSON (the new row for INSERT
//!   and UPDATE, the deleted row with `_deleted: true` for DELETE), with
//!   `_seq`, `_deleted`, `_commit_seq` (not for STREAM tables) and, in
//!   `full` mode, `_table`
//!   (`ns:table`); its key is the primary key's value; its partition the
//!   key's hash modulo the partitions; `user` the writing user for USER and
//!   STREAM tables.
//! - reading starts at the group's committed offset + 1 when the group has
//!   one for the partition, else at `start`. Like the server, each group and
//!   partition also has a **claim cursor**: offsets a consume handed out are
//!   not handed out again to that group until they are acknowledged or their
//!   claim expires (60 s by default, `TestServerBuilder::topic_visibility_timeout`).
//!   A consume that finds nothing answers `next_offset` = the start offset.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

/// How long a consumed range stays claimed by its group without an ack
/// (the server's default visibility timeout).
pub const DEFAULT_TOPIC_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(60);

/// A table operation a topic route listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    /// `INSERT` / `UPDATE` / `DELETE`, any case.
    pub(crate) fn parse(s: &str) -> Option<Op> {
        match s.to_ascii_uppercase().as_str() {
            "INSERT" => Some(Op::Insert),
            "UPDATE" => Some(Op::Update),
            "DELETE" => Some(Op::Delete),
            _ => None,
        }
    }

    /// As the server spells it in messages and `op`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Insert => "Insert",
            Op::Update => "Update",
            Op::Delete => "Delete",
        }
    }

    fn of_change(kind: &str) -> Op {
        match kind {
            "insert" => Op::Insert,
            "update" => Op::Update,
            _ => Op::Delete,
        }
    }
}

/// A route: the changes of one table and operation feed a topic.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// `ns.table`, lower case.
    pub(crate) table: String,
    pub(crate) op: Op,
    /// `payload = 'key'`: the row without `_table`.
    pub(crate) key_payload: bool,
}

#[derive(Debug, Clone)]
struct Message {
    offset: u64,
    payload: Vec<u8>,
    key: Option<String>,
    timestamp_ms: i64,
    user: Option<String>,
    op: Op,
}

#[derive(Debug)]
struct Topic {
    partitions: u32,
    routes: Vec<Route>,
    /// Messages of each partition, by offset.
    log: Vec<Vec<Message>>,
}

/// A range of offsets handed out to a group and not yet acknowledged.
#[derive(Debug)]
struct Claim {
    start: u64,
    end: u64,
    at: Instant,
}

/// Where a group reads next in a partition, and what it holds.
#[derive(Debug)]
struct Claims {
    cursor: u64,
    pending: Vec<Claim>,
}

impl Claims {
    fn expire(&mut self, now: Instant, timeout: Duration) {
        let mut earliest: Option<u64> = None;
        self.pending.retain(|c| {
            let stale = now.saturating_duration_since(c.at) > timeout;
            if stale {
                earliest = Some(earliest.map_or(c.start, |e| e.min(c.start)));
            }
            !stale
        });
        if let Some(e) = earliest
            && e < self.cursor
        {
            self.cursor = e;
        }
    }

    /// The first offset not claimed, and how many may be read from it
    /// before a later claim.
    fn window(&self, limit: usize) -> (u64, usize) {
        let mut next = self.cursor;
        while let Some(c) = self.pending.iter().find(|c| c.start <= next && next < c.end) {
            next = c.end;
        }
        let room = self
            .pending
            .iter()
            .filter(|c| c.start > next)
            .map(|c| c.start - next)
            .min()
            .unwrap_or(u64::MAX);
        (next, limit.min(usize::try_from(room).unwrap_or(usize::MAX)))
    }

    fn ack(&mut self, upto: u64) {
        self.pending.retain(|c| c.end > upto + 1);
        self.cursor = self.cursor.max(upto + 1);
    }
}

type GroupKey = (String, String, u32);

/// All topics, their messages and the consumer groups' offsets.
#[derive(Debug)]
pub(crate) struct Topics {
    topics: BTreeMap<String, Topic>,
    committed: HashMap<GroupKey, u64>,
    claims: HashMap<GroupKey, Claims>,
    pub(crate) visibility_timeout: Duration,
    jobs: u64,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            topics: BTreeMap::new(),
            committed: HashMap::new(),
            claims: HashMap::new(),
            visibility_timeout: DEFAULT_TOPIC_VISIBILITY_TIMEOUT,
            jobs: 0,
        }
    }
}

/// `start` of a consume request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Start {
    #[default]
    Latest,
    Earliest,
    Offset(u64),
}

impl<'de> Deserialize<'de> for Start {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(s) => match s.to_lowercase().as_str() {
                "latest" => Ok(Start::Latest),
                "earliest" => Ok(Start::Earliest),
                _ => Err(D::Error::custom(format!("Invalid start position: {s}"))),
            },
            Value::Object(m) => match m.get("Offset").or(m.get("offset")) {
                Some(Value::Number(n)) => n
                    .as_u64()
                    .map(Start::Offset)
                    .ok_or_else(|| D::Error::custom("Offset must be a positive integer")),
                _ => Err(D::Error::custom("Expected 'Offset' key with numeric value")),
            },
            _ => Err(D::Error::custom(
                "Expected string ('Latest', 'Earliest') or object {'Offset': n}",
            )),
        }
    }
}

/// The consume body, as the server reads it (unknown fields ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct ConsumeRequest {
    pub(crate) topic_id: String,
    pub(crate) group_id: String,
    #[serde(default)]
    pub(crate) start: Start,
    #[serde(default = "default_limit")]
    pub(crate) limit: u64,
    #[serde(default)]
    pub(crate) partition_id: u32,
    #[serde(default)]
    #[allow(dead_code)] // Accepted and ignored, as by the server.
    pub(crate) timeout_seconds: Option<u64>,
}

fn default_limit() -> u64 {
    100
}

/// The ack body, as the server reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct AckRequest {
    pub(crate) topic_id: String,
    pub(crate) group_id: String,
    #[serde(default)]
    pub(crate) partition_id: u32,
    pub(crate) upto_offset: u64,
}

/// A changed row to publish.
pub(crate) struct Published<'a> {
    /// `ns.table` as created.
    pub(crate) table: &'a str,
    /// `insert`, `update`, `delete`.
    pub(crate) kind: &'a str,
    /// The row (new, or old for a delete), KalamDB-encoded, with `_seq` and `_deleted`.
    pub(crate) row: &'a Map<String, Value>,
    /// Primary key columns.
    pub(crate) pk: &'a [String],
    /// The writing user for USER and STREAM tables.
    pub(crate) user: Option<&'a str>,
    /// The commit's sequence number (`None` for STREAM tables, whose rows
    /// have no `_commit_seq`).
    pub(crate) commit_seq: Option<i64>,
}

impl Topics {
    /// Whether `id` names a topic.
    pub(crate) fn exists(&self, id: &str) -> bool {
        self.topics.contains_key(id)
    }

    /// A new topic; `false` if it exists.
    pub(crate) fn create(&mut self, id: &str, partitions: u32) -> bool {
        if self.exists(id) {
            return false;
        }
        self.topics.insert(
            id.to_owned(),
            Topic {
                partitions,
                routes: Vec::new(),
                log: (0..partitions).map(|_| Vec::new()).collect(),
            },
        );
        true
    }

    /// Adds a route; `Ok(false)` if the same table and operation is routed already.
    pub(crate) fn add_route(&mut self, id: &str, route: Route) -> Option<bool> {
        let t = self.topics.get_mut(id)?;
        if t.routes.iter().any(|r| r.table == route.table && r.op == route.op) {
            return Some(false);
        }
        t.routes.push(route);
        Some(true)
    }

    /// Drops a topic, its messages and its groups' offsets; the cleanup job
    /// id, or `None` if there is no such topic.
    pub(crate) fn drop_topic(&mut self, id: &str) -> Option<String> {
        self.topics.remove(id)?;
        self.committed.retain(|k, _| k.0 != id);
        self.claims.retain(|k, _| k.0 != id);
        Some(self.job_id())
    }

    /// Deletes a topic's messages (offsets go on from where they were).
    pub(crate) fn clear(&mut self, id: &str) -> Option<String> {
        let t = self.topics.get_mut(id)?;
        for p in &mut t.log {
            p.clear();
        }
        Some(self.job_id())
    }

    fn job_id(&mut self) -> String {
        self.jobs += 1;
        let mut h = DefaultHasher::new();
        (std::process::id(), self.jobs, crate::unix_now_ms()).hash(&mut h);
        format!("TC-{:012x}", h.finish() & 0xffff_ffff_ffff)
    }

    /// Appends a change to every topic that routes it.
    pub(crate) fn publish(&mut self, p: Published<'_>) {
        let op = Op::of_change(p.kind);
        let table = p.table.to_ascii_lowercase();
        if !self
            .topics
            .values()
            .any(|t| t.routes.iter().any(|r| r.table == table && r.op == op))
        {
            return;
        }
        let mut row = p.row.clone();
        if let Some(seq) = p.commit_seq {
            row.insert("_commit_seq".into(), json!(seq.to_string()));
        }
        let key = match p.pk {
            [] => None,
            [one] => row.get(one).map(|v| match v {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            }),
            many => {
                let m: BTreeMap<&str, &Value> = many.iter().filter_map(|c| Some((c.as_str(), row.get(c)?))).collect();
                serde_json::to_string(&m).ok()
            }
        };
        let hash = {
            let mut h = DefaultHasher::new();
            match &key {
                Some(k) => k.hash(&mut h),
                None => Value::Object(row.clone()).to_string().hash(&mut h),
            }
            h.finish()
        };
        let key_payload = Value::Object(row.clone()).to_string().into_bytes();
        row.insert("_table".into(), json!(p.table.replacen('.', ":", 1)));
        let full_payload = Value::Object(row).to_string().into_bytes();
        let timestamp_ms = crate::unix_now_ms();
        for t in self.topics.values_mut() {
            let Some(route) = t.routes.iter().find(|r| r.table == table && r.op == op) else {
                continue;
            };
            if t.partitions == 0 {
                continue;
            }
            let partition = &mut t.log[(hash % u64::from(t.partitions)) as usize];
            let offset = partition.last().map_or(0, |m| m.offset + 1);
            partition.push(Message {
                offset,
                payload: if route.key_payload {
                    key_payload.clone()
                } else {
                    full_payload.clone()
                },
                key: key.clone(),
                timestamp_ms,
                user: p.user.map(str::to_owned),
                op,
            });
        }
    }

    /// The consume answer (`messages`, `next_offset`, `has_more`), or
    /// `None` for an unknown topic.
    pub(crate) fn consume(&mut self, r: &ConsumeRequest) -> Option<Value> {
        let topic = self.topics.get(&r.topic_id)?;
        let key: GroupKey = (r.topic_id.clone(), r.group_id.clone(), r.partition_id);
        let log: &[Message] = topic.log.get(r.partition_id as usize).map_or(&[], Vec::as_slice);
        let start = match self.committed.get(&key) {
            Some(c) => c + 1,
            None => match r.start {
                Start::Offset(o) => o,
                Start::Earliest => 0,
                Start::Latest => log.last().map_or(0, |m| m.offset + 1),
            },
        };
        let limit = usize::try_from(r.limit).unwrap_or(usize::MAX);
        let mut messages: Vec<&Message> = Vec::new();
        if limit > 0 {
            let now = Instant::now();
            let claims = self.claims.entry(key).or_insert_with(|| Claims {
                cursor: start,
                pending: Vec::new(),
            });
            claims.expire(now, self.visibility_timeout);
            let (from, room) = claims.window(limit);
            messages = log.iter().filter(|m| m.offset >= from).take(room).collect();
            if let (Some(first), Some(last)) = (messages.first(), messages.last()) {
                claims.cursor = last.offset + 1;
                claims.pending.push(Claim {
                    start: first.offset,
                    end: last.offset + 1,
                    at: now,
                });
            }
        }
        let next_offset = messages.last().map_or(start, |m| m.offset + 1);
        let has_more = messages.len() == limit;
        let b64 = base64::engine::general_purpose::STANDARD;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                let mut o = Map::new();
                o.insert("topic_id".into(), json!(r.topic_id));
                o.insert("partition_id".into(), json!(r.partition_id));
                o.insert("offset".into(), json!(m.offset));
                o.insert("payload".into(), json!(b64.encode(&m.payload)));
                o.insert("key".into(), json!(m.key));
                o.insert("timestamp_ms".into(), json!(m.timestamp_ms));
                if let Some(u) = &m.user {
                    o.insert("user".into(), json!(u));
                }
                o.insert("op".into(), json!(m.op.name()));
                Value::Object(o)
            })
            .collect();
        Some(json!({"messages": messages, "next_offset": next_offset, "has_more": has_more}))
    }

    /// The group's committed offset on a partition.
    pub(crate) fn committed(&self, topic: &str, group: &str, partition: u32) -> Option<u64> {
        self.committed
            .get(&(topic.to_owned(), group.to_owned(), partition))
            .copied()
    }

    /// Messages kept in a partition.
    pub(crate) fn len(&self, topic: &str, partition: u32) -> Option<usize> {
        self.topics.get(topic)?.log.get(partition as usize).map(Vec::len)
    }

    /// Commits `upto_offset` for the group; `None` for an unknown topic.
    pub(crate) fn ack(&mut self, r: &AckRequest) -> Option<Value> {
        if !self.exists(&r.topic_id) {
            return None;
        }
        let key: GroupKey = (r.topic_id.clone(), r.group_id.clone(), r.partition_id);
        self.committed.insert(key.clone(), r.upto_offset);
        match self.claims.get_mut(&key) {
            Some(c) => c.ack(r.upto_offset),
            None => {
                self.claims.insert(
                    key,
                    Claims {
                        cursor: r.upto_offset + 1,
                        pending: Vec::new(),
                    },
                );
            }
        }
        Some(json!({"success": true, "acknowledged_offset": r.upto_offset}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics_with(n: u64) -> Topics {
        let mut t = Topics::default();
        t.create("ns.t", 1);
        t.add_route(
            "ns.t",
            Route {
                table: "ns.items".into(),
                op: Op::Insert,
                key_payload: false,
            },
        );
        for i in 0..n {
            let row: Map<String, Value> = json!({"id": i.to_string(), "_seq": "1", "_deleted": false})
                .as_object()
                .cloned()
                .unwrap_or_default();
            t.publish(Published {
                table: "ns.items",
                kind: "insert",
                row: &row,
                pk: &["id".to_owned()],
                user: None,
                commit_seq: Some(7),
            });
        }
        t
    }

    fn consume(t: &mut Topics, group: &str, start: Start, limit: u64) -> Value {
        t.consume(&ConsumeRequest {
            topic_id: "ns.t".into(),
            group_id: group.into(),
            start,
            limit,
            partition_id: 0,
            timeout_seconds: None,
        })
        .expect("topic exists")
    }

    fn offsets(v: &Value) -> Vec<u64> {
        v["messages"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["offset"].as_u64()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_group_does_not_get_a_claimed_range_twice_until_it_acks() {
        let mut t = topics_with(5);
        let a = consume(&mut t, "g", Start::Earliest, 2);
        assert_eq!(
            (offsets(&a), a["next_offset"].clone(), a["has_more"].clone()),
            (vec![0, 1], json!(2), json!(true))
        );
        let b = consume(&mut t, "g", Start::Earliest, 10);
        assert_eq!(
            (offsets(&b), b["next_offset"].clone(), b["has_more"].clone()),
            (vec![2, 3, 4], json!(5), json!(false))
        );
        // Nothing left unclaimed: next_offset is the start offset.
        let c = consume(&mut t, "g", Start::Earliest, 10);
        assert_eq!((offsets(&c), c["next_offset"].clone()), (vec![], json!(0)));
        // Another group reads everything.
        assert_eq!(
            offsets(&consume(&mut t, "other", Start::Earliest, 10)),
            vec![0, 1, 2, 3, 4]
        );
        // An ack commits; reading resumes at committed + 1 whatever `start` says.
        t.ack(&AckRequest {
            topic_id: "ns.t".into(),
            group_id: "fresh".into(),
            partition_id: 0,
            upto_offset: 2,
        });
        assert_eq!(offsets(&consume(&mut t, "fresh", Start::Latest, 10)), vec![3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_claim_is_handed_out_again() {
        let mut t = topics_with(3);
        assert_eq!(offsets(&consume(&mut t, "g", Start::Earliest, 10)), vec![0, 1, 2]);
        tokio::time::advance(DEFAULT_TOPIC_VISIBILITY_TIMEOUT - Duration::from_secs(1)).await;
        assert_eq!(offsets(&consume(&mut t, "g", Start::Earliest, 10)), Vec::<u64>::new());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(offsets(&consume(&mut t, "g", Start::Earliest, 10)), vec![0, 1, 2]);
    }

    #[test]
    fn latest_starts_after_the_last_message_and_limit_zero_has_more() {
        let mut t = topics_with(3);
        let v = consume(&mut t, "g", Start::Latest, 10);
        assert_eq!((offsets(&v), v["next_offset"].clone()), (vec![], json!(3)));
        let v = consume(&mut t, "h", Start::Offset(1), 0);
        assert_eq!(
            (offsets(&v), v["next_offset"].clone(), v["has_more"].clone()),
            (vec![], json!(1), json!(true))
        );
    }
}
