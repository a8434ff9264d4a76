//! Materialised live results: the current rows of a subscription, kept up
//! to date by its events.
//!
//! Rows are kept in a map keyed by primary key, so applying one event costs
//! a map operation, never a copy of the whole set.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::types::SchemaField;
use crate::ws::LiveEvent;
use crate::ws_messages::LiveRow;

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
            LiveEvent::Closed(_) => false,
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

    fn row(v: Value) -> LiveRow {
        LiveRow::from_map(v.as_object().cloned().unwrap())
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
}
