//! Live queries: the initial-data pages (`_seq` paging, `last_rows`) and
//! whether a changed row matches a subscription's filter.
//!
//! A page is chosen as the server chooses it: the first (or, for
//! `last_rows`, the last) `limit` rows by `_seq`, **handed back in
//! primary-key order** (the server's "ORDER BY + LIMIT comes back in
//! primary-key order" bug, PROTOCOL §3.4 and §4.6). The caller cuts the
//! page to `batch_size` after that, so when `_seq` order and key order
//! differ, pages skip and repeat rows exactly as the server's do. Every
//! page ends where the table stood when the subscription was made (its
//! snapshot); what changed since comes as changes after the last page.

use super::*;

impl Engine {
    /// The table a live query reads: a user table, or a system table
    /// (`system.users`, which has no rows for live queries in the kit).
    pub fn live_table(&self, full: &str) -> Option<TableDef> {
        if full.eq_ignore_ascii_case("system.users") {
            return Some(system_users_def());
        }
        self.table(full).cloned()
    }

    /// Rows of a live query's table for one initial-data page, as the given
    /// user: the first `limit` rows by `_seq` (the last ones when `newest`),
    /// in primary-key order.
    pub fn live_rows(&mut self, q: LivePage<'_>) -> Result<Vec<Map<String, Value>>, SqlError> {
        let LivePage {
            user,
            table,
            columns,
            where_sql,
            after_seq,
            upto_seq,
            limit,
            newest,
        } = q;
        let def = self
            .live_table(table)
            .ok_or_else(|| SqlError::new(404, "NOT_FOUND", format!("Not found: Table not found: {table}")))?;
        if is_system(&def) {
            return Ok(Vec::new());
        }
        let cols = project(&def, columns);
        let keys: Vec<String> = def.columns.iter().filter(|c| c.pk).map(|c| quote(&c.name)).collect();
        let keys = if keys.is_empty() { vec![quote("_seq")] } else { keys };
        let listed = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        let key_aliases = keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} AS \"__kit_key{i}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = format!("SELECT {listed}, {key_aliases} FROM {}", def.sqlite_name());
        let mut conds = Vec::new();
        if let Some(w) = where_sql {
            let (w, _) = self.rewrite(1, w, None)?;
            conds.push(format!("({w})"));
        }
        if let Some(s) = after_seq {
            conds.push(format!("_seq > {s}"));
        }
        if let Some(s) = upto_seq {
            conds.push(format!("_seq <= {s}"));
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(if newest {
            " ORDER BY _seq DESC"
        } else {
            " ORDER BY _seq"
        });
        sql.push_str(&format!(" LIMIT {limit}"));
        let by_key = (0..keys.len())
            .map(|i| format!("\"__kit_key{i}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {listed} FROM ({sql}) ORDER BY {by_key}");
        let conn = self.conn(user)?;
        let mut st = conn.prepare(&sql).map_err(|e| classify(1, e))?;
        let mut rows = st.query([]).map_err(|e| classify(1, e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(internal)? {
            let mut m = Map::new();
            for (i, c) in cols.iter().enumerate() {
                let ktype = match c.as_str() {
                    "_seq" => "BigInt",
                    "_deleted" => "Boolean",
                    _ => def.column(c).map(|d| d.ktype).unwrap_or("Text"),
                };
                m.insert(c.clone(), encode(r.get_ref(i).map_err(internal)?, ktype));
            }
            out.push(m);
        }
        Ok(out)
    }

    /// The highest `_seq` of a live query's table as the given user sees
    /// it: where a subscription's initial data ends (0 when empty).
    pub fn live_snapshot_end(&mut self, user: &str, table: &str) -> i64 {
        let Some(def) = self.live_table(table).filter(|d| !is_system(d)) else {
            return 0;
        };
        let sql = format!("SELECT COALESCE(MAX(_seq), 0) FROM {}", def.sqlite_name());
        self.conn(user)
            .ok()
            .and_then(|c| c.query_row(&sql, [], |r| r.get::<_, i64>(0)).ok())
            .unwrap_or(0)
    }

    /// Whether a change's row matches a live query's WHERE clause.
    pub fn row_matches(&mut self, table: &str, row: &Map<String, Value>, where_sql: &str) -> bool {
        let Some(def) = self.table(table).cloned() else {
            return false;
        };
        let Ok((w, _)) = self.rewrite(1, where_sql, None) else {
            return true;
        };
        let mut names = Vec::new();
        let mut vals = Vec::new();
        for c in &def.columns {
            names.push(quote(&c.name));
            vals.push(
                row.get(&c.name)
                    .map(|v| json_cell_to_sql(v, c.ktype))
                    .unwrap_or(rusqlite::types::Value::Null),
            );
        }
        let placeholders = (1..=vals.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "WITH t({}) AS (VALUES ({placeholders})) SELECT 1 FROM t WHERE {w}",
            names.join(", ")
        );
        let Ok(conn) = self.conn("root") else { return true };
        let Ok(mut st) = conn.prepare(&sql) else {
            // Like the server: a filter it cannot compile lets everything through.
            return true;
        };
        st.exists(params_from_iter(vals.iter())).unwrap_or(true)
    }
}

/// One page of a live query's initial data.
pub struct LivePage<'a> {
    /// Whose rows (USER tables).
    pub user: &'a str,
    /// `ns.table`.
    pub table: &'a str,
    /// Projected columns (empty or `*`: all).
    pub columns: &'a [String],
    /// The subscription's filter.
    pub where_sql: Option<&'a str>,
    /// Only rows with a greater `_seq`.
    pub after_seq: Option<i64>,
    /// Only rows with this `_seq` or a smaller one (the snapshot's end).
    pub upto_seq: Option<i64>,
    /// At most this many rows.
    pub limit: usize,
    /// The newest rows by `_seq` (for `last_rows`) rather than the oldest.
    pub newest: bool,
}

fn is_system(def: &TableDef) -> bool {
    def.full.to_ascii_lowercase().starts_with("system.")
}

fn is_star(columns: &[String]) -> bool {
    columns.is_empty() || columns.iter().any(|c| c == "*")
}

/// The columns of a live query's rows: `*` is every column plus `_seq` and
/// `_deleted` (none for a system table); a list gets `_seq` added.
pub fn project(def: &TableDef, columns: &[String]) -> Vec<String> {
    if is_star(columns) {
        let mut all: Vec<String> = def.columns.iter().map(|c| c.name.clone()).collect();
        if !is_system(def) {
            all.push("_seq".into());
            all.push("_deleted".into());
        }
        return all;
    }
    let mut cols: Vec<String> = columns.to_vec();
    if !cols.iter().any(|c| c == "_seq") {
        cols.push("_seq".into());
    }
    cols
}

/// The schema of a live query, as JSON fields: the row's columns, except
/// that a column list's schema does not show the `_seq` its rows carry.
pub fn live_schema(def: &TableDef, columns: &[String]) -> Vec<Value> {
    let shown = if is_star(columns) {
        project(def, columns)
    } else {
        columns.to_vec()
    };
    shown
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (ktype, flags) = match c.as_str() {
                "_seq" | "_deleted" => (if c == "_seq" { "BigInt" } else { "Boolean" }, vec!["nn"]),
                _ => def
                    .column(c)
                    .map(|d| (d.ktype, flags_of(d)))
                    .unwrap_or(("Text", vec![])),
            };
            let mut f = json!({"name": c, "data_type": ktype, "index": i});
            if !flags.is_empty() {
                f["flags"] = json!(flags);
            }
            f
        })
        .collect()
}
