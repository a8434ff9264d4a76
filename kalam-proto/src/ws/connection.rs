//! The session's connection lifecycle: asking for a token, the socket
//! coming up, authenticating, and what happens when it closes, fails or
//! falls silent (backing off, then reconnecting and resubscribing).

use super::*;

impl WsSession {
    // ----------------------------------------------------------------- inputs

    /// The application wants the connection open (`connect()`, or the first
    /// subscription with lazy connect). Also retries after `Failed`.
    pub fn connect(&mut self, now: Now) {
        self.wanted = true;
        if matches!(self.conn, Conn::Disconnected | Conn::Failed) {
            // An explicit request is not a blind retry: the application may
            // know the server changed its mind, so a refused token may be
            // tried once more.
            self.rejected = None;
            self.auth_failure = None;
            self.attempts = 0;
            self.request_token(false, now);
        }
    }

    /// The application closes the connection; every subscription ends.
    pub fn disconnect(&mut self, _now: Now) {
        self.wanted = false;
        if self.socket_open() {
            self.out.push_back(WsOutput::Close {
                code: 1000,
                reason: "client disconnect",
            });
        }
        let was_up = !matches!(self.conn, Conn::Disconnected | Conn::Failed);
        self.conn = Conn::Disconnected;
        self.forget_socket();
        self.deadlines.clear();
        for (id, _) in std::mem::take(&mut self.subs) {
            self.out
                .push_back(WsOutput::Event(WsEvent::Sub(id, LiveEvent::Closed(None))));
        }
        if was_up {
            self.event(WsEvent::Disconnected {
                reason: "client disconnect".into(),
                will_reconnect: false,
            });
        }
    }

    /// New credentials were configured: a session that gave up tries again.
    pub fn handle_credentials_changed(&mut self, now: Now) {
        self.rejected = None;
        if self.wanted && matches!(self.conn, Conn::Failed) {
            self.attempts = 0;
            self.request_token(false, now);
        }
    }

    /// The auth machine's answer to [`WsOutput::NeedToken`].
    pub fn handle_token(&mut self, token: Result<Secret, Error>, now: Now) {
        if !matches!(self.conn, Conn::WaitingToken) {
            return;
        }
        match token {
            Ok(t) if self.rejected.as_ref() == Some(&t) => {
                // The same token the server just refused: no blind retry.
                let e = self.auth_failure.take().unwrap_or_else(|| {
                    Error::WsAuthFailed("no new credentials after the server refused the token".into())
                });
                self.fail(e);
            }
            Ok(token) => {
                self.attempt += 1;
                self.conn = Conn::Connecting {
                    token,
                    deadline: now.instant + self.config.connect_timeout,
                };
                self.out.push_back(WsOutput::Connect {
                    url: self.url.clone(),
                    attempt: self.attempt,
                });
            }
            Err(e) if matches!(e, Error::Transport(_)) => {
                // The server could not be reached for a token: say why.
                let why = format!("no token: {e}");
                self.event(WsEvent::Error(e));
                self.lost(&why, now);
            }
            Err(e) => {
                // After a refused authentication, the refusal says more than
                // the failed attempt to renew credentials.
                let e = self.auth_failure.take().unwrap_or(e);
                self.fail(e);
            }
        }
    }

    /// The socket of `attempt` is open. Returns `false` when the session no
    /// longer wants it (the driver then drops it).
    pub fn handle_connected(&mut self, attempt: u64, now: Now) -> bool {
        if attempt != self.attempt || !matches!(self.conn, Conn::Connecting { .. }) {
            return false;
        }
        let Conn::Connecting { token, .. } = std::mem::replace(&mut self.conn, Conn::Disconnected) else {
            return false;
        };
        let text = ClientMessage::Authenticate {
            method: "jwt",
            token: token.expose(),
            protocol: Protocol::json(self.config.gzip),
        }
        .to_text();
        self.conn = Conn::Authenticating {
            token,
            deadline: now.instant + self.config.auth_timeout,
        };
        self.last_recv = now.instant;
        // A fresh socket has a fresh (full) bucket at the server.
        self.forget_socket();
        self.pacer.reset(now.instant);
        self.pacer.take(now.instant);
        self.emit_text(text, now);
        true
    }

    /// The token held for the socket of `attempt`, not yet sent, is no
    /// longer good (expired, refused or replaced since it was handed over):
    /// that socket is not used (a later [`handle_connected`](Self::handle_connected)
    /// for it returns `false`) and a new token is asked for.
    pub fn handle_token_stale(&mut self, attempt: u64, now: Now) {
        if attempt == self.attempt && matches!(self.conn, Conn::Connecting { .. }) {
            self.request_token(false, now);
        }
    }

    /// The socket of `attempt` closed, dropped, or could not be opened.
    pub fn handle_closed(&mut self, attempt: u64, code: Option<u16>, reason: &str, now: Now) {
        if attempt != self.attempt || !(self.socket_open() || matches!(self.conn, Conn::Connecting { .. })) {
            return;
        }
        let why = match code {
            Some(c) => format!("closed by the server ({c} {reason})"),
            None if reason.is_empty() => "connection lost".to_owned(),
            None => reason.to_owned(),
        };
        // Say where (the URL carries no secret: the token goes in a frame).
        let why = format!("WebSocket {}: {why}", self.url);
        match self.conn {
            Conn::Connecting { .. } => {
                self.event(WsEvent::Error(Error::Transport(TransportError::Connect(why.clone()))));
            }
            Conn::Authenticating { .. } => {
                // Open, but gone before `auth_success` (a 1011, a proxy's
                // reset): the attempt failed; say so, as for one that never
                // opened.
                let cause = format!("{why} before the server answered authenticate");
                self.event(WsEvent::Error(Error::Transport(TransportError::Connect(cause))));
            }
            _ => {}
        }
        self.lost(&why, now);
    }

    /// The socket of `attempt` could not be opened (connect, proxy, TLS
    /// or upgrade): `error` is the typed cause.
    pub fn handle_failed(&mut self, attempt: u64, error: TransportError, now: Now) {
        if attempt != self.attempt || !matches!(self.conn, Conn::Connecting { .. }) {
            return;
        }
        let error = error.at(&format!("WebSocket {}", self.url));
        let why = error.to_string();
        self.event(WsEvent::Error(Error::Transport(error)));
        self.lost(&why, now);
    }

    // -------------------------------------------------------------- internals

    pub(super) fn socket_open(&self) -> bool {
        matches!(self.conn, Conn::Authenticating { .. } | Conn::Ready)
    }

    /// Forgets what was queued for or sent on the current socket.
    pub(super) fn forget_socket(&mut self) {
        self.queue.clear();
        self.unsettled.clear();
        self.paused_until = None;
        self.strikes = 0;
    }

    pub(super) fn request_token(&mut self, fresh: bool, _now: Now) {
        self.conn = Conn::WaitingToken;
        self.out.push_back(WsOutput::NeedToken { fresh });
    }

    /// The connection is gone: back off and reconnect, or stop.
    pub(super) fn lost(&mut self, reason: &str, now: Now) {
        // A socket that was open (ready, or still authenticating) is
        // reported closed, whatever follows.
        let was_open = self.socket_open();
        self.forget_socket();
        let mut held = Vec::new();
        for (id, s) in self.subs.iter_mut() {
            s.phase = SubPhase::Queued;
            s.next_page = None;
            s.generation = 0;
            if let Some(d) = s.held.take() {
                held.push((*id, d));
            }
        }
        // Those still in the pacing queue wait for the next socket with
        // their deadline running again.
        for (id, d) in held {
            self.set_deadline(id, Some(d));
        }
        let give_up = self
            .config
            .max_reconnect_attempts
            .is_some_and(|max| self.attempts >= max);
        let will_reconnect = self.wanted && self.config.auto_reconnect && !give_up;
        if will_reconnect {
            let delay = self.backoff();
            self.attempts = self.attempts.saturating_add(1);
            self.conn = Conn::BackingOff {
                until: now.instant + delay,
            };
        } else {
            self.conn = if self.wanted { Conn::Failed } else { Conn::Disconnected };
        }
        if was_open || !will_reconnect {
            self.event(WsEvent::Disconnected {
                reason: reason.to_owned(),
                will_reconnect,
            });
        }
        if was_open && will_reconnect {
            // Each stream hears of it; `Subscribed { resumed_from }` follows
            // when the subscription is back.
            let ids: Vec<SubId> = self.subs.keys().copied().collect();
            for id in ids {
                self.sub_event(
                    id,
                    LiveEvent::Reconnecting {
                        reason: reason.to_owned(),
                    },
                );
            }
        }
        if !will_reconnect && self.wanted {
            // Given up: subscriptions end with the reason.
            match self.auth_failure.take() {
                Some(e) => self.fail(e),
                None => self.end_all(Some(Error::Transport(TransportError::Connect(reason.to_owned())))),
            }
        }
    }
}
