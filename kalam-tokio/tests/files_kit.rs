//! FILE uploads on the client's own driver after `TOKEN_EXPIRED`, on Tokio,
//! against the test kit (which can expire every token it issued).

use kalam_conformance::{TestServer, files};
use kalam_tokio::rt::Tokio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_token_expired_on_the_client() {
    let server = TestServer::start().await;
    files::files_token_expired_on_the_client::<Tokio>(&server).await;
    server.shutdown().await;
}
