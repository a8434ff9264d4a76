//! How an adapter connects: the proxies (kalam-proto decides the route and
//! frames `CONNECT`), the TLS configuration, and the pieces of connecting
//! that do not depend on the runtime: the tunnel handshake over any byte
//! stream, the absolute-form request line for an engine that writes only
//! origin form, and the mapping of connection failures to typed errors.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use futures_util::{AsyncReadExt as _, AsyncWriteExt as _};
use kalam_proto::proxy::{ConnectAnswer, ProxyConfig, ProxyMode, ProxyServer, Route, Scheme, parse_connect_answer};
use kalam_proto::{Error, Result, TransportError};

/// The proxies and the TLS configuration of one client.
#[derive(Clone, Debug, Default)]
pub struct Network {
    proxies: Arc<ProxyConfig>,
    #[cfg(feature = "rustls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Network {
    /// The proxies `mode` names (the environment's, read now, for
    /// [`ProxyMode::FromEnvironment`]); no TLS configuration yet.
    pub fn new(mode: &ProxyMode) -> Result<Network> {
        let proxies = match mode {
            ProxyMode::FromEnvironment => ProxyConfig::from_env_with(|name| std::env::var(name).ok())
                .map_err(|e| Error::InvalidConfig(format!("the proxy environment: {e}")))?,
            ProxyMode::Disabled => ProxyConfig::none(),
            ProxyMode::Use(config) => config.clone(),
        };
        Ok(Network {
            proxies: Arc::new(proxies),
            #[cfg(feature = "rustls")]
            tls: None,
        })
    }

    /// How to reach `host:port` for a `scheme` target.
    pub fn route(&self, scheme: Scheme, host: &str, port: u16) -> Route<'_> {
        self.proxies.route(scheme, host, port)
    }

    /// The TLS configuration for `https://` and `wss://`.
    #[cfg(feature = "rustls")]
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Network {
        self.tls = Some(config);
        self
    }

    /// The TLS configuration (the platform's roots unless the builder was
    /// given another).
    #[cfg(feature = "rustls")]
    pub fn tls(&self) -> std::io::Result<Arc<rustls::ClientConfig>> {
        match &self.tls {
            Some(config) => Ok(config.clone()),
            None => crate::tls::TlsConfig::default()
                .build()
                .map_err(|e| std::io::Error::other(e.to_string())),
        }
    }
}

/// Where a connection goes: the scheme, host and port of a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http`, `https`, `ws` or `wss`.
    pub scheme: Scheme,
    /// The host (an IPv6 address without brackets).
    pub host: String,
    /// The port (the scheme's default when the URL has none).
    pub port: u16,
}

impl Target {
    /// The target of `url`.
    pub fn of(url: &str) -> std::io::Result<Target> {
        let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{why}: {url}"));
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let scheme = uri
            .scheme_str()
            .and_then(Scheme::parse)
            .ok_or_else(|| bad("not an http(s):// or ws(s):// URL"))?;
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if scheme.is_tls() { 443 } else { 80 });
        Ok(Target { scheme, host, port })
    }
}

/// A proxy that would not open a tunnel, inside an `std::io::Error`
/// ([`connect_error`] takes it out).
#[derive(Debug)]
struct ProxyRefused(TransportError);

impl std::fmt::Display for ProxyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ProxyRefused {}

/// Opens a `CONNECT` tunnel through `proxy` to `host:port` on `stream`
/// (connected to the proxy). A refusal is a typed error
/// ([`TransportError::ProxyRefused`] through [`connect_error`]).
pub async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    proxy: &ProxyServer,
    host: &str,
    port: u16,
) -> std::io::Result<()> {
    stream.write_all(&proxy.connect_request(host, port)).await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the proxy {proxy} closed the connection before answering CONNECT"),
            ));
        }
        answer.extend_from_slice(&chunk[..n]);
        match parse_connect_answer(&answer) {
            ConnectAnswer::Incomplete => {}
            ConnectAnswer::Established { head_len } if head_len == answer.len() => return Ok(()),
            // The target speaks only after the client (TLS, HTTP and the
            // WebSocket upgrade all start with the client): bytes already
            // here are not the target's.
            ConnectAnswer::Established { .. } | ConnectAnswer::Garbled => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the proxy {proxy} answered CONNECT with something that is not HTTP"),
                ));
            }
            ConnectAnswer::Refused { status } => {
                let target = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                return Err(std::io::Error::other(ProxyRefused(TransportError::ProxyRefused {
                    proxy: proxy.to_string(),
                    target,
                    status,
                })));
            }
        }
    }
}

/// An `http://` server behind a forwarding proxy: what each request
/// through it needs ([`HttpSettings::forwarding`](super::HttpSettings::forwarding)).
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// `http://host:port`: the origin the requests name in absolute form.
    pub origin: String,
    /// The proxy's `Proxy-Authorization`, when its URL has credentials.
    pub authorization: Option<http::HeaderValue>,
    /// The proxy, as it shows in errors (`http://host:port`).
    pub proxy: String,
    /// The server's `host:port`.
    pub target: String,
}

impl Forwarding {
    /// The proxy's own refusal of a request: a `407` (a KalamDB server
    /// never sends one) is [`TransportError::ProxyRefused`], not the
    /// server's answer.
    pub fn refusal(&self, status: u16) -> Option<TransportError> {
        (status == 407).then(|| TransportError::ProxyRefused {
            proxy: self.proxy.clone(),
            target: self.target.clone(),
            status,
        })
    }
}

/// The typed error for a connection that could not be made: a proxy's
/// refusal, a TLS failure (with the `rustls` feature), or the connect
/// error as it is.
pub fn connect_error(e: &std::io::Error) -> TransportError {
    if let Some(typed) = typed_failure(e) {
        return typed;
    }
    TransportError::Connect(e.to_string())
}

/// A proxy refusal or a TLS failure anywhere in `e`'s chain (an HTTP
/// engine's error wraps the I/O error that wraps the TLS one): the typed
/// error for it.
pub fn typed_failure(e: &(dyn std::error::Error + 'static)) -> Option<TransportError> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut depth = 0;
    while let Some(err) = next {
        if let Some(ProxyRefused(typed)) = err.downcast_ref::<ProxyRefused>() {
            return Some(typed.clone());
        }
        #[cfg(feature = "rustls")]
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(crate::tls::classify(tls));
        }
        // `io::Error::source` skips the error it wraps: look at it.
        next = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
        depth += 1;
        if depth > 16 {
            break;
        }
    }
    None
}

/// A byte stream to an HTTP proxy on which each request line is written in
/// absolute form (`POST http://host:port/path HTTP/1.1`), for an HTTP
/// engine that writes only origin form: arm it ([`arm_handle`](Self::arm_handle)) before each
/// request, and the `http://host:port` prefix goes in after the method.
pub struct AbsoluteForm<S> {
    inner: S,
    prefix: Vec<u8>,
    armed: Arc<AtomicBool>,
    /// Of the prefix, what is still to write (once the method is out).
    pending: Option<usize>,
}

impl<S> AbsoluteForm<S> {
    /// Wraps `inner`; `origin` is `http://host:port`.
    pub fn new(inner: S, origin: &str) -> Self {
        AbsoluteForm {
            inner,
            prefix: origin.as_bytes().to_vec(),
            armed: Arc::new(AtomicBool::new(false)),
            pending: None,
        }
    }

    /// A handle that arms it: the next bytes written start a request.
    pub fn arm_handle(&self) -> Arc<AtomicBool> {
        self.armed.clone()
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AbsoluteForm<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        // The prefix, after the method went out.
        while let Some(done) = this.pending {
            if done == this.prefix.len() {
                this.pending = None;
                break;
            }
            match Pin::new(&mut this.inner).poll_write(cx, &this.prefix[done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => this.pending = Some(done + n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if this.armed.load(Ordering::Acquire) {
            // The method, up to its space, goes as it is; then the prefix.
            if let Some(space) = buf.iter().position(|b| *b == b' ') {
                let written = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..=space]))?;
                if written == space + 1 {
                    this.armed.store(false, Ordering::Release);
                    this.pending = Some(0);
                }
                return Poll::Ready(Ok(written));
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AbsoluteForm<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `f` to its end (the test streams never wait).
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    /// A writer that takes at most `step` bytes a call.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn absolute_form_goes_in_after_the_method_of_each_armed_request() {
        for step in [1, 2, 3, 7, 1000] {
            let mut w = AbsoluteForm::new(Trickle { out: Vec::new(), step }, "http://db:8080");
            let arm = w.arm_handle();
            block_on(async {
                arm.store(true, Ordering::Release);
                w.write_all(b"POST /v1/api/sql HTTP/1.1\r\nHost: db:8080\r\n\r\n{\"sql\":\"SELECT 1\"}")
                    .await
                    .unwrap();
                // Not armed: as it is.
                w.write_all(b" more body").await.unwrap();
                arm.store(true, Ordering::Release);
                w.write_all(b"GET /health HTTP/1.1\r\n\r\n").await.unwrap();
            });
            assert_eq!(
                String::from_utf8(w.inner.out).unwrap(),
                "POST http://db:8080/v1/api/sql HTTP/1.1\r\nHost: db:8080\r\n\r\n{\"sql\":\"SELECT 1\"} more body\
                 GET http://db:8080/health HTTP/1.1\r\n\r\n",
                "step {step}"
            );
        }
    }

    #[test]
    fn a_refused_tunnel_is_typed() {
        struct Proxy {
            answer: &'static [u8],
            sent: Vec<u8>,
        }
        impl AsyncRead for Proxy {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<std::io::Result<usize>> {
                let n = buf.len().min(self.answer.len()).min(5);
                buf[..n].copy_from_slice(&self.answer[..n]);
                self.answer = &self.answer[n..];
                Poll::Ready(Ok(n))
            }
        }
        impl AsyncWrite for Proxy {
            fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
                self.sent.extend_from_slice(buf);
                Poll::Ready(Ok(buf.len()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let proxy = ProxyServer::parse("http://u:pw@p:3128").unwrap();
        let run = |answer: &'static [u8]| {
            let mut s = Proxy {
                answer,
                sent: Vec::new(),
            };
            let r = block_on(tunnel(&mut s, &proxy, "db", 443));
            (r, s.sent)
        };
        let (ok, sent) = run(b"HTTP/1.1 200 Connection established\r\n\r\n");
        assert!(ok.is_ok(), "{ok:?}");
        assert!(sent.starts_with(b"CONNECT db:443 HTTP/1.1\r\n"));

        let (refused, _) = run(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
        let e = connect_error(&refused.unwrap_err());
        assert_eq!(
            e,
            TransportError::ProxyRefused {
                proxy: "http://p:3128".into(),
                target: "db:443".into(),
                status: 407
            }
        );
        assert!(!e.to_string().contains("pw"), "{e}");

        let (garbled, _) = run(b"SSH-2.0-x\r\n\r\n");
        assert!(matches!(
            connect_error(&garbled.unwrap_err()),
            TransportError::Connect(_)
        ));
        let (closed, _) = run(b"");
        assert!(closed.is_err());
    }

    #[test]
    fn targets() {
        let t = Target::of("wss://[::1]/v1/ws").unwrap();
        assert_eq!((t.scheme, t.host.as_str(), t.port), (Scheme::Wss, "::1", 443));
        assert_eq!(Target::of("http://db:81").unwrap().port, 81);
        assert!(Target::of("ftp://db").is_err());
    }
}
