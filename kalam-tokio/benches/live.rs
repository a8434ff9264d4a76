//! The live path's cost against its bare limit, in one run: a null
//! WebSocket server (on its own thread and runtime) sends a burst of
//! `BURST` change frames from memory, and the time until the last one is
//! read is measured for
//! - the bare limit: an async-tungstenite client on its own connection to
//!   a null server, parsing each frame into a `serde_json::Value`;
//! - the client: the same burst through `LiveEvents`, with one
//!   subscription on the socket and with 1000 more idle ones.
//!
//! Before the timings it prints heap figures from a counting allocator:
//! bytes allocated per event (client and bare) and live bytes per idle
//! subscription (one the application has read `Subscribed` and `Ready`
//! of; the `LiveEvents` handles themselves are in a vector allocated
//! beforehand, so not counted).

mod support;

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use kalam_tokio::{AuthProvider, ConnectionOptions, KalamLinkClient, LiveEvent, LiveEvents};
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

/// The smallest number of bytes allocated per event over a few bursts.
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let (url, bare_trigger) = null_server();
    let ws_url = url.replacen("http", "ws", 1);
    let mut bare = rt.block_on(async { async_tungstenite::tokio::connect_async(ws_url).await.unwrap().0 });

    let mut clients = Vec::new();
    let mut idle_heap = 0;
    for idle in [0, IDLE] {
        let (url, trigger) = null_server();
        let (client, events, idle_streams) = rt.block_on(async {
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
                // What the application reads of a subscription that
                // then stays idle: `Subscribed` and `Ready`.
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
        rt.block_on(bare_burst(&mut bare));
    });
    println!("heap: bare limit {bare_heap} bytes allocated per event");
    for (idle, _, events, _, trigger) in &mut clients {
        let heap = heap_per_event(|| {
            trigger.send(()).unwrap();
            rt.block_on(client_burst(events));
        });
        println!(
            "heap: client, {idle} idle subscriptions: {heap} bytes allocated per event ({:.2}x the bare limit)",
            heap as f64 / bare_heap as f64
        );
    }
    println!("heap: {idle_heap} live bytes per idle subscription ({IDLE} of them)");

    let mut g = c.benchmark_group(format!("live (tokio): a burst of {BURST} change frames"));
    g.sample_size(20);
    g.bench_function("bare: async-tungstenite + serde_json::Value", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
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
                rt.block_on(async {
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
