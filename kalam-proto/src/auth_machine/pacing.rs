//! The server's query rate, learned from its refusals.
//!
//! KalamDB takes at most 100 SQL requests per second per user (its
//! `rate_limit.max_queries_per_sec`) and answers the rest
//! `429 RATE_LIMIT_EXCEEDED`, before running them. The client does not know
//! the limit in advance; it learns it:
//!
//! - A `429` sets the rate a tenth under what the server took in the second
//!   before it (the answers that succeeded); a refusal under a rate already
//!   learned lowers it the same way, by a tenth at least and half at most; and
//!   pauses every SQL request for the server's `Retry-After`, or a back-off
//!   (250 ms, doubling up to 5 s) with seeded jitter. One refusal slows
//!   everyone: there is one pause, not one timer per request, and the
//!   refusals of the other requests that were out when it began count as
//!   the same news.
//! - Then SQL requests go out at most `rate` per second (a sliding window
//!   of one second), which is below what the server takes.
//! - Ten times `rate` answers without a refusal (ten seconds at full pace)
//!   raise the rate by a tenth, so a limit raised on the server, or a burst
//!   of another client's that is over, is found again; far above anything
//!   seen the rate is forgotten.
//!
//! A refused request is sent again (it never ran) as long as its deadline
//! allows the wait; after it, the caller gets the `429`.

use std::collections::VecDeque;
use std::time::Duration;

use http::HeaderValue;

use super::{AuthMachine, OpId};
use crate::error::Error;
use crate::ops::{Operation, RequestKind};
use crate::time::{Instant, Now};

const WINDOW: Duration = Duration::from_secs(1);
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// A learned rate above this is forgotten (no limit in sight).
const FORGET_ABOVE: u32 = 100_000;

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub(super) struct RatePacer {
    /// SQL requests per second to stay under; `None` until a refusal.
    rate: Option<u32>,
    /// When the SQL requests of the last second left.
    sent: VecDeque<Instant>,
    /// When the answers of the last second that were not refusals came.
    taken: VecDeque<Instant>,
    paused_until: Option<Instant>,
    /// The last refusal, for requests that cannot go before their
    /// deadline.
    last_refusal: Option<Error>,
    /// Refusals in a row (the pause doubles with each).
    strikes: u32,
    /// Answers taken since the rate last rose.
    credit: u32,
    rng: u64,
}

impl RatePacer {
    pub(super) fn new(seed: u64) -> Self {
        RatePacer {
            rate: None,
            sent: VecDeque::new(),
            taken: VecDeque::new(),
            paused_until: None,
            last_refusal: None,
            strikes: 0,
            credit: 0,
            rng: seed ^ 0x7261_7465_2d6c_696d,
        }
    }

    /// When the next SQL request may leave: `None` now.
    pub(super) fn next_slot(&mut self, now: Instant) -> Option<Instant> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Some(until);
            }
            self.paused_until = None;
        }
        let rate = self.rate?;
        prune(&mut self.sent, now);
        let rate = rate as usize;
        if self.sent.len() < rate {
            return None;
        }
        // When enough have left the window for one more.
        self.sent.get(self.sent.len() - rate).map(|t| *t + WINDOW)
    }

    /// A SQL request left now.
    pub(super) fn sent(&mut self, now: Instant) {
        if self.rate.is_some() || self.paused_until.is_some() {
            prune(&mut self.sent, now);
        }
        self.sent.push_back(now);
        // Without a limit known, only the last second is kept anyway.
        if self.sent.len() > 4096 {
            self.sent.pop_front();
        }
    }

    /// A SQL request was answered, not refused for rate.
    pub(super) fn taken(&mut self, now: Instant) {
        prune(&mut self.taken, now);
        self.taken.push_back(now);
        if self.taken.len() > 4096 {
            self.taken.pop_front();
        }
        self.strikes = 0;
        if let Some(rate) = self.rate {
            self.credit += 1;
            if self.credit >= rate.saturating_mul(10) {
                self.credit = 0;
                let raised = rate.saturating_add((rate / 10).max(1));
                self.rate = (raised <= FORGET_ABOVE).then_some(raised);
            }
        }
    }

    /// A SQL request was refused for rate; `retry_after`: the server's
    /// word, if it said. Returns when requests may go again.
    pub(super) fn refused(&mut self, now: Instant, retry_after: Option<Duration>) -> Instant {
        if let Some(until) = self.paused_until.filter(|u| *u > now) {
            // Refusals of the requests that were out when the pause began
            // are the same news: one lowering, one back-off step. Only the
            // server's own word can make the pause longer.
            let asked = retry_after.map_or(until, |d| now + d);
            let until = until.max(asked);
            self.paused_until = Some(until);
            return until;
        }
        prune(&mut self.taken, now);
        let took = u32::try_from(self.taken.len()).unwrap_or(u32::MAX);
        // A tenth under what the server took: its window and ours do not
        // line up, and a rate right at its limit is refused again.
        let under = (took - took / 10).max(1);
        self.rate = Some(match self.rate {
            // Already paced and still refused (another client of the same
            // user, or a limit lowered): down to what it took, by a tenth
            // at least and by half at most (what it took in a second that
            // held a pause says little).
            Some(rate) => {
                let floor = (rate / 2).max(1);
                let ceiling = (rate - rate / 10).max(floor);
                under.clamp(floor, ceiling)
            }
            None => under,
        });
        self.credit = 0;
        self.strikes = self.strikes.saturating_add(1);
        let backoff = FIRST_PAUSE
            .saturating_mul(1 << (self.strikes - 1).min(5))
            .min(MAX_PAUSE);
        let base = retry_after.unwrap_or(backoff);
        // Up to a quarter more, so clients refused together do not come
        // back together.
        let jitter = base.mul_f64(f64::from(self.next_random() % 1000) / 4000.0);
        let until = now + base + jitter;
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        self.paused_until.unwrap_or(until)
    }

    /// The rate learned, if any.
    #[cfg(test)]
    pub(super) fn rate(&self) -> Option<u32> {
        self.rate
    }

    fn next_random(&mut self) -> u32 {
        // SplitMix64.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }
}

/// Drops what is older than one second before `now`.
fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times.front().is_some_and(|t| *t + WINDOW <= now) {
        times.pop_front();
    }
}

/// Whether requests of `kind` are paced: SQL (the server's per-user query
/// limit). Topic and file requests have limits of their own.
pub(super) fn paced(kind: RequestKind) -> bool {
    matches!(kind, RequestKind::Query | RequestKind::QueryRows | RequestKind::Upload)
}

/// A refusal for rate: `429` in any of the server's shapes.
pub(super) fn is_rate_limited(e: &Error) -> bool {
    e.server().is_some_and(|s| s.status == 429)
}

impl AuthMachine {
    /// Sends waiting operations, under the in-flight cap and, for SQL,
    /// under the pace.
    pub(super) fn dispatch_waiting(&mut self, authorization: Option<&HeaderValue>, now: Now) {
        while self.op_requests < self.config.max_in_flight.max(1) {
            let Some(&op) = self.waiting.front() else { break };
            let is_paced = self.ops.get(&op).and_then(|p| p.operation.kind()).is_some_and(paced);
            if is_paced && let Some(slot) = self.pacer.next_slot(now.instant) {
                self.fail_late(slot);
                break; // in order: what comes after waits too
            }
            self.waiting.pop_front();
            if is_paced {
                self.pacer.sent(now.instant);
            }
            self.dispatch(op, authorization);
        }
    }

    /// SQL requests held by the pace that cannot go before their deadline
    /// (`slot` is the earliest they could) get the last refusal now.
    fn fail_late(&mut self, slot: Instant) {
        let Some(error) = self.pacer.last_refusal.clone() else {
            return;
        };
        let budget = self.config.retry_budget;
        let late: Vec<OpId> = self
            .waiting
            .iter()
            .copied()
            .filter(|op| {
                self.ops
                    .get(op)
                    .is_some_and(|p| p.operation.kind().is_some_and(paced) && p.submitted + budget < slot)
            })
            .collect();
        if late.is_empty() {
            return;
        }
        self.waiting.retain(|op| !late.contains(op));
        for op in late {
            self.finish(op, Err(error.clone()));
        }
    }

    /// When a waiting SQL request may go, if the pace holds it.
    pub(super) fn pace_timer(&mut self, now: Now) -> Option<Instant> {
        let op = *self.waiting.front()?;
        let kind = self.ops.get(&op)?.operation.kind()?;
        if !paced(kind) {
            return None;
        }
        self.pacer.next_slot(now.instant)
    }

    /// An operation's request was refused: if for rate, and the rule allows
    /// it, the operation waits for the pause and goes again (`None`);
    /// otherwise the error, for the usual handling.
    pub(super) fn rate_refused(&mut self, op: OpId, error: Error, now: Now) -> Option<Error> {
        if !is_rate_limited(&error) {
            return Some(error);
        }
        let Some(pending) = self.ops.get(&op) else {
            return Some(error);
        };
        let is_paced = pending.operation.kind().is_some_and(paced);
        if !is_paced {
            return Some(error);
        }
        let retry_after = error.server().and_then(|s| s.retry_after_secs).map(Duration::from_secs);
        let until = self.pacer.refused(now.instant, retry_after);
        self.pacer.last_refusal = Some(error.clone());
        let replayable = match &pending.operation {
            Operation::Upload(u) => u.replayable,
            _ => true,
        };
        let in_time = until <= pending.submitted + self.config.retry_budget;
        if !(self.config.rate_limit_retry && replayable && in_time) {
            return Some(error);
        }
        self.waiting.push_front(op);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn a_refusal_learns_the_rate_and_pauses_everyone_once() {
        let mut p = RatePacer::new(1);
        assert_eq!(p.next_slot(at(0)), None, "no limit known: send");
        for i in 0..100 {
            p.sent(at(i));
            p.taken(at(i + 1));
        }
        let until = p.refused(at(150), None);
        assert_eq!(
            p.rate(),
            Some(90),
            "a tenth under what the server took in the last second"
        );
        assert!(until >= at(400) && until <= at(463), "{until:?}");
        assert_eq!(p.next_slot(at(200)), Some(until));
        // After the pause, the hundred sent in the last second still count:
        // ninety of them go out of the window at 1,010 ms.
        assert_eq!(p.next_slot(until), Some(at(1010)));
        // From then on: ninety in any second.
        let mut t = at(1010);
        for _ in 0..90 {
            assert_eq!(p.next_slot(t), None);
            p.sent(t);
            t = t + Duration::from_millis(1);
        }
        assert_eq!(p.next_slot(t), Some(at(2010)), "the window is full");
    }

    #[test]
    fn a_refusal_under_a_learned_rate_lowers_it_by_what_the_server_took() {
        let mut p = RatePacer::new(1);
        for i in 0..105 {
            p.taken(at(i));
        }
        p.refused(at(200), None);
        assert_eq!(p.rate(), Some(95));
        // Still refused at 95 a second: down to a tenth under what it took.
        for i in 0..80 {
            p.taken(at(5_000 + i));
        }
        p.refused(at(5_500), None);
        assert_eq!(p.rate(), Some(72));
        // Refused right after a pause (it took few): half, no lower.
        p.taken(at(20_000));
        p.refused(at(20_001), None);
        assert_eq!(p.rate(), Some(36));
        // Refused having taken about the rate: a tenth lower, no less.
        for i in 0..36 {
            p.taken(at(30_000 + i));
        }
        p.refused(at(30_100), None);
        assert_eq!(p.rate(), Some(33));
    }

    #[test]
    fn the_server_s_retry_after_is_the_pause_and_refusals_in_a_row_back_off() {
        let mut p = RatePacer::new(1);
        let until = p.refused(at(0), Some(Duration::from_secs(2)));
        assert!(until >= at(2000) && until <= at(2500), "{until:?}");
        let a = p.refused(at(3000), None).saturating_duration_since(at(3000));
        let b = p.refused(at(10_000), None).saturating_duration_since(at(10_000));
        assert!(b > a, "{a:?} then {b:?}");
        for i in 0..20 {
            let t = at(100_000 + i * 10_000);
            let d = p.refused(t, None).saturating_duration_since(t);
            assert!(d <= MAX_PAUSE.mul_f64(1.25), "{d:?}");
        }
        // During a pause, more refusals (of requests that were out) change
        // nothing but what the server asks for.
        let t = at(400_000);
        let until = p.refused(t, None);
        let rate = p.rate();
        assert_eq!(p.refused(t + Duration::from_millis(1), None), until);
        assert_eq!(p.rate(), rate);
        let longer = p.refused(t + Duration::from_millis(2), Some(Duration::from_secs(60)));
        assert_eq!(longer, t + Duration::from_millis(2) + Duration::from_secs(60));
        assert_eq!(p.rate(), Some(1), "halved down to one per second, no lower");
    }

    #[test]
    fn the_rate_rises_again_without_refusals() {
        let mut p = RatePacer::new(1);
        for i in 0..10 {
            p.taken(at(i));
        }
        p.refused(at(20), None);
        assert_eq!(p.rate(), Some(9));
        for i in 0..89 {
            p.taken(at(2000 + i));
        }
        assert_eq!(p.rate(), Some(9), "not before ten times the rate");
        p.taken(at(2100));
        assert_eq!(p.rate(), Some(10));
    }
}
