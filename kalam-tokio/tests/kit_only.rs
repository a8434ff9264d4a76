//! The conformance scenarios that need a server state only the kit can be
//! started in (`kalam_conformance::for_each_kit_only_scenario!`: a server
//! that needs first-time setup, one that sees every client as remote), on
//! Tokio.

use kalam_conformance::{ServerSettings, scenarios};
use kalam_tokio::rt::Tokio;

macro_rules! against_the_kit {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let server = ServerSettings::for_scenario(stringify!($name)).start_kit().await;
            scenarios::$name::<Tokio>(&server).await;
            server.shutdown().await;
        }
    )*};
}

kalam_conformance::for_each_kit_only_scenario!(against_the_kit);
