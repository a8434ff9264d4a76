//! Tokio as a [`Runtime`]: spawn, clock, timer, hyper for HTTP, and Tokio
//! TCP (with rustls for `wss://`, behind the `rustls` feature) under the
//! WebSocket.

use async_tungstenite::tokio::TokioAdapter;
use bytes::Bytes;
use kalam_client::{HttpSettings, Runtime, socket_target};
use kalam_proto::{ConnectionOptions, Endpoints, Error, Result, TransportError};

pub use crate::http::HttpClient;

/// The Tokio runtime (the type parameter of the client types).
#[derive(Debug, Clone, Copy)]
pub struct Tokio;

/// A connected byte stream: TCP, or TLS over TCP.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

impl Runtime for Tokio {
    type Http = HttpClient;
    type Body = Bytes;
    type Stream = TokioAdapter<Box<dyn Io>>;
    type Sleep = tokio::time::Sleep;

    fn check() -> Result<()> {
        tokio::runtime::Handle::try_current()
            .map(drop)
            .map_err(|_| Error::Runtime("KalamLinkClient must be built inside a Tokio runtime".into()))
    }

    fn spawn<F>(future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(future);
    }

    fn now() -> std::time::Instant {
        // Tokio's clock, so that paused time in tests reaches the client.
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(deadline: std::time::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.into())
    }

    fn http_client(endpoints: &Endpoints, options: &ConnectionOptions, settings: &HttpSettings) -> Result<HttpClient> {
        HttpClient::new(endpoints, options, settings)
    }

    async fn send_http(
        http: HttpClient,
        request: http::Request<Vec<u8>>,
    ) -> std::result::Result<http::Response<Bytes>, TransportError> {
        http.send(request).await
    }

    fn connect(url: &str) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send + 'static {
        let target = socket_target(url);
        async move {
            let (host, port, tls) = target?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioAdapter::new(secure(tcp, &host, tls).await?))
        }
    }
}

/// The connection as is for `http`/`ws`, inside TLS for `https`/`wss`.
#[cfg(not(feature = "rustls"))]
pub(crate) async fn secure(tcp: tokio::net::TcpStream, _host: &str, tls: bool) -> std::io::Result<Box<dyn Io>> {
    if tls {
        return Err(std::io::Error::other(
            "https:// and wss:// need the `rustls` feature of kalam-tokio",
        ));
    }
    Ok(Box::new(tcp))
}

/// The connection as is for `http`/`ws`, inside TLS for `https`/`wss`.
#[cfg(feature = "rustls")]
pub(crate) async fn secure(tcp: tokio::net::TcpStream, host: &str, tls: bool) -> std::io::Result<Box<dyn Io>> {
    use std::sync::{Arc, OnceLock};

    use tokio_rustls::rustls;

    if !tls {
        return Ok(Box::new(tcp));
    }
    // The roots load once, on the first TLS connection.
    static CONFIG: OnceLock<std::result::Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(std::io::Error::other)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    Ok(Box::new(
        tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?,
    ))
}
