//! The client core driven by an arbitrary sequence of inputs, with the
//! contract checks of kalam-proto's test pump at every step and a drain at
//! the end (see `kalam-proto/tests/support/drive.rs`, shared with the
//! regression tests of what this target found).
#![no_main]

#[path = "../../kalam-proto/tests/support/mod.rs"]
mod support;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| support::drive::drive(data));
