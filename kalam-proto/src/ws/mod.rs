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
mod connection;
mod incoming;
mod io;
mod pacer;
mod subscriptions;

use crate::live::{LiveEvent, LiveRow, SubscriptionState};
use crate::ws_messages::{
    self, BatchControl, ChangeType, ClientMessage, MAX_BATCH_SIZE, MAX_CLIENT_FRAME, Protocol, ServerMessage,
    Subscription, SubscriptionOptions,
};
use backoff::SplitMix64;
pub use config::{DEFAULT_SEND_BURST, DEFAULT_SEND_RATE, WsConfig};
pub use io::{Incoming, WsEvent, WsOutput};
use pacer::Pacer;
use subscriptions::{resume_options, subscribe_text};

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

/// How many delivered rows a subscription remembers to drop
/// duplicates after a resume (what a node lagging behind the one left can
/// send again; about 100 ms of changes at 1,000 rows a second).
const RECENT: usize = 128;

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
    /// With `drop_resumed_duplicates` (a cluster): per subscription, the
    /// digests of the last [`RECENT`] rows delivered; after a resume, a row
    /// equal to one of them (every column but `_seq`) is one already
    /// delivered (the resume from another node, whose `_seq` for it
    /// differs, or a node behind the one left notifying it again), and is
    /// dropped. Kept apart from the subscriptions: a client of one server
    /// pays nothing for it.
    recent: BTreeMap<SubId, VecDeque<u64>>,
    out: VecDeque<WsOutput>,
}

impl WsSession {
    /// Points the next connection at another node of the cluster (the
    /// open one, if any, is not touched); returns the new URL.
    pub fn retarget(&mut self, endpoints: &Endpoints) -> &str {
        let query = if self.config.gzip { None } else { Some("compress=false") };
        self.url = endpoints.ws_url(query);
        &self.url
    }

    /// A session for the server at `endpoints`. Nothing happens until
    /// [`connect`](Self::connect) or [`subscribe`](Self::subscribe).
    pub fn new(endpoints: &Endpoints, config: WsConfig) -> Self {
        let query = if config.gzip { None } else { Some("compress=false") };
        WsSession {
            url: endpoints.ws_url(query),
            rng: SplitMix64(config.seed),
            recent: BTreeMap::new(),
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

    /// Text frames waiting for the pacer.
    pub fn queued_frames(&self) -> usize {
        self.queue.len()
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
                if matches!(self.conn, Conn::Authenticating { .. }) {
                    // Silent since the socket opened: this attempt failed,
                    // and `connect()` hears so now (as for the auth timeout).
                    self.event(WsEvent::Error(Error::Transport(TransportError::Timeout(
                        self.config.silence_limit,
                    ))));
                }
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
}
