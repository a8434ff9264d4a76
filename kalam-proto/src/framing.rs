//! HTTP framing: requests as `http::Request<Vec<u8>>` values, answers from
//! `http::Response` bodies into typed values or a typed [`ServerError`].
//!
//! These are plain functions (in the style of `postgres-protocol`): no state,
//! no I/O. The [`AuthMachine`](crate::AuthMachine) uses them; so can anyone
//! who wants to speak the protocol with their own state handling.

use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use serde::Serialize;
use serde_json::Value;

use crate::error::{DecodeError, Error, ErrorCode, Result, ServerError};
use crate::ops::RequestKind;
use crate::secret::Secret;
use crate::types::{LoginResponse, MeResponse, QueryResponse, QueryStatus};

/// `GET`: the WebSocket upgrade for live queries (the HTTP endpoints are
/// declared in [`ENDPOINTS`](crate::ops::ENDPOINTS)).
pub const WS_PATH: &str = "/v1/ws";

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The endpoints of one server, parsed once from the base URL so that
/// building a request parses nothing.
#[derive(Debug, Clone)]
pub struct Endpoints {
    base: String,
    /// One URL per [`RequestKind`], in [`ENDPOINTS`](crate::ops::ENDPOINTS) order.
    uris: Vec<Uri>,
}

impl Endpoints {
    /// Parses and checks a base URL such as `http://localhost:2900`.
    ///
    /// Refused with [`Error::InvalidUrl`]: other schemes than `http`/`https`,
    /// no host, credentials in the URL (secrets never travel in URLs), a
    /// query or fragment. A trailing `/` and a path prefix (for a server
    /// behind a reverse proxy) are fine.
    pub fn new(base_url: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: redact_userinfo(base_url),
            reason: reason.to_owned(),
        };
        let uri: Uri = base_url.trim().parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            Some(_) => return Err(bad("the scheme must be http or https")),
            None => return Err(bad("the URL needs a scheme (http:// or https://)")),
        }
        let authority = uri.authority().ok_or_else(|| bad("the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are refused; use the auth options"));
        }
        if authority.host().is_empty() {
            return Err(bad("the URL has no host"));
        }
        // `http::Uri` takes ":99999" but then reports no port at all.
        let text = authority.as_str();
        if let Some((_, port)) = text.rsplit_once(':').filter(|_| !text.ends_with(']'))
            && !port.parse::<u16>().is_ok_and(|p| p > 0)
        {
            return Err(bad("the port must be a number from 1 to 65535"));
        }
        if uri.query().is_some() || base_url.contains('#') {
            return Err(bad("the base URL may not have a query or fragment"));
        }
        let prefix = uri.path().trim_end_matches('/');
        let base = format!("{}://{}{}", uri.scheme_str().unwrap_or("http"), authority, prefix);
        let at = |p: &str| -> Result<Uri> { format!("{base}{p}").parse().map_err(|_| bad("not a URL")) };
        // Indexed by kind, as the table is.
        let uris = crate::ops::ENDPOINTS
            .iter()
            .map(|e| at(e.path))
            .collect::<Result<Vec<_>>>()?;
        Ok(Endpoints { uris, base })
    }

    /// The normalised base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL of `kind`'s endpoint (for [`RequestKind::Download`], the
    /// files route, under which each download names its path).
    pub fn uri(&self, kind: RequestKind) -> &Uri {
        &self.uris[kind as usize]
    }

    /// Whether the server is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.base.starts_with("https://")
    }

    /// URL of the WebSocket endpoint (`ws://…/v1/ws` or `wss://…`), with
    /// optional query text (without `?`).
    pub fn ws_url(&self, query: Option<&str>) -> String {
        let rest = self
            .base
            .strip_prefix("https://")
            .map(|r| format!("wss://{r}"))
            .or_else(|| self.base.strip_prefix("http://").map(|r| format!("ws://{r}")))
            .unwrap_or_default();
        match query {
            Some(q) => format!("{rest}{}?{q}", WS_PATH),
            None => format!("{rest}{}", WS_PATH),
        }
    }
}

/// A URL fit for an error message: credentials (everything before the
/// authority's last `@`, which a password may contain) and the query (where
/// tokens travel, `?token=…`) are replaced by `***`.
fn redact_userinfo(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((u, _)) => (u, "?***"),
        None => (url, ""),
    };
    let start = url.find("://").map_or(0, |s| s + 3);
    let end = url[start..].find('/').map_or(url.len(), |e| start + e);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}{query}", &url[..start], &url[start + at..]),
        None => format!("{url}{query}"),
    }
}

/// A request of `kind` to its endpoint with `body` (JSON when not empty),
/// stamped with `authorization` when given: the one builder of every
/// request but uploads (whose body is streamed) and downloads (whose path
/// is the caller's).
pub fn request(
    ep: &Endpoints,
    kind: RequestKind,
    body: Vec<u8>,
    authorization: Option<&HeaderValue>,
) -> Request<Vec<u8>> {
    let has_body = !body.is_empty();
    let mut req = Request::new(body);
    *req.method_mut() = kind.endpoint().method.clone();
    *req.uri_mut() = ep.uri(kind).clone();
    if has_body {
        req.headers_mut().insert(CONTENT_TYPE, JSON);
    }
    if let Some(a) = authorization {
        req.headers_mut().insert(AUTHORIZATION, a.clone());
    }
    req
}

/// The body of a login: `{"user","password"}`.
pub(crate) fn login_body(user: &str, password: &Secret) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        user: &'a str,
        password: &'a str,
    }
    serde_json::to_vec(&Body {
        user,
        password: password.expose(),
    })
    .unwrap_or_default()
}

/// `POST /v1/api/auth/login` with `{"user","password"}`.
pub fn login_request(ep: &Endpoints, user: &str, password: &Secret) -> Request<Vec<u8>> {
    request(ep, RequestKind::Login, login_body(user, password), None)
}

/// `POST /v1/api/auth/refresh` with the refresh token as Bearer and no body.
pub fn refresh_request(ep: &Endpoints, refresh_token: &Secret) -> Result<Request<Vec<u8>>> {
    let bearer = crate::auth::bearer_header(refresh_token.expose())?;
    Ok(request(ep, RequestKind::Refresh, Vec::new(), Some(&bearer)))
}

/// A SQL request: statement(s), optional positional parameters (`$1`, `$2`…)
/// and an optional default namespace for unqualified table names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryRequest {
    /// One statement, or several separated by `;`.
    pub sql: String,
    /// Values for `$1`, `$2`…: null, booleans, numbers or strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<Value>>,
    /// Namespace for unqualified table names.
    #[serde(rename = "namespace_id", skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The first NaN or infinite float given to [`param`](Self::param):
    /// position and value, refused by [`to_body`](Self::to_body).
    #[serde(skip)]
    non_finite: Option<(usize, f64)>,
    /// The caller said running it twice does no harm ([`idempotent`](Self::idempotent)).
    #[serde(skip)]
    idempotent: bool,
}

/// A value for one positional parameter (`$1`, `$2`…), as
/// [`QueryRequest::param`] takes it: a boolean, an integer, a finite float, a
/// string, `None` for NULL, or a JSON scalar. A NaN or infinite float is kept
/// as such, so the request is refused with
/// [`Error::NonFiniteParameter`] instead of sending NULL (what a
/// `serde_json::Value` would silently make of it).
#[derive(Debug, Clone, PartialEq)]
pub struct Param(ParamValue);

#[derive(Debug, Clone, PartialEq)]
enum ParamValue {
    Json(Value),
    NonFinite(f64),
}

impl From<f64> for Param {
    fn from(x: f64) -> Self {
        Param(if x.is_finite() {
            ParamValue::Json(Value::from(x))
        } else {
            ParamValue::NonFinite(x)
        })
    }
}

impl From<f32> for Param {
    fn from(x: f32) -> Self {
        Param::from(f64::from(x))
    }
}

macro_rules! param_from_json {
    ($($t:ty),*) => {$(
        impl From<$t> for Param {
            fn from(v: $t) -> Self {
                Param(ParamValue::Json(Value::from(v)))
            }
        }
    )*};
}
param_from_json!(
    bool,
    i8,
    i16,
    i32,
    i64,
    isize,
    u8,
    u16,
    u32,
    u64,
    usize,
    &str,
    String,
    serde_json::Number,
    Value
);

impl From<&String> for Param {
    fn from(v: &String) -> Self {
        Param(ParamValue::Json(Value::from(v.as_str())))
    }
}

impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param(ParamValue::Json(Value::Null)), Into::into)
    }
}

impl QueryRequest {
    /// A request for `sql` with no parameters.
    pub fn new(sql: impl Into<String>) -> Self {
        QueryRequest {
            sql: sql.into(),
            params: None,
            namespace: None,
            non_finite: None,
            idempotent: false,
        }
    }

    /// Marks the statement as safe to run twice (an `UPSERT` of fixed
    /// values, a `DELETE … WHERE id = 5`): on a cluster it is then sent to
    /// another node after its answer was lost, like a read (see
    /// [`retry_safe`](Self::retry_safe)).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Whether sending it again after its answer was lost can do no harm:
    /// marked [`idempotent`](Self::idempotent), or [`read_only`](Self::read_only).
    pub fn retry_safe(&self) -> bool {
        self.idempotent || self.read_only()
    }

    /// A conservative reading of the SQL: one statement (no `;` but at the
    /// end, even inside a string) that starts, after blanks and comments,
    /// with `SELECT`, `SHOW`, `DESCRIBE`, `DESC` or `EXPLAIN` (not
    /// `EXPLAIN ANALYZE`, which runs the statement). Anything else counts
    /// as a write: a `WITH … INSERT`, a batch, a `SUBSCRIBE`.
    pub fn read_only(&self) -> bool {
        crate::statement::read_only(&self.sql)
    }

    /// Sets the positional parameters.
    pub fn with_params(mut self, params: Vec<Value>) -> Self {
        self.params = Some(params);
        self.non_finite = None;
        self
    }

    /// Appends one positional parameter. A NaN or infinite float makes
    /// [`to_body`](Self::to_body) (so the query) fail with
    /// [`Error::NonFiniteParameter`].
    pub fn param(mut self, value: impl Into<Param>) -> Self {
        let params = self.params.get_or_insert_with(Vec::new);
        match value.into().0 {
            ParamValue::Json(v) => params.push(v),
            ParamValue::NonFinite(x) => {
                if self.non_finite.is_none() {
                    self.non_finite = Some((params.len() + 1, x));
                }
                params.push(Value::Null);
            }
        }
        self
    }

    /// Sets the namespace for unqualified table names.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The JSON body. Refused here, with a typed error and before anything
    /// is sent, what the server would refuse (PROTOCOL §3.1, §6): arrays and
    /// objects as parameters, SQL over 1 MiB, more than 50 parameters or
    /// one over 512 KiB, a body over 2 MiB; and NaN or infinite floats.
    pub fn to_body(&self) -> Result<Vec<u8>> {
        if let Some((position, value)) = self.non_finite {
            return Err(Error::NonFiniteParameter { position, value });
        }
        if self.sql.len() > limits::MAX_SQL_BYTES {
            return Err(Error::InvalidInput(format!(
                "the SQL text is {} bytes; the server accepts at most {} (1 MiB)",
                self.sql.len(),
                limits::MAX_SQL_BYTES
            )));
        }
        if let Some(params) = &self.params {
            if params.len() > limits::MAX_PARAMS {
                return Err(Error::InvalidInput(format!(
                    "{} parameters; the server accepts at most {} per statement",
                    params.len(),
                    limits::MAX_PARAMS
                )));
            }
            for (i, p) in params.iter().enumerate() {
                if let Value::String(text) = p
                    && text.len() > limits::MAX_PARAM_BYTES
                {
                    return Err(Error::InvalidInput(format!(
                        "parameter ${} is {} bytes; the server accepts at most {} (512 KiB)",
                        i + 1,
                        text.len(),
                        limits::MAX_PARAM_BYTES
                    )));
                }
                if p.is_array() || p.is_object() {
                    return Err(Error::InvalidInput(format!(
                        "parameter ${} is an array or object; pass JSON values as strings",
                        i + 1
                    )));
                }
            }
        }
        let body = serde_json::to_vec(self).map_err(|e| Error::InvalidInput(e.to_string()))?;
        if body.len() > limits::MAX_JSON_BODY {
            return Err(Error::InvalidInput(format!(
                "the request body is {} bytes; the server accepts at most {} (2 MiB)",
                body.len(),
                limits::MAX_JSON_BODY
            )));
        }
        Ok(body)
    }
}

/// The server's request limits (PROTOCOL §6), checked before sending.
pub mod limits {
    /// Longest SQL text.
    pub const MAX_SQL_BYTES: usize = 1 << 20;
    /// Largest JSON request body.
    pub const MAX_JSON_BODY: usize = 2 << 20;
    /// Most parameters per statement.
    pub const MAX_PARAMS: usize = 50;
    /// Largest parameter.
    pub const MAX_PARAM_BYTES: usize = 512 << 10;
}

impl From<&str> for QueryRequest {
    fn from(sql: &str) -> Self {
        QueryRequest::new(sql)
    }
}

impl From<String> for QueryRequest {
    fn from(sql: String) -> Self {
        QueryRequest::new(sql)
    }
}

/// Decodes the answer to a login or a refresh.
pub fn decode_login(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<LoginResponse> {
    decode_json(status, headers, body, "login answer")
}

/// Decodes the answer of `/v1/api/auth/me`.
pub fn decode_me(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<MeResponse> {
    decode_json(status, headers, body, "auth/me answer")
}

/// Decodes the answer of `/v1/api/sql`. `status: "error"` is an `Err` even
/// in a 200 answer.
pub fn decode_query(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<QueryResponse> {
    if !status.is_success() {
        return Err(decode_error(status, headers, body).into());
    }
    // One pass into the typed envelope; an error envelope (also inside a
    // 200) is recognised by its `status` or its `error` object.
    #[derive(serde::Deserialize)]
    struct Envelope {
        status: QueryStatus,
        #[serde(default)]
        results: Vec<crate::types::QueryResult>,
        #[serde(default)]
        took: Option<f64>,
        #[serde(default)]
        error: Option<Value>,
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
        if env.status == QueryStatus::Success && !env.error.as_ref().is_some_and(Value::is_object) {
            return Ok(QueryResponse {
                status: env.status,
                results: env.results,
                took: env.took,
            });
        }
        let v = serde_json::json!({ "error": env.error });
        return Err(server_error_from_json(status, headers, &v, body).into());
    }
    // Not the usual shape: look closer, for an error or a precise complaint.
    let v: Value = serde_json::from_slice(body).map_err(|e| DecodeError::new(status.as_u16(), "SQL answer", e))?;
    if v.get("status").and_then(Value::as_str) == Some("error") || v.get("error").is_some_and(Value::is_object) {
        return Err(server_error_from_json(status, headers, &v, body).into());
    }
    let resp: QueryResponse =
        serde_json::from_value(v).map_err(|e| DecodeError::new(status.as_u16(), "SQL answer", e))?;
    Ok(resp)
}

/// The answer of `/v1/api/sql` for a caller that reads the rows itself
/// ([`crate::rows::answer_rows_as`]): a refusal is decoded here (so that
/// `TOKEN_EXPIRED` is recovered from), a 2xx body is handed on unread.
pub fn query_body(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>> {
    if !status.is_success() {
        return Err(decode_error(status, headers, body).into());
    }
    // The server writes `status` first: a success is handed on unread. Any
    // other shape is read here, so that an error envelope inside a 2xx
    // (`TOKEN_EXPIRED` included) is recovered from as a query's is.
    let start = body.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(body.len());
    if !body[start..].starts_with(br#"{"status":"success""#) {
        decode_query(status, headers, body)?;
    }
    Ok(body.to_vec())
}

fn decode_json<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    what: &'static str,
) -> Result<T> {
    if !status.is_success() {
        return Err(decode_error(status, headers, body).into());
    }
    serde_json::from_slice(body).map_err(|e| DecodeError::new(status.as_u16(), what, e).into())
}

/// Longest message kept from a non-JSON error body.
const MAX_TEXT_MESSAGE: usize = 512;
/// How much of an HTML page's title or text an error message keeps.
const MAX_HTML_GIST: usize = 120;

/// Decodes any error answer into one [`ServerError`], whatever its shape:
///
/// - the SQL envelope `{"status":"error","error":{"code","message","details"?},…}`,
/// - the auth endpoints' `{"error":"<kind>","message":"…"}`,
/// - the topic/file shape `{"error":"<message>","code":"<CODE>"}`,
/// - the protection middleware's `{"error":"RATE_LIMIT_EXCEEDED","message",…,"retry_after_seconds"}`,
/// - plain text or HTML (the code is then [`ErrorCode::Unspecified`]).
pub fn decode_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ServerError {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => server_error_from_json(status, headers, &v, body),
        Err(_) => ServerError {
            status: status.as_u16(),
            code: ErrorCode::Unspecified,
            message: text_message(status, body),
            details: None,
            retry_after_secs: retry_after(headers, None),
        },
    }
}

fn server_error_from_json(status: StatusCode, headers: &HeaderMap, v: &Value, body: &[u8]) -> ServerError {
    let s = |x: Option<&Value>| x.and_then(Value::as_str).map(str::to_owned);
    let (code, message, details) = match v.get("error") {
        // SQL envelope.
        Some(Value::Object(e)) => (
            s(e.get("code")).map(|c| ErrorCode::parse(&c)),
            s(e.get("message")),
            s(e.get("details")),
        ),
        Some(Value::String(e)) => match s(v.get("code")) {
            // Topic / file shape: `error` is the message.
            Some(code) => (Some(ErrorCode::parse(&code)), Some(e.clone()), None),
            // Auth shape: `error` is the kind.
            None => (Some(ErrorCode::parse(e)), s(v.get("message")), None),
        },
        _ => (None, s(v.get("message")), None),
    };
    ServerError {
        status: status.as_u16(),
        code: code.unwrap_or(ErrorCode::Unspecified),
        message: message.unwrap_or_else(|| text_message(status, body)),
        details,
        retry_after_secs: retry_after(headers, v.get("retry_after_seconds").and_then(Value::as_u64)),
    }
}

fn text_message(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status.canonical_reason().unwrap_or("error").to_owned();
    }
    if text.starts_with('<') {
        // An HTML page (a proxy's, a load balancer's: not a KalamDB
        // answer): its title, or its text, on one line.
        let title = between(text, "<title>", "</title>").map(str::to_owned);
        let gist = title.unwrap_or_else(|| strip_tags(text));
        let gist = gist.split_whitespace().collect::<Vec<_>>().join(" ");
        return format!("an HTML page, not a KalamDB answer: {}", cut(&gist, MAX_HTML_GIST));
    }
    cut(text, MAX_TEXT_MESSAGE)
}

/// At most `max` characters of `text`, with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The text between the first `open` and the next `close` (ASCII case
/// ignored).
fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let lower = text.to_ascii_lowercase();
    let start = lower.find(open)? + open.len();
    let end = start + lower[start..].find(close)?;
    text.get(start..end)
}

/// The text of an HTML page without its tags.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(4096));
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn retry_after(headers: &HeaderMap, from_body: Option<u64>) -> Option<u64> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(from_body)
}

/// A request as it may be shown in `Debug` output and logs: method, URI and
/// body size; no headers (they carry tokens) and no body (a login's holds
/// the password).
pub(crate) struct RequestSummary<'a>(pub(crate) &'a Request<Vec<u8>>);

impl std::fmt::Debug for RequestSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} ({} byte body)",
            self.0.method(),
            self.0.uri(),
            self.0.body().len()
        )
    }
}

/// A text frame as it may be shown: its size only (`authenticate` carries
/// the token).
pub(crate) struct TextSummary<'a>(pub(crate) &'a str);

impl std::fmt::Debug for TextSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes of text>", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_html_page_becomes_one_line() {
        let page = b"<!DOCTYPE html>\n<html><head><title>502 Bad\n Gateway</title></head>\n<body><h1>502</h1><p>nginx</p>\n</body></html>";
        let e = decode_error(StatusCode::BAD_GATEWAY, &HeaderMap::new(), page);
        assert_eq!(e.message, "an HTML page, not a KalamDB answer: 502 Bad Gateway");
        let untitled = format!("<html><body><p>{}</p></body></html>", "blah ".repeat(500));
        let e = decode_error(StatusCode::BAD_GATEWAY, &HeaderMap::new(), untitled.as_bytes());
        assert!(
            e.message.chars().count() < 200 && e.message.ends_with('…'),
            "{}",
            e.message
        );
        assert!(!e.message.contains('<'));
    }

    #[test]
    fn endpoints_validate() {
        let ep = Endpoints::new("http://localhost:2900/").unwrap();
        assert_eq!(ep.base(), "http://localhost:2900");
        assert_eq!(
            ep.uri(RequestKind::Query).to_string(),
            "http://localhost:2900/v1/api/sql"
        );
        assert_eq!(
            ep.ws_url(Some("compress=false")),
            "ws://localhost:2900/v1/ws?compress=false"
        );
        let ep = Endpoints::new("https://db.example.com/kalam").unwrap();
        assert_eq!(
            ep.uri(RequestKind::Login).to_string(),
            "https://db.example.com/kalam/v1/api/auth/login"
        );
        assert_eq!(ep.ws_url(None), "wss://db.example.com/kalam/v1/ws");
        for bad in [
            "",
            "localhost:2900",
            "ftp://x",
            "http://",
            "http://u:pw@h:1",
            "http://h/?a=1",
            "http://h/#x",
            "::::",
        ] {
            let err = Endpoints::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{bad:?}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
    }

    #[test]
    fn sql_body_shape() {
        let body = QueryRequest::new("SELECT * FROM t WHERE a = $1 AND b = $2")
            .param(1)
            .param("é")
            .with_namespace("demo")
            .to_body()
            .unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"sql":"SELECT * FROM t WHERE a = $1 AND b = $2","params":[1,"é"],"namespace_id":"demo"}"#
        );
        assert_eq!(
            QueryRequest::new("SELECT 1").to_body().unwrap(),
            br#"{"sql":"SELECT 1"}"#
        );
        assert!(matches!(
            QueryRequest::new("x").param(serde_json::json!([1])).to_body(),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn error_shapes() {
        let h = HeaderMap::new();
        let e = decode_error(StatusCode::UNAUTHORIZED, &h, br#"{"error":{"code":"TOKEN_EXPIRED","message":"Invalid credentials"},"results":[],"status":"error","took":0.18}"#);
        assert_eq!(
            (e.status, &e.code, e.message.as_str()),
            (401, &ErrorCode::TokenExpired, "Invalid credentials")
        );
        let e = decode_error(
            StatusCode::UNAUTHORIZED,
            &h,
            br#"{"error":"unauthorized","message":"Invalid credentials"}"#,
        );
        assert_eq!(e.code, ErrorCode::Unauthorized);
        let e = decode_error(
            StatusCode::FORBIDDEN,
            &h,
            br#"{"error":"Topic consumption requires service, dba, or system role","code":"FORBIDDEN"}"#,
        );
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.message.starts_with("Topic"));
        let mut h2 = HeaderMap::new();
        h2.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        let e = decode_error(
            StatusCode::TOO_MANY_REQUESTS,
            &h2,
            br#"{"error":"IP_BANNED","message":"x","retry_after_seconds":300}"#,
        );
        assert_eq!((e.code, e.retry_after_secs), (ErrorCode::IpBanned, Some(1)));
        let e = decode_error(
            StatusCode::BAD_REQUEST,
            &h,
            b"Json deserialize error: missing field `password`",
        );
        assert_eq!(e.code, ErrorCode::Unspecified);
        assert!(e.message.contains("missing field"));
        let e = decode_error(StatusCode::BAD_GATEWAY, &h, &[0xff, 0xfe, b'<']);
        assert_eq!(e.status, 502);
        let big = vec![b'x'; 100_000];
        assert!(decode_error(StatusCode::INTERNAL_SERVER_ERROR, &h, &big).message.len() < 600);
    }

    #[test]
    fn error_in_a_200_is_an_err() {
        let h = HeaderMap::new();
        // The same for a caller reading rows itself: its body is read here.
        let r2 = query_body(StatusCode::OK, &h, br#"{"status":"error","results":[],"took":1,"error":{"code":"TOKEN_EXPIRED","message":"Invalid credentials"}}"#);
        assert!(r2.is_err_and(|e| e.is_token_expired()));
        let ok = br#" {"status":"success","results":[]}"#;
        assert_eq!(query_body(StatusCode::OK, &h, ok).unwrap(), ok);
        let r = decode_query(StatusCode::OK, &h, br#"{"status":"error","results":[],"took":1,"error":{"code":"TOKEN_EXPIRED","message":"Invalid credentials"}}"#);
        assert!(r.unwrap_err().is_token_expired());
        let r = decode_query(StatusCode::OK, &h, br#"{"status":"success","results":[{"schema":[{"name":"x","data_type":"Int","index":0}],"rows":[[1]],"row_count":1,"as_user":"root"}],"took":1.5,"error":null}"#);
        assert_eq!(r.unwrap().results[0].row_count, 1);
        let r = decode_query(StatusCode::OK, &h, br#"{"status":"success","results":[{"schema":[]"#);
        assert!(matches!(r, Err(Error::Decode(_))));
    }

    #[test]
    fn non_finite_float_parameters_are_refused_not_sent_as_null() {
        for (bad, position) in [(f64::NAN, 2), (f64::INFINITY, 2), (f64::NEG_INFINITY, 2)] {
            let request = QueryRequest::new("SELECT $1, $2, $3")
                .param(1.5)
                .param(bad)
                .param(f64::NAN);
            match request.to_body() {
                Err(Error::NonFiniteParameter { position: p, value }) => {
                    assert_eq!(p, position);
                    assert!(value.is_nan() == bad.is_nan() && (value.is_nan() || value == bad));
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(QueryRequest::new("SELECT $1").param(f32::NAN).to_body().is_err());
        let ok = QueryRequest::new("SELECT $1, $2, $3, $4")
            .param(2.5f32)
            .param(None::<f64>)
            .param(Some("x"))
            .param(u64::MAX)
            .to_body()
            .unwrap();
        assert_eq!(
            ok,
            br#"{"sql":"SELECT $1, $2, $3, $4","params":[2.5,null,"x",18446744073709551615]}"#
        );
        // Parameters set anew replace the refused one.
        let replaced = QueryRequest::new("SELECT $1")
            .param(f64::NAN)
            .with_params(vec![1.into()]);
        assert!(replaced.to_body().is_ok());
    }
}
