//! A raw HTTP client for the kit's own tests (hyper-util's client, not the
//! KalamDB client crates).

#![allow(dead_code)] // Each test binary uses a different part.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// One answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `error.code` of a SQL-envelope error.
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }

    /// The rows of the first result.
    pub fn rows(&self) -> Vec<Value> {
        self.json()["results"][0]["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A client for one base URL.
#[derive(Clone)]
pub struct Http {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub fn new(base: &str) -> Self {
        Http {
            base: base.trim_end_matches('/').to_owned(),
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
        }
    }

    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body: Bytes = body.into();
        let start = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        let resp = self
            .client
            .request(req.body(Full::new(body)).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{method} {path} {start:?}: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, body }
    }

    /// `POST /v1/api/auth/login`; the reply whatever it is.
    pub async fn login_reply(&self, user: &str, password: &str) -> Reply {
        let body = json!({"user": user, "password": password}).to_string();
        self.send(
            "POST",
            "/v1/api/auth/login",
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    /// Logs in and returns the login body (access and refresh tokens).
    pub async fn login(&self, user: &str, password: &str) -> Value {
        let r = self.login_reply(user, password).await;
        assert_eq!(r.status, 200, "login as {user}: {}", r.text());
        r.json()
    }

    /// `POST /v1/api/sql` with a JSON body and a Bearer token.
    pub async fn sql_body(&self, token: &str, body: &Value) -> Reply {
        let auth = format!("Bearer {token}");
        self.send(
            "POST",
            "/v1/api/sql",
            &[("authorization", &auth), ("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// `POST /v1/api/sql` with `{"sql": sql}`.
    pub async fn sql(&self, token: &str, sql: &str) -> Reply {
        self.sql_body(token, &json!({ "sql": sql })).await
    }

    /// Runs `sql` and asserts it succeeded.
    pub async fn ok(&self, token: &str, sql: &str) -> Reply {
        let r = self.sql(token, sql).await;
        assert_eq!(r.status, 200, "{sql}: {}", r.text());
        r
    }
}

/// A POST over a bare TCP connection that reads the answer even when the
/// server answers (and closes) before the body is sent, as a server does
/// for a body over its limit (hyper's client reports an error then).
pub async fn post_early_answer(base: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    // The write half is kept open until the answer is read: a half-closed
    // connection may be dropped by the server before it answers.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let reply = loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break parse_response(&raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if let Some(r) = parse_response(&raw) {
            break Some(r);
        }
    };
    writer.abort();
    reply.unwrap_or_else(|| panic!("no complete answer: {:?}", String::from_utf8_lossy(&raw)))
}

/// A complete HTTP/1.1 response with a `content-length`, if `raw` holds one.
fn parse_response(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let (k, v) = line.split_once(':')?;
        headers.append(
            http::HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
            v.trim().parse().ok()?,
        );
    }
    let len: usize = headers.get("content-length")?.to_str().ok()?.parse().ok()?;
    let body = raw.get(end + 4..end + 4 + len)?;
    Some(Reply {
        status,
        headers,
        body: Bytes::copy_from_slice(body),
    })
}

/// The claims of a JWT, unverified.
pub fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// An access token for `user` with `role`, signed with the kit's default
/// secret (the real server's too), that expired an hour ago.
pub fn expired_token(user: &str, role: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    kalam_testkit::sign_jwt(
        kalam_testkit::DEFAULT_JWT_SECRET,
        &kalam_testkit::Claims {
            sub: user.into(),
            iss: "kalamdb".into(),
            exp: now - 3600,
            iat: now - 7200,
            email: None,
            role: role.into(),
            token_type: "access".into(),
        },
    )
}

/// How a step is compared between the kit and the real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// Status, content type, and the JSON shape with messages and error
    /// texts equal ([`ShapeRules::wire`](kalam_testkit::shape::ShapeRules::wire)),
    /// or the same bytes when not JSON.
    Exact,
    /// Status, content type and JSON shape; messages may differ (job ids,
    /// `took`) ([`ShapeRules::structural`](kalam_testkit::shape::ShapeRules::structural)).
    Shape,
}

/// One answer of an exchange run against both servers.
pub struct Step {
    pub label: String,
    pub cmp: Cmp,
    pub reply: Reply,
}

/// The steps of an exchange, recorded as they are sent.
pub struct Recorder {
    pub http: Http,
    pub steps: Vec<Step>,
}

impl Recorder {
    pub fn new(http: Http) -> Self {
        Recorder {
            http,
            steps: Vec::new(),
        }
    }

    /// Records an answer; returns it.
    pub fn record(&mut self, label: String, cmp: Cmp, reply: Reply) -> &Reply {
        self.steps.push(Step { label, cmp, reply });
        &self.steps.last().expect("just pushed").reply
    }

    /// `sql` as `token`, recorded.
    pub async fn sql(&mut self, token: &str, cmp: Cmp, sql: &str) -> &Reply {
        let reply = self.http.sql(token, sql).await;
        self.record(sql.to_owned(), cmp, reply)
    }

    /// `sql` as `token`, recorded (compared exactly) and asserted to succeed.
    pub async fn ok(&mut self, token: &str, sql: &str) -> &Reply {
        let r = self.sql(token, Cmp::Exact, sql).await;
        assert_eq!(r.status, 200, "{sql}: {}", r.text());
        r
    }
}

/// Runs `exchange` against the real server (started for it) and then
/// against a fresh kit, and compares their answers
/// ([`assert_kit_matches_real`]).
pub async fn exchange_matches_real<F, Fut>(exchange: F, refine: impl Fn(&Step, &Step, &mut Vec<String>))
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Vec<Step>>,
{
    let real = kalam_testkit::RealServer::start();
    let real_steps = exchange(real.url()).await;
    let kit = kalam_testkit::TestServer::start().await;
    let kit_steps = exchange(kit.url()).await;
    assert_kit_matches_real(&real_steps, &kit_steps, refine);
    kit.shutdown().await;
}

/// Compares the real server's answers with the kit's, step by step: the
/// same number of steps, then for each the status and content type, then
/// JSON bodies by [`Cmp`] (the differences passed through `refine`, which
/// may drop or add some), other bodies byte for byte. Panics listing every
/// difference.
pub fn assert_kit_matches_real(real: &[Step], kit: &[Step], refine: impl Fn(&Step, &Step, &mut Vec<String>)) {
    use kalam_testkit::shape::{ShapeRules, shape_diff_with};
    assert_eq!(real.len(), kit.len(), "both servers ran the same steps");
    let mut problems = Vec::new();
    for (r, k) in real.iter().zip(kit) {
        let label: String = r.label.chars().take(100).collect();
        let (rr, kr) = (&r.reply, &k.reply);
        if (rr.status, rr.header("content-type")) != (kr.status, kr.header("content-type")) {
            problems.push(format!(
                "{label}: {} {:?}, kit {} {:?}",
                rr.status,
                rr.header("content-type"),
                kr.status,
                kr.header("content-type")
            ));
            continue;
        }
        match (
            serde_json::from_slice::<Value>(&rr.body),
            serde_json::from_slice::<Value>(&kr.body),
        ) {
            (Ok(a), Ok(b)) => {
                let rules = match r.cmp {
                    Cmp::Exact => ShapeRules::wire(),
                    Cmp::Shape => ShapeRules::structural(),
                };
                let mut diffs = shape_diff_with(&rules, &a, &b);
                refine(r, k, &mut diffs);
                problems.extend(diffs.into_iter().map(|d| format!("{label}: {d}")));
            }
            _ if rr.body != kr.body => problems.push(format!("{label}: {:?}, kit {:?}", rr.text(), kr.text())),
            _ => {}
        }
    }
    assert!(
        problems.is_empty(),
        "the kit differs from the real server:\n{}",
        problems.join("\n")
    );
}
