//! The HTTP transport: HTTP/1.1 connections with hyper's connection API,
//! kept alive in a [`IdlePool`]. It sends the `http::Request` values
//! kalam-proto builds and hands the answers back; no protocol logic lives
//! here. The core caps the requests in flight, and a connection is back in
//! the pool before its answer is reported, so one client never holds more
//! connections than `http_max_connections`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use kalam_client::HttpSettings;
use kalam_client::pool::IdlePool;
use kalam_proto::{Error, TransportError};

type Sender = SendRequest<Full<Bytes>>;

/// A pooled HTTP/1.1 client with the client's time and size limits.
#[derive(Clone)]
pub struct HttpClient {
    authority: http::HeaderValue,
    pool: Arc<IdlePool<Sender>>,
    limits: HttpSettings,
}

impl HttpClient {
    pub(crate) fn new(settings: &HttpSettings) -> Result<Self, Error> {
        let authority = http::HeaderValue::from_str(&settings.authority).map_err(|_| Error::InvalidUrl {
            url: settings.authority.clone(),
            reason: "not a host".into(),
        })?;
        Ok(HttpClient {
            authority,
            pool: Arc::new(IdlePool::new(settings.max_idle)),
            limits: settings.clone(),
        })
    }

    /// Sends one request and reads the whole answer, within the receive timeout.
    pub(crate) async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::Response<Bytes>, TransportError> {
        let (mut parts, body) = request.into_parts();
        // Origin form on the connection, with the authority in `Host`.
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or_else(|| http::Uri::from_static("/"), |pq| http::Uri::from(pq.clone()));
        parts.headers.insert(http::header::HOST, self.authority.clone());
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let limit = self.limits.receive_timeout;
        tokio::time::timeout(limit, self.exchange(request))
            .await
            .map_err(|_| TransportError::Timeout(limit))?
    }

    async fn exchange(&self, request: http::Request<Full<Bytes>>) -> Result<http::Response<Bytes>, TransportError> {
        let now = || tokio::time::Instant::now().into_std();
        let (mut sender, reused) = match self.pool.take(now(), |s| !s.is_closed()) {
            Some(s) => (s, true),
            None => (self.connect().await?, false),
        };
        // A kept-alive connection the server closed meanwhile fails before
        // the request leaves: then, and only then (nothing was sent, so
        // nothing can have run twice), a fresh connection takes it.
        if reused && sender.ready().await.is_err() {
            sender = self.connect().await?;
        }
        sender.ready().await.map_err(io_error)?;
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut unsent) => match unsent.take_message() {
                Some(request) if reused => {
                    sender = self.connect().await?;
                    sender.ready().await.map_err(io_error)?;
                    sender.send_request(request).await.map_err(io_error)?
                }
                _ => return Err(io_error(unsent.into_error())),
            },
        };
        let (parts, body) = response.into_parts();
        let max = self.limits.max_body;
        let body = Limited::new(body, max)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    TransportError::BodyTooLarge { limit: max }
                } else {
                    TransportError::Io(e.to_string())
                }
            })?
            .to_bytes();
        // The whole answer is read: the connection is free again.
        if !sender.is_closed() {
            self.pool.put(sender, now());
        }
        Ok(http::Response::from_parts(parts, body))
    }

    async fn connect(&self) -> Result<Sender, TransportError> {
        let connect = async {
            let (host, port) = (self.limits.host.as_str(), self.limits.port);
            let tcp = tokio::net::TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            crate::net::secure(tcp, host, self.limits.tls).await
        };
        let timeout = self.limits.connect_timeout;
        let io = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| TransportError::Connect(format!("timed out after {timeout:?}")))?
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await; // ends when the server closes it or the sender is dropped
        });
        Ok(sender)
    }
}

fn io_error(e: hyper::Error) -> TransportError {
    use std::error::Error as _;
    // The chain says why (connection reset, closed…); it never holds headers.
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    TransportError::Io(text)
}
