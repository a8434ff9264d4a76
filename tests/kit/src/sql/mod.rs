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
//!
//! Modules by concern: [`errors`] (the error shape and SQLite error
//! classification), [`tokenize`] (the small SQL tokenizer and text helpers),
//! [`types`] (KalamDB types ⇄ SQLite values and JSON), [`catalog`] (tables,
//! users, name resolution), [`dispatch`] (a statement's kind, parsed once, and
//! what runs it), [`ddl`], [`dml`], [`changes`] (change capture, which also
//! feeds the topics), [`topics`] (topic DDL) and [`live`] (live-query initial
//! data and filters).

mod catalog;
mod changes;
mod ddl;
mod dispatch;
mod dml;
mod errors;
mod live;
mod tokenize;
mod topics;
mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, params_from_iter};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::topics::Published;

pub use catalog::{ColumnDef, TableDef, TableKind, UserRecord};
pub use changes::Change;
pub(crate) use dispatch::parse_execute_as;
pub use errors::SqlError;
pub use live::{LivePage, live_schema, project};
pub(crate) use tokenize::split_statements;

use catalog::*;
use changes::*;
use dispatch::*;
use errors::*;
use tokenize::*;
use types::*;

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
    /// Topics fed by the tables' changes, with their messages and offsets.
    pub(crate) topics: crate::topics::Topics,
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
            topics: crate::topics::Topics::default(),
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
}
