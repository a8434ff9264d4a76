//! Rows into the application's own types, with serde: a query result's
//! rows ([`QueryResult::rows_as`](crate::QueryResult::rows_as),
//! [`Row::to`](crate::Row::to)) and a live row ([`LiveRow::to`](crate::LiveRow::to)).
//!
//! Columns map to a struct's fields by name (serde's `rename`, `default`
//! and `Option` work as usual; columns the struct does not name are
//! skipped, so the system columns `_seq` and `_deleted` appear only in a
//! struct that asks for them), or to a tuple by position. KalamDB's wire
//! forms are read as the field asks (PROTOCOL §7):
//!
//! - BIGINT arrives as a JSON string: an integer field reads it (and a
//!   `String` field keeps it as text);
//! - DECIMAL arrives as a string or a number: an `f64` field reads either,
//!   a `String` field gets the text;
//! - TIMESTAMP is an integer, µs since the epoch in tables (ns when
//!   computed): read it as a [`Timestamp`] (which tells the two apart by
//!   magnitude), with the `time` feature as a `time::OffsetDateTime`
//!   (`time_columns`), or as the raw `i64`;
//! - a FILE column (JSON text) reads as a [`FileRef`](crate::FileRef), and
//!   any JSON column as a struct or map;
//! - NULL reads as `None`.
//!
//! A cell that does not fit is a typed error naming the row, the column
//! and what was expected ([`CellError::Row`]); it
//! never panics.

use std::fmt;

mod bytes;
mod cell;
mod reader;
mod timestamp;

pub use bytes::answer_rows_as;
#[cfg(feature = "time")]
pub use timestamp::time_columns;
pub use timestamp::{NANOS_FROM, Timestamp};

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

use self::cell::CellDe;
use crate::types::{CellError, SchemaField};

/// What went wrong deserializing a row, before the row index is known.
#[derive(Debug)]
pub(crate) struct DeError {
    column: Option<String>,
    message: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            column: None,
            message: msg.to_string(),
        }
    }
}

impl DeError {
    fn json(e: serde_json::Error) -> Self {
        de::Error::custom(e)
    }

    fn in_column(mut self, column: &str) -> Self {
        self.column.get_or_insert_with(|| column.to_owned());
        self
    }

    /// The typed error, for row `row`.
    pub(crate) fn at_row(self, row: usize) -> CellError {
        CellError::Row {
            row,
            column: self.column,
            message: self.message,
        }
    }
}

/// A positional row, with its schema's names.
pub(crate) fn from_positional<T: DeserializeOwned>(schema: &[SchemaField], values: &[Value]) -> Result<T, DeError> {
    T::deserialize(RowDe {
        names: Names::Schema(schema),
        values: Values::Positional(values),
    })
}

/// A row as a column map (a live row).
pub(crate) fn from_map<T: DeserializeOwned>(map: &Map<String, Value>) -> Result<T, DeError> {
    T::deserialize(RowDe {
        names: Names::Map,
        values: Values::Map(map),
    })
}

/// A row as an owned column map (a live row taken by value): each cell is
/// moved into `T`, not copied.
pub(crate) fn from_owned_map<T: DeserializeOwned>(map: Map<String, Value>) -> Result<T, DeError> {
    T::deserialize(OwnedRowDe(map))
}

struct OwnedRowDe(Map<String, Value>);

impl<'de> de::Deserializer<'de> for OwnedRowDe {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(OwnedColumns {
            columns: self.0.into_iter(),
            current: None,
        })
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_seq(OwnedColumns {
            columns: self.0.into_iter(),
            current: None,
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct map struct enum identifier ignored_any
    }
}

struct OwnedColumns {
    columns: serde_json::map::IntoIter,
    current: Option<(String, Value)>,
}

impl<'de> MapAccess<'de> for OwnedColumns {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some((name, value)) = self.columns.next() else {
            return Ok(None);
        };
        let key = seed.deserialize(de::value::StrDeserializer::<DeError>::new(&name));
        self.current = Some((name, value));
        key.map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (name, value) = self
            .current
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("a value before its column"))?;
        seed.deserialize(CellDe(value))
            .map_err(|e| DeError::json(e).in_column(&name))
    }
}

impl<'de> SeqAccess<'de> for OwnedColumns {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        let Some((name, value)) = self.columns.next() else {
            return Ok(None);
        };
        seed.deserialize(CellDe(value))
            .map(Some)
            .map_err(|e| DeError::json(e).in_column(&name))
    }
}

enum Names<'a> {
    Schema(&'a [SchemaField]),
    Map,
}

enum Values<'a> {
    Positional(&'a [Value]),
    Map(&'a Map<String, Value>),
}

struct RowDe<'a> {
    names: Names<'a>,
    values: Values<'a>,
}

impl<'a> RowDe<'a> {
    /// (name, value) of every column, in order.
    fn columns(&self) -> Vec<(&'a str, &'a Value)> {
        match (&self.names, &self.values) {
            (Names::Schema(schema), Values::Positional(values)) => values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let name = schema
                        .iter()
                        .find(|s| s.index == Some(i))
                        .or_else(|| schema.get(i))
                        .map_or("", |s| s.name.as_str());
                    (name, v)
                })
                .collect(),
            (_, Values::Map(map)) => map.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            (Names::Map, Values::Positional(values)) => values.iter().map(|v| ("", v)).collect(),
        }
    }
}

impl<'de, 'a: 'de> de::Deserializer<'de> for RowDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(Columns {
            columns: self.columns().into_iter(),
            current: None,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_seq(Positions {
            columns: self.columns().into_iter(),
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct enum identifier ignored_any
    }
}

struct Columns<'a> {
    columns: std::vec::IntoIter<(&'a str, &'a Value)>,
    current: Option<(&'a str, &'a Value)>,
}

impl<'de, 'a: 'de> MapAccess<'de> for Columns<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some((name, value)) = self.columns.next() else {
            return Ok(None);
        };
        self.current = Some((name, value));
        seed.deserialize(name.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (name, value) = self
            .current
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("a value before its column"))?;
        seed.deserialize(CellDe(value))
            .map_err(|e| DeError::json(e).in_column(name))
    }
}

struct Positions<'a> {
    columns: std::vec::IntoIter<(&'a str, &'a Value)>,
}

impl<'de, 'a: 'de> SeqAccess<'de> for Positions<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        let Some((name, value)) = self.columns.next() else {
            return Ok(None);
        };
        seed.deserialize(CellDe(value))
            .map(Some)
            .map_err(|e| DeError::json(e).in_column(name))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::FileRef;

    fn schema(names: &[&str]) -> Vec<SchemaField> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| serde_json::from_value(json!({"name": n, "data_type": "Text", "index": i})).unwrap())
            .collect()
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Order {
        id: i64,
        #[serde(rename = "customer_name")]
        name: String,
        total: f64,
        note: Option<String>,
        #[serde(default)]
        missing: u32,
    }

    #[test]
    fn columns_by_name_with_the_wire_quirks() {
        let s = schema(&["id", "customer_name", "total", "note", "_seq"]);
        let values = [
            json!("9223372036854775807"),
            json!("Zoë 🚀"),
            json!("12.50"),
            json!(null),
            json!("7"),
        ];
        let o: Order = from_positional(&s, &values).unwrap();
        assert_eq!(
            o,
            Order {
                id: i64::MAX,
                name: "Zoë 🚀".into(),
                total: 12.5,
                note: None,
                missing: 0
            }
        );
        // Positions, into a tuple; a BIGINT kept as text.
        let t: (String, String, String) = from_positional(&s[..3], &values[..3]).unwrap();
        assert_eq!(t.0, "9223372036854775807");
        assert_eq!(t.2, "12.50");
        // A number asked for as text.
        let t: (String,) = from_positional(&s[..1], &[json!(42)]).unwrap();
        assert_eq!(t.0, "42");
    }

    #[test]
    fn system_columns_only_when_asked_and_file_columns_as_fileref() {
        #[derive(Deserialize)]
        struct WithSeq {
            id: u64,
            #[serde(rename = "_seq")]
            seq: i64,
            doc: Option<FileRef>,
        }
        let s = schema(&["id", "_seq", "doc"]);
        let file = r#"{"id":"f1","sub":"s","name":"a.pdf","size":3,"mime":"application/pdf","sha256":"00"}"#;
        let r: WithSeq = from_positional(&s, &[json!(1), json!("77"), json!(file)]).unwrap();
        assert_eq!((r.id, r.seq), (1, 77));
        assert_eq!(r.doc.map(|d| d.name), Some("a.pdf".to_owned()));
    }

    #[test]
    fn a_bad_cell_names_its_row_and_column() {
        let s = schema(&["id", "customer_name", "total", "note"]);
        let e = from_positional::<Order>(&s, &[json!("x1"), json!("n"), json!(1), json!(null)])
            .unwrap_err()
            .at_row(3);
        match &e {
            CellError::Row { row, column, message } => {
                assert_eq!((*row, column.as_deref()), (3, Some("id")));
                assert!(message.contains("x1"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("row 3") && e.to_string().contains("id"), "{e}");
        // A missing field.
        let e = from_positional::<Order>(&s[..1], &[json!(1)]).unwrap_err().at_row(0);
        assert!(e.to_string().contains("customer_name"), "{e}");
        // Garbage never panics.
        for v in [json!([1, [2]]), json!({"a": {}}), json!(1e308), json!(-1)] {
            let _ = from_positional::<Order>(&s[..1], std::slice::from_ref(&v));
            let _ = from_positional::<(u8, String)>(&s[..1], &[v]);
        }
    }

    #[test]
    fn a_live_row_map() {
        let mut m = Map::new();
        m.insert("id".into(), json!("5"));
        m.insert("customer_name".into(), json!("a"));
        m.insert("total".into(), json!(2));
        m.insert("_seq".into(), json!("9"));
        let o: Order = from_map(&m).unwrap();
        assert_eq!((o.id, o.total, o.note), (5, 2.0, None));
        // Taken by value: the same, cells moved.
        let owned: Order = from_owned_map(m.clone()).unwrap();
        assert_eq!(owned, from_map::<Order>(&m).unwrap());
        m.insert("total".into(), json!("x"));
        let e = from_owned_map::<Order>(m).unwrap_err().at_row(0);
        assert!(
            matches!(&e, CellError::Row { column: Some(c), .. } if c == "total"),
            "{e:?}"
        );
    }
}
