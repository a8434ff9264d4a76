//! The client over a real 3-node KalamDB cluster (the bundled server as a
//! Raft cluster, `kalam_testkit::RealCluster`), on Tokio: the four
//! scenarios of `kalam_conformance::cluster_real`, in order, each on
//! a fresh cluster (one starts in about a second).
//!
//! `#[ignore]`d in a plain `cargo test`; `.ci/run` runs it with
//! `--ignored --nocapture` (the scenarios print what they measured), and
//! there a missing server is a failure.

use kalam_conformance::cluster_real::real_cluster_suite;
use kalam_tokio::rt::Tokio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real KalamDB server: cargo test -p kalam-tokio --test cluster_real -- --ignored --nocapture"]
async fn a_real_three_node_cluster() {
    real_cluster_suite::<Tokio>().await;
}
