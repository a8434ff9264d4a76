//! Rows straight from a SQL answer's bytes into `Vec<T>`, in one pass
//! ([`answer_rows_as`]): no `serde_json::Value` is built for a row or a
//! cell. The rows arrays are read with the result's column order (its
//! `schema`, which the server writes before `rows`), each row handed to
//! `T` as a map of column name to cell, and each cell read as the field
//! asks, with the same wire rules as [`QueryResult::rows_as`]
//! (see [the module docs](super)).
//!
//! A struct whose fields are the result's columns in the same order (the
//! `fields` serde's derive passes to `deserialize_struct`) is read by
//! position, as serde's derive allows, so no name is compared per row; in
//! any other order, by name. A `Deserialize` written by hand that asks for
//! a struct by its field names must then accept a sequence too, as the
//! derived ones do.
//!
//! The answer is checked as [`decode_query`](crate::framing::decode_query)
//! checks it: `status: "error"` (or an `error` object) is the server's
//! typed error, a body that is not a SQL answer is a
//! [`DecodeError`](crate::DecodeError), and a cell that does not fit is
//! [`CellError::Row`], naming the row and the column.
//!
//! [`QueryResult::rows_as`]: crate::QueryResult::rows_as

use std::fmt;
use std::marker::PhantomData;

use http::{HeaderMap, StatusCode};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::reader::{Ctx, RowsSeed};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::{DecodeError, Result};
use crate::types::{CellError, QueryStatus, SchemaField};

/// The first result's rows of a successful SQL answer (`body`, the whole
/// body of a 2xx answer of `POST /v1/api/sql`) as `T`, read in one pass
/// from the bytes. An answer with no result has no rows.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct User { id: i64, name: String, email: Option<String> }
///
/// let body = r#"{"status":"success","results":[{
///     "schema":[{"name":"id","data_type":"BigInt","index":0},{"name":"name","data_type":"Text","index":1},
///               {"name":"email","data_type":"Text","index":2}],
///     "rows":[["9007199254740993","Zoë",null]],"row_count":1}],"took":0.5}"#;
/// let users: Vec<User> = kalam_proto::rows::answer_rows_as(body.as_bytes()).unwrap();
/// assert_eq!((users[0].id, users[0].name.as_str(), users[0].email.is_none()), (9007199254740993, "Zoë", true));
///
/// let refused = br#"{"status":"error","results":[],"error":{"code":"INVALID_SQL","message":"no"}}"#;
/// assert!(kalam_proto::rows::answer_rows_as::<User>(refused).is_err());
/// ```
pub fn answer_rows_as<T: DeserializeOwned>(body: &[u8]) -> Result<Vec<T>> {
    match read(body, false) {
        Err(Retry::ByName) => read(body, true).map_err(Retry::into_error),
        other => other.map_err(Retry::into_error),
    }
}

/// A reading's failure: an error, or the answer to read again by name.
enum Retry {
    Failed(crate::error::Error),
    ByName,
}

impl Retry {
    fn into_error(self) -> crate::error::Error {
        match self {
            Retry::Failed(e) => e,
            Retry::ByName => DecodeError::new(200, "SQL answer", "a row read by position left cells unread").into(),
        }
    }
}

impl<E: Into<crate::error::Error>> From<E> for Retry {
    fn from(e: E) -> Self {
        Retry::Failed(e.into())
    }
}

fn read<T: DeserializeOwned>(body: &[u8], by_name: bool) -> std::result::Result<Vec<T>, Retry> {
    let ctx = Ctx::default();
    ctx.by_name.set(by_name);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = EnvelopeSeed::<T> {
        ctx: &ctx,
        _t: PhantomData,
    }
    .deserialize(&mut de)
    .and_then(|env| de.end().map(|()| env));
    match parsed {
        Ok(Envelope {
            status: Some(QueryStatus::Success),
            error_object: false,
            rows,
        }) => Ok(rows.unwrap_or_default()),
        // An error envelope, or an answer of an unusual shape: the usual
        // decoder says what it is (the server's error, or a precise
        // complaint), and reads the rows of anything it accepts.
        Ok(_) => Ok(slow_path(body)?),
        Err(_) if ctx.retry.get() => Err(Retry::ByName),
        Err(e) => match ctx.blame.into_inner().filter(|_| e.is_data()) {
            Some(b) => Err(Retry::from(CellError::Row {
                row: b.row,
                column: b.column,
                message: b.message,
            })),
            None => match slow_path::<T>(body) {
                Err(err) => Err(err.into()),
                Ok(_) => Err(DecodeError::new(200, "SQL answer", e).into()),
            },
        },
    }
}

fn slow_path<T: DeserializeOwned>(body: &[u8]) -> Result<Vec<T>> {
    Ok(crate::framing::decode_query(StatusCode::OK, &HeaderMap::new(), body)?.rows_as()?)
}

struct Envelope<T> {
    status: Option<QueryStatus>,
    error_object: bool,
    rows: Option<Vec<T>>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum EnvelopeKey {
    Status,
    Results,
    Error,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ResultKey {
    Schema,
    Rows,
    #[serde(other)]
    Other,
}

struct EnvelopeSeed<'c, T> {
    ctx: &'c Ctx,
    _t: PhantomData<fn() -> T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for EnvelopeSeed<'_, T> {
    type Value = Envelope<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Envelope<T>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for EnvelopeSeed<'_, T> {
    type Value = Envelope<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SQL answer")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Envelope<T>, A::Error> {
        let mut env = Envelope {
            status: None,
            error_object: false,
            rows: None,
        };
        while let Some(key) = map.next_key::<EnvelopeKey>()? {
            match key {
                EnvelopeKey::Status => env.status = Some(map.next_value()?),
                EnvelopeKey::Error => {
                    env.error_object = map.next_value::<Option<Value>>()?.is_some_and(|v| v.is_object())
                }
                EnvelopeKey::Results => env.rows = map.next_value_seed(ResultsSeed::<T>(self.ctx, PhantomData))?,
                EnvelopeKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(env)
    }
}

/// `results`: the first one's rows; the others are skipped.
struct ResultsSeed<'c, T>(&'c Ctx, PhantomData<fn() -> T>);

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for ResultsSeed<'_, T> {
    type Value = Option<Vec<T>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for ResultsSeed<'_, T> {
    type Value = Option<Vec<T>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of results")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
        let first = seq.next_element_seed(FirstResultSeed::<T>(self.0, PhantomData))?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(first)
    }
}

struct FirstResultSeed<'c, T>(&'c Ctx, PhantomData<fn() -> T>);

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for FirstResultSeed<'_, T> {
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Vec<T>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for FirstResultSeed<'_, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a query result")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Vec<T>, A::Error> {
        let mut schema: Option<Vec<SchemaField>> = None;
        let mut rows = None;
        // Rows seen before the schema (not the server's order): kept as
        // values, and read once the names are known.
        let mut early: Option<Vec<Vec<Value>>> = None;
        while let Some(key) = map.next_key::<ResultKey>()? {
            match key {
                ResultKey::Schema => {
                    // Column order is the schema's: a positional reading
                    // decided for another schema does not carry over.
                    self.0.in_order.set(None);
                    schema = Some(map.next_value()?);
                }
                ResultKey::Rows => match &schema {
                    Some(schema) => {
                        let names = column_names(schema);
                        rows = Some(map.next_value_seed(RowsSeed::<T> {
                            ctx: self.0,
                            names: &names,
                            _t: PhantomData,
                        })?);
                    }
                    None => early = Some(map.next_value()?),
                },
                ResultKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if let Some(values) = early {
            let schema = schema.unwrap_or_default();
            let mut out = Vec::with_capacity(values.len());
            for (i, row) in values.iter().enumerate() {
                self.0.row.set(i);
                match super::from_positional(&schema, row) {
                    Ok(t) => out.push(t),
                    Err(e) => {
                        let e = e.at_row(i);
                        if let CellError::Row { column, message, .. } = &e {
                            self.0.blame(column.as_deref(), message);
                        }
                        return Err(de::Error::custom(e));
                    }
                }
            }
            return Ok(out);
        }
        Ok(rows.unwrap_or_default())
    }
}

/// Column names in row order (by each field's `index`, else its place).
fn column_names(schema: &[SchemaField]) -> Vec<&str> {
    let width = schema
        .iter()
        .enumerate()
        .map(|(i, f)| f.index.unwrap_or(i).saturating_add(1))
        .max()
        .unwrap_or(0)
        // A hostile index must not size the list.
        .min(schema.len().max(1) * 4);
    let mut names = vec![""; width];
    for (i, f) in schema.iter().enumerate() {
        if let Some(slot) = names.get_mut(f.index.unwrap_or(i)) {
            *slot = f.name.as_str();
        }
    }
    while names.last() == Some(&"") {
        names.pop();
    }
    names
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::{Error, ErrorCode, FileRef, QueryResponse};

    #[derive(Debug, Deserialize, PartialEq, Clone)]
    struct Order {
        id: i64,
        #[serde(rename = "customer_name")]
        name: String,
        total: f64,
        note: Option<String>,
        #[serde(default)]
        missing: u32,
    }

    fn answer(names: &[&str], rows: serde_json::Value) -> Vec<u8> {
        let schema: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"name": n, "data_type": "Text", "index": i}))
            .collect();
        json!({"status": "success", "results": [{"schema": schema, "rows": rows, "row_count": 1}], "took": 1.0})
            .to_string()
            .into_bytes()
    }

    /// The one-pass reader and the value-based one agree.
    fn both<T: DeserializeOwned + PartialEq + fmt::Debug>(body: &[u8]) -> Result<Vec<T>> {
        let fast = answer_rows_as::<T>(body);
        let slow = slow_path::<T>(body);
        match (&fast, &slow) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("{fast:?} / {slow:?}"),
        }
        fast
    }

    #[test]
    fn rows_by_name_with_the_wire_quirks() {
        let body = answer(
            &["id", "customer_name", "total", "note", "_seq"],
            json!([
                ["9223372036854775807", "Zoë 🚀", "12.50", null, "7"],
                ["-3", "tab\tquote\"", 2, "x", "8"]
            ]),
        );
        let rows: Vec<Order> = both(&body).unwrap();
        assert_eq!(rows[0].id, i64::MAX);
        assert_eq!(rows[0].name, "Zoë 🚀");
        assert_eq!(
            (rows[0].total, rows[0].note.as_deref(), rows[0].missing),
            (12.5, None, 0)
        );
        assert_eq!(
            (rows[1].id, rows[1].name.as_str(), rows[1].total),
            (-3, "tab\tquote\"", 2.0)
        );
        // Tuples by position (a BIGINT kept as text; a number as text; cells
        // past the tuple skipped).
        let t: Vec<(String, String, String)> = both(&body).unwrap();
        assert_eq!(t[0], ("9223372036854775807".into(), "Zoë 🚀".into(), "12.50".into()));
        assert_eq!(t[1].2, "2");
        // A map of everything.
        let m: Vec<std::collections::BTreeMap<String, Value>> = both(&body).unwrap();
        assert_eq!(m[1]["_seq"], json!("8"));
    }

    #[test]
    fn file_and_json_columns_system_columns_and_wide_numbers() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Doc {
            id: u64,
            #[serde(rename = "_seq")]
            seq: i64,
            doc: Option<FileRef>,
            meta: Option<std::collections::BTreeMap<String, Vec<u8>>>,
            tags: Vec<String>,
            big: u128,
            flag: bool,
        }
        let file = r#"{"id":"f1","sub":"s","name":"a.pdf","size":3,"mime":"application/pdf","sha256":"00"}"#;
        let body = answer(
            &["id", "_seq", "doc", "meta", "tags", "big", "flag", "_deleted"],
            json!([
                [
                    1,
                    "77",
                    file,
                    r#"{"a":[1,2]}"#,
                    r#"["x","y"]"#,
                    "340282366920938463463374607431768211455",
                    true,
                    false
                ],
                [2, "78", null, null, ["z"], 5, false, false]
            ]),
        );
        let rows: Vec<Doc> = both(&body).unwrap();
        assert_eq!((rows[0].id, rows[0].seq), (1, 77));
        assert_eq!(rows[0].doc.as_ref().map(|d| d.name.as_str()), Some("a.pdf"));
        assert_eq!(rows[0].meta.as_ref().unwrap()["a"], vec![1, 2]);
        assert_eq!((rows[0].tags.len(), rows[0].big, rows[0].flag), (2, u128::MAX, true));
        assert_eq!(
            (rows[1].doc.is_none(), rows[1].tags.clone(), rows[1].big),
            (true, vec!["z".to_owned()], 5)
        );
    }

    #[test]
    fn a_bad_cell_names_its_row_and_column() {
        let body = answer(
            &["id", "customer_name", "total", "note"],
            json!([[1, "a", 1, null], [2, "b", 2, null], ["x1", "n", 1, null]]),
        );
        let e = both::<Order>(&body).unwrap_err();
        match &e {
            Error::Cell(CellError::Row { row, column, message }) => {
                assert_eq!((*row, column.as_deref()), (2, Some("id")));
                assert!(message.contains("x1") && !message.contains("line"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A missing field: the row, no column.
        let body = answer(&["id"], json!([[1]]));
        match both::<Order>(&body).unwrap_err() {
            Error::Cell(CellError::Row {
                row: 0,
                column: None,
                message,
            }) => {
                assert!(message.contains("customer_name"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        // A row shorter than its schema.
        let body = answer(&["id", "customer_name", "total"], json!([[1, "a", 2.0], [1]]));
        assert!(matches!(
            answer_rows_as::<(i64, String, f64)>(&body),
            Err(Error::Cell(CellError::Row { row: 1, .. }))
        ));
    }

    #[test]
    fn errors_and_odd_answers() {
        let refused = br#"{"status":"error","results":[],"took":0.4,"error":{"code":"INVALID_SQL","message":"no"}}"#;
        match answer_rows_as::<Order>(refused).unwrap_err() {
            Error::Server(e) => assert_eq!(e.code, ErrorCode::InvalidSql),
            other => panic!("{other:?}"),
        }
        for garbage in [
            &b"not json"[..],
            b"",
            b"[]",
            b"{\"status\":\"success\",\"results\":{}}",
            b"{\"status\":7}",
        ] {
            assert!(
                matches!(answer_rows_as::<Order>(garbage), Err(Error::Decode(_))),
                "{garbage:?}"
            );
        }
        // No result, or a DDL result: no rows.
        assert!(
            answer_rows_as::<Order>(br#"{"status":"success","results":[]}"#)
                .unwrap()
                .is_empty()
        );
        let ddl = br#"{"status":"success","results":[{"row_count":0,"message":"Namespace 'a' created"}],"took":1}"#;
        assert!(answer_rows_as::<Order>(ddl).unwrap().is_empty());
        // Rows before their schema, and results after the first.
        let odd = br#"{"results":[{"rows":[["5","n",1.5,null]],"schema":[{"name":"id","data_type":"BigInt","index":0},
            {"name":"customer_name","data_type":"Text","index":1},{"name":"total","data_type":"Double","index":2},
            {"name":"note","data_type":"Text","index":3}]},{"row_count":1}],"status":"success"}"#;
        let rows: Vec<Order> = both(odd).unwrap();
        assert_eq!((rows[0].id, rows[0].total), (5, 1.5));
        // Agrees with QueryResponse::rows_as on every one of them.
        let r: QueryResponse = serde_json::from_slice(odd).unwrap();
        assert_eq!(r.rows_as::<Order>().unwrap(), rows);
    }

    #[test]
    fn a_struct_in_column_order_reads_by_position() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct InOrder {
            id: i64,
            #[serde(rename = "customer_name")]
            name: String,
            #[serde(skip)]
            local: u8,
            total: Option<f64>,
        }
        let body = answer(
            &["id", "customer_name", "total"],
            json!([["1", "a", 1.5], ["2", "b", null], ["3", "c", "x"]]),
        );
        match both::<InOrder>(&body).unwrap_err() {
            Error::Cell(CellError::Row { row: 2, column, .. }) => assert_eq!(column.as_deref(), Some("total")),
            other => panic!("{other:?}"),
        }
        let body = answer(
            &["id", "customer_name", "total"],
            json!([["1", "a", 1.5], ["2", "b", null]]),
        );
        let rows: Vec<InOrder> = both(&body).unwrap();
        assert_eq!(
            rows[1],
            InOrder {
                id: 2,
                name: "b".into(),
                local: 0,
                total: None
            }
        );
        // Same names, another order: by name.
        let body = answer(&["total", "id", "customer_name"], json!([[1.5, "1", "a"]]));
        let rows: Vec<InOrder> = both(&body).unwrap();
        assert_eq!((rows[0].id, rows[0].total), (1, Some(1.5)));
    }

    #[test]
    fn aliases_a_second_schema_and_hostile_indexes() {
        // serde lists a field's aliases among the struct's fields: columns
        // `a, b, c` equal that list, but `c` must get column `c`.
        #[derive(Debug, Deserialize, PartialEq)]
        struct Aliased {
            #[serde(alias = "b")]
            a: i64,
            c: i64,
        }
        let body = answer(&["a", "b", "c"], json!([[1, 2, 3]]));
        match answer_rows_as::<Aliased>(&body) {
            Ok(rows) => assert_eq!(rows, [Aliased { a: 1, c: 3 }].into_iter().collect::<Vec<_>>()),
            // By name, `a` and its alias `b` are the same field twice.
            Err(Error::Cell(CellError::Row { message, .. })) => assert!(message.contains("duplicate"), "{message}"),
            Err(other) => panic!("{other:?}"),
        }
        let body = answer(&["a", "c"], json!([[1, 3]]));
        assert_eq!(answer_rows_as::<Aliased>(&body).unwrap(), [Aliased { a: 1, c: 3 }]);
        // A positional decision does not outlive its schema.
        #[derive(Debug, Deserialize, PartialEq)]
        struct Ab {
            a: i64,
            b: i64,
        }
        let twice = br#"{"status":"success","results":[{"schema":[{"name":"a","data_type":"Int","index":0},{"name":"b","data_type":"Int","index":1}],"rows":[[1,2]],"schema":[{"name":"b","data_type":"Int","index":0},{"name":"a","data_type":"Int","index":1}],"rows":[[1,2]]}]}"#;
        if let Ok(rows) = answer_rows_as::<Ab>(twice) {
            assert_eq!(rows, [Ab { a: 2, b: 1 }]);
        }
        // An index no row could have never sizes anything, nor overflows.
        let hostile = br#"{"status":"success","results":[{"schema":[{"name":"a","data_type":"Text","index":18446744073709551615}],"rows":[["x"]]}]}"#;
        let _ = answer_rows_as::<(String,)>(hostile);
        let _ = answer_rows_as::<Ab>(hostile);
    }

    #[test]
    fn schema_indexes_order_the_names() {
        let body = br#"{"status":"success","results":[{"schema":[
            {"name":"customer_name","data_type":"Text","index":1},{"name":"id","data_type":"BigInt","index":0},
            {"name":"total","data_type":"Double","index":2},{"name":"note","data_type":"Text","index":99999999}],
            "rows":[["4","b",3]]}]}"#;
        let rows: Vec<Order> = answer_rows_as(body).unwrap();
        assert_eq!(
            (rows[0].id, rows[0].name.as_str(), rows[0].note.clone()),
            (4, "b", None)
        );
    }
}
