//! What a SQL text is, read conservatively for retry decisions (see
//! [`QueryRequest::read_only`](crate::QueryRequest::read_only)): no parser,
//! only the first words after blanks and comments.

/// One statement (no `;` but at the end, even inside a string) that
/// starts with `SELECT`, `SHOW`, `DESCRIBE`, `DESC` or `EXPLAIN` (not
/// `EXPLAIN ANALYZE`, which runs the statement).
pub(crate) fn read_only(sql: &str) -> bool {
    let sql = sql.trim_end().trim_end_matches(';');
    if sql.contains(';') {
        return false;
    }
    let mut words = leading_words(sql);
    match words.next().map(|w| w.to_ascii_uppercase()).as_deref() {
        Some("SELECT" | "SHOW" | "DESCRIBE" | "DESC") => true,
        Some("EXPLAIN") => !words.next().is_some_and(|w| w.eq_ignore_ascii_case("ANALYZE")),
        _ => false,
    }
}

/// The words of `sql` from its start, skipping blanks and `--` / `/* */`
/// comments before each.
fn leading_words(mut sql: &str) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        loop {
            sql = sql.trim_start();
            if let Some(rest) = sql.strip_prefix("--") {
                sql = rest.split_once('\n').map_or("", |(_, after)| after);
            } else if let Some(rest) = sql.strip_prefix("/*") {
                sql = rest.split_once("*/").map_or("", |(_, after)| after);
            } else {
                break;
            }
        }
        let end = sql
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(sql.len());
        if end == 0 {
            return None;
        }
        let (word, rest) = sql.split_at(end);
        sql = rest;
        Some(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_reads_count_as_read_only() {
        let ro = read_only;
        for sql in [
            "SELECT 1",
            "  select * from a.b;  ",
            "-- why\n/* a comment */ Select 1",
            "SHOW TABLES",
            "DESCRIBE TABLE a.b",
            "explain SELECT 1",
            "SELECT 'é' FROM a.b WHERE v = 'ü'",
        ] {
            assert!(ro(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO a.b VALUES (1)",
            "SELECT 1; DELETE FROM a.b",
            "SELECT ';'",
            "EXPLAIN ANALYZE INSERT INTO a.b VALUES (1)",
            "WITH x AS (SELECT 1) INSERT INTO a.b SELECT * FROM x",
            "SUBSCRIBE TO SELECT * FROM a.b",
            "/* SELECT */ UPDATE a.b SET v = 1",
            "-- SELECT",
            "",
            "SELECTED",
        ] {
            assert!(!ro(sql), "{sql}");
        }
        use crate::QueryRequest;
        assert!(!QueryRequest::new("UPDATE a.b SET v = 1").retry_safe());
        assert!(QueryRequest::new("UPDATE a.b SET v = 1").idempotent().retry_safe());
    }
}
