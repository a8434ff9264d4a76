//! How long a test server takes to start (bind, SQLite, root's bcrypt hash)
//! and to stop. The target is "well under 100 ms", so every test can have
//! its own server.

use criterion::{Criterion, criterion_group, criterion_main};
use kalam_testkit::TestServer;

fn startup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    c.bench_function("TestServer::start + shutdown", |b| {
        b.to_async(&rt).iter(|| async {
            let server = TestServer::start().await;
            server.shutdown().await;
        })
    });
}

criterion_group!(benches, startup);
criterion_main!(benches);
