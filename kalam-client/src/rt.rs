//! The runtime surface: what an adapter provides. Everything else (the
//! driver loop, the handles, the streams, every protocol decision) is
//! written once, here and in `kalam-proto`.

use std::future::Future;
use std::time::Duration;

use kalam_proto::{ConnectionOptions, Endpoints, Incoming, Result, TransportError};

pub use crate::msg::OutFrame;
use crate::msg::{Event, SocketReport};
use crate::sync::{Receiver, Sender};

/// A runtime adapter: spawning, a clock and a timer, an HTTP client and
/// WebSocket sockets. `kalam-tokio` implements it on Tokio and hyper,
/// `kalam-async-std` on async-std and surf; both are a few hundred lines.
pub trait Runtime: Send + Sync + Sized + 'static {
    /// A pooled HTTP/1.1 client.
    type Http: Clone + Send + Sync + 'static;
    /// An HTTP answer's body.
    type Body: AsRef<[u8]> + Send + 'static;
    /// A frame received on a WebSocket.
    type Frame: Send + 'static;
    /// A timer.
    type Sleep: Future<Output = ()> + Send + 'static;

    /// Fails with a typed error when the client cannot run here (for
    /// example outside a Tokio runtime).
    fn check() -> Result<()>;

    /// Runs a task in the background.
    fn spawn<F>(future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// The runtime's monotonic clock (paused time in tests, where the
    /// runtime has it).
    fn now() -> std::time::Instant;

    /// A timer that fires at `deadline`.
    fn sleep_until(deadline: std::time::Instant) -> Self::Sleep;

    /// The HTTP client for these options.
    fn http_client(endpoints: &Endpoints, options: &ConnectionOptions, settings: &HttpSettings) -> Result<Self::Http>;

    /// Sends one request and reads the whole answer (at most
    /// `settings.max_body` bytes, within `settings.receive_timeout`).
    fn send_http(
        http: Self::Http,
        request: http::Request<Vec<u8>>,
    ) -> impl Future<Output = std::result::Result<http::Response<Self::Body>, TransportError>> + Send + 'static;

    /// Opens a WebSocket in the background and reports through `socket`:
    /// [`Socket::open`] once the handshake is done, then every frame, then
    /// [`Socket::closed`] (also when it could not be opened).
    fn open_socket(url: String, settings: SocketSettings, socket: Socket<Self::Frame>);

    /// A received frame as the session reads it.
    fn incoming(frame: &Self::Frame) -> Incoming<'_>;
}

/// Limits of the HTTP client.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Establishing a connection.
    pub connect_timeout: Duration,
    /// One exchange, from sending to the end of the answer.
    pub receive_timeout: Duration,
    /// Largest answer body.
    pub max_body: usize,
}

/// Limits of a WebSocket.
#[derive(Debug, Clone, Copy)]
pub struct SocketSettings {
    /// The TCP and WebSocket handshakes.
    pub connect_timeout: Duration,
    /// Largest frame or message accepted.
    pub max_frame: usize,
}

/// A socket task's line to the driver, for one connection attempt.
pub struct Socket<F> {
    pub(crate) attempt: u64,
    pub(crate) report: Sender<Event<F>>,
}

/// The frames the driver wants sent, in order; `None` when the driver no
/// longer wants the socket (close it).
pub struct Outgoing(Receiver<OutFrame>);

impl Outgoing {
    /// The next frame to send.
    pub async fn recv(&mut self) -> Option<OutFrame> {
        self.0.recv().await
    }
}

impl<F> Socket<F> {
    /// The handshake is done: returns the frames to send.
    pub fn open(&self) -> Outgoing {
        let (tx, rx) = crate::sync::channel();
        let _ = self.report.send(Event::Socket(self.attempt, SocketReport::Open(tx)));
        Outgoing(rx)
    }

    /// A frame arrived.
    pub fn frame(&self, frame: F) {
        let _ = self
            .report
            .send(Event::Socket(self.attempt, SocketReport::Frame(frame)));
    }

    /// The socket is gone, with the server's close code and reason if it
    /// sent a close frame, or why it failed.
    pub fn closed(self, code: Option<u16>, reason: String) {
        let _ = self
            .report
            .send(Event::Socket(self.attempt, SocketReport::Closed(code, reason)));
    }
}
