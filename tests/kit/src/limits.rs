//! The server's HTTP rate limits (PROTOCOL §6), off unless the builder
//! turns them on: authentication requests per second (login, refresh,
//! setup) and SQL requests per second per user, each a token bucket of that
//! capacity refilled at that rate, on Tokio's clock.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

/// A token bucket: `rate` tokens, refilled at `rate` per second.
#[derive(Debug)]
struct Bucket {
    tokens: u32,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, rate: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        let refill = (f64::from(rate) * elapsed.as_secs_f64()) as u32;
        if refill > 0 {
            self.tokens = rate.min(self.tokens.saturating_add(refill));
            self.last = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// The limits and their buckets.
#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    auth_rate: Option<u32>,
    query_rate: Option<u32>,
    auth: Mutex<Option<Bucket>>,
    queries: Mutex<HashMap<String, Bucket>>,
}

impl RateLimits {
    pub(crate) fn new(auth_rate: Option<u32>, query_rate: Option<u32>) -> Self {
        RateLimits {
            auth_rate,
            query_rate,
            ..RateLimits::default()
        }
    }

    /// Whether one more authentication request may go on (every kit peer
    /// is the same client IP).
    pub(crate) fn auth(&self) -> bool {
        let Some(rate) = self.auth_rate else { return true };
        let now = Instant::now();
        let Ok(mut bucket) = self.auth.lock() else { return true };
        bucket
            .get_or_insert(Bucket {
                tokens: rate,
                last: now,
            })
            .take(rate, now)
    }

    /// Whether `user` may run one more SQL request.
    pub(crate) fn query(&self, user: &str) -> bool {
        let Some(rate) = self.query_rate else { return true };
        let now = Instant::now();
        let Ok(mut buckets) = self.queries.lock() else {
            return true;
        };
        buckets
            .entry(user.to_owned())
            .or_insert(Bucket {
                tokens: rate,
                last: now,
            })
            .take(rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_refills_at_its_rate() {
        let limits = RateLimits::new(Some(2), Some(3));
        assert_eq!((limits.auth(), limits.auth(), limits.auth()), (true, true, false));
        assert!((0..3).all(|_| limits.query("a")));
        assert!(!limits.query("a"));
        assert!(limits.query("b"), "per user");
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert_eq!((limits.auth(), limits.auth()), (true, false));
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        assert!((0..2).all(|_| limits.auth()));
        assert!(!limits.auth(), "capacity is the rate");
        assert!(
            RateLimits::default().auth() && RateLimits::default().query("a"),
            "off by default"
        );
    }
}
