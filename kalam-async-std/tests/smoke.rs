//! The async-std client end to end against the test kit (which runs on a
//! Tokio runtime of its own, as another process would): a query and a live
//! subscription, driven from async-std and from smol.

use std::time::Duration;

use kalam_async_std::{AuthProvider, KalamLinkClient, LiveEvent};
use kalam_testkit::TestServer;

/// The kit on its own runtime; dropped with the test.
fn kit() -> (tokio::runtime::Runtime, TestServer) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(TestServer::start());
    (rt, server)
}

async fn query_and_live(url: String, password: String) {
    let client = KalamLinkClient::builder()
        .base_url(url)
        .auth(AuthProvider::system_user_auth(password))
        .build()
        .unwrap();
    let r = client.execute_query("SELECT 1 AS one").await.unwrap();
    assert_eq!(r.rows().count(), 1);
    client
        .execute_query("CREATE NAMESPACE IF NOT EXISTS smoke")
        .await
        .unwrap();
    client
        .execute_query("CREATE TABLE IF NOT EXISTS smoke.items (id BIGINT PRIMARY KEY, name TEXT)")
        .await
        .unwrap();
    // Returns after the server's acknowledgement: the insert below is
    // delivered as an insert.
    let mut events = client
        .live_events_with("SELECT * FROM smoke.items", None)
        .await
        .unwrap();
    client
        .execute_query("INSERT INTO smoke.items (id, name) VALUES (1, 'héllo')")
        .await
        .unwrap();
    let inserted = async {
        while let Some(e) = events.next().await {
            if let LiveEvent::Insert { row } = e.unwrap() {
                return row;
            }
        }
        panic!("the stream ended")
    };
    let row = async_std::future::timeout(Duration::from_secs(20), inserted)
        .await
        .expect("the insert arrives");
    assert_eq!(row["name"], "héllo");
}

#[test]
fn query_and_live_on_async_std() {
    let (rt, server) = kit();
    async_std::task::block_on(query_and_live(server.url(), server.root_password().to_owned()));
    rt.block_on(server.shutdown());
}

#[test]
fn query_and_live_from_smol() {
    let (rt, server) = kit();
    smol::block_on(query_and_live(server.url(), server.root_password().to_owned()));
    rt.block_on(server.shutdown());
}

/// HTTP/2 is Tokio's (hyper's) only: asking for it here is a typed error
/// when the client is built, never a silent HTTP/1.1.
#[test]
fn http2_is_refused_with_a_typed_error() {
    let built = KalamLinkClient::builder()
        .base_url("http://127.0.0.1:2900")
        .http_version(kalam_async_std::HttpVersion::Http2)
        .build();
    match built {
        Err(kalam_async_std::Error::InvalidConfig(why)) => assert!(why.contains("HTTP/2"), "{why}"),
        other => panic!("expected InvalidConfig, got {:?}", other.map(|_| "a client")),
    }
}
