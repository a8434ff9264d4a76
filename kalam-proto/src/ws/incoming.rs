//! What the session does with each server message: one function per kind.

use super::*;

impl WsSession {
    pub(super) fn on_message(&mut self, message: ServerMessage, now: Now) {
        match message {
            ServerMessage::AuthSuccess { .. } => self.on_auth_success(now),
            ServerMessage::AuthError { message } => self.on_auth_error(message, now),
            ServerMessage::SubscriptionAck {
                subscription_id,
                schema,
                ..
            } => self.on_subscription_ack(&subscription_id, schema),
            ServerMessage::InitialDataBatch {
                subscription_id,
                rows,
                batch_control,
            } => self.on_initial_data(&subscription_id, rows, batch_control),
            ServerMessage::Change {
                subscription_id,
                change_type,
                rows,
                old_values,
            } => self.on_change(&subscription_id, change_type, rows, old_values),
            ServerMessage::Error {
                subscription_id,
                code,
                message,
            } => self.on_error(&subscription_id, &code, message, now),
        }
    }

    /// `auth_success`: the socket is ready; every subscription is (re)sent.
    fn on_auth_success(&mut self, now: Now) {
        if matches!(self.conn, Conn::Authenticating { .. }) {
            self.conn = Conn::Ready;
            self.attempts = 0;
            self.rejected = None;
            self.auth_failure = None;
            self.event(WsEvent::Connected);
            self.resubscribe_all(now);
        }
    }

    /// `auth_error`: the token is reported rejected (unless the server only
    /// limited the rate of authentications) and the socket is given up.
    fn on_auth_error(&mut self, message: String, now: Now) {
        // The server's auth rate limit says nothing about the token.
        let rate_limited = message.contains("Too many");
        if let Conn::Authenticating { token, .. } = &self.conn
            && !rate_limited
        {
            let token = token.clone();
            self.out.push_back(WsOutput::TokenRejected(token.clone()));
            self.rejected = Some(token);
        }
        // Reported once: when the session gives up (no new
        // credentials), not if a reconnect with new ones succeeds.
        self.auth_failure = Some(Error::WsAuthFailed(message));
        self.out.push_back(WsOutput::Close {
            code: 1000,
            reason: "authentication failed",
        });
        self.lost("authentication failed", now);
    }

    /// `subscription_ack`: the subscription is live, or its initial pages follow.
    fn on_subscription_ack(&mut self, wire: &str, schema: Vec<SchemaField>) {
        let Some((id, generation)) = self.answer_for(wire, true) else {
            return;
        };
        self.set_deadline(id, None);
        let Some(s) = self.subs.get_mut(&id) else {
            return;
        };
        if s.generation != generation || s.phase != SubPhase::Subscribing {
            return;
        }
        let expects_batches = s.options.is_some() || s.resumed_from.is_some();
        s.acked_once = true;
        s.phase = if expects_batches {
            SubPhase::Loading
        } else {
            SubPhase::Live
        };
        let resumed_from = s.resumed_from;
        self.sub_event(id, LiveEvent::Subscribed { schema, resumed_from });
        if !expects_batches {
            self.sub_event(id, LiveEvent::Ready);
        }
    }

    /// `initial_data_batch`: one page of the initial rows; the next is asked
    /// for while there are more.
    fn on_initial_data(&mut self, wire: &str, rows: Vec<LiveRow>, batch_control: BatchControl) {
        let Some((id, _)) = self.answer_for(wire, true) else {
            return;
        };
        let Some(s) = self.subs.get_mut(&id) else {
            return;
        };
        let BatchControl {
            has_more,
            last_seq_id,
            batch_num,
            ..
        } = batch_control;
        if s.phase != SubPhase::Loading || s.last_batch.is_some_and(|b| batch_num <= b) {
            return; // a page already taken (answer to a retried next_batch)
        }
        s.last_batch = Some(batch_num);
        let mut rows = rows;
        if self.config.drop_resumed_duplicates {
            drop_delivered(&mut self.recent, id, s.resumed_from.is_some(), &mut rows, None);
        }
        for r in &rows {
            s.last_seq = s.last_seq.max(r.seq());
        }
        if has_more {
            // Asked for once the consumer has room for it.
            s.next_page = Some(last_seq_id);
        } else {
            s.phase = SubPhase::Live;
        }
        self.sub_event(id, LiveEvent::InitialRows { rows, has_more });
        if !has_more {
            self.sub_event(id, LiveEvent::Ready);
        }
    }

    /// `change`: one event per row; the highest `_seq` seen (deletions
    /// included) is where a resume starts.
    fn on_change(&mut self, wire: &str, change_type: ChangeType, rows: Vec<LiveRow>, old_values: Vec<LiveRow>) {
        let Some((id, _)) = self.answer_for(wire, false) else {
            return;
        };
        let Some(s) = self.subs.get_mut(&id) else {
            return;
        };
        for r in rows.iter().chain(old_values.iter()) {
            s.last_seq = s.last_seq.max(r.seq());
        }
        let (mut rows, mut old_values) = (rows, old_values);
        let dedupe = self.config.drop_resumed_duplicates;
        if dedupe {
            let resumed = s.resumed_from.is_some();
            match change_type {
                ChangeType::Insert => drop_delivered(&mut self.recent, id, resumed, &mut rows, None),
                ChangeType::Update => drop_delivered(&mut self.recent, id, resumed, &mut rows, Some(&mut old_values)),
                ChangeType::Delete => drop_delivered(&mut self.recent, id, resumed, &mut old_values, None),
            }
        }
        match change_type {
            ChangeType::Insert => {
                for row in rows {
                    self.sub_event(id, LiveEvent::Insert { row });
                }
            }
            ChangeType::Update => {
                let mut old = old_values.into_iter();
                for row in rows {
                    let old = old.next().unwrap_or_default();
                    self.sub_event(id, LiveEvent::Update { row, old });
                }
            }
            ChangeType::Delete => {
                for old in old_values {
                    self.sub_event(id, LiveEvent::Delete { old });
                }
            }
        }
    }

    /// `error`: the server's rate limit (a frame was dropped), a refused
    /// subscription, or an error for the whole connection.
    fn on_error(&mut self, wire: &str, code: &str, message: String, now: Now) {
        let code = ErrorCode::parse(code);
        if wire == "rate_limit" && code == ErrorCode::RateLimitExceeded {
            if matches!(self.conn, Conn::Ready) {
                self.rate_limited(now);
            }
            return;
        }
        let error = Error::Server(ServerError {
            status: 0,
            code,
            message,
            details: None,
            retry_after_secs: None,
        });
        match self.answer_for(wire, true) {
            Some((id, generation)) if self.subs.get(&id).is_some_and(|s| s.generation == generation) => {
                self.set_deadline(id, None);
                self.subs.remove(&id);
                self.recent.remove(&id);
                self.sub_event(id, LiveEvent::Closed(Some(error)));
            }
            Some(_) => {} // an earlier attempt's late refusal
            None => self.event(WsEvent::Error(error)),
        }
    }

    /// The subscription a frame is for: only on an authenticated socket,
    /// and only one whose subscribe was sent on it (a frame out of turn,
    /// from a misbehaving server or proxy, is ignored). With `answer`, the
    /// frame answers a subscribe or next_batch: every frame sent before it
    /// is settled. A late answer to an earlier attempt (after a retry) gets
    /// its subscription stopped and is not routed.
    pub(super) fn answer_for(&mut self, wire: &str, answer: bool) -> Option<(SubId, u32)> {
        if !matches!(self.conn, Conn::Ready) {
            return None;
        }
        let (id, generation) = SubId::from_wire(wire)?;
        if answer {
            self.settle(|s| match s {
                Sent::Subscribe(i, g)
                | Sent::NextBatch {
                    sub: i, generation: g, ..
                } => *i == id && *g == generation,
                Sent::Unsubscribe(_) => false,
            });
        }
        let s = self.subs.get(&id)?;
        if s.phase == SubPhase::Queued && s.generation == generation {
            return None;
        }
        if s.generation != generation {
            if generation < s.generation && answer {
                // The server took an attempt we believed refused: stop it.
                let pending = Pending::Unsubscribe(id.wire(generation));
                if !self.queue.contains(&pending) {
                    self.queue.push_back(pending);
                }
            }
            return None;
        }
        Some((id, generation))
    }

    pub(super) fn sub_event(&mut self, id: SubId, e: LiveEvent) {
        self.out.push_back(WsOutput::Event(WsEvent::Sub(id, e)));
    }
}

/// Drops from `rows` those already delivered on subscription `id` (after
/// a resume; see `WsSession::recent`) and remembers the others.
fn drop_delivered(
    recent: &mut BTreeMap<SubId, VecDeque<u64>>,
    id: SubId,
    resumed: bool,
    rows: &mut Vec<LiveRow>,
    paired: Option<&mut Vec<LiveRow>>,
) {
    let seen = recent.entry(id).or_default();
    if resumed && !seen.is_empty() {
        let kept: Vec<bool> = rows.iter().map(|r| !seen.contains(&r.digest())).collect();
        let mut flags = kept.iter();
        rows.retain(|_| flags.next().copied().unwrap_or(true));
        if let Some(old) = paired {
            // An update's old values go with their new rows.
            let mut flags = kept.iter();
            old.retain(|_| flags.next().copied().unwrap_or(true));
        }
    }
    for r in rows.iter() {
        if seen.len() == RECENT {
            seen.pop_front();
        }
        seen.push_back(r.digest());
    }
}
