//! The client core: both machines and every decision between them.
//!
//! [`ClientCore`] owns an [`AuthMachine`] and a [`WsSession`] and all that a
//! client does with them: it routes the session's token requests to the
//! auth machine, keeps the callers waiting on operations, connects and
//! subscriptions (each identified by a value of the driver's choosing, `W`),
//! decides when `connect()` fails, when a subscription is acknowledged,
//! refused or overdue, what a full subscriber buffer means, how long a
//! credential callback may take and what a panicking one means, and turns
//! session events into hook notifications. A driver only performs the
//! outputs and feeds back what happened; a second runtime needs no protocol
//! code.
//!
//! Contract, as for the machines: inputs are `handle_*(…, now)` and the
//! commands ([`submit`](ClientCore::submit), [`subscribe`](ClientCore::subscribe),
//! …); outputs are drained with [`poll_output`](ClientCore::poll_output) until
//! `None`; [`poll_timeout`](ClientCore::poll_timeout) says when to call
//! [`handle_timeout`](ClientCore::handle_timeout). Nothing happens between
//! calls.
//!
//! Rules it keeps:
//! - Every waiter handed in is given back exactly once, in
//!   [`CoreOutput::Complete`].
//! - Every [`SubId`] returned by [`subscribe`](ClientCore::subscribe) gets
//!   exactly one [`CoreOutput::EndSubscription`], after its last
//!   [`CoreOutput::Deliver`]; a driver drops its queue then, and only then.
//! - A subscribe's waiter is answered when the server acknowledges it (the
//!   first [`LiveEvent::Subscribed`]), or with the server's refusal, or with
//!   [`Error::SubscribeTimeout`] after [`KalamLinkTimeouts::subscribe_timeout`];
//!   resubscribes after a reconnect wait on nobody.
//! - A credential callback not answered within its limit counts as failed
//!   with a timeout; a panicking one as failed
//!   ([`ClientCore::handle_callback_panicked`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use http::Response;

use crate::auth::AuthProvider;
use crate::auth_machine::{AuthConfig, AuthMachine, AuthOutput, CredentialRequestId, OpId, RequestId};
use crate::error::{Error, Result, TransportError};
use crate::live::{LiveEvent, SubscriptionInfo};
use crate::nodes::{NodeFailure, Nodes};
use crate::ops::{Decoded, Operation, Reply};
use crate::options::{ConnectionOptions, KalamLinkTimeouts};
use crate::secret::Secret;
use crate::time::{Instant, Now};
use crate::ws::{Incoming, SubId, WsConfig, WsEvent, WsOutput, WsSession, WsState};
use crate::ws_messages::SubscriptionOptions;

mod io;
pub use io::{Answer, CoreOutput, Hook};

/// Settings of a [`ClientCore`], derived from the application's options.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The auth machine's settings.
    pub auth: AuthConfig,
    /// The session's settings.
    pub ws: WsConfig,
    /// How long a credential callback may take.
    pub callback_timeout: Duration,
    /// Events a subscriber's queue holds before the subscription is ended as
    /// lagging ([`ClientCore::handle_subscriber_full`]).
    pub subscription_buffer: usize,
    /// Open the WebSocket when the core is built, not at the first subscription.
    pub eager_connect: bool,
}

impl ClientConfig {
    /// Settings from the client's options. `seed` seeds the reconnect
    /// jitter, and the multipart boundaries of uploads until
    /// `auth.boundary_seed` is set apart (a driver should give those fresh
    /// randomness of their own, so that a fixed jitter seed does not make
    /// boundaries guessable).
    pub fn new(options: &ConnectionOptions, timeouts: &KalamLinkTimeouts, seed: u64) -> Self {
        ClientConfig {
            auth: AuthConfig {
                max_in_flight: options.http_max_connections.max(1),
                files: crate::files::FileLimits::from_options(options),
                boundary_seed: seed.rotate_left(17) ^ 0x6b61_6c61_6d2d_6d70,
                rate_limit_retry: options.rate_limit_retry,
                retry_budget: timeouts.receive_timeout,
                max_retries: options.max_retries,
                ..AuthConfig::default()
            },
            ws: WsConfig::from_options(options, timeouts, seed),
            // A callback is an exchange with the application's token source:
            // it gets the time limit of one HTTP exchange.
            callback_timeout: timeouts.receive_timeout,
            subscription_buffer: options.subscription_buffer.max(1),
            eager_connect: !options.ws_lazy_connect,
        }
    }

    /// The application configured a `DynamicAuthProvider`.
    pub fn with_dynamic_provider(mut self, configured: bool) -> Self {
        self.auth.has_dynamic_provider = configured;
        self
    }

    /// The application configured an `AuthRefreshCallback`.
    pub fn with_refresher(mut self, configured: bool) -> Self {
        self.auth.has_refresher = configured;
        self
    }

    /// How long before its `exp` a token counts as expired.
    pub fn with_token_expiry_skew(mut self, skew: Duration) -> Self {
        self.auth.skew = skew;
        self
    }
}

fn unix_ms(now: Now) -> u64 {
    u64::try_from(now.unix.as_millis()).unwrap_or(u64::MAX)
}

/// A live subscription as the core keeps it.
#[derive(Debug)]
struct SubEntry<W> {
    /// Its caller, while it waits for the acknowledgement.
    waiter: Option<W>,
    /// When it was opened and last delivered an event (wall clock, in
    /// milliseconds since the Unix epoch; 0: no event yet). Kept small:
    /// every idle subscription pays for it.
    created_ms: u64,
    last_event_ms: u64,
}

/// The client core. See the [module docs](self).
#[derive(Debug)]
pub struct ClientCore<W> {
    auth: AuthMachine,
    ws: WsSession,
    config: ClientConfig,
    ops: HashMap<OpId, W>,
    /// The token request made for the WebSocket, if any.
    ws_token: Option<OpId>,
    /// The token last handed to the session (sent when its socket opens).
    session_token: Option<Secret>,
    connect_waiters: Vec<W>,
    /// Live subscriptions, with their caller while it waits for the ack.
    subs: HashMap<SubId, SubEntry<W>>,
    /// Credential callbacks in progress, by deadline.
    callbacks: BTreeSet<(Instant, CredentialRequestId)>,
    /// The open socket's attempt.
    socket: Option<u64>,
    /// With several nodes: the socket being opened or open, and its node.
    ws_node: Option<(u64, usize)>,
    out: VecDeque<CoreOutput<W>>,
}

impl<W> ClientCore<W> {
    /// A core for the server at `endpoints` (one [`Endpoints`](crate::Endpoints), or the
    /// [`Nodes`] of a cluster: see [`crate::nodes`]) with the application's
    /// credentials. With [`ClientConfig::eager_connect`], the socket is
    /// asked for at once.
    pub fn new(endpoints: impl Into<Nodes>, credentials: AuthProvider, config: ClientConfig, now: Now) -> Self {
        let nodes: Nodes = endpoints.into();
        let mut config = config;
        config.ws.drop_resumed_duplicates |= nodes.is_cluster();
        let ws = WsSession::new(nodes.endpoints(), config.ws.clone());
        let auth = AuthMachine::new(nodes, credentials, config.auth.clone(), now);
        let mut core = ClientCore {
            auth,
            ws,
            config,
            ops: HashMap::new(),
            ws_token: None,
            session_token: None,
            connect_waiters: Vec::new(),
            subs: HashMap::new(),
            callbacks: BTreeSet::new(),
            socket: None,
            ws_node: None,
            out: VecDeque::new(),
        };
        if core.config.eager_connect {
            core.ws.connect(now);
            core.pump(now);
        }
        core
    }

    /// The auth machine (read-only).
    pub fn auth(&self) -> &AuthMachine {
        &self.auth
    }

    /// The WebSocket session (read-only).
    pub fn session(&self) -> &WsSession {
        &self.ws
    }

    /// The credentials currently configured (the application's, or the last
    /// ones its callbacks returned).
    pub fn credentials(&self) -> &AuthProvider {
        self.auth.credentials()
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Waiters not yet answered (operations, connects, subscribes).
    pub fn pending_waiters(&self) -> usize {
        self.ops.len() + self.connect_waiters.len() + self.subs.values().filter(|s| s.waiter.is_some()).count()
    }

    /// Live subscriptions (acknowledged or not).
    pub fn subscriptions(&self) -> usize {
        self.subs.len()
    }

    // --------------------------------------------------------------- commands

    /// Runs an operation; `waiter` gets its [`Answer::Reply`].
    pub fn submit(&mut self, operation: Operation, waiter: W, now: Now) {
        let op = self.auth.submit(operation, now);
        self.ops.insert(op, waiter);
        self.pump(now);
    }

    /// Replaces the credentials (`set_auth` / `update_shared_auth`).
    pub fn set_credentials(&mut self, credentials: AuthProvider, now: Now) {
        self.auth.set_credentials(credentials, now);
        self.ws.handle_credentials_changed(now);
        self.pump(now);
    }

    /// Opens the WebSocket; `waiter` (if any) gets [`Answer::Connected`] once
    /// it is authenticated, or the error that made the session give up.
    pub fn connect(&mut self, waiter: Option<W>, now: Now) {
        if self.ws.state() == WsState::Ready {
            if let Some(waiter) = waiter {
                self.complete(waiter, Ok(Answer::Connected));
            }
            return;
        }
        self.connect_waiters.extend(waiter);
        self.ws.connect(now);
        self.pump(now);
    }

    /// Closes the WebSocket; every subscription ends. `waiter` gets
    /// [`Answer::Disconnected`].
    pub fn disconnect(&mut self, waiter: Option<W>, now: Now) {
        self.ws.disconnect(now);
        self.pump(now);
        for w in self.connect_waiters.drain(..) {
            self.out.push_back(CoreOutput::Complete {
                waiter: w,
                result: Err(Error::Closed),
            });
        }
        if let Some(waiter) = waiter {
            self.complete(waiter, Ok(Answer::Disconnected));
        }
    }

    /// Whether the WebSocket is up and authenticated.
    pub fn is_connected(&self) -> bool {
        self.ws.state() == WsState::Ready
    }

    /// The live queries open on this client, by id.
    pub fn subscription_infos(&self) -> Vec<SubscriptionInfo> {
        self.ws
            .subscription_states()
            .filter_map(|(id, sql, last_seq, state)| {
                let entry = self.subs.get(&id)?;
                let created = Duration::from_millis(entry.created_ms);
                let last_event = (entry.last_event_ms > 0).then(|| Duration::from_millis(entry.last_event_ms));
                Some(SubscriptionInfo {
                    id,
                    sql: sql.to_owned(),
                    last_seq,
                    state,
                    created,
                    last_event,
                })
            })
            .collect()
    }

    /// Subscribes. `waiter` gets [`Answer::Subscribed`] when the server
    /// acknowledges, or the refusal. Returns the id under which events will
    /// be delivered, or `None` when the subscription was refused at once
    /// (the waiter is answered).
    pub fn subscribe(
        &mut self,
        sql: impl Into<String>,
        options: Option<SubscriptionOptions>,
        waiter: W,
        now: Now,
    ) -> Option<SubId> {
        match self.ws.subscribe(sql, options, now) {
            Ok(sub) => {
                self.subs.insert(
                    sub,
                    SubEntry {
                        waiter: Some(waiter),
                        created_ms: unix_ms(now),
                        last_event_ms: 0,
                    },
                );
                self.pump(now);
                Some(sub)
            }
            Err(e) => {
                self.complete(waiter, Err(e));
                None
            }
        }
    }

    /// The application dropped the subscription's stream.
    pub fn unsubscribe(&mut self, sub: SubId, now: Now) {
        self.ws.unsubscribe(sub, now);
        self.end_subscription(sub, None);
        self.pump(now);
    }

    // ----------------------------------------------------------------- inputs

    /// A subscriber's queue could not take a [`CoreOutput::Deliver`]: its
    /// consumer fell behind. That subscription alone ends with
    /// [`Error::SubscriptionLagged`] after what was already queued; the
    /// others are not delayed.
    pub fn handle_subscriber_full(&mut self, sub: SubId, now: Now) {
        if !self.subs.contains_key(&sub) {
            return;
        }
        self.ws.unsubscribe(sub, now);
        let capacity = self.config.subscription_buffer;
        self.end_subscription(sub, Some(Error::SubscriptionLagged { capacity }));
        self.pump(now);
    }

    /// An HTTP answer, decoded with [`crate::decode`] for the request's kind.
    pub fn handle_http(&mut self, id: RequestId, decoded: Decoded, now: Now) {
        self.auth.handle_decoded(id, decoded, now);
        self.pump(now);
    }

    /// The consumer of `sub` has room for another page of initial rows
    /// (its queue is no more than half full): the next page, if one is due,
    /// is asked for. A driver reports this after each delivery that leaves
    /// room, and again when a consumer drains a fuller queue.
    pub fn handle_subscriber_room(&mut self, sub: SubId, now: Now) {
        self.ws.handle_subscriber_room(sub, now);
        self.pump(now);
    }

    /// A download's body has been read to its end or dropped (see
    /// [`AuthMachine::handle_body_done`]).
    pub fn handle_body_done(&mut self, id: RequestId, now: Now) {
        self.auth.handle_body_done(id, now);
        self.pump(now);
    }

    /// An HTTP answer, raw (the core decodes it).
    pub fn handle_http_response<B: AsRef<[u8]>>(&mut self, id: RequestId, response: &Response<B>, now: Now) {
        self.auth.handle_response(id, response, now);
        self.pump(now);
    }

    /// An HTTP request failed to get an answer.
    pub fn handle_http_error(&mut self, id: RequestId, error: TransportError, now: Now) {
        self.auth.handle_transport_error(id, error, now);
        self.pump(now);
    }

    /// A credential callback answered.
    pub fn handle_credentials(&mut self, id: CredentialRequestId, result: Result<AuthProvider>, now: Now) {
        self.callbacks.retain(|(_, c)| *c != id);
        self.auth.handle_credentials(id, result, now);
        self.pump(now);
    }

    /// A credential callback panicked: it counts as failed, like an error.
    pub fn handle_callback_panicked(&mut self, id: CredentialRequestId, now: Now) {
        self.handle_credentials(id, Err(Error::Runtime("the credential callback panicked".into())), now);
    }

    /// The socket of `attempt` is open. `false`: not wanted any more; the
    /// driver closes it.
    pub fn handle_socket_open(&mut self, attempt: u64, now: Now) -> bool {
        // The token was handed over when the socket was asked for; it may
        // have expired, been refused or replaced meanwhile: never send it then.
        if self
            .session_token
            .as_ref()
            .is_some_and(|t| self.auth.access_token(now) != Some(t))
        {
            self.ws.handle_token_stale(attempt, now);
            self.pump(now);
            return false;
        }
        let wanted = self.ws.handle_connected(attempt, now);
        if wanted {
            self.socket = Some(attempt);
        }
        self.pump(now);
        wanted
    }

    /// A frame arrived on the socket of `attempt`.
    pub fn handle_frame(&mut self, attempt: u64, frame: Incoming<'_>, now: Now) {
        if self.socket == Some(attempt) {
            self.ws.handle_frame(frame, now);
            self.pump(now);
        }
    }

    /// The socket of `attempt` closed, dropped, or could not be opened.
    pub fn handle_socket_closed(&mut self, attempt: u64, code: Option<u16>, reason: &str, now: Now) {
        if self.socket == Some(attempt) {
            self.socket = None;
        }
        // Dropped without a close frame, or the server going away: its node
        // is left (a heartbeat or protocol close is not the node's failure).
        if matches!(code, None | Some(1001) | Some(1006)) {
            self.ws_node_failed(attempt, now);
        }
        self.ws.handle_closed(attempt, code, reason, now);
        self.pump(now);
    }

    /// The socket of `attempt` could not be opened: `error` says why (a
    /// TLS failure, a proxy's refusal, a refused connection…), and is
    /// what the connect's waiters and the `on_error` hook get.
    pub fn handle_socket_failed(&mut self, attempt: u64, error: TransportError, now: Now) {
        if self.socket == Some(attempt) {
            self.socket = None;
        }
        // A TLS failure or a proxy refusing this client is not the node's
        // failure; a proxy that could not reach the node (5xx) is.
        let nodes_fault = match &error {
            TransportError::Tls { .. } => false,
            TransportError::ProxyRefused { status, .. } => (500..=599).contains(status),
            _ => true,
        };
        if nodes_fault {
            self.ws_node_failed(attempt, now);
        }
        self.ws.handle_failed(attempt, error, now);
        self.pump(now);
    }

    /// Call when [`poll_timeout`](Self::poll_timeout) is reached.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(&(at, id)) = self.callbacks.first() {
            if at > now.instant {
                break;
            }
            self.callbacks.pop_first();
            let timeout = Error::Transport(TransportError::Timeout(self.config.callback_timeout));
            self.auth.handle_credentials(id, Err(timeout), now);
        }
        self.auth.handle_timeout(now);
        self.ws.handle_timeout(now);
        self.pump(now);
    }

    // ---------------------------------------------------------------- outputs

    /// The next thing the driver must do, until `None`.
    pub fn poll_output(&mut self) -> Option<CoreOutput<W>> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let callback = self.callbacks.first().map(|(at, _)| *at);
        [self.auth.poll_timeout(), self.ws.poll_timeout(), callback]
            .into_iter()
            .flatten()
            .min()
    }

    // -------------------------------------------------------------- internals

    /// The socket of `attempt` (to a node of a cluster) failed: the node is
    /// left, and the session's next connection goes to the next one.
    fn ws_node_failed(&mut self, attempt: u64, now: Now) {
        if let Some((a, node)) = self.ws_node
            && a == attempt
        {
            self.ws_node = None;
            self.auth.node_failed(node, NodeFailure::SocketLost, now);
        }
    }

    fn complete(&mut self, waiter: W, result: Result<Answer>) {
        self.out.push_back(CoreOutput::Complete { waiter, result });
    }

    /// Drains both machines until neither has anything more (one machine's
    /// output can be the other's input).
    fn pump(&mut self, now: Now) {
        loop {
            let mut progressed = false;
            while let Some(output) = self.auth.poll_output() {
                progressed = true;
                self.on_auth(output, now);
            }
            while let Some(output) = self.ws.poll_output() {
                progressed = true;
                self.on_ws(output, now);
            }
            if !progressed {
                return;
            }
        }
    }

    fn on_auth(&mut self, output: AuthOutput, now: Now) {
        match output {
            AuthOutput::Transmit { id, kind, request } => {
                self.out.push_back(CoreOutput::SendHttp { id, kind, request })
            }
            AuthOutput::TransmitUpload { id, request, plan } => {
                self.out.push_back(CoreOutput::SendUpload { id, request, plan })
            }
            AuthOutput::FetchCredentials { id, source } => {
                self.callbacks.insert((now.instant + self.config.callback_timeout, id));
                self.out.push_back(CoreOutput::FetchCredentials { id, source });
            }
            AuthOutput::Warning(e) => self.out.push_back(CoreOutput::Hook(Hook::Error(e))),
            AuthOutput::NodeChanged(switch) => self.out.push_back(CoreOutput::Hook(Hook::NodeChanged(switch))),
            AuthOutput::Done { op, result } => {
                if self.ws_token == Some(op) {
                    // The session asked for this token: route it there.
                    self.ws_token = None;
                    let token = result.and_then(|r| Secret::try_from(r).map_err(Reply::unexpected));
                    self.session_token = token.as_ref().ok().cloned();
                    self.ws.handle_token(token, now);
                } else if let Some(waiter) = self.ops.remove(&op) {
                    self.complete(waiter, result.map(Answer::Reply));
                }
            }
        }
    }

    fn on_ws(&mut self, output: WsOutput, now: Now) {
        match output {
            WsOutput::NeedToken { fresh } => {
                let op = self.auth.submit(Operation::Token { fresh }, now);
                self.ws_token = Some(op);
            }
            WsOutput::Connect { url, attempt } => {
                let url = if self.auth.nodes().is_cluster() {
                    // The socket goes to the node in use, like requests.
                    let node = self.auth.nodes().current();
                    self.ws_node = Some((attempt, node));
                    self.ws.retarget(self.auth.nodes().endpoints_of(node)).to_owned()
                } else {
                    url
                };
                self.out.push_back(CoreOutput::OpenSocket { url, attempt })
            }
            WsOutput::SendText(text) => self.out.push_back(CoreOutput::SendText(text)),
            WsOutput::SendPing => self.out.push_back(CoreOutput::SendPing),
            WsOutput::Close { code, reason } => {
                // Closed by this client: its node did not fail.
                self.ws_node = None;
                if self.socket.take().is_some() {
                    self.out.push_back(CoreOutput::CloseSocket { code, reason });
                }
            }
            WsOutput::TokenRejected(token) => self.auth.handle_token_rejected(&token, now),
            WsOutput::Event(event) => {
                if let WsEvent::Sub(sub, _) = &event
                    && let Some(entry) = self.subs.get_mut(sub)
                {
                    entry.last_event_ms = unix_ms(now).max(1);
                }
                self.on_ws_event(event)
            }
        }
    }

    fn on_ws_event(&mut self, event: WsEvent) {
        match event {
            WsEvent::Connected => {
                // The hook first: `on_connect` has run when `connect()` returns.
                self.out.push_back(CoreOutput::Hook(Hook::Connected));
                for w in std::mem::take(&mut self.connect_waiters) {
                    self.complete(w, Ok(Answer::Connected));
                }
            }
            WsEvent::Disconnected { reason, will_reconnect } => {
                if !will_reconnect {
                    // Given up: nobody waits for a connection that will not come.
                    let error = Error::Transport(TransportError::Connect(reason.clone()));
                    for w in std::mem::take(&mut self.connect_waiters) {
                        self.complete(w, Err(error.clone()));
                    }
                }
                self.out.push_back(CoreOutput::Hook(Hook::Disconnected(reason)));
            }
            WsEvent::Error(error) => {
                // An error before the socket is ready fails the connect.
                for w in std::mem::take(&mut self.connect_waiters) {
                    self.complete(w, Err(error.clone()));
                }
                self.out.push_back(CoreOutput::Hook(Hook::Error(error)));
            }
            WsEvent::Sub(sub, LiveEvent::Closed(error)) => self.end_subscription(sub, error),
            WsEvent::Sub(sub, event) => {
                let Some(entry) = self.subs.get_mut(&sub) else {
                    return;
                };
                if matches!(event, LiveEvent::Subscribed { .. })
                    && let Some(w) = entry.waiter.take()
                {
                    self.complete(w, Ok(Answer::Subscribed(sub)));
                }
                self.deliver(sub, event);
            }
        }
    }

    /// Queues an event, batched with the events just before it for the same
    /// subscription.
    fn deliver(&mut self, sub: SubId, event: LiveEvent) {
        if let Some(CoreOutput::Deliver { sub: last, events }) = self.out.back_mut()
            && *last == sub
        {
            events.push(event);
            return;
        }
        self.out.push_back(CoreOutput::Deliver {
            sub,
            events: vec![event],
        });
    }

    /// Ends a subscription once: a caller still waiting gets the error (or
    /// [`Error::Closed`]); the stream ends.
    fn end_subscription(&mut self, sub: SubId, error: Option<Error>) {
        match self.subs.remove(&sub).map(|e| e.waiter) {
            Some(Some(waiter)) => {
                self.complete(waiter, Err(error.unwrap_or(Error::Closed)));
                self.out.push_back(CoreOutput::EndSubscription { sub, error: None });
            }
            Some(None) => self.out.push_back(CoreOutput::EndSubscription { sub, error }),
            None => {}
        }
    }
}
