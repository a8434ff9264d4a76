//! Pacing: the session's text frames leave below the server's
//! per-connection message rate, and a frame the server drops for its rate
//! limit anyway is found and sent again.

use super::*;

/// Paces text frames below the server's per-connection rate: a generic cell
/// rate algorithm (a token bucket with integer time), so `send_burst` frames
/// may leave at once and then one every `1 s / send_rate`.
#[derive(Debug, Clone)]
pub(super) struct Pacer {
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time of the next frame.
    tat: Instant,
}

impl Pacer {
    pub(super) fn new(burst: u32, rate: u32) -> Self {
        let interval = Duration::from_secs(1) / rate.max(1);
        Pacer {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            tat: Instant::ZERO,
        }
    }

    /// When the next frame may leave.
    pub(super) fn ready_at(&self) -> Instant {
        self.tat - self.tolerance
    }

    /// Takes one slot (callers check [`ready_at`](Self::ready_at) first,
    /// except for `authenticate`, which must go at once).
    pub(super) fn take(&mut self, now: Instant) {
        self.tat = self.tat.max(now) + self.interval;
    }

    pub(super) fn reset(&mut self, now: Instant) {
        self.tat = now;
    }
}

impl WsSession {
    /// Sends what the pacer allows from the queue.
    pub(super) fn flush(&mut self, now: Now) {
        if !matches!(self.conn, Conn::Ready) || self.paused_until.is_some_and(|p| p > now.instant) {
            return;
        }
        while self.pacer.ready_at() <= now.instant {
            let Some(pending) = self.queue.pop_front() else {
                return;
            };
            let (text, sent) = match pending {
                Pending::Subscribe(id) => {
                    let Some(s) = self.subs.get_mut(&id) else {
                        continue; // unsubscribed while queued
                    };
                    s.phase = SubPhase::Subscribing;
                    s.last_batch = None;
                    let options = resume_options(s);
                    let text = subscribe_text(id, s.generation, &s.sql, options.as_ref());
                    let sent = Sent::Subscribe(id, s.generation);
                    // The server gets the full limit from the moment the
                    // frame leaves: time spent in our own pacing queue is
                    // never counted against it.
                    let due = now.instant + self.config.subscribe_timeout;
                    let deadline = s.held.take().map_or(due, |d| d.max(due));
                    self.set_deadline(id, Some(deadline));
                    (text, sent)
                }
                Pending::NextBatch { sub, last_seq_id } => {
                    let Some(s) = self.subs.get(&sub) else {
                        continue;
                    };
                    let text = ClientMessage::NextBatch {
                        subscription_id: &sub.wire(s.generation),
                        last_seq_id,
                    }
                    .to_text();
                    let sent = Sent::NextBatch {
                        sub,
                        generation: s.generation,
                        last_seq_id,
                    };
                    (text, sent)
                }
                Pending::Unsubscribe(wire) => {
                    let text = ClientMessage::Unsubscribe { subscription_id: &wire }.to_text();
                    (text, Sent::Unsubscribe(wire))
                }
            };
            self.pacer.take(now.instant);
            self.unsettled.push_back(sent);
            self.emit_text(text, now);
        }
    }

    /// Marks every frame up to the one `settles` matches as handled.
    pub(super) fn settle(&mut self, settles: impl Fn(&Sent) -> bool) {
        if let Some(i) = self.unsettled.iter().position(settles) {
            self.unsettled.drain(..=i);
            self.strikes = 0;
        }
    }

    /// The server dropped one frame for its rate limit. Frames are handled
    /// in order, so it is the earliest unsettled one that expects an answer,
    /// unless an `unsubscribe` (which gets none) came before it. Both are
    /// sent again: a late answer to the retried frame is recognised by its
    /// id (a retried subscribe gets a new one) or its page number, and not
    /// delivered twice; an unsubscribe sent twice is harmless.
    pub(super) fn rate_limited(&mut self, now: Now) {
        let found = self.unsettled.iter().position(|s| !matches!(s, Sent::Unsubscribe(_)));
        // Unsubscribes sent before the frame taken for the dropped one (all
        // of them, if none expects an answer) may have been the dropped one
        // instead (they get no answer to tell): they are sent again. A
        // repeated unsubscribe is harmless; a lost one would leave the
        // subscription streaming at the server.
        let earlier: Vec<Pending> = self
            .unsettled
            .drain(..found.unwrap_or(self.unsettled.len()))
            .filter_map(|s| match s {
                Sent::Unsubscribe(w) => Some(Pending::Unsubscribe(w)),
                _ => None,
            })
            .collect();
        let dropped = found.and_then(|_| self.unsettled.pop_front());
        let retry = match dropped {
            Some(Sent::Subscribe(id, generation)) => match self.subs.get_mut(&id) {
                Some(s) if s.generation == generation && s.phase == SubPhase::Subscribing => {
                    s.generation += 1;
                    s.phase = SubPhase::Queued;
                    Some(Pending::Subscribe(id))
                }
                _ => None,
            },
            Some(Sent::NextBatch {
                sub,
                generation,
                last_seq_id,
            }) if self.subs.get(&sub).is_some_and(|s| s.generation == generation) => {
                Some(Pending::NextBatch { sub, last_seq_id })
            }
            _ => None,
        };
        for p in earlier.into_iter().chain(retry).rev() {
            match p {
                Pending::Subscribe(id) => self.enqueue_subscribe(id, true),
                p => self.queue.push_front(p),
            }
        }
        // The server's bucket refills in a second; wait at least that long,
        // longer after refusals in a row.
        let pause = Duration::from_secs(1) * (1u32 << self.strikes.min(3));
        self.strikes = self.strikes.saturating_add(1);
        self.paused_until = Some(now.instant + pause);
    }
}
