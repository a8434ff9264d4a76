//! The live path's cost against its bare limit, in one run: a null
//! WebSocket server (on its own thread and runtime) sends a burst of
//! `BURST` change frames from memory, and the time until the last one is
//! read is measured for
//! - the bare limit: an async-tungstenite client on its own connection to
//!   a null server, parsing each frame into a `serde_json::Value`;
//! - the client: the same burst through `LiveEvents`, with one
//!   subscription on the socket and with 1000 more idle ones.
//!
//! Before the timings it prints heap figures from a counting allocator
//! (see `kalam_bench::live_bench`, shared with kalam-async-std's bench).

use criterion::{Criterion, criterion_group, criterion_main};
use kalam_bench::{BlockOn, Counting, live_bench, null_server};
use kalam_tokio::rt::Tokio;

#[global_allocator]
static ALLOC: Counting = Counting;

struct OnTokio(tokio::runtime::Runtime);

impl BlockOn for OnTokio {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.0.block_on(future)
    }
}

fn bench(c: &mut Criterion) {
    let rt = OnTokio(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let (url, bare_trigger) = null_server();
    let ws_url = url.replacen("http", "ws", 1);
    let bare = rt.block_on(async { async_tungstenite::tokio::connect_async(ws_url).await.unwrap().0 });
    live_bench::<Tokio, _>(c, "tokio", &rt, bare, bare_trigger);
}

criterion_group!(benches, bench);
criterion_main!(benches);
