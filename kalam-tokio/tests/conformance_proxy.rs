//! The conformance suite through an HTTP proxy, on Tokio: every client
//! goes through one proxy with Basic credentials (absolute-form requests
//! for `http://`, a `CONNECT` tunnel for the WebSocket). The scenario
//! `an_http_proxy_carries_every_request` counts what a proxy carried for one
//! client (the tests here run in parallel through one proxy).

use kalam_conformance::network::install_proxy;
use kalam_conformance::{ServerSettings, scenarios};
use kalam_tokio::rt::Tokio;

macro_rules! through_a_proxy {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            install_proxy();
            let server = ServerSettings::for_scenario(stringify!($name)).start_kit().await;
            scenarios::$name::<Tokio>(&server).await;
            server.shutdown().await;
        }
    )*};
}

kalam_conformance::for_each_scenario!(through_a_proxy);
