//! The runtime surface: what an adapter provides. Everything else (the
//! driver loop, the handles, the streams, the socket task, every protocol
//! decision) is written once, here and in `kalam-proto`.

use std::future::Future;
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};
use kalam_proto::{ConnectionOptions, Endpoints, Result, TransportError};

/// A runtime adapter: spawning, a clock and a timer, an HTTP client, and
/// TCP (or TLS) connections for the WebSocket. `kalam-tokio` implements it
/// on Tokio and hyper, `kalam-async-std` on async-std and surf.
pub trait Runtime: Send + Sync + Sized + 'static {
    /// A pooled HTTP/1.1 client.
    type Http: Clone + Send + Sync + 'static;
    /// An HTTP answer's body.
    type Body: AsRef<[u8]> + Send + 'static;
    /// A connected byte stream for a WebSocket.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
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

    /// Connects the byte stream of a WebSocket (`url` is `ws://…` or
    /// `wss://…`; TLS is the runtime's, where it has it). The handshake and
    /// the framing are kalam-client's.
    fn connect(url: &str) -> impl Future<Output = std::io::Result<Self::Stream>> + Send + 'static;
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

/// Host and port of a `ws://` / `wss://` URL, and whether it needs TLS.
pub fn socket_target(url: &str) -> std::io::Result<(String, u16, bool)> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{why}: {url}"));
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => return Err(bad("not a ws:// or wss:// URL")),
    };
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host, port, tls))
}
