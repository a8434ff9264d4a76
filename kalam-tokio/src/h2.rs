//! HTTP/2 (the `http2` feature): every request in flight multiplexed over
//! one connection, with hyper's HTTP/2 client. The connection is opened on
//! the first request (through the proxy's tunnel and inside TLS, with ALPN
//! `h2`, as for HTTP/1.1) and again after it closes; the core's in-flight
//! cap and token handling are unchanged.

use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kalam_driver::adapter::HttpSettings;
use kalam_proto::{Error, HttpVersion, TransportError};

use crate::http::{HttpClient, RequestBody, SourceFailed, io_error};

/// The HTTP/2 connection of one client.
pub(crate) struct H2 {
    sender: Mutex<Option<SendRequest<RequestBody>>>,
    /// Held while a connection is being opened, so that concurrent first
    /// requests open one, not one each.
    opening: tokio::sync::Mutex<()>,
    /// `http` or `https`, for the requests' `:scheme`.
    scheme: &'static str,
    authority: String,
}

impl H2 {
    /// HTTP/2 for `settings`, if asked for: the TLS configuration then
    /// offers ALPN `h2` only.
    pub(crate) fn for_settings(settings: &mut HttpSettings) -> Result<Option<Arc<H2>>, Error> {
        if settings.version != HttpVersion::Http2 {
            return Ok(None);
        }
        #[cfg(feature = "rustls")]
        if settings.tls {
            let mut config = settings
                .net
                .tls()
                .map_err(|e| Error::InvalidConfig(e.to_string()))?
                .as_ref()
                .clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            settings.net = settings.net.clone().with_tls(Arc::new(config));
        }
        Ok(Some(Arc::new(H2 {
            sender: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            scheme: if settings.tls { "https" } else { "http" },
            authority: settings.authority.clone(),
        })))
    }

    /// Sends `request` (origin form, with `Host`) over the connection.
    pub(crate) async fn send(
        &self,
        client: &HttpClient,
        request: http::Request<RequestBody>,
    ) -> Result<http::Response<Incoming>, TransportError> {
        let (mut parts, body) = request.into_parts();
        // HTTP/2 names the server in `:scheme` and `:authority`.
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| http::uri::PathAndQuery::from_static("/"), Clone::clone);
        parts.uri = http::Uri::builder()
            .scheme(self.scheme)
            .authority(self.authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(|e| TransportError::Io(format!("cannot send this request: {e}")))?;
        parts.headers.remove(http::header::HOST);
        let source = parts.extensions.get::<SourceFailed>().cloned();
        let mut sender = self.sender(client).await?;
        sender.ready().await.map_err(io_error)?;
        sender
            .send_request(http::Request::from_parts(parts, body))
            .await
            .map_err(|e| match source.and_then(|s| s.take()) {
                // The upload's own source failed (HTTP/2 only says it
                // reset the stream).
                Some(why) => TransportError::Io(why),
                None => io_error(e),
            })
    }

    /// The open connection's sender, or a new connection's.
    async fn sender(&self, client: &HttpClient) -> Result<SendRequest<RequestBody>, TransportError> {
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let _opening = self.opening.lock().await;
        if let Some(s) = self.current() {
            return Ok(s); // another request opened it meanwhile
        }
        let io = client.open().await?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| TransportError::Connect(format!("HTTP/2 handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await; // ends when the server closes it or the client is dropped
        });
        if let Ok(mut slot) = self.sender.lock() {
            *slot = Some(sender.clone());
        }
        Ok(sender)
    }

    /// Drops the connection (the next request opens a new one).
    pub(crate) fn forget(&self) {
        if let Ok(mut slot) = self.sender.lock() {
            *slot = None;
        }
    }

    fn current(&self) -> Option<SendRequest<RequestBody>> {
        let slot = self.sender.lock().ok()?;
        slot.as_ref().filter(|s| !s.is_closed()).cloned()
    }
}
