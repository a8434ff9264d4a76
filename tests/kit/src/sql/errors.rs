//! The KalamDB-shaped SQL error and the classification of SQLite's errors.

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
    pub(super) fn exec(n: usize, detail: impl std::fmt::Display) -> Self {
        SqlError::new(400, "SQL_EXECUTION_ERROR", format!("Statement {n} failed: {detail}"))
    }
}

pub(super) fn classify(n: usize, e: rusqlite::Error) -> SqlError {
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

pub(super) fn internal(e: impl std::fmt::Display) -> SqlError {
    SqlError::new(500, "INTERNAL_ERROR", e.to_string())
}
