//! The kit's WebSocket side with a raw client: authentication by header on
//! the upgrade, the idle drop, the auth timeout, protocol errors, the
//! server's message rate and subscription limits.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kalam_testkit::{Mint, TestServer};
use serde_json::{Value, json};
use support::Http;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PATIENCE: Duration = Duration::from_secs(10);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(server: &TestServer, bearer: Option<&str>) -> Ws {
    let url = format!("ws://{}/v1/ws?compress=false", server.addr());
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn recv(ws: &mut Ws) -> Message {
    tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("a frame in time")
        .expect("open")
        .expect("ok")
}

fn json_of(m: &Message) -> Value {
    match m {
        Message::Text(t) => serde_json::from_str(t).unwrap(),
        other => panic!("expected text, got {other:?}"),
    }
}

fn close_code(m: &Message) -> (u16, String) {
    match m {
        Message::Close(Some(f)) => (u16::from(f.code), f.reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn bearer_on_the_upgrade_authenticates_unprompted() {
    let server = TestServer::start().await;
    let token = server.mint_token(Mint::access("root"));
    let mut ws = open(&server, Some(&token)).await;
    let first = json_of(&recv(&mut ws).await);
    assert_eq!(first["type"], "auth_success");
    assert_eq!(
        (first["user"].as_str(), first["role"].as_str()),
        (Some("root"), Some("system"))
    );
    // A bad header token: auth_error, then close 1008.
    let mut bad = open(&server, Some("garbage")).await;
    assert_eq!(
        json_of(&recv(&mut bad).await),
        json!({"type": "auth_error", "message": "Invalid credentials"})
    );
    assert_eq!(
        close_code(&recv(&mut bad).await),
        (1008, "Authentication failed".into())
    );
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_idle_timeout() {
    let server = TestServer::builder()
        .ws_idle_timeout(Duration::from_millis(200))
        .start()
        .await;
    let token = server.mint_token(Mint::access("root"));
    let mut ws = open(&server, Some(&token)).await;
    assert_eq!(json_of(&recv(&mut ws).await)["type"], "auth_success");
    // Say nothing: the server closes with 1000 "Heartbeat timeout".
    assert_eq!(close_code(&recv(&mut ws).await), (1000, "Heartbeat timeout".into()));
}

#[tokio::test]
async fn protocol_errors_as_the_server() {
    let server = TestServer::start().await;
    let token = server.mint_token(Mint::access("root"));
    // authenticate without `protocol`: close 1011.
    let mut ws = open(&server, None).await;
    ws.send(Message::Text(
        json!({"type":"authenticate","method":"jwt","token":token})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let (code, reason) = close_code(&recv(&mut ws).await);
    assert_eq!(code, 1011);
    assert!(reason.contains("protocol"), "{reason}");
    // subscribe before auth: AUTH_REQUIRED, the connection stays.
    let mut ws = open(&server, None).await;
    ws.send(Message::Text(
        json!({"type":"subscribe","subscription":{"id":"s","sql":"SELECT * FROM a.b"}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let e = json_of(&recv(&mut ws).await);
    assert_eq!(
        (e["code"].as_str(), e["subscription_id"].as_str()),
        (Some("AUTH_REQUIRED"), Some("subscribe"))
    );
    // An unknown message type: close 1011.
    ws.send(Message::Text(r#"{"type":"nope"}"#.into())).await.unwrap();
    assert_eq!(close_code(&recv(&mut ws).await).0, 1011);
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text frame, skipping control frames.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match recv(ws).await {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn subscribe(ws: &mut Ws, id: &str, sql: &str) -> Value {
    send_json(ws, json!({"type": "subscribe", "subscription": {"id": id, "sql": sql}})).await;
    next_json(ws).await
}

/// A burst over the message rate: the excess is answered with the
/// server's `rate_limit` error frame, and the connection stays open.
#[tokio::test]
async fn a_burst_over_the_message_rate_is_refused_frame_by_frame() {
    let server = TestServer::builder().max_ws_messages_per_sec(5).start().await;
    let token = server.mint_token(Mint::access("root"));
    // Before the socket (and its full bucket of five) exists.
    let started = tokio::time::Instant::now();
    let mut ws = open(&server, Some(&token)).await;
    assert_eq!(next_json(&mut ws).await["type"], "auth_success");
    for _ in 0..15 {
        send_json(&mut ws, json!({"type": "ping"})).await;
    }
    // A control ping (not counted) after the burst: its pong comes once
    // all fifteen were read, and shows the connection is still open.
    ws.send(Message::Ping(b"still there".to_vec().into())).await.unwrap();
    // Pings get no answer; each refused one gets an error frame.
    let mut refused = 0;
    loop {
        match recv(&mut ws).await {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"still there");
                break;
            }
            m => {
                assert_eq!(
                    json_of(&m),
                    json!({"type": "error", "subscription_id": "rate_limit", "code": "RATE_LIMIT_EXCEEDED", "message": "Too many messages"})
                );
                refused += 1;
            }
        }
    }
    assert_eq!(server.counters().ws_rate_limited, refused);
    // The full bucket lets five pass; while the burst lasted, it refilled
    // by at most five a second (whole tokens). Usually that is none, and
    // exactly ten are refused; a slow machine only lowers the bound.
    let refills = (5.0 * started.elapsed().as_secs_f64()) as usize;
    assert!(
        (10usize.saturating_sub(refills)..=10).contains(&refused),
        "{refused} refused ({refills} refills at most)"
    );
}

/// Subscriptions per user, across connections: one over the limit is
/// refused with its own id; `unsubscribe` and a closed socket free slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_user_are_limited_across_connections() {
    let server = TestServer::builder().max_subscriptions_per_user(2).start().await;
    let http = Http::new(&server.url());
    let token = http.login("root", server.root_password()).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    http.ok(&token, "CREATE NAMESPACE kit_limit").await;
    http.ok(&token, "CREATE TABLE kit_limit.t (id BIGINT PRIMARY KEY)")
        .await;
    let sql = "SELECT * FROM kit_limit.t";
    let mut a = open(&server, Some(&token)).await;
    let mut b = open(&server, Some(&token)).await;
    assert_eq!(next_json(&mut a).await["type"], "auth_success");
    assert_eq!(next_json(&mut b).await["type"], "auth_success");
    assert_eq!(subscribe(&mut a, "a1", sql).await["type"], "subscription_ack");
    assert_eq!(subscribe(&mut a, "a2", sql).await["type"], "subscription_ack");
    assert_eq!(
        subscribe(&mut a, "a3", sql).await,
        json!({"type": "error", "subscription_id": "a3", "code": "SUBSCRIPTION_LIMIT_EXCEEDED", "message": "Maximum subscriptions reached"})
    );
    // The limit is the user's, not the connection's; it is checked first.
    assert_eq!(
        subscribe(&mut b, "b1", "SELECT * FROM kit_limit.missing").await["code"],
        "SUBSCRIPTION_LIMIT_EXCEEDED"
    );
    assert_eq!(server.subscriptions_of("root"), 2);
    // An unsubscribe frees a slot (no answer comes, so the next subscribe
    // on the same socket shows it was read).
    send_json(&mut a, json!({"type": "unsubscribe", "subscription_id": "a1"})).await;
    assert_eq!(subscribe(&mut a, "a4", sql).await["type"], "subscription_ack");
    assert_eq!(
        subscribe(&mut b, "b2", sql).await["code"],
        "SUBSCRIPTION_LIMIT_EXCEEDED"
    );
    // Closing a socket frees all of its slots.
    drop(a);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.subscriptions_of("root") > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed socket kept its slots"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(subscribe(&mut b, "b3", sql).await["type"], "subscription_ack");
    assert_eq!(subscribe(&mut b, "b4", sql).await["type"], "subscription_ack");
    assert_eq!(server.counters().ws_subscriptions_refused, 3);
}
