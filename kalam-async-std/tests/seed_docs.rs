//! The code of the upstream documentation pages this client follows
//! (../shared/seeds/), with only the crate name changed: the same pages as
//! kalam-tokio's test, included from there. If this file compiles, the
//! async-std client has the docs' names and signatures too.

#![allow(dead_code, unused_variables, clippy::diverging_sub_expression)]

use kalam_async_std as kalam_client;

include!("../../kalam-tokio/tests/seed_docs/pages.rs");

#[test]
fn client_is_send_sync_clone_and_debug_hides_secrets() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<kalam_async_std::KalamLinkClient>();
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<kalam_async_std::Error>();
    let builder = kalam_async_std::KalamLinkClient::builder().auth(kalam_async_std::AuthProvider::basic_auth(
        "admin".into(),
        "s3cr3t-pw".into(),
    ));
    let shown = format!("{builder:?}");
    assert!(shown.contains("admin") && !shown.contains("s3cr3t-pw"), "{shown}");
    // No runtime to enter: async-std starts its executor on demand.
    let client = builder.build().unwrap();
    let shown = format!("{client:?}");
    assert!(!shown.contains("s3cr3t-pw"), "{shown}");
}
