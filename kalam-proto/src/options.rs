//! Client options shared by every adapter.

use std::time::Duration;

/// How the client manages its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// Open the WebSocket only when the first subscription needs it
    /// (default `true`). With `false`, the client opens it as soon as it is
    /// built, so the first subscription does not pay for the set-up.
    pub ws_lazy_connect: bool,
    /// Reconnect the WebSocket after it drops (default `true`).
    pub auto_reconnect: bool,
    /// First reconnect delay (default 500 ms); it doubles up to `max_reconnect_delay`.
    pub reconnect_delay: Duration,
    /// Longest reconnect delay (default 30 s).
    pub max_reconnect_delay: Duration,
    /// Give up after this many failed reconnects in a row (`None`: never).
    pub max_reconnect_attempts: Option<u32>,
    /// WebSocket keepalive ping interval (default 5 s; the server drops a
    /// client it has not heard from for 10 s).
    pub ping_interval: Duration,
    /// Ask the server not to gzip WebSocket frames (`?compress=false`).
    pub disable_compression: bool,
    /// Most idle HTTP connections kept per host (default 64). Kept at least
    /// as large as `http_max_connections` by the adapters, so that warm
    /// traffic opens no new connections.
    pub http_pool_max_idle: usize,
    /// Most HTTP requests in flight at once, hence most connections one
    /// client opens to the server (default 64). Further requests wait their
    /// turn, in order; logins and refreshes never wait behind them.
    pub http_max_connections: usize,
    /// Largest HTTP answer body or WebSocket message accepted (default 64 MiB).
    pub max_response_bytes: usize,
    /// What is buffered per live query before a slow consumer's
    /// subscription is ended, in rows (a page of initial rows weighs its
    /// rows, any other event 1; default 1024). The next initial page is
    /// asked for only when there is room for it.
    pub subscription_buffer: usize,
    /// Largest file in an upload, checked before sending (default 25 MiB,
    /// the server's default).
    pub max_file_bytes: u64,
    /// Most files in one upload, checked before sending (default 20, the
    /// server's default).
    pub max_files_per_request: usize,
    /// Largest upload request body, files and framing, checked before
    /// sending (default 10 MiB: the server refuses a larger `Content-Length`
    /// with `413 BODY_TOO_LARGE`, whatever the per-file limit).
    pub max_upload_body_bytes: u64,
    /// Send again a SQL request the server refused for rate (`429`: it
    /// never ran), after a pause, within the receive timeout of its
    /// submission, and pace SQL requests under the rate the server took
    /// (default `true`). With `false`, a `429` goes to the caller at once.
    pub rate_limit_retry: bool,
    /// The HTTP proxies the HTTP requests and the WebSocket go through
    /// (default: the environment's `HTTP_PROXY`, `HTTPS_PROXY`,
    /// `ALL_PROXY` and `NO_PROXY`, read when the client is built; see
    /// [`proxy`](crate::proxy) for how each target is reached).
    pub proxy: crate::proxy::ProxyMode,
    /// How many times a request whose connection could not be made (so
    /// nothing was sent: a refused connection, a connect timeout) is sent
    /// again, after 100 ms doubling up to 2 s, within the receive timeout
    /// of its submission (default 0). Whatever may have reached the server
    /// is never sent again.
    pub max_retries: u32,
    /// The HTTP version of the requests (default HTTP/1.1; HTTP/2 needs
    /// `kalam-tokio`'s `http2` feature).
    pub http_version: HttpVersion,
}

/// The HTTP version of a client's requests
/// ([`ConnectionOptions::http_version`]). The WebSocket is always an
/// HTTP/1.1 upgrade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpVersion {
    /// HTTP/1.1 over a pool of keep-alive connections, one request at a
    /// time on each (the default).
    #[default]
    Http1,
    /// HTTP/2: every request in flight multiplexed over one connection
    /// (with prior knowledge over `http://`, by ALPN over `https://`).
    /// `kalam-tokio` with its `http2` feature; elsewhere, building the
    /// client is refused with a typed error.
    Http2,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            ws_lazy_connect: true,
            auto_reconnect: true,
            reconnect_delay: Duration::from_millis(500),
            max_reconnect_delay: Duration::from_secs(30),
            max_reconnect_attempts: None,
            ping_interval: Duration::from_secs(5),
            disable_compression: false,
            http_pool_max_idle: 64,
            http_max_connections: 64,
            max_response_bytes: 64 << 20,
            subscription_buffer: 1024,
            max_file_bytes: 25 << 20,
            max_files_per_request: 20,
            max_upload_body_bytes: 10 << 20,
            rate_limit_retry: true,
            proxy: crate::proxy::ProxyMode::FromEnvironment,
            max_retries: 0,
            http_version: HttpVersion::Http1,
        }
    }
}

impl ConnectionOptions {
    /// Lazy (default) or eager WebSocket connection.
    pub fn with_ws_lazy_connect(mut self, lazy: bool) -> Self {
        self.ws_lazy_connect = lazy;
        self
    }

    /// Whether to reconnect the WebSocket after it drops.
    pub fn with_auto_reconnect(mut self, on: bool) -> Self {
        self.auto_reconnect = on;
        self
    }

    /// First and longest reconnect delay.
    pub fn with_reconnect_delay(mut self, first: Duration, max: Duration) -> Self {
        self.reconnect_delay = first;
        self.max_reconnect_delay = max.max(first);
        self
    }

    /// Give up after `attempts` failed reconnects in a row.
    pub fn with_max_reconnect_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_reconnect_attempts = attempts;
        self
    }

    /// WebSocket keepalive interval (clamped to at most 5 s).
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval.min(Duration::from_secs(5));
        self
    }

    /// Ask the server for uncompressed WebSocket frames.
    pub fn with_disable_compression(mut self, disable: bool) -> Self {
        self.disable_compression = disable;
        self
    }

    /// Most idle HTTP connections kept per host.
    pub fn with_http_pool_max_idle(mut self, n: usize) -> Self {
        self.http_pool_max_idle = n;
        self
    }

    /// Retry and pace SQL requests refused for rate (default on; see the
    /// field [`rate_limit_retry`](Self::rate_limit_retry)).
    pub fn with_rate_limit_retry(mut self, on: bool) -> Self {
        self.rate_limit_retry = on;
        self
    }

    /// Go through these proxies, whatever the environment says.
    pub fn with_proxy(mut self, proxies: crate::proxy::ProxyConfig) -> Self {
        self.proxy = crate::proxy::ProxyMode::Use(proxies);
        self
    }

    /// Retries of a request whose connection could not be made (see the
    /// field [`max_retries`](Self::max_retries)).
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The HTTP version of the requests.
    pub fn with_http_version(mut self, version: HttpVersion) -> Self {
        self.http_version = version;
        self
    }

    /// Go through no proxy, whatever the environment says.
    pub fn without_proxy(mut self) -> Self {
        self.proxy = crate::proxy::ProxyMode::Disabled;
        self
    }

    /// Most HTTP requests in flight at once (at least 1).
    pub fn with_http_max_connections(mut self, n: usize) -> Self {
        self.http_max_connections = n.max(1);
        self
    }

    /// Largest HTTP answer body or WebSocket message accepted.
    pub fn with_max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// Events buffered per live query.
    pub fn with_subscription_buffer(mut self, n: usize) -> Self {
        self.subscription_buffer = n.max(1);
        self
    }

    /// Largest file in an upload (match the server's `files` settings).
    pub fn with_max_file_bytes(mut self, n: u64) -> Self {
        self.max_file_bytes = n;
        self
    }

    /// Most files in one upload (match the server's `files` settings).
    pub fn with_max_files_per_request(mut self, n: usize) -> Self {
        self.max_files_per_request = n;
        self
    }

    /// Largest upload request body (match the server's body limit).
    pub fn with_max_upload_body_bytes(mut self, n: u64) -> Self {
        self.max_upload_body_bytes = n;
        self
    }
}

/// Time limits of the client's operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KalamLinkTimeouts {
    /// Establishing a TCP (and TLS) connection. Default 10 s.
    pub connection_timeout: Duration,
    /// One HTTP exchange, from sending to the end of the answer. Default 30 s.
    pub receive_timeout: Duration,
    /// The WebSocket `authenticate` exchange. Default 5 s.
    pub auth_timeout: Duration,
    /// A subscription's acknowledgement. Default 5 s.
    pub subscribe_timeout: Duration,
}

impl Default for KalamLinkTimeouts {
    fn default() -> Self {
        KalamLinkTimeouts {
            connection_timeout: Duration::from_secs(10),
            receive_timeout: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(5),
            subscribe_timeout: Duration::from_secs(5),
        }
    }
}

impl KalamLinkTimeouts {
    /// Sets the connection timeout.
    pub fn with_connection_timeout(mut self, d: Duration) -> Self {
        self.connection_timeout = d;
        self
    }

    /// Sets the per-exchange timeout.
    pub fn with_receive_timeout(mut self, d: Duration) -> Self {
        self.receive_timeout = d;
        self
    }

    /// Sets the WebSocket auth timeout.
    pub fn with_auth_timeout(mut self, d: Duration) -> Self {
        self.auth_timeout = d;
        self
    }

    /// Sets the subscription acknowledgement timeout.
    pub fn with_subscribe_timeout(mut self, d: Duration) -> Self {
        self.subscribe_timeout = d;
        self
    }
}
