//! Typed rows against the bare limit: a SQL answer of 1,000 and 100,000
//! rows of 6 mixed columns, read into `Vec<T>` with
//! `rows::answer_rows_as::<T>` (the client's `query_as`: one pass over the
//! bytes), and with `serde_json::from_slice::<QueryResponse>` +
//! `rows_as::<T>()` (rows kept as values first), against
//! `serde_json::from_slice` straight into a hand-written row-array type of
//! the same shape.
//! `cargo bench -p kalam-proto --bench typed_rows`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kalam_proto::QueryResponse;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Item {
    id: i64,
    name: Option<String>,
    qty: Option<i32>,
    price: Option<f64>,
    active: Option<bool>,
    created: i64,
}

/// The same rows, as a hand-written type of the wire shape (BIGINT as a
/// string, as the server sends it).
#[derive(Deserialize)]
#[allow(dead_code)]
struct Bare {
    results: Vec<BareResult>,
}

/// One row: BIGINT as text, then the other five columns.
type BareRow = (String, Option<String>, Option<i32>, Option<f64>, Option<bool>, i64);

#[derive(Deserialize)]
#[allow(dead_code)]
struct BareResult {
    rows: Vec<BareRow>,
}

fn answer(n: usize) -> Vec<u8> {
    let rows: Vec<_> = (0..n)
        .map(|i| {
            json!([
                (i as i64 * 7_919).to_string(),
                format!("item {i} ünïcode"),
                i as i32 % 1000,
                i as f64 * 0.25,
                i % 2 == 0,
                1_700_000_000_000_000i64 + i as i64
            ])
        })
        .collect();
    // In the server's key order (schema before rows; `json!` would sort
    // the keys).
    let schema = json!([
        {"name": "id", "data_type": "BigInt", "index": 0},
        {"name": "name", "data_type": "Text", "index": 1},
        {"name": "qty", "data_type": "Int", "index": 2},
        {"name": "price", "data_type": "Double", "index": 3},
        {"name": "active", "data_type": "Boolean", "index": 4},
        {"name": "created", "data_type": "Timestamp", "index": 5},
    ]);
    format!(
        r#"{{"status":"success","results":[{{"schema":{schema},"rows":{},"row_count":{n},"as_user":"root"}}],"took":1.0,"error":null}}"#,
        serde_json::Value::Array(rows)
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rows into Vec<T>");
    g.sample_size(20);
    for n in [1_000usize, 100_000] {
        let bytes = answer(n);
        g.bench_with_input(
            BenchmarkId::new("bare serde_json::from_slice", n),
            &bytes,
            |b, bytes| b.iter(|| serde_json::from_slice::<Bare>(bytes).unwrap().results[0].rows.len()),
        );
        g.bench_with_input(BenchmarkId::new("answer_rows_as (one pass)", n), &bytes, |b, bytes| {
            b.iter(|| kalam_proto::rows::answer_rows_as::<Item>(bytes).unwrap().len())
        });
        g.bench_with_input(BenchmarkId::new("QueryResponse + rows_as", n), &bytes, |b, bytes| {
            b.iter(|| {
                let r: QueryResponse = serde_json::from_slice(bytes).unwrap();
                r.rows_as::<Item>().unwrap().len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
