//! Typed values of the HTTP API: login answers, query results, rows.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::secret::Secret;

/// A user as the server describes it (login, refresh and `/auth/me`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct UserInfo {
    /// User id.
    pub id: String,
    /// Lower-case role: `user`, `service`, `dba`, `system`…
    pub role: String,
    /// E-mail, when set.
    #[serde(default)]
    pub email: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// The answer to a login or a refresh: a new token pair. Its `Debug` hides
/// both tokens.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct LoginResponse {
    /// Who logged in.
    pub user: UserInfo,
    /// Whether the user may use the admin UI (`dba` and `system`).
    #[serde(default)]
    pub admin_ui_access: bool,
    /// Access-token expiry, RFC 3339.
    pub expires_at: String,
    /// The access token (JWT).
    pub access_token: String,
    /// The refresh token (JWT).
    pub refresh_token: String,
    /// Refresh-token expiry, RFC 3339.
    pub refresh_expires_at: String,
}

impl std::fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginResponse")
            .field("user", &self.user)
            .field("admin_ui_access", &self.admin_ui_access)
            .field("expires_at", &self.expires_at)
            .field("access_token", &"***")
            .field("refresh_token", &"***")
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish()
    }
}

impl LoginResponse {
    /// The access token as a [`Secret`].
    pub fn access_secret(&self) -> Secret {
        Secret::new(self.access_token.clone())
    }
}

/// The answer of `GET /v1/api/auth/me`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MeResponse {
    /// The authenticated user.
    pub user: UserInfo,
    /// Whether the user may use the admin UI.
    #[serde(default)]
    pub admin_ui_access: bool,
}

/// `status` of a SQL answer. An answer with `status: "error"` never reaches
/// the caller as a value: it is an [`Error`](crate::Error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryStatus {
    /// The statements ran.
    Success,
    /// The statements failed (only seen inside the decoder).
    Error,
}

/// A successful answer of `POST /v1/api/sql`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QueryResponse {
    /// Always [`QueryStatus::Success`] for a value the client hands out.
    pub status: QueryStatus,
    /// Results. For a batch these are not one per statement: INSERT, UPDATE
    /// and DELETE totals come last (PROTOCOL §3.4).
    #[serde(default)]
    pub results: Vec<QueryResult>,
    /// Server-side time in milliseconds.
    #[serde(default)]
    pub took: Option<f64>,
}

impl QueryResponse {
    /// The first result, if any.
    pub fn first(&self) -> Option<&QueryResult> {
        self.results.first()
    }

    /// All rows of all results, in order.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.results.iter().flat_map(|r| r.rows())
    }

    /// The first result's rows as `T` (see [`QueryResult::rows_as`]); no
    /// rows when there is no result.
    pub fn rows_as<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>, CellError> {
        self.first().map_or_else(|| Ok(Vec::new()), QueryResult::rows_as)
    }
}

/// One result of a SQL answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QueryResult {
    /// Columns, for statements that return rows.
    #[serde(default)]
    pub schema: Vec<SchemaField>,
    /// Positional rows, ordered as `schema`.
    #[serde(default, rename = "rows")]
    pub raw_rows: Vec<Vec<Value>>,
    /// Rows returned, or rows affected.
    #[serde(default)]
    pub row_count: u64,
    /// What a DDL or DML statement did, e.g. `Inserted 2 row(s)`.
    #[serde(default)]
    pub message: Option<String>,
    /// The user the statement ran as.
    #[serde(default)]
    pub as_user: Option<String>,
}

impl QueryResult {
    /// The rows, with typed access by column name or index.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> {
        self.raw_rows.iter().map(move |values| Row {
            schema: &self.schema,
            values,
        })
    }

    /// The rows as the application's own type `T` (serde): a struct's
    /// fields by column name, a tuple's by position, KalamDB's wire forms
    /// read as each field asks (BIGINT as a string into an integer, FILE
    /// into a [`FileRef`](crate::FileRef), NULL into `None`; see
    /// [`rows`](crate::rows)). A cell that does not fit is
    /// [`CellError::Row`], naming the row and the column.
    ///
    /// ```
    /// # use kalam_proto::QueryResponse;
    /// #[derive(serde::Deserialize)]
    /// struct User { id: i64, name: String, email: Option<String> }
    ///
    /// let answer: QueryResponse = serde_json::from_str(r#"{"status":"success","results":[{
    ///     "schema":[{"name":"id","data_type":"BigInt","index":0},{"name":"name","data_type":"Text","index":1},
    ///               {"name":"email","data_type":"Text","index":2}],
    ///     "rows":[["9007199254740993","Zoë",null]],"row_count":1}]}"#).unwrap();
    /// let users: Vec<User> = answer.rows_as().unwrap();
    /// assert_eq!((users[0].id, users[0].name.as_str(), users[0].email.is_none()), (9007199254740993, "Zoë", true));
    /// ```
    pub fn rows_as<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>, CellError> {
        self.raw_rows
            .iter()
            .enumerate()
            .map(|(i, values)| crate::rows::from_positional(&self.schema, values).map_err(|e| e.at_row(i)))
            .collect()
    }

    /// Index of the column named `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        column_position(&self.schema, name)
    }
}

fn column_position(schema: &[SchemaField], name: &str) -> Option<usize> {
    schema
        .iter()
        .position(|f| f.name == name)
        .map(|pos| schema[pos].index.unwrap_or(pos))
}

/// One column of a result.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SchemaField {
    /// Column name.
    pub name: String,
    /// KalamDB type.
    pub data_type: KalamDataType,
    /// Position in each row.
    #[serde(default)]
    pub index: Option<usize>,
    /// Sorted subset of `pk`, `nn`, `uq`.
    #[serde(default)]
    pub flags: Vec<String>,
}

impl SchemaField {
    /// Whether the column is (part of) the primary key.
    pub fn is_primary_key(&self) -> bool {
        self.flags.iter().any(|f| f == "pk")
    }
}

/// A KalamDB column type (PROTOCOL §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KalamDataType {
    /// `Boolean`.
    Boolean,
    /// `SmallInt` (a JSON number).
    SmallInt,
    /// `Int` (a JSON number).
    Int,
    /// `BigInt` (a JSON **string** of digits).
    BigInt,
    /// `Float`.
    Float,
    /// `Double`.
    Double,
    /// `Text`.
    Text,
    /// `Timestamp`: µs since the epoch for table columns; computed values may be ns.
    Timestamp,
    /// `Date`: days since the epoch.
    Date,
    /// `DateTime`.
    DateTime,
    /// `Time`: µs since midnight.
    Time,
    /// `Json`: a string holding JSON text.
    Json,
    /// `Bytes`: an array of numbers.
    Bytes,
    /// `Uuid`.
    Uuid,
    /// `File`: a string holding FileRef JSON.
    File,
    /// `{"Embedding": dim}`.
    Embedding(u32),
    /// `{"Decimal": {"precision": p, "scale": s}}`: a string with `scale` decimals.
    Decimal {
        /// Total digits.
        precision: u32,
        /// Digits after the point.
        scale: u32,
    },
    /// A type this client does not know, verbatim.
    Other(Value),
}

impl KalamDataType {
    fn from_name(s: &str) -> Option<KalamDataType> {
        use KalamDataType::*;
        Some(match s {
            "Boolean" => Boolean,
            "SmallInt" => SmallInt,
            "Int" => Int,
            "BigInt" => BigInt,
            "Float" => Float,
            "Double" => Double,
            "Text" => Text,
            "Timestamp" => Timestamp,
            "Date" => Date,
            "DateTime" => DateTime,
            "Time" => Time,
            "Json" => Json,
            "Bytes" => Bytes,
            "Uuid" => Uuid,
            "File" => File,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for KalamDataType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = KalamDataType;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a KalamDB data type")
            }
            // The common case, a type name, allocates nothing.
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<KalamDataType, E> {
                Ok(KalamDataType::from_name(s).unwrap_or_else(|| KalamDataType::Other(Value::String(s.to_owned()))))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<KalamDataType, A::Error> {
                let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let obj = v.as_object().filter(|o| o.len() == 1);
                if let Some(dim) = obj.and_then(|o| o.get("Embedding")) {
                    let dim = dim.as_u64().and_then(|n| u32::try_from(n).ok());
                    return dim
                        .map(KalamDataType::Embedding)
                        .ok_or_else(|| A::Error::custom("bad Embedding"));
                }
                if let Some(dec) = obj.and_then(|o| o.get("Decimal")) {
                    let get = |k: &str| dec.get(k).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok());
                    return match (get("precision"), get("scale")) {
                        (Some(precision), Some(scale)) => Ok(KalamDataType::Decimal { precision, scale }),
                        _ => Err(A::Error::custom("bad Decimal")),
                    };
                }
                Ok(KalamDataType::Other(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// One row of a result, with typed access.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    schema: &'a [SchemaField],
    values: &'a [Value],
}

impl<'a> Row<'a> {
    /// A row over a schema and positional values.
    pub fn new(schema: &'a [SchemaField], values: &'a [Value]) -> Self {
        Row { schema, values }
    }

    /// The raw JSON values.
    pub fn values(&self) -> &'a [Value] {
        self.values
    }

    /// The row as the application's own type `T` (serde; see
    /// [`QueryResult::rows_as`]). Errors name the column; the row is 0.
    pub fn to<T: serde::de::DeserializeOwned>(&self) -> Result<T, CellError> {
        crate::rows::from_positional(self.schema, self.values).map_err(|e| e.at_row(0))
    }

    /// The raw value of a column, by name or index.
    pub fn value<C: ColumnRef>(&self, col: C) -> Option<&'a Value> {
        col.position(self.schema).and_then(|i| self.values.get(i))
    }

    /// A column read as `T`, by name or index: `row.get::<i64>("id")`,
    /// `row.get::<Option<&str>>(1)` (the same call as on a live row).
    /// 64-bit integers, sent by the server as strings, read back as
    /// `i64`/`u64`.
    pub fn get<T: FromValue<'a>>(&self, col: impl ColumnRef) -> Result<T, CellError> {
        let label = col.label();
        let value = self.value(col).ok_or_else(|| CellError::NoSuchColumn(label.clone()))?;
        T::from_value(value).ok_or_else(|| CellError::WrongType {
            column: label,
            expected: T::EXPECTED,
            found: value.clone(),
        })
    }
}

impl fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (i, v) in self.values.iter().enumerate() {
            let name = self
                .schema
                .iter()
                .find(|s| s.index.unwrap_or(usize::MAX) == i)
                .or_else(|| self.schema.get(i))
                .map(|s| s.name.as_str())
                .unwrap_or("?");
            m.entry(&name, v);
        }
        m.finish()
    }
}

/// A column, by name (`&str`) or position (`usize`).
pub trait ColumnRef {
    /// Position in the row.
    fn position(&self, schema: &[SchemaField]) -> Option<usize>;
    /// For error messages.
    fn label(&self) -> String;
}

impl ColumnRef for usize {
    fn position(&self, _schema: &[SchemaField]) -> Option<usize> {
        Some(*self)
    }
    fn label(&self) -> String {
        format!("#{self}")
    }
}

impl ColumnRef for &str {
    fn position(&self, schema: &[SchemaField]) -> Option<usize> {
        column_position(schema, self)
    }
    fn label(&self) -> String {
        (*self).to_owned()
    }
}

/// Why a cell could not be read as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CellError {
    /// No such column.
    #[error("no column {0}")]
    NoSuchColumn(String),
    /// The value is not of the asked type.
    #[error("column {column}: expected {expected}, found {found}")]
    WrongType {
        /// Column name or index.
        column: String,
        /// What was asked for.
        expected: &'static str,
        /// What the server sent.
        found: Value,
    },
    /// A row could not become the asked type.
    #[error("row {row}{}: {message}", column.as_ref().map(|c| format!(", column {c}")).unwrap_or_default())]
    Row {
        /// The row's index in its result.
        row: usize,
        /// The column, when one cell was at fault (not for a missing field).
        column: Option<String>,
        /// What serde said.
        message: String,
    },
}

/// Types a cell reads as.
pub trait FromValue<'a>: Sized {
    /// For error messages.
    const EXPECTED: &'static str;
    /// `None` when the value does not fit.
    fn from_value(v: &'a Value) -> Option<Self>;
}

impl<'a> FromValue<'a> for i64 {
    const EXPECTED: &'static str = "a 64-bit integer";
    fn from_value(v: &'a Value) -> Option<Self> {
        match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for u64 {
    const EXPECTED: &'static str = "an unsigned 64-bit integer";
    fn from_value(v: &'a Value) -> Option<Self> {
        match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for i32 {
    const EXPECTED: &'static str = "a 32-bit integer";
    fn from_value(v: &'a Value) -> Option<Self> {
        i64::from_value(v).and_then(|n| i32::try_from(n).ok())
    }
}

impl<'a> FromValue<'a> for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_value(v: &'a Value) -> Option<Self> {
        match v {
            Value::Number(n) => n.as_f64(),
            // Decimals and 64-bit integers arrive as strings.
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for bool {
    const EXPECTED: &'static str = "a boolean";
    fn from_value(v: &'a Value) -> Option<Self> {
        v.as_bool()
    }
}

impl<'a> FromValue<'a> for &'a str {
    const EXPECTED: &'static str = "a string";
    fn from_value(v: &'a Value) -> Option<Self> {
        v.as_str()
    }
}

impl<'a> FromValue<'a> for String {
    const EXPECTED: &'static str = "a string";
    fn from_value(v: &'a Value) -> Option<Self> {
        v.as_str().map(str::to_owned)
    }
}

impl<'a> FromValue<'a> for &'a Value {
    const EXPECTED: &'static str = "any value";
    fn from_value(v: &'a Value) -> Option<Self> {
        Some(v)
    }
}

impl<'a, T: FromValue<'a>> FromValue<'a> for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_value(v: &'a Value) -> Option<Self> {
        if v.is_null() {
            Some(None)
        } else {
            T::from_value(v).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_row_access() {
        let r: QueryResult = serde_json::from_str(
            r#"{"schema":[{"name":"id","data_type":"BigInt","index":0,"flags":["pk","nn","uq"]},
                {"name":"name","data_type":"Text","index":1},
                {"name":"qty","data_type":"Int","index":2},
                {"name":"price","data_type":{"Decimal":{"precision":10,"scale":2}},"index":3},
                {"name":"v","data_type":{"Embedding":3},"index":4},
                {"name":"w","data_type":"SomethingNew","index":5}],
                "rows":[["9007199254740993","añil 🍏",null,"200.75",[1,2,3],1]],"row_count":1,"as_user":"root"}"#,
        )
        .unwrap();
        assert_eq!(
            r.schema[3].data_type,
            KalamDataType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(r.schema[4].data_type, KalamDataType::Embedding(3));
        assert!(matches!(r.schema[5].data_type, KalamDataType::Other(_)));
        assert!(r.schema[0].is_primary_key());
        let row = r.rows().next().unwrap();
        assert_eq!(row.get::<i64>("id").unwrap(), 9_007_199_254_740_993);
        assert_eq!(row.get::<&str>(1).unwrap(), "añil 🍏");
        assert_eq!(row.get::<Option<i32>>("qty").unwrap(), None);
        assert_eq!(row.get::<f64>("price").unwrap(), 200.75);
        assert!(matches!(row.get::<i64>("name"), Err(CellError::WrongType { .. })));
        assert!(matches!(row.get::<i64>("nope"), Err(CellError::NoSuchColumn(_))));
        assert!(matches!(row.get::<i64>(17), Err(CellError::NoSuchColumn(_))));
        assert!(format!("{row:?}").contains("\"id\""));
    }
}
