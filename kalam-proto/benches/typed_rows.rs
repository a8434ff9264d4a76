//! Typed rows against the bare limit: a SQL answer of 1,000 and 100,000
//! rows of 6 mixed columns, read into `Vec<T>` with
//! `rows::answer_rows_as::<T>` (the client's `query_as`: one pass over the
//! bytes), and with `serde_json::from_slice::<QueryResponse>` +
//! `rows_as::<T>()` (rows kept as values first), against
//! `serde_json::from_slice` straight into a hand-written row-array type of
//! the same shape.
//! `cargo bench -p kalam-proto --bench typed_rows`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Counts allocations, for the per-row figures printed before the timings.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocations_per_row<T>(n: usize, read: impl Fn() -> T) -> f64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    std::hint::black_box(read());
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / n as f64
}

fn bench(c: &mut Criterion) {
    for n in [1_000usize, 100_000] {
        let bytes = answer(n);
        println!(
            "allocations per row, {n} rows: bare {:.2}, answer_rows_as {:.2}, QueryResponse + rows_as {:.2}",
            allocations_per_row(n, || serde_json::from_slice::<Bare>(&bytes).unwrap()),
            allocations_per_row(n, || kalam_proto::rows::answer_rows_as::<Item>(&bytes).unwrap()),
            allocations_per_row(n, || {
                let r: QueryResponse = serde_json::from_slice(&bytes).unwrap();
                r.rows_as::<Item>().unwrap()
            }),
        );
    }
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
