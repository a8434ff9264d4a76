//! The conformance suite against the in-process test kit: each test gets
//! its own server (startup is a few milliseconds).

mod support;

use kalam_testkit::TestServer;
use support::scenarios;

macro_rules! against_the_kit {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let server = TestServer::start().await;
            scenarios::$name(&server).await;
            server.shutdown().await;
        }
    )*};
}

against_the_kit!(
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
