//! The live path on async-std against its bare limit, in one run: the same
//! null WebSocket server and burst as `kalam-tokio/benches/live.rs` (both
//! from the `kalam-bench` crate, with the benchmark itself), received by
//! - the bare limit: async-tungstenite over an async-std TCP stream,
//!   parsing each frame into a `serde_json::Value`;
//! - the client: `LiveEvents`, with one subscription on the socket and
//!   with 1000 more idle ones.
//!
//! Heap figures from a counting allocator are printed first.

use criterion::{Criterion, criterion_group, criterion_main};
use kalam_async_std::rt::AsyncStd;
use kalam_bench::{BlockOn, Counting, live_bench, null_server};

#[global_allocator]
static ALLOC: Counting = Counting;

struct OnAsyncStd;

impl BlockOn for OnAsyncStd {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        async_std::task::block_on(future)
    }
}

fn bench(c: &mut Criterion) {
    let (url, bare_trigger) = null_server();
    let ws_url = url.replacen("http", "ws", 1);
    let bare = OnAsyncStd.block_on(async {
        let tcp = async_std::net::TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .unwrap();
        async_tungstenite::client_async(ws_url, tcp).await.unwrap().0
    });
    live_bench::<AsyncStd, _>(c, "async-std", &OnAsyncStd, bare, bare_trigger);
}

criterion_group!(benches, bench);
criterion_main!(benches);
