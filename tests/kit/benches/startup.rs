//! How long a test server takes to start (bind, SQLite, root's bcrypt hash)
//! and to stop, and how long a first request takes. The target is "well
//! under 100 ms" to start, so every test can have its own server. (These
//! are figures, so they live here, not in the tests: a test asserting on
//! the wall clock fails on a busy machine.)

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use kalam_testkit::TestServer;

fn startup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    c.bench_function("TestServer::start", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let server = TestServer::start().await;
                total += t.elapsed();
                server.shutdown().await;
            }
            total
        })
    });
    c.bench_function("TestServer::start + shutdown", |b| {
        b.to_async(&rt).iter(|| async {
            let server = TestServer::start().await;
            server.shutdown().await;
        })
    });
    c.bench_function("TestServer::start + first GET /health", |b| {
        b.to_async(&rt).iter(|| async {
            let server = TestServer::start().await;
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<Bytes>>();
            let uri = format!("{}/health", server.url()).parse().unwrap();
            let resp = client.get(uri).await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap();
            server.shutdown().await;
        })
    });
}

criterion_group!(benches, startup);
criterion_main!(benches);
