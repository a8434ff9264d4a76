//! The conformance suite over TLS (`https://` and `wss://`), on async-std:
//! each scenario's kit sits behind a TLS terminator with a certificate from
//! a CA made at test time, which every client trusts beside the platform's
//! roots. Then the TLS failures a deployment meets, each typed, and mutual
//! TLS. Needs the `rustls` feature. (The kit and the terminator run on a
//! Tokio runtime of their own; the client on async-std.)

#![cfg(feature = "rustls")]

use kalam_async_std::rt::AsyncStd;
use kalam_conformance::network::{OverTls, install_tls};
use kalam_conformance::{ServerSettings, on_a_big_stack, scenarios, tokio_runtime};

macro_rules! over_tls {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            install_tls();
            let rt = tokio_runtime();
            let server = rt.block_on(async {
                let kit = ServerSettings::for_scenario(stringify!($name)).start_kit().await;
                OverTls::start(kit, false).await
            });
            on_a_big_stack(|| {
                let _tokio = rt.enter();
                async_std::task::block_on(scenarios::$name::<AsyncStd>(&server));
            });
            drop(server);
        }
    )*};
}

kalam_conformance::for_each_scenario!(over_tls);

#[test]
fn tls_failures_are_typed() {
    let rt = tokio_runtime();
    let kit = rt.block_on(kalam_conformance::TestServer::start());
    {
        let _tokio = rt.enter();
        async_std::task::block_on(kalam_conformance::network::tls_failures_are_typed::<AsyncStd>(&kit));
    }
    rt.block_on(kit.shutdown());
}
