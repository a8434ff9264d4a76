//! Sending again what never left: an operation whose connection could not
//! be made (a refused connection, a connect timeout: nothing was written)
//! goes again after a back-off (100 ms, doubling up to 2 s), at most
//! `max_retries` times and within `retry_budget` of its submission. An
//! error after anything may have been written (a reset, a closed
//! connection, a timeout waiting for the answer) is never retried: a
//! statement must not run twice. An upload from a reader is not retried
//! either (its source is the caller's, and read once).

use std::time::Duration;

use super::{AuthMachine, OpId};
use crate::error::{Error, TransportError};
use crate::ops::Operation;
use crate::time::{Instant, Now};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The back-off before retry number `attempt` (0 for the first).
pub(super) fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << attempt.min(5)).min(MAX_BACKOFF)
}

impl AuthMachine {
    /// An operation failed with `error`: if nothing was sent and the rule
    /// allows, it waits for its back-off and goes again (`None`);
    /// otherwise the error, for the usual handling.
    pub(super) fn transport_retry(&mut self, op: OpId, error: Error, now: Now) -> Option<Error> {
        if !matches!(error, Error::Transport(TransportError::Connect(_))) {
            return Some(error);
        }
        let max = self.config.max_retries;
        let budget = self.config.retry_budget;
        let Some(pending) = self.ops.get_mut(&op) else {
            return Some(error);
        };
        if let Operation::Upload(u) = &pending.operation
            && !u.replayable
        {
            return Some(error);
        }
        let at = now.instant + backoff(pending.attempts);
        if pending.attempts >= max || at > pending.submitted + budget {
            return Some(error);
        }
        pending.attempts += 1;
        self.delayed.push((at, op));
        None
    }

    /// Operations whose back-off is over go to the front of the queue, in
    /// the order they were submitted.
    pub(super) fn release_delayed(&mut self, now: Now) {
        let mut due: Vec<OpId> = Vec::new();
        self.delayed.retain(|(at, op)| {
            let is_due = *at <= now.instant;
            if is_due {
                due.push(*op);
            }
            !is_due
        });
        due.sort_unstable();
        for op in due.into_iter().rev() {
            if self.ops.contains_key(&op) {
                self.waiting.push_front(op);
            }
        }
    }

    /// When the next delayed operation may go.
    pub(super) fn retry_timer(&self) -> Option<Instant> {
        self.delayed.iter().map(|(at, _)| *at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(1600));
        assert_eq!(backoff(5), MAX_BACKOFF);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
