//! Inputs the coverage-guided fuzzers (`fuzz/`) stopped on, kept as
//! ordinary tests that must keep passing.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

fn bytes(b64: &str) -> Vec<u8> {
    STANDARD.decode(b64).expect("base64")
}

/// client_core: a login, queries and `/auth/me` answered, failed and
/// refused, then the drain. The first crash it found was the harness's:
/// its drain handled timers without moving the clock to them, so three
/// waiters paced behind a rate refusal were never answered. The core was
/// right; the drain now moves to each timer.
#[test]
fn client_core_every_waiter_answered_after_the_drain_1() {
    support::drive::drive(&bytes("AAACAPkCAAoBNAcBEhEREREREQEAAgQ="));
}
