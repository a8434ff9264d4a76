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
use crate::ws_messages::{
    self, BatchControl, ChangeType, ClientMessage, LiveRow, MAX_BATCH_SIZE, MAX_CLIENT_FRAME, Protocol, ServerMessage,
    Subscription, SubscriptionOptions,
};

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

/// Settings of a session.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Send a ping when nothing was sent for this long (≤ 5 s).
    pub ping_interval: Duration,
    /// Treat the connection as dead when nothing arrived for this long.
    pub silence_limit: Duration,
    /// Limit for the TCP + WebSocket handshake.
    pub connect_timeout: Duration,
    /// Limit for the `authenticate` exchange.
    pub auth_timeout: Duration,
    /// Reconnect after a drop.
    pub auto_reconnect: bool,
    /// First reconnect delay.
    pub reconnect_delay: Duration,
    /// Longest reconnect delay.
    pub max_reconnect_delay: Duration,
    /// Give up after this many failed attempts in a row.
    pub max_reconnect_attempts: Option<u32>,
    /// Ask for gzip frames (only if this build can read them).
    pub gzip: bool,
    /// Seed of the jitter generator.
    pub seed: u64,
    /// A subscription not acknowledged this long after it was asked for
    /// (or after its subscribe frame left, if pacing held it back) ends with
    /// [`Error::SubscribeTimeout`].
    pub subscribe_timeout: Duration,
    /// Text frames the session may send at once on a fresh socket.
    pub send_burst: u32,
    /// Text frames per second after the burst. The server allows 50 per
    /// second per connection (a token bucket of 50) and drops the excess
    /// (PROTOCOL §6), so the session stays well below.
    pub send_rate: u32,
}

impl WsConfig {
    /// Settings from the client options.
    pub fn from_options(options: &ConnectionOptions, timeouts: &KalamLinkTimeouts, seed: u64) -> Self {
        let ping = options
            .ping_interval
            .min(Duration::from_secs(5))
            .max(Duration::from_millis(10));
        WsConfig {
            ping_interval: ping,
            silence_limit: (ping * 3).max(Duration::from_secs(10)),
            connect_timeout: timeouts.connection_timeout,
            auth_timeout: timeouts.auth_timeout,
            auto_reconnect: options.auto_reconnect,
            reconnect_delay: options.reconnect_delay,
            max_reconnect_delay: options.max_reconnect_delay.max(options.reconnect_delay),
            max_reconnect_attempts: options.max_reconnect_attempts,
            gzip: !options.disable_compression && crate::gzip::SUPPORTED,
            seed,
            subscribe_timeout: timeouts.subscribe_timeout,
            send_burst: DEFAULT_SEND_BURST,
            send_rate: DEFAULT_SEND_RATE,
        }
    }
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig::from_options(&ConnectionOptions::default(), &KalamLinkTimeouts::default(), 0x5eed)
    }
}

/// Text frames sent at once on a fresh socket (the server's bucket holds 50).
pub const DEFAULT_SEND_BURST: u32 = 40;
/// Text frames per second after the burst (the server refills 50 per second).
pub const DEFAULT_SEND_RATE: u32 = 30;

/// A frame the driver received.
#[derive(Debug, Clone)]
pub enum Incoming<'a> {
    /// A text frame.
    Text(&'a str),
    /// A binary frame.
    Binary(&'a [u8]),
    /// A control pong (or ping: any frame proves the server is alive).
    Control,
}

/// What the driver must do next. Its `Debug` shows the size of a text
/// frame, not the text (`authenticate` carries the token).
#[derive(Clone)]
pub enum WsOutput {
    /// Get an access token from the auth machine
    /// ([`Operation::Token`](crate::Operation::Token)) and feed it to
    /// [`WsSession::handle_token`]. `fresh`: ask the dynamic provider again.
    NeedToken {
        /// Ask for new credentials rather than a cached token.
        fresh: bool,
    },
    /// Open a WebSocket to this URL; report [`WsSession::handle_connected`]
    /// or [`WsSession::handle_closed`] with the same `attempt`.
    Connect {
        /// `ws://…/v1/ws?compress=false` or `wss://…`.
        url: String,
        /// Identifies this connection in later reports.
        attempt: u64,
    },
    /// Send a text frame.
    SendText(String),
    /// Send a control ping.
    SendPing,
    /// Close the socket (the session already counts it as gone).
    Close {
        /// Close code.
        code: u16,
        /// Reason.
        reason: &'static str,
    },
    /// Tell the auth machine this token was refused
    /// ([`AuthMachine::handle_token_rejected`](crate::AuthMachine::handle_token_rejected)).
    TokenRejected(Secret),
    /// Something to report to the application.
    Event(WsEvent),
}

impl std::fmt::Debug for WsOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsOutput::NeedToken { fresh } => f.debug_struct("NeedToken").field("fresh", fresh).finish(),
            WsOutput::Connect { url, attempt } => f
                .debug_struct("Connect")
                .field("url", url)
                .field("attempt", attempt)
                .finish(),
            WsOutput::SendText(t) => f
                .debug_tuple("SendText")
                .field(&crate::framing::TextSummary(t))
                .finish(),
            WsOutput::SendPing => f.write_str("SendPing"),
            WsOutput::Close { code, reason } => f
                .debug_struct("Close")
                .field("code", code)
                .field("reason", reason)
                .finish(),
            WsOutput::TokenRejected(t) => f.debug_tuple("TokenRejected").field(t).finish(),
            WsOutput::Event(e) => f.debug_tuple("Event").field(e).finish(),
        }
    }
}

/// Session-level events (the `on_connect` / `on_disconnect` / `on_error`
/// hooks) and subscription events.
#[derive(Debug, Clone)]
pub enum WsEvent {
    /// Authenticated and ready; subscriptions are (re)sent.
    Connected,
    /// The connection ended.
    Disconnected {
        /// Why.
        reason: String,
        /// Whether the session will reconnect by itself.
        will_reconnect: bool,
    },
    /// A connection-level error (refused auth, protocol or rate-limit error).
    Error(Error),
    /// An event of one subscription.
    Sub(SubId, LiveEvent),
}

/// An event of one subscription.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// The server accepted the subscription (again, after a reconnect:
    /// `resumed_from` is then the `_seq` it resumed after).
    Subscribed {
        /// Columns.
        schema: Vec<SchemaField>,
        /// `_seq` of the resume point, after a reconnect.
        resumed_from: Option<i64>,
    },
    /// A page of initial data (after a reconnect: rows changed meanwhile).
    InitialRows {
        /// Rows.
        rows: Vec<LiveRow>,
        /// More pages follow.
        has_more: bool,
    },
    /// Initial data complete: from now on, changes.
    Ready,
    /// A row was inserted.
    Insert {
        /// The new row.
        row: LiveRow,
    },
    /// A row was updated.
    Update {
        /// Non-null columns of the new row, with the key and `_seq`.
        row: LiveRow,
        /// Previous values of the changed columns, with the key and old `_seq`.
        old: LiveRow,
    },
    /// A row was deleted.
    Delete {
        /// The deleted row (with the deletion's `_seq`).
        old: LiveRow,
    },
    /// The subscription failed or ended; no more events follow.
    Closed(Option<Error>),
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

/// Paces text frames below the server's per-connection rate: a generic cell
/// rate algorithm (a token bucket with integer time), so `send_burst` frames
/// may leave at once and then one every `1 s / send_rate`.
#[derive(Debug, Clone)]
struct Pacer {
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time of the next frame.
    tat: Instant,
}

impl Pacer {
    fn new(burst: u32, rate: u32) -> Self {
        let interval = Duration::from_secs(1) / rate.max(1);
        Pacer {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            tat: Instant::ZERO,
        }
    }

    /// When the next frame may leave.
    fn ready_at(&self) -> Instant {
        self.tat - self.tolerance
    }

    /// Takes one slot (callers check [`ready_at`](Self::ready_at) first,
    /// except for `authenticate`, which must go at once).
    fn take(&mut self, now: Instant) {
        self.tat = self.tat.max(now) + self.interval;
    }

    fn reset(&mut self, now: Instant) {
        self.tat = now;
    }
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
                options,
                last_seq: None,
                phase: SubPhase::Queued,
                resumed_from: None,
                generation: 0,
                last_batch: None,
                deadline: None,
                held: None,
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
        if matches!(self.conn, Conn::Connecting { .. }) {
            self.event(WsEvent::Error(Error::Transport(TransportError::Connect(why.clone()))));
        }
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
            Incoming::Binary(b) => ws_messages::decode_binary(b),
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
        self.out.push_back(WsOutput::Event(e));
    }

    fn emit_text(&mut self, text: String, now: Now) {
        self.last_sent = now.instant;
        self.out.push_back(WsOutput::SendText(text));
    }

    /// Sends what the pacer allows from the queue.
    fn flush(&mut self, now: Now) {
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
            if matches!(self.conn, Conn::Ready) && s.phase != SubPhase::Queued {
                // It may still be answered: make sure it stops.
                self.queue.push_back(Pending::Unsubscribe(id.wire(s.generation)));
            }
            let error = Error::SubscribeTimeout(self.config.subscribe_timeout);
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
        let was_ready = matches!(self.conn, Conn::Ready);
        self.forget_socket();
        let mut held = Vec::new();
        for (id, s) in self.subs.iter_mut() {
            s.phase = SubPhase::Queued;
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
        if was_ready || !will_reconnect {
            self.event(WsEvent::Disconnected {
                reason: reason.to_owned(),
                will_reconnect,
            });
        }
        if !will_reconnect && self.wanted {
            // Given up: subscriptions end with the reason.
            match self.auth_failure.take() {
                Some(e) => self.fail(e),
                None => self.end_all(Some(Error::Transport(TransportError::Connect(reason.to_owned())))),
            }
        }
    }

    /// Exponential backoff with "equal jitter": half fixed, half random.
    fn backoff(&mut self) -> Duration {
        let base = self.config.reconnect_delay.as_millis() as u64;
        let max = self.config.max_reconnect_delay.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << self.attempts.min(20)).min(max).max(1);
        let half = exp / 2;
        Duration::from_millis(half + self.rng.next() % (exp - half + 1))
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

    /// Marks every frame up to the one `settles` matches as handled.
    fn settle(&mut self, settles: impl Fn(&Sent) -> bool) {
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
    fn rate_limited(&mut self, now: Now) {
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

    fn on_message(&mut self, message: ServerMessage, now: Now) {
        match message {
            ServerMessage::AuthSuccess { .. } => {
                if matches!(self.conn, Conn::Authenticating { .. }) {
                    self.conn = Conn::Ready;
                    self.attempts = 0;
                    self.rejected = None;
                    self.auth_failure = None;
                    self.event(WsEvent::Connected);
                    self.resubscribe_all(now);
                }
            }
            ServerMessage::AuthError { message } => {
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
            ServerMessage::SubscriptionAck {
                subscription_id,
                schema,
                ..
            } => {
                let Some((id, generation)) = self.answer_for(&subscription_id, true) else {
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
            ServerMessage::InitialDataBatch {
                subscription_id,
                rows,
                batch_control,
            } => {
                let Some((id, _)) = self.answer_for(&subscription_id, true) else {
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
                for r in &rows {
                    s.last_seq = s.last_seq.max(r.seq());
                }
                if !has_more {
                    s.phase = SubPhase::Live;
                }
                self.sub_event(id, LiveEvent::InitialRows { rows, has_more });
                if has_more {
                    self.queue.push_back(Pending::NextBatch { sub: id, last_seq_id });
                } else {
                    self.sub_event(id, LiveEvent::Ready);
                }
            }
            ServerMessage::Change {
                subscription_id,
                change_type,
                rows,
                old_values,
            } => {
                let Some((id, _)) = self.answer_for(&subscription_id, false) else {
                    return;
                };
                let Some(s) = self.subs.get_mut(&id) else {
                    return;
                };
                for r in rows.iter().chain(old_values.iter()) {
                    s.last_seq = s.last_seq.max(r.seq());
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
            ServerMessage::Error {
                subscription_id,
                code,
                message,
            } => {
                let code = ErrorCode::parse(&code);
                if subscription_id == "rate_limit" && code == ErrorCode::RateLimitExceeded {
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
                match self.answer_for(&subscription_id, true) {
                    Some((id, generation)) if self.subs.get(&id).is_some_and(|s| s.generation == generation) => {
                        self.set_deadline(id, None);
                        self.subs.remove(&id);
                        self.sub_event(id, LiveEvent::Closed(Some(error)));
                    }
                    Some(_) => {} // an earlier attempt's late refusal
                    None => self.event(WsEvent::Error(error)),
                }
            }
        }
    }

    /// The subscription a frame is for: only on an authenticated socket,
    /// and only one whose subscribe was sent on it (a frame out of turn,
    /// from a misbehaving server or proxy, is ignored). With `answer`, the
    /// frame answers a subscribe or next_batch: every frame sent before it
    /// is settled. A late answer to an earlier attempt (after a retry) gets
    /// its subscription stopped and is not routed.
    fn answer_for(&mut self, wire: &str, answer: bool) -> Option<(SubId, u32)> {
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

    fn sub_event(&mut self, id: SubId, e: LiveEvent) {
        self.out.push_back(WsOutput::Event(WsEvent::Sub(id, e)));
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

/// A tiny deterministic generator (SplitMix64) for backoff jitter.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
