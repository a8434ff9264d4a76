//! The client over a real 3-node KalamDB cluster (the bundled server as a
//! Raft cluster, `kalam_testkit::RealCluster`), on async-std: the four
//! scenarios of `kalam_conformance::cluster_real`, in order, each on
//! a fresh cluster. As in conformance_real.rs, the scenarios' timers need a Tokio
//! runtime, entered by the thread that polls them.
//!
//! `#[ignore]`d in a plain `cargo test`; `.ci/run` runs it with
//! `--ignored --nocapture`, and there a missing server is a failure.

use kalam_async_std::rt::AsyncStd;
use kalam_conformance::cluster_real::real_cluster_suite;
use kalam_conformance::{on_a_big_stack, tokio_runtime};

#[test]
#[ignore = "needs the real KalamDB server: cargo test -p kalam-async-std --test cluster_real -- --ignored --nocapture"]
fn a_real_three_node_cluster() {
    let rt = tokio_runtime();
    on_a_big_stack(|| {
        let _tokio = rt.enter();
        async_std::task::block_on(real_cluster_suite::<AsyncStd>());
    });
}
