//! The localhost-only endpoints (PROTOCOL §1, §2.8, §3.5): `/health`,
//! `/v1/api/healthcheck`, `/v1/api/cluster/health`, `/v1/api/auth/status`
//! and `POST /v1/api/auth/setup`, with the 403 bodies a remote peer gets.

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::State;

/// The most bytes of a user id in an auth body.
const MAX_USER_LENGTH: usize = 128;
/// The most bytes of a password in an auth body.
const MAX_PASSWORD_FIELD: usize = 256;
/// Password policy: at least this many bytes…
const MIN_PASSWORD: usize = 8;
/// … at most this many (bcrypt's limit) …
const MAX_PASSWORD: usize = 72;
/// … and none of the passwords the server refuses as too common.
const COMMON_PASSWORDS: [&str; 24] = [
    "password", "123456", "12345678", "qwerty", "abc123", "monkey", "1234567", "letmein", "trustno1", "dragon",
    "baseball", "iloveyou", "master", "sunshine", "ashley", "bailey", "passw0rd", "shadow", "123123", "654321",
    "superman", "qazwsx", "michael", "football",
];

/// An answer of these endpoints: status and JSON body.
pub(crate) type Reply = (u16, Value);

fn error(status: u16, kind: &str, message: impl Into<String>) -> Reply {
    (status, json!({"error": kind, "message": message.into()}))
}

/// `GET /health` and `GET /v1/api/healthcheck`.
pub(crate) fn health(state: &State) -> Reply {
    if state.remote_peers {
        return (
            403,
            json!({"error": "Access denied. Health endpoint is localhost-only."}),
        );
    }
    (
        200,
        json!({"api_version": "v1", "build_date": crate::BUILD_DATE, "status": "healthy", "version": crate::VERSION}),
    )
}

/// `GET /v1/api/cluster/health`: one node, leader of its three groups.
pub(crate) fn cluster_health(state: &State, host: &str) -> Reply {
    if state.remote_peers {
        return (
            403,
            json!({"error": "Access denied. Cluster health is localhost-only."}),
        );
    }
    let uptime = state.started.elapsed().as_secs();
    (
        200,
        json!({
            "status": "healthy",
            "version": crate::VERSION,
            "build_date": crate::BUILD_DATE,
            "is_cluster_mode": true,
            "cluster_id": "kalam-testkit",
            "node_id": 1,
            "is_leader": true,
            "total_groups": 3,
            "groups_leading": 3,
            "current_term": 1,
            "last_applied": 1,
            "millis_since_quorum_ack": 0,
            "nodes": [{
                "node_id": 1,
                "role": "leader",
                "status": "active",
                "api_addr": host,
                "is_self": true,
                "is_leader": true,
                "replication_lag": null,
                "catchup_progress_pct": null,
                "hostname": "kalam-testkit",
                "memory_usage_mb": 0,
                "cpu_usage_percent": 0.0,
                "uptime_seconds": uptime,
                "uptime_human": format!("{uptime}s"),
            }],
        }),
    )
}

/// Whether root has no password yet.
pub(crate) fn needs_setup(state: &State) -> bool {
    state
        .engine
        .lock()
        .map(|e| e.users.get("root").is_none_or(|r| r.hash.is_empty()))
        .unwrap_or(false)
}

/// `GET /v1/api/auth/status`.
pub(crate) fn status(state: &State) -> Reply {
    if state.remote_peers {
        return error(403, "forbidden", "Setup status can only be checked from localhost");
    }
    let needs = needs_setup(state);
    let message = if needs {
        "Server requires initial setup. Call POST /v1/api/auth/setup with user, password, root_password, and optional email."
    } else {
        "Server is configured and ready."
    };
    (200, json!({"message": message, "needs_setup": needs}))
}

fn bounded<'de, D: Deserializer<'de>>(d: D, max: usize, what: &str) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.len() > max {
        return Err(serde::de::Error::custom(format!(
            "{what} exceeds maximum length of {max} characters"
        )));
    }
    Ok(s)
}

fn user_field<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    bounded(d, MAX_USER_LENGTH, "user")
}

fn password_field<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    bounded(d, MAX_PASSWORD_FIELD, "password")
}

/// The setup body, as the server reads it (same serde error texts).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupRequest {
    #[serde(alias = "username", deserialize_with = "user_field")]
    user: String,
    #[serde(deserialize_with = "password_field")]
    password: String,
    #[serde(deserialize_with = "password_field")]
    root_password: String,
    email: Option<String>,
}

/// Why the server's password policy refuses a password.
fn weak(password: &str) -> Option<String> {
    if password.len() < MIN_PASSWORD {
        return Some(format!("Password must be at least {MIN_PASSWORD} characters (weak)"));
    }
    if password.len() > MAX_PASSWORD {
        return Some(format!(
            "Password must be at most {MAX_PASSWORD} characters (bcrypt limit, weak)"
        ));
    }
    COMMON_PASSWORDS
        .contains(&password)
        .then(|| "Password is too common".to_owned())
}

/// `POST /v1/api/auth/setup`: `Err` is a plain-text 400 (a body the JSON
/// extractor refuses, before anything else).
pub(crate) fn setup(state: &State, is_json: bool, body: &[u8]) -> Result<Reply, String> {
    if !is_json {
        return Err("Content type error".into());
    }
    let r: SetupRequest = serde_json::from_slice(body).map_err(|e| format!("Json deserialize error: {e}"))?;
    if !state.rates.auth() {
        return Ok(error(
            429,
            "rate_limited",
            "Too many setup attempts. Please retry shortly.",
        ));
    }
    if state.remote_peers {
        return Ok(error(
            403,
            "forbidden",
            "Server setup can only be performed from localhost",
        ));
    }
    let Ok(mut engine) = state.engine.lock() else {
        return Ok(error(500, "internal_error", "Failed to verify setup status"));
    };
    if engine.users.get("root").is_some_and(|u| !u.hash.is_empty()) {
        return Ok(error(
            409,
            "already_configured",
            "Server has already been configured. Root password is set.",
        ));
    }
    if let Some(why) = weak(&r.password) {
        return Ok(error(400, "weak_password", format!("DBA user password: {why}")));
    }
    if let Some(why) = weak(&r.root_password) {
        return Ok(error(400, "weak_password", format!("Root password: {why}")));
    }
    let id = r.user;
    if id.is_empty() || ["..", "/", "\\", "\0"].iter().any(|bad| id.contains(bad)) {
        return Ok(error(400, "invalid_user", "Invalid user value"));
    }
    if id == "root" {
        return Ok(error(
            400,
            "invalid_user",
            "Cannot create a DBA user with user 'root'. Choose a different user.",
        ));
    }
    if engine.users.contains_key(&id) {
        return Ok(error(409, "user_exists", format!("User '{id}' already exists")));
    }
    let cost = engine.bcrypt_cost;
    let (Ok(root_hash), Ok(hash)) = (bcrypt::hash(&r.root_password, cost), bcrypt::hash(&r.password, cost)) else {
        return Ok(error(500, "internal_error", "Failed to hash password"));
    };
    if let Some(root) = engine.users.get_mut("root") {
        root.hash = root_hash;
    }
    let user = crate::sql::UserRecord {
        role: "dba".into(),
        hash,
        email: r.email,
        created_at: crate::now_rfc3339_millis(),
        created_ms: crate::unix_now_ms(),
    };
    let info = crate::http::user_json(&id, &user);
    engine.users.insert(id.clone(), user);
    Ok((
        200,
        json!({
            "user": info,
            "message": format!("Server setup complete. Root password configured and DBA user '{id}' created. Please login to continue."),
        }),
    ))
}
