//! The conformance suite (kalam-conformance, shared by every adapter) on
//! Tokio, against the real KalamDB server (../shared/kalamdb-server). Each
//! test starts its own throwaway server.
//!
//! These tests are `#[ignore]`d in a plain `cargo test` (they need the
//! server binary and about a second each to start it); `.ci/run` runs them
//! with `--ignored`, and there a missing server is a failure.

use kalam_conformance::{ServerSettings, scenarios};
use kalam_tokio::rt::Tokio;

macro_rules! against_real_server {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "needs the real KalamDB server: cargo test -p kalam-tokio --test conformance_real -- --ignored"]
        async fn $name() {
            let server = ServerSettings::for_scenario(stringify!($name)).start_real();
            scenarios::$name::<Tokio>(&server).await;
        }
    )*};
}

kalam_conformance::for_each_scenario!(against_real_server);
