//! The driver task: the one owner of the client's two machines.
//!
//! It is a single loop over five sources: commands from client handles,
//! answers of HTTP requests in flight, answers of the application's
//! credential callbacks, frames and state of the WebSocket, and the machines'
//! next timeout. Each request, callback and socket runs in its own task, so a
//! slow one never blocks other traffic; their results come back to this loop
//! as events. There are no locks.
//!
//! Following one query: `KalamLinkClient::execute` sends `Command::Submit` →
//! [`Driver::on_command`] calls `AuthMachine::submit` → [`Driver::perform`]
//! drains `Output::Transmit` and spawns the HTTP exchange → the answer comes
//! back as `Event::Http` → [`Driver::on_event`] calls `handle_response` →
//! `perform` drains `Output::Done` and answers the caller.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kalam_proto::{
    AuthMachine, AuthProvider, AuthRefreshCallback, CredentialRequestId, CredentialSource, DynamicAuthProvider, Error,
    Incoming, Instant, LiveEvent, Now, OpId, Operation, Output, Reply, RequestId, RequestKind, Result, SubId,
    SubscriptionOptions, TransportError, WsEvent, WsOutput, WsSession,
};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument as _;

use crate::http::HttpClient;
use crate::live::SubscriberSink;
use crate::ws::{SocketEvent, close_message, spawn_socket};

/// What client handles ask of the driver.
pub(crate) enum Command {
    Submit(Operation, oneshot::Sender<Result<Reply>>),
    SetAuth(AuthProvider),
    GetAuth(oneshot::Sender<AuthProvider>),
    Connect(Option<oneshot::Sender<Result<()>>>),
    Disconnect(oneshot::Sender<()>),
    Subscribe {
        sql: String,
        options: Option<SubscriptionOptions>,
        reply: oneshot::Sender<Result<(SubId, crate::live::SubscriberSource)>>,
    },
    Unsubscribe(SubId),
}

/// What the driver's own tasks report back.
enum Event {
    Http(RequestId, std::result::Result<http::Response<Bytes>, TransportError>),
    /// A query's answer, decoded in the request's own task.
    Query(RequestId, Result<kalam_proto::QueryResponse>),
    Credentials(CredentialRequestId, Result<AuthProvider>),
    Socket(u64, SocketEvent),
}

pub(crate) type ConnectHook = Arc<dyn Fn() + Send + Sync>;
pub(crate) type DisconnectHook = Arc<dyn Fn(&str) + Send + Sync>;
pub(crate) type ErrorHook = Arc<dyn Fn(&Error) + Send + Sync>;

/// The application's callbacks and hooks.
#[derive(Clone, Default)]
pub(crate) struct Callbacks {
    pub(crate) provider: Option<Arc<dyn DynamicAuthProvider>>,
    pub(crate) refresher: Option<AuthRefreshCallback>,
    pub(crate) timeout: Duration,
    pub(crate) on_connect: Option<ConnectHook>,
    pub(crate) on_disconnect: Option<DisconnectHook>,
    pub(crate) on_error: Option<ErrorHook>,
}

/// Transport settings of the WebSocket.
pub(crate) struct WsTransport {
    pub(crate) connect_timeout: Duration,
    pub(crate) max_frame: usize,
    pub(crate) buffer: usize,
}

/// Both clocks, read once per input.
#[derive(Clone, Copy)]
struct Clock {
    origin: tokio::time::Instant,
}

/// Both clocks now, the monotonic one measured from `origin`.
pub(crate) fn now_at(origin: tokio::time::Instant) -> Now {
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Now::new(Instant::from_duration(origin.elapsed()), unix)
}

impl Clock {
    fn now(&self) -> Now {
        now_at(self.origin)
    }

    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        self.origin + at.as_duration()
    }
}

pub(crate) struct Driver {
    auth: AuthMachine,
    ws: WsSession,
    http: HttpClient,
    transport: WsTransport,
    callbacks: Callbacks,
    clock: Clock,
    waiters: HashMap<OpId, oneshot::Sender<Result<Reply>>>,
    /// The token request made for the WebSocket, if any.
    ws_token_op: Option<OpId>,
    /// The open socket: its attempt id and its writer.
    socket: Option<(u64, mpsc::UnboundedSender<Message>)>,
    connect_waiters: Vec<oneshot::Sender<Result<()>>>,
    subs: HashMap<SubId, SubscriberSink>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
}

impl Driver {
    pub(crate) fn new(
        auth: AuthMachine,
        ws: WsSession,
        http: HttpClient,
        transport: WsTransport,
        callbacks: Callbacks,
        origin: tokio::time::Instant,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Driver {
            auth,
            ws,
            http,
            transport,
            callbacks,
            clock: Clock { origin },
            waiters: HashMap::new(),
            ws_token_op: None,
            socket: None,
            connect_waiters: Vec::new(),
            subs: HashMap::new(),
            events_tx,
            events_rx,
        }
    }

    /// Runs until every client handle is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        // One timer for the life of the driver, moved only when the machines'
        // next deadline changes: events do not re-arm it.
        let timer = tokio::time::sleep_until(self.clock.origin);
        tokio::pin!(timer);
        let mut armed: Option<tokio::time::Instant> = None;
        loop {
            self.perform();
            let deadline = [self.auth.poll_timeout(), self.ws.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .map(|t| self.clock.deadline(t));
            if deadline != armed {
                if let Some(d) = deadline {
                    timer.as_mut().reset(d);
                }
                armed = deadline;
            }
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(event) = self.events_rx.recv() => self.on_event(event),
                _ = &mut timer, if armed.is_some() => {
                    // Fired: re-arm from the machines' new deadline next turn.
                    armed = None;
                    let now = self.clock.now();
                    self.auth.handle_timeout(now);
                    self.ws.handle_timeout(now);
                }
            }
        }
        if let Some((_, tx)) = self.socket.take() {
            let _ = tx.send(close_message(1000, "client dropped"));
        }
        tracing::debug!("kalam client driver stopped");
    }

    fn on_command(&mut self, command: Command) {
        let now = self.clock.now();
        match command {
            Command::Submit(operation, reply) => {
                let op = self.auth.submit(operation, now);
                self.waiters.insert(op, reply);
            }
            Command::SetAuth(auth) => {
                self.auth.set_credentials(auth, now);
                self.ws.handle_credentials_changed(now);
            }
            Command::GetAuth(reply) => {
                let _ = reply.send(self.auth.credentials().clone());
            }
            Command::Connect(reply) => {
                if self.ws.state() == kalam_proto::WsState::Ready {
                    if let Some(r) = reply {
                        let _ = r.send(Ok(()));
                    }
                    return;
                }
                self.connect_waiters.extend(reply);
                self.ws.connect(now);
            }
            Command::Disconnect(reply) => {
                self.ws.disconnect(now);
                let _ = reply.send(());
            }
            Command::Subscribe { sql, options, reply } => match self.ws.subscribe(sql, options, now) {
                Ok(sub) => {
                    let (sink, source) = crate::live::channel(self.transport.buffer);
                    self.subs.insert(sub, sink);
                    let _ = reply.send(Ok((sub, source)));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Unsubscribe(sub) => {
                self.subs.remove(&sub);
                self.ws.unsubscribe(sub, now);
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let now = self.clock.now();
        match event {
            Event::Http(id, Ok(response)) => self.auth.handle_response(id, &response, now),
            Event::Http(id, Err(e)) => self.auth.handle_transport_error(id, e, now),
            Event::Query(id, answer) => self.auth.handle_query_answer(id, answer, now),
            Event::Credentials(id, result) => self.auth.handle_credentials(id, result, now),
            Event::Socket(attempt, SocketEvent::Open(tx)) => {
                if self.ws.handle_connected(attempt, now) {
                    self.socket = Some((attempt, tx));
                }
                // Otherwise `tx` drops here and the unwanted socket closes.
            }
            Event::Socket(attempt, SocketEvent::Frame(message)) => {
                if self.socket.as_ref().is_some_and(|(a, _)| *a == attempt) {
                    match &message {
                        Message::Text(t) => self.ws.handle_frame(Incoming::Text(t.as_str()), now),
                        Message::Binary(b) => self.ws.handle_frame(Incoming::Binary(b.as_ref()), now),
                        _ => self.ws.handle_frame(Incoming::Control, now),
                    }
                }
            }
            Event::Socket(attempt, SocketEvent::Closed(code, reason)) => {
                if self.socket.as_ref().is_some_and(|(a, _)| *a == attempt) {
                    self.socket = None;
                }
                self.ws.handle_closed(attempt, code, &reason, now);
            }
        }
    }

    /// Does what the machines ask until neither asks anything more (one
    /// machine's output can be the other's input).
    fn perform(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(output) = self.auth.poll_output() {
                progressed = true;
                self.perform_auth(output);
            }
            while let Some(output) = self.ws.poll_output() {
                progressed = true;
                self.perform_ws(output);
            }
            if !progressed {
                return;
            }
        }
    }

    fn perform_auth(&mut self, output: Output) {
        match output {
            Output::Transmit { id, kind, request } => {
                let http = self.http.clone();
                let events = self.events_tx.clone();
                let span = tracing::debug_span!("kalam.http", ?kind, id = id.0);
                tokio::spawn(
                    async move {
                        let result = http.send(request).await;
                        match &result {
                            Ok(r) => tracing::debug!(status = r.status().as_u16(), "answered"),
                            Err(e) => tracing::debug!(error = %e, "failed"),
                        }
                        let event = match result {
                            // Decode here, in parallel with other requests, with
                            // kalam-proto's decoder; the machine decides the rest.
                            Ok(r) if kind == RequestKind::Query => Event::Query(
                                id,
                                kalam_proto::framing::decode_query(r.status(), r.headers(), r.body()),
                            ),
                            other => Event::Http(id, other),
                        };
                        let _ = events.send(event);
                    }
                    .instrument(span),
                );
            }
            Output::FetchCredentials { id, source } => self.fetch_credentials(id, source),
            Output::Done { op, result } => {
                if self.ws_token_op == Some(op) {
                    self.ws_token_op = None;
                    let token = result.and_then(|r| match r {
                        Reply::Token(t) => Ok(t),
                        other => Err(Error::Runtime(format!("expected a token, got {other:?}"))),
                    });
                    self.ws.handle_token(token, self.clock.now());
                } else if let Some(waiter) = self.waiters.remove(&op) {
                    // The caller may have given up (dropped its future): fine.
                    let _ = waiter.send(result);
                }
            }
        }
    }

    fn perform_ws(&mut self, output: WsOutput) {
        match output {
            WsOutput::NeedToken { fresh } => {
                let op = self.auth.submit(Operation::Token { fresh }, self.clock.now());
                self.ws_token_op = Some(op);
            }
            WsOutput::Connect { url, attempt } => {
                let events = self.events_tx.clone();
                tracing::debug!(attempt, "opening WebSocket");
                spawn_socket(
                    url,
                    attempt,
                    self.transport.connect_timeout,
                    self.transport.max_frame,
                    move |attempt, e| {
                        let _ = events.send(Event::Socket(attempt, e));
                    },
                );
            }
            WsOutput::SendText(text) => self.send_frame(Message::Text(text.into())),
            WsOutput::SendPing => self.send_frame(Message::Ping(Bytes::new())),
            WsOutput::Close { code, reason } => {
                if let Some((_, tx)) = self.socket.take() {
                    let _ = tx.send(close_message(code, reason));
                }
            }
            WsOutput::TokenRejected(token) => self.auth.handle_token_rejected(&token, self.clock.now()),
            WsOutput::Event(event) => self.on_ws_event(event),
        }
    }

    fn send_frame(&mut self, message: Message) {
        if let Some((_, tx)) = &self.socket {
            let _ = tx.send(message);
        }
    }

    fn on_ws_event(&mut self, event: WsEvent) {
        match event {
            WsEvent::Connected => {
                tracing::debug!("WebSocket ready");
                for w in self.connect_waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
                if let Some(hook) = &self.callbacks.on_connect {
                    hook();
                }
            }
            WsEvent::Disconnected { reason, will_reconnect } => {
                tracing::debug!(%reason, will_reconnect, "WebSocket disconnected");
                if !will_reconnect {
                    let error = Error::Transport(TransportError::Connect(reason.clone()));
                    for w in self.connect_waiters.drain(..) {
                        let _ = w.send(Err(error.clone()));
                    }
                }
                if let Some(hook) = &self.callbacks.on_disconnect {
                    hook(&reason);
                }
            }
            WsEvent::Error(error) => {
                tracing::debug!(%error, "WebSocket error");
                for w in self.connect_waiters.drain(..) {
                    let _ = w.send(Err(error.clone()));
                }
                if let Some(hook) = &self.callbacks.on_error {
                    hook(&error);
                }
            }
            WsEvent::Sub(sub, LiveEvent::Closed(error)) => {
                if let Some(sink) = self.subs.remove(&sub) {
                    sink.finish(error);
                }
            }
            WsEvent::Sub(sub, event) => {
                let Some(sink) = self.subs.get(&sub) else { return };
                if let Err(lagged) = sink.deliver(event) {
                    // A full buffer ends this subscription only; others go on.
                    if let Some(sink) = self.subs.remove(&sub) {
                        sink.finish(Some(lagged));
                    }
                    self.ws.unsubscribe(sub, self.clock.now());
                }
            }
        }
    }

    fn fetch_credentials(&self, id: CredentialRequestId, source: CredentialSource) {
        let events = self.events_tx.clone();
        let callbacks = self.callbacks.clone();
        let span = tracing::debug_span!("kalam.credentials", ?source, id = id.0);
        let call = tokio::spawn(
            async move {
                let fetch = async {
                    match source {
                        CredentialSource::DynamicProvider => match &callbacks.provider {
                            Some(p) => p.get_auth().await,
                            None => Err(Error::MissingCredentials),
                        },
                        CredentialSource::Refresher => match &callbacks.refresher {
                            Some(r) => r().await,
                            None => Err(Error::MissingCredentials),
                        },
                    }
                };
                match tokio::time::timeout(callbacks.timeout, fetch).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Transport(TransportError::Timeout(callbacks.timeout))),
                }
            }
            .instrument(span),
        );
        // A panicking callback must not leave the machine waiting forever.
        tokio::spawn(async move {
            let result = call
                .await
                .unwrap_or_else(|_| Err(Error::msg("the credential callback panicked")));
            let _ = events.send(Event::Credentials(id, result));
        });
    }
}
