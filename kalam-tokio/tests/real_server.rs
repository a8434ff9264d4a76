//! The conformance suite against the real KalamDB server
//! (../shared/kalamdb-server). Each test starts its own throwaway server.
//!
//! These tests are `#[ignore]`d in a plain `cargo test` (they need the
//! server binary and about a second each to start it); `.ci/run` runs them
//! with `--ignored`, and there a missing server is a failure.

mod support;

use support::{RealServer, scenarios};

macro_rules! against_real_server {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "needs the real KalamDB server: cargo test -p kalam-tokio --test real_server -- --ignored"]
        async fn $name() {
            let server = RealServer::start();
            scenarios::$name(&server).await;
        }
    )*};
}

against_real_server!(
    one_login_for_concurrent_first_queries,
    refused_password_is_typed_and_final,
    refresher_called_once_for_expired_token,
    token_expired_answer_is_recovered_once,
    provider_asked_for_http_without_connect,
    unicode_and_bigint_round_trip,
    bad_input_is_typed,
    explicit_login_refresh_and_refresh_token_misuse,
    subscriptions_share_one_socket,
    dropped_socket_loses_no_change,
    reconnect_asks_provider_again,
    refused_ws_auth_surfaces_once,
    stalled_subscriber_does_not_delay_another,
);
