//! The conformance suite (kalam-conformance, shared by every adapter) on
//! async-std, against the real KalamDB server (../shared/kalamdb-server).
//! Each test starts its own throwaway server.
//!
//! `#[ignore]`d in a plain `cargo test` (they need the server binary);
//! `.ci/run` runs them with `--ignored`, and there a missing server is a
//! failure. As in conformance_kit.rs, the client runs on async-std; the
//! scenarios' fault proxy and timers need a Tokio runtime, entered by the
//! thread that polls the scenario.

use kalam_async_std::rt::AsyncStd;
use kalam_conformance::{ServerSettings, on_a_big_stack, scenarios, tokio_runtime};

macro_rules! against_real_server {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        #[ignore = "needs the real KalamDB server: cargo test -p kalam-async-std --test conformance_real -- --ignored"]
        fn $name() {
            let server = ServerSettings::for_scenario(stringify!($name)).start_real();
            let rt = tokio_runtime();
            on_a_big_stack(|| {
                let _tokio = rt.enter();
                async_std::task::block_on(scenarios::$name::<AsyncStd>(&server));
            });
        }
    )*};
}

kalam_conformance::for_each_scenario!(against_real_server);
