//! A kept-alive connection the server closes without answering: the typed
//! error, and no silent retry (see the conformance scenario).

use kalam_conformance::scenarios::a_kept_alive_connection_closed_unanswered_is_typed;
use kalam_tokio::rt::Tokio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_closed_unanswered_is_typed_on_tokio() {
    a_kept_alive_connection_closed_unanswered_is_typed::<Tokio>().await;
}
