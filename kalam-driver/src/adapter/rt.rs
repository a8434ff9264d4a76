//! The runtime surface: what an adapter provides. Everything else (the
//! driver loop, the handles, the streams, the WebSocket framing, every protocol
//! decision) is written once, here and in `kalam-proto`.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;

use futures_io::{AsyncRead, AsyncWrite};
use kalam_proto::proxy::{Route, Scheme};
use kalam_proto::{ConnectionOptions, Endpoints, Error, KalamLinkTimeouts, Result, TransportError};

use super::net::{Forwarding, Network, Target};

/// A runtime adapter: spawning, a clock and a timer, an HTTP client, file
/// opening for uploads, and TCP (or TLS) connections for the WebSocket.
/// `kalam-tokio` implements it on Tokio and hyper, `kalam-async-std` on
/// async-std and async-h1.
pub trait Runtime: Send + Sync + Sized + 'static {
    /// A pooled HTTP/1.1 client.
    type Http: Clone + Send + Sync + 'static;
    /// An HTTP answer's body.
    type Body: AsRef<[u8]> + Send + 'static;
    /// A connected byte stream for a WebSocket.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A timer.
    type Sleep: Future<Output = ()> + Send + 'static;
    /// How the HTTP client sends, as the application chose it with
    /// [`KalamLinkClientBuilder::http_backend`](crate::KalamLinkClientBuilder::http_backend)
    /// (`()` where there is one way; kalam-async-std: its own async-h1
    /// pool or, with its `surf` feature, a `surf::Client`).
    type HttpBackend: Clone + Default + Send + Sync + 'static;

    /// The adapter crate's name, for error messages.
    const NAME: &'static str;
    /// Whether this build can speak TLS (`https://`, `wss://`).
    const TLS: bool;
    /// Whether this build can speak HTTP/2 (see
    /// [`HttpVersion`](kalam_proto::HttpVersion)). Default: no.
    const HTTP2: bool = false;
    /// Whether a caller waiting for an answer may poll the client's driver
    /// on its own thread while no one else is, instead of waiting for the
    /// driver's task to run it. Only for runtimes whose I/O and timers work
    /// from any thread (async-std's reactor is global; Tokio's resources
    /// need their runtime's context). A caller in `block_on` then runs its
    /// query start to end on its own thread, with no cross-thread wake-up.
    /// Default: no.
    const DRIVE_IN_CALLER: bool = false;

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

    /// The HTTP client for the server and limits in `settings`, sending
    /// through `backend`.
    fn http_client(settings: &HttpSettings, backend: &Self::HttpBackend) -> Result<Self::Http>;

    /// Sends one request and reads the whole answer (at most
    /// `settings.max_body` bytes, within `settings.receive_timeout`).
    fn send_http(
        http: Self::Http,
        request: http::Request<Vec<u8>>,
    ) -> impl Future<Output = std::result::Result<http::Response<Self::Body>, TransportError>> + Send + 'static;

    /// Connects the byte stream of a WebSocket (`url` is `ws://…` or
    /// `wss://…`), through `net`'s proxy for it if any (a `CONNECT`
    /// tunnel: [`net::tunnel`](super::net::tunnel)) and inside TLS for
    /// `wss://` (the runtime's connector, `net`'s configuration). The
    /// handshake and the framing are kalam-driver's.
    fn connect(url: &str, net: &Network) -> impl Future<Output = std::io::Result<Self::Stream>> + Send + 'static;

    /// Sends one request whose body, if any, is streamed from `body` (its
    /// exact length given: the transport sends it as `Content-Length`), and
    /// answers as soon as the answer's head is in (within
    /// `settings.receive_timeout`, which thus also bounds the upload), with
    /// its body as a reader. The connection goes back to the pool once
    /// that reader reaches its end; dropping it earlier closes it.
    fn send_streaming(
        http: Self::Http,
        request: http::Request<()>,
        body: Option<(BodyChunks, u64)>,
    ) -> impl Future<Output = std::result::Result<http::Response<BodyReader>, TransportError>> + Send + 'static;

    /// Opens a local file for reading, with its length.
    fn open_file(path: PathBuf) -> impl Future<Output = std::io::Result<(BodyReader, u64)>> + Send + 'static;
}

/// A request body streamed in chunks, in order.
pub type BodyChunks = Pin<Box<dyn Stream<Item = std::io::Result<Vec<u8>>> + Send>>;

/// A body read as it arrives (an answer's, or a local file's).
pub type BodyReader = Pin<Box<dyn AsyncRead + Send>>;

/// The server and the limits of the HTTP client.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The server's host name or address (IPv6 without brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// `https`: connect with TLS.
    pub tls: bool,
    /// The `Host` header value (`host:port` as in the base URL).
    pub authority: String,
    /// Idle keep-alive connections kept (at least the in-flight cap).
    pub max_idle: usize,
    /// Establishing a connection.
    pub connect_timeout: Duration,
    /// One exchange, from sending to the end of the answer.
    pub receive_timeout: Duration,
    /// Largest answer body.
    pub max_body: usize,
    /// The proxies and the TLS configuration.
    pub net: Network,
    /// HTTP/1.1 or HTTP/2.
    pub version: kalam_proto::HttpVersion,
}

impl HttpSettings {
    /// The server, as a connection target.
    pub fn target(&self) -> Target {
        let scheme = if self.tls { Scheme::Https } else { Scheme::Http };
        Target {
            scheme,
            host: self.host.clone(),
            port: self.port,
        }
    }

    /// What each request needs when the server is `http://` behind a
    /// forwarding proxy (absolute form, the proxy's credentials); `None`
    /// when requests go straight or through a tunnel.
    pub fn forwarding(&self) -> Option<Forwarding> {
        let target = self.target();
        match self.net.route(target.scheme, &target.host, target.port) {
            Route::Forward(proxy) => Some(Forwarding {
                origin: format!("http://{}", self.authority),
                authorization: proxy.authorization(),
                proxy: proxy.to_string(),
                target: self.authority.clone(),
            }),
            Route::Direct | Route::Tunnel(_) => None,
        }
    }

    /// The settings for the server at `endpoints`, refused with a typed
    /// error for `https://` when the runtime `R` has no TLS compiled in.
    pub fn new<R: Runtime>(
        endpoints: &Endpoints,
        options: &ConnectionOptions,
        timeouts: &KalamLinkTimeouts,
    ) -> Result<Self> {
        let net = Network::new(&options.proxy)?;
        let invalid = |reason: String| Error::InvalidUrl {
            url: endpoints.base().to_owned(),
            reason,
        };
        let tls = endpoints.is_https();
        if tls && !R::TLS {
            return Err(invalid(format!("https needs the `rustls` feature of {}", R::NAME)));
        }
        if options.http_version == kalam_proto::HttpVersion::Http2 && !R::HTTP2 {
            return Err(Error::InvalidConfig(format!(
                "HTTP/2 needs kalam-tokio with its `http2` feature (this is {})",
                R::NAME
            )));
        }
        let uri: http::Uri = endpoints.base().parse().map_err(|_| invalid("not a URL".into()))?;
        let authority = uri.authority().ok_or_else(|| invalid("no host".into()))?;
        Ok(HttpSettings {
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            tls,
            authority: authority.as_str().to_owned(),
            max_idle: options.http_pool_max_idle.max(options.http_max_connections),
            connect_timeout: timeouts.connection_timeout,
            receive_timeout: timeouts.receive_timeout,
            max_body: options.max_response_bytes,
            net,
            version: options.http_version,
        })
    }
}

/// Limits of a WebSocket.
#[derive(Debug, Clone)]
pub struct SocketSettings {
    /// The TCP and WebSocket handshakes.
    pub connect_timeout: Duration,
    /// Largest frame or message accepted.
    pub max_frame: usize,
    /// The proxies and the TLS configuration.
    pub net: Network,
}
