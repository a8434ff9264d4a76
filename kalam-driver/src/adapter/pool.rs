//! Idle keep-alive connections, for the adapters' HTTP clients.
//!
//! The client core caps the requests in flight (`http_max_connections`),
//! and an adapter puts a connection back here as soon as it has read the
//! whole answer, before the answer reaches the driver. So when the core
//! sends its next request, the connection is already idle: one client never
//! holds more connections than the cap, and warm traffic opens none.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An idle connection is reused for this long at most (the server keeps
/// them for 75 s).
pub const IDLE_REUSE: Duration = Duration::from_secs(30);

/// Idle connections, most recently used first.
#[derive(Debug)]
pub struct IdlePool<C> {
    idle: Mutex<Vec<(C, Instant)>>,
    max_idle: usize,
}

impl<C> IdlePool<C> {
    /// A pool that keeps at most `max_idle` connections.
    pub fn new(max_idle: usize) -> Self {
        IdlePool {
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// An idle connection for which `usable` holds, if any; those idle for
    /// too long or no longer usable are dropped.
    pub fn take(&self, now: Instant, usable: impl Fn(&C) -> bool) -> Option<C> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((c, since)) = idle.pop() {
            if now.saturating_duration_since(since) < IDLE_REUSE && usable(&c) {
                return Some(c);
            }
        }
        None
    }

    /// Puts a connection back after a complete exchange.
    pub fn put(&self, c: C, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push((c, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_freshest_usable_and_drops_stale_ones() {
        let t0 = Instant::now();
        let pool = IdlePool::new(2);
        pool.put(1, t0);
        pool.put(2, t0 + Duration::from_secs(1));
        pool.put(3, t0); // over max_idle: dropped
        assert_eq!(pool.take(t0 + Duration::from_secs(2), |_| true), Some(2));
        assert_eq!(pool.take(t0 + IDLE_REUSE, |_| true), None, "1 is too old");
        pool.put(4, t0);
        assert_eq!(pool.take(t0, |c| *c != 4), None, "not usable");
    }
}
