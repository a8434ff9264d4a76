//! Secrets never reach the logs (a test binary of its own: it installs a
//! global TRACE subscriber). Needs the real server, like real_server.rs.

mod support;

use support::{RealServer, scenarios};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real KalamDB server: cargo test -p kalam-tokio --test real_server_logs -- --ignored"]
async fn no_secrets_in_logs() {
    let server = RealServer::start();
    scenarios::no_secrets_in_logs(&server).await;
}
