//! Health and first-time setup (PROTOCOL §1, §2.8, §3.5): the kit's
//! "needs setup" and "remote peers" modes, and the same requests against
//! the real server (`health_and_setup_match_the_real_server`, ignored in a
//! plain `cargo test`).

mod support;

use kalam_testkit::{Mint, TestServer};
use serde_json::{Value, json};
use support::{Cmp, Http, Reply, Step, exchange_matches_real};

async fn setup(http: &Http, body: &Value) -> Reply {
    http.send(
        "POST",
        "/v1/api/auth/setup",
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

fn body(user: &str, password: &str, root_password: &str) -> Value {
    json!({"user": user, "password": password, "root_password": root_password, "email": "dba@example.com"})
}

#[tokio::test]
async fn a_server_that_needs_setup_is_set_up_once() {
    let server = TestServer::builder().needs_setup(true).start().await;
    let http = Http::new(&server.url());
    let r = http.send("GET", "/v1/api/auth/status", &[], "").await;
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            json!({"message": "Server requires initial setup. Call POST /v1/api/auth/setup with user, password, root_password, and optional email.", "needs_setup": true})
        )
    );
    let r = http.login_reply("root", "").await;
    assert_eq!(
        (r.status, r.json()),
        (
            428,
            json!({"error": "setup_required", "message": "Server requires initial setup. Root password is not configured."})
        )
    );
    assert_eq!(http.login_reply("root", "kalamdb123").await.status, 401);

    // Validation, in the server's order.
    for (b, status, kind, message) in [
        (
            body("admin", "short", "rootpass123"),
            400,
            "weak_password",
            "DBA user password: Password must be at least 8 characters (weak)",
        ),
        (
            body("admin", "adminpass123", "password"),
            400,
            "weak_password",
            "Root password: Password is too common",
        ),
        (
            body("admin", &"x".repeat(73), "rootpass123"),
            400,
            "weak_password",
            "DBA user password: Password must be at most 72 characters (bcrypt limit, weak)",
        ),
        (
            body("a/b", "adminpass123", "rootpass123"),
            400,
            "invalid_user",
            "Invalid user value",
        ),
        (
            body("root", "adminpass123", "rootpass123"),
            400,
            "invalid_user",
            "Cannot create a DBA user with user 'root'. Choose a different user.",
        ),
    ] {
        let r = setup(&http, &b).await;
        assert_eq!(
            (r.status, r.json()),
            (status, json!({"error": kind, "message": message})),
            "{b}"
        );
    }
    let r = setup(
        &http,
        &json!({"username": "admin", "password": "x", "root_password": "y", "extra": 1}),
    )
    .await;
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            "Json deserialize error: unknown field `extra`, expected one of `user`, `username`, `password`, `root_password`, `email` at line 1 column 62".to_owned()
        )
    );

    // A user that exists already (made with a minted root token) is refused.
    let minted = server.mint_token(Mint::access("root"));
    http.ok(&minted, "CREATE USER 'taken' WITH PASSWORD 'takenpass123' ROLE user")
        .await;
    let r = setup(&http, &body("taken", "adminpass123", "rootpass123")).await;
    assert_eq!(
        (r.status, r.json()),
        (
            409,
            json!({"error": "user_exists", "message": "User 'taken' already exists"})
        )
    );

    let r = setup(&http, &body("admin", "adminpass123", "rootpass123")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (&v["user"]["id"], &v["user"]["role"], &v["user"]["email"]),
        (&json!("admin"), &json!("dba"), &json!("dba@example.com"))
    );
    assert_eq!(
        v["message"],
        "Server setup complete. Root password configured and DBA user 'admin' created. Please login to continue."
    );
    assert!(v.get("access_token").is_none(), "setup returns no tokens");
    let r = http.send("GET", "/v1/api/auth/status", &[], "").await;
    assert_eq!(r.json()["needs_setup"], false);
    http.login("root", "rootpass123").await;
    let dba = http.login("admin", "adminpass123").await;
    assert_eq!(dba["user"]["role"], "dba");
    let r = setup(&http, &body("other", "adminpass123", "rootpass123")).await;
    assert_eq!(
        (r.status, r.json()),
        (
            409,
            json!({"error": "already_configured", "message": "Server has already been configured. Root password is set."})
        )
    );
    server.shutdown().await;
}

#[tokio::test]
async fn remote_peers_get_the_localhost_only_refusals() {
    let server = TestServer::builder().remote_peers(true).start().await;
    let http = Http::new(&server.url());
    for path in ["/health", "/v1/api/healthcheck"] {
        let r = http.send("GET", path, &[], "").await;
        assert_eq!(
            (r.status, r.json()),
            (
                403,
                json!({"error": "Access denied. Health endpoint is localhost-only."})
            )
        );
    }
    let r = http.send("GET", "/v1/api/cluster/health", &[], "").await;
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            json!({"error": "Access denied. Cluster health is localhost-only."})
        )
    );
    let r = http.send("GET", "/v1/api/auth/status", &[], "").await;
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            json!({"error": "forbidden", "message": "Setup status can only be checked from localhost"})
        )
    );
    let r = setup(&http, &body("admin", "adminpass123", "rootpass123")).await;
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            json!({"error": "forbidden", "message": "Server setup can only be performed from localhost"})
        )
    );
    // Everything else works: an authenticated `SELECT 1` is the remote probe.
    let root = http.login("root", "kalamdb123").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    http.ok(&root, "SELECT 1").await;
    server.shutdown().await;

    let server = TestServer::builder().remote_peers(true).needs_setup(true).start().await;
    let r = Http::new(&server.url()).login_reply("root", "something").await;
    assert_eq!((r.status, r.json()["error"].clone()), (403, json!("forbidden")));
    server.shutdown().await;
}

/// The requests both servers answer alike (the real one is set up and local).
async fn exchange(base: &str) -> Vec<Step> {
    let http = Http::new(base);
    let mut out = Vec::new();
    for path in [
        "/health",
        "/v1/api/healthcheck",
        "/v1/api/cluster/health",
        "/v1/api/auth/status",
    ] {
        let r = http.send("GET", path, &[], "").await;
        assert_eq!(r.status, 200, "{path}");
        let cmp = if path == "/v1/api/auth/status" {
            Cmp::Exact
        } else {
            Cmp::Shape
        };
        out.push(Step {
            label: path.to_owned(),
            cmp,
            reply: r,
        });
    }
    for b in [
        body("admin", "adminpass123", "rootpass123"),
        body("admin", "short", "x"),
        json!({"user": "admin"}),
        json!({"user": "admin", "password": "p", "root_password": "r", "bogus": true}),
    ] {
        let r = setup(&http, &b).await;
        assert!(matches!(r.status, 400 | 409), "{b}: {}", r.text());
        out.push(Step {
            label: format!("setup {b}"),
            cmp: Cmp::Exact,
            reply: r,
        });
    }
    let r = http.send("POST", "/v1/api/auth/setup", &[], "{}").await;
    out.push(Step {
        label: "setup without a content type".into(),
        cmp: Cmp::Exact,
        reply: r,
    });
    out
}

#[tokio::test]
#[ignore = "needs the real KalamDB server (../shared/kalamdb-server): cargo test -p kalam-testkit --test setup -- --ignored"]
async fn health_and_setup_match_the_real_server() {
    exchange_matches_real(|url| async move { exchange(&url).await }, |_, _, _| {}).await;
}
