//! The kit's WebSocket side with a raw client: authentication by header on
//! the upgrade, the idle drop, the auth timeout, protocol errors.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kalam_testkit::{Mint, TestServer};
use serde_json::{Value, json};
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
