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
//!   computed); read it as `i64` and convert as your column needs;
//! - a FILE column (JSON text) reads as a [`FileRef`](crate::FileRef), and
//!   any JSON column as a struct or map;
//! - NULL reads as `None`.
//!
//! A cell that does not fit is a typed error naming the row, the column
//! and what was expected ([`CellError::Row`]); it
//! never panics.

use std::fmt;

mod bytes;

pub use bytes::answer_rows_as;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

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
        seed.deserialize(CellDe(value)).map_err(|e| e.in_column(name))
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
        seed.deserialize(CellDe(value)).map(Some).map_err(|e| e.in_column(name))
    }
}

/// One cell, read as the field asks (see the module docs).
struct CellDe<'a>(&'a Value);

/// A number field: from a JSON number, or from a string (BIGINT and wider
/// arrive as strings, DECIMAL may).
macro_rules! number {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match self.0 {
                Value::String(s) => match s.trim().parse::<$ty>() {
                    Ok(n) => visitor.$visit(n),
                    Err(_) => Err(de::Error::invalid_type(de::Unexpected::Str(s), &visitor)),
                },
                v => v.$method(visitor).map_err(DeError::json),
            }
        }
    };
}

impl<'de, 'a: 'de> de::Deserializer<'de> for CellDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.0.deserialize_any(visitor).map_err(DeError::json)
    }

    number!(deserialize_i8, visit_i8, i8);
    number!(deserialize_i16, visit_i16, i16);
    number!(deserialize_i32, visit_i32, i32);
    number!(deserialize_i64, visit_i64, i64);
    number!(deserialize_i128, visit_i128, i128);
    number!(deserialize_u8, visit_u8, u8);
    number!(deserialize_u16, visit_u16, u16);
    number!(deserialize_u32, visit_u32, u32);
    number!(deserialize_u64, visit_u64, u64);
    number!(deserialize_u128, visit_u128, u128);
    number!(deserialize_f32, visit_f32, f32);
    number!(deserialize_f64, visit_f64, f64);

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            // A number (DECIMAL, a count) asked for as text.
            Value::Number(n) => visitor.visit_string(n.to_string()),
            v => v.deserialize_string(visitor).map_err(DeError::json),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Number(n) => visitor.visit_string(n.to_string()),
            v => v.deserialize_str(visitor).map_err(DeError::json),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.0 {
            // A FILE column, or any JSON column sent as text.
            Value::String(s) if s.trim_start().starts_with('{') => {
                let parsed: Value = serde_json::from_str(s).map_err(DeError::json)?;
                parsed.deserialize_struct(name, fields, visitor).map_err(DeError::json)
            }
            v => v.deserialize_struct(name, fields, visitor).map_err(DeError::json),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) if s.trim_start().starts_with('{') => {
                let parsed: Value = serde_json::from_str(s).map_err(DeError::json)?;
                parsed.deserialize_map(visitor).map_err(DeError::json)
            }
            v => v.deserialize_map(visitor).map_err(DeError::json),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) if s.trim_start().starts_with('[') => {
                let parsed: Value = serde_json::from_str(s).map_err(DeError::json)?;
                parsed.deserialize_seq(visitor).map_err(DeError::json)
            }
            v => v.deserialize_seq(visitor).map_err(DeError::json),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.0.deserialize_enum(name, variants, visitor).map_err(DeError::json)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        bool char bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any
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
    }
}
