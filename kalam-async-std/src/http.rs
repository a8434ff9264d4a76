//! The HTTP transport: HTTP/1.1 with async-h1 (the engine under surf) over
//! async-std TCP, kept alive in kalam-driver's [`IdlePool`]; a connection is
//! back in the pool before its answer is reported, so one client holds at
//! most `http_max_connections` connections. It sends the
//! `http::Request` values kalam-proto builds and hands the answers back; no
//! protocol logic lives here, and it is the one module to change to swap the
//! HTTP backend.
//!
//! Why not surf itself: its HTTP/1.1 client pools connections with deadpool
//! 0.7, which depends on tokio; this crate promises an application no tokio.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use async_std::net::TcpStream;
use futures_util::AsyncReadExt as _;
use futures_util::TryStreamExt as _;
use kalam_driver::adapter::pool::IdlePool;
use kalam_driver::adapter::{BodyChunks, BodyReader, HttpSettings};
use kalam_driver::adapter::{ReleaseAtEnd, failed_exchange, reusable_after};
use kalam_proto::TransportError;

use kalam_driver::adapter::Target;
use kalam_driver::adapter::net::{AbsoluteForm, Forwarding, connect_error, typed_failure};

use crate::net::{Io, open};

/// One keep-alive connection: the byte stream (TLS or not) as a handle
/// async-h1 can share between writing and reading, and the TCP socket
/// under it, to look at while it is idle.
struct Conn {
    io: async_dup::Arc<async_dup::Mutex<Box<dyn Io>>>,
    tcp: TcpStream,
    /// To a forwarding proxy: arms the absolute-form rewrite of the next
    /// request line (async-h1 writes origin form only).
    absolute: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// How the client sends HTTP, given to
/// [`KalamLinkClientBuilder::http_backend`](crate::KalamLinkClientBuilder::http_backend):
/// this crate's async-h1 pool (the default), or, with the `surf` feature, a
/// `surf::Client` (by default one over that same pool).
#[derive(Clone, Default)]
pub struct HttpBackend {
    #[cfg(feature = "surf")]
    pub(crate) surf: crate::surf::Choice,
}

impl std::fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(feature = "surf")]
        return write!(f, "HttpBackend({:?})", self.surf);
        #[cfg(not(feature = "surf"))]
        f.write_str("HttpBackend(async-h1)")
    }
}

/// The client's HTTP: async-h1 on this crate's pool, or (feature `surf`)
/// a `surf::Client`.
#[derive(Clone)]
pub struct HttpClient(Backend);

#[derive(Clone)]
enum Backend {
    #[cfg_attr(feature = "surf", allow(dead_code))]
    H1(H1),
    #[cfg(feature = "surf")]
    Surf(crate::surf::SurfHttp),
}

impl HttpClient {
    pub(crate) fn new(settings: &HttpSettings, backend: &HttpBackend) -> kalam_proto::Result<Self> {
        #[cfg(feature = "surf")]
        return crate::surf::SurfHttp::new(settings, &backend.surf, H1::new(settings))
            .map(|s| HttpClient(Backend::Surf(s)));
        #[cfg(not(feature = "surf"))]
        {
            let HttpBackend {} = backend;
            Ok(HttpClient(Backend::H1(H1::new(settings))))
        }
    }

    pub(crate) async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, TransportError> {
        match &self.0 {
            Backend::H1(h1) => h1.send(request).await,
            #[cfg(feature = "surf")]
            Backend::Surf(s) => s.send(request).await,
        }
    }

    pub(crate) async fn send_streaming(
        &self,
        request: http::Request<()>,
        body: Option<(BodyChunks, u64)>,
    ) -> Result<http::Response<BodyReader>, TransportError> {
        match &self.0 {
            Backend::H1(h1) => h1.send_streaming(request, body).await,
            #[cfg(feature = "surf")]
            Backend::Surf(s) => s.send_streaming(request, body).await,
        }
    }
}

/// A pooled HTTP/1.1 client with the client's time and size limits.
#[derive(Clone)]
pub(crate) struct H1 {
    pool: Arc<IdlePool<Conn>>,
    /// The receive timeouts of the exchanges in progress.
    deadlines: Arc<crate::deadline::Deadlines>,
    limits: HttpSettings,
    target: Target,
    /// Through a forwarding proxy, for an `http://` server.
    forward: Option<Forwarding>,
    urls: Arc<Urls>,
}

impl H1 {
    pub(crate) fn new(settings: &HttpSettings) -> Self {
        let target = settings.target();
        let forward = settings.forwarding();
        H1 {
            pool: Arc::new(IdlePool::new(settings.max_idle)),
            deadlines: Arc::default(),
            limits: settings.clone(),
            target,
            forward,
            urls: Arc::default(),
        }
    }

    /// Sends one request and reads the whole answer, within the receive timeout.
    async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, TransportError> {
        let request = to_http_types(request, &self.urls)?;
        self.within(async {
            let (conn, mut response, keep) = Box::pin(self.dispatch(request, None)).await?;
            let body = read_whole(response.take_body(), self.limits.max_body).await?;
            let answer = from_http_types(&response, body)?;
            if keep {
                self.pool.put(conn, Instant::now());
            }
            Ok(answer)
        })
        .await
    }

    /// Sends one request with its body streamed from `body` (of the given
    /// length) and answers with the head, within the receive timeout; the
    /// answer's body is read as it arrives, and its connection goes back to
    /// the pool at its end.
    async fn send_streaming(
        &self,
        request: http::Request<()>,
        body: Option<(BodyChunks, u64)>,
    ) -> Result<http::Response<BodyReader>, TransportError> {
        let (request, source_failed) = streaming_request(request, body, &self.urls)?;
        self.within(async {
            let (conn, mut response, keep) = Box::pin(self.dispatch(request, Some(&source_failed))).await?;
            let head = from_http_types(&response, ())?;
            let reader = ReleaseAtEnd::new(
                response.take_body(),
                keep.then(|| (conn, self.pool.clone())),
                |_: &Conn| true,
            );
            Ok(head.map(|()| Box::pin(reader) as BodyReader))
        })
        .await
    }

    /// One exchange for a `surf::Client` over this pool: the answer with
    /// its body still to read; the connection goes back to the pool once
    /// the body is read to its end (dropped earlier, it is closed, so a
    /// cancelled request never leaves a connection half used).
    #[cfg(feature = "surf")]
    pub(crate) async fn exchange(&self, request: http_types::Request) -> Result<http_types::Response, TransportError> {
        // An upload's source, to tell its failure from the connection's.
        let source = request.ext().get::<SourceFailed>().cloned();
        let (conn, mut response, keep) = Box::pin(self.dispatch(request, source.as_ref())).await?;
        let body = ReleaseAtEnd::new(
            response.take_body(),
            keep.then(|| (conn, self.pool.clone())),
            |_: &Conn| true,
        );
        let body = futures_util::io::BufReader::new(SyncRead(Mutex::new(body), SourceFailed::default()));
        // Length unknown to surf's body, so it reads this one to its end
        // (which releases the connection); the header still says it.
        response.set_body(http_types::Body::from_reader(body, None));
        Ok(response)
    }

    /// Sends the request on a pooled or new connection and decodes the
    /// answer's head; answers the connection (busy until the body is read),
    /// the answer with its body still to read, and whether the connection
    /// may be reused (the server did not say `Connection: close`).
    ///
    /// An upload whose own source fails (a file that ends early, a reader
    /// that errs) fails at once with the source's error: the server is
    /// still waiting for the declared length and would not answer.
    async fn dispatch(
        &self,
        request: http_types::Request,
        source_failed: Option<&SourceFailed>,
    ) -> Result<(Conn, http_types::Response, bool), TransportError> {
        use futures_util::future::{Either, select};

        let mut request = request;
        let (conn, reused) = self.checkout().await?;
        if let Some(arm) = &conn.absolute {
            if let Some(authorization) = self.forward.as_ref().and_then(|f| f.authorization.as_ref()) {
                request.insert_header("proxy-authorization", authorization.to_str().unwrap_or_default());
            }
            arm.store(true, Ordering::Release);
        }
        // A small request goes out in one write: async-h1 hands over its
        // head and its body apart, and two writes are two sends (and two
        // packets) per query. The server waits for a body's declared length
        // anyway, so holding one of at most `ONE_WRITE` bytes delays nothing.
        let one_write = request.len().filter(|&n| n <= ONE_WRITE).map(|n| n + HEAD_ROOM);
        let mut encoder = async_h1::client::Encoder::new(request);
        let mut io = conn.io.clone();
        let send = async {
            match one_write {
                Some(capacity) => {
                    let mut buffered = futures_util::io::BufWriter::with_capacity(capacity, &mut io);
                    futures_util::io::copy(&mut encoder, &mut buffered).await
                }
                None => futures_util::io::copy(&mut encoder, &mut io).await,
            }
        };
        // The answer is read while the request is still being written: a
        // server may answer before it has read the body (a refused token on
        // a large upload) and then close, and that answer is the one to
        // report, not the broken pipe of the body it never read.
        let heard = Arc::new(AtomicU64::new(0));
        // Boxed, as the connect below: async-h1's decoder keeps its header
        // array (4 KiB) in its state, and every future that holds it inline
        // is copied whole each time it moves (a query's exchange moves a few
        // times before it runs).
        let receive = Box::pin(async_h1::client::decode(Counted(conn.io.clone(), heard.clone())));
        let failed = |e: String| failed_exchange(reused, heard.load(Ordering::Relaxed), e);
        futures_util::pin_mut!(send, receive);
        let (response, whole) = match select(send, receive).await {
            Either::Left((Ok(_), receive)) => (receive.await, true),
            Either::Left((Err(sending), receive)) => {
                if let Some(why) = source_failed.and_then(SourceFailed::take) {
                    return Err(TransportError::Io(why));
                }
                match receive.await {
                    Ok(response) => (Ok(response), false),
                    Err(received) => {
                        // The read side has the reason when there is one (a
                        // TLS alert: no client certificate, say).
                        let typed = received
                            .downcast_ref::<std::io::Error>()
                            .and_then(|io| typed_failure(io))
                            .or_else(|| typed_failure(&sending));
                        return Err(typed.unwrap_or_else(|| failed(sending.to_string())));
                    }
                }
            }
            Either::Right((response, _)) => (response, false),
        };
        let response = response.map_err(|e| {
            // A TLS alert (no client certificate, say) comes on the first read.
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| typed_failure(io))
                .unwrap_or_else(|| failed(e.to_string()))
        })?;
        // A connection whose request was not sent whole cannot carry another.
        // Nor can one that carried an error answer: a server answers some
        // (a refused token) before it reads the body, then closes the
        // connection, often without saying so; reused, it would fail the
        // next request (a refresh, a retry) that it never received.
        if let Some(refused) = self
            .forward
            .as_ref()
            .and_then(|f| f.refusal(u16::from(response.status())))
        {
            return Err(refused);
        }
        let keep = reusable_after(
            whole,
            u16::from(response.status()),
            response.header("connection").map(|v| v.as_str()),
        );
        Ok((conn, response, keep))
    }

    /// `exchange`, within the receive timeout.
    async fn within<T>(
        &self,
        exchange: impl std::future::Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        self.deadlines.within(self.limits.receive_timeout, exchange).await
    }

    /// A pooled connection (`true`) or a new one.
    async fn checkout(&self) -> Result<(Conn, bool), TransportError> {
        if let Some(conn) = self.pool.take(Instant::now(), |c| still_open(&c.tcp)) {
            return Ok((conn, true));
        }
        let connect = async {
            let (io, tcp) = open(&self.limits.net, &self.target).await?;
            let (io, absolute) = match &self.forward {
                Some(forward) => {
                    let absolute = AbsoluteForm::new(io, &forward.origin);
                    let arm = absolute.arm_handle();
                    (Box::new(absolute) as Box<dyn Io>, Some(arm))
                }
                None => (io, None),
            };
            Ok::<_, std::io::Error>(Conn {
                io: async_dup::Arc::new(async_dup::Mutex::new(io)),
                tcp,
                absolute,
            })
        };
        let limit = self.limits.connect_timeout;
        async_std::future::timeout(limit, Box::pin(connect))
            .await
            .map_err(|_| TransportError::Connect(format!("timed out after {limit:?}")))?
            .map(|conn| (conn, false))
            .map_err(|e| connect_error(&e))
    }
}

/// The largest body sent in the same write as its head.
const ONE_WRITE: usize = 16 * 1024;

/// Room for a request's head in that write (a query's is ~400 bytes; a
/// larger head is written in two).
const HEAD_ROOM: usize = 2048;

/// A reader that counts what it reads (bytes of the answer).
struct Counted<R>(R, Arc<AtomicU64>);

impl<R: futures_util::AsyncRead + Unpin> futures_util::AsyncRead for Counted<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.0).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.1.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }
}

/// Whether an idle connection can still carry a request: the server has
/// neither closed nor reset it (its keep-alive timeout, a restart, a network
/// cut) nor sent anything unasked. Looks without waiting, and without
/// registering with the reactor (an `epoll_ctl` per query): a plain peek on
/// the non-blocking socket.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    // Would block: nothing to read, the connection is open and quiet.
    matches!(socket2::SockRef::from(stream).peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The whole answer body, at most `max` bytes.
pub(crate) async fn read_whole(body: http_types::Body, max: usize) -> Result<Vec<u8>, TransportError> {
    let mut whole = Vec::new();
    body.take(max as u64 + 1)
        .read_to_end(&mut whole)
        .await
        .map_err(|e| TransportError::Io(e.to_string()))?;
    if whole.len() > max {
        return Err(TransportError::BodyTooLarge { limit: max });
    }
    Ok(whole)
}

/// A request whose body, if any, is streamed from `body` (of the given
/// length), and the note of that source's own failure (also in the
/// request's extensions, for an exchange that reaches this crate's pool
/// through surf).
pub(crate) fn streaming_request(
    request: http::Request<()>,
    body: Option<(BodyChunks, u64)>,
    urls: &Urls,
) -> Result<(http_types::Request, SourceFailed), TransportError> {
    let (parts, ()) = request.into_parts();
    let mut request = to_http_types(http::Request::from_parts(parts, Vec::new()), urls)?;
    let source_failed = SourceFailed::default();
    if let Some((chunks, len)) = body {
        let len = usize::try_from(len).map_err(|_| TransportError::Io("body too large".into()))?;
        let content_type = request.header("content-type").map(|v| v.as_str().to_owned());
        // async-h1 wants a `Sync` buffered reader: the chunks behind a lock.
        let reader =
            futures_util::io::BufReader::new(SyncRead(Mutex::new(chunks.into_async_read()), source_failed.clone()));
        request.set_body(http_types::Body::from_reader(reader, Some(len)));
        if let Some(ct) = content_type {
            request.insert_header("content-type", ct);
        }
        request.ext_mut().insert(source_failed.clone());
    }
    Ok((request, source_failed))
}

/// The request URIs last sent, parsed: `http_types` wants a `url::Url`,
/// whose parse (host, IDNA) cost a query ~5 % of its time on the client's
/// side, for the same few URIs (`/v1/api/sql`) every time.
#[derive(Default)]
pub(crate) struct Urls(Mutex<Vec<(http::Uri, http_types::Url)>>);

/// How many distinct URIs [`Urls`] keeps (the endpoints in use).
const URLS_KEPT: usize = 8;

impl Urls {
    fn url(&self, uri: &http::Uri) -> Option<http_types::Url> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = kept.iter().position(|(u, _)| u == uri) {
            // The most recent first: the next lookup of it is the shortest.
            kept[..=at].rotate_right(1);
            return Some(kept[0].1.clone());
        }
        drop(kept);
        let url = http_types::Url::parse(&uri.to_string()).ok()?;
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.truncate(URLS_KEPT - 1);
        kept.insert(0, (uri.clone(), url.clone()));
        Some(url)
    }
}

pub(crate) fn to_http_types(
    request: http::Request<Vec<u8>>,
    urls: &Urls,
) -> Result<http_types::Request, TransportError> {
    let (parts, body) = request.into_parts();
    let bad = |what: &str| TransportError::Io(format!("cannot send this request: {what}"));
    let url = urls.url(&parts.uri).ok_or_else(|| bad("URL"))?;
    let method: http_types::Method = parts.method.as_str().parse().map_err(|_| bad("method"))?;
    let mut out = http_types::Request::new(method, url);
    out.set_body(body);
    for (name, value) in &parts.headers {
        let value = value.to_str().map_err(|_| bad("header value"))?;
        out.insert_header(name.as_str(), value);
    }
    Ok(out)
}

/// An upload body's own failure (its source's error), as opposed to the
/// socket's.
#[derive(Clone, Default)]
pub(crate) struct SourceFailed(Arc<Mutex<Option<String>>>);

impl SourceFailed {
    pub(crate) fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A reader made `Sync` by a lock (it is only ever read by one task); its
/// errors are noted as the source's.
pub(crate) struct SyncRead<T>(pub(crate) Mutex<T>, pub(crate) SourceFailed);

impl<T: futures_util::AsyncRead + Unpin> futures_util::AsyncRead for SyncRead<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let poll = Pin::new(&mut *inner).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &poll {
            *self.1.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
        }
        poll
    }
}

/// The answer's head as an `http::Response`. A header the `http` crate
/// cannot hold is left out rather than failing the whole answer; and when
/// the server sent no `Date`, async-h1 makes one up from this machine's
/// clock (as `date: <date>\r\n`, which no header can hold): it is not the
/// server's time, and is left out too.
pub(crate) fn from_http_types<B>(
    response: &http_types::Response,
    body: B,
) -> Result<http::Response<B>, TransportError> {
    let mut out = http::Response::builder().status(u16::from(response.status()));
    for (name, values) in response.iter() {
        let Ok(name) = http::HeaderName::from_bytes(name.as_str().as_bytes()) else {
            continue;
        };
        for value in values.iter() {
            if let Ok(value) = http::HeaderValue::from_str(value.as_str()) {
                out = out.header(&name, value);
            }
        }
    }
    out.body(body)
        .map_err(|e| TransportError::Io(format!("an answer this client cannot read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> http::Request<Vec<u8>> {
        http::Request::post(uri)
            .header("content-type", "application/json")
            .body(b"{}".to_vec())
            .unwrap()
    }

    /// The kept URLs are what a parse of each request's URI gives, however
    /// many endpoints come and in whatever order; a URI no URL can hold is
    /// a typed error, not a panic.
    #[test]
    fn kept_urls_are_the_parsed_ones() {
        let urls = Urls::default();
        let uris: Vec<String> = (0..12)
            .map(|i| format!("http://127.0.0.1:{}/v1/api/sql?n={}", 8080 + i % 3, i % 10))
            .collect();
        for uri in uris.iter().chain(uris.iter().rev()).chain(uris.iter()) {
            let sent = to_http_types(request(uri), &urls).expect("a URL");
            assert_eq!(sent.url().as_str(), http_types::Url::parse(uri).unwrap().as_str());
            assert_eq!(sent.method(), http_types::Method::Post);
            assert_eq!(sent.header("content-type").unwrap().as_str(), "application/json");
        }
        assert!(urls.0.lock().unwrap().len() <= URLS_KEPT);
        // A URI the http crate takes but no URL can hold (no scheme).
        let relative = http::Request::post("/v1/api/sql").body(Vec::new()).unwrap();
        assert!(matches!(to_http_types(relative, &urls), Err(TransportError::Io(_))));
    }

    /// A connection's stream that counts the writes that carried bytes.
    struct CountWrites(TcpStream, Arc<AtomicU64>);

    impl futures_util::AsyncRead for CountWrites {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl futures_util::AsyncWrite for CountWrites {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let poll = Pin::new(&mut self.0).poll_write(cx, buf);
            if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
                self.1.fetch_add(1, Ordering::Relaxed);
            }
            poll
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_close(cx)
        }
    }

    /// Reads one request (head, and a body of its `content-length`), answers
    /// `{}`, and hands back the body it read.
    async fn answer_one(conn: &mut TcpStream) -> Vec<u8> {
        use futures_util::AsyncWriteExt as _;
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed mid-request");
            got.extend_from_slice(&chunk[..n]);
            if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while got.len() < head_end + len {
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed mid-body");
            got.extend_from_slice(&chunk[..n]);
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        got.split_off(head_end)
    }

    /// A small request leaves in one write, head and body together (async-h1
    /// hands them over apart: two sends a query); a body over `ONE_WRITE`
    /// is not held back whole. Either way the server gets it intact.
    #[test]
    fn a_small_request_is_one_write() {
        async_std::task::block_on(async {
            let listener = async_std::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let settings = HttpSettings {
                host: "127.0.0.1".into(),
                port,
                tls: false,
                authority: format!("127.0.0.1:{port}"),
                max_idle: 4,
                connect_timeout: std::time::Duration::from_secs(5),
                receive_timeout: std::time::Duration::from_secs(5),
                max_body: 1 << 20,
                net: Default::default(),
                version: kalam_proto::HttpVersion::Http1,
            };
            let h1 = H1::new(&settings);
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let (mut server_side, _) = listener.accept().await.unwrap();
            let writes = Arc::new(AtomicU64::new(0));
            let io: Box<dyn Io> = Box::new(CountWrites(tcp.clone(), writes.clone()));
            let conn = Conn {
                io: async_dup::Arc::new(async_dup::Mutex::new(io)),
                tcp,
                absolute: None,
            };
            h1.pool.put(conn, Instant::now());
            let url = format!("http://127.0.0.1:{port}/v1/api/sql");
            for (size, in_one) in [(40, true), (ONE_WRITE, true), (ONE_WRITE + 1, false)] {
                let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
                let request = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .unwrap();
                writes.store(0, Ordering::Relaxed);
                let (answer, received) =
                    futures_util::future::join(h1.send(request), answer_one(&mut server_side)).await;
                assert_eq!(answer.unwrap().body(), b"{}");
                assert_eq!(received, body, "a {size}-byte body arrives whole");
                let n = writes.load(Ordering::Relaxed);
                if in_one {
                    assert_eq!(n, 1, "a {size}-byte request in one write");
                } else {
                    assert!(n >= 2, "a {size}-byte body is not held for one write ({n})");
                }
            }
        });
    }
}
