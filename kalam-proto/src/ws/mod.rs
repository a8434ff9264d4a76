//! The WebSocket session machine.
//!
//! [`WsSession`] owns one live-query connection and every subscription on it.
//! Like [`AuthMachine`](crate::AuthMachine) it is pure: the driver opens and
//! closes sockets, moves frames, and asks the auth machine for tokens when
//! told to; the session decides everything else.
//!
//! ```text
//!  Disconnected ─want─► WaitingToken ─token─► Connecting ─socket up─► Authenticating ─auth_success─► Ready
//!        ▲                   │ no credentials                              │ auth_error (1008)        │
//!        │                   ▼                                            ▼                          │ drop, silence,
//!        └── disconnect() ── Failed (until new credentials / connect()) ◄─┘ (token reported rejected) │ close
//!                                                                                                    ▼
//!                                         WaitingToken ◄── backoff with seeded jitter ── BackingOff ◄┘
//! ```
//!
//! - Authenticates with the `authenticate` message (with the `protocol`
//!   field the server requires). The token comes from the auth machine
//!   ([`WsOutput::NeedToken`]), which never hands out one about to expire; on
//!   every reconnect it is asked for *fresh* credentials, so a
//!   `DynamicAuthProvider` is called again.
//! - `auth_error` is a typed error to the application and the token is
//!   reported rejected ([`WsOutput::TokenRejected`]); the session reconnects
//!   only with credentials the auth machine obtains afresh, and never with
//!   the token just refused.
//! - Subscriptions share the socket, are routed by id through a map, page
//!   their initial data with `next_batch`, track the highest `_seq` seen
//!   (deletions included), and are re-subscribed from it after a reconnect.
//! - Keepalive: a control ping whenever nothing was sent for
//!   `ping_interval` (≤ 5 s; the server drops a client silent for 10 s), and
//!   the connection counts as dead when nothing at all arrived for
//!   `silence_limit`. Deadlines are compared, not re-armed per frame.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::error::{Error, ErrorCode, ServerError, TransportError};
use crate::framing::Endpoints;
use crate::options::{ConnectionOptions, KalamLinkTimeouts};
use crate::secret::Secret;
use crate::time::{Instant, Now};
use crate::types::SchemaField;
mod backoff;
mod config;
mod incoming;
mod io;
mod pacer;

use crate::live::{LiveEvent, LiveRow, SubscriptionState};
use crate::ws_messages::{
    self, BatchControl, ChangeType, ClientMessage, MAX_BATCH_SIZE, MAX_CLIENT_FRAME, Protocol, ServerMessage,
    Subscription, SubscriptionOptions,
};
use backoff::SplitMix64;
pub use config::{DEFAULT_SEND_BURST, DEFAULT_SEND_RATE, WsConfig};
pub use io::{Incoming, WsEvent, WsOutput};
use pacer::Pacer;

/// A subscription's handle within one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubId(pub u64);

impl SubId {
    /// The id on the wire: `k7` for the first subscribe of subscription 7,
    /// `k7.2` for its second retry after a rate-limit refusal (so that a
    /// late answer to an earlier attempt is told apart, never taken twice).
    fn wire(self, generation: u32) -> String {
        if generation == 0 {
            format!("k{}", self.0)
        } else {
            format!("k{}.{generation}", self.0)
        }
    }

    fn from_wire(id: &str) -> Option<(SubId, u32)> {
        let rest = id.strip_prefix('k')?;
        let (sub, generation) = match rest.split_once('.') {
            Some((sub, g)) => (sub, g.parse().ok()?),
            None => (rest, 0),
        };
        Some((SubId(sub.parse().ok()?), generation))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubPhase {
    /// Waiting for a ready connection, or in the send queue.
    Queued,
    /// Subscribe sent, waiting for the ack.
    Subscribing,
    /// Ack received; initial pages flowing.
    Loading,
    /// Changes flowing.
    Live,
}

#[derive(Debug)]
struct Sub {
    sql: String,
    /// The server acknowledged it once (on some socket): a later
    /// subscribe is a resubscription.
    acked_once: bool,
    options: Option<SubscriptionOptions>,
    last_seq: Option<i64>,
    phase: SubPhase,
    resumed_from: Option<i64>,
    /// Attempt number of the subscribe on this socket (see [`SubId::wire`]).
    generation: u32,
    /// The last initial page taken (a page repeated by a retry is dropped).
    last_batch: Option<u32>,
    /// When the acknowledgement is due (while one is awaited).
    deadline: Option<Instant>,
    /// The deadline, held while the subscribe waits in the pacing queue
    /// (time spent there is this client's choice, not the server's).
    held: Option<Instant>,
    /// The next initial page, asked for once the consumer has room for it
    /// ([`WsSession::handle_subscriber_room`]): pages are pulled as they
    /// are read, never buffered ahead of the consumer.
    next_page: Option<Option<i64>>,
}

/// A text frame waiting for the pacer. Frames are built when sent, from the
/// state at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Subscribe(SubId),
    NextBatch { sub: SubId, last_seq_id: Option<i64> },
    Unsubscribe(String),
}

/// A text frame sent on this socket and not yet known to be handled. The
/// server handles frames strictly in order and answers `subscribe` and
/// `next_batch` in order, so an answer settles every frame before it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Subscribe(SubId, u32),
    NextBatch {
        sub: SubId,
        generation: u32,
        last_seq_id: Option<i64>,
    },
    Unsubscribe(String),
}

#[derive(Debug)]
enum Conn {
    Disconnected,
    Failed,
    WaitingToken,
    Connecting { token: Secret, deadline: Instant },
    Authenticating { token: Secret, deadline: Instant },
    Ready,
    BackingOff { until: Instant },
}

/// The state of the session, as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsState {
    /// No connection, none wanted.
    Disconnected,
    /// Gave up until new credentials or an explicit connect.
    Failed,
    /// Waiting for a token.
    WaitingToken,
    /// Opening the socket.
    Connecting,
    /// `authenticate` sent.
    Authenticating,
    /// Authenticated.
    Ready,
    /// Waiting to reconnect.
    BackingOff,
}

/// The WebSocket session machine. See the [module docs](self).
#[derive(Debug)]
pub struct WsSession {
    url: String,
    config: WsConfig,
    conn: Conn,
    /// The application wants a connection.
    wanted: bool,
    attempts: u32,
    /// Identifies the current socket (see [`WsOutput::Connect`]).
    attempt: u64,
    rejected: Option<Secret>,
    /// The last `auth_error`, reported if the session gives up.
    auth_failure: Option<Error>,
    /// Why the last attempt to connect failed, since the socket was last
    /// ready: what a subscription that never got sent fails with.
    last_failure: Option<Error>,
    subs: BTreeMap<SubId, Sub>,
    /// Acknowledgement deadlines, earliest first.
    deadlines: BTreeSet<(Instant, SubId)>,
    next_sub: u64,
    last_sent: Instant,
    last_recv: Instant,
    /// Text frames waiting for the pacer.
    queue: VecDeque<Pending>,
    /// Text frames sent and not yet known to be handled.
    unsettled: VecDeque<Sent>,
    pacer: Pacer,
    /// After a rate-limit refusal, nothing is sent until then.
    paused_until: Option<Instant>,
    /// Rate-limit refusals in a row (the pause doubles with each).
    strikes: u32,
    rng: SplitMix64,
    out: VecDeque<WsOutput>,
}

impl WsSession {
    /// A session for the server at `endpoints`. Nothing happens until
    /// [`connect`](Self::connect) or [`subscribe`](Self::subscribe).
    pub fn new(endpoints: &Endpoints, config: WsConfig) -> Self {
        let query = if config.gzip { None } else { Some("compress=false") };
        WsSession {
            url: endpoints.ws_url(query),
            rng: SplitMix64(config.seed),
            pacer: Pacer::new(config.send_burst, config.send_rate),
            config,
            conn: Conn::Disconnected,
            wanted: false,
            attempts: 0,
            attempt: 0,
            rejected: None,
            auth_failure: None,
            last_failure: None,
            subs: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_sub: 1,
            last_sent: Instant::ZERO,
            last_recv: Instant::ZERO,
            queue: VecDeque::new(),
            unsettled: VecDeque::new(),
            paused_until: None,
            strikes: 0,
            out: VecDeque::new(),
        }
    }

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

    /// The state of the connection.
    pub fn state(&self) -> WsState {
        match self.conn {
            Conn::Disconnected => WsState::Disconnected,
            Conn::Failed => WsState::Failed,
            Conn::WaitingToken => WsState::WaitingToken,
            Conn::Connecting { .. } => WsState::Connecting,
            Conn::Authenticating { .. } => WsState::Authenticating,
            Conn::Ready => WsState::Ready,
            Conn::BackingOff { .. } => WsState::BackingOff,
        }
    }

    /// Number of live subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.subs.len()
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

    /// Text frames waiting for the pacer.
    pub fn queued_frames(&self) -> usize {
        self.queue.len()
    }

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

    /// A frame arrived.
    pub fn handle_frame(&mut self, frame: Incoming<'_>, now: Now) {
        if !self.socket_open() {
            return;
        }
        self.last_recv = now.instant;
        let message = match frame {
            Incoming::Control => return,
            Incoming::Text(t) => ws_messages::decode_text(t),
            Incoming::Binary(b) => ws_messages::decode_binary_within(b, self.config.max_inflated),
        };
        match message {
            Ok(m) => self.on_message(m, now),
            // Bad input loses nothing else: report it and carry on.
            Err(e) => self.event(WsEvent::Error(Error::Decode(e))),
        }
        self.flush(now);
    }

    /// Call when [`poll_timeout`](Self::poll_timeout) is reached.
    pub fn handle_timeout(&mut self, now: Now) {
        let t = now.instant;
        match &self.conn {
            Conn::Connecting { deadline, .. } if *deadline <= t => {
                self.event(WsEvent::Error(Error::Transport(TransportError::Timeout(
                    self.config.connect_timeout,
                ))));
                self.out.push_back(WsOutput::Close {
                    code: 1000,
                    reason: "connect timeout",
                });
                self.lost("connect timeout", now);
            }
            Conn::Authenticating { deadline, .. } if *deadline <= t => {
                self.event(WsEvent::Error(Error::Transport(TransportError::Timeout(
                    self.config.auth_timeout,
                ))));
                self.out.push_back(WsOutput::Close {
                    code: 1000,
                    reason: "auth timeout",
                });
                self.lost("no answer to authenticate", now);
            }
            Conn::BackingOff { until } if *until <= t => self.request_token(true, now),
            _ => {}
        }
        if self.socket_open() {
            if t.saturating_duration_since(self.last_recv) >= self.config.silence_limit {
                self.out.push_back(WsOutput::Close {
                    code: 1000,
                    reason: "server silent",
                });
                self.lost("the server went silent", now);
            } else if t.saturating_duration_since(self.last_sent) >= self.config.ping_interval {
                self.last_sent = t;
                self.out.push_back(WsOutput::SendPing);
            }
        }
        self.expire_subscriptions(now);
        if self.paused_until.is_some_and(|p| p <= t) {
            self.paused_until = None;
        }
        self.flush(now);
    }

    // ---------------------------------------------------------------- outputs

    /// The next thing to do, until `None`.
    pub fn poll_output(&mut self) -> Option<WsOutput> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let keepalive = || {
            let ping = self.last_sent + self.config.ping_interval;
            let dead = self.last_recv + self.config.silence_limit;
            ping.min(dead)
        };
        let conn = match &self.conn {
            Conn::Connecting { deadline, .. } => Some(*deadline),
            Conn::Authenticating { deadline, .. } => Some((*deadline).min(keepalive())),
            Conn::Ready => Some(keepalive()),
            Conn::BackingOff { until } => Some(*until),
            _ => None,
        };
        let send = if matches!(self.conn, Conn::Ready) && !self.queue.is_empty() {
            let ready = self.pacer.ready_at();
            Some(self.paused_until.map_or(ready, |p| p.max(ready)))
        } else {
            None
        };
        let ack = self.deadlines.first().map(|(at, _)| *at);
        [conn, send, ack].into_iter().flatten().min()
    }

    // -------------------------------------------------------------- internals

    fn socket_open(&self) -> bool {
        matches!(self.conn, Conn::Authenticating { .. } | Conn::Ready)
    }

    fn event(&mut self, e: WsEvent) {
        match &e {
            WsEvent::Error(failure @ Error::Transport(_)) => self.last_failure = Some(failure.clone()),
            WsEvent::Connected => self.last_failure = None,
            _ => {}
        }
        self.out.push_back(WsOutput::Event(e));
    }

    fn emit_text(&mut self, text: String, now: Now) {
        self.last_sent = now.instant;
        self.out.push_back(WsOutput::SendText(text));
    }

    /// Forgets what was queued for or sent on the current socket.
    fn forget_socket(&mut self) {
        self.queue.clear();
        self.unsettled.clear();
        self.paused_until = None;
        self.strikes = 0;
    }

    /// Queues a subscribe for the pacer, holding its deadline meanwhile.
    fn enqueue_subscribe(&mut self, id: SubId, front: bool) {
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

    fn set_deadline(&mut self, id: SubId, deadline: Option<Instant>) {
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
    fn expire_subscriptions(&mut self, now: Now) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now.instant {
                return;
            }
            self.deadlines.pop_first();
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

    fn request_token(&mut self, fresh: bool, _now: Now) {
        self.conn = Conn::WaitingToken;
        self.out.push_back(WsOutput::NeedToken { fresh });
    }

    /// Gives up until new credentials or an explicit connect: the error is
    /// reported once, and every subscription ends with it.
    fn fail(&mut self, e: Error) {
        self.conn = Conn::Failed;
        self.auth_failure = None;
        self.event(WsEvent::Error(e.clone()));
        self.end_all(Some(e));
    }

    fn end_all(&mut self, e: Option<Error>) {
        self.deadlines.clear();
        for (id, _) in std::mem::take(&mut self.subs) {
            self.sub_event(id, LiveEvent::Closed(e.clone()));
        }
    }

    /// The connection is gone: back off and reconnect, or stop.
    fn lost(&mut self, reason: &str, now: Now) {
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

    fn resubscribe_all(&mut self, now: Now) {
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
fn resume_options(s: &Sub) -> Option<SubscriptionOptions> {
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

fn subscribe_text(id: SubId, generation: u32, sql: &str, options: Option<&SubscriptionOptions>) -> String {
    ClientMessage::Subscribe {
        subscription: Subscription {
            id: &id.wire(generation),
            sql,
            options,
        },
    }
    .to_text()
}
