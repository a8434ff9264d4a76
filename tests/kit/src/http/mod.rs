//! The HTTP side: routing, the auth endpoints and `POST /v1/api/sql`, with
//! the status codes, error shapes and key orders of the real server. FILE
//! uploads and downloads are in [`file_routes`], the topic endpoints in
//! [`topic_routes`].

mod file_routes;
mod topic_routes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::sql::{Outcome, SqlError};
use crate::{SeenRequest, State, http_date, jwt, rfc3339};
use crate::{files, setup};
use file_routes::{Upload, download, file_upload};
use topic_routes::{TopicCall, topics};

type Answer = Response<KitBody>;

/// Bodies over this are refused with 413, like the server.
const MAX_BODY: usize = 10 << 20;
/// JSON bodies over this are refused by the server's JSON extractor.
const MAX_JSON: usize = 2 << 20;
/// SQL text over this is refused as `INVALID_SQL`.
const MAX_SQL: usize = 1 << 20;
/// At most this many `params`.
const MAX_PARAMS: usize = 50;

/// A response body in one piece: sent with a `Content-Length`, or chunked
/// like the server's streamed single-SELECT answers.
pub(crate) struct KitBody {
    data: Option<Bytes>,
    chunked: bool,
}

impl KitBody {
    /// A body sent with a `Content-Length`.
    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        KitBody {
            data: (!data.is_empty()).then_some(data),
            chunked: false,
        }
    }

    /// A body sent with `Transfer-Encoding: chunked`.
    fn chunked(data: impl Into<Bytes>) -> Self {
        KitBody {
            chunked: true,
            ..KitBody::full(data)
        }
    }
}

impl Default for KitBody {
    fn default() -> Self {
        KitBody::full(Bytes::new())
    }
}

impl Body for KitBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.data, self.chunked) {
            (_, true) => SizeHint::default(),
            (Some(d), false) => SizeHint::with_exact(d.len() as u64),
            (None, false) => SizeHint::with_exact(0),
        }
    }
}

/// The login body, as the server reads it (same serde error texts).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Deserialized only for its errors and fields below.
struct LoginRequest {
    #[serde(alias = "username")]
    user: String,
    password: String,
}

/// The SQL body, as the server reads it (unknown fields are ignored).
#[derive(Deserialize)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    params: Option<Vec<Value>>,
    #[serde(default)]
    namespace_id: Option<String>,
}

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
                async move {
                    // Dated on the kit's clock (which a test may offset).
                    let date = http_date(state.now());
                    let mut answer = handle(req, state).await;
                    if let Ok(v) = http::HeaderValue::from_str(&date) {
                        answer.headers_mut().insert(http::header::DATE, v);
                    }
                    Ok::<_, Infallible>(answer)
                }
            });
            // HTTP/1.1, or HTTP/2 with prior knowledge (as the server
            // takes it), on the same port.
            let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder.http1().auto_date_header(false);
            builder.http2().auto_date_header(false);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
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
            .body(KitBody::full(fault.body))
            .unwrap_or_default();
    }
    if path == "/v1/ws" && req.method() == Method::GET {
        return crate::ws::upgrade(req, state).await;
    }
    // The server authenticates a SQL request before it reads the body (its
    // auth extractor runs first, §2.9.2): a refused token is answered while
    // a large upload is still arriving, and the rest of it is never read.
    let is_multipart = |headers: &http::HeaderMap| {
        headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(files::is_multipart)
    };
    let sql_caller = if path == "/v1/api/sql" && req.method() == Method::POST {
        match bearer(&state, req.headers()) {
            Ok(caller) => Some(caller),
            Err(code) => {
                let multipart = is_multipart(req.headers());
                state.count(|c| {
                    c.queries += 1;
                    c.uploads += usize::from(multipart);
                });
                return bearer_refused(code, started);
            }
        }
    } else {
        None
    };
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_owned);
    let headers = req.headers().clone();
    let too_large = |size: u64| {
        json_answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "BODY_TOO_LARGE", "max_bytes": MAX_BODY, "message": "Request body exceeds maximum allowed size", "size_bytes": size}),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > MAX_BODY as u64) {
        return too_large(n);
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return too_large(MAX_BODY as u64 + 1),
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
        (Method::GET, "/v1/api/auth/status") => reply(setup::status(&state)),
        (Method::POST, "/v1/api/auth/setup") => match setup::setup(&state, is_json, &body) {
            Ok(r) => reply(r),
            Err(refusal) => text(StatusCode::BAD_REQUEST, refusal),
        },
        (Method::GET, "/health") | (Method::GET, "/v1/api/healthcheck") => reply(setup::health(&state)),
        (Method::GET, "/v1/api/cluster/health") => {
            let host = headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            reply(setup::cluster_health(&state, host))
        }
        (Method::POST, "/v1/api/sql") if sql_caller.is_some() => {
            let Some(caller) = sql_caller else {
                unreachable!("checked by the guard")
            };
            let multipart = is_multipart(&headers);
            state.count(|c| {
                c.queries += 1;
                c.uploads += usize::from(multipart);
            });
            sql(&state, &headers, caller, is_json, &body, started)
        }
        (Method::GET, p) if p.starts_with("/v1/files/") => {
            state.count(|c| c.downloads += 1);
            download(&state, &headers, p, query.as_deref(), started)
        }
        (Method::POST, "/v1/api/topics/consume") => {
            state.count(|c| c.topic_consumes += 1);
            topics(&state, &headers, is_json, &body, started, TopicCall::Consume)
        }
        (Method::POST, "/v1/api/topics/ack") => {
            state.count(|c| c.topic_acks += 1);
            topics(&state, &headers, is_json, &body, started, TopicCall::Ack)
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(KitBody::default())
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

/// A `(status, JSON body)` answer.
fn reply((status, body): setup::Reply) -> Answer {
    json_answer(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}

fn json_answer(status: StatusCode, body: Value) -> Answer {
    raw_json(status, body.to_string())
}

fn raw_json(status: StatusCode, body: String) -> Answer {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(KitBody::full(body))
        .unwrap_or_default()
}

fn text(status: StatusCode, body: String) -> Answer {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(KitBody::full(body))
        .unwrap_or_default()
}

/// `429 rate_limited` of the auth endpoints.
fn rate_limited(message: &str) -> Answer {
    auth_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
}

fn auth_error(status: StatusCode, kind: &str, message: &str) -> Answer {
    json_answer(status, json!({"error": kind, "message": message}))
}

/// A user as the auth endpoints show it.
pub(crate) fn user_json(id: &str, u: &crate::sql::UserRecord) -> Value {
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
            http_date(exp)
        )
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .header(SET_COOKIE, cookie("kalamdb_auth", &access, exp))
        .header(SET_COOKIE, cookie("kalamdb_refresh", &refresh, rexp))
        .body(KitBody::full(body.to_string()))
        .unwrap_or_default()
}

fn login(state: &State, is_json: bool, body: &[u8]) -> Answer {
    if !is_json {
        return text(StatusCode::BAD_REQUEST, "Content type error".into());
    }
    if body.len() > MAX_JSON {
        return text(StatusCode::BAD_REQUEST, json_overflow(body.len()));
    }
    let request: LoginRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("Json deserialize error: {e}")),
    };
    if !state.rates.auth() {
        return rate_limited("Too many authentication attempts. Please retry shortly.");
    }
    let (user, password) = (request.user.as_str(), request.password.as_str());
    let hash = state
        .engine
        .lock()
        .ok()
        .and_then(|e| e.users.get(user).map(|u| u.hash.clone()));
    if user == "root" && hash.as_deref() == Some("") {
        if password.is_empty() {
            return auth_error(
                StatusCode::PRECONDITION_REQUIRED,
                "setup_required",
                "Server requires initial setup. Root password is not configured.",
            );
        }
        if state.remote_peers {
            return auth_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "System users with empty passwords cannot authenticate remotely. Set a password with: ALTER USER root SET PASSWORD '...'",
            );
        }
    }
    let ok = hash.is_some_and(|h| bcrypt::verify(password, &h).unwrap_or(false));
    if !ok {
        state.count(|c| c.failed_logins += 1);
        return auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid credentials");
    }
    state.count(|c| c.logins += 1);
    token_pair(state, user)
}

/// actix's text for a JSON body over the limit.
fn json_overflow(len: usize) -> String {
    format!("JSON payload ({len} bytes) is larger than allowed (limit: {MAX_JSON} bytes).")
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
    if !state.rates.auth() {
        return rate_limited("Too many authentication attempts. Please retry shortly.");
    }
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
    match jwt::verify(&state.secret, &token, state.now(), 60) {
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
        Err(_) => match jwt::header_problem(&token) {
            Some(p) => auth_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &format!("Invalid JWT header: {p}"),
            ),
            None => auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid credentials"),
        },
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
        .body(KitBody::full(r#"{"message":"Logged out successfully"}"#))
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
        Err(_) => match jwt::header_problem(&token) {
            Some(p) => auth_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &format!("JWT validation failed: Invalid JWT header: {p}"),
            ),
            None => auth_error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid credentials"),
        },
    }
}

/// Milliseconds since `started`, rounded to 3 decimals (the SQL envelope).
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
            started.elapsed().as_secs_f64() * 1000.0 // unrounded here
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

/// Bearer authentication of the endpoints that answer in the SQL envelope
/// (§2.9.2): the token's claims and the user's role, or the refusal's
/// `error.code`.
fn bearer(state: &State, headers: &http::HeaderMap) -> Result<(jwt::Claims, String), &'static str> {
    let auth = headers.get(AUTHORIZATION).ok_or("MISSING_AUTHORIZATION")?;
    let token = auth
        .to_str()
        .ok()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or("INVALID_CREDENTIALS")?;
    state.verify(token, "access").map_err(|e| match e {
        jwt::Refusal::Expired => "TOKEN_EXPIRED",
        jwt::Refusal::Invalid => "INVALID_CREDENTIALS",
    })
}

/// The answer to a refused [`bearer`] authentication.
fn bearer_refused(code: &str, started: Instant) -> Answer {
    let message = match code {
        "MISSING_AUTHORIZATION" => "Authentication required",
        _ => "Invalid credentials",
    };
    bearer_refusal(code, message, started)
}

/// A SQL request of a caller already authenticated ([`bearer`], before
/// its body was read).
fn sql(
    state: &State,
    headers: &http::HeaderMap,
    (claims, role): (jwt::Claims, String),
    is_json: bool,
    body: &[u8],
    started: Instant,
) -> Answer {
    if !state.rates.query(&claims.sub) {
        let e = SqlError::new(
            429,
            "RATE_LIMIT_EXCEEDED",
            "Too many queries per second. Please slow down.",
        );
        return sql_error(e, false, started);
    }
    let admin = role == "dba" || role == "system";
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let multipart = files::is_multipart(content_type);
    let (request, parts) = if multipart {
        match files::parse_multipart(content_type, body, state.file_limits) {
            Ok(m) => (
                SqlRequest {
                    sql: m.sql,
                    params: m.params,
                    namespace_id: m.namespace_id,
                },
                m.files,
            ),
            Err(e) => return sql_error(SqlError::new(400, e.code, e.message), false, started),
        }
    } else {
        match json_sql_request(is_json, body) {
            Ok(r) => (r, HashMap::new()),
            Err(e) => return sql_error(e, admin, started),
        }
    };
    if request.sql.len() > MAX_SQL {
        let e = SqlError::new(
            400,
            "INVALID_SQL",
            format!(
                "SQL query too long: {} bytes (maximum {MAX_SQL} bytes)",
                request.sql.len()
            ),
        );
        return sql_error(e, admin, started);
    }
    let params = request.params.unwrap_or_default();
    let parameter_error = |message: String| SqlError::new(400, "INVALID_PARAMETER", message);
    if params.len() > MAX_PARAMS {
        let e = parameter_error(format!("Too many parameters: {} (at most {MAX_PARAMS})", params.len()));
        return sql_error(e, admin, started);
    }
    if let Some(i) = params.iter().position(|p| p.is_array() || p.is_object()) {
        let e = parameter_error(format!(
            "Parameter ${} invalid: arrays and objects are not supported",
            i + 1
        ));
        return sql_error(e, admin, started);
    }
    let sql_text = request.sql.as_str();
    let namespace = request.namespace_id.as_deref();
    let required = files::placeholders(sql_text);
    if !required.is_empty() || !parts.is_empty() {
        let upload = Upload {
            user: &claims.sub,
            role: &role,
            sql: sql_text,
            params: &params,
            namespace,
            multipart,
            parts,
            required,
        };
        return match file_upload(state, upload) {
            Ok(outcomes) => success(outcomes, started),
            Err(e) => sql_error(e, admin, started),
        };
    }
    let outcome = match state.engine.lock() {
        Ok(mut engine) => engine.run(&claims.sub, &role, sql_text, &params, namespace),
        Err(_) => Err(SqlError::new(500, "INTERNAL_ERROR", "SQL request failed")),
    };
    let outcomes = match outcome {
        Ok(o) => o,
        Err(e) => return sql_error(e, admin, started),
    };
    success(outcomes, started)
}

/// The JSON body of `POST /v1/api/sql`, or the `INVALID_INPUT` refusal.
fn json_sql_request(is_json: bool, body: &[u8]) -> Result<SqlRequest, SqlError> {
    let input_error = |message: String| SqlError::new(400, "INVALID_INPUT", message);
    if !is_json {
        return Err(input_error("Invalid JSON payload: Content type error".into()));
    }
    if body.len() > MAX_JSON {
        return Err(input_error(format!(
            "Invalid JSON payload: {}",
            json_overflow(body.len())
        )));
    }
    serde_json::from_slice(body).map_err(|e| input_error(format!("Invalid JSON payload: Json deserialize error: {e}")))
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
    if single_select {
        // Streamed by the server: chunked, and with `"error":null`.
        let body = format!(
            r#"{{"status":"success","results":{results},"took":{},"error":null}}"#,
            took(started)
        );
        return Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/json")
            .body(KitBody::chunked(body))
            .unwrap_or_default();
    }
    let body = format!(r#"{{"status":"success","results":{results},"took":{}}}"#, took(started));
    raw_json(StatusCode::OK, body)
}
