//! Connections: Tokio TCP, through a proxy's `CONNECT` tunnel when the
//! route says so (kalam-proto decides it, kalam-driver speaks it), inside
//! TLS for `https://` and `wss://` (rustls behind the `rustls` feature).
//! Used by the HTTP client and the WebSocket.

use async_tungstenite::tokio::TokioAdapter;
use kalam_driver::adapter::net::tunnel;
use kalam_driver::adapter::{Network, Target};
use kalam_proto::proxy::Route;

/// A connected byte stream: TCP, or TLS over TCP.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Connects to `target` as `net` routes it: TCP to the target or to its
/// proxy, a tunnel through the proxy for `https`, `ws` and `wss`, then TLS
/// for `https` and `wss`. (An `http` target behind a proxy gets a
/// connection to the proxy; its requests go in absolute form.)
/// With `tunnel_only`, an `http` target behind a proxy is tunnelled too
/// (HTTP/2 with prior knowledge, which a forwarding proxy cannot carry).
pub(crate) async fn open(net: &Network, target: &Target, tunnel_only: bool) -> std::io::Result<Box<dyn Io>> {
    let mut route = net.route(target.scheme, &target.host, target.port);
    if tunnel_only {
        route = route.tunnelled();
    }
    let (host, port) = route.first_hop(&target.host, target.port);
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    // Without Nagle's delay.
    tcp.set_nodelay(true)?;
    let tcp = match route {
        Route::Tunnel(proxy) => {
            let mut io = TokioAdapter::new(tcp);
            tunnel(&mut io, proxy, &target.host, target.port).await?;
            io.into_inner()
        }
        Route::Direct | Route::Forward(_) => tcp,
    };
    secure(tcp, net, target).await
}

/// The connection as is for `http`/`ws`, inside TLS for `https`/`wss`.
#[cfg(not(feature = "rustls"))]
async fn secure(tcp: tokio::net::TcpStream, _net: &Network, target: &Target) -> std::io::Result<Box<dyn Io>> {
    if target.scheme.is_tls() {
        return Err(kalam_driver::adapter::tls_not_compiled("kalam-tokio"));
    }
    Ok(Box::new(tcp))
}

/// The connection as is for `http`/`ws`, inside TLS for `https`/`wss`.
#[cfg(feature = "rustls")]
async fn secure(tcp: tokio::net::TcpStream, net: &Network, target: &Target) -> std::io::Result<Box<dyn Io>> {
    if !target.scheme.is_tls() {
        return Ok(Box::new(tcp));
    }
    let connector = tokio_rustls::TlsConnector::from(net.tls()?);
    let name = kalam_driver::tls::server_name(&target.host)?;
    Ok(Box::new(connector.connect(name, tcp).await?))
}
