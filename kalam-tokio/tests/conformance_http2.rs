//! The conformance suite with HTTP/2 on (every client speaks HTTP/2 with
//! prior knowledge to the kit, which takes HTTP/1.1 and HTTP/2 on one
//! port, as the server does); the fault proxy reads HTTP/2's header
//! blocks (HPACK) for its request log. Needs the `http2` feature.

#![cfg(feature = "http2")]

use kalam_conformance::network::install_http2;
use kalam_conformance::{ServerSettings, scenarios};
use kalam_tokio::rt::Tokio;

macro_rules! over_http2 {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            install_http2();
            let server = ServerSettings::for_scenario(stringify!($name)).start_kit().await;
            scenarios::$name::<Tokio>(&server).await;
            server.shutdown().await;
        }
    )*};
}

kalam_conformance::for_each_scenario!(over_http2);

/// HTTP/2 over TLS, negotiated by ALPN `h2`: queries, uploads and live
/// queries through a TLS terminator in front of the kit.
#[cfg(feature = "rustls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_by_alpn() {
    install_http2();
    let kit = ServerSettings::default().start_kit().await;
    let server = kalam_conformance::network::OverTls::start(kit, false).await;
    scenarios::unicode_and_bigint_round_trip::<Tokio>(&server).await;
    scenarios::files_upload_select_download_round_trip::<Tokio>(&server).await;
    scenarios::live_events_returns_after_ack_changes_only::<Tokio>(&server).await;
}

/// The whole suite against the real server (which takes HTTP/2 with prior
/// knowledge), ignored in a plain `cargo test`; `.ci/run` runs it.
mod real_server {
    use super::*;

    macro_rules! against_real_server_over_http2 {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs the real KalamDB server: cargo test -p kalam-tokio --features http2 --test conformance_http2 -- --ignored"]
            async fn $name() {
                install_http2();
                let server = ServerSettings::for_scenario(stringify!($name)).start_real();
                scenarios::$name::<Tokio>(&server).await;
            }
        )*};
    }

    kalam_conformance::for_each_scenario!(against_real_server_over_http2);
}
