//! The conformance suite (kalam-conformance, shared by every adapter) on
//! Tokio, against the in-process test kit: each test gets its own server
//! (startup is a few milliseconds), started with what the scenario needs
//! ([`ServerSettings::for_scenario`]). The scenarios that need the kit
//! (`for_each_kit_only_scenario!`: a server that needs first-time setup,
//! one that sees every client as remote, short topic claims, and the kit's
//! own controls: tokens expired behind the client's back, broken answers,
//! malformed frames, dropped or stalled sockets) run here too, and with the
//! `gzip` feature the gzip scenario.

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

kalam_conformance::for_each_scenario!(against_the_kit);
kalam_conformance::for_each_kit_only_scenario!(against_the_kit);
#[cfg(feature = "gzip")]
kalam_conformance::for_each_kit_only_gzip_scenario!(against_the_kit);
