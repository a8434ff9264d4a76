//! The SQL engine behind `POST /v1/api/sql`: SQLite (through rusqlite), with
//! KalamDB's namespaces, table kinds, types, system columns and answer shapes
//! layered on top.
//!
//! - USER tables live in one in-memory database **per user**, so a user sees
//!   and writes only their own rows by construction. SHARED and STREAM tables
//!   live in one shared-cache in-memory database attached to every user's
//!   connection as `shared`.
//! - `ns.table` names are rewritten to the SQLite table `"ns.table"` (with the
//!   `shared.` schema for shared tables) by a small tokenizer, which leaves
//!   string literals and everything else alone.
//! - Triggers stamp `_seq` (a Snowflake-like, strictly increasing i64) on
//!   every insert and update, and record every change (old and new row as
//!   JSON) in a `_changes` table that the engine drains after each statement
//!   and broadcasts to live queries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, params_from_iter};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

/// A KalamDB-shaped SQL failure.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlError {
    /// HTTP status.
    pub status: u16,
    /// `INVALID_SQL`, `SQL_EXECUTION_ERROR`, …
    pub code: &'static str,
    /// Message.
    pub message: String,
    /// The failing statement (sent to admins only).
    pub details: Option<String>,
    /// The column of a violated primary key (to name the value afterwards).
    pub duplicate_column: Option<String>,
}

impl SqlError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        SqlError {
            status,
            code,
            message: message.into(),
            details: None,
            duplicate_column: None,
        }
    }
    fn exec(n: usize, detail: impl std::fmt::Display) -> Self {
        SqlError::new(400, "SQL_EXECUTION_ERROR", format!("Statement {n} failed: {detail}"))
    }
}

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
    fn sqlite_name(&self) -> String {
        if self.kind.per_user() {
            quote(&self.full)
        } else {
            format!("shared.{}", quote(&self.full))
        }
    }

    fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

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

/// One result of a statement.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Rows.
    Rows {
        /// Schema as JSON (`name`, `data_type`, `index`, `flags`?).
        schema: Vec<Value>,
        /// Positional rows.
        rows: Vec<Vec<Value>>,
    },
    /// A DDL or other statement.
    Message(String),
    /// DML totals.
    Inserted(usize),
    /// DML totals.
    Updated(usize),
    /// DML totals.
    Deleted(usize),
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
fn system_users_def() -> TableDef {
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

/// The engine. Not `Sync`: the server keeps it behind a mutex and never
/// holds that across an await.
pub struct Engine {
    shared_uri: String,
    _keeper: Connection,
    namespaces: BTreeSet<String>,
    tables: BTreeMap<String, TableDef>,
    conns: HashMap<String, Connection>,
    seq: Arc<SeqGen>,
    changes: broadcast::Sender<Arc<Change>>,
    /// Users (`root` and those created by SQL).
    pub users: BTreeMap<String, UserRecord>,
    /// bcrypt cost for new users.
    pub bcrypt_cost: u32,
    /// The open explicit transaction of the current request: user and id.
    transaction: Option<(String, String)>,
}

/// A `_changes` row: kind, table, old JSON, new JSON, from the per-user database.
type RawChange = (String, String, Option<String>, Option<String>, bool);

/// Snowflake-like ids: ms since the KalamDB epoch << 22, strictly increasing.
pub struct SeqGen(AtomicI64);

impl SeqGen {
    fn next(&self) -> i64 {
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

static INSTANCE: AtomicU64 = AtomicU64::new(0);

impl Engine {
    /// A fresh, empty engine.
    pub fn new(changes: broadcast::Sender<Arc<Change>>) -> Self {
        let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
        let shared_uri = format!("file:kalam-testkit-{}-{n}?mode=memory&cache=shared", std::process::id());
        // Keeps the shared in-memory database alive while the engine lives.
        let keeper = Connection::open_with_flags(
            &shared_uri,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
                | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .expect("open the shared in-memory database");
        let _ = keeper.execute_batch(CHANGES_TABLE);
        Engine {
            shared_uri,
            _keeper: keeper,
            namespaces: BTreeSet::from(["default".to_owned(), "system".to_owned()]),
            tables: BTreeMap::new(),
            conns: HashMap::new(),
            seq: Arc::new(SeqGen(AtomicI64::new(0))),
            changes,
            users: BTreeMap::new(),
            bcrypt_cost: 4,
            transaction: None,
        }
    }

    /// A table by `ns.table` (case-insensitive).
    pub fn table(&self, full: &str) -> Option<&TableDef> {
        self.tables.get(&full.to_ascii_lowercase())
    }

    fn conn(&mut self, user: &str) -> Result<&Connection, SqlError> {
        if !self.conns.contains_key(user) {
            let c = Connection::open_in_memory().map_err(internal)?;
            c.execute(&format!("ATTACH DATABASE '{}' AS shared", self.shared_uri), [])
                .map_err(internal)?;
            let seq = self.seq.clone();
            c.create_scalar_function(
                "kalam_seq",
                0,
                rusqlite::functions::FunctionFlags::SQLITE_UTF8,
                move |_| Ok(seq.next()),
            )
            .map_err(internal)?;
            c.create_scalar_function(
                "kalam_now_us",
                0,
                rusqlite::functions::FunctionFlags::SQLITE_UTF8,
                |_| {
                    Ok(std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_micros() as i64)
                        .unwrap_or(0))
                },
            )
            .map_err(internal)?;
            c.execute_batch(CHANGES_TABLE).map_err(internal)?;
            for t in self.tables.values().filter(|t| t.kind.per_user()) {
                c.execute_batch(&create_sqlite_table(t)).map_err(internal)?;
            }
            self.conns.insert(user.to_owned(), c);
        }
        Ok(&self.conns[user])
    }

    /// Runs a request: one or more statements as `user` with `role`.
    pub fn run(
        &mut self,
        user: &str,
        role: &str,
        sql: &str,
        params: &[Value],
        namespace: Option<&str>,
    ) -> Result<Vec<(Outcome, String)>, SqlError> {
        let statements = split_statements(sql);
        if statements.is_empty() {
            return Err(SqlError::new(400, "EMPTY_SQL", "No SQL statements provided"));
        }
        if !params.is_empty() && statements.len() > 1 {
            return Err(SqlError::new(
                400,
                "PARAMS_WITH_BATCH",
                "Parameters not supported with multi-statement batches",
            ));
        }
        let mut out = Vec::new();
        for (i, stmt) in statements.iter().enumerate() {
            let r = self.statement(i + 1, user, role, stmt, params, namespace);
            match r {
                Ok(r) => out.push(r),
                Err(mut e) => {
                    self.roll_back_open_transaction();
                    let statement_failed = matches!(e.code, "SQL_EXECUTION_ERROR" | "PERMISSION_DENIED")
                        && e.message.starts_with("Statement ");
                    if statement_failed && e.details.is_none() {
                        e.details = Some(stmt.to_string());
                    }
                    return Err(e);
                }
            }
        }
        if self.roll_back_open_transaction() {
            return Err(SqlError::new(
                400,
                "SQL_EXECUTION_ERROR",
                "Request completed with an open explicit transaction; rolled back automatically",
            ));
        }
        Ok(out)
    }

    /// Rolls back a transaction a request left open; whether there was one.
    fn roll_back_open_transaction(&mut self) -> bool {
        let Some((owner, _)) = self.transaction.take() else {
            return false;
        };
        if let Some(c) = self.conns.get(&owner) {
            let _ = c.execute_batch("ROLLBACK");
        }
        true
    }

    fn statement(
        &mut self,
        n: usize,
        user: &str,
        role: &str,
        stmt: &str,
        params: &[Value],
        namespace: Option<&str>,
    ) -> Result<(Outcome, String), SqlError> {
        let admin = role == "dba" || role == "system";
        let words: Vec<String> = stmt
            .split_whitespace()
            .take(4)
            .map(|w| w.to_ascii_uppercase())
            .collect();
        let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
        match (w(0), w(1)) {
            ("EXECUTE", "AS") => {
                let (target, inner) = parse_execute_as(stmt)
                    .ok_or_else(|| SqlError::new(400, "INVALID_SQL", "SQL statement is invalid or not allowed"))?;
                if inner.is_empty() {
                    return Err(SqlError::new(
                        400,
                        "INVALID_INPUT",
                        "EXECUTE AS USER requires a non-empty inner SQL statement",
                    ));
                }
                if inner
                    .split_whitespace()
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case("EXECUTE"))
                {
                    return Err(SqlError::new(
                        400,
                        "INVALID_SQL",
                        "sql parser error: EXECUTE AS USER cannot be nested",
                    ));
                }
                let target_role = self.users.get(&target).map(|u| u.role.clone());
                if !admin {
                    return Err(SqlError::new(
                        403,
                        "PERMISSION_DENIED",
                        format!(
                            "Unauthorized: EXECUTE AS USER is not authorized: actor '{user}' with role {} cannot target '{target}' with role {}",
                            capitalize(role),
                            capitalize(target_role.as_deref().unwrap_or("user"))
                        ),
                    ));
                }
                let target_role = target_role.ok_or_else(|| SqlError::exec(n, format!("User '{target}' not found")))?;
                // Writes to SHARED tables cannot be impersonated (reads run
                // as the target, who is then refused if not an admin).
                let reads = inner
                    .split_whitespace()
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case("SELECT") || w.eq_ignore_ascii_case("WITH"));
                let touched = self.rewrite(n, &inner, namespace).map(|r| r.1).unwrap_or_default();
                if let Some(shared) = touched
                    .iter()
                    .filter_map(|t| self.table(t))
                    .find(|d| d.kind == TableKind::Shared)
                    .filter(|_| !reads)
                {
                    return Err(SqlError::new(
                        400,
                        "SQL_EXECUTION_ERROR",
                        format!(
                            "EXECUTE AS USER is not allowed on SHARED tables (table '{}'). AS USER impersonation is only supported for USER and STREAM tables.",
                            shared.full.replacen('.', ":", 1)
                        ),
                    ));
                }
                self.statement(n, &target, &target_role, &inner, params, namespace)
            }
            ("CREATE", "NAMESPACE") | ("DROP", "NAMESPACE") => {
                if !admin {
                    return Err(SqlError::new(
                        403,
                        "PERMISSION_DENIED",
                        "Admin privileges (DBA or System role) required for namespace operations",
                    ));
                }
                self.namespace_ddl(n, stmt).map(|o| (o, user.to_owned()))
            }
            ("CREATE", _) | ("DROP", "TABLE") | ("ALTER", _) if w(1) != "USER" || w(0) == "CREATE" => {
                if !admin {
                    return Err(SqlError::new(
                        403,
                        "PERMISSION_DENIED",
                        "Admin privileges (DBA or System role) required for DDL",
                    ));
                }
                if w(1) == "USER" && w(2) != "TABLE" {
                    return self.create_user(n, stmt).map(|o| (o, user.to_owned()));
                }
                if w(0) == "DROP" {
                    return self.drop_table(n, stmt).map(|o| (o, user.to_owned()));
                }
                if words.iter().any(|x| x == "TABLE") {
                    return self.create_table(n, stmt).map(|o| (o, user.to_owned()));
                }
                Err(SqlError::new(
                    400,
                    "INVALID_SQL",
                    "SQL statement is invalid or not allowed",
                ))
            }
            ("SELECT", _) | ("INSERT", _) | ("UPDATE", _) | ("DELETE", _) | ("WITH", _) => self
                .dml(n, user, role, stmt, params, namespace)
                .map(|o| (o, user.to_owned())),
            ("BEGIN", _) | ("START", "TRANSACTION") => {
                let id = transaction_id(self.seq.next());
                self.conn(user)?
                    .execute_batch("BEGIN")
                    .map_err(|e| SqlError::exec(n, e))?;
                self.transaction = Some((user.to_owned(), id.clone()));
                Ok((Outcome::Message(format!("Transaction started ({id})")), user.to_owned()))
            }
            ("COMMIT", _) | ("ROLLBACK", _) => {
                let (verb, done) = if w(0) == "COMMIT" {
                    ("COMMIT", "committed")
                } else {
                    ("ROLLBACK", "rolled back")
                };
                let id = match self.transaction.take() {
                    Some((owner, id)) if owner == user => id,
                    other => {
                        self.transaction = other;
                        return Err(SqlError::exec(n, "Execution error: no transaction is active"));
                    }
                };
                self.conn(user)?.execute_batch(verb).map_err(|e| SqlError::exec(n, e))?;
                self.drain_changes(user)?;
                Ok((Outcome::Message(format!("Transaction {done} ({id})")), user.to_owned()))
            }
            _ => Err(SqlError::new(
                400,
                "INVALID_SQL",
                format!(
                    "sql parser error: Expected: an SQL statement, found: {} at Line: 1, Column: 1",
                    stmt.split_whitespace().next().unwrap_or("")
                ),
            )),
        }
    }

    fn namespace_ddl(&mut self, n: usize, stmt: &str) -> Result<Outcome, SqlError> {
        let toks: Vec<&str> = stmt.split_whitespace().collect();
        let if_clause = toks.len() >= 5 && toks[2].eq_ignore_ascii_case("IF");
        let name = toks.last().map(|s| s.trim_matches('"').to_owned()).unwrap_or_default();
        if !valid_ident(&name) {
            return Err(SqlError::new(
                400,
                "INVALID_SQL",
                "SQL statement is invalid or not allowed",
            ));
        }
        if toks[0].eq_ignore_ascii_case("DROP") {
            if !self.namespaces.remove(&name) && !if_clause {
                return Err(SqlError::exec(n, format!("Not found: Namespace '{name}' not found")));
            }
            return Ok(Outcome::Message(format!("Namespace '{name}' dropped successfully")));
        }
        if self.namespaces.contains(&name) {
            if if_clause {
                return Ok(Outcome::Message(format!("Namespace '{name}' already exists")));
            }
            return Err(SqlError::exec(
                n,
                format!("Already exists: Namespace '{name}' already exists"),
            ));
        }
        self.namespaces.insert(name.clone());
        Ok(Outcome::Message(format!("Namespace '{name}' created successfully")))
    }

    fn create_user(&mut self, n: usize, stmt: &str) -> Result<Outcome, SqlError> {
        // CREATE USER 'alice' WITH PASSWORD 'x' ROLE user [EMAIL 'e']
        let toks = tokenize(stmt);
        let words: Vec<&Tok> = toks.iter().filter(|t| !matches!(t, Tok::Space(_))).collect();
        let text = |t: &Tok| match t {
            Tok::Str(s) => Some(s.clone()),
            Tok::Word(w) => Some(w.trim_matches('"').to_owned()),
            _ => None,
        };
        let name = words.get(2).and_then(|t| text(t)).unwrap_or_default();
        let find = |kw: &str| {
            words
                .iter()
                .position(|t| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(kw)))
                .and_then(|i| words.get(i + 1))
                .and_then(|t| text(t))
        };
        let password =
            find("PASSWORD").ok_or_else(|| SqlError::new(400, "INVALID_SQL", "CREATE USER needs a PASSWORD"))?;
        let role = find("ROLE").unwrap_or_else(|| "user".into()).to_ascii_lowercase();
        if !["user", "service", "dba", "system"].contains(&role.as_str()) {
            return Err(SqlError::new(400, "INVALID_SQL", format!("Invalid role '{role}'")));
        }
        if name.is_empty() || name.contains("..") || name.contains('/') || name.contains('\\') {
            return Err(SqlError::new(400, "INVALID_SQL", "Invalid user id"));
        }
        if self.users.contains_key(&name) {
            return Err(SqlError::exec(
                n,
                format!("Already exists: User '{name}' already exists"),
            ));
        }
        let hash = bcrypt::hash(&password, self.bcrypt_cost).map_err(internal)?;
        self.users.insert(
            name.clone(),
            UserRecord {
                role,
                hash,
                email: find("EMAIL"),
                created_at: crate::now_rfc3339_millis(),
                created_ms: crate::unix_now_ms(),
            },
        );
        Ok(Outcome::Message(format!("User '{name}' created")))
    }

    fn create_table(&mut self, n: usize, stmt: &str) -> Result<Outcome, SqlError> {
        let upper = stmt.to_ascii_uppercase();
        let open = stmt
            .find('(')
            .ok_or_else(|| SqlError::new(400, "INVALID_SQL", "CREATE TABLE needs columns"))?;
        let close = matching_paren(stmt, open)
            .ok_or_else(|| SqlError::new(400, "INVALID_SQL", "sql parser error: unbalanced parentheses"))?;
        let head: Vec<&str> = stmt[..open].split_whitespace().collect();
        let if_not_exists = upper[..open].contains("IF NOT EXISTS");
        let full = head.last().map(|s| s.trim_matches('"').to_owned()).unwrap_or_default();
        let Some((ns, table)) = full.split_once('.') else {
            return Err(SqlError::new(
                400,
                "INVALID_SQL",
                "Table name must be namespace-qualified (ns.table)",
            ));
        };
        if !valid_ident(ns) || !valid_ident(table) {
            return Err(SqlError::new(
                400,
                "INVALID_SQL",
                "SQL statement is invalid or not allowed",
            ));
        }
        let tail = upper[close..].to_string();
        // `CREATE [USER|SHARED|STREAM] TABLE` or `WITH (TYPE = '…')`; a
        // plain CREATE TABLE is a SHARED table, as on the server.
        let says =
            |kind: &str| head.iter().any(|w| w.eq_ignore_ascii_case(kind)) || tail.contains(&format!("'{kind}'"));
        let kind = if says("USER") {
            TableKind::User
        } else if says("STREAM") {
            TableKind::Stream
        } else {
            TableKind::Shared
        };
        let columns = parse_columns(&stmt[open + 1..close])?;
        if !self.namespaces.contains(ns) {
            return Err(SqlError::exec(n, format!("Not found: Namespace '{ns}' does not exist")));
        }
        let key = full.to_ascii_lowercase();
        if self.tables.contains_key(&key) {
            if if_not_exists {
                return Ok(Outcome::Message(format!("Table {full} already exists")));
            }
            return Err(SqlError::exec(
                n,
                format!("Already exists: Table '{full}' already exists"),
            ));
        }
        let def = TableDef {
            full: full.clone(),
            kind,
            columns,
        };
        let ddl = create_sqlite_table(&def);
        if kind.per_user() {
            for c in self.conns.values() {
                c.execute_batch(&ddl).map_err(|e| SqlError::exec(n, e))?;
            }
        } else {
            let c = self.conn("root")?;
            c.execute_batch(&ddl).map_err(|e| SqlError::exec(n, e))?;
        }
        self.tables.insert(key, def);
        let kind_name = match kind {
            TableKind::User => "user",
            TableKind::Shared => "shared",
            TableKind::Stream => "stream",
        };
        Ok(Outcome::Message(format!(
            "CREATE TABLE via Raft consensus: {kind_name} table {full} created successfully"
        )))
    }

    fn drop_table(&mut self, n: usize, stmt: &str) -> Result<Outcome, SqlError> {
        let toks: Vec<&str> = stmt.split_whitespace().collect();
        if toks.len() < 3 {
            return Err(SqlError::new(
                400,
                "INVALID_SQL",
                "sql parser error: Expected: identifier, found: EOF",
            ));
        }
        let if_exists = toks.len() >= 5 && toks[2].eq_ignore_ascii_case("IF");
        let full = toks.last().map(|s| s.trim_matches('"').to_owned()).unwrap_or_default();
        let Some(def) = self.tables.remove(&full.to_ascii_lowercase()) else {
            if if_exists {
                return Ok(Outcome::Message(format!("Table {full} does not exist")));
            }
            return Err(SqlError::exec(n, format!("Table not found: {full}")));
        };
        let drop = format!("DROP TABLE IF EXISTS {}", def.sqlite_name());
        for c in self.conns.values() {
            let _ = c.execute_batch(&drop);
        }
        Ok(Outcome::Message(format!("Table {full} dropped successfully")))
    }

    fn dml(
        &mut self,
        n: usize,
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
        let first = stmt.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        let defs: Vec<TableDef> = tables.iter().filter_map(|t| self.table(t).cloned()).collect();
        // SHARED tables have the access level `private` here: admins only.
        if !admin && let Some(shared) = defs.iter().find(|d| d.kind == TableKind::Shared) {
            let (planning, what) = if first == "SELECT" || first == "WITH" {
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
        if first == "SELECT" || first == "WITH" {
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
                if let (Some(column), Some(def), "INSERT") = (e.duplicate_column.take(), defs.first(), first.as_str())
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
        Ok(match first.as_str() {
            "INSERT" => Outcome::Inserted(count),
            "UPDATE" => Outcome::Updated(count),
            _ => Outcome::Deleted(count),
        })
    }

    /// Fills a temporary `system.users` (the server's columns) from the users.
    fn sync_system_users(&mut self, user: &str) -> Result<(), SqlError> {
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

    /// Reads the `_changes` rows the triggers wrote and broadcasts them.
    fn drain_changes(&mut self, user: &str) -> Result<(), SqlError> {
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
            let _ = self.changes.send(Arc::new(change));
        }
        Ok(())
    }

    /// Rewrites `ns.table` (and unqualified names, with `namespace`) to
    /// SQLite names. Returns the rewritten SQL and the tables it touches.
    fn rewrite(&self, n: usize, stmt: &str, namespace: Option<&str>) -> Result<(String, Vec<String>), SqlError> {
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

    /// Rows of a live query's table for the subscription's initial data,
    /// as the given user: `(rows, last _seq)`.
    pub fn live_rows(&mut self, q: LivePage<'_>) -> Result<Vec<Map<String, Value>>, SqlError> {
        let LivePage {
            user,
            table,
            columns,
            where_sql,
            after_seq,
            limit,
            newest,
        } = q;
        let def = self
            .table(table)
            .cloned()
            .ok_or_else(|| SqlError::new(404, "NOT_FOUND", format!("Not found: Table not found: {table}")))?;
        let cols = project(&def, columns);
        let mut sql = format!(
            "SELECT {} FROM {}",
            cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", "),
            def.sqlite_name()
        );
        let mut conds = Vec::new();
        if let Some(w) = where_sql {
            let (w, _) = self.rewrite(1, w, None)?;
            conds.push(format!("({w})"));
        }
        if let Some(s) = after_seq {
            conds.push(format!("_seq > {s}"));
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
        if newest {
            out.reverse();
        }
        Ok(out)
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
    /// At most this many rows.
    pub limit: usize,
    /// The newest rows (for `last_rows`).
    pub newest: bool,
}

/// The columns a live query projects: `*` is every column plus `_seq` and
/// `_deleted`; a list gets `_seq` added.
pub fn project(def: &TableDef, columns: &[String]) -> Vec<String> {
    if columns.is_empty() || columns.iter().any(|c| c == "*") {
        let mut all: Vec<String> = def.columns.iter().map(|c| c.name.clone()).collect();
        all.push("_seq".into());
        all.push("_deleted".into());
        return all;
    }
    let mut cols: Vec<String> = columns.to_vec();
    if !cols.iter().any(|c| c == "_seq") {
        cols.push("_seq".into());
    }
    cols
}

/// The schema of a live query, as JSON fields.
pub fn live_schema(def: &TableDef, columns: &[String]) -> Vec<Value> {
    project(def, columns)
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

const CHANGES_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS _changes (id INTEGER PRIMARY KEY, kind TEXT, tbl TEXT, old TEXT, new TEXT);";

fn create_sqlite_table(def: &TableDef) -> String {
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

/// The SQLite declared type that also tells the KalamDB type back.
fn decl_type(ktype: &str) -> &'static str {
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
        _ => "TEXT",
    }
}

fn ktype_of_decl(decl: &str) -> Option<&'static str> {
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
        "TEXT" => "Text",
        _ => return None,
    })
}

fn ktype_of_sql(t: &str) -> Option<&'static str> {
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
        _ => return None,
    })
}

fn parse_columns(body: &str) -> Result<Vec<ColumnDef>, SqlError> {
    let mut cols = Vec::new();
    let mut table_pk: Vec<String> = Vec::new();
    for part in split_top_level(body, ',') {
        let part = part.trim();
        let upper = part.to_ascii_uppercase();
        if upper.starts_with("PRIMARY KEY") {
            if let (Some(a), Some(b)) = (part.find('('), part.rfind(')'))
                && a < b
            {
                table_pk = part[a + 1..b]
                    .split(',')
                    .map(|s| s.trim().trim_matches('"').to_owned())
                    .collect();
            }
            continue;
        }
        let mut words = part.split_whitespace();
        let (Some(name), Some(ty)) = (words.next(), words.next()) else {
            return Err(SqlError::new(
                400,
                "INVALID_SQL",
                format!("sql parser error: bad column definition '{part}'"),
            ));
        };
        let ktype = ktype_of_sql(ty)
            .ok_or_else(|| SqlError::new(400, "INVALID_SQL", format!("Unsupported data type '{ty}'")))?;
        let pk = upper.contains("PRIMARY KEY");
        cols.push(ColumnDef {
            name: name.trim_matches('"').to_owned(),
            ktype,
            pk,
            not_null: pk || upper.contains("NOT NULL"),
            default_now: upper.contains("DEFAULT NOW()") || upper.contains("DEFAULT CURRENT_TIMESTAMP"),
        });
    }
    for c in cols.iter_mut() {
        if table_pk.iter().any(|p| p.eq_ignore_ascii_case(&c.name)) {
            c.pk = true;
            c.not_null = true;
        }
    }
    if cols.is_empty() {
        return Err(SqlError::new(400, "INVALID_SQL", "CREATE TABLE needs columns"));
    }
    Ok(cols)
}

fn flags_of(c: &ColumnDef) -> Vec<&'static str> {
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

fn column_type(name: &str, decl: Option<&str>, defs: &[TableDef]) -> Option<&'static str> {
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

fn column_flags(name: &str, decl: Option<&str>, defs: &[TableDef]) -> Option<Vec<&'static str>> {
    if name == "_seq" || name == "_deleted" {
        return Some(vec!["nn"]);
    }
    decl?;
    let f = defs.iter().find_map(|d| d.column(name)).map(flags_of)?;
    (!f.is_empty()).then_some(f)
}

fn infer_type(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Integer(_) => "BigInt",
        ValueRef::Real(_) => "Double",
        ValueRef::Blob(_) => "Bytes",
        _ => "Text",
    }
}

/// A SQLite value in KalamDB's JSON encoding for `ktype`.
fn encode(v: ValueRef<'_>, ktype: &str) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => encode_json(json!(i), ktype),
        ValueRef::Real(f) => encode_json(json!(f), ktype),
        ValueRef::Text(t) => encode_json(Value::String(String::from_utf8_lossy(t).into_owned()), ktype),
        ValueRef::Blob(b) => json!(b),
    }
}

fn encode_json(v: Value, ktype: &str) -> Value {
    match (ktype, v) {
        (_, Value::Null) => Value::Null,
        ("BigInt", Value::Number(n)) => Value::String(n.to_string()),
        ("Boolean", Value::Number(n)) => Value::Bool(n.as_i64().unwrap_or(0) != 0),
        ("Boolean", Value::Bool(b)) => Value::Bool(b),
        ("Int" | "SmallInt", Value::Number(n)) => json!(n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))),
        ("Double" | "Float", Value::Number(n)) => json!(n.as_f64().unwrap_or(0.0)),
        ("Timestamp", Value::String(s)) => parse_timestamp_us(&s).map(|us| json!(us)).unwrap_or(Value::String(s)),
        ("Date", Value::String(s)) => parse_date_days(&s).map(|d| json!(d)).unwrap_or(Value::String(s)),
        ("Text" | "Json" | "Uuid", Value::Number(n)) => Value::String(n.to_string()),
        (_, v) => v,
    }
}

fn json_to_sql(v: &Value) -> rusqlite::types::Value {
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

fn json_cell_to_sql(v: &Value, ktype: &str) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match (ktype, v) {
        ("BigInt", Value::String(s)) => s.parse().map(V::Integer).unwrap_or_else(|_| V::Text(s.clone())),
        _ => json_to_sql(v),
    }
}

fn classify(n: usize, e: rusqlite::Error) -> SqlError {
    let msg = e.to_string();
    // The statement was classified already (its first word is known), so
    // like the server a parse failure now is an execution error.
    if msg.contains("syntax error") || msg.contains("incomplete input") || msg.contains("unrecognized token") {
        return SqlError::exec(n, format!("Execution error: SQL error: ParserError(\"{msg}\")"));
    }
    if let Some(cols) = msg.strip_prefix("UNIQUE constraint failed: ") {
        let mut e = SqlError::exec(
            n,
            format!(
                "Execution error: Raft error: Internal error: Provider error: Execution error: Failed to insert batch: Already exists: Primary key violation: {msg}"
            ),
        );
        // `ns.table.column` (one column) names the key column.
        if !cols.contains(',') {
            e.duplicate_column = cols.rsplit('.').next().map(str::to_owned);
        }
        return e;
    }
    if msg.contains("no such table") {
        return SqlError::exec(n, format!("Table not found: Error during planning: {msg}"));
    }
    SqlError::exec(n, format!("Execution error: {msg}"))
}

/// Binds `$N` parameters. To SQLite they are named parameters numbered by
/// first appearance, so each is bound by its name.
fn bind_params(st: &mut rusqlite::Statement<'_>, bind: &[rusqlite::types::Value], n: usize) -> Result<(), SqlError> {
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
fn duplicate_key(
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

/// A UUIDv7-shaped transaction id from a Snowflake-like `_seq` value.
fn transaction_id(seq: i64) -> String {
    let ms = ((seq >> 22) + 1_704_067_200_000) as u64;
    let n = (seq & 0x3f_ffff) as u64;
    format!(
        "{:08x}-{:04x}-7{:03x}-8{:03x}-{:012x}",
        ms >> 16,
        ms & 0xffff,
        (n >> 12) & 0xfff,
        n & 0xfff,
        std::process::id()
    )
}

fn internal(e: impl std::fmt::Display) -> SqlError {
    SqlError::new(500, "INTERNAL_ERROR", e.to_string())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Functions and literals KalamDB spells differently from SQLite.
fn translate_word(w: &str) -> String {
    match w.to_ascii_uppercase().as_str() {
        "NOW" => "kalam_now_us".into(),
        _ => w.to_owned(),
    }
}

/// KalamDB (DataFusion) names an unaliased literal column by its type:
/// `SELECT 1` has a column `Int64(1)`, `SELECT 'a'` one called `Utf8("a")`.
fn datafusion_name(sqlite_name: &str) -> String {
    let n = sqlite_name.trim();
    if !n.is_empty() && n.trim_start_matches('-').chars().all(|c| c.is_ascii_digit()) {
        return format!("Int64({n})");
    }
    if let Some(inner) = n.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return format!("Utf8(\"{inner}\")");
    }
    sqlite_name.to_owned()
}

fn has_limit(stmt: &str) -> bool {
    tokenize(stmt)
        .iter()
        .any(|t| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case("LIMIT")))
}

fn parse_execute_as(stmt: &str) -> Option<(String, String)> {
    // EXECUTE AS USER 'alice' (statement)
    let open = stmt.find('(')?;
    let close = matching_paren(stmt, open)?;
    let head: Vec<&str> = stmt[..open].split_whitespace().collect();
    let user = head.get(3)?.trim_matches(|c| c == '\'' || c == '"').to_owned();
    let inner = stmt[open + 1..close].trim().to_owned();
    Some((user, inner))
}

fn matching_paren(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0i32;
    let mut in_str = false;
    for (i, c) in s.char_indices().skip_while(|(i, _)| *i < open) {
        match c {
            '\'' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn split_top_level(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let (mut depth, mut in_str) = (0i32, false);
    for c in s.chars() {
        match c {
            '\'' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => depth -= 1,
            c if c == sep && !in_str && depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        parts.push(cur);
    }
    parts
}

/// Splits a request into statements on `;` outside string literals.
pub fn split_statements(sql: &str) -> Vec<String> {
    split_top_level(sql, ';')
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Space(String),
    Punct(char),
    Param(String),
}

fn tokenize(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            let start = i;
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            out.push(Tok::Space(chars[start..i].iter().collect()));
        } else if c == '\'' {
            let mut v = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        v.push('\'');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                v.push(chars[i]);
                i += 1;
            }
            out.push(Tok::Str(v));
        } else if c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            i = (i + 1).min(chars.len());
            out.push(Tok::Word(chars[start..i].iter().collect()));
        } else if c == '$' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Tok::Param(chars[start..i].iter().collect()));
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
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

    #[test]
    fn statements_split_outside_strings() {
        assert_eq!(
            split_statements("SELECT 'a;b'; SELECT 2;;"),
            vec!["SELECT 'a;b'", "SELECT 2"]
        );
        assert!(split_statements(" ; ").is_empty());
    }
}
