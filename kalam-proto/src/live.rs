//! Live results: a subscription's rows ([`LiveRow`]), its events
//! ([`LiveEvent`]), and its materialised current rows ([`LiveRows`]), kept
//! up to date by those events.
//!
//! Rows are kept in a map keyed by primary key, so applying one event costs
//! a map operation, never a copy of the whole set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::types::{CellError, FromValue, SchemaField};

/// A row of a live query, with the same typed access as a query's
/// [`Row`](crate::Row): `row.get::<i64>("id")?` reads a BIGINT (sent as a
/// JSON string) back as `i64`.
///
/// The server's system columns `_seq` (the change's sequence number) and
/// `_deleted` are kept apart from the user's columns: [`columns`](Self::columns),
/// [`len`](Self::len) and `Debug` leave them out. They are there when asked
/// for by name (`row.get::<bool>("_deleted")`, [`seq`](Self::seq)), and
/// [`as_map`](Self::as_map) shows the row exactly as it came.
#[derive(Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct LiveRow(Map<String, Value>);

/// The server's system columns, kept out of a [`LiveRow`]'s user columns.
pub const SYSTEM_COLUMNS: [&str; 2] = ["_seq", "_deleted"];

fn is_system(name: &str) -> bool {
    SYSTEM_COLUMNS.contains(&name)
}

impl LiveRow {
    /// The row as the application's own type `T` (serde), as
    /// [`QueryResult::rows_as`](crate::QueryResult::rows_as) reads a query
    /// row: fields by column name, the wire forms read as each field asks,
    /// `_seq`/`_deleted` only for a struct that names them. An update's or
    /// delete's `old` values hold only the changed columns and the key: read
    /// them with [`get`](Self::get), or into a struct whose other fields are
    /// `Option` or `#[serde(default)]`.
    pub fn to<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::CellError> {
        crate::rows::from_map(&self.0).map_err(|e| e.at_row(0))
    }

    /// The row as `T`, like [`to`](Self::to), taking it: each cell is
    /// moved into `T`, not copied.
    pub fn into_typed<T: serde::de::DeserializeOwned>(self) -> Result<T, crate::CellError> {
        crate::rows::from_owned_map(self.0).map_err(|e| e.at_row(0))
    }

    /// A row from a column map (as the server sends it).
    pub fn from_map(map: Map<String, Value>) -> Self {
        LiveRow(map)
    }

    /// A column read as `T` (`i64` reads BIGINT strings back, `&str`,
    /// `bool`, `f64`, `Option<T>` for NULL, …).
    ///
    /// The server leaves NULL columns out of change rows (an update's new
    /// image carries only its non-NULL columns, so `SET note = NULL` sends
    /// a row without `note`): an absent column reads as `None` for an
    /// `Option<T>`, and is [`CellError::NoSuchColumn`] for any other type.
    pub fn get<'a, T: FromValue<'a>>(&'a self, column: &str) -> Result<T, CellError> {
        static NULL: Value = Value::Null;
        let Some(value) = self.value(column) else {
            return T::from_value(&NULL).ok_or_else(|| CellError::NoSuchColumn(column.to_owned()));
        };
        T::from_value(value).ok_or_else(|| CellError::WrongType {
            column: column.to_owned(),
            expected: T::EXPECTED,
            found: value.clone(),
        })
    }

    /// A column's raw JSON value.
    pub fn value(&self, column: &str) -> Option<&Value> {
        self.0.get(column)
    }

    /// The user columns, without `_seq` / `_deleted` (in the server's order
    /// when serde_json's `preserve_order` feature is on, else by name).
    pub fn columns(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0
            .iter()
            .filter(|(k, _)| !is_system(k))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Number of user columns.
    pub fn len(&self) -> usize {
        self.columns().count()
    }

    /// No user columns.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A digest of the row's user columns (names and values; not `_seq`
    /// or `_deleted`): equal rows have equal digests, whatever the order
    /// of their columns (which differs between a cluster's nodes).
    pub(crate) fn digest(&self) -> u64 {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        fn one(parts: impl FnOnce(&mut DefaultHasher)) -> u64 {
            let mut h = DefaultHasher::new();
            parts(&mut h);
            h.finish()
        }
        fn value(v: &Value) -> u64 {
            match v {
                Value::Null => 0,
                Value::Bool(b) => one(|h| (1u8, b).hash(h)),
                Value::Number(n) => one(|h| (2u8, n.to_string()).hash(h)),
                Value::String(s) => one(|h| (3u8, s).hash(h)),
                Value::Array(a) => one(|h| {
                    4u8.hash(h);
                    a.iter().for_each(|v| value(v).hash(h));
                }),
                // Members in any order: their digests are summed.
                Value::Object(o) => o
                    .iter()
                    .map(|(k, v)| one(|h| (5u8, k, value(v)).hash(h)))
                    .fold(5, u64::wrapping_add),
            }
        }
        self.0
            .iter()
            .filter(|(k, _)| !is_system(k))
            .map(|(k, v)| one(|h| (k, value(v)).hash(h)))
            .fold(0, u64::wrapping_add)
    }

    /// The change's sequence number (`_seq`, sent as a string).
    pub fn seq(&self) -> Option<i64> {
        match self.0.get("_seq")? {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// Whether the row is marked deleted (`_deleted`).
    pub fn is_deleted(&self) -> bool {
        self.0.get("_deleted").and_then(Value::as_bool).unwrap_or(false)
    }

    /// Every column as the server sent it, system columns included.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The column map, system columns included, to change in place.
    pub fn as_map_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.0
    }

    /// The column map as the server sent it, system columns included.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }
}

impl From<Map<String, Value>> for LiveRow {
    fn from(map: Map<String, Value>) -> Self {
        LiveRow(map)
    }
}

/// `row["name"]` is the column's raw value, or `null` when the row has no
/// such column (never a panic).
impl std::ops::Index<&str> for LiveRow {
    type Output = Value;
    fn index(&self, column: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.value(column).unwrap_or(&NULL)
    }
}

impl std::fmt::Debug for LiveRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.columns()).finish()
    }
}

/// An event of one subscription.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// The server accepted the subscription (again, after a reconnect:
    /// `resumed_from` is then the `_seq` it resumed after).
    Subscribed {
        /// Columns.
        schema: Vec<SchemaField>,
        /// `_seq` of the resume point, after a reconnect.
        resumed_from: Option<i64>,
    },
    /// A page of initial data (after a reconnect: rows changed meanwhile).
    InitialRows {
        /// Rows.
        rows: Vec<LiveRow>,
        /// More pages follow.
        has_more: bool,
    },
    /// Initial data complete: from now on, changes.
    Ready,
    /// A row was inserted.
    Insert {
        /// The new row.
        row: LiveRow,
    },
    /// A row was updated.
    Update {
        /// Non-null columns of the new row, with the key and `_seq`.
        row: LiveRow,
        /// Previous values of the changed columns, with the key and old `_seq`.
        old: LiveRow,
    },
    /// A row was deleted.
    Delete {
        /// The deleted row (with the deletion's `_seq`).
        old: LiveRow,
    },
    /// The connection dropped; the client is reconnecting. When it is back
    /// the subscription resumes after the last change delivered: a
    /// [`Subscribed`](Self::Subscribed) with `resumed_from`, the rows
    /// changed meanwhile as [`InitialRows`](Self::InitialRows), then
    /// [`Ready`](Self::Ready). The rows held so far stay valid.
    Reconnecting {
        /// Why the connection dropped.
        reason: String,
    },
    /// The subscription failed or ended; no more events follow.
    Closed(Option<Error>),
}

/// A [`LiveEvent`] with its rows read as the application's type `T`
/// (serde; see [`LiveRow::to`]). A whole row (initial rows, an insert, an
/// update's new row: NULL columns, which the server leaves out, read as
/// `None`) becomes a `T`. The `old` side of an update or delete holds only
/// the key, the changed columns and `_seq`, so it cannot be a `T`: it stays
/// a [`LiveRow`] (read it with [`get`](LiveRow::get)).
#[derive(Debug, Clone)]
pub enum TypedLiveEvent<T> {
    /// The server accepted the subscription (again, after a reconnect).
    Subscribed {
        /// Columns.
        schema: Vec<SchemaField>,
        /// `_seq` of the resume point, after a reconnect.
        resumed_from: Option<i64>,
    },
    /// A page of initial data.
    InitialRows {
        /// Rows.
        rows: Vec<T>,
        /// More pages follow.
        has_more: bool,
    },
    /// Initial data complete: from now on, changes.
    Ready,
    /// A row was inserted.
    Insert {
        /// The new row.
        row: T,
    },
    /// A row was updated.
    Update {
        /// The new row.
        row: T,
        /// Previous values of the changed columns, with the key and old `_seq`.
        old: LiveRow,
    },
    /// A row was deleted.
    Delete {
        /// The deleted row's key and the deletion's `_seq`.
        old: LiveRow,
    },
    /// The connection dropped; the client is reconnecting.
    Reconnecting {
        /// Why the connection dropped.
        reason: String,
    },
    /// The subscription failed or ended; no more events follow.
    Closed(Option<Error>),
}

impl<T: serde::de::DeserializeOwned> TypedLiveEvent<T> {
    /// The event with its rows read as `T`. A row that does not fit is
    /// [`CellError::Row`] (its index in the page).
    pub fn from_event(event: LiveEvent) -> Result<Self, crate::CellError> {
        Ok(match event {
            LiveEvent::Subscribed { schema, resumed_from } => TypedLiveEvent::Subscribed { schema, resumed_from },
            LiveEvent::InitialRows { rows, has_more } => TypedLiveEvent::InitialRows {
                rows: rows
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| crate::rows::from_owned_map(r.0).map_err(|e| e.at_row(i)))
                    .collect::<Result<_, _>>()?,
                has_more,
            },
            LiveEvent::Ready => TypedLiveEvent::Ready,
            LiveEvent::Insert { row } => TypedLiveEvent::Insert { row: row.into_typed()? },
            LiveEvent::Update { row, old } => TypedLiveEvent::Update {
                row: row.into_typed()?,
                old,
            },
            LiveEvent::Delete { old } => TypedLiveEvent::Delete { old },
            LiveEvent::Reconnecting { reason } => TypedLiveEvent::Reconnecting { reason },
            LiveEvent::Closed(e) => TypedLiveEvent::Closed(e),
        })
    }
}

/// Where a live query stands ([`SubscriptionInfo::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SubscriptionState {
    /// Waiting for a socket, or sent and waiting for the server's
    /// acknowledgement (the first time).
    Subscribing,
    /// Acknowledged; its initial rows are coming.
    Loading,
    /// Initial rows complete; changes are delivered as they commit.
    Live,
    /// The socket dropped after it was acknowledged: waiting for a new
    /// socket, or subscribed again and waiting for the acknowledgement. It
    /// resumes after the last change delivered.
    Resubscribing,
}

/// A live query open on a client, as `subscriptions()` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionInfo {
    /// Its id within the client (the stream's `id()`; what
    /// `cancel_subscription` takes).
    pub id: crate::ws::SubId,
    /// The SQL it was opened with.
    pub sql: String,
    /// `_seq` of the last row delivered (where a resubscription resumes).
    pub last_seq: Option<i64>,
    /// Where it stands.
    pub state: SubscriptionState,
    /// When it was opened (wall clock, since the Unix epoch).
    pub created: std::time::Duration,
    /// When its last event was delivered (wall clock, since the Unix
    /// epoch); `None` before the first.
    pub last_event: Option<std::time::Duration>,
}

/// The current result set of a live query.
#[derive(Debug, Clone, Default)]
pub struct LiveRows {
    key_columns: Vec<String>,
    rows: BTreeMap<Key, LiveRow>,
    ready: bool,
}

/// A row's key, ordered by the key columns' values: integers (which arrive
/// as JSON numbers, or as strings for BIGINT) by value, anything else as
/// text after them. So ids 1, 2, 11 come in that order, not 1, 11, 2.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Int(i64),
    Text(String),
}

impl Part {
    fn of_text(text: &str) -> Part {
        text.parse().map_or_else(|_| Part::Text(text.to_owned()), Part::Int)
    }
}

impl Key {
    /// The key as [`LiveRows::get`] takes it: columns joined with `|`.
    fn parse(text: &str) -> Key {
        Key(text.split('|').map(Part::of_text).collect())
    }
}

impl LiveRows {
    /// An empty set; the key columns come with the subscription's schema.
    pub fn new() -> Self {
        LiveRows::default()
    }

    /// Applies one event. Returns whether the rows (or readiness) changed.
    pub fn apply(&mut self, event: &LiveEvent) -> bool {
        match event {
            LiveEvent::Subscribed { schema, resumed_from } => {
                self.key_columns = key_columns(schema);
                if resumed_from.is_none() {
                    // A fresh start (not a resume): the snapshot replaces all.
                    self.rows.clear();
                }
                self.ready = false;
                true
            }
            LiveEvent::InitialRows { rows, .. } => {
                for row in rows {
                    self.upsert(row.clone());
                }
                !rows.is_empty()
            }
            LiveEvent::Ready => {
                self.ready = true;
                true
            }
            LiveEvent::Insert { row } => {
                self.upsert(row.clone());
                true
            }
            LiveEvent::Update { row, old } => {
                let key = self.key_of(row);
                let entry = self.rows.entry(key).or_default().as_map_mut();
                for (k, v) in row.as_map() {
                    entry.insert(k.clone(), v.clone());
                }
                // A column that became NULL is missing from the new image
                // but present among the old values.
                for k in old.as_map().keys() {
                    if !row.as_map().contains_key(k) {
                        entry.insert(k.clone(), Value::Null);
                    }
                }
                true
            }
            LiveEvent::Delete { old } => {
                let key = self.key_of(old);
                self.rows.remove(&key).is_some()
            }
            LiveEvent::Reconnecting { .. } | LiveEvent::Closed(_) => false,
        }
    }

    /// Whether the initial data is complete.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, ordered by key (integer keys by value).
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &LiveRow> {
        self.rows.values()
    }

    /// The row with this primary key value (as text, e.g. `"42"` for a
    /// BIGINT id; composite keys joined with `|`).
    pub fn get(&self, key: &str) -> Option<&LiveRow> {
        self.rows.get(&Key::parse(key))
    }

    fn upsert(&mut self, row: LiveRow) {
        let key = self.key_of(&row);
        self.rows.insert(key, row);
    }

    fn key_of(&self, row: &LiveRow) -> Key {
        let part = |c: &str| Part::of_text(&row.as_map().get(c).map(cell_text).unwrap_or_default());
        if self.key_columns.is_empty() {
            // No primary key known: the row's own identity is its `_seq`.
            return Key(vec![part("_seq")]);
        }
        Key(self.key_columns.iter().map(|c| part(c)).collect())
    }
}

/// The current result set of a live query as the application's type `T`
/// (serde, read as [`LiveRow::to`] reads), keyed and ordered as
/// [`LiveRows`].
///
/// An update carries only the changed columns; the whole row it leaves is
/// known from the untyped rows kept alongside ([`raw`](Self::raw)), and that
/// whole row is read into `T` again. So memory is about twice the untyped
/// set's.
///
/// A row that does not fit `T` is left out of the typed rows (it stays in
/// [`raw`](Self::raw)), and [`apply`](Self::apply) says so with the
/// [`CellError`]; later events apply as usual.
#[derive(Debug, Clone)]
pub struct LiveRowsAs<T> {
    raw: LiveRows,
    typed: BTreeMap<Key, T>,
}

impl<T> Default for LiveRowsAs<T> {
    fn default() -> Self {
        LiveRowsAs {
            raw: LiveRows::default(),
            typed: BTreeMap::new(),
        }
    }
}

impl<T: serde::de::DeserializeOwned> LiveRowsAs<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event. Returns whether the rows (or readiness) changed,
    /// or the first row of the event that did not fit `T` (the event is
    /// applied all the same).
    pub fn apply(&mut self, event: &LiveEvent) -> Result<bool, CellError> {
        let changed = self.raw.apply(event);
        let mut first_error = None;
        let mut read = |this: &mut Self, row: &LiveRow| {
            let key = this.raw.key_of(row);
            let typed = this.raw.rows.get(&key).map(LiveRow::to::<T>);
            match typed {
                Some(Ok(t)) => {
                    this.typed.insert(key, t);
                }
                Some(Err(e)) => {
                    this.typed.remove(&key);
                    first_error.get_or_insert(e);
                }
                None => {
                    this.typed.remove(&key);
                }
            }
        };
        match event {
            LiveEvent::Subscribed { resumed_from: None, .. } => self.typed.clear(),
            LiveEvent::InitialRows { rows, .. } => rows.iter().for_each(|r| read(self, r)),
            LiveEvent::Insert { row } | LiveEvent::Update { row, .. } => read(self, row),
            LiveEvent::Delete { old } => {
                let key = self.raw.key_of(old);
                self.typed.remove(&key);
            }
            _ => {}
        }
        first_error.map_or(Ok(changed), Err)
    }

    /// Whether the initial data is complete.
    pub fn is_ready(&self) -> bool {
        self.raw.is_ready()
    }

    /// Number of typed rows.
    pub fn len(&self) -> usize {
        self.typed.len()
    }

    /// Whether there are no typed rows.
    pub fn is_empty(&self) -> bool {
        self.typed.is_empty()
    }

    /// The rows, ordered by key (integer keys by value).
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &T> {
        self.typed.values()
    }

    /// The row with this primary key value, as [`LiveRows::get`] takes it.
    pub fn get(&self, key: &str) -> Option<&T> {
        self.typed.get(&Key::parse(key))
    }

    /// The same rows, untyped, exactly as the events left them.
    pub fn raw(&self) -> &LiveRows {
        &self.raw
    }
}

fn key_columns(schema: &[SchemaField]) -> Vec<String> {
    schema
        .iter()
        .filter(|f| f.is_primary_key())
        .map(|f| f.name.clone())
        .collect()
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::ws_messages::{ServerMessage, decode_text};

    fn row(v: Value) -> LiveRow {
        LiveRow::from_map(v.as_object().cloned().unwrap())
    }

    #[test]
    fn a_column_left_out_of_a_change_row_reads_as_none() {
        // `UPDATE … SET note = NULL`: the new image has no `note`.
        let r = row(json!({"id": "1", "name": "a", "_seq": 7}));
        assert_eq!(r.get::<Option<&str>>("note"), Ok(None));
        assert_eq!(r.get::<Option<&str>>("name"), Ok(Some("a")));
        assert_eq!(r.get::<&str>("note"), Err(CellError::NoSuchColumn("note".into())));
        assert_eq!(r.get::<Option<i64>>("id"), Ok(Some(1)));
    }

    #[test]
    fn applies_events_by_key() {
        let schema: Vec<SchemaField> = serde_json::from_value(json!([
            {"name":"id","data_type":"BigInt","index":0,"flags":["pk","nn","uq"]},
            {"name":"name","data_type":"Text","index":1},
            {"name":"note","data_type":"Text","index":2}
        ]))
        .unwrap();
        let mut live = LiveRows::new();
        live.apply(&LiveEvent::Subscribed {
            schema,
            resumed_from: None,
        });
        live.apply(&LiveEvent::InitialRows {
            rows: vec![
                row(json!({"id":"1","name":"apple","note":"x","_seq":"10"})),
                row(json!({"id":"2","name":"banana","note":null,"_seq":"11"})),
            ],
            has_more: false,
        });
        live.apply(&LiveEvent::Ready);
        assert!(live.is_ready());
        live.apply(&LiveEvent::Insert {
            row: row(json!({"id":"3","name":"cherry","_seq":"12"})),
        });
        live.apply(&LiveEvent::Update {
            row: row(json!({"id":"1","name":"apricot","_seq":"13"})),
            old: row(json!({"id":"1","name":"apple","note":"x","_seq":"10"})),
        });
        live.apply(&LiveEvent::Delete {
            old: row(json!({"id":"2","_seq":"14","_deleted":true})),
        });
        assert_eq!(live.len(), 2);
        let one = live.get("1").unwrap();
        assert_eq!(one["name"], "apricot");
        assert_eq!(one["note"], Value::Null, "a column that became NULL is cleared");
        assert_eq!(
            live.rows().map(|r| r["id"].clone()).collect::<Vec<_>>(),
            vec![json!("1"), json!("3")]
        );
        // A resume keeps the rows; a fresh subscribe starts over.
        live.apply(&LiveEvent::Subscribed {
            schema: vec![],
            resumed_from: Some(14),
        });
        assert_eq!(live.len(), 2);
    }

    #[test]
    fn typed_rows_follow_the_events_and_a_row_that_does_not_fit_is_named() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct Fruit {
            id: i64,
            name: String,
            note: Option<String>,
        }
        let schema: Vec<SchemaField> = serde_json::from_value(json!([
            {"name":"id","data_type":"BigInt","index":0,"flags":["pk","nn","uq"]},
            {"name":"name","data_type":"Text","index":1},
            {"name":"note","data_type":"Text","index":2}
        ]))
        .unwrap();
        let mut live = LiveRowsAs::<Fruit>::new();
        let fresh = LiveEvent::Subscribed {
            schema,
            resumed_from: None,
        };
        assert_eq!(live.apply(&fresh), Ok(true));
        live.apply(&LiveEvent::InitialRows {
            rows: vec![
                row(json!({"id":"11","name":"apple","note":"x","_seq":"10"})),
                row(json!({"id":"2","name":"banana","note":null,"_seq":"11"})),
            ],
            has_more: false,
        })
        .unwrap();
        assert!(!live.is_ready());
        live.apply(&LiveEvent::Ready).unwrap();
        assert!(live.is_ready());
        // An update of one column: the whole row is read again.
        live.apply(&LiveEvent::Update {
            row: row(json!({"id":"11","name":"apricot","_seq":"13"})),
            old: row(json!({"id":"11","name":"apple","note":"x","_seq":"10"})),
        })
        .unwrap();
        let apricot = Fruit {
            id: 11,
            name: "apricot".into(),
            note: None,
        };
        assert_eq!(live.get("11"), Some(&apricot));
        assert_eq!(live.rows().map(|f| f.id).collect::<Vec<_>>(), [2, 11]);
        // A row that does not fit: an error naming it; the rest goes on.
        let bad = live.apply(&LiveEvent::Insert {
            row: row(json!({"id":"3","name":"c","note":[7],"_seq":"14"})),
        });
        assert!(
            matches!(bad, Err(CellError::Row { column: Some(ref c), .. }) if c == "note"),
            "{bad:?}"
        );
        assert_eq!((live.len(), live.raw().len()), (2, 3));
        live.apply(&LiveEvent::Update {
            row: row(json!({"id":"3","name":"cherry","_seq":"15"})),
            old: row(json!({"id":"3","name":"c","note":[7],"_seq":"14"})),
        })
        .unwrap();
        live.apply(&LiveEvent::Delete {
            old: row(json!({"id":"2","_seq":"16","_deleted":true})),
        })
        .unwrap();
        assert_eq!(
            live.rows().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["cherry", "apricot"]
        );
        // A fresh subscribe starts over.
        live.apply(&fresh).unwrap();
        assert!(live.is_empty() && live.raw().is_empty());
    }

    #[test]
    fn live_rows_read_typed_and_keep_system_columns_apart() {
        let ServerMessage::Change { rows, .. } = decode_text(
            r#"{"type":"change","subscription_id":"s","change_type":"insert","rows":[{"id":"9007199254740993","name":"é","qty":3,"price":null,"_seq":"382978043261325312","_deleted":false}]}"#,
        )
        .unwrap() else {
            panic!("not a change")
        };
        let row = &rows[0];
        assert_eq!(row.get::<i64>("id").unwrap(), 9_007_199_254_740_993);
        assert_eq!(row.get::<&str>("name").unwrap(), "é");
        assert_eq!(row.get::<i32>("qty").unwrap(), 3);
        assert_eq!(row.get::<Option<f64>>("price").unwrap(), None);
        assert!(matches!(row.get::<i64>("name"), Err(CellError::WrongType { .. })));
        assert!(matches!(row.get::<i64>("nope"), Err(CellError::NoSuchColumn(_))));
        // System columns are not among the user's columns, unless asked for.
        assert_eq!(row.get::<i64>("_seq").unwrap(), 382_978_043_261_325_312);
        // (In the server's order with serde_json's `preserve_order`, else by name.)
        let mut columns: Vec<_> = row.columns().map(|(k, _)| k).collect();
        columns.sort_unstable();
        assert_eq!(columns, ["id", "name", "price", "qty"]);
        assert_eq!(row.len(), 4);
        assert_eq!(row.seq(), Some(382_978_043_261_325_312));
        assert!(!row.is_deleted());
        assert_eq!(row.as_map().len(), 6);
        assert_eq!(row["qty"], 3);
        assert_eq!(row["_deleted"], false);
        assert_eq!(row["missing"], Value::Null);
        let debug = format!("{row:?}");
        assert!(debug.contains("\"name\"") && !debug.contains("_seq"), "{debug}");
    }
}
