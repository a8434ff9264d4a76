//! FILE uploads on the client's own driver after `TOKEN_EXPIRED`, on
//! async-std, against the test kit (run on a Tokio runtime of its own).

use kalam_async_std::rt::AsyncStd;
use kalam_conformance::{TestServer, files, tokio_runtime};

#[test]
fn files_token_expired_on_the_client() {
    let rt = tokio_runtime();
    let server = rt.block_on(TestServer::start());
    {
        let _tokio = rt.enter();
        async_std::task::block_on(files::files_token_expired_on_the_client::<AsyncStd>(&server));
    }
    rt.block_on(server.shutdown());
}
