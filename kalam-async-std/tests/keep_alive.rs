//! A kept-alive connection the server closes without answering: the typed
//! error, and no silent retry (see the conformance scenario).

use kalam_async_std::rt::AsyncStd;
use kalam_conformance::scenarios::a_kept_alive_connection_closed_unanswered_is_typed;

#[test]
fn a_kept_alive_connection_closed_unanswered_is_typed_on_async_std() {
    async_std::task::block_on(a_kept_alive_connection_closed_unanswered_is_typed::<AsyncStd>());
}
