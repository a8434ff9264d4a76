//! # kalam-bench: what the adapters' live benchmarks share
//!
//! Used by `kalam-tokio/benches/live.rs`, `kalam-async-std/benches/live.rs`
//! and `kalam-tokio/tests/heap.rs` (not published): a null WebSocket server,
//! the bare limit's client loop, a counting allocator ([`Counting`], which a
//! benchmark installs as its `#[global_allocator]`), and the live benchmark
//! itself ([`live_bench`]), written once over the runtime.
//!
//! The null server runs on a thread and a Tokio runtime of its own, as
//! another process would; its allocations are not counted. It
//! authenticates, acknowledges every subscription, and on each trigger
//! sends a burst of `BURST` change frames from memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::Utf8Bytes;
use futures_util::{SinkExt as _, StreamExt as _};

/// Change frames in one burst.
pub const BURST: usize = 1000;

/// The `i`th change frame of a burst.
pub fn frame(i: usize) -> String {
    format!(
        r#"{{"type":"change","subscription_id":"k1","change_type":"insert","rows":[{{"id":"{i}","name":"item {i}","qty":{i},"price":1.25,"_seq":"{}"}}]}}"#,
        7_212_341_234_000_000u64 + i as u64
    )
}

/// A null server's address (`http://127.0.0.1:port`) and its trigger:
/// each `send(())` makes it send one burst on its connection.
pub fn null_server() -> (String, tokio::sync::mpsc::UnboundedSender<()>) {
    flood_server(vec!["k1".into()], BURST)
}

/// The bare limit's receiving loop: read `BURST` text frames with
/// async-tungstenite and parse each into a `serde_json::Value`.
pub async fn bare_burst<S>(ws: &mut async_tungstenite::WebSocketStream<S>)
where
    S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin,
{
    let mut n = 0;
    while n < BURST {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(v["type"], "change");
            std::hint::black_box(v);
            n += 1;
        }
    }
}

/// Subscriptions beside the measured one in the second client.
pub const IDLE: usize = 1000;

/// How a benchmark runs a future to completion on its runtime.
pub trait BlockOn {
    /// Runs `future` to completion on this runtime.
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output;
}

/// The client's receiving loop: `BURST` inserts through `LiveEvents`.
pub async fn client_burst(events: &mut kalam_driver::LiveEvents) {
    let mut n = 0;
    while n < BURST {
        if let Some(Ok(kalam_driver::prelude::LiveEvent::Insert { .. })) = events.next().await {
            n += 1;
        }
    }
}

/// A change frame's row, as an application's own type.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
pub struct Item {
    id: i64,
    name: String,
    qty: i64,
    price: f64,
}

/// The client's receiving loop with typed rows: `BURST` inserts through
/// `LiveEventsAs<Item>`.
pub async fn typed_burst(events: &mut kalam_driver::LiveEventsAs<Item>) {
    let mut n = 0;
    while n < BURST {
        if let Some(Ok(kalam_driver::prelude::TypedLiveEvent::Insert { row })) = events.next().await {
            std::hint::black_box(row);
            n += 1;
        }
    }
}

/// A client of the null server at `url`, and the subscription a live
/// benchmark measures (changes only, a buffer of two bursts).
async fn measured_subscription<R: kalam_driver::Runtime>(
    url: String,
) -> (kalam_driver::KalamLinkClient<R>, kalam_driver::LiveEvents) {
    use kalam_driver::prelude::{AuthProvider, ConnectionOptions};
    let client = kalam_driver::KalamLinkClient::<R>::builder()
        .base_url(url)
        .auth(AuthProvider::jwt_token("eyJ.bench.sig".into()))
        .connection_options(ConnectionOptions::default().with_subscription_buffer(BURST * 2))
        .build()
        .unwrap();
    let events = client
        .live_events_with("SELECT * FROM bench.items", None)
        .await
        .unwrap();
    (client, events)
}

/// The smallest number of bytes allocated per event over a few bursts.
pub fn heap_per_event(mut burst: impl FnMut()) -> u64 {
    (0..5)
        .map(|_| {
            let before = Counting::allocated();
            burst();
            (Counting::allocated() - before) / BURST as u64
        })
        .min()
        .unwrap()
}

/// The live benchmark on runtime `R` (named `name` in the output): heap
/// figures first (bytes allocated per event, client and bare; live bytes
/// per idle subscription, one the application has read `Subscribed` and
/// `Ready` of — the `LiveEvents` handles themselves are in a vector
/// allocated beforehand, so not counted), then the timings of the bare
/// limit `bare` (on the null server `bare_trigger` drives) and of the
/// client with one subscription and with `IDLE` more idle ones.
pub fn live_bench<R, S>(
    c: &mut criterion::Criterion,
    name: &str,
    exec: &impl BlockOn,
    mut bare: async_tungstenite::WebSocketStream<S>,
    bare_trigger: tokio::sync::mpsc::UnboundedSender<()>,
) where
    R: kalam_driver::Runtime,
    S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin,
{
    let mut clients = Vec::new();
    let mut idle_heap = 0;
    for idle in [0, IDLE] {
        let (url, trigger) = null_server();
        let (client, events, idle_streams) = exec.block_on(async {
            let (client, events) = measured_subscription::<R>(url).await;
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

    let (url, typed_trigger) = null_server();
    let (_typed_client, mut typed) = exec.block_on(async {
        let (client, events) = measured_subscription::<R>(url).await;
        (client, events.into_typed::<Item>())
    });

    let bare_heap = heap_per_event(|| {
        bare_trigger.send(()).unwrap();
        exec.block_on(bare_burst(&mut bare));
    });
    println!("heap ({name}): bare limit {bare_heap} bytes allocated per event");
    for (idle, _, events, _, trigger) in &mut clients {
        let heap = heap_per_event(|| {
            trigger.send(()).unwrap();
            exec.block_on(client_burst(events));
        });
        println!(
            "heap ({name}): client, {idle} idle subscriptions: {heap} bytes allocated per event ({:.2}x the bare limit)",
            heap as f64 / bare_heap as f64
        );
    }
    let heap = heap_per_event(|| {
        typed_trigger.send(()).unwrap();
        exec.block_on(typed_burst(&mut typed));
    });
    println!(
        "heap ({name}): client, typed rows (LiveEventsAs<Item>): {heap} bytes allocated per event ({:.2}x the bare limit)",
        heap as f64 / bare_heap as f64
    );
    println!("heap ({name}): {idle_heap} live bytes per idle subscription ({IDLE} of them)");

    let mut g = c.benchmark_group(format!("live ({name}): a burst of {BURST} change frames"));
    g.sample_size(20);
    g.bench_function("bare: async-tungstenite + serde_json::Value", |b| {
        b.iter_custom(|iters| {
            exec.block_on(async {
                let start = std::time::Instant::now();
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
                exec.block_on(async {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        trigger.send(()).unwrap();
                        client_burst(events).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.bench_function("client: LiveEventsAs<Item> (typed rows)", |b| {
        b.iter_custom(|iters| {
            exec.block_on(async {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    typed_trigger.send(()).unwrap();
                    typed_burst(&mut typed).await;
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

thread_local! {
    static NOT_COUNTED: Cell<bool> = const { Cell::new(false) };
}

static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

/// A global allocator that counts the bytes allocated (in total, and live
/// now) by every thread but the null server's.
pub struct Counting;

impl Counting {
    /// Bytes allocated so far.
    pub fn allocated() -> u64 {
        ALLOCATED.load(Ordering::Relaxed)
    }
    /// Bytes allocated and not yet freed.
    pub fn live() -> i64 {
        LIVE.load(Ordering::Relaxed)
    }
}

fn counted() -> bool {
    NOT_COUNTED.try_with(|c| !c.get()).unwrap_or(false)
}

// SAFETY: every call goes straight to `System`; only counters are added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            ALLOCATED.fetch_add(new_size as u64, Ordering::Relaxed);
            LIVE.fetch_add(new_size as i64, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// A null server that, on each trigger, sends `per_burst` change frames for
/// each subscription in `ids` (`k1`, `k2`, … as the client names them),
/// interleaved. Answers authenticate and every subscribe like
/// [`null_server`]. For the tests of a burst far larger than a subscriber's
/// queue.
pub fn flood_server(ids: Vec<String>, per_burst: usize) -> (String, tokio::sync::mpsc::UnboundedSender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (burst_tx, mut bursts) = tokio::sync::mpsc::unbounded_channel::<()>();
    std::thread::spawn(move || {
        NOT_COUNTED.with(|c| c.set(true));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx
                .send(format!("http://{}", listener.local_addr().unwrap()))
                .unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut ws) = async_tungstenite::tokio::accept_async(tcp).await else {
                return;
            };
            let frames: Vec<Utf8Bytes> = (0..per_burst)
                .flat_map(|i| ids.iter().map(move |id| frame(i).replace("\"k1\"", &format!("\"{id}\""))))
                .map(Into::into)
                .collect();
            loop {
                tokio::select! {
                    next = ws.next() => match next {
                        Some(Ok(Message::Text(t))) => {
                            let t = t.as_str();
                            let answer = if t.contains("authenticate") {
                                r#"{"type":"auth_success","user":"root","role":"system"}"#.to_owned()
                            } else if let Some(id) = t.split("\"id\":\"").nth(1).and_then(|r| r.split('"').next()) {
                                format!(
                                    r#"{{"type":"subscription_ack","subscription_id":"{id}","total_rows":0,"batch_control":{{"batch_num":0,"has_more":false,"status":"ready","last_seq_id":null}},"schema":[{{"name":"id","data_type":"BigInt","index":0,"flags":["pk"]}}]}}"#
                                )
                            } else {
                                continue;
                            };
                            if ws.send(Message::Text(answer.into())).await.is_err() {
                                return;
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    burst = bursts.recv() => {
                        if burst.is_none() {
                            return;
                        }
                        for f in &frames {
                            if ws.feed(Message::Text(f.clone())).await.is_err() {
                                return;
                            }
                        }
                        if ws.flush().await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    });
    (addr_rx.recv().unwrap(), burst_tx)
}

/// A burst of `bursts` × `per_burst` change frames to one subscription
/// whose consumer only counts them, on the default queue (1024 events):
/// how many arrived before the stream ended, and how it ended.
pub async fn count_a_flood<R: kalam_driver::Runtime>(
    bursts: usize,
    per_burst: usize,
) -> (usize, Option<kalam_driver::prelude::Error>) {
    use kalam_driver::prelude::{AuthProvider, ConnectionOptions, LiveEvent};
    let (url, trigger) = flood_server(vec!["k1".into()], per_burst);
    // The null server floods at several hundred thousand frames a second:
    // with the default buffer (1,024 events, about 3 ms of that flood) a
    // consumer the OS deschedules for a few milliseconds on a busy machine
    // would fall behind however fast it reads. 16,384 events absorb such a
    // pause; a consumer that does not keep up still overflows it.
    let client = kalam_driver::KalamLinkClient::<R>::builder()
        .base_url(url)
        .auth(AuthProvider::jwt_token("eyJ.flood.sig".into()))
        .connection_options(ConnectionOptions::default().with_subscription_buffer(16_384))
        .build()
        .unwrap();
    let mut events = client
        .live_events_with("SELECT * FROM flood.items", None)
        .await
        .unwrap();
    for _ in 0..bursts {
        trigger.send(()).unwrap();
    }
    let want = bursts * per_burst;
    let mut n = 0;
    while n < want {
        match events.next().await {
            Some(Ok(LiveEvent::Insert { .. })) => n += 1,
            Some(Ok(_)) => {}
            Some(Err(e)) => return (n, Some(e)),
            None => return (n, None),
        }
    }
    (n, None)
}

/// Two subscriptions flooded alike: one whose consumer never reads, one
/// that counts. The sleeper must end lagging; the counter must get every
/// frame. Returns (frames counted, how the sleeper ended).
pub async fn flood_beside_a_sleeper<R: kalam_driver::Runtime>(
    per_burst: usize,
) -> (usize, Option<kalam_driver::prelude::Error>) {
    use kalam_driver::prelude::{AuthProvider, LiveEvent};
    let (url, trigger) = flood_server(vec!["k1".into(), "k2".into()], per_burst);
    let client = kalam_driver::KalamLinkClient::<R>::builder()
        .base_url(url)
        .auth(AuthProvider::jwt_token("eyJ.flood.sig".into()))
        .build()
        .unwrap();
    let mut sleeper = client.live_events_with("SELECT * FROM flood.a", None).await.unwrap();
    let mut counter = client.live_events_with("SELECT * FROM flood.b", None).await.unwrap();
    trigger.send(()).unwrap();
    let mut n = 0;
    while n < per_burst {
        match counter.next().await {
            Some(Ok(LiveEvent::Insert { .. })) => n += 1,
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    let mut end = None;
    while let Some(item) = sleeper.next().await {
        if let Err(e) = item {
            end = Some(e);
            break;
        }
    }
    (n, end)
}
