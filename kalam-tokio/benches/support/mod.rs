//! What the live benchmarks of both runtimes and the heap test share
//! (`kalam-async-std/benches/live.rs` and `kalam-tokio/tests/heap.rs`
//! include this file): a null WebSocket server, the bare limit's client
//! loop, and a counting allocator.
//!
//! The null server runs on a thread and a Tokio runtime of its own, as
//! another process would; its allocations are not counted. It
//! authenticates, acknowledges every subscription, and on each trigger
//! sends a burst of `BURST` change frames from memory.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::Utf8Bytes;
use futures_util::{SinkExt as _, StreamExt as _};

pub const BURST: usize = 1000;

pub fn frame(i: usize) -> String {
    format!(
        r#"{{"type":"change","subscription_id":"k1","change_type":"insert","rows":[{{"id":"{i}","name":"item {i}","qty":{i},"price":1.25,"_seq":"{}"}}]}}"#,
        7_212_341_234_000_000u64 + i as u64
    )
}

/// A null server's address (`http://127.0.0.1:port`) and its trigger:
/// each `send(())` makes it send one burst on its connection.
pub fn null_server() -> (String, tokio::sync::mpsc::UnboundedSender<()>) {
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
            let mut ws = async_tungstenite::tokio::accept_async(tcp).await.unwrap();
            // Shared bytes: a burst allocates nothing here.
            let frames: Vec<Utf8Bytes> = (0..BURST).map(|i| frame(i).into()).collect();
            loop {
                tokio::select! {
                    next = ws.next() => match next {
                        Some(Ok(Message::Text(t))) => {
                            let t = t.as_str();
                            if t.contains("authenticate") {
                                let ok = r#"{"type":"auth_success","user":"root","role":"system"}"#;
                                ws.send(Message::Text(ok.into())).await.unwrap();
                            } else if let Some(id) = t.split("\"id\":\"").nth(1).and_then(|r| r.split('"').next()) {
                                let ack = format!(
                                    r#"{{"type":"subscription_ack","subscription_id":"{id}","total_rows":0,"batch_control":{{"batch_num":0,"has_more":false,"status":"ready","last_seq_id":null}},"schema":[{{"name":"id","data_type":"BigInt","index":0,"flags":["pk"]}}]}}"#
                                );
                                ws.send(Message::Text(ack.into())).await.unwrap();
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
                            ws.feed(Message::Text(f.clone())).await.unwrap();
                        }
                        ws.flush().await.unwrap();
                    }
                }
            }
        });
    });
    (addr_rx.recv().unwrap(), burst_tx)
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
