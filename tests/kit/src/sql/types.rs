//! KalamDB types ⇄ SQLite declared types, values and JSON encodings.

use super::*;

/// The SQLite declared type that also tells the KalamDB type back.
pub(super) fn decl_type(ktype: &str) -> &'static str {
    match ktype {
        "BigInt" => "BIGINT",
        "Int" => "INT",
        "SmallInt" => "SMALLINT",
        "Double" => "DOUBLE",
        "Float" => "FLOAT",
        "Boolean" => "BOOLEAN",
        "Timestamp" => "TIMESTAMP",
        "Date" => "DATE",
        "Json" => "JSON_TEXT",
        "Uuid" => "UUID_TEXT",
        "Bytes" => "BYTES_BLOB",
        "File" => "FILE_TEXT",
        _ => "TEXT",
    }
}

pub(super) fn ktype_of_decl(decl: &str) -> Option<&'static str> {
    Some(match decl.to_ascii_uppercase().as_str() {
        "BIGINT" => "BigInt",
        "INT" => "Int",
        "SMALLINT" => "SmallInt",
        "DOUBLE" => "Double",
        "FLOAT" => "Float",
        "BOOLEAN" => "Boolean",
        "TIMESTAMP" => "Timestamp",
        "DATE" => "Date",
        "JSON_TEXT" => "Json",
        "UUID_TEXT" => "Uuid",
        "BYTES_BLOB" => "Bytes",
        "FILE_TEXT" => "File",
        "TEXT" => "Text",
        _ => return None,
    })
}

pub(super) fn ktype_of_sql(t: &str) -> Option<&'static str> {
    let t = t.to_ascii_uppercase();
    let base = t.split('(').next().unwrap_or("").trim();
    Some(match base {
        "BIGINT" | "INT8" | "LONG" => "BigInt",
        "INT" | "INTEGER" | "INT4" => "Int",
        "SMALLINT" | "INT2" | "TINYINT" => "SmallInt",
        "DOUBLE" | "FLOAT8" => "Double",
        "FLOAT" | "REAL" | "FLOAT4" => "Float",
        "BOOLEAN" | "BOOL" => "Boolean",
        "TEXT" | "VARCHAR" | "STRING" | "CHAR" => "Text",
        "TIMESTAMP" | "DATETIME" => "Timestamp",
        "DATE" => "Date",
        "JSON" | "JSONB" => "Json",
        "UUID" => "Uuid",
        "BYTES" | "BLOB" | "BYTEA" => "Bytes",
        "FILE" => "File",
        _ => return None,
    })
}

pub(super) fn infer_type(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Integer(_) => "BigInt",
        ValueRef::Real(_) => "Double",
        ValueRef::Blob(_) => "Bytes",
        _ => "Text",
    }
}

/// A SQLite value in KalamDB's JSON encoding for `ktype`.
pub(super) fn encode(v: ValueRef<'_>, ktype: &str) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => encode_json(json!(i), ktype),
        ValueRef::Real(f) => encode_json(json!(f), ktype),
        ValueRef::Text(t) => encode_json(Value::String(String::from_utf8_lossy(t).into_owned()), ktype),
        ValueRef::Blob(b) => json!(b),
    }
}

pub(super) fn encode_json(v: Value, ktype: &str) -> Value {
    match (ktype, v) {
        (_, Value::Null) => Value::Null,
        ("BigInt", Value::Number(n)) => Value::String(n.to_string()),
        ("Boolean", Value::Number(n)) => Value::Bool(n.as_i64().unwrap_or(0) != 0),
        ("Boolean", Value::Bool(b)) => Value::Bool(b),
        ("Int" | "SmallInt", Value::Number(n)) => json!(n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))),
        ("Double" | "Float", Value::Number(n)) => json!(n.as_f64().unwrap_or(0.0)),
        ("Timestamp", Value::String(s)) => parse_timestamp_us(&s).map(|us| json!(us)).unwrap_or(Value::String(s)),
        ("Date", Value::String(s)) => parse_date_days(&s).map(|d| json!(d)).unwrap_or(Value::String(s)),
        ("Text" | "Json" | "Uuid" | "File", Value::Number(n)) => Value::String(n.to_string()),
        (_, v) => v,
    }
}

pub(super) fn json_to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Bool(b) => V::Integer(*b as i64),
        Value::Number(n) => n
            .as_i64()
            .map(V::Integer)
            .unwrap_or_else(|| V::Real(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => V::Text(s.clone()),
        other => V::Text(other.to_string()),
    }
}

pub(super) fn json_cell_to_sql(v: &Value, ktype: &str) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match (ktype, v) {
        ("BigInt", Value::String(s)) => s.parse().map(V::Integer).unwrap_or_else(|_| V::Text(s.clone())),
        _ => json_to_sql(v),
    }
}

/// `2024-01-02T03:04:05.123456Z` (or with a space, or a date alone) as µs
/// since the epoch.
pub fn parse_timestamp_us(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once(['T', ' ']).unwrap_or((s, "00:00:00"));
    let days = parse_date_days(date)?;
    let mut hms = time.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let sec = hms.next().unwrap_or("0");
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let whole: i64 = whole.parse().ok()?;
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let frac_us: i64 = format!("{:0<6}", &frac[..frac.len().min(6)]).parse().ok()?;
    Some(((days * 86_400 + h * 3600 + m * 60 + whole) * 1_000_000) + frac_us)
}

/// `YYYY-MM-DD` as days since the epoch.
pub fn parse_date_days(s: &str) -> Option<i64> {
    let mut p = s.trim().split('-');
    let y: i64 = p.next()?.parse().ok()?;
    let m: i64 = p.next()?.parse().ok()?;
    let d: i64 = p.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(parse_date_days("1970-01-01"), Some(0));
        assert_eq!(parse_date_days("2024-01-02"), Some(19724));
        assert_eq!(
            parse_timestamp_us("2024-01-02T03:04:05.123456Z"),
            Some(1_704_164_645_123_456)
        );
        // Not a timestamp, and no panic on a multi-byte character at the cut.
        assert_eq!(parse_timestamp_us("2024-01-02T03:04:05.12345é"), None);
    }
}
