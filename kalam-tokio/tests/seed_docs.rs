//! The code of the upstream documentation pages this client follows
//! (../shared/seeds/), with only the crate name changed. If this file
//! compiles, the public API matches the docs' names and signatures.

#![allow(dead_code, unused_variables, clippy::diverging_sub_expression)]

use kalam_tokio as kalam_client;

include!("seed_docs/pages.rs");

#[test]
fn client_is_send_sync_clone_and_debug_hides_secrets() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<kalam_tokio::KalamLinkClient>();
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<kalam_tokio::Error>();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let builder = kalam_tokio::KalamLinkClient::builder().auth(kalam_tokio::AuthProvider::basic_auth(
            "admin".into(),
            "s3cr3t-pw".into(),
        ));
        let shown = format!("{builder:?}");
        assert!(shown.contains("admin") && !shown.contains("s3cr3t-pw"), "{shown}");
        let client = builder.build().unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
    });
}

#[test]
fn build_outside_a_runtime_is_a_typed_error() {
    let r = kalam_tokio::KalamLinkClient::builder().build();
    assert!(matches!(r, Err(kalam_tokio::Error::Runtime(_))), "{r:?}");
}

/// Code written against the official client's builder options and state
/// calls, compiled against this crate.
#[allow(unreachable_code)]
async fn official_client_builder_and_state(id: kalam_tokio::SubId) -> kalam_tokio::Result<()> {
    use kalam_client::{EventHandlers, KalamLinkClient};

    let client = KalamLinkClient::builder()
        .base_url("http://localhost:8080")
        .timeout(std::time::Duration::from_secs(30))
        .http_pool_max_idle_per_host(10)
        .max_retries(3)
        .http_version(kalam_client::HttpVersion::Http1)
        .event_handlers(
            EventHandlers::new()
                .on_connect(|| println!("connected"))
                .on_disconnect(|reason| println!("disconnected: {reason}"))
                .on_error(|e| eprintln!("error: {e}")),
        )
        .build()?;
    let _connected: bool = client.is_connected().await;
    for info in client.subscriptions().await {
        println!("{:?} {} {:?} {:?}", info.id, info.sql, info.last_seq, info.state);
    }
    client.cancel_subscription(id);
    Ok(())
}
