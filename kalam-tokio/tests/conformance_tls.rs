//! The conformance suite over TLS (`https://` and `wss://`), on Tokio:
//! each scenario's kit sits behind a TLS terminator with a certificate from
//! a CA made at test time, which every client trusts beside the platform's
//! roots; the fault proxy of the fault scenarios terminates TLS itself, so
//! it still sees every request. Then the TLS failures a deployment meets,
//! each typed, and mutual TLS. Needs the `rustls` feature.

#![cfg(feature = "rustls")]

use kalam_conformance::network::{OverTls, install_tls};
use kalam_conformance::{ServerSettings, scenarios};
use kalam_tokio::rt::Tokio;

macro_rules! over_tls {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            install_tls();
            let kit = ServerSettings::for_scenario(stringify!($name)).start_kit().await;
            let server = OverTls::start(kit, false).await;
            scenarios::$name::<Tokio>(&server).await;
        }
    )*};
}

kalam_conformance::for_each_scenario!(over_tls);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_are_typed() {
    let kit = kalam_conformance::TestServer::start().await;
    kalam_conformance::network::tls_failures_are_typed::<Tokio>(&kit).await;
    kit.shutdown().await;
}

/// The real server behind a TLS-terminating proxy: queries and live
/// queries over `https://` and `wss://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real KalamDB server (KALAMDB_SERVER_DIR or ../shared/kalamdb-server)"]
async fn real_server_over_tls() {
    install_tls();
    let real = ServerSettings::default().start_real();
    let server = OverTls::start(real, false).await;
    scenarios::unicode_and_bigint_round_trip::<Tokio>(&server).await;
    scenarios::live_events_returns_after_ack_changes_only::<Tokio>(&server).await;
    scenarios::subscriptions_share_one_socket::<Tokio>(&server).await;
}
