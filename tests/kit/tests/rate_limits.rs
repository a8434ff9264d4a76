//! The kit's opt-in HTTP rate limits (PROTOCOL §6): authentication requests
//! per second and SQL requests per second per user, on Tokio's (paused)
//! clock.

mod support;

use std::time::Duration;

use kalam_testkit::TestServer;
use serde_json::json;
use support::Http;

#[tokio::test(start_paused = true)]
async fn logins_over_the_auth_rate_get_429_until_the_bucket_refills() {
    let server = TestServer::builder().max_auth_requests_per_sec(2).start().await;
    let http = Http::new(&server.url());
    assert_eq!(http.login_reply("root", "kalamdb123").await.status, 200);
    assert_eq!(
        http.login_reply("root", "wrong").await.status,
        401,
        "a refused login counts too"
    );
    let r = http.login_reply("root", "kalamdb123").await;
    assert_eq!(
        (r.status, r.json()),
        (
            429,
            json!({"error": "rate_limited", "message": "Too many authentication attempts. Please retry shortly."})
        )
    );
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(
        http.login_reply("root", "kalamdb123").await.status,
        200,
        "one token back"
    );
    assert_eq!(http.login_reply("root", "kalamdb123").await.status, 429);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn sql_over_the_query_rate_gets_rate_limit_exceeded_per_user() {
    let server = TestServer::builder().max_queries_per_sec(1).start().await;
    let http = Http::new(&server.url());
    let token = |v: serde_json::Value| v["access_token"].as_str().expect("token").to_owned();
    let root = token(http.login("root", "kalamdb123").await);
    http.ok(&root, "CREATE USER 'bob' WITH PASSWORD 'password123' ROLE user")
        .await;
    let bob = token(http.login("bob", "password123").await);
    let r = http.sql(&root, "SELECT 1").await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json()["error"],
        json!({"code": "RATE_LIMIT_EXCEEDED", "message": "Too many queries per second. Please slow down."})
    );
    assert_eq!(http.sql(&bob, "SELECT 1").await.status, 200, "another user's bucket");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(http.sql(&root, "SELECT 1").await.status, 200);
    server.shutdown().await;
}
