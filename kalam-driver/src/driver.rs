//! The driver task: the one owner of the client core.
//!
//! It is a single loop over four sources, polled in turn: commands from the
//! handles, the HTTP exchanges and credential callbacks in flight (polled
//! right here, so a query costs two task hops: caller → driver → caller; on
//! Tokio, hyper's connection task, which does the socket I/O, adds one), the
//! WebSocket (polled right here too, so a live event costs one hop: socket →
//! driver → subscriber's queue), and the core's next timeout. It performs
//! what the core asks (`perform`) and feeds back what happened (`on_command`,
//! `on_event`, `on_socket`); every decision is the core's. Subscribers are
//! woken once per batch: when nothing is ready, or after `WAKE_BATCH` steps.
//! There are no locks held across `.await`.
//!
//! Following one query: `KalamLinkClient::execute` sends `Command::Submit`
//! → [`Driver::on_command`] calls `ClientCore::submit` → [`Driver::perform`]
//! gets `CoreOutput::SendHttp` and starts the exchange in `in_flight` → the
//! decoded answer comes back as `Event::Http` → [`Driver::on_event`] calls
//! `ClientCore::handle_http` → `perform` gets `CoreOutput::Complete` and
//! answers the caller's reply slot.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use kalam_proto::{
    AuthRefreshCallback, ClientCore, CoreOutput, CredentialRequestId, CredentialSource, DynamicAuthProvider, Error,
    Hook, Instant, LiveEvent, Now, RequestId, RequestKind, SubId,
};
use tracing::Instrument as _;

use crate::adapter::{Runtime, SocketSettings};
use crate::msg::OutFrame;
use crate::msg::{CallbackOutcome, Command, Event, SocketReport, Waiter};
use crate::socket::Socket;
use crate::sync::{QueueTx, Receiver, Refused, Sender};

pub(crate) type ConnectHook = Arc<dyn Fn() + Send + Sync>;
pub(crate) type DisconnectHook = Arc<dyn Fn(&str) + Send + Sync>;
pub(crate) type ErrorHook = Arc<dyn Fn(&Error) + Send + Sync>;
pub(crate) type NodeHook = Arc<dyn Fn(&kalam_proto::NodeSwitch) + Send + Sync>;

/// The application's callbacks and hooks.
#[derive(Clone, Default)]
pub(crate) struct Callbacks {
    pub(crate) provider: Option<Arc<dyn DynamicAuthProvider>>,
    pub(crate) refresher: Option<AuthRefreshCallback>,
    pub(crate) on_connect: Option<ConnectHook>,
    pub(crate) on_disconnect: Option<DisconnectHook>,
    pub(crate) on_error: Option<ErrorHook>,
    pub(crate) on_node_change: Option<NodeHook>,
}

/// Both clocks, from the runtime's monotonic clock and the system clock.
#[derive(Clone, Copy)]
pub(crate) struct Clock<R> {
    origin: std::time::Instant,
    _rt: std::marker::PhantomData<fn() -> R>,
}

impl<R: Runtime> Clock<R> {
    pub(crate) fn start() -> Self {
        Clock {
            origin: R::now(),
            _rt: std::marker::PhantomData,
        }
    }

    pub(crate) fn now(&self) -> Now {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Now::new(
            Instant::from_duration(R::now().saturating_duration_since(self.origin)),
            unix,
        )
    }

    fn deadline(&self, at: Instant) -> std::time::Instant {
        later(self.origin, at.as_duration())
    }
}

pub(crate) type Task = Pin<Box<dyn Future<Output = Event> + Send>>;

/// `at + d`, or a year from `at` when a huge time limit would overflow
/// the clock (`Duration::MAX` means "never").
pub(crate) fn later(at: std::time::Instant, d: Duration) -> std::time::Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(at)
}

pub(crate) struct Driver<R: Runtime> {
    core: ClientCore<Waiter>,
    /// One HTTP client per node, by the `host:port` of its URLs.
    http: Vec<(String, R::Http)>,
    /// Largest HTTP answer (`ConnectionOptions::max_response_bytes`), for
    /// the exchanges the driver streams itself (uploads' answers, downloads).
    max_body: usize,
    socket_settings: SocketSettings,
    callbacks: Callbacks,
    clock: Clock<R>,
    /// Subscriber queues, by subscription.
    queues: HashMap<SubId, QueueTx>,
    /// The socket of the core's current attempt, from the moment it is
    /// asked for until it closes.
    socket: Option<Socket<R>>,
    /// HTTP exchanges and credential callbacks in progress.
    in_flight: FuturesUnordered<Task>,
    timer: Option<(std::time::Instant, Pin<Box<R::Sleep>>)>,
    /// The sources of uploads and the body slots of downloads in progress.
    files: crate::files::Registry,
    /// Consumers with new events, woken once the driver has nothing ready
    /// or after [`WAKE_BATCH`] steps: a burst wakes a consumer once per
    /// batch, not once per event.
    wakes: Vec<std::task::Waker>,
    /// Steps since the first of `wakes` was deferred.
    deferred: usize,
    /// Downloads whose body is done (read to its end, or dropped): their
    /// place under the in-flight cap is free again.
    bodies_done: (Sender<RequestId>, Receiver<RequestId>),
    /// Subscriptions with a next page due, waiting for their consumer to
    /// have room for it (the rows of their last page).
    waiting_room: HashMap<SubId, usize>,
    /// A subscriber queue is half full: let the consumers run (wake them
    /// and yield to the executor) before reading more from the socket, so
    /// that a full queue means a consumer that stays behind, never one the
    /// scheduler has not run yet.
    pressure: bool,
}

impl<R: Runtime> Drop for Driver<R> {
    /// However the driver ends (every handle gone, the runtime shut down
    /// under it, a panic unwinding through it): every stream ends and every
    /// consumer whose wake-up was deferred is woken, so none waits for good.
    fn drop(&mut self) {
        // Ending the queues wakes the consumers parked on them; the
        // deferred wakers are those `push` already took out of the queues.
        self.queues.clear();
        self.wake_consumers();
    }
}

/// Returns to the executor once (it runs whatever is ready, such as the
/// consumers just woken) and then goes on.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            crate::drive::yield_soon();
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// The most steps a consumer's wake-up is deferred by.
const WAKE_BATCH: usize = 32;

enum Step {
    Command(Option<Command>),
    Event(Event),
    Socket(u64, SocketReport),
    Timeout,
    BodyDone(RequestId),
    Room(SubId),
}

impl<R: Runtime> Driver<R> {
    pub(crate) fn new(
        core: ClientCore<Waiter>,
        http: Vec<(String, R::Http)>,
        max_body: usize,
        socket_settings: SocketSettings,
        callbacks: Callbacks,
        clock: Clock<R>,
    ) -> Self {
        Driver {
            core,
            http,
            max_body,
            socket_settings,
            callbacks,
            clock,
            queues: HashMap::new(),
            socket: None,
            in_flight: FuturesUnordered::new(),
            timer: None,
            files: crate::files::Registry::default(),
            wakes: Vec::new(),
            deferred: 0,
            pressure: false,
            bodies_done: crate::sync::channel(),
            waiting_room: HashMap::new(),
        }
    }

    /// Runs until every handle (client clone or live stream) is gone.
    pub(crate) async fn run(mut self, mut commands: Receiver<Command>) {
        let mut turn = 0usize;
        loop {
            self.perform();
            self.arm_timer();
            if std::mem::take(&mut self.pressure) {
                self.wake_consumers();
                yield_now().await;
            }
            turn = turn.wrapping_add(1);
            if !self.wakes.is_empty() {
                self.deferred += 1;
                if self.deferred >= WAKE_BATCH {
                    self.wake_consumers();
                }
            }
            let step = std::future::poll_fn(|cx| self.poll_step(cx, &mut commands, turn)).await;
            match step {
                Step::Command(Some(command)) => self.on_command(command),
                Step::Command(None) => break,
                Step::Event(event) => self.on_event(event),
                Step::Socket(attempt, report) => self.on_socket(attempt, report),
                Step::BodyDone(id) => self.core.handle_body_done(id, self.clock.now()),
                Step::Room(sub) => self.core.handle_subscriber_room(sub, self.clock.now()),
                Step::Timeout => {
                    self.timer = None;
                    self.core.handle_timeout(self.clock.now());
                }
            }
        }
        if let Some(socket) = self.socket.take() {
            socket.retire(Some((1000, "client dropped")));
        }
        self.wake_consumers();
        tracing::debug!("kalam client driver stopped");
    }

    /// The next thing to handle. The four sources (commands, the socket,
    /// exchanges and callbacks in flight, the timer) take turns in
    /// rotation, so a busy socket never starves a query or a deadline.
    /// Polling the socket also writes the frames queued for it.
    fn poll_step(&mut self, cx: &mut Context<'_>, commands: &mut Receiver<Command>, turn: usize) -> Poll<Step> {
        for i in 0..4 {
            match (turn + i) % 4 {
                0 => {
                    if let Poll::Ready(c) = commands.poll_recv(cx) {
                        return Poll::Ready(Step::Command(c));
                    }
                }
                1 => {
                    if let Some(socket) = &mut self.socket
                        && let Poll::Ready((attempt, report)) = socket.poll(cx)
                    {
                        return Poll::Ready(Step::Socket(attempt, report));
                    }
                }
                2 => {
                    if let Poll::Ready(Some(e)) = self.in_flight.poll_next_unpin(cx) {
                        return Poll::Ready(Step::Event(e));
                    }
                }
                _ => {
                    if let Some((_, sleep)) = &mut self.timer
                        && sleep.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Step::Timeout);
                    }
                }
            }
        }
        if let Poll::Ready(Some(id)) = self.bodies_done.1.poll_recv(cx) {
            return Poll::Ready(Step::BodyDone(id));
        }
        let roomy = self
            .waiting_room
            .iter()
            .find_map(|(sub, need)| match self.queues.get(sub) {
                Some(q) => q.poll_room(*need, cx).is_ready().then_some(*sub),
                None => Some(*sub),
            });
        if let Some(sub) = roomy {
            self.waiting_room.remove(&sub);
            return Poll::Ready(Step::Room(sub));
        }
        // Nothing ready: the consumers run now.
        self.wake_consumers();
        Poll::Pending
    }

    fn wake_consumers(&mut self) {
        self.deferred = 0;
        for w in self.wakes.drain(..) {
            w.wake();
        }
    }

    /// One timer for the core's next deadline, replaced only when the
    /// deadline comes earlier than the armed one. A later deadline (or none)
    /// keeps the armed timer: when it fires, `handle_timeout` finds nothing
    /// due and the timer is armed for the deadline then. Each query moves
    /// the deadline; a new timer each time costs a reactor wake-up on
    /// async-io (inserting a timer notifies the reactor).
    fn arm_timer(&mut self) {
        let deadline = self.core.poll_timeout().map(|t| self.clock.deadline(t));
        match (deadline, &self.timer) {
            (Some(d), Some((armed, _))) if *armed <= d => {}
            (Some(d), _) => self.timer = Some((d, Box::pin(R::sleep_until(d)))),
            (None, _) => {}
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = self.clock.now();
        match command {
            Command::Submit(operation, reply) => self.core.submit(operation, reply, now),
            Command::SubmitFiles(operation, attach, reply) => {
                self.files.attach(attach);
                self.core.submit(operation, reply, now);
            }
            Command::SetAuth(auth) => self.core.set_credentials(auth, now),
            Command::GetAuth(reply) => reply.send(self.core.credentials().clone()),
            Command::Connect(reply) => self.core.connect(reply, now),
            Command::Disconnect(reply) => self.core.disconnect(Some(reply), now),
            Command::Subscribe {
                sql,
                options,
                queue,
                reply,
            } => {
                if let Some(sub) = self.core.subscribe(sql, options, reply, now) {
                    self.queues.insert(sub, queue);
                }
            }
            Command::Unsubscribe(sub) => self.core.unsubscribe(sub, now),
            Command::IsConnected(reply) => reply.send(self.core.is_connected()),
            Command::Subscriptions(reply) => reply.send(self.core.subscription_infos()),
        }
    }

    fn on_event(&mut self, event: Event) {
        let now = self.clock.now();
        match event {
            Event::Http(id, Ok(decoded)) => self.core.handle_http(id, decoded, now),
            Event::Http(id, Err(e)) => self.core.handle_http_error(id, e, now),
            Event::Credentials(id, CallbackOutcome::Answered(result)) => self.core.handle_credentials(id, result, now),
            Event::Credentials(id, CallbackOutcome::Panicked) => self.core.handle_callback_panicked(id, now),
            Event::Credentials(_, CallbackOutcome::Abandoned) => {}
        }
    }

    fn on_socket(&mut self, attempt: u64, report: SocketReport) {
        let now = self.clock.now();
        match report {
            SocketReport::Open => {
                if !self.core.handle_socket_open(attempt, now) {
                    // Not wanted (any more): close it.
                    self.retire_socket(None);
                }
            }
            SocketReport::Frame(frame) => self.core.handle_frame(attempt, crate::socket::incoming(&frame), now),
            SocketReport::Closed(code, reason) => {
                self.socket = None;
                self.core.handle_socket_closed(attempt, code, &reason, now);
            }
            SocketReport::Failed(error) => {
                self.socket = None;
                self.core.handle_socket_failed(attempt, error, now);
            }
        }
    }

    /// Lets the current socket go (with a close frame, or a bare close) and
    /// tells the core it is closed.
    fn retire_socket(&mut self, close: Option<(u16, &'static str)>) {
        if let Some(socket) = self.socket.take() {
            let attempt = socket.attempt();
            socket.retire(close);
            self.core
                .handle_socket_closed(attempt, None, "closed by the client", self.clock.now());
        }
    }

    /// Does what the core asks, until it asks nothing more.
    fn perform(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                CoreOutput::SendHttp { id, kind, request } => self.start_http(id, kind, request),
                CoreOutput::SendUpload { id, request, plan } => {
                    let max = self.max_body;
                    let http = self.http_for(request.uri());
                    let task = crate::files::upload::<R>(http, id, request, plan, &self.files, max);
                    self.in_flight.push(task);
                }
                CoreOutput::OpenSocket { url, attempt } => {
                    tracing::debug!(attempt, "opening WebSocket");
                    // A socket of an earlier attempt, still connecting, is
                    // not wanted any more.
                    self.retire_socket(None);
                    self.socket = Some(Socket::open(url, self.socket_settings.clone(), attempt));
                }
                CoreOutput::SendText(text) => self.send_frame(OutFrame::Text(text)),
                CoreOutput::SendPing => self.send_frame(OutFrame::Ping),
                CoreOutput::CloseSocket { code, reason } => self.retire_socket(Some((code, reason))),
                CoreOutput::FetchCredentials { id, source } => self.start_callback(id, source),
                CoreOutput::Complete { waiter, result } => waiter.send(result),
                CoreOutput::Deliver { sub, events } => {
                    // A page with more to come: the next is asked for once
                    // the consumer has room for another like it.
                    let page = events.iter().find_map(|e| match e {
                        LiveEvent::InitialRows { rows, has_more: true } => Some(rows.len().max(1)),
                        _ => None,
                    });
                    if let Some(need) = page {
                        self.waiting_room.insert(sub, need);
                    }
                    match self.queues.get(&sub).map(|q| q.push(events, &mut self.wakes)) {
                        Some(Err(Refused::Full)) => self.core.handle_subscriber_full(sub, self.clock.now()),
                        // Nobody will read it (a `live_events` call cancelled
                        // before the acknowledgement): stop it at the server.
                        Some(Err(Refused::Gone)) => self.core.unsubscribe(sub, self.clock.now()),
                        Some(Ok(true)) => self.pressure = true,
                        _ => {}
                    }
                }
                CoreOutput::EndSubscription { sub, error } => {
                    if let Some(q) = self.queues.remove(&sub) {
                        q.end(error);
                    }
                }
                CoreOutput::Hook(hook) => self.notify(hook),
            }
        }
    }

    fn send_frame(&mut self, frame: OutFrame) {
        if let Some(socket) = &mut self.socket {
            socket.send(frame);
        }
    }

    /// The HTTP client of the node `uri` is on (the core builds every URL
    /// from a node's base URL; with one node, that node's).
    fn http_for(&self, uri: &http::Uri) -> R::Http {
        let client = match &self.http[..] {
            [(_, only)] => only,
            nodes => {
                let authority = uri.authority().map_or("", |a| a.as_str());
                nodes
                    .iter()
                    .find(|(a, _)| a == authority)
                    .map_or(&nodes[0].1, |(_, c)| c)
            }
        };
        client.clone()
    }

    /// Calls the application's hook. A panicking hook is contained: the
    /// driver, and every other handle, goes on.
    fn notify(&self, hook: Hook) {
        let call = || match &hook {
            Hook::Connected => {
                tracing::debug!("WebSocket ready");
                if let Some(h) = &self.callbacks.on_connect {
                    h();
                }
            }
            Hook::Disconnected(reason) => {
                tracing::debug!(%reason, "WebSocket disconnected");
                if let Some(h) = &self.callbacks.on_disconnect {
                    h(reason);
                }
            }
            Hook::NodeChanged(switch) => {
                tracing::info!(from = %switch.from, to = %switch.to, reason = %switch.reason, "moved to another node");
                if let Some(h) = &self.callbacks.on_node_change {
                    h(switch);
                }
            }
            Hook::Error(error) => {
                match error {
                    Error::ClockSkew { offset_secs } => {
                        tracing::warn!(offset_secs, "the server's clock differs from this machine's")
                    }
                    _ => tracing::debug!(%error, "WebSocket error"),
                }
                if let Some(h) = &self.callbacks.on_error {
                    h(error);
                }
            }
        };
        if std::panic::catch_unwind(AssertUnwindSafe(call)).is_err() {
            tracing::warn!("a connection hook panicked; the client goes on");
        }
    }

    /// Starts an HTTP exchange; it is decoded where it completes, with the
    /// decoder kalam-proto picks for its kind.
    fn start_http(&mut self, id: RequestId, kind: RequestKind, request: http::Request<Vec<u8>>) {
        if kind == RequestKind::Download {
            // The body is the caller's, streamed (`files`).
            let max = self.max_body;
            let done = self.bodies_done.0.clone();
            let http = self.http_for(request.uri());
            let task = crate::files::download::<R>(http, id, request, &self.files, max, done);
            return self.in_flight.push(task);
        }
        let http = self.http_for(request.uri());
        let span = tracing::debug_span!("kalam.http", ?kind, id = id.0);
        // The exchange's future is made inside the boxed one, where it runs:
        // made here and moved in, its state (kilobytes: the HTTP engine's
        // buffers and parsers) was copied again on its way into the box.
        self.in_flight.push(Box::pin(
            async move {
                let answer = R::send_http(http, request).await.map(|r| {
                    tracing::debug!(status = r.status().as_u16(), "answered");
                    kalam_proto::decode(kind, r.status(), r.headers(), r.body().as_ref())
                });
                if let Err(e) = &answer {
                    tracing::debug!(error = %e, "failed");
                }
                Event::Http(id, answer)
            }
            .instrument(span),
        ));
    }

    /// Calls the application's credential callback, alongside other traffic.
    /// A panic is reported as such; past the core's limit the call is
    /// dropped (the core has given up on it already).
    fn start_callback(&mut self, id: CredentialRequestId, source: CredentialSource) {
        let callbacks = self.callbacks.clone();
        let fetch = async move {
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
        let deadline = later(R::now(), self.core.config().callback_timeout);
        let span = tracing::debug_span!("kalam.credentials", ?source, id = id.0);
        self.in_flight.push(Box::pin(
            async move {
                let mut call = Box::pin(fetch);
                let mut limit = Box::pin(R::sleep_until(deadline));
                let outcome = std::future::poll_fn(|cx| {
                    match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
                        Ok(Poll::Ready(r)) => return Poll::Ready(CallbackOutcome::Answered(r)),
                        Err(_) => return Poll::Ready(CallbackOutcome::Panicked),
                        Ok(Poll::Pending) => {}
                    }
                    limit.as_mut().poll(cx).map(|()| CallbackOutcome::Abandoned)
                })
                .await;
                Event::Credentials(id, outcome)
            }
            .instrument(span),
        ));
    }
}
