//! The HTTP side: routing, the auth endpoints and `POST /v1/api/sql`, with
//! the status codes, error shapes and key orders of the real server.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::sql::{Outcome, SqlError};
use crate::{SeenRequest, State, VERSION, jwt, rfc3339, unix_now};

type Answer = Response<Full<Bytes>>;

/// Bodies over this are refused with 413, like the server.
const MAX_BODY: usize = 10 << 20;

pub(crate) async fn serve(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
            _ = stopped.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let mut stop = stopped.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, state).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Answer {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Ok(mut seen) = state.seen.lock() {
        seen.push(SeenRequest {
            method: req.method().to_string(),
            path: path.clone(),
            authorization: auth.clone(),
        });
    }
    let latency = state.latency.lock().map(|l| *l).unwrap_or_default();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(fault) = take_fault(&state, &path) {
        if path == "/v1/api/sql" {
            state.count(|c| c.queries += 1);
        }
        return Response::builder()
            .status(fault.status)
            .header(CONTENT_TYPE, fault.content_type)
            .body(Full::new(Bytes::from(fault.body)))
            .unwrap_or_default();
    }
    if path == "/v1/ws" && req.method() == Method::GET {
        return crate::ws::upgrade(req, state).await;
    }
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "BODY_TOO_LARGE", "message": "Request body too large"}),
            );
        }
    };
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    match (method, path.as_str()) {
        (Method::POST, "/v1/api/auth/login") => login(&state, is_json, &body),
        (Method::POST, "/v1/api/auth/refresh") => refresh(&state, &headers),
        (Method::POST, "/v1/api/auth/logout") => logout(),
        (Method::GET, "/v1/api/auth/me") => me(&state, &headers),
        (Method::GET, "/v1/api/auth/status") => json_answer(
            StatusCode::OK,
            json!({"needs_setup": false, "message": "Server is configured"}),
        ),
        (Method::GET, "/health") | (Method::GET, "/v1/api/healthcheck") => json_answer(
            StatusCode::OK,
            json!({"status": "healthy", "version": VERSION, "api_version": "v1", "build_date": "kalam-testkit"}),
        ),
        (Method::POST, "/v1/api/sql") => {
            state.count(|c| c.queries += 1);
            sql(&state, &headers, is_json, &body, started)
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default(),
    }
}

fn take_fault(state: &State, path: &str) -> Option<crate::Fault> {
    let mut faults = state.faults.lock().ok()?;
    let i = faults
        .iter()
        .position(|(_, f)| f.path.as_deref().is_none_or(|p| p == path))?;
    let (left, fault) = faults.get_mut(i)?;
    let out = fault.clone();
    *left -= 1;
    if *left == 0 {
        faults.remove(i);
    }
    Some(out)
}

fn json_answer(status: StatusCode, body: Value) -> Answer {
    raw_json(status, body.to_string())
}

fn raw_json(status: StatusCode, body: String) -> Answer {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn text(status: StatusCode, body: String) -> Answer {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn auth_error(status: StatusCode, kind: &str, message: &str) -> Answer {
    json_answer(status, json!({"error": kind, "message": message}))
}

fn user_json(id: &str, u: &crate::sql::UserRecord) -> Value {
    json!({"id": id, "role": u.role, "email": u.email, "created_at": u.created_at, "updated_at": u.created_at})
}

/// The login answer (also the refresh answer), with its two cookies.
fn token_pair(state: &State, id: &str) -> Answer {
    let Some(user) = state.engine.lock().ok().and_then(|e| e.users.get(id).cloned()) else {
        return auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "User no longer valid");
    };
    let (access, exp) = state.issue(id, &user.role, user.email.clone(), "access");
    let (refresh, rexp) = state.issue(id, &user.role, user.email.clone(), "refresh");
    let admin = user.role == "dba" || user.role == "system";
    let body = json!({
        "user": user_json(id, &user),
        "admin_ui_access": admin,
        "expires_at": rfc3339(Duration::from_secs(exp), 9),
        "access_token": access,
        "refresh_token": refresh,
        "refresh_expires_at": rfc3339(Duration::from_secs(rexp), 9),
    });
    let cookie = |name: &str, value: &str, exp: u64| {
        format!(
            "{name}={value}; HttpOnly; SameSite=Strict; Path=/; Expires={}",
            rfc3339(Duration::from_secs(exp), 0)
        )
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .header(SET_COOKIE, cookie("kalamdb_auth", &access, exp))
        .header(SET_COOKIE, cookie("kalamdb_refresh", &refresh, rexp))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

fn login(state: &State, is_json: bool, body: &[u8]) -> Answer {
    if !is_json {
        return text(StatusCode::BAD_REQUEST, "Content type error".into());
    }
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("Json deserialize error: {e}")),
    };
    let Some(obj) = v.as_object() else {
        return text(
            StatusCode::BAD_REQUEST,
            "Json deserialize error: invalid type: expected struct LoginRequest".into(),
        );
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["user", "username", "password"].contains(&k.as_str()))
    {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Json deserialize error: unknown field `{k}`, expected one of `user`, `username`, `password`"),
        );
    }
    let user = obj.get("user").or_else(|| obj.get("username")).and_then(Value::as_str);
    let Some(user) = user else {
        return text(
            StatusCode::BAD_REQUEST,
            "Json deserialize error: missing field `user`".into(),
        );
    };
    let Some(password) = obj.get("password").and_then(Value::as_str) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Json deserialize error: missing field `password`".into(),
        );
    };
    let hash = state
        .engine
        .lock()
        .ok()
        .and_then(|e| e.users.get(user).map(|u| u.hash.clone()));
    let ok = hash.is_some_and(|h| bcrypt::verify(password, &h).unwrap_or(false));
    if !ok {
        state.count(|c| c.failed_logins += 1);
        return auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid credentials");
    }
    state.count(|c| c.logins += 1);
    token_pair(state, user)
}

fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers.get_all(COOKIE).iter().find_map(|v| {
        v.to_str().ok()?.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    })
}

fn refresh(state: &State, headers: &http::HeaderMap) -> Answer {
    let token = match cookie(headers, "kalamdb_refresh") {
        Some(t) => t,
        None => match headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            None => return auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "No refresh token found"),
            Some(a) => match a.strip_prefix("Bearer ") {
                Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
                Some(_) => return auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "Bearer token missing"),
                None => {
                    return auth_error(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "Authorization header must use Bearer token",
                    );
                }
            },
        },
    };
    match jwt::verify(&state.secret, &token, unix_now(), 60) {
        Ok(c) if c.token_type != "refresh" => auth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Refresh endpoint requires a refresh token",
        ),
        Ok(c) => match state.verify(&token, "refresh") {
            Ok(_) => {
                state.count(|x| x.refreshes += 1);
                token_pair(state, &c.sub)
            }
            Err(jwt::Refusal::Expired) => auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid credentials"),
            Err(jwt::Refusal::Invalid) => auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "User no longer valid"),
        },
        Err(_) => auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid credentials"),
    }
}

fn logout() -> Answer {
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .header(
            SET_COOKIE,
            "kalamdb_auth=; HttpOnly; SameSite=Strict; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        )
        .header(
            SET_COOKIE,
            "kalamdb_refresh=; HttpOnly; SameSite=Strict; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        )
        .body(Full::new(Bytes::from(r#"{"message":"Logged out successfully"}"#)))
        .unwrap_or_default()
}

fn me(state: &State, headers: &http::HeaderMap) -> Answer {
    let token = match headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(a) => match a.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim().to_owned(),
            _ => {
                return auth_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Authorization header must use Bearer token",
                );
            }
        },
        None => match cookie(headers, "kalamdb_auth") {
            Some(t) => t,
            None => return auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "No auth token found"),
        },
    };
    match state.verify(&token, "access") {
        Ok((claims, _)) => {
            let Some(user) = state.engine.lock().ok().and_then(|e| e.users.get(&claims.sub).cloned()) else {
                return auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid credentials");
            };
            let admin = user.role == "dba" || user.role == "system";
            json_answer(
                StatusCode::OK,
                json!({"user": user_json(&claims.sub, &user), "admin_ui_access": admin}),
            )
        }
        Err(_) => auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid credentials"),
    }
}

fn took(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// An auth failure on a Bearer endpoint: the SQL envelope with its keys in
/// alphabetical order, as the server writes it.
fn bearer_refusal(code: &str, message: &str, started: Instant) -> Answer {
    raw_json(
        StatusCode::UNAUTHORIZED,
        format!(
            r#"{{"error":{{"code":"{code}","message":"{message}"}},"results":[],"status":"error","took":{}}}"#,
            took(started)
        ),
    )
}

fn sql_error(e: SqlError, admin: bool, started: Instant) -> Answer {
    let mut error = Map::new();
    error.insert("code".into(), json!(e.code));
    error.insert("message".into(), json!(e.message));
    if admin && let Some(d) = e.details {
        error.insert("details".into(), json!(d));
    }
    raw_json(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        format!(
            r#"{{"status":"error","results":[],"took":{},"error":{}}}"#,
            took(started),
            Value::Object(error)
        ),
    )
}

fn sql(state: &State, headers: &http::HeaderMap, is_json: bool, body: &[u8], started: Instant) -> Answer {
    // Authentication first, as the server does (§2.9.2).
    let Some(auth) = headers.get(AUTHORIZATION) else {
        return bearer_refusal("MISSING_AUTHORIZATION", "Authentication required", started);
    };
    let Some(token) = auth
        .to_str()
        .ok()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return bearer_refusal("INVALID_CREDENTIALS", "Invalid credentials", started);
    };
    let (claims, role) = match state.verify(token, "access") {
        Ok(x) => x,
        Err(jwt::Refusal::Expired) => return bearer_refusal("TOKEN_EXPIRED", "Invalid credentials", started),
        Err(jwt::Refusal::Invalid) => return bearer_refusal("INVALID_CREDENTIALS", "Invalid credentials", started),
    };
    let admin = role == "dba" || role == "system";
    if !is_json {
        let e = SqlError {
            status: 400,
            code: "INVALID_INPUT",
            message: "Invalid JSON payload: Content type error".into(),
            details: None,
        };
        return sql_error(e, admin, started);
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let e = SqlError {
                status: 400,
                code: "INVALID_INPUT",
                message: format!("Invalid JSON payload: Json deserialize error: {e}"),
                details: None,
            };
            return sql_error(e, admin, started);
        }
    };
    let Some(sql_text) = request.get("sql").and_then(Value::as_str) else {
        let e = SqlError {
            status: 400,
            code: "INVALID_INPUT",
            message: "Invalid JSON payload: Json deserialize error: missing field `sql`".into(),
            details: None,
        };
        return sql_error(e, admin, started);
    };
    let params: Vec<Value> = match request.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => {
            if let Some(i) = a.iter().position(|p| p.is_array() || p.is_object()) {
                let e = SqlError {
                    status: 400,
                    code: "INVALID_PARAMETER",
                    message: format!("Parameter ${} invalid: arrays and objects are not supported", i + 1),
                    details: None,
                };
                return sql_error(e, admin, started);
            }
            a.clone()
        }
        Some(_) => {
            let e = SqlError {
                status: 400,
                code: "INVALID_PARAMETER",
                message: "params must be an array".into(),
                details: None,
            };
            return sql_error(e, admin, started);
        }
    };
    let namespace = request.get("namespace_id").and_then(Value::as_str);
    let outcome = match state.engine.lock() {
        Ok(mut engine) => engine.run(&claims.sub, &role, sql_text, &params, namespace),
        Err(_) => Err(SqlError {
            status: 500,
            code: "INTERNAL_ERROR",
            message: "SQL request failed".into(),
            details: None,
        }),
    };
    let outcomes = match outcome {
        Ok(o) => o,
        Err(e) => return sql_error(e, admin, started),
    };
    success(outcomes, started)
}

/// The success envelope: row and DDL results in order, then the folded
/// INSERT/UPDATE/DELETE totals (§3.4). A single SELECT carries `"error":null`.
fn success(outcomes: Vec<(Outcome, String)>, started: Instant) -> Answer {
    let single_select = outcomes.len() == 1 && matches!(outcomes[0].0, Outcome::Rows { .. });
    let mut results = Vec::new();
    let (mut ins, mut upd, mut del) = (
        None::<(usize, String)>,
        None::<(usize, String)>,
        None::<(usize, String)>,
    );
    for (o, as_user) in outcomes {
        match o {
            Outcome::Rows { schema, rows } => {
                let mut r = Map::new();
                if !schema.is_empty() {
                    r.insert("schema".into(), Value::Array(schema));
                }
                r.insert("row_count".into(), json!(rows.len()));
                r.insert("rows".into(), json!(rows));
                // Key order as the server: schema, rows, row_count, as_user.
                let mut ordered = Map::new();
                if let Some(s) = r.remove("schema") {
                    ordered.insert("schema".into(), s);
                }
                ordered.insert("rows".into(), r.remove("rows").unwrap_or_default());
                ordered.insert("row_count".into(), r.remove("row_count").unwrap_or_default());
                ordered.insert("as_user".into(), json!(as_user));
                results.push(Value::Object(ordered));
            }
            Outcome::Message(m) => results.push(json!({"row_count": 0, "message": m, "as_user": as_user})),
            Outcome::Inserted(n) => ins = Some((ins.map_or(0, |x| x.0) + n, as_user)),
            Outcome::Updated(n) => upd = Some((upd.map_or(0, |x| x.0) + n, as_user)),
            Outcome::Deleted(n) => del = Some((del.map_or(0, |x| x.0) + n, as_user)),
        }
    }
    for (total, verb) in [(ins, "Inserted"), (upd, "Updated"), (del, "Deleted")] {
        if let Some((n, as_user)) = total {
            results.push(json!({"row_count": n, "message": format!("{verb} {n} row(s)"), "as_user": as_user}));
        }
    }
    let results = Value::Array(results);
    let body = if single_select {
        format!(
            r#"{{"status":"success","results":{results},"took":{},"error":null}}"#,
            took(started)
        )
    } else {
        format!(r#"{{"status":"success","results":{results},"took":{}}}"#, took(started))
    };
    raw_json(StatusCode::OK, body)
}
