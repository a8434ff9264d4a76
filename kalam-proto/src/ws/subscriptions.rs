//! Subscriptions on the session: subscribing and unsubscribing, the queue
//! of subscribe frames and their acknowledgement deadlines, and
//! resubscribing from the last `_seq` after a reconnect.

use super::*;

impl WsSession {
    /// The open subscriptions: id, SQL, last `_seq` delivered, and where
    /// each stands.
    pub fn subscription_states(&self) -> impl Iterator<Item = (SubId, &str, Option<i64>, SubscriptionState)> {
        self.subs.iter().map(|(id, s)| {
            let state = match (s.phase, s.acked_once) {
                (SubPhase::Queued | SubPhase::Subscribing, false) => SubscriptionState::Subscribing,
                (SubPhase::Queued | SubPhase::Subscribing, true) => SubscriptionState::Resubscribing,
                (SubPhase::Loading, _) => SubscriptionState::Loading,
                (SubPhase::Live, _) => SubscriptionState::Live,
            };
            (*id, s.sql.as_str(), s.last_seq, state)
        })
    }

    /// The highest `_seq` delivered on a subscription.
    pub fn last_seq(&self, sub: SubId) -> Option<i64> {
        self.subs.get(&sub).and_then(|s| s.last_seq)
    }

    /// Whether the server has acknowledged the subscription on the current
    /// socket.
    pub fn is_acknowledged(&self, sub: SubId) -> bool {
        self.subs
            .get(&sub)
            .is_some_and(|s| matches!(s.phase, SubPhase::Loading | SubPhase::Live))
    }

    /// Adds a subscription; connects if needed. Refused (typed error, nothing
    /// sent) if its subscribe message would exceed the server's 64 KiB frame.
    /// The server's acknowledgement is due within
    /// [`WsConfig::subscribe_timeout`]; otherwise the subscription ends with
    /// [`Error::SubscribeTimeout`].
    pub fn subscribe(
        &mut self,
        sql: impl Into<String>,
        options: Option<SubscriptionOptions>,
        now: Now,
    ) -> Result<SubId, Error> {
        let sql = sql.into();
        let options = options.map(|mut o| {
            o.batch_size = o.batch_size.map(|b| b.min(MAX_BATCH_SIZE));
            o
        });
        let id = SubId(self.next_sub);
        // The longest form this frame can take (a retry's id, a resume point).
        let probe_options = SubscriptionOptions {
            from: Some(i64::MIN),
            ..options.clone().unwrap_or_default()
        };
        let probe = subscribe_text(id, u32::MAX, &sql, Some(&probe_options));
        if probe.len() > MAX_CLIENT_FRAME {
            return Err(Error::InvalidInput(format!(
                "subscription SQL too long: the subscribe frame would be {} bytes (limit {MAX_CLIENT_FRAME})",
                probe.len()
            )));
        }
        self.next_sub += 1;
        self.subs.insert(
            id,
            Sub {
                sql,
                acked_once: false,
                options,
                last_seq: None,
                phase: SubPhase::Queued,
                resumed_from: None,
                generation: 0,
                last_batch: None,
                deadline: None,
                held: None,
                next_page: None,
            },
        );
        self.set_deadline(id, Some(now.instant + self.config.subscribe_timeout));
        if matches!(self.conn, Conn::Ready) {
            self.enqueue_subscribe(id, false);
            self.flush(now);
        } else {
            self.connect(now);
        }
        Ok(id)
    }

    /// Removes a subscription (sends `unsubscribe` if the server knows it).
    pub fn unsubscribe(&mut self, sub: SubId, now: Now) {
        self.set_deadline(sub, None);
        self.recent.remove(&sub);
        let Some(s) = self.subs.remove(&sub) else {
            return;
        };
        // A subscribe still in the queue is simply not sent.
        if matches!(self.conn, Conn::Ready) && s.phase != SubPhase::Queued {
            self.queue.push_back(Pending::Unsubscribe(sub.wire(s.generation)));
            self.flush(now);
        }
    }

    /// The consumer of `sub` has room for another page of initial rows: if
    /// one is due, it is asked for now.
    pub fn handle_subscriber_room(&mut self, sub: SubId, now: Now) {
        let Some(s) = self.subs.get_mut(&sub) else { return };
        if s.phase != SubPhase::Loading || !matches!(self.conn, Conn::Ready) {
            return;
        }
        if let Some(last_seq_id) = s.next_page.take() {
            self.queue.push_back(Pending::NextBatch { sub, last_seq_id });
            self.flush(now);
        }
    }

    /// Queues a subscribe for the pacer, holding its deadline meanwhile.
    pub(super) fn enqueue_subscribe(&mut self, id: SubId, front: bool) {
        let held = self.subs.get(&id).and_then(|s| s.deadline);
        self.set_deadline(id, None);
        if let Some(s) = self.subs.get_mut(&id) {
            s.held = held;
        }
        if front {
            self.queue.push_front(Pending::Subscribe(id));
        } else {
            self.queue.push_back(Pending::Subscribe(id));
        }
    }

    pub(super) fn set_deadline(&mut self, id: SubId, deadline: Option<Instant>) {
        let Some(s) = self.subs.get_mut(&id) else {
            return;
        };
        if let Some(old) = s.deadline.take() {
            self.deadlines.remove(&(old, id));
        }
        if let Some(new) = deadline {
            s.deadline = Some(new);
            self.deadlines.insert((new, id));
        }
    }

    /// Ends every subscription whose acknowledgement is overdue.
    pub(super) fn expire_subscriptions(&mut self, now: Now) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now.instant {
                return;
            }
            self.deadlines.pop_first();
            self.recent.remove(&id);
            let Some(s) = self.subs.remove(&id) else {
                continue;
            };
            let ready = matches!(self.conn, Conn::Ready);
            if ready && s.phase != SubPhase::Queued {
                // It may still be answered: make sure it stops.
                self.queue.push_back(Pending::Unsubscribe(id.wire(s.generation)));
            }
            // Never sent because no socket could be had: say why, not
            // only that no acknowledgement came.
            let error = match &self.last_failure {
                Some(failure) if !ready && s.phase == SubPhase::Queued => failure.clone(),
                _ => Error::SubscribeTimeout(self.config.subscribe_timeout),
            };
            self.sub_event(id, LiveEvent::Closed(Some(error)));
        }
    }

    pub(super) fn resubscribe_all(&mut self, now: Now) {
        let ids: Vec<SubId> = self.subs.keys().copied().collect();
        for id in ids {
            let Some(s) = self.subs.get_mut(&id) else {
                continue;
            };
            // Resume after the last `_seq` seen: the server sends rows changed
            // meanwhile as initial data (deletions meanwhile are not reported).
            s.resumed_from = s.last_seq;
            if s.deadline.is_none() {
                // A resubscribe is due within the same limit as a subscribe;
                // one still awaited by its caller keeps the caller's deadline.
                self.set_deadline(id, Some(now.instant + self.config.subscribe_timeout));
            }
            self.enqueue_subscribe(id, false);
        }
        self.flush(now);
    }
}

/// The options of a (re)subscribe: after a reconnect, resume after the last
/// `_seq` seen.
pub(super) fn resume_options(s: &Sub) -> Option<SubscriptionOptions> {
    match (s.resumed_from, &s.options) {
        (Some(seq), Some(o)) => Some(SubscriptionOptions {
            batch_size: o.batch_size,
            last_rows: None,
            from: Some(seq),
        }),
        (Some(seq), None) => Some(SubscriptionOptions {
            batch_size: Some(MAX_BATCH_SIZE),
            last_rows: None,
            from: Some(seq),
        }),
        (None, o) => o.clone(),
    }
}

pub(super) fn subscribe_text(id: SubId, generation: u32, sql: &str, options: Option<&SubscriptionOptions>) -> String {
    ClientMessage::Subscribe {
        subscription: Subscription {
            id: &id.wire(generation),
            sql,
            options,
        },
    }
    .to_text()
}
