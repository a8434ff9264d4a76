//! The conformance scenarios that need a server state only the kit can be
//! started in (`kalam_conformance::for_each_kit_only_scenario!`: a server
//! that needs first-time setup, one that sees every client as remote), on
//! async-std. The kit runs on a Tokio runtime of its own, as in
//! `conformance_kit.rs`.

use kalam_async_std::rt::AsyncStd;
use kalam_conformance::{ServerSettings, scenarios, tokio_runtime};

macro_rules! against_the_kit {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let rt = tokio_runtime();
            let server = rt.block_on(ServerSettings::for_scenario(stringify!($name)).start_kit());
            {
                let _tokio = rt.enter();
                async_std::task::block_on(scenarios::$name::<AsyncStd>(&server));
            }
            rt.block_on(server.shutdown());
        }
    )*};
}

kalam_conformance::for_each_kit_only_scenario!(against_the_kit);
