//! Typed rows for every column type the server has: a row of edge values
//! (`i64::MAX` as a BIGINT string, the smallest INT, non-ASCII text, a
//! TIMESTAMP to the microsecond, a DATE, JSON text, a UUID, and on the
//! real server DECIMAL, TIME, DATETIME and a computed timestamp in
//! nanoseconds) and a row of NULLs, read into one struct.

use std::collections::BTreeMap;

use kalam_driver::Runtime;
use kalam_driver::prelude::*;
use kalam_proto::rows::time_columns;

use crate::Backend;
use crate::scenarios::root;

#[derive(Debug, PartialEq, serde::Deserialize)]
struct AllTypes {
    id: i64,
    s: Option<i16>,
    i: Option<i32>,
    f: Option<f32>,
    d: Option<f64>,
    b: Option<bool>,
    t: Option<String>,
    ts: Option<Timestamp>,
    #[serde(deserialize_with = "time_columns::timestamp_opt")]
    ts_time: Option<time::OffsetDateTime>,
    #[serde(deserialize_with = "time_columns::date_opt")]
    day: Option<time::Date>,
    j: Option<BTreeMap<String, Vec<i32>>>,
    u: Option<String>,
    // The real server's types the kit does not have.
    #[serde(default)]
    dec: Option<f64>,
    #[serde(default, deserialize_with = "time_columns::time_of_day_opt")]
    tm: Option<time::Time>,
    #[serde(default, deserialize_with = "time_columns::timestamp_opt")]
    dt: Option<time::OffsetDateTime>,
}

/// Every column type into one struct, on the kit and the real server.
pub async fn every_column_type_reads_into_a_struct<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    client
        .execute_query("CREATE NAMESPACE IF NOT EXISTS conf_types")
        .await
        .expect("namespace");
    let real = b.is_real();
    let (extra_columns, extra_names, extra_values) = if real {
        (
            ", dec DECIMAL(10,2), tm TIME, dt DATETIME",
            ", dec, tm, dt",
            ", 200.75, '12:34:56.000007', '2024-12-05T12:34:56.123456Z'",
        )
    } else {
        ("", "", "")
    };
    client
        .execute_query(&format!(
            "CREATE TABLE IF NOT EXISTS conf_types.all_types (id BIGINT PRIMARY KEY, s SMALLINT, i INT, \
             f FLOAT, d DOUBLE, b BOOLEAN, t TEXT, ts TIMESTAMP, day DATE, j JSON, u UUID{extra_columns})"
        ))
        .await
        .expect("table");
    client
        .execute_query(&format!(
            "INSERT INTO conf_types.all_types (id, s, i, f, d, b, t, ts, day, j, u{extra_names}) VALUES \
             (9223372036854775807, 32767, -2147483648, 1.5, -0.1, true, 'Zoë 🚀 ''q'' \\ ü', \
             '2024-12-05T12:34:56.123456Z', '2024-12-05', '{{\"a\":[1,2]}}', \
             '67e55044-10b1-426f-9247-bb680e5fe0c8'{extra_values})"
        ))
        .await
        .expect("insert edge values");
    client
        .execute_query("INSERT INTO conf_types.all_types (id) VALUES (-9223372036854775807)")
        .await
        .expect("insert NULLs");
    let rows: Vec<AllTypes> = client
        .query_as(format!(
            "SELECT id, s, i, f, d, b, t, ts, ts AS ts_time, day, j, u{extra_names} FROM conf_types.all_types ORDER BY id"
        ))
        .await
        .expect("typed rows");
    assert_eq!(rows.len(), 2);
    let nulls = &rows[0];
    assert_eq!(nulls.id, -9_223_372_036_854_775_807);
    assert!(
        nulls.s.is_none() && nulls.t.is_none() && nulls.ts.is_none() && nulls.day.is_none() && nulls.j.is_none(),
        "{nulls:?}"
    );
    assert!(nulls.dec.is_none() && nulls.tm.is_none() && nulls.dt.is_none());
    let edge = &rows[1];
    assert_eq!(edge.id, i64::MAX);
    assert_eq!(
        (edge.s, edge.i, edge.f, edge.d, edge.b),
        (Some(32767), Some(i32::MIN), Some(1.5), Some(-0.1), Some(true))
    );
    assert_eq!(edge.t.as_deref(), Some("Zoë 🚀 'q' \\ ü"));
    let micros = 1_733_402_096_123_456;
    assert_eq!(edge.ts.map(Timestamp::unix_micros), Some(micros));
    assert_eq!(
        edge.ts_time.map(|t| t.unix_timestamp_nanos()),
        Some(i128::from(micros) * 1000)
    );
    let day = edge.day.expect("a date");
    assert_eq!((day.year(), day.month() as u8, day.day()), (2024, 12, 5));
    assert_eq!(edge.j.as_ref().map(|j| j["a"].clone()), Some(vec![1, 2]));
    assert_eq!(edge.u.as_deref(), Some("67e55044-10b1-426f-9247-bb680e5fe0c8"));
    if real {
        assert_eq!(edge.dec, Some(200.75));
        let tm = edge.tm.expect("a time");
        assert_eq!((tm.hour(), tm.minute(), tm.second(), tm.microsecond()), (12, 34, 56, 7));
        assert_eq!(
            edge.dt.map(|t| t.unix_timestamp_nanos()),
            Some(i128::from(micros) * 1000)
        );
        // DECIMAL as its exact text, by position.
        let text: Vec<(String,)> = client
            .query_as("SELECT dec FROM conf_types.all_types WHERE id = 9223372036854775807")
            .await
            .expect("decimal text");
        assert_eq!(text[0].0, "200.75");
        // A computed timestamp comes in nanoseconds; the same instant.
        #[derive(serde::Deserialize)]
        struct Computed {
            c: Timestamp,
            #[serde(deserialize_with = "time_columns::timestamp")]
            n: time::OffsetDateTime,
        }
        let computed: Vec<Computed> = client
            .query_as("SELECT CAST('2024-12-05T12:34:56.123456789Z' AS TIMESTAMP) AS c, NOW() AS n")
            .await
            .expect("computed timestamps");
        assert_eq!(computed[0].c.unix_nanos(), i128::from(micros) * 1000 + 789);
        assert!(computed[0].n.year() >= 2024, "NOW() read as ns: {}", computed[0].n);
    }
}
