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

/// Where the caller runs: the three ways an async-std or smol application
/// awaits the client.
#[derive(Clone, Copy)]
enum Caller {
    /// `async_std::task::block_on` (what `#[async_std::main]` expands to).
    BlockOn,
    /// A task spawned on async-std's executor, awaited from `block_on`.
    Task,
    /// `smol::block_on`.
    Smol,
}

impl Caller {
    fn name(self) -> &'static str {
        match self {
            Caller::BlockOn => "block_on",
            Caller::Task => "a task",
            Caller::Smol => "smol::block_on",
        }
    }

    /// Runs `iters` rounds of `one` from this caller and times them.
    fn timed<F>(self, iters: u64, one: impl FnMut() -> F + Send + 'static) -> Duration
    where
        F: std::future::Future<Output = ()> + Send,
    {
        let rounds = async move {
            let mut one = one;
            let start = Instant::now();
            for _ in 0..iters {
                one().await;
            }
            start.elapsed()
        };
        match self {
            Caller::BlockOn => async_std::task::block_on(rounds),
            Caller::Task => async_std::task::block_on(async_std::task::spawn(rounds)),
            Caller::Smol => smol::block_on(rounds),
        }
    }
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
    for caller in [Caller::BlockOn, Caller::Task, Caller::Smol] {
        let at = caller.name();
        g.bench_function(format!("bare async-h1 + serde_json, one at a time, from {at}"), |b| {
            b.iter_custom(|iters| {
                let bare = bare.clone();
                caller.timed(iters, move || {
                    let bare = bare.clone();
                    async move { bare.query().await }
                })
            })
        });
        g.bench_function(
            format!("KalamLinkClient::execute_query, one at a time, from {at}"),
            |b| {
                b.iter_custom(|iters| {
                    let client = client.clone();
                    caller.timed(iters, move || {
                        let client = client.clone();
                        async move {
                            client.execute_query(SQL).await.unwrap();
                        }
                    })
                })
            },
        );
        // 64 queries at once in the caller's own future (no task each).
        g.bench_function(format!("bare async-h1 + serde_json, 64 in flight, from {at}"), |b| {
            b.iter_custom(|iters| {
                let bare = bare.clone();
                caller.timed(iters, move || {
                    let bare = bare.clone();
                    async move {
                        futures_util::future::join_all((0..64).map(|_| bare.query())).await;
                    }
                })
            })
        });
        g.bench_function(
            format!("KalamLinkClient::execute_query, 64 in flight, from {at}"),
            |b| {
                b.iter_custom(|iters| {
                    let client = client.clone();
                    caller.timed(iters, move || {
                        let client = client.clone();
                        async move {
                            let all = futures_util::future::join_all((0..64).map(|_| client.execute_query(SQL))).await;
                            assert!(all.iter().all(|r| r.is_ok()));
                        }
                    })
                })
            },
        );
    }
    g.finish();
    drop(client);
    let _ = stop_tx.send(());
    server_thread.join().unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
