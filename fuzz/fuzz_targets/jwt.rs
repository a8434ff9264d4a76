//! JWT inspection of any token text (the client reads claims it cannot
//! verify: expiry, kind, user): a typed error at worst, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(claims) = kalam_proto::jwt::inspect(&text) {
        let _ = claims.is_refresh();
        let _ = claims.is_expired_at(1_800_000_000, 60);
        let _ = claims.is_expired_at(u64::MAX, u64::MAX);
    }
});
