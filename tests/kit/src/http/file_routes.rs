//! The HTTP side of FILE columns (PROTOCOL §3.6): the file-upload path of
//! `POST /v1/api/sql` and `GET /v1/files/…` (the files themselves are in
//! [`crate::files`]).

use super::*;

/// A SQL request with FILE placeholders or file parts.
pub(super) struct Upload<'a> {
    pub(super) user: &'a str,
    pub(super) role: &'a str,
    pub(super) sql: &'a str,
    pub(super) params: &'a [Value],
    pub(super) namespace: Option<&'a str>,
    pub(super) multipart: bool,
    pub(super) parts: HashMap<String, files::Part>,
    pub(super) required: Vec<String>,
}

/// The file-upload path of `POST /v1/api/sql` (§3.6): one statement into
/// a USER or SHARED table; each `FILE("x")` becomes the FileRef JSON of part
/// `file:x`, and the files are kept once the statement succeeded.
pub(super) fn file_upload(state: &State, u: Upload<'_>) -> Result<Vec<(Outcome, String)>, SqlError> {
    let input = |m: &str| SqlError::new(400, "INVALID_INPUT", m);
    if !u.multipart {
        return Err(input("FILE placeholders require multipart/form-data"));
    }
    let statements = crate::sql::split_statements(u.sql);
    let [statement] = statements.as_slice() else {
        return Err(input("File uploads require a single SQL statement"));
    };
    // `EXECUTE AS USER 'x' (…)` writes as x: the target table is the inner
    // statement's, and x owns the files of a USER table.
    let execute_as = statement
        .split_whitespace()
        .next()
        .filter(|w| w.eq_ignore_ascii_case("EXECUTE"))
        .and_then(|_| crate::sql::parse_execute_as(statement));
    let (writer, inner) = match &execute_as {
        Some((user, inner)) => (user.as_str(), inner.as_str()),
        None => (u.user, statement.as_str()),
    };
    let words: Vec<&str> = inner.split_whitespace().collect();
    let target = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("INTO"))
        .filter(|_| words.first().is_some_and(|w| w.eq_ignore_ascii_case("INSERT")))
        .or_else(|| words.first().filter(|w| w.eq_ignore_ascii_case("UPDATE")).map(|_| 0))
        .and_then(|i| words.get(i + 1))
        .map(|t| t.split('(').next().unwrap_or_default().trim_matches('"'))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            input("Could not determine target table from SQL. Use fully qualified table name (namespace.table).")
        })?;
    let full = match target.split_once('.') {
        Some(_) => target.to_owned(),
        None => format!("{}.{target}", u.namespace.unwrap_or("default")),
    };
    let mut engine = state
        .engine
        .lock()
        .map_err(|_| SqlError::new(500, "INTERNAL_ERROR", "SQL request failed"))?;
    let def = engine.table(&full).cloned().ok_or_else(|| {
        SqlError::new(
            400,
            "TABLE_NOT_FOUND",
            format!("Table '{}' not found", full.replacen('.', ":", 1)),
        )
    })?;
    let owner = match def.kind {
        crate::sql::TableKind::User => Some(writer),
        crate::sql::TableKind::Shared if execute_as.is_some() => {
            return Err(SqlError::new(
                400,
                "SQL_EXECUTION_ERROR",
                format!(
                    "EXECUTE AS USER is not allowed on SHARED tables (table '{}'). AS USER impersonation is only supported for USER and STREAM tables.",
                    def.full.replacen('.', ":", 1)
                ),
            ));
        }
        crate::sql::TableKind::Shared => None,
        crate::sql::TableKind::Stream => {
            return Err(input("File uploads are not supported for stream or system tables"));
        }
    };
    let mut parts = u.parts;
    if !u.required.is_empty() {
        parts.retain(|k, _| u.required.contains(k));
    }
    let (refs, pending) = match state.files.lock() {
        Ok(mut f) => f.prepare(&def.full, owner, &parts),
        Err(_) => return Err(SqlError::new(500, "INTERNAL_ERROR", "Failed to stage file")),
    };
    let substituted = files::substitute(statement, &refs);
    if !files::placeholders(&substituted).is_empty() {
        // A placeholder without its part stays a call of an unknown function.
        let mut e = SqlError::new(
            400,
            "SQL_EXECUTION_ERROR",
            "Statement 1 failed: Execution error: Error during planning: Invalid function 'file'.\nDid you mean 'ln'?",
        );
        e.details = Some(substituted);
        return Err(e);
    }
    let outcomes = engine.run(u.user, u.role, &substituted, u.params, u.namespace)?;
    if let Ok(mut f) = state.files.lock() {
        f.commit(pending);
    }
    Ok(outcomes)
}

/// An error of the download route in the SQL envelope, with `took` 0.0 as
/// the server writes it there.
fn download_error(status: StatusCode, code: &str, message: &str) -> Answer {
    raw_json(
        status,
        format!(
            r#"{{"status":"error","results":[],"took":0.0,"error":{}}}"#,
            json!({"code": code, "message": message})
        ),
    )
}

/// `GET /v1/files/{namespace}/{table}/{subfolder}/{stored_name}[?user_id=]` (§3.6).
pub(super) fn download(
    state: &State,
    headers: &http::HeaderMap,
    path: &str,
    query: Option<&str>,
    started: Instant,
) -> Answer {
    let segments: Vec<&str> = path.trim_start_matches("/v1/files/").split('/').collect();
    let [ns, table, sub, stored] = segments.as_slice() else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(KitBody::default())
            .unwrap_or_default();
    };
    let (claims, role) = match bearer(state, headers) {
        Ok(x) => x,
        Err(code) => return bearer_refused(code, started),
    };
    let requested = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("user_id=").map(str::to_owned))
    });
    let (def, target_role) = {
        let Ok(engine) = state.engine.lock() else {
            return download_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "File lookup failed",
            );
        };
        let def = engine.table(&format!("{ns}.{table}")).cloned();
        let target_role = requested
            .as_ref()
            .and_then(|u| engine.users.get(u).map(|r| r.role.clone()));
        (def, target_role)
    };
    let Some(def) = def else {
        return json_answer(
            StatusCode::NOT_FOUND,
            json!({"error": format!("Table '{ns}:{table}' not found")}),
        );
    };
    let owner = match def.kind {
        crate::sql::TableKind::User => {
            let me = claims.sub.clone();
            match requested {
                Some(other) if other != me => {
                    let target = target_role.as_deref().unwrap_or("user");
                    let allowed = match role.as_str() {
                        "system" | "dba" => true,
                        "service" => matches!(target, "user" | "service"),
                        _ => false,
                    };
                    if !allowed {
                        return download_error(
                            StatusCode::FORBIDDEN,
                            "PERMISSION_DENIED",
                            "Requested user is not allowed for the current role",
                        );
                    }
                    Some(other)
                }
                _ => Some(me),
            }
        }
        crate::sql::TableKind::Shared => {
            if role == "user" {
                return download_error(
                    StatusCode::FORBIDDEN,
                    "PERMISSION_DENIED",
                    "Shared table access denied (access_level=Private)",
                );
            }
            if requested.is_some() {
                return download_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_INPUT",
                    "user_id is only valid for user tables",
                );
            }
            None
        }
        crate::sql::TableKind::Stream => {
            return download_error(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                "File storage is not supported for stream or system tables",
            );
        }
    };
    let valid_sub = sub.len() == 5 && sub.starts_with('f') && sub[1..].chars().all(|c| c.is_ascii_digit());
    let bad = |s: &str| s.contains("..") || s.contains('/') || s.contains('\\') || s.contains('\0');
    if !valid_sub || bad(sub) || bad(stored) {
        return download_error(StatusCode::BAD_REQUEST, "INVALID_INPUT", "Invalid file path");
    }
    let data = state
        .files
        .lock()
        .ok()
        .and_then(|f| f.get(&def.full, owner.as_deref(), sub, stored));
    match data {
        Some(data) => {
            let safe: String = stored
                .chars()
                .filter(|c| !matches!(c, '"' | '\r' | '\n' | '\0'))
                .collect();
            Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, files::download_type(stored))
                .header("content-disposition", format!("inline; filename=\"{safe}\""))
                .body(KitBody::full(data))
                .unwrap_or_default()
        }
        None => json_answer(
            StatusCode::NOT_FOUND,
            json!({"code": "FILE_NOT_FOUND", "error": "File not found"}),
        ),
    }
}
