//! The public names of kalam-tokio, pinned: a rename or a removal fails
//! to compile here (compiling is the test).

kalam_conformance::pin_public_api!(kalam_tokio);
#[allow(unused_imports)]
use kalam_tokio::{compat, compat::Compat, rt::Tokio};

/// The application's client is the generic one on Tokio.
#[allow(dead_code)]
fn the_alias_is_the_generic_client_on_tokio(c: KalamLinkClient) -> generic::KalamLinkClient<Tokio> {
    c
}
