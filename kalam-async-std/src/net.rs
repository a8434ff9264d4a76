//! Connections: async-std TCP, inside TLS for `https://` and `wss://`
//! (rustls behind the `rustls` feature). Used by the HTTP client and the
//! WebSocket.

use async_std::net::TcpStream;
use futures_util::io::{AsyncRead, AsyncWrite};

/// A connected byte stream: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Connects to `host:port`, without Nagle's delay.
pub(crate) async fn tcp(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// The connection as is for `http`/`ws`, inside TLS for `https`/`wss`.
#[cfg(not(feature = "rustls"))]
pub(crate) async fn secure(tcp: TcpStream, _host: &str, tls: bool) -> std::io::Result<Box<dyn Io>> {
    if tls {
        return Err(kalam_driver::adapter::tls_not_compiled("kalam-async-std"));
    }
    Ok(Box::new(tcp))
}

/// The connection as is for `http`/`ws`, inside TLS for `https`/`wss`.
#[cfg(feature = "rustls")]
pub(crate) async fn secure(tcp: TcpStream, host: &str, tls: bool) -> std::io::Result<Box<dyn Io>> {
    use kalam_driver::adapter::tls;
    if !tls {
        return Ok(Box::new(tcp));
    }
    let connector = futures_rustls::TlsConnector::from(tls::client_config()?);
    Ok(Box::new(connector.connect(tls::server_name(host)?, tcp).await?))
}
