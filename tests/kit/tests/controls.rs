//! The test controls of `TestServer`: builder options, minted tokens,
//! forced expiry, counters, the request record, injected faults, latency,
//! the change hook, startup and shutdown.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kalam_testkit::{Claims, DEFAULT_JWT_SECRET, Fault, Mint, TestServer, sign_jwt};
use serde_json::json;
use support::{Http, claims};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(10);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The exact start of a Bearer refusal on `/v1/api/sql` (§2.9.2).
fn refusal(code: &str) -> String {
    format!(r#"{{"error":{{"code":"{code}","message":"Invalid credentials"}},"results":[],"status":"error","took":"#)
}

/// How fast a server starts is a figure, not a behaviour: see
/// `benches/startup.rs` (`cargo bench -p kalam-testkit`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_serves_and_stops_cleanly() {
    // Two at once: each on its own loopback port, each serving.
    let (a, b) = (TestServer::start().await, TestServer::start().await);
    assert_ne!(a.addr(), b.addr());
    for server in [a, b] {
        let http = Http::new(&server.url());
        assert_eq!(http.send("GET", "/health", &[], "").await.status, 200);
        assert_eq!(server.url(), format!("http://{}", server.addr()));
        assert!(server.addr().ip().is_loopback());
        let addr = server.addr();
        server.shutdown().await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still listening after shutdown"
        );
    }

    // Dropped on another thread, outside the runtime: no panic, no blocking,
    // and the port is released.
    let server = TestServer::start().await;
    let addr = server.addr();
    std::thread::spawn(move || drop(server)).join().unwrap();
    tokio::time::timeout(PATIENCE, async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the port is released after drop");
}

#[tokio::test]
async fn root_password_logins_and_counters() {
    let server = TestServer::builder().root_password("s3cret-pw").start().await;
    assert_eq!(server.root_password(), "s3cret-pw");
    let http = Http::new(&server.url());
    let refused = http.login_reply("root", "kalamdb123").await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.text(),
        r#"{"error":"unauthorized","message":"Invalid credentials"}"#
    );
    let unknown = http.login_reply("nobody", "s3cret-pw").await;
    assert_eq!(unknown.text(), refused.text());
    let alias = http
        .send(
            "POST",
            "/v1/api/auth/login",
            &[("content-type", "application/json")],
            r#"{"username":"root","password":"s3cret-pw"}"#,
        )
        .await;
    assert_eq!(alias.status, 200, "{}", alias.text());
    let login = http.login("root", "s3cret-pw").await;
    assert_eq!(login["user"]["role"], "system");
    assert_eq!(login["admin_ui_access"], true);
    let refresh = login["refresh_token"].as_str().unwrap();
    let r = http
        .send(
            "POST",
            "/v1/api/auth/refresh",
            &[("authorization", &format!("Bearer {refresh}"))],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let access = login["access_token"].as_str().unwrap();
    http.ok(access, "SELECT 1").await;
    http.ok(access, "SELECT 2").await;
    let c = server.counters();
    assert_eq!(
        (c.logins, c.failed_logins, c.refreshes, c.queries),
        (2, 2, 1, 2),
        "{c:?}"
    );
}

#[tokio::test]
async fn tokens_have_the_servers_claims_and_lifetimes() {
    let server = TestServer::builder()
        .token_lifetime(Duration::from_secs(5))
        .start()
        .await;
    let http = Http::new(&server.url());
    let login = http.login("root", "kalamdb123").await;
    let access = claims(login["access_token"].as_str().unwrap());
    let refresh = claims(login["refresh_token"].as_str().unwrap());
    assert_eq!(access["exp"].as_u64().unwrap() - access["iat"].as_u64().unwrap(), 5);
    assert_eq!(refresh["exp"].as_u64().unwrap() - refresh["iat"].as_u64().unwrap(), 35);
    assert_eq!(
        (
            &access["sub"],
            &access["iss"],
            &access["role"],
            &access["email"],
            &access["token_type"]
        ),
        (
            &json!("root"),
            &json!("kalamdb"),
            &json!("system"),
            &json!("root@localhost"),
            &json!("access")
        )
    );
    assert_eq!(refresh["token_type"], "refresh");
    let keys: Vec<&String> = access.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["sub", "iss", "exp", "iat", "email", "role", "token_type"]);

    // A zero lifetime: expires at issue, still accepted within the leeway.
    let server = TestServer::builder().token_lifetime(Duration::ZERO).start().await;
    let http = Http::new(&server.url());
    let login = http.login("root", "kalamdb123").await;
    let access = login["access_token"].as_str().unwrap();
    let c = claims(access);
    assert_eq!(c["exp"], c["iat"]);
    http.ok(access, "SELECT 1").await;
}

#[tokio::test]
async fn an_own_jwt_secret_lets_tests_mint_tokens_outside_the_kit() {
    let secret = "another-test-secret-0123456789abcdefghij";
    let server = TestServer::builder().jwt_secret(secret).start().await;
    assert_eq!(server.jwt_secret(), secret);
    let http = Http::new(&server.url());
    let claims = |exp: u64| Claims {
        sub: "root".into(),
        iss: "kalamdb".into(),
        exp,
        iat: now(),
        email: None,
        role: "system".into(),
        token_type: "access".into(),
    };
    http.ok(&sign_jwt(secret, &claims(now() + 60)), "SELECT 1").await;
    let other = http
        .sql(&sign_jwt(DEFAULT_JWT_SECRET, &claims(now() + 60)), "SELECT 1")
        .await;
    assert!(
        other.text().starts_with(&refusal("INVALID_CREDENTIALS")),
        "{}",
        other.text()
    );
}

#[tokio::test]
async fn minted_tokens_cover_expiry_leeway_and_forgery() {
    let server = TestServer::start().await;
    let http = Http::new(&server.url());
    let n = now();
    let status = |token: String| {
        let http = http.clone();
        async move {
            let r = http.sql(&token, "SELECT 1").await;
            if r.status == 200 {
                "ok".to_owned()
            } else {
                assert_eq!(r.status, 401);
                let code = r.code();
                assert!(r.text().starts_with(&refusal(&code)), "{}", r.text());
                code
            }
        }
    };
    assert_eq!(status(server.mint_token(Mint::access("root"))).await, "ok");
    assert_eq!(
        status(server.mint_token(Mint::access("root").expired())).await,
        "TOKEN_EXPIRED"
    );
    assert_eq!(
        status(server.mint_token(Mint::access("root").times(n - 100, n - 30))).await,
        "ok",
        "30 s past exp is within the leeway"
    );
    assert_eq!(
        status(server.mint_token(Mint::access("root").times(n - 200, n - 90))).await,
        "TOKEN_EXPIRED"
    );
    assert_eq!(
        status(server.mint_token(Mint::access("root").expires_in(5))).await,
        "ok"
    );
    assert_eq!(
        status(server.mint_token(Mint::access("root").wrong_signature())).await,
        "INVALID_CREDENTIALS"
    );
    assert_eq!(
        status(server.mint_token(Mint::access("root").wrong_signature().expired())).await,
        "INVALID_CREDENTIALS",
        "a bad signature is not an expiry"
    );
    assert_eq!(
        status(server.mint_token(Mint::refresh("root"))).await,
        "INVALID_CREDENTIALS"
    );
    assert_eq!(
        status(server.mint_token(Mint::access("root").times(n + 120, n + 3600))).await,
        "INVALID_CREDENTIALS",
        "iat more than 60 s ahead"
    );
    assert_eq!(
        status(server.mint_token(Mint::access("root").times(n + 30, n + 3600))).await,
        "ok"
    );
    assert_eq!(
        status(server.mint_token(Mint::access("root").role("user"))).await,
        "INVALID_CREDENTIALS",
        "role claim differs from the user's role"
    );
    assert_eq!(
        status(server.mint_token(Mint::access("ghost"))).await,
        "INVALID_CREDENTIALS"
    );
    assert_eq!(
        status(server.mint_token(Mint::access("root").times(0, u64::MAX))).await,
        "ok"
    );

    // The auth endpoints use the plain shape, with no TOKEN_EXPIRED.
    let expired = server.mint_token(Mint::access("root").expired());
    let me = http
        .send(
            "GET",
            "/v1/api/auth/me",
            &[("authorization", &format!("Bearer {expired}"))],
            "",
        )
        .await;
    assert_eq!(
        (me.status, me.text().as_str()),
        (401, r#"{"error":"unauthorized","message":"Invalid credentials"}"#)
    );
    let stale = server.mint_token(Mint::refresh("root").expired());
    let r = http
        .send(
            "POST",
            "/v1/api/auth/refresh",
            &[("authorization", &format!("Bearer {stale}"))],
            "",
        )
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, r#"{"error":"unauthorized","message":"Invalid credentials"}"#)
    );
    let fresh = server.mint_token(Mint::refresh("root"));
    let r = http
        .send(
            "POST",
            "/v1/api/auth/refresh",
            &[("authorization", &format!("Bearer {fresh}"))],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn force_expire_all_expires_every_token_issued_so_far() {
    let server = TestServer::start().await;
    let http = Http::new(&server.url());
    let login = http.login("root", "kalamdb123").await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let minted = server.mint_token(Mint::access("root"));
    http.ok(&access, "SELECT 1").await;
    server.force_expire_all();
    for token in [&access, &minted] {
        let r = http.sql(token, "SELECT 1").await;
        assert!(r.text().starts_with(&refusal("TOKEN_EXPIRED")), "{}", r.text());
    }
    let r = http
        .send(
            "POST",
            "/v1/api/auth/refresh",
            &[("authorization", &format!("Bearer {refresh}"))],
            "",
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    // What is issued afterwards works, even within the same second.
    let again = http.login("root", "kalamdb123").await;
    let new_access = again["access_token"].as_str().unwrap();
    assert_ne!(new_access, access);
    http.ok(new_access, "SELECT 1").await;
    http.ok(&server.mint_token(Mint::access("root")), "SELECT 1").await;
}

#[tokio::test]
async fn the_request_record_shows_every_authorization_header() {
    let server = TestServer::start().await;
    let http = Http::new(&server.url());
    let token = server.mint_token(Mint::access("root"));
    http.ok(&token, "SELECT 1").await;
    let basic = http
        .send(
            "POST",
            "/v1/api/sql",
            &[
                ("authorization", "Basic cm9vdDprYWxhbWRiMTIz"),
                ("content-type", "application/json"),
            ],
            r#"{"sql":"SELECT 1"}"#,
        )
        .await;
    assert!(basic.text().starts_with(&refusal("INVALID_CREDENTIALS")));
    let none = http
        .send(
            "POST",
            "/v1/api/sql",
            &[("content-type", "application/json")],
            r#"{"sql":"SELECT 1"}"#,
        )
        .await;
    assert_eq!(
        none.json()["error"],
        json!({"code": "MISSING_AUTHORIZATION", "message": "Authentication required"})
    );
    http.login("root", "kalamdb123").await;

    assert_eq!(
        server.authorizations("/v1/api/sql"),
        [
            Some(format!("Bearer {token}")),
            Some("Basic cm9vdDprYWxhbWRiMTIz".to_owned()),
            None
        ]
    );
    assert_eq!(server.authorizations("/v1/api/auth/login"), [None]);
    let seen = server.requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(
        (seen[1].method.as_str(), seen[1].auth_scheme()),
        ("POST", Some("Basic"))
    );
    assert_eq!(seen[3].path, "/v1/api/auth/login");
}

#[tokio::test]
async fn injected_faults_answer_the_next_requests() {
    let server = TestServer::start().await;
    let http = Http::new(&server.url());
    let token = server.mint_token(Mint::access("root"));
    server.fail_next(2, Fault::json(503, r#"{"error":"unavailable"}"#).on("/v1/api/sql"));
    // Other paths are not affected.
    assert_eq!(http.send("GET", "/health", &[], "").await.status, 200);
    for _ in 0..2 {
        let r = http.sql(&token, "SELECT 1").await;
        assert_eq!(
            (r.status, r.header("content-type"), r.text().as_str()),
            (503, Some("application/json"), r#"{"error":"unavailable"}"#)
        );
    }
    http.ok(&token, "SELECT 1").await;
    assert_eq!(server.counters().queries, 3, "faulted queries count too");

    // Without a path: the very next request, whatever it is.
    server.fail_next(1, Fault::text(502, "<html>bad gateway</html>"));
    let r = http.send("GET", "/v1/api/healthcheck", &[], "").await;
    assert_eq!(
        (r.status, r.header("content-type"), r.text().as_str()),
        (502, Some("text/html"), "<html>bad gateway</html>")
    );
    assert_eq!(http.send("GET", "/v1/api/healthcheck", &[], "").await.status, 200);
}

/// On Tokio's paused clock: the kit's delay is a `tokio::time::sleep` on
/// this runtime, and the clock moves only when every task waits (then
/// straight to the next timer), so the delay shows exactly, whatever the
/// machine's load. No other timer is pending during these requests (the
/// client sets no timeouts), so nothing else moves the clock.
#[tokio::test(start_paused = true)]
async fn latency_is_added_before_every_answer() {
    let server = TestServer::builder().latency(Duration::from_millis(300)).start().await;
    let http = Http::new(&server.url());
    let timed = async |http: &Http| {
        let t = Instant::now();
        assert_eq!(http.send("GET", "/health", &[], "").await.status, 200);
        t.elapsed()
    };
    // Timers have millisecond resolution: a sleep may end up to 1 ms late.
    let took = timed(&http).await;
    assert!(
        (Duration::from_millis(300)..Duration::from_millis(302)).contains(&took),
        "{took:?}"
    );
    server.set_latency(Duration::ZERO);
    let took = timed(&http).await;
    assert_eq!(took, Duration::ZERO, "no latency: no delay at all");
    server.set_latency(Duration::from_millis(400));
    let took = timed(&http).await;
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(402)).contains(&took),
        "{took:?}"
    );
}

#[tokio::test]
async fn every_committed_row_change_is_broadcast() {
    let server = TestServer::start().await;
    let http = Http::new(&server.url());
    let token = server.mint_token(Mint::access("root"));
    let mut changes = server.changes();
    http.ok(&token, "CREATE NAMESPACE hook").await;
    http.ok(&token, "CREATE USER TABLE hook.t (id BIGINT PRIMARY KEY, v TEXT)")
        .await;
    http.ok(&token, "CREATE SHARED TABLE hook.s (id INT PRIMARY KEY)").await;
    http.ok(&token, "INSERT INTO hook.t (id, v) VALUES (1, 'a'), (2, 'b')")
        .await;
    http.ok(&token, "UPDATE hook.t SET v = 'c' WHERE id = 2").await;
    http.ok(&token, "DELETE FROM hook.t WHERE id = 1").await;
    http.ok(&token, "INSERT INTO hook.s (id) VALUES (7)").await;
    let mut got = Vec::new();
    for _ in 0..5 {
        let c = tokio::time::timeout(PATIENCE, changes.recv())
            .await
            .expect("a change in time")
            .expect("open");
        got.push(c);
    }
    // Five row changes, and nothing else (DDL is not a row change): each
    // statement's changes are sent before its answer.
    assert!(
        matches!(changes.try_recv(), Err(TryRecvError::Empty)),
        "more than the five row changes"
    );
    let kinds: Vec<(&str, &str)> = got.iter().map(|c| (c.table.as_str(), c.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("hook.t", "insert"),
            ("hook.t", "insert"),
            ("hook.t", "update"),
            ("hook.t", "delete"),
            ("hook.s", "insert")
        ]
    );
    let seq = |m: &serde_json::Map<String, serde_json::Value>| m["_seq"].as_str().unwrap().parse::<i64>().unwrap();
    let first = got[0].new.as_ref().unwrap();
    assert_eq!((&first["id"], &first["v"]), (&json!("1"), &json!("a")));
    assert!(got[0].old.is_none());
    assert_eq!(got[0].owner.as_deref(), Some("root"));
    let (old, new) = (got[2].old.as_ref().unwrap(), got[2].new.as_ref().unwrap());
    assert_eq!((&old["v"], &new["v"]), (&json!("b"), &json!("c")));
    assert!(seq(new) > seq(old), "an update gets a new _seq");
    assert!(seq(got[1].new.as_ref().unwrap()) > seq(first));
    let deleted = got[3].old.as_ref().unwrap();
    assert_eq!((&deleted["id"], &deleted["_deleted"]), (&json!("1"), &json!(true)));
    assert!(got[3].new.is_none());
    assert_eq!(got[4].owner, None, "shared tables have no owner");
}
