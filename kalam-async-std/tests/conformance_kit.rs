//! The conformance suite (kalam-conformance, shared by every adapter) on
//! async-std, against the in-process test kit: each test gets its own kit,
//! started with what the scenario needs ([`ServerSettings::for_scenario`]).
//! The scenarios that need the kit (`for_each_kit_only_scenario!`: server
//! states and controls only the kit has) run here too, and with the `gzip`
//! feature the gzip scenario.
//!
//! The client runs on async-std only. The kit and the scenarios' fault
//! proxy run on a Tokio runtime of their own (as another process would),
//! and the scenarios wait with Tokio's timers, so each scenario is polled
//! by `async_std::task::block_on` on a thread that has entered that
//! runtime.

use kalam_async_std::rt::AsyncStd;
use kalam_conformance::{ServerSettings, on_a_big_stack, scenarios, tokio_runtime};

macro_rules! against_the_kit {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
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

kalam_conformance::for_each_scenario!(against_the_kit);
kalam_conformance::for_each_kit_only_scenario!(against_the_kit);
#[cfg(feature = "gzip")]
kalam_conformance::for_each_kit_only_gzip_scenario!(against_the_kit);
