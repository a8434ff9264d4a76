//! A socket that never stops sending does not starve the rest of the
//! driver, which polls the socket itself: a command (a disconnect) is still
//! taken, and its close frame goes out, while change frames pour in.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_tungstenite::tungstenite::{Message, Utf8Bytes};
use futures_util::{SinkExt as _, StreamExt as _};
use kalam_tokio::{AuthProvider, ConnectionOptions, KalamLinkClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_socket_does_not_starve_a_command() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicUsize::new(0));
    let flooding = Arc::new(tokio::sync::Notify::new());
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let (sent, flooding) = (sent.clone(), flooding.clone());
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let ws = async_tungstenite::tokio::accept_async(tcp).await.unwrap();
            let (mut tx, mut rx) = ws.split();
            let auth = rx.next().await.unwrap().unwrap();
            assert!(auth.to_text().unwrap().contains("authenticate"));
            let ok = r#"{"type":"auth_success","user":"root","role":"system"}"#;
            tx.send(Message::Text(ok.into())).await.unwrap();
            let subscribe = rx.next().await.unwrap().unwrap();
            let text = subscribe.to_text().unwrap().to_owned();
            let id = text
                .split("\"id\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            let ack = format!(
                r#"{{"type":"subscription_ack","subscription_id":"{id}","total_rows":0,"batch_control":{{"batch_num":0,"has_more":false,"status":"ready","last_seq_id":null}},"schema":[{{"name":"id","data_type":"BigInt","index":0,"flags":["pk"]}}]}}"#
            );
            tx.send(Message::Text(ack.into())).await.unwrap();
            // The reader waits for the client's close frame.
            tokio::spawn(async move {
                while let Some(Ok(m)) = rx.next().await {
                    if matches!(m, Message::Close(_)) {
                        let _ = closed_tx.send(());
                        return;
                    }
                }
            });
            // Large rows: decoding them costs the client far more than
            // sending them costs the server, so the socket always has a
            // frame ready.
            let text = "x".repeat(16 * 1024);
            let frames: Vec<Utf8Bytes> = (0..100)
                .map(|i| {
                    format!(
                        r#"{{"type":"change","subscription_id":"{id}","change_type":"insert","rows":[{{"id":"{i}","name":"{text}","_seq":"{}"}}]}}"#,
                        1_000_000 + i
                    )
                    .into()
                })
                .collect();
            // The writer floods until the connection goes.
            loop {
                for f in &frames {
                    if tx.feed(Message::Text(f.clone())).await.is_err() {
                        return;
                    }
                }
                if tx.flush().await.is_err() {
                    return;
                }
                if sent.fetch_add(frames.len(), Ordering::SeqCst) == 1000 {
                    flooding.notify_one();
                }
            }
        })
    };
    let client = KalamLinkClient::builder()
        .base_url(url)
        .auth(AuthProvider::jwt_token("eyJ.not-checked-here.sig".into()))
        .connection_options(ConnectionOptions::default().with_auto_reconnect(false))
        .build()
        .unwrap();
    let mut events = client.live_events("SELECT * FROM app.items").await.unwrap();
    let reader = tokio::spawn(async move { while events.next().await.is_some() {} });
    flooding.notified().await;
    tokio::time::timeout(Duration::from_secs(10), client.disconnect())
        .await
        .expect("the disconnect was taken while the socket was busy");
    tokio::time::timeout(Duration::from_secs(10), closed_rx)
        .await
        .expect("the close frame went out while the socket was busy")
        .unwrap();
    assert!(sent.load(Ordering::SeqCst) > 1000);
    reader.await.unwrap();
    server.await.unwrap();
}
