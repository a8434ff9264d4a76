//! The driver task: the one owner of the auth machine.
//!
//! It is a single loop over four sources: commands from client handles,
//! answers of HTTP requests in flight, answers of the application's credential
//! callbacks, and the machine's next timeout. Each request and callback runs
//! in its own task, so a slow one never blocks other traffic; their results
//! come back to this loop as events. There are no locks.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kalam_proto::{
    AuthMachine, AuthProvider, AuthRefreshCallback, CredentialRequestId, CredentialSource,
    DynamicAuthProvider, Error, Instant, Now, OpId, Operation, Output, Reply, RequestId, Result,
    TransportError,
};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::http::HttpClient;

/// What client handles ask of the driver.
pub(crate) enum Command {
    Submit(Operation, oneshot::Sender<Result<Reply>>),
    SetAuth(AuthProvider),
    GetAuth(oneshot::Sender<AuthProvider>),
}

/// What the driver's own tasks report back.
enum Event {
    Http(
        RequestId,
        std::result::Result<http::Response<Bytes>, TransportError>,
    ),
    Credentials(CredentialRequestId, Result<AuthProvider>),
}

/// The application's callbacks.
#[derive(Clone, Default)]
pub(crate) struct Callbacks {
    pub(crate) provider: Option<Arc<dyn DynamicAuthProvider>>,
    pub(crate) refresher: Option<AuthRefreshCallback>,
    pub(crate) timeout: Duration,
}

/// Both clocks, read once per input.
#[derive(Clone, Copy)]
struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    fn now(&self) -> Now {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Now::new(Instant::from_duration(self.origin.elapsed()), unix)
    }

    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        self.origin + at.as_duration()
    }
}

pub(crate) struct Driver {
    machine: AuthMachine,
    http: HttpClient,
    callbacks: Callbacks,
    clock: Clock,
    waiters: std::collections::HashMap<OpId, oneshot::Sender<Result<Reply>>>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
}

impl Driver {
    pub(crate) fn new(machine: AuthMachine, http: HttpClient, callbacks: Callbacks) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Driver {
            machine,
            http,
            callbacks,
            clock: Clock {
                origin: tokio::time::Instant::now(),
            },
            waiters: Default::default(),
            events_tx,
            events_rx,
        }
    }

    /// Runs until every client handle is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            self.perform_outputs();
            let deadline = self.machine.poll_timeout().map(|t| self.clock.deadline(t));
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(event) = self.events_rx.recv() => self.on_event(event),
                _ = sleep_until(deadline) => self.machine.handle_timeout(self.clock.now()),
            }
        }
        tracing::debug!("kalam client driver stopped");
    }

    fn on_command(&mut self, command: Command) {
        let now = self.clock.now();
        match command {
            Command::Submit(operation, reply) => {
                let op = self.machine.submit(operation, now);
                self.waiters.insert(op, reply);
            }
            Command::SetAuth(auth) => self.machine.set_credentials(auth, now),
            Command::GetAuth(reply) => {
                let _ = reply.send(self.machine.credentials().clone());
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let now = self.clock.now();
        match event {
            Event::Http(id, Ok(response)) => self.machine.handle_response(id, &response, now),
            Event::Http(id, Err(e)) => self.machine.handle_transport_error(id, e, now),
            Event::Credentials(id, result) => self.machine.handle_credentials(id, result, now),
        }
    }

    /// Does what the machine asks: send requests, call callbacks, answer callers.
    fn perform_outputs(&mut self) {
        while let Some(output) = self.machine.poll_output() {
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
                            let _ = events.send(Event::Http(id, result));
                        }
                        .instrument(span),
                    );
                }
                Output::FetchCredentials { id, source } => self.fetch_credentials(id, source),
                Output::Done { op, result } => {
                    if let Some(waiter) = self.waiters.remove(&op) {
                        // The caller may have given up (dropped its future): fine.
                        let _ = waiter.send(result);
                    }
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

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
