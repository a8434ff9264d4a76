//! Materialised live rows (`LiveRows`, and `LiveRowsAs<T>` beside them)
//! under arbitrary event sequences: subscribes (fresh or resumed, with or
//! without a primary key), pages, inserts, updates of some columns,
//! deletes, with cells of any JSON kind. Never a panic, and after each
//! event: an inserted or updated row is there by its key, a deleted one is
//! gone, and the typed rows are the untyped ones that fit.
#![no_main]

use kalam_proto::{LiveEvent, LiveRow, LiveRows, LiveRowsAs, SchemaField};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Row {
    id: i64,
    name: Option<String>,
    qty: Option<i32>,
}

fn cell(b: u8) -> Value {
    match b % 8 {
        0 => Value::Null,
        1 => json!(b),
        2 => json!(format!("{b}")),
        3 => json!("ü 🚀"),
        4 => json!(-1.5),
        5 => json!({"a": b}),
        6 => json!([b]),
        _ => json!(true),
    }
}

fn row(bytes: &[u8]) -> (String, LiveRow) {
    let id = bytes.first().copied().unwrap_or(0) % 6;
    let mut m = Map::new();
    m.insert("id".into(), json!(id.to_string()));
    for (i, name) in ["name", "qty", "_seq"].iter().enumerate() {
        if let Some(b) = bytes.get(i + 1)
            && b % 5 != 0
        {
            m.insert((*name).into(), cell(*b));
        }
    }
    (id.to_string(), LiveRow::from_map(m))
}

fn schema(keyed: bool) -> Vec<SchemaField> {
    let pk = if keyed { json!(["pk"]) } else { json!([]) };
    serde_json::from_value(json!([
        {"name": "id", "data_type": "BigInt", "index": 0, "flags": pk},
        {"name": "name", "data_type": "Text", "index": 1},
        {"name": "qty", "data_type": "Int", "index": 2},
    ]))
    .expect("a schema")
}

fuzz_target!(|data: &[u8]| {
    let mut raw = LiveRows::new();
    let mut typed = LiveRowsAs::<Row>::new();
    // A subscription starts with `Subscribed`; whether its table has a
    // primary key is the first byte's.
    let keyed = data.first().is_some_and(|b| b % 2 == 0);
    let fresh = LiveEvent::Subscribed {
        schema: schema(keyed),
        resumed_from: None,
    };
    raw.apply(&fresh);
    let _ = typed.apply(&fresh);
    for chunk in data.chunks(4) {
        let (key, r) = row(&chunk[1..]);
        let event = match chunk[0] % 7 {
            0 => LiveEvent::Subscribed {
                schema: schema(keyed),
                resumed_from: chunk.get(2).filter(|b| **b % 2 == 0).map(|b| i64::from(*b)),
            },
            1 => LiveEvent::InitialRows {
                rows: vec![r, row(chunk.get(3..).unwrap_or(&[])).1],
                has_more: chunk.len() % 2 == 0,
            },
            2 => LiveEvent::Ready,
            3 => LiveEvent::Insert { row: r },
            4 => LiveEvent::Update {
                old: row(chunk.get(2..).unwrap_or(&[])).1,
                row: r,
            },
            5 => LiveEvent::Delete { old: r },
            _ => LiveEvent::Reconnecting { reason: "x".into() },
        };
        raw.apply(&event);
        let _ = typed.apply(&event);
        assert!(typed.len() <= typed.raw().len());
        assert_eq!(typed.raw().len(), raw.len());
        assert_eq!(typed.is_ready(), raw.is_ready());
        if keyed {
            match &event {
                LiveEvent::Insert { .. } | LiveEvent::Update { .. } => {
                    assert!(raw.get(&key).is_some(), "row {key} missing after {event:?}")
                }
                LiveEvent::Delete { .. } => {
                    assert!(raw.get(&key).is_none(), "row {key} still there after a delete");
                    assert!(typed.get(&key).is_none());
                }
                _ => {}
            }
        }
        for t in typed.rows() {
            assert!(raw.get(&t.id.to_string()).is_some() || !keyed);
        }
        // The typed rows are exactly the untyped rows that fit.
        let fit = raw.rows().filter(|r| r.to::<Row>().is_ok()).count();
        assert_eq!(
            typed.len(),
            fit,
            "typed rows and the untyped rows that fit differ after {event:?}"
        );
    }
});
