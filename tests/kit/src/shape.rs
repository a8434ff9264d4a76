//! Comparing two JSON answers by **shape**: the kit's against the real
//! server's (or a recorded wire sample's).
//!
//! Two answers have the same shape when
//! - objects have the same keys **in the same order** (key order is part of
//!   the bytes on the wire),
//! - arrays have the same length, item by item the same shape,
//! - scalars are of the same JSON kind (null, bool, number, string),
//! - and the values of the keys the [`ShapeRules`] name (codes, counts, types,
//!   column names, …) are equal.
//!
//! Everything else (ids, timestamps, tokens, most messages) may differ.
//!
//! ```
//! use kalam_testkit::shape::{ShapeRules, shape_diff, shape_diff_with};
//! use serde_json::json;
//!
//! let real = json!({"status": "error", "error": {"code": "NOT_FOUND", "message": "Topic 'a' not found"}});
//! let kit = json!({"status": "error", "error": {"code": "NOT_FOUND", "message": "no such topic"}});
//! assert!(shape_diff(&real, &kit).is_empty());
//! // The wire rules compare messages too.
//! assert_eq!(
//!     shape_diff_with(&ShapeRules::wire(), &real, &kit),
//!     vec![r#"$.error.message: expected "Topic 'a' not found", got "no such topic""#]
//! );
//! ```

use serde_json::Value;

/// Which values, besides the structure, must be equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeRules {
    /// Keys whose scalar or array values must be equal wherever they occur
    /// (the values of objects are compared by shape, recursively).
    pub exact_keys: Vec<&'static str>,
    /// Whether a string `error` (at the top or under an `…error` key) must
    /// be equal, as in the `{"error": "…"}` bodies of the auth endpoints.
    pub error_text: bool,
}

impl ShapeRules {
    /// Codes, statuses, counts, column names and types, flags and `as_user`
    /// must be equal; messages may differ. The rules of [`shape_diff`].
    pub fn structural() -> Self {
        ShapeRules {
            exact_keys: vec!["code", "row_count", "status", "data_type", "name", "flags", "as_user"],
            error_text: false,
        }
    }

    /// [`ShapeRules::structural`] plus `message`, `admin_ui_access` and
    /// string `error`s: for answers whose texts are fixed (recorded wire
    /// samples, auth and topic errors).
    pub fn wire() -> Self {
        let mut rules = ShapeRules::structural();
        rules.exact_keys.extend(["message", "admin_ui_access"]);
        rules.error_text = true;
        rules
    }
}

impl Default for ShapeRules {
    fn default() -> Self {
        ShapeRules::structural()
    }
}

/// The differences in shape between `expected` and `actual` under
/// [`ShapeRules::structural`], one line each (`$.path: what`); empty when
/// they have the same shape.
pub fn shape_diff(expected: &Value, actual: &Value) -> Vec<String> {
    shape_diff_with(&ShapeRules::structural(), expected, actual)
}

/// The differences in shape between `expected` and `actual` under `rules`,
/// one line each (`$.path: what`); empty when they have the same shape.
pub fn shape_diff_with(rules: &ShapeRules, expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff(rules, "$", expected, actual, &mut out);
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn diff(rules: &ShapeRules, path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(a), Value::Object(b)) => {
            let (ka, kb): (Vec<&String>, Vec<&String>) = (a.keys().collect(), b.keys().collect());
            if ka != kb && a.len() == b.len() && a.keys().all(|k| b.contains_key(k)) {
                out.push(format!("{path}: keys in order {ka:?}, got {kb:?}"));
            }
            for (k, x) in a {
                match b.get(k) {
                    Some(y) => diff(rules, &format!("{path}.{k}"), x, y, out),
                    None => out.push(format!("{path}.{k}: missing")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: unexpected"));
            }
            for k in &rules.exact_keys {
                if let (Some(x), Some(y)) = (a.get(*k), b.get(*k))
                    && !x.is_object()
                    && kind(x) == kind(y)
                    && x != y
                {
                    out.push(format!("{path}.{k}: expected {x}, got {y}"));
                }
            }
            if rules.error_text
                && (path.ends_with("error") || path == "$")
                && let (Some(Value::String(x)), Some(Value::String(y))) = (a.get("error"), b.get("error"))
                && x != y
            {
                out.push(format!("{path}.error: expected {x:?}, got {y:?}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.push(format!("{path}: expected {} items, got {}", a.len(), b.len()));
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(rules, &format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) => {
            if kind(a) != kind(b) {
                out.push(format!("{path}: expected a {}, got a {} ({b})", kind(a), kind(b)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn same_shape_different_values() {
        let a = json!({"status": "success", "results": [{"row_count": 1, "rows": [["1", 2.5, null]]}], "took": 1.2});
        let b = json!({"status": "success", "results": [{"row_count": 1, "rows": [["7", 0.5, null]]}], "took": 9.0});
        assert!(shape_diff(&a, &b).is_empty());
    }

    #[test]
    fn every_kind_of_difference_is_reported() {
        let a = json!({"a": 1, "b": "x", "code": "X", "list": [1, 2], "m": null});
        let b = json!({"b": "x", "a": 1, "code": "Y", "list": [1], "m": "s"});
        assert_eq!(
            shape_diff(&a, &b),
            vec![
                r#"$: keys in order ["a", "b", "code", "list", "m"], got ["b", "a", "code", "list", "m"]"#,
                "$.list: expected 2 items, got 1",
                "$.m: expected a null, got a string (\"s\")",
                "$.code: expected \"X\", got \"Y\"",
            ]
        );
        assert_eq!(
            shape_diff(&json!({"a": 1}), &json!({"b": 1})),
            vec!["$.a: missing", "$.b: unexpected"]
        );
    }

    #[test]
    fn wire_rules_compare_texts() {
        let (a, b) = (json!({"error": "invalid_credentials"}), json!({"error": "nope"}));
        assert!(shape_diff(&a, &b).is_empty());
        assert_eq!(
            shape_diff_with(&ShapeRules::wire(), &a, &b),
            vec![r#"$.error: expected "invalid_credentials", got "nope""#]
        );
    }
}
