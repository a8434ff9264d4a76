//! The live path's cost against its bare limit: a null WebSocket server (on
//! its own thread and runtime) authenticates, acknowledges subscriptions,
//! and then sends a burst of change frames for one of them, from memory.
//! The client's time to deliver the burst through `LiveEvents` is compared
//! with the time to parse the same frames into `serde_json::Value`, with one
//! subscription on the socket and with 1000 more idle ones.

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::{SinkExt as _, StreamExt as _};
use kalam_tokio::{AuthProvider, ConnectionOptions, KalamLinkClient, LiveEvent};

const BURST: usize = 1000;

fn frame(i: usize) -> String {
    format!(
        r#"{{"type":"change","subscription_id":"k1","change_type":"insert","rows":[{{"id":"{i}","name":"item {i}","qty":{i},"price":1.25,"_seq":"{}"}}]}}"#,
        7_212_341_234_000_000u64 + i as u64
    )
}

/// The null server: answers `authenticate` and every `subscribe`, then, for
/// each `ping` text the bench sends through a side channel, a burst.
fn null_server(bursts: std::sync::mpsc::Receiver<()>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap())).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = async_tungstenite::tokio::accept_async(tcp).await.unwrap();
            let frames: Vec<String> = (0..BURST).map(frame).collect();
            let bursts = std::sync::Arc::new(std::sync::Mutex::new(bursts));
            loop {
                let next = tokio::time::timeout(Duration::from_millis(1), ws.next()).await;
                match next {
                    Ok(Some(Ok(Message::Text(t)))) => {
                        let t = t.as_str();
                        if t.contains("authenticate") {
                            ws.send(Message::Text(r#"{"type":"auth_success","user":"root","role":"system"}"#.into()))
                                .await
                                .unwrap();
                        } else if let Some(id) = t.split("\"id\":\"").nth(1).and_then(|r| r.split('"').next()) {
                            let ack = format!(
                                r#"{{"type":"subscription_ack","subscription_id":"{id}","total_rows":0,"batch_control":{{"batch_num":0,"has_more":false,"status":"ready","last_seq_id":null}},"schema":[{{"name":"id","data_type":"BigInt","index":0,"flags":["pk"]}}]}}"#
                            );
                            ws.send(Message::Text(ack.into())).await.unwrap();
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(_) => return,
                    Err(_) => {}
                }
                if bursts.lock().unwrap().try_recv().is_ok() {
                    for f in &frames {
                        ws.feed(Message::Text(f.clone().into())).await.unwrap();
                    }
                    ws.flush().await.unwrap();
                }
            }
        });
    });
    rx.recv().unwrap()
}

fn bench(c: &mut Criterion) {
    let frames: Vec<String> = (0..BURST).map(frame).collect();
    let mut g = c.benchmark_group(format!("live: a burst of {BURST} change frames"));
    g.sample_size(20);
    g.bench_function("bare: serde_json::Value parse of the frames", |b| {
        b.iter(|| {
            for f in &frames {
                std::hint::black_box(serde_json::from_str::<serde_json::Value>(f).unwrap());
            }
        })
    });
    for idle in [0usize, 1000] {
        let (burst_tx, burst_rx) = std::sync::mpsc::channel();
        let url = null_server(burst_rx);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (client, mut events, _idle_streams) = rt.block_on(async {
            let client = KalamLinkClient::builder()
                .base_url(url)
                .auth(AuthProvider::jwt_token("eyJ.bench.sig".into()))
                .connection_options(ConnectionOptions::default().with_subscription_buffer(BURST * 2))
                .build()
                .unwrap();
            let events = client
                .live_events_with("SELECT * FROM bench.items", None)
                .await
                .unwrap();
            let mut idle_streams = Vec::new();
            for i in 0..idle {
                idle_streams.push(
                    client
                        .live_events_with(&format!("SELECT * FROM bench.idle{i}"), None)
                        .await
                        .unwrap(),
                );
            }
            (client, events, idle_streams)
        });
        g.bench_function(format!("client: LiveEvents, {idle} idle subscriptions beside"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        burst_tx.send(()).unwrap();
                        let mut n = 0;
                        while n < BURST {
                            if let Some(Ok(LiveEvent::Insert { .. })) = events.next().await {
                                n += 1;
                            }
                        }
                    }
                    start.elapsed()
                })
            })
        });
        drop(client);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
