//! The public names of kalam-async-std, pinned: a rename or a removal
//! fails to compile here (compiling is the test).

kalam_conformance::pin_public_api!(kalam_async_std);
#[allow(unused_imports)]
use kalam_async_std::rt::AsyncStd;

/// The application's client is the generic one on async-std.
#[allow(dead_code)]
fn the_alias_is_the_generic_client_on_async_std(c: KalamLinkClient) -> generic::KalamLinkClient<AsyncStd> {
    c
}
