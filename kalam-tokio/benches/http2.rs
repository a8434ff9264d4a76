//! HTTP/1.1 against HTTP/2, in the same run: `SELECT 1` through
//! `KalamLinkClient::execute_query` against the in-process server, one at a
//! time, 64 in flight and 1,000 in flight (the in-flight cap is the
//! default 64 in every case); then, untimed, the connections each version
//! opens for 1,000 queries at once (counted by a fault proxy in front).
//! The same against a null server (a fixed answer, at once), which leaves
//! the client and the protocol. Needs the `http2` feature:
//! `cargo bench -p kalam-tokio --features http2 --bench http2`.

use criterion::{Criterion, criterion_group, criterion_main};
use kalam_testkit::{Mint, TestServer};
use kalam_tokio::{AuthProvider, HttpVersion, KalamLinkClient};

const SQL: &str = "SELECT 1";

fn bench(c: &mut Criterion) {
    // The server on a thread and runtime of its own; the clients on one
    // current-thread runtime.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let server = TestServer::start().await;
            // One counting proxy per version, to count its connections.
            let h1 = kalam_testkit::FaultProxy::start(&server.url()).await.unwrap();
            let h2 = kalam_testkit::FaultProxy::start(&server.url()).await.unwrap();
            tx.send((
                server.url(),
                [h1.url(), h2.url()],
                server.mint_token(Mint::access("root").expires_in(86_400)),
            ))
            .unwrap();
            let _ = stop_rx.await;
            let connections = (h1.connections(), h2.connections());
            drop((h1, h2));
            server.shutdown().await;
            connections
        })
    });
    let (url, [h1_url, h2_url], token) = rx.recv().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = |url: &str, version| {
        rt.block_on(async {
            KalamLinkClient::builder()
                .base_url(url)
                .auth(AuthProvider::jwt_token(token.clone()))
                .http_version(version)
                .build()
                .unwrap()
        })
    };
    // Timed straight to the server (the counting proxy's relay would
    // weigh on HTTP/2's many small frames more than on HTTP/1.1).
    let versions = [
        ("HTTP/1.1", client(&url, HttpVersion::Http1)),
        ("HTTP/2", client(&url, HttpVersion::Http2)),
    ];

    let mut g = c.benchmark_group("SELECT 1, HTTP/1.1 against HTTP/2");
    g.sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    for (name, client) in &versions {
        g.bench_function(format!("{name}, one at a time"), |b| {
            b.to_async(&rt)
                .iter(|| async { client.execute_query(SQL).await.unwrap() })
        });
    }
    for n in [64usize, 1000] {
        for (name, client) in &versions {
            g.bench_function(format!("{name}, {n} in flight"), |b| {
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
    }
    g.finish();
    drop(versions);
    // Untimed: 1,000 queries at once through each version's counting proxy.
    for (proxy_url, version) in [(&h1_url, HttpVersion::Http1), (&h2_url, HttpVersion::Http2)] {
        let client = client(proxy_url, version);
        rt.block_on(async {
            let tasks: Vec<_> = (0..1000)
                .map(|_| {
                    let c = client.clone();
                    tokio::spawn(async move { c.execute_query(SQL).await.unwrap() })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
    }
    let _ = stop_tx.send(());
    let (h1, h2) = server_thread.join().unwrap();
    println!("connections opened for 1,000 queries at once: HTTP/1.1 {h1}, HTTP/2 {h2}");
}

/// A server that answers every request at once with the same `SELECT 1`
/// answer (HTTP/1.1 and HTTP/2 on one port): what is left is the client
/// and the protocol.
async fn null_server() -> String {
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    const ANSWER: &str = r#"{"status":"success","results":[{"schema":[{"name":"1","data_type":"BigInt","index":0}],"rows":[["1"]],"row_count":1}],"took":0.1}"#;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: hyper::Request<Incoming>| async {
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(ANSWER.as_bytes())))
                            .unwrap(),
                    )
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

fn bench_null(c: &mut Criterion) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let kit = TestServer::start().await; // only to mint a token the client takes
            tx.send((
                null_server().await,
                kit.mint_token(Mint::access("root").expires_in(86_400)),
            ))
            .unwrap();
            std::future::pending::<()>().await;
        });
    });
    let (url, token) = rx.recv().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = |version| {
        rt.block_on(async {
            KalamLinkClient::builder()
                .base_url(url.clone())
                .auth(AuthProvider::jwt_token(token.clone()))
                .http_version(version)
                .build()
                .unwrap()
        })
    };
    let versions = [
        ("HTTP/1.1", client(HttpVersion::Http1)),
        ("HTTP/2", client(HttpVersion::Http2)),
    ];
    let mut g = c.benchmark_group("SELECT 1 against a null server, HTTP/1.1 against HTTP/2");
    g.sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    for (name, client) in &versions {
        g.bench_function(format!("{name}, one at a time"), |b| {
            b.to_async(&rt)
                .iter(|| async { client.execute_query(SQL).await.unwrap() })
        });
    }
    for n in [64usize, 1000] {
        for (name, client) in &versions {
            g.bench_function(format!("{name}, {n} in flight"), |b| {
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
    }
    g.finish();
}

criterion_group!(benches, bench, bench_null);
criterion_main!(benches);
