//! The HTTP transport: HTTP/1.1 with async-h1 (the engine under surf) over
//! async-std TCP, kept alive in kalam-client's [`IdlePool`]; a connection is
//! back in the pool before its answer is reported, so one client holds at
//! most `http_max_connections` connections. It sends the
//! `http::Request` values kalam-proto builds and hands the answers back; no
//! protocol logic lives here, and it is the one module to change to swap the
//! HTTP backend.
//!
//! Why not surf itself: its HTTP/1.1 client pools connections with deadpool
//! 0.7, which depends on tokio; this crate promises an application no tokio.

use std::sync::Arc;
use std::time::Instant;

use async_std::net::TcpStream;
use futures_util::AsyncReadExt as _;
use kalam_client::HttpSettings;
use kalam_client::pool::IdlePool;
use kalam_proto::{ConnectionOptions, Endpoints, Error, TransportError};

/// A pooled HTTP/1.1 client with the client's time and size limits.
#[derive(Clone)]
pub struct HttpClient {
    host: String,
    port: u16,
    pool: Arc<IdlePool<TcpStream>>,
    limits: HttpSettings,
}

impl HttpClient {
    pub(crate) fn new(
        endpoints: &Endpoints,
        options: &ConnectionOptions,
        settings: &HttpSettings,
    ) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: endpoints.base().to_owned(),
            reason: reason.into(),
        };
        if endpoints.is_https() {
            return Err(invalid(
                "https is not supported by kalam-async-std yet; use kalam-tokio with `rustls`",
            ));
        }
        let uri: http::Uri = endpoints.base().parse().map_err(|_| invalid("not a URL"))?;
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        Ok(HttpClient {
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port: uri.port_u16().unwrap_or(80),
            pool: Arc::new(IdlePool::new(
                options.http_pool_max_idle.max(options.http_max_connections),
            )),
            limits: settings.clone(),
        })
    }

    /// Sends one request and reads the whole answer, within the receive timeout.
    pub(crate) async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, TransportError> {
        let request = to_http_types(request)?;
        let exchange = async {
            let stream = self.checkout().await?;
            let mut encoder = async_h1::client::Encoder::new(request);
            futures_util::io::copy(&mut encoder, &mut &stream)
                .await
                .map_err(|e| TransportError::Io(e.to_string()))?;
            let mut response = async_h1::client::decode(stream.clone())
                .await
                .map_err(|e| TransportError::Io(e.to_string()))?;
            let mut body = Vec::new();
            response
                .take_body()
                .take(self.limits.max_body as u64 + 1)
                .read_to_end(&mut body)
                .await
                .map_err(|e| TransportError::Io(e.to_string()))?;
            if body.len() > self.limits.max_body {
                return Err(TransportError::BodyTooLarge {
                    limit: self.limits.max_body,
                });
            }
            let keep = response
                .header("connection")
                .is_none_or(|v| !v.as_str().eq_ignore_ascii_case("close"));
            let answer = from_http_types(&response, body)?;
            if keep {
                self.checkin(stream);
            }
            Ok(answer)
        };
        async_std::future::timeout(self.limits.receive_timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout(self.limits.receive_timeout))?
    }

    async fn checkout(&self) -> Result<TcpStream, TransportError> {
        if let Some(stream) = self.pool.take(Instant::now(), still_open) {
            return Ok(stream);
        }
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = async_std::future::timeout(self.limits.connect_timeout, connect)
            .await
            .map_err(|_| TransportError::Connect(format!("timed out after {:?}", self.limits.connect_timeout)))?
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn checkin(&self, stream: TcpStream) {
        self.pool.put(stream, Instant::now());
    }
}

/// Whether an idle connection can still carry a request: the server has
/// neither closed nor reset it (its keep-alive timeout, a restart, a network
/// cut) nor sent anything unasked. Looks without waiting.
fn still_open(stream: &TcpStream) -> bool {
    use futures_util::FutureExt as _;
    let mut byte = [0u8; 1];
    // Pending: nothing to read, the connection is open and quiet.
    stream.peek(&mut byte).now_or_never().is_none()
}

fn to_http_types(request: http::Request<Vec<u8>>) -> Result<http_types::Request, TransportError> {
    let (parts, body) = request.into_parts();
    let bad = |what: &str| TransportError::Io(format!("cannot send this request: {what}"));
    let url = http_types::Url::parse(&parts.uri.to_string()).map_err(|_| bad("URL"))?;
    let method: http_types::Method = parts.method.as_str().parse().map_err(|_| bad("method"))?;
    let mut out = http_types::Request::new(method, url);
    out.set_body(body);
    for (name, value) in &parts.headers {
        let value = value.to_str().map_err(|_| bad("header value"))?;
        out.insert_header(name.as_str(), value);
    }
    Ok(out)
}

fn from_http_types(response: &http_types::Response, body: Vec<u8>) -> Result<http::Response<Vec<u8>>, TransportError> {
    let mut out = http::Response::builder().status(u16::from(response.status()));
    for (name, values) in response.iter() {
        for value in values.iter() {
            out = out.header(name.as_str(), value.as_str());
        }
    }
    out.body(body)
        .map_err(|e| TransportError::Io(format!("an answer this client cannot read: {e}")))
}
