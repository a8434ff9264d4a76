//! The client on async-std against its bare limit, in one run: async-h1
//! posting the same SQL with a pre-built Authorization header on kept-alive
//! connections (one per task in flight) and parsing the answer with
//! serde_json, against the same in-process server (on a thread and a Tokio
//! runtime of its own, as another process would be).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_std::net::TcpStream;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::AsyncReadExt as _;
use kalam_async_std::{AuthProvider, KalamLinkClient};
use kalam_testkit::{Mint, TestServer};

const SQL: &str = "SELECT 1";

/// The bare limit: a stack of kept-alive connections and async-h1.
#[derive(Clone)]
struct Bare {
    addr: String,
    url: http_types::Url,
    auth: String,
    idle: Arc<Mutex<Vec<TcpStream>>>,
}

impl Bare {
    async fn query(&self) {
        let idle = self.idle.lock().unwrap().pop();
        let tcp = match idle {
            Some(tcp) => tcp,
            None => {
                let tcp = TcpStream::connect(&self.addr).await.unwrap();
                // As the client does: async-h1 writes head and body apart.
                tcp.set_nodelay(true).unwrap();
                tcp
            }
        };
        let mut req = http_types::Request::new(http_types::Method::Post, self.url.clone());
        req.insert_header("content-type", "application/json");
        req.insert_header("authorization", self.auth.as_str());
        req.set_body(format!(r#"{{"sql":"{SQL}"}}"#));
        let mut encoder = async_h1::client::Encoder::new(req);
        futures_util::io::copy(&mut encoder, &mut tcp.clone()).await.unwrap();
        let mut resp = async_h1::client::decode(tcp.clone()).await.unwrap();
        let mut body = Vec::new();
        resp.take_body().read_to_end(&mut body).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "success");
        self.idle.lock().unwrap().push(tcp);
    }
}

fn timed<F: std::future::Future<Output = ()>>(iters: u64, mut one: impl FnMut() -> F) -> Duration {
    async_std::task::block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            one().await;
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
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
    let client = KalamLinkClient::builder()
        .base_url(url.clone())
        .auth(AuthProvider::jwt_token(token.clone()))
        .build()
        .unwrap();
    let bare = Bare {
        addr: url.trim_start_matches("http://").to_owned(),
        url: format!("{url}/v1/api/sql").parse().unwrap(),
        auth: format!("Bearer {token}"),
        idle: Arc::default(),
    };

    let mut g = c.benchmark_group("SELECT 1 on the in-process server (async-std)");
    g.bench_function("bare async-h1 + serde_json, one at a time", |b| {
        b.iter_custom(|iters| timed(iters, || bare.query()))
    });
    g.bench_function("KalamLinkClient::execute_query, one at a time", |b| {
        b.iter_custom(|iters| {
            timed(iters, || async {
                client.execute_query(SQL).await.unwrap();
            })
        })
    });
    // The same loops inside an async-std task (the caller on the
    // executor's threads, beside the client's driver task).
    g.bench_function("bare async-h1 + serde_json, one at a time, in a task", |b| {
        b.iter_custom(|iters| {
            let bare = bare.clone();
            async_std::task::block_on(async_std::task::spawn(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    bare.query().await;
                }
                start.elapsed()
            }))
        })
    });
    g.bench_function("KalamLinkClient::execute_query, one at a time, in a task", |b| {
        b.iter_custom(|iters| {
            let client = client.clone();
            async_std::task::block_on(async_std::task::spawn(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    client.execute_query(SQL).await.unwrap();
                }
                start.elapsed()
            }))
        })
    });
    for n in [32usize, 64] {
        g.bench_function(format!("bare async-h1 + serde_json, {n} in flight"), |b| {
            b.iter_custom(|iters| {
                timed(iters, || async {
                    let tasks: Vec<_> = (0..n)
                        .map(|_| {
                            let bare = bare.clone();
                            async_std::task::spawn(async move { bare.query().await })
                        })
                        .collect();
                    for t in tasks {
                        t.await;
                    }
                })
            })
        });
        g.bench_function(format!("KalamLinkClient::execute_query, {n} in flight"), |b| {
            b.iter_custom(|iters| {
                timed(iters, || async {
                    let tasks: Vec<_> = (0..n)
                        .map(|_| {
                            let c = client.clone();
                            async_std::task::spawn(async move { c.execute_query(SQL).await.unwrap() })
                        })
                        .collect();
                    for t in tasks {
                        t.await;
                    }
                })
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
