//! WebSocket frames: text frames, binary frames (gzip-compressed JSON, and
//! MessagePack or anything else, which is refused), with the inflated-size
//! limit small and large. A typed error at worst, never a panic, and never
//! more inflated than the limit allows.
#![no_main]

use kalam_proto::ws_messages::{decode_binary, decode_binary_within, decode_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode_text(text);
    }
    let _ = decode_binary(data);
    let _ = decode_binary_within(data, 64);
    let _ = decode_binary_within(data, 1 << 20);
});
