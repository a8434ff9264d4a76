//! The fault proxy in front of the kit: open connections and WebSockets are
//! counted while they live, latency delays answers without losing or
//! reordering anything, and `drop_all` cuts WebSockets.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kalam_testkit::{FaultProxy, Mint, TestServer};
use serde_json::{Value, json};
use support::Http;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PATIENCE: Duration = Duration::from_secs(10);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_ws(proxy: &FaultProxy, token: &str) -> Ws {
    let url = format!("{}/v1/ws?compress=false", proxy.url().replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Polls `condition` until it holds (bounded).
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_and_websockets_are_counted_while_they_live() {
    let server = TestServer::start().await;
    let proxy = FaultProxy::start(&server.url()).await.unwrap();
    assert_eq!((proxy.open_connections(), proxy.open_websockets()), (0, 0));
    let http = Http::new(&proxy.url());
    let token = http.login("root", server.root_password()).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(proxy.open_connections() >= 1, "the keep-alive connection");
    assert_eq!(proxy.open_websockets(), 0, "HTTP is not a WebSocket");
    let mut ws = open_ws(&proxy, &token).await;
    assert_eq!(next_json(&mut ws).await["type"], "auth_success");
    assert_eq!(proxy.open_websockets(), 1);
    ws.close(None).await.unwrap();
    drop(ws);
    eventually("the closed WebSocket is no longer counted", || {
        proxy.open_websockets() == 0
    })
    .await;
    // drop_all cuts a WebSocket too.
    let mut ws = open_ws(&proxy, &token).await;
    assert_eq!(next_json(&mut ws).await["type"], "auth_success");
    proxy.drop_all();
    eventually("the cut WebSocket is no longer counted", || {
        proxy.open_websockets() == 0
    })
    .await;
    assert!(matches!(
        tokio::time::timeout(PATIENCE, ws.next()).await,
        Ok(None | Some(Err(_)))
    ));
    drop(http);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_loses_and_reorders_nothing() {
    let server = TestServer::start().await;
    let proxy = FaultProxy::start(&server.url()).await.unwrap();
    proxy.set_latency(Duration::from_millis(20));
    let http = Http::new(&proxy.url());
    let token = http.login("root", server.root_password()).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    http.ok(&token, "CREATE NAMESPACE kit_latency").await;
    http.ok(&token, "CREATE TABLE kit_latency.t (id BIGINT PRIMARY KEY)")
        .await;
    let mut ws = open_ws(&proxy, &server.mint_token(Mint::access("root"))).await;
    assert_eq!(next_json(&mut ws).await["type"], "auth_success");
    for i in 0..5 {
        let subscribe =
            json!({"type": "subscribe", "subscription": {"id": format!("s{i}"), "sql": "SELECT * FROM kit_latency.t"}});
        ws.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    }
    for i in 0..5 {
        let ack = next_json(&mut ws).await;
        assert_eq!(
            (ack["type"].as_str(), ack["subscription_id"].as_str()),
            (Some("subscription_ack"), Some(format!("s{i}").as_str()))
        );
    }
    server.shutdown().await;
}
