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
