//! The conformance suite through an HTTP proxy, on async-std: every client
//! goes through one proxy with Basic credentials (absolute-form requests
//! for `http://`, which async-h1 cannot write itself, so the adapter
//! rewrites the request line; a `CONNECT` tunnel for the WebSocket). The
//! scenario `an_http_proxy_carries_every_request` counts what a proxy
//! carried for one client.

use kalam_async_std::rt::AsyncStd;
use kalam_conformance::network::install_proxy;
use kalam_conformance::{ServerSettings, on_a_big_stack, scenarios, tokio_runtime};

macro_rules! through_a_proxy {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            install_proxy();
            let rt = tokio_runtime();
            let server = rt.block_on(ServerSettings::for_scenario(stringify!($name)).start_kit());
            on_a_big_stack(|| {
                let _tokio = rt.enter();
                async_std::task::block_on(scenarios::$name::<AsyncStd>(&server));
            });
            rt.block_on(server.shutdown());
        }
    )*};
}

kalam_conformance::for_each_scenario!(through_a_proxy);
