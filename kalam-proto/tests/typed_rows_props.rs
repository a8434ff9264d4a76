//! Typed rows, by property: any row of the suite's column kinds, in the
//! wire form the server sends (BIGINT as a string, NULL as null, any text),
//! reads back into its struct equal to what was stored.

use kalam_proto::QueryResponse;
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct Item {
    id: i64,
    name: Option<String>,
    qty: Option<i32>,
    price: Option<f64>,
    active: Option<bool>,
}

fn wire(items: &[Item]) -> String {
    let rows: Vec<_> = items
        .iter()
        .map(|i| json!([i.id.to_string(), i.name, i.qty, i.price, i.active]))
        .collect();
    json!({
        "status": "success",
        "results": [{
            "schema": [
                {"name": "id", "data_type": "BigInt", "index": 0},
                {"name": "name", "data_type": "Text", "index": 1},
                {"name": "qty", "data_type": "Int", "index": 2},
                {"name": "price", "data_type": "Double", "index": 3},
                {"name": "active", "data_type": "Boolean", "index": 4},
            ],
            "rows": rows,
            "row_count": items.len(),
        }],
    })
    .to_string()
}

fn item() -> impl Strategy<Value = Item> {
    (
        any::<i64>(),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<i32>()),
        proptest::option::of(any::<f64>().prop_filter("finite", |f| f.is_finite())),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(id, name, qty, price, active)| Item {
            id,
            name,
            qty,
            price,
            active,
        })
}

proptest! {
    #[test]
    fn any_row_reads_back_equal(items in proptest::collection::vec(item(), 0..20)) {
        let response: QueryResponse = serde_json::from_str(&wire(&items)).unwrap();
        let back: Vec<Item> = response.rows_as().unwrap();
        prop_assert_eq!(&back, &items);
        // The one-pass reader (what `query_as` uses) agrees.
        let fast: Vec<Item> = kalam_proto::rows::answer_rows_as(wire(&items).as_bytes()).unwrap();
        prop_assert_eq!(fast, items);
    }

    #[test]
    fn any_bytes_are_an_answer_or_an_error_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = kalam_proto::rows::answer_rows_as::<Item>(&bytes);
        let _ = kalam_proto::rows::answer_rows_as::<(i64, String)>(&bytes);
    }

    #[test]
    fn garbage_cells_are_errors_never_panics(cells in proptest::collection::vec(any::<String>(), 5)) {
        let body = json!({
            "status": "success",
            "results": [{"schema": [], "rows": [cells], "row_count": 1}],
        })
        .to_string();
        let response: QueryResponse = serde_json::from_str(&body).unwrap();
        let _ = response.rows_as::<Item>();
        let _ = response.rows_as::<(i64, bool, f64)>();
        let _ = kalam_proto::rows::answer_rows_as::<Item>(body.as_bytes());
        let _ = kalam_proto::rows::answer_rows_as::<(i64, bool, f64)>(body.as_bytes());
    }
}
