//! The HTTP transport: HTTP/1.1 connections with hyper's connection API,
//! kept alive in a [`IdlePool`]. It sends the `http::Request` values
//! kalam-proto builds and hands the answers back; no protocol logic lives
//! here. The core caps the requests in flight, and a connection is back in
//! the pool before its answer is reported, so one client never holds more
//! connections than `http_max_connections`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use futures_util::{Stream, StreamExt as _};
use http_body_util::{BodyExt, Either, Full, Limited, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use kalam_driver::adapter::net::{Forwarding, connect_error, typed_failure};
use kalam_driver::adapter::pool::IdlePool;
use kalam_driver::adapter::{BodyChunks, BodyReader, HttpSettings};
use kalam_driver::adapter::{ReleaseAtEnd, Target, failed_exchange};
use kalam_proto::{Error, TransportError};

/// A request body streamed from chunks (uploads).
type Streamed = StreamBody<Pin<Box<dyn Stream<Item = std::io::Result<Frame<Bytes>>> + Send>>>;
/// Whole bodies (every other request) or streamed ones, on the same connections.
pub(crate) type RequestBody = Either<Full<Bytes>, Streamed>;
type Sender = SendRequest<RequestBody>;

/// A connection: hyper's handle, and whether its peer went away while a
/// request was being written (see [`HeardOut`]).
struct Conn {
    sender: Sender,
    peer_gone: Arc<AtomicBool>,
    /// Bytes read from it so far.
    heard: Arc<AtomicU64>,
    /// A TLS alert or proxy refusal that ended it (hyper's connection task
    /// gets it; the sender sees only a closed channel).
    /// Whether hyper's connection task ended, and its typed failure.
    failure: Arc<std::sync::Mutex<(bool, Option<TransportError>)>>,
    ended: Arc<tokio::sync::Notify>,
}

impl Conn {
    /// `error`, or the typed failure that ended the connection (a server
    /// refusing this client's certificate alerts after the handshake, on
    /// the first exchange).
    async fn why(&self, error: TransportError) -> TransportError {
        let ended = self.ended.notified();
        if self.failure.lock().is_ok_and(|f| !f.0) {
            // Its end is a moment away when the sender saw the channel close.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), ended).await;
        }
        self.failure.lock().ok().and_then(|mut f| f.1.take()).unwrap_or(error)
    }
}

impl Conn {
    /// Whether it may carry another request: hyper has not seen it closed,
    /// and no write to it ever failed. (After an early answer the server
    /// closes; hyper may not have read that close yet when the answer is
    /// complete, and a request sent then would be written into the void.)
    fn reusable(&self) -> bool {
        !self.sender.is_closed() && !self.peer_gone.load(Ordering::Relaxed)
    }
}

/// A pooled HTTP/1.1 client with the client's time and size limits.
#[derive(Clone)]
pub struct HttpClient {
    authority: http::HeaderValue,
    pool: Arc<IdlePool<Conn>>,
    limits: HttpSettings,
    target: Target,
    /// Through a forwarding proxy, for an `http://` server.
    forward: Option<Forwarding>,
    /// HTTP/2: the one connection every request goes over.
    #[cfg(feature = "http2")]
    h2: Option<Arc<crate::h2::H2>>,
}

impl HttpClient {
    pub(crate) fn new(settings: &HttpSettings) -> Result<Self, Error> {
        let authority = http::HeaderValue::from_str(&settings.authority).map_err(|_| Error::InvalidUrl {
            url: settings.authority.clone(),
            reason: "not a host".into(),
        })?;
        let target = settings.target();
        let forward = settings.forwarding();
        #[allow(unused_mut)] // without `http2`
        let mut limits = settings.clone();
        #[cfg(feature = "http2")]
        let h2 = crate::h2::H2::for_settings(&mut limits)?;
        // HTTP/2 goes through a tunnel, never in absolute form.
        #[cfg(feature = "http2")]
        let forward = if h2.is_some() { None } else { forward };
        Ok(HttpClient {
            authority,
            pool: Arc::new(IdlePool::new(settings.max_idle)),
            limits,
            target,
            forward,
            #[cfg(feature = "http2")]
            h2,
        })
    }

    /// Sends one request and reads the whole answer, within the receive timeout.
    pub(crate) async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::Response<Bytes>, TransportError> {
        let (parts, body) = request.into_parts();
        let request = self.origin_form(parts, Either::Left(Full::new(Bytes::from(body))));
        let limit = self.limits.receive_timeout;
        tokio::time::timeout(limit, self.exchange(request))
            .await
            .map_err(|_| self.timed_out(limit))?
    }

    /// Sends one request with its body streamed from `body` (of the given
    /// length) and answers with the head, within the receive timeout; the
    /// answer's body is read as it arrives, and its connection goes back to
    /// the pool at its end.
    pub(crate) async fn send_streaming(
        &self,
        request: http::Request<()>,
        body: Option<(BodyChunks, u64)>,
    ) -> Result<http::Response<BodyReader>, TransportError> {
        let (mut parts, ()) = request.into_parts();
        let body = match body {
            Some((chunks, len)) => {
                parts
                    .headers
                    .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
                // The source's own failure, for an engine that reports only
                // its own (HTTP/2 resets the stream).
                let failed = SourceFailed::default();
                parts.extensions.insert(failed.clone());
                let frames = chunks.map(move |chunk| {
                    chunk
                        .map(|c| Frame::data(Bytes::from(c)))
                        .inspect_err(|e| failed.set(e.to_string()))
                });
                Either::Right(StreamBody::new(
                    Box::pin(frames) as Pin<Box<dyn Stream<Item = _> + Send>>
                ))
            }
            None => Either::Left(Full::new(Bytes::new())),
        };
        let request = self.origin_form(parts, body);
        let limit = self.limits.receive_timeout;
        let (response, conn) = tokio::time::timeout(limit, self.dispatch(request))
            .await
            .map_err(|_| self.timed_out(limit))??;
        let (parts, body) = response.into_parts();
        // A connection the server closed (after an early answer, say) is
        // not reused.
        let reader = ReleaseAtEnd::new(
            IncomingReader {
                body,
                chunk: Bytes::new(),
            },
            conn.map(|conn| (conn, self.pool.clone())),
            Conn::reusable,
        );
        Ok(http::Response::from_parts(parts, Box::pin(reader) as BodyReader))
    }

    /// Whether an `http` target behind a proxy is tunnelled (HTTP/2).
    fn tunnel_only(&self) -> bool {
        #[cfg(feature = "http2")]
        if self.h2.is_some() {
            return true;
        }
        false
    }

    /// A request got no answer in time: over HTTP/2, the connection (which
    /// every request shares) may be half-open, and the next request opens
    /// a new one.
    fn timed_out(&self, limit: std::time::Duration) -> TransportError {
        #[cfg(feature = "http2")]
        if let Some(h2) = &self.h2 {
            h2.forget();
        }
        TransportError::Timeout(limit)
    }

    /// Origin form on the connection (absolute form to a forwarding
    /// proxy, with its credentials), with the authority in `Host`.
    fn origin_form(&self, mut parts: http::request::Parts, body: RequestBody) -> http::Request<RequestBody> {
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| http::uri::PathAndQuery::from_static("/"), Clone::clone);
        parts.uri = match &self.forward {
            Some(forward) => {
                if let Some(value) = &forward.authorization {
                    parts.headers.insert(http::header::PROXY_AUTHORIZATION, value.clone());
                }
                format!("{}{path}", forward.origin)
                    .parse()
                    .unwrap_or_else(|_| http::Uri::from(path))
            }
            None => http::Uri::from(path),
        };
        parts.headers.insert(http::header::HOST, self.authority.clone());
        http::Request::from_parts(parts, body)
    }

    async fn exchange(&self, request: http::Request<RequestBody>) -> Result<http::Response<Bytes>, TransportError> {
        let (response, conn) = self.dispatch(request).await?;
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
        if let Some(conn) = conn
            && conn.reusable()
        {
            self.pool.put(conn, now());
        }
        Ok(http::Response::from_parts(parts, body))
    }

    /// Sends the request on a pooled or new connection; answers the head
    /// and the connection (busy until the body is read).
    /// Sends the request over HTTP/2 or on an HTTP/1.1 connection; answers
    /// the head and, for HTTP/1.1, the connection (busy until the body is
    /// read).
    async fn dispatch(
        &self,
        request: http::Request<RequestBody>,
    ) -> Result<(http::Response<Incoming>, Option<Conn>), TransportError> {
        #[cfg(feature = "http2")]
        if let Some(h2) = &self.h2 {
            return Ok((h2.send(self, request).await?, None));
        }
        let (response, conn) = self.dispatch_http1(request).await?;
        Ok((response, Some(conn)))
    }

    async fn dispatch_http1(
        &self,
        request: http::Request<RequestBody>,
    ) -> Result<(http::Response<Incoming>, Conn), TransportError> {
        let (mut conn, reused) = match self.pool.take(now(), Conn::reusable) {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        let heard_before = conn.heard.load(Ordering::Relaxed);
        // A kept-alive connection the server closed meanwhile fails before
        // the request leaves: then, and only then (nothing was sent, so
        // nothing can have run twice), a fresh connection takes it.
        if reused && conn.sender.ready().await.is_err() {
            conn = self.connect().await?;
        }
        if let Err(e) = conn.sender.ready().await {
            return Err(conn.why(io_error(e)).await);
        }
        let response = match conn.sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut unsent) => match unsent.take_message() {
                Some(request) if reused => {
                    conn = self.connect().await?;
                    if let Err(e) = conn.sender.ready().await {
                        return Err(conn.why(io_error(e)).await);
                    }
                    match conn.sender.send_request(request).await {
                        Ok(response) => response,
                        Err(e) => return Err(conn.why(io_error(e)).await),
                    }
                }
                _ => {
                    let error = unsent.into_error();
                    if !error.is_incomplete_message() {
                        return Err(conn.why(io_error(error)).await); // the body's own source failed, say
                    }
                    if let Some(typed) = typed_failure(&error) {
                        return Err(typed); // a TLS alert (no client certificate, say)
                    }
                    // The connection closed before a whole answer.
                    let answered = conn.heard.load(Ordering::Relaxed) - heard_before;
                    return Err(failed_exchange(reused, answered, io_text(error)));
                }
            },
        };
        if let Some(refused) = self
            .forward
            .as_ref()
            .and_then(|f| f.refusal(response.status().as_u16()))
        {
            return Err(refused);
        }
        Ok((response, conn))
    }

    /// A new connection to the server (through its proxy, inside TLS), within
    /// the connect timeout.
    pub(crate) async fn open(&self) -> Result<Box<dyn crate::net::Io>, TransportError> {
        let connect = crate::net::open(&self.limits.net, &self.target, self.tunnel_only());
        let timeout = self.limits.connect_timeout;
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| TransportError::Connect(format!("timed out after {timeout:?}")))?
            .map_err(|e| connect_error(&e))
    }

    async fn connect(&self) -> Result<Conn, TransportError> {
        let io = self.open().await?;
        let peer_gone = Arc::new(AtomicBool::new(false));
        let heard = Arc::new(AtomicU64::new(0));
        let io = HeardOut {
            io,
            peer_gone: peer_gone.clone(),
            heard: heard.clone(),
        };
        let (sender, connection) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let failure = Arc::new(std::sync::Mutex::new((false, None)));
        let ended = Arc::new(tokio::sync::Notify::new());
        let (failed, end) = (failure.clone(), ended.clone());
        tokio::spawn(async move {
            // Ends when the server closes it or the sender is dropped.
            let typed = connection.await.err().and_then(|e| typed_failure(&e));
            if let Ok(mut slot) = failed.lock() {
                *slot = (true, typed);
            }
            end.notify_waiters();
        });
        Ok(Conn {
            sender,
            peer_gone,
            heard,
            failure,
            ended,
        })
    }
}

/// A connection on which a server may answer before it has read the whole
/// request and then close: the server authenticates a SQL request before
/// it reads the body, so a refused token on a large upload is answered
/// while the body is still being written. hyper reads while it writes, but
/// gives up on the exchange at the first failed write; here, once the peer
/// has closed or reset, the rest of the request is dropped as written, so
/// hyper goes on to read the answer that came (or fails on the read, as a
/// transport error, if none did). A connection whose writes were dropped
/// never goes back to work ([`Conn::reusable`]).
struct HeardOut {
    io: Box<dyn crate::net::Io>,
    peer_gone: Arc<AtomicBool>,
    heard: Arc<AtomicU64>,
}

impl HeardOut {
    fn gone(&mut self, result: std::io::Result<()>) -> std::io::Result<()> {
        match result {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                self.peer_gone.store(true, Ordering::Relaxed);
                Ok(())
            }
            other => other,
        }
    }
}

impl tokio::io::AsyncRead for HeardOut {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        self.heard.fetch_add(read as u64, Ordering::Relaxed);
        poll
    }
}

impl tokio::io::AsyncWrite for HeardOut {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.peer_gone.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(buf.len()));
        }
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(self.gone(Err(e)).map(|()| buf.len())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.peer_gone.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(self.gone(r)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.peer_gone.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// An upload's source failed: its error, for the request's error.
#[derive(Clone, Default)]
pub(crate) struct SourceFailed(Arc<std::sync::Mutex<Option<String>>>);

impl SourceFailed {
    fn set(&self, why: String) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(why);
        }
    }

    #[cfg_attr(not(feature = "http2"), allow(dead_code))]
    pub(crate) fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// hyper's answer body (a stream of frames) as a reader.
struct IncomingReader {
    body: Incoming,
    chunk: Bytes,
}

impl futures_util::AsyncRead for IncomingReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.chunk.is_empty() {
                let n = this.chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&this.chunk[..n]);
                this.chunk.advance(n);
                return Poll::Ready(Ok(n));
            }
            match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.chunk = data;
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(std::io::Error::other(io_error(e).to_string()))),
                None => return Poll::Ready(Ok(0)),
            }
        }
    }
}

pub(crate) fn io_error(e: hyper::Error) -> TransportError {
    typed_failure(&e).unwrap_or_else(|| TransportError::Io(io_text(e)))
}

/// What went wrong: the error and its chain (connection reset, closed…);
/// it never holds headers.
fn io_text(e: hyper::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
