//! A statement's kind, parsed once from its leading keywords, and the
//! dispatch that runs it.

use super::*;

/// What a statement is, from its leading keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StatementKind {
    /// `EXECUTE AS USER 'x' (…)`.
    ExecuteAs,
    /// `CREATE NAMESPACE …` / `DROP NAMESPACE …`.
    Namespace,
    /// `CREATE USER …`.
    CreateUser,
    /// `ALTER USER name SET ROLE role` (a role change invalidates the
    /// user's outstanding tokens: they carry the old role).
    AlterUserRole,
    /// `CREATE [USER|SHARED|STREAM] TABLE …` (and `ALTER … TABLE …`, which
    /// the kit answers like a CREATE TABLE it cannot parse).
    CreateTable,
    /// `DROP TABLE …`.
    DropTable,
    /// `CREATE TOPIC …`.
    CreateTopic,
    /// `ALTER TOPIC … ADD SOURCE …`.
    AlterTopic,
    /// `DROP TOPIC …`.
    DropTopic,
    /// `CLEAR TOPIC …`.
    ClearTopic,
    /// Any other `CREATE …` or `ALTER …` (not `ALTER USER`): DDL the kit
    /// does not know, refused after the admin check.
    OtherDdl,
    /// `SELECT` / `WITH`.
    Query,
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT`.
    Commit,
    /// `ROLLBACK`.
    Rollback,
    /// Anything else: a parser error naming the first word.
    Unknown,
}

impl StatementKind {
    /// The kind of `stmt`.
    pub(super) fn of(stmt: &str) -> StatementKind {
        let words: Vec<String> = stmt
            .split_whitespace()
            .take(5)
            .map(|w| w.to_ascii_uppercase())
            .collect();
        let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
        let says_table = words.iter().any(|x| x == "TABLE");
        match (w(0), w(1)) {
            ("EXECUTE", "AS") => StatementKind::ExecuteAs,
            ("CREATE" | "DROP", "NAMESPACE") => StatementKind::Namespace,
            ("CREATE", "USER") if w(2) != "TABLE" => StatementKind::CreateUser,
            ("ALTER", "USER") if w(3) == "SET" && w(4) == "ROLE" => StatementKind::AlterUserRole,
            ("DROP", "TABLE") => StatementKind::DropTable,
            ("CREATE", "TOPIC") => StatementKind::CreateTopic,
            ("ALTER", "TOPIC") => StatementKind::AlterTopic,
            ("DROP", "TOPIC") => StatementKind::DropTopic,
            ("CLEAR", "TOPIC") => StatementKind::ClearTopic,
            ("CREATE", _) if says_table => StatementKind::CreateTable,
            ("ALTER", x) if x != "USER" && says_table => StatementKind::CreateTable,
            ("CREATE", _) => StatementKind::OtherDdl,
            ("ALTER", x) if x != "USER" => StatementKind::OtherDdl,
            ("SELECT" | "WITH", _) => StatementKind::Query,
            ("INSERT", _) => StatementKind::Insert,
            ("UPDATE", _) => StatementKind::Update,
            ("DELETE", _) => StatementKind::Delete,
            ("BEGIN", _) | ("START", "TRANSACTION") => StatementKind::Begin,
            ("COMMIT", _) => StatementKind::Commit,
            ("ROLLBACK", _) => StatementKind::Rollback,
            _ => StatementKind::Unknown,
        }
    }

    /// Whether it manages topics (admins only, with their own message).
    fn topic_ddl(self) -> bool {
        matches!(
            self,
            StatementKind::CreateTopic
                | StatementKind::AlterTopic
                | StatementKind::DropTopic
                | StatementKind::ClearTopic
        )
    }

    /// Whether only admins (DBA, System) may run it.
    fn admin_only(self) -> bool {
        matches!(
            self,
            StatementKind::CreateUser
                | StatementKind::AlterUserRole
                | StatementKind::CreateTable
                | StatementKind::DropTable
                | StatementKind::OtherDdl
        )
    }
}

impl Engine {
    /// Runs statement number `n` of a request as `user` with `role`;
    /// returns its outcome and the user it ran as.
    pub(super) fn statement(
        &mut self,
        n: usize,
        user: &str,
        role: &str,
        stmt: &str,
        params: &[Value],
        namespace: Option<&str>,
    ) -> Result<(Outcome, String), SqlError> {
        let admin = role == "dba" || role == "system";
        let kind = StatementKind::of(stmt);
        if kind.admin_only() && !admin {
            return Err(SqlError::new(
                403,
                "PERMISSION_DENIED",
                "Admin privileges (DBA or System role) required for DDL",
            ));
        }
        if kind.topic_ddl() && !admin {
            return Err(SqlError::new(
                403,
                "PERMISSION_DENIED",
                "Admin privileges (DBA or System role) required for topic management",
            ));
        }
        let as_user = |o: Outcome| (o, user.to_owned());
        match kind {
            StatementKind::ExecuteAs => self.execute_as(n, user, role, stmt, params, namespace),
            StatementKind::Namespace => {
                if !admin {
                    return Err(SqlError::new(
                        403,
                        "PERMISSION_DENIED",
                        "Admin privileges (DBA or System role) required for namespace operations",
                    ));
                }
                self.namespace_ddl(n, stmt).map(as_user)
            }
            StatementKind::CreateUser => self.create_user(n, stmt).map(as_user),
            StatementKind::AlterUserRole => self.alter_user_role(stmt).map(as_user),
            StatementKind::CreateTable => self.create_table(n, stmt).map(as_user),
            StatementKind::DropTable => self.drop_table(n, stmt).map(as_user),
            StatementKind::CreateTopic => self.create_topic(n, stmt).map(as_user),
            StatementKind::AlterTopic => self.alter_topic(n, stmt).map(as_user),
            StatementKind::DropTopic => self.drop_topic(n, stmt).map(as_user),
            StatementKind::ClearTopic => self.clear_topic(n, stmt).map(as_user),
            StatementKind::OtherDdl => Err(SqlError::new(
                400,
                "INVALID_SQL",
                "SQL statement is invalid or not allowed",
            )),
            StatementKind::Query | StatementKind::Insert | StatementKind::Update | StatementKind::Delete => {
                self.dml(n, kind, user, role, stmt, params, namespace).map(as_user)
            }
            StatementKind::Begin => {
                let id = transaction_id(self.seq.next());
                self.conn(user)?
                    .execute_batch("BEGIN")
                    .map_err(|e| SqlError::exec(n, e))?;
                self.transaction = Some((user.to_owned(), id.clone()));
                Ok(as_user(Outcome::Message(format!("Transaction started ({id})"))))
            }
            StatementKind::Commit | StatementKind::Rollback => {
                let (verb, done) = if kind == StatementKind::Commit {
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
                Ok(as_user(Outcome::Message(format!("Transaction {done} ({id})"))))
            }
            StatementKind::Unknown => Err(SqlError::new(
                400,
                "INVALID_SQL",
                format!(
                    "sql parser error: Expected: an SQL statement, found: {} at Line: 1, Column: 1",
                    stmt.split_whitespace().next().unwrap_or("")
                ),
            )),
        }
    }

    /// `EXECUTE AS USER 'target' (inner)`: admins only; runs `inner` as the
    /// target, except writes to SHARED tables.
    fn execute_as(
        &mut self,
        n: usize,
        user: &str,
        role: &str,
        stmt: &str,
        params: &[Value],
        namespace: Option<&str>,
    ) -> Result<(Outcome, String), SqlError> {
        let admin = role == "dba" || role == "system";
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
        // Writes to SHARED tables cannot be impersonated (reads run as the
        // target, who is then refused if not an admin).
        let reads = StatementKind::of(&inner) == StatementKind::Query;
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
}

/// A UUIDv7-shaped transaction id from a Snowflake-like `_seq` value.
pub(super) fn transaction_id(seq: i64) -> String {
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

pub(crate) fn parse_execute_as(stmt: &str) -> Option<(String, String)> {
    // EXECUTE AS USER 'alice' (statement)
    let open = stmt.find('(')?;
    let close = matching_paren(stmt, open)?;
    let head: Vec<&str> = stmt[..open].split_whitespace().collect();
    let user = head.get(3)?.trim_matches(|c| c == '\'' || c == '"').to_owned();
    let inner = stmt[open + 1..close].trim().to_owned();
    Some((user, inner))
}
