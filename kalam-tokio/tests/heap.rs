//! Heap per idle subscription, counted (no timing): each one is a map entry
//! and a small queue, well under 1 KiB, not a preallocated block. The counting
//! allocator and the null WebSocket server are the live benchmark's
//! (`kalam-bench`).

use kalam_bench::{Counting, null_server};
use kalam_tokio::{AuthProvider, KalamLinkClient};

#[global_allocator]
static ALLOC: Counting = Counting;

/// Within the pacer's first burst, so no subscribe waits for its turn.
const IDLE: usize = 40;

#[tokio::test(flavor = "current_thread")]
async fn an_idle_subscription_costs_under_a_kibibyte() {
    let (url, _trigger) = null_server();
    let client = KalamLinkClient::builder()
        .base_url(url)
        .auth(AuthProvider::jwt_token("eyJ.heap.sig".into()))
        .build()
        .unwrap();
    // The socket, its buffers and the maps' first allocations.
    let mut first = client.live_events_with("SELECT * FROM heap.first", None).await.unwrap();
    for _ in 0..2 {
        first.next().await.unwrap().unwrap();
    }
    let mut streams = Vec::with_capacity(IDLE);
    let before = Counting::live();
    for i in 0..IDLE {
        let mut s = client
            .live_events_with(&format!("SELECT * FROM heap.idle{i}"), None)
            .await
            .unwrap();
        // What the application reads before the subscription goes idle:
        // `Subscribed` and `Ready` (no initial data is asked for, and the
        // null server sends none).
        for _ in 0..2 {
            s.next().await.unwrap().unwrap();
        }
        streams.push(s);
    }
    let per_sub = (Counting::live() - before) / IDLE as i64;
    println!("{per_sub} live bytes per idle subscription");
    // The target is 1 KiB; 498 bytes today (74 of them the opening and
    // last-event times `subscriptions()` reports). Half a KiB keeps the margin
    // from being spent unnoticed (an idle queue keeping its event room
    // alone would add 384 bytes).
    assert!(per_sub <= 512, "{per_sub} bytes per idle subscription");
    drop(streams);
}
