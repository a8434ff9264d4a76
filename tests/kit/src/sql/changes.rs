//! Change capture: `_seq` stamping and the `_changes` triggers of each
//! table, drained after each statement and broadcast as [`Change`]s.

use super::*;

/// A committed row change, for live queries.
#[derive(Debug, Clone)]
pub struct Change {
    /// `ns.table`.
    pub table: String,
    /// `insert`, `update` or `delete`.
    pub kind: &'static str,
    /// The owning user for USER tables.
    pub owner: Option<String>,
    /// New row (insert, update), KalamDB-encoded, with `_seq`.
    pub new: Option<Map<String, Value>>,
    /// Old row (update, delete), KalamDB-encoded, with `_seq`.
    pub old: Option<Map<String, Value>>,
}

/// A `_changes` row: kind, table, old JSON, new JSON, from the per-user database.
pub(super) type RawChange = (String, String, Option<String>, Option<String>, bool);

/// Snowflake-like ids: ms since the KalamDB epoch << 22, strictly increasing.
pub struct SeqGen(pub(super) AtomicI64);

impl SeqGen {
    pub(super) fn next(&self) -> i64 {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let candidate = (now_ms - 1_704_067_200_000).max(0) << 22;
        let mut cur = self.0.load(Ordering::SeqCst);
        loop {
            let next = candidate.max(cur + 1);
            match self.0.compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }
}

pub(super) const CHANGES_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS _changes (id INTEGER PRIMARY KEY, kind TEXT, tbl TEXT, old TEXT, new TEXT);";

pub(super) fn create_sqlite_table(def: &TableDef) -> String {
    let name = def.sqlite_name();
    let bare = quote(&def.full);
    let schema = if def.kind.per_user() { "" } else { "shared." };
    let pks: Vec<&ColumnDef> = def.columns.iter().filter(|c| c.pk).collect();
    let mut cols: Vec<String> = def
        .columns
        .iter()
        .map(|c| {
            let mut s = format!("{} {}", quote(&c.name), decl_type(c.ktype));
            if c.pk && pks.len() == 1 {
                s.push_str(" PRIMARY KEY");
            }
            if c.not_null {
                s.push_str(" NOT NULL");
            }
            if c.default_now {
                s.push_str(" DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER))");
            }
            s
        })
        .collect();
    cols.push("_seq BIGINT NOT NULL DEFAULT 0".into());
    cols.push("_deleted BOOLEAN NOT NULL DEFAULT 0".into());
    if pks.len() > 1 {
        cols.push(format!(
            "PRIMARY KEY ({})",
            pks.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ")
        ));
    }
    let obj = |prefix: &str| {
        let mut parts: Vec<String> = def
            .columns
            .iter()
            .map(|c| format!("'{}', {prefix}{}", c.name.replace('\'', "''"), quote(&c.name)))
            .collect();
        parts.push(format!("'_seq', {prefix}_seq"));
        parts.push(format!("'_deleted', {prefix}_deleted"));
        format!("json_object({})", parts.join(", "))
    };
    let tbl = sql_str(&def.full.to_ascii_lowercase());
    let trig = |suffix: &str| quote(&format!("{}#{suffix}", def.full));
    let new_row = format!("(SELECT {} FROM {bare} WHERE rowid = NEW.rowid)", obj(""));
    format!(
        "CREATE TABLE {name} ({cols});
         CREATE TRIGGER {schema}{ins} AFTER INSERT ON {bare} BEGIN
           UPDATE {bare} SET _seq = kalam_seq() WHERE rowid = NEW.rowid;
           INSERT INTO _changes (kind, tbl, old, new) VALUES ('insert', {tbl}, NULL, {new_row});
         END;
         CREATE TRIGGER {schema}{upd} AFTER UPDATE ON {bare} WHEN NEW._seq = OLD._seq BEGIN
           UPDATE {bare} SET _seq = kalam_seq() WHERE rowid = NEW.rowid;
           INSERT INTO _changes (kind, tbl, old, new) VALUES ('update', {tbl}, {old}, {new_row});
         END;
         CREATE TRIGGER {schema}{del} AFTER DELETE ON {bare} BEGIN
           INSERT INTO _changes (kind, tbl, old, new) VALUES ('delete', {tbl}, json_set({old}, '$._seq', kalam_seq(), '$._deleted', json('true')), NULL);
         END;",
        cols = cols.join(", "),
        ins = trig("ins"),
        upd = trig("upd"),
        del = trig("del"),
        old = obj("OLD."),
    )
}

impl Engine {
    /// Reads the `_changes` rows the triggers wrote and broadcasts them.
    pub(super) fn drain_changes(&mut self, user: &str) -> Result<(), SqlError> {
        let conn = self.conn(user)?;
        let mut found: Vec<RawChange> = Vec::new();
        for schema in ["main", "shared"] {
            let mut st = conn
                .prepare(&format!(
                    "SELECT kind, tbl, old, new FROM {schema}._changes ORDER BY id"
                ))
                .map_err(internal)?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })
                .map_err(internal)?;
            for r in rows {
                let (k, t, o, nw) = r.map_err(internal)?;
                found.push((k, t, o, nw, schema == "main"));
            }
            conn.execute(&format!("DELETE FROM {schema}._changes"), [])
                .map_err(internal)?;
        }
        // One commit sequence number for what this statement (or COMMIT) wrote.
        let commit_seq = if found.is_empty() { 0 } else { self.seq.next() };
        for (kind, table, old, new, per_user) in found {
            let Some(def) = self.table(&table).cloned() else {
                continue;
            };
            let decode = |s: Option<String>| -> Option<Map<String, Value>> {
                let v: Value = serde_json::from_str(&s?).ok()?;
                let mut m = v.as_object()?.clone();
                for (k, v) in m.iter_mut() {
                    let ktype = if k == "_seq" {
                        "BigInt"
                    } else if k == "_deleted" {
                        "Boolean"
                    } else {
                        def.column(k).map(|c| c.ktype).unwrap_or("Text")
                    };
                    *v = encode_json(v.take(), ktype);
                }
                Some(m)
            };
            let change = Change {
                table: def.full.clone(),
                kind: match kind.as_str() {
                    "insert" => "insert",
                    "update" => "update",
                    _ => "delete",
                },
                owner: per_user.then(|| user.to_owned()),
                old: decode(old),
                new: decode(new),
            };
            let row = if change.kind == "delete" {
                &change.old
            } else {
                &change.new
            };
            if let Some(row) = row {
                let pk: Vec<String> = def.columns.iter().filter(|c| c.pk).map(|c| c.name.clone()).collect();
                self.topics.publish(Published {
                    table: &def.full,
                    kind: change.kind,
                    row,
                    pk: &pk,
                    user: change.owner.as_deref(),
                    commit_seq: (def.kind != TableKind::Stream).then_some(commit_seq),
                });
            }
            let _ = self.changes.send(Arc::new(change));
        }
        Ok(())
    }
}
