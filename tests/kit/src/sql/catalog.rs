//! The catalog: table kinds, columns, tables, users, and the resolution of
//! `ns.table` names to SQLite names.

use super::*;

/// Kind of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Rows are owned by users.
    User,
    /// One set of rows for all (the default of a plain `CREATE TABLE`), for
    /// admins only (access level `private`).
    Shared,
    /// Append-mostly; rows are owned by users, like USER tables.
    Stream,
}

impl TableKind {
    /// Whether each user has their own rows.
    pub fn per_user(self) -> bool {
        self != TableKind::Shared
    }
}

/// A column of a table.
#[derive(Debug, Clone)]
pub struct ColumnDef {
    /// Name.
    pub name: String,
    /// KalamDB type name (`BigInt`, `Text`, …).
    pub ktype: &'static str,
    /// Part of the primary key.
    pub pk: bool,
    /// NOT NULL.
    pub not_null: bool,
    /// `DEFAULT NOW()`.
    pub default_now: bool,
}

/// A table in the catalog.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// `ns.table`, as created.
    pub full: String,
    /// Kind.
    pub kind: TableKind,
    /// User columns, in order.
    pub columns: Vec<ColumnDef>,
}

impl TableDef {
    pub(super) fn sqlite_name(&self) -> String {
        if self.kind.per_user() {
            quote(&self.full)
        } else {
            format!("shared.{}", quote(&self.full))
        }
    }

    pub(super) fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// A user of the kit.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// Lower-case role.
    pub role: String,
    /// Password hash (bcrypt).
    pub hash: String,
    /// E-mail.
    pub email: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// The same, as Unix milliseconds (how `system.users` shows it).
    pub created_ms: i64,
}

/// `system.users` as the server declares it (timestamps in milliseconds).
pub(super) fn system_users_def() -> TableDef {
    let col = |name: &str, ktype: &'static str, pk: bool, not_null: bool| ColumnDef {
        name: name.into(),
        ktype,
        pk,
        not_null,
        default_now: false,
    };
    TableDef {
        full: "system.users".into(),
        kind: TableKind::Shared,
        columns: vec![
            col("user_id", "Text", true, true),
            col("password_hash", "Text", false, true),
            col("role", "Text", false, true),
            col("email", "Text", false, false),
            col("auth_type", "Text", false, true),
            col("auth_data", "Json", false, false),
            col("storage_mode", "Text", false, true),
            col("storage_id", "Text", false, false),
            col("failed_login_attempts", "Int", false, true),
            col("locked_until", "Timestamp", false, false),
            col("last_login_at", "Timestamp", false, false),
            col("created_at", "Timestamp", false, true),
            col("updated_at", "Timestamp", false, true),
            col("last_seen", "Timestamp", false, false),
            col("deleted_at", "Timestamp", false, false),
        ],
    }
}

pub(super) fn flags_of(c: &ColumnDef) -> Vec<&'static str> {
    let mut f = Vec::new();
    if c.pk {
        f.push("pk");
    }
    if c.not_null {
        f.push("nn");
    }
    if c.pk {
        f.push("uq");
    }
    f
}

impl Engine {
    /// Rewrites `ns.table` (and unqualified names, with `namespace`) to
    /// SQLite names. Returns the rewritten SQL and the tables it touches.
    pub(super) fn rewrite(
        &self,
        n: usize,
        stmt: &str,
        namespace: Option<&str>,
    ) -> Result<(String, Vec<String>), SqlError> {
        let toks = tokenize(stmt);
        let mut out = String::with_capacity(stmt.len() + 16);
        let mut tables = Vec::new();
        let mut i = 0;
        let mut prev_kw = String::new();
        while i < toks.len() {
            // ns . table
            if let (Tok::Word(a), Some(Tok::Punct('.')), Some(Tok::Word(b))) =
                (&toks[i], toks.get(i + 1), toks.get(i + 2))
            {
                let a_clean = a.trim_matches('"');
                let b_clean = b.trim_matches('"');
                let full = format!("{a_clean}.{b_clean}");
                if full.eq_ignore_ascii_case("system.users") {
                    out.push_str("temp.\"system.users\"");
                    tables.push("system.users".into());
                    i += 3;
                    prev_kw.clear();
                    continue;
                }
                if self.namespaces.contains(a_clean) || matches!(prev_kw.as_str(), "FROM" | "INTO" | "UPDATE" | "JOIN")
                {
                    match self.table(&full) {
                        Some(def) => {
                            out.push_str(&def.sqlite_name());
                            tables.push(def.full.to_ascii_lowercase());
                        }
                        None => {
                            return Err(SqlError::exec(
                                n,
                                format!("Table not found: Error during planning: table 'kalam.{full}' not found"),
                            ));
                        }
                    }
                    i += 3;
                    prev_kw.clear();
                    continue;
                }
            }
            match &toks[i] {
                Tok::Word(w) if matches!(prev_kw.as_str(), "FROM" | "INTO" | "UPDATE" | "JOIN") => {
                    let ns = namespace.unwrap_or("default");
                    let full = format!("{ns}.{}", w.trim_matches('"'));
                    match self.table(&full) {
                        Some(def) => {
                            out.push_str(&def.sqlite_name());
                            tables.push(def.full.to_ascii_lowercase());
                        }
                        None if w.starts_with('(') => out.push_str(w),
                        None => {
                            return Err(SqlError::exec(
                                n,
                                format!("Table not found: Error during planning: table 'kalam.{full}' not found"),
                            ));
                        }
                    }
                    prev_kw.clear();
                }
                Tok::Word(w) => {
                    prev_kw = w.to_ascii_uppercase();
                    out.push_str(&translate_word(w));
                }
                Tok::Space(s) => out.push_str(s),
                Tok::Str(s) => out.push_str(&sql_str(s)),
                Tok::Punct(c) => {
                    prev_kw.clear();
                    out.push(*c);
                }
                Tok::Param(p) => out.push_str(p),
            }
            i += 1;
        }
        Ok((out, tables))
    }
}
