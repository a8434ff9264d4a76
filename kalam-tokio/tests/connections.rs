//! One client never opens more connections than `http_max_connections`,
//! however many queries its application starts at once, and warm traffic
//! within that number opens none.

use std::time::Duration;

use kalam_testkit::{FaultProxy, TestServer};
use kalam_tokio::{AuthProvider, ConnectionOptions, KalamLinkClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queries_share_a_bounded_set_of_connections() {
    let server = TestServer::start().await;
    let proxy = FaultProxy::start(&server.url()).await.unwrap();
    // Answers take a while, so the queries really overlap.
    proxy.set_latency(Duration::from_millis(20));
    let client = KalamLinkClient::builder()
        .base_url(proxy.url())
        .auth(AuthProvider::system_user_auth(server.root_password().into()))
        .connection_options(ConnectionOptions::default().with_http_max_connections(16))
        .build()
        .unwrap();
    let burst = |n: usize| {
        let client = client.clone();
        async move {
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    let client = client.clone();
                    tokio::spawn(async move { client.execute_query(&format!("SELECT {i}")).await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        }
    };
    burst(300).await;
    let after_first = proxy.connections();
    assert!(after_first <= 16, "{after_first} connections for 300 queries, cap 16");
    burst(16).await;
    assert_eq!(
        proxy.connections(),
        after_first,
        "warm traffic within the cap opens no connection"
    );
    server.shutdown().await;
}

/// 1000 queries queued behind the cap when the server rejects the (not yet
/// expired by `exp`) token: one refresh, each query re-sent at most once,
/// and no connection beyond the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_under_a_burst_costs_one_refresh_and_no_connection_storm() {
    const QUERIES: usize = 1000;
    const CAP: usize = 64;
    let server = TestServer::start().await;
    let proxy = FaultProxy::start(&server.url()).await.unwrap();
    let client = KalamLinkClient::builder()
        .base_url(proxy.url())
        .auth(AuthProvider::system_user_auth(server.root_password().into()))
        .build()
        .unwrap();
    client.execute_query("SELECT 0").await.unwrap();
    // A second round: the token the first recovery got is rejected too.
    for round in 0..6 {
        let (logins, refreshes) = (server.counters().logins, server.counters().refreshes);
        let (sql_before, requests_before) = (proxy.count("/v1/api/sql"), proxy.requests().len());
        // The token's `exp` is hours away, but the server now refuses it.
        server.force_expire_all();
        let tasks: Vec<_> = (0..QUERIES)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { client.execute_query(&format!("SELECT {i}")).await })
            })
            .collect();
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                panic!("round {round}: {e:?}");
            }
        }
        let c = server.counters();
        assert_eq!(
            (c.logins - logins) + (c.refreshes - refreshes),
            1,
            "one recovery for the whole burst: {c:?}"
        );
        let sql = proxy.count("/v1/api/sql") - sql_before;
        // Each query once, and again only if it was in flight when the
        // rejection came (at most the cap).
        assert!(
            (QUERIES..=QUERIES + CAP).contains(&sql),
            "{sql} SQL requests for {QUERIES} queries"
        );
        let requests = proxy.requests().len() - requests_before;
        assert!(requests <= 1100, "{requests} HTTP requests in all");
        let connections = proxy.connections();
        println!("{sql} SQL requests, {requests} HTTP requests in all, {connections} TCP connections");
        assert!(connections <= CAP, "{connections} TCP connections, cap {CAP}");
    }
    server.shutdown().await;
}
