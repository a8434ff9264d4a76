//! The client's cost against the bare limit: a pooled hyper client posting
//! the same SQL with a pre-built Authorization header and parsing the answer
//! with serde_json, against the same in-process server. The ratio of the two
//! is the client's overhead (driver task, machine, typed decoding).

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use kalam_testkit::{Mint, TestServer};
use kalam_tokio::{AuthProvider, KalamLinkClient};

const SQL: &str = "SELECT 1";

fn bench(c: &mut Criterion) {
    // The server on a thread and runtime of its own (as another process
    // would be); the clients on one current-thread runtime: a core each.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let server = TestServer::start().await;
            tx.send((server.url(), server.mint_token(Mint::access("root").expires_in(86_400))))
                .unwrap();
            let _ = stop_rx.await;
            server.shutdown().await;
        });
    });
    let (url, token) = rx.recv().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        KalamLinkClient::builder()
            .base_url(url.clone())
            .auth(AuthProvider::jwt_token(token.clone()))
            .build()
            .unwrap()
    });
    let bare = rt.block_on(async {
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http::<Full<Bytes>>()
    });
    let uri: http::Uri = format!("{url}/v1/api/sql").parse().unwrap();
    let auth = http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    let body = Bytes::from(format!(r#"{{"sql":"{SQL}"}}"#));
    let bare_query = {
        let (bare, uri, auth, body) = (bare.clone(), uri.clone(), auth.clone(), body.clone());
        Arc::new(move || {
            let (bare, uri, auth, body) = (bare.clone(), uri.clone(), auth.clone(), body.clone());
            async move {
                let req = http::Request::post(uri)
                    .header("content-type", "application/json")
                    .header("authorization", auth)
                    .body(Full::new(body))
                    .unwrap();
                let resp = bare.request(req).await.unwrap();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(v["status"], "success");
            }
        })
    };

    let mut g = c.benchmark_group("SELECT 1 on the in-process server");
    g.bench_function("bare hyper + serde_json, one at a time", |b| {
        let q = bare_query.clone();
        b.to_async(&rt).iter(|| q())
    });
    g.bench_function("KalamLinkClient::execute_query, one at a time", |b| {
        b.to_async(&rt)
            .iter(|| async { client.execute_query(SQL).await.unwrap() })
    });
    for n in [32usize, 64] {
        g.bench_function(format!("bare hyper + serde_json, {n} in flight"), |b| {
            let q = bare_query.clone();
            b.to_async(&rt).iter(|| {
                let q = q.clone();
                async move {
                    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(q())).collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                }
            })
        });
        g.bench_function(format!("KalamLinkClient::execute_query, {n} in flight"), |b| {
            b.to_async(&rt).iter(|| async {
                let tasks: Vec<_> = (0..n)
                    .map(|_| {
                        let c = client.clone();
                        tokio::spawn(async move { c.execute_query(SQL).await.unwrap() })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        });
    }
    g.finish();
    drop(client);
    let _ = stop_tx.send(());
    server_thread.join().unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
