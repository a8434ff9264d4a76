//! The conformance suite against the in-process test kit: each test gets
//! its own server (startup is a few milliseconds).

#[macro_use]
mod support;

use support::{ServerSettings, scenarios};

macro_rules! against_the_kit {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let server = ServerSettings::for_scenario(stringify!($name)).start_kit().await;
            scenarios::$name(&server).await;
            server.shutdown().await;
        }
    )*};
}

for_each_scenario!(against_the_kit);
