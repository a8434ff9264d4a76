//! The client's cost against the bare limit: a pooled hyper client posting
//! the same SQL with a pre-built Authorization header and parsing the answer
//! with serde_json, against the same in-process server. The ratio of the two
//! is the client's overhead (driver task, machine, typed decoding).
//!
//! A last group times 1000 queries started at once (queued behind the
//! connection cap) with a fresh token, and the same when the server has
//! just rejected the token (`TOKEN_EXPIRED` with `exp` still in the future):
//! one recovery and the retries are the difference.

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
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Each message makes the server refuse every token issued so far.
    let (expire_tx, mut expire_rx) = tokio::sync::mpsc::unbounded_channel::<std::sync::mpsc::Sender<()>>();
    let server_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let server = TestServer::start().await;
            tx.send((
                server.url(),
                server.mint_token(Mint::access("root").expires_in(86_400)),
                server.root_password().to_owned(),
            ))
            .unwrap();
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    Some(done) = expire_rx.recv() => {
                        server.force_expire_all();
                        let _ = done.send(());
                    }
                }
            }
            server.shutdown().await;
        });
    });
    let (url, token, password) = rx.recv().unwrap();
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

    let mut g = c.benchmark_group("1000 queries started at once");
    // The kit's tokens are a function of their claims, to the second: it
    // moves a new one a second on when it would equal a token it was told
    // to reject, so recoveries are kept a second apart (outside the timed
    // part) lest their tokens drift past the server's 60 s leeway; the
    // fresh-token runs are paced alike.
    g.sample_size(10)
        .sampling_mode(criterion::SamplingMode::Flat)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(1));
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let mut last_recovery = 0;
    let recovering = rt.block_on(async {
        let client = KalamLinkClient::builder()
            .base_url(url.clone())
            .auth(AuthProvider::system_user_auth(password))
            .build()
            .unwrap();
        client.execute_query(SQL).await.unwrap();
        client
    });
    let thousand = |client: KalamLinkClient| async move {
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(async move { c.execute_query(SQL).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    };
    for rejected in [false, true] {
        let name = if rejected {
            "KalamLinkClient, the token rejected by the server (one refresh)"
        } else {
            "KalamLinkClient, a fresh token"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    // Both variants wait alike, so that both start from
                    // connections idle for the same time.
                    while unix() == last_recovery {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    last_recovery = unix();
                    if rejected {
                        let (done_tx, done_rx) = std::sync::mpsc::channel();
                        expire_tx.send(done_tx).unwrap();
                        done_rx.recv().unwrap();
                    }
                    let start = std::time::Instant::now();
                    rt.block_on(thousand(recovering.clone()));
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
    drop(recovering);
    drop(client);
    let _ = stop_tx.send(());
    server_thread.join().unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
