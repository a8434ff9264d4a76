//! Reconnect backoff: exponential, with "equal jitter" from a seeded
//! generator, so a run is reproducible from its seed.

use super::*;

impl WsSession {
    /// Exponential backoff with "equal jitter": half fixed, half random.
    pub(super) fn backoff(&mut self) -> Duration {
        let base = self.config.reconnect_delay.as_millis() as u64;
        let max = self.config.max_reconnect_delay.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << self.attempts.min(20)).min(max).max(1);
        let half = exp / 2;
        Duration::from_millis(half + self.rng.next() % (exp - half + 1))
    }
}

/// A tiny deterministic generator (SplitMix64) for backoff jitter.
#[derive(Debug, Clone)]
pub(super) struct SplitMix64(pub(super) u64);

impl SplitMix64 {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
