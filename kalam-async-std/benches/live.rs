//! The live path on async-std against its bare limit, in one run: the same
//! null WebSocket server and burst as `kalam-tokio/benches/live.rs` (whose
//! `support` module this includes), received by
//! - the bare limit: async-tungstenite over an async-std TCP stream,
//!   parsing each frame into a `serde_json::Value`;
//! - the client: `LiveEvents`, with one subscription on the socket and
//!   with 1000 more idle ones.
//!
//! Heap figures from a counting allocator are printed first.

#[path = "../../kalam-tokio/benches/support/mod.rs"]
mod support;

use std::time::Instant;

use async_std::task::block_on;
use criterion::{Criterion, criterion_group, criterion_main};
use kalam_async_std::{AuthProvider, ConnectionOptions, KalamLinkClient, LiveEvent, LiveEvents};
use support::{BURST, Counting, bare_burst, null_server};

#[global_allocator]
static ALLOC: Counting = Counting;

const IDLE: usize = 1000;

async fn client_burst(events: &mut LiveEvents) {
    let mut n = 0;
    while n < BURST {
        if let Some(Ok(LiveEvent::Insert { .. })) = events.next().await {
            n += 1;
        }
    }
}

fn heap_per_event(mut burst: impl FnMut()) -> u64 {
    (0..5)
        .map(|_| {
            let before = Counting::allocated();
            burst();
            (Counting::allocated() - before) / BURST as u64
        })
        .min()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let (url, bare_trigger) = null_server();
    let ws_url = url.replacen("http", "ws", 1);
    let mut bare = block_on(async {
        let tcp = async_std::net::TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .unwrap();
        async_tungstenite::client_async(ws_url, tcp).await.unwrap().0
    });

    let mut clients = Vec::new();
    let mut idle_heap = 0;
    for idle in [0, IDLE] {
        let (url, trigger) = null_server();
        let (client, events, idle_streams) = block_on(async {
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
            let mut idle_streams = Vec::with_capacity(idle);
            let before = Counting::live();
            for i in 0..idle {
                let sql = format!("SELECT * FROM bench.idle{i}");
                let mut stream = client.live_events_with(&sql, None).await.unwrap();
                for _ in 0..2 {
                    stream.next().await.unwrap().unwrap();
                }
                idle_streams.push(stream);
            }
            if idle > 0 {
                idle_heap = (Counting::live() - before) / idle as i64;
            }
            (client, events, idle_streams)
        });
        clients.push((idle, client, events, idle_streams, trigger));
    }

    let bare_heap = heap_per_event(|| {
        bare_trigger.send(()).unwrap();
        block_on(bare_burst(&mut bare));
    });
    println!("heap (async-std): bare limit {bare_heap} bytes allocated per event");
    for (idle, _, events, _, trigger) in &mut clients {
        let heap = heap_per_event(|| {
            trigger.send(()).unwrap();
            block_on(client_burst(events));
        });
        println!(
            "heap (async-std): client, {idle} idle subscriptions: {heap} bytes allocated per event ({:.2}x the bare limit)",
            heap as f64 / bare_heap as f64
        );
    }
    println!("heap (async-std): {idle_heap} live bytes per idle subscription ({IDLE} of them)");

    let mut g = c.benchmark_group(format!("live (async-std): a burst of {BURST} change frames"));
    g.sample_size(20);
    g.bench_function("bare: async-tungstenite + serde_json::Value", |b| {
        b.iter_custom(|iters| {
            block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    bare_trigger.send(()).unwrap();
                    bare_burst(&mut bare).await;
                }
                start.elapsed()
            })
        })
    });
    for (idle, _, events, _, trigger) in &mut clients {
        g.bench_function(format!("client: LiveEvents, {idle} idle subscriptions beside"), |b| {
            b.iter_custom(|iters| {
                block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        trigger.send(()).unwrap();
                        client_burst(events).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
