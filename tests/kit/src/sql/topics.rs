//! Topic DDL: `CREATE TOPIC`, `ALTER TOPIC … ADD SOURCE`, `DROP TOPIC`,
//! `CLEAR TOPIC`, with the server's messages and errors (the topics
//! themselves are in [`crate::topics`]).

use super::*;
use crate::topics::{Op, Route};

/// The whitespace-separated words of a statement.
fn words(stmt: &str) -> Vec<&str> {
    stmt.split_whitespace().collect()
}

/// The word after keyword `kw` (case-insensitive).
fn after<'a>(w: &[&'a str], kw: &str) -> Option<&'a str> {
    let i = w.iter().position(|x| x.eq_ignore_ascii_case(kw))?;
    w.get(i + 1).copied()
}

fn name_at<'a>(w: &[&'a str], i: usize) -> Result<&'a str, SqlError> {
    w.get(i)
        .map(|s| s.trim_matches('"'))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SqlError::new(400, "INVALID_SQL", format!("Expected identifier after {i} tokens")))
}

fn no_topic(n: usize, id: &str) -> SqlError {
    SqlError::exec(n, format!("Not found: Topic '{id}' does not exist"))
}

impl Engine {
    /// `CREATE TOPIC ns.name [PARTITIONS n]`.
    pub(super) fn create_topic(&mut self, n: usize, stmt: &str) -> Result<Outcome, SqlError> {
        let w = words(stmt);
        let id = name_at(&w, 2)?;
        let partitions = match after(&w, "PARTITIONS") {
            None if w.iter().any(|x| x.eq_ignore_ascii_case("PARTITIONS")) => {
                return Err(SqlError::new(400, "INVALID_SQL", "PARTITIONS requires a value"));
            }
            None => 1,
            Some(p) => p
                .parse::<u32>()
                .map_err(|_| SqlError::new(400, "INVALID_SQL", "Partition count must be a positive integer"))?,
        };
        let Some((ns, _)) = id.split_once('.') else {
            return Err(SqlError::exec(
                n,
                "Invalid operation: Topic name must be namespace-qualified: <namespace>.<topic>",
            ));
        };
        if !self.namespaces.contains(ns) {
            return Err(SqlError::exec(n, format!("Not found: Namespace '{ns}' does not exist")));
        }
        if !self.topics.create(id, partitions) {
            return Err(SqlError::exec(
                n,
                format!("Already exists: Topic '{id}' already exists"),
            ));
        }
        Ok(Outcome::Message(format!(
            "Created topic '{id}' with {partitions} partition(s)"
        )))
    }

    /// `ALTER TOPIC ns.name ADD SOURCE ns.table ON op [WHERE …] [WITH (payload = '…')]`.
    pub(super) fn alter_topic(&mut self, n: usize, stmt: &str) -> Result<Outcome, SqlError> {
        let w = words(stmt);
        let id = name_at(&w, 2)?;
        let table = after(&w, "SOURCE")
            .map(|t| t.trim_matches('"'))
            .ok_or_else(|| SqlError::new(400, "INVALID_SQL", "SOURCE keyword not found"))?;
        let op = after(&w, "ON").ok_or_else(|| SqlError::new(400, "INVALID_SQL", "ON keyword not found"))?;
        let op = Op::parse(op).ok_or_else(|| {
            SqlError::new(
                400,
                "INVALID_SQL",
                format!(
                    "Invalid operation '{}'. Expected INSERT, UPDATE, or DELETE",
                    op.to_ascii_uppercase()
                ),
            )
        })?;
        let upper = stmt.to_ascii_uppercase();
        let key_payload = upper
            .find(" WITH ")
            .is_some_and(|at| upper[at..].replace(' ', "").contains("PAYLOAD='KEY'"));
        let route = Route {
            table: table.to_ascii_lowercase(),
            op,
            key_payload,
        };
        match self.topics.add_route(id, route) {
            None => Err(no_topic(n, id)),
            Some(false) => Err(SqlError::exec(
                n,
                format!(
                    "Already exists: Route for {table} ON {} already exists in topic '{id}'",
                    op.name()
                ),
            )),
            Some(true) => Ok(Outcome::Message(format!(
                "Added source {table} ON {} to topic '{id}'",
                op.name()
            ))),
        }
    }

    /// `DROP TOPIC ns.name`.
    pub(super) fn drop_topic(&mut self, n: usize, stmt: &str) -> Result<Outcome, SqlError> {
        let w = words(stmt);
        let id = name_at(&w, 2)?;
        let job = self.topics.drop_topic(id).ok_or_else(|| no_topic(n, id))?;
        Ok(Outcome::Message(format!(
            "Dropped topic '{id}' and scheduled cleanup job [{job}]"
        )))
    }

    /// `CLEAR TOPIC ns.name`: its messages go.
    pub(super) fn clear_topic(&mut self, n: usize, stmt: &str) -> Result<Outcome, SqlError> {
        let w = words(stmt);
        let id = name_at(&w, 2)?;
        let job = self.topics.clear(id).ok_or_else(|| no_topic(n, id))?;
        Ok(Outcome::Message(format!(
            "Scheduled cleanup job [{job}] for topic '{id}'"
        )))
    }
}
