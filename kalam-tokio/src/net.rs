//! Connections: Tokio TCP, inside TLS for `https://` and `wss://` (rustls
//! behind the `rustls` feature). Used by the HTTP client and the WebSocket.

/// A connected byte stream: TCP, or TLS over TCP.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Connects to `host:port`, without Nagle's delay (the HTTP client's and
/// the WebSocket's one way to connect).
pub(crate) async fn tcp(host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// The connection as is for `http`/`ws`, inside TLS for `https`/`wss`.
#[cfg(not(feature = "rustls"))]
pub(crate) async fn secure(tcp: tokio::net::TcpStream, _host: &str, tls: bool) -> std::io::Result<Box<dyn Io>> {
    if tls {
        return Err(kalam_driver::adapter::tls_not_compiled("kalam-tokio"));
    }
    Ok(Box::new(tcp))
}

/// The connection as is for `http`/`ws`, inside TLS for `https`/`wss`.
#[cfg(feature = "rustls")]
pub(crate) async fn secure(tcp: tokio::net::TcpStream, host: &str, tls: bool) -> std::io::Result<Box<dyn Io>> {
    use kalam_driver::adapter::tls;
    if !tls {
        return Ok(Box::new(tcp));
    }
    let connector = tokio_rustls::TlsConnector::from(tls::client_config()?);
    Ok(Box::new(connector.connect(tls::server_name(host)?, tcp).await?))
}
