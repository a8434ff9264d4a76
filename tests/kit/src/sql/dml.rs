//! DML and queries: SELECT/WITH, INSERT, UPDATE, DELETE, with parameter
//! binding and KalamDB's answer shapes.

use super::*;

impl Engine {
    /// Runs a SELECT/WITH, INSERT, UPDATE or DELETE (`kind`).
    // One argument more than the dispatch's own: the statement's kind.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dml(
        &mut self,
        n: usize,
        kind: StatementKind,
        user: &str,
        role: &str,
        stmt: &str,
        params: &[Value],
        namespace: Option<&str>,
    ) -> Result<Outcome, SqlError> {
        let admin = role == "dba" || role == "system";
        let (rewritten, tables) = self.rewrite(n, stmt, namespace)?;
        if tables.iter().any(|t| t.starts_with("system.")) && !admin {
            return Err(SqlError::new(
                403,
                "PERMISSION_DENIED",
                format!(
                    "Statement {n} failed: Permission denied: Error during planning: Access denied: Role '{}' cannot access table 'system.users'. System tables require 'dba' or 'system' role.",
                    capitalize(role)
                ),
            ));
        }
        let defs: Vec<TableDef> = tables.iter().filter_map(|t| self.table(t).cloned()).collect();
        // SHARED tables have the access level `private` here: admins only.
        if !admin && let Some(shared) = defs.iter().find(|d| d.kind == TableKind::Shared) {
            let (planning, what) = if kind == StatementKind::Query {
                ("Error during planning: ", "access")
            } else {
                ("", "write")
            };
            return Err(SqlError::new(
                403,
                "PERMISSION_DENIED",
                format!(
                    "Statement {n} failed: Permission denied: {planning}Access denied: Role '{}' cannot access table '{}'. Shared table {what} denied (access_level=Private)",
                    capitalize(role),
                    shared.full
                ),
            ));
        }
        let system_users = tables.iter().any(|t| t == "system.users");
        let mut defs = defs;
        if system_users {
            self.sync_system_users(user)?;
            defs.push(system_users_def());
        }
        let bind: Vec<rusqlite::types::Value> = params.iter().map(json_to_sql).collect();
        let conn = self.conn(user)?;
        let mut prepared = conn.prepare(&rewritten).map_err(|e| classify(n, e))?;
        bind_params(&mut prepared, &bind, n)?;
        if kind == StatementKind::Query {
            let names: Vec<String> = prepared.column_names().iter().map(|s| datafusion_name(s)).collect();
            let decls: Vec<Option<String>> = prepared
                .columns()
                .iter()
                .map(|c| c.decl_type().map(str::to_owned))
                .collect();
            let limit = if has_limit(stmt) { 1000 } else { 50 };
            let mut rows_out = Vec::new();
            let mut seen_types: Vec<Option<&'static str>> = vec![None; names.len()];
            let mut rows = prepared.raw_query();
            while let Some(row) = rows.next().map_err(|e| classify(n, e))? {
                if rows_out.len() >= limit {
                    break;
                }
                let mut out = Vec::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    let ktype = column_type(name, decls[i].as_deref(), &defs).or(seen_types[i]);
                    let v = row.get_ref(i).map_err(internal)?;
                    let ktype = ktype.unwrap_or_else(|| infer_type(v));
                    if !matches!(v, ValueRef::Null) {
                        seen_types[i] = Some(ktype);
                    }
                    out.push(encode(v, ktype));
                }
                rows_out.push(out);
            }
            let schema = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let ktype = column_type(name, decls[i].as_deref(), &defs)
                        .or(seen_types[i])
                        .unwrap_or("BigInt");
                    let mut f = json!({"name": name, "data_type": ktype, "index": i});
                    if let Some(flags) = column_flags(name, decls[i].as_deref(), &defs) {
                        f["flags"] = json!(flags);
                    }
                    f
                })
                .collect();
            return Ok(Outcome::Rows { schema, rows: rows_out });
        }
        let count = match prepared.raw_execute() {
            Ok(count) => count,
            Err(e) => {
                drop(prepared);
                let mut e = classify(n, e);
                if let (Some(column), Some(def), StatementKind::Insert) =
                    (e.duplicate_column.take(), defs.first(), kind)
                    && let Some(value) = duplicate_key(conn, &rewritten, &bind, def, &column)
                {
                    e.message = format!(
                        "Statement {n} failed: Execution error: Raft error: Internal error: Provider error: Execution error: Failed to insert batch: Already exists: Primary key violation: value '{value}' already exists in column '{column}'"
                    );
                }
                return Err(e);
            }
        };
        drop(prepared);
        // Inside a transaction, changes are announced at COMMIT (and a
        // ROLLBACK takes them back with the rows).
        if conn.is_autocommit() {
            self.drain_changes(user)?;
        }
        Ok(match kind {
            StatementKind::Insert => Outcome::Inserted(count),
            StatementKind::Update => Outcome::Updated(count),
            _ => Outcome::Deleted(count),
        })
    }

    /// Fills a temporary `system.users` (the server's columns) from the users.
    pub(super) fn sync_system_users(&mut self, user: &str) -> Result<(), SqlError> {
        let users: Vec<(String, UserRecord)> = self.users.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let def = system_users_def();
        let columns: Vec<String> = def
            .columns
            .iter()
            .map(|c| {
                let mut col = format!("{} {}", c.name, decl_type(c.ktype));
                if c.pk {
                    col.push_str(" PRIMARY KEY");
                }
                col
            })
            .collect();
        let conn = self.conn(user)?;
        let mut batch = format!(
            "CREATE TEMP TABLE IF NOT EXISTS \"system.users\" ({}); DELETE FROM temp.\"system.users\";",
            columns.join(", ")
        );
        for (id, u) in users {
            let ms = u.created_ms.to_string();
            let values = [
                sql_str(&id),
                sql_str(&u.hash),
                sql_str(&u.role),
                u.email.as_deref().map(sql_str).unwrap_or_else(|| "NULL".into()),
                "'Password'".into(),
                "NULL".into(),
                "'Table'".into(),
                "NULL".into(),
                "0".into(),
                "NULL".into(),
                "NULL".into(),
                ms.clone(),
                ms,
                "NULL".into(),
                "NULL".into(),
            ];
            batch.push_str(&format!(
                "INSERT INTO temp.\"system.users\" VALUES ({});",
                values.join(", ")
            ));
        }
        conn.execute_batch(&batch).map_err(internal)
    }
}

/// Binds `$N` parameters. To SQLite they are named parameters numbered by
/// first appearance, so each is bound by its name.
pub(super) fn bind_params(
    st: &mut rusqlite::Statement<'_>,
    bind: &[rusqlite::types::Value],
    n: usize,
) -> Result<(), SqlError> {
    for i in 1..=st.parameter_count() {
        let name = st.parameter_name(i).unwrap_or("").to_owned();
        let k: usize = name.trim_start_matches('$').parse().unwrap_or(0);
        let value = k.checked_sub(1).and_then(|k| bind.get(k)).ok_or_else(|| {
            SqlError::exec(
                n,
                format!(
                    "Parameter binding error: Error during planning: No value found for placeholder with id {name}"
                ),
            )
        })?;
        st.raw_bind_parameter(i, value).map_err(internal)?;
    }
    Ok(())
}

/// The first key value of a failed INSERT that is already in the table (or
/// repeats within the statement): the statement is run again into an empty
/// scratch copy of the table, which is then compared with the table.
pub(super) fn duplicate_key(
    conn: &Connection,
    rewritten: &str,
    bind: &[rusqlite::types::Value],
    def: &TableDef,
    column: &str,
) -> Option<String> {
    let target = def.sqlite_name();
    let at = rewritten.find(&target)?;
    let probe_sql = format!(
        "{}temp._kalam_probe{}",
        &rewritten[..at],
        &rewritten[at + target.len()..]
    );
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS temp._kalam_probe; CREATE TEMP TABLE _kalam_probe AS SELECT * FROM {target} WHERE 0;"
    ))
    .ok()?;
    let found = (|| {
        let mut st = conn.prepare(&probe_sql).ok()?;
        bind_params(&mut st, bind, 1).ok()?;
        st.raw_execute().ok()?;
        let col = quote(column);
        conn.query_row(
            &format!(
                "SELECT CAST(p.{col} AS TEXT) FROM temp._kalam_probe p
                 WHERE p.{col} IN (SELECT {col} FROM {target})
                    OR (SELECT COUNT(*) FROM temp._kalam_probe q WHERE q.{col} = p.{col}) > 1
                 ORDER BY p.rowid LIMIT 1"
            ),
            [],
            |r| r.get::<_, String>(0),
        )
        .ok()
    })();
    let _ = conn.execute_batch("DROP TABLE IF EXISTS temp._kalam_probe");
    found
}

/// KalamDB (DataFusion) names an unaliased literal column by its type:
/// `SELECT 1` has a column `Int64(1)`, `SELECT 'a'` one called `Utf8("a")`.
pub(super) fn datafusion_name(sqlite_name: &str) -> String {
    let n = sqlite_name.trim();
    if !n.is_empty() && n.trim_start_matches('-').chars().all(|c| c.is_ascii_digit()) {
        return format!("Int64({n})");
    }
    if let Some(inner) = n.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return format!("Utf8(\"{inner}\")");
    }
    sqlite_name.to_owned()
}

pub(super) fn has_limit(stmt: &str) -> bool {
    tokenize(stmt)
        .iter()
        .any(|t| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case("LIMIT")))
}

pub(super) fn column_type(name: &str, decl: Option<&str>, defs: &[TableDef]) -> Option<&'static str> {
    if name == "_seq" {
        return Some("BigInt");
    }
    if name == "_deleted" {
        return Some("Boolean");
    }
    let from_decl = decl.and_then(ktype_of_decl);
    from_decl.or_else(|| {
        if decl.is_some() {
            defs.iter().find_map(|d| d.column(name).map(|c| c.ktype))
        } else {
            None
        }
    })
}

pub(super) fn column_flags(name: &str, decl: Option<&str>, defs: &[TableDef]) -> Option<Vec<&'static str>> {
    if name == "_seq" || name == "_deleted" {
        return Some(vec!["nn"]);
    }
    decl?;
    let f = defs.iter().find_map(|d| d.column(name)).map(flags_of)?;
    (!f.is_empty()).then_some(f)
}
