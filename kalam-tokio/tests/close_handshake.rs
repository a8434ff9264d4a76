//! The client answers a server's close frame (RFC 6455 §5.5.1), so the
//! server sees a clean close, not an abnormal one. A tiny WebSocket server
//! here authenticates the client, closes, and waits for the answer.

use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use futures_util::StreamExt as _;
use kalam_tokio::{AuthProvider, ConnectionOptions, KalamLinkClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_close_is_answered() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = async_tungstenite::tokio::accept_async(tcp).await.unwrap();
        let auth = ws.next().await.unwrap().unwrap();
        assert!(auth.to_text().unwrap().contains("authenticate"), "{auth:?}");
        ws.send(Message::Text(
            r#"{"type":"auth_success","user":"root","role":"system"}"#.into(),
        ))
        .await
        .unwrap();
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "Heartbeat timeout".into(),
        })))
        .await
        .unwrap();
        // What the client sends next: its answer to the close.
        tokio::time::timeout(Duration::from_secs(10), ws.next()).await
    });
    let client = KalamLinkClient::builder()
        .base_url(url)
        .auth(AuthProvider::jwt_token("eyJ.not-checked-here.sig".into()))
        .connection_options(ConnectionOptions::default().with_auto_reconnect(false))
        .build()
        .unwrap();
    client.connect().await.unwrap();
    let answer = server.await.unwrap().expect("the client answered in time");
    assert!(matches!(answer, Some(Ok(Message::Close(_)))), "{answer:?}");
}
