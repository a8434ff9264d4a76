//! A fault-injecting TCP proxy for tests.
//!
//! Put it between a client and any server (the in-process kit or the real
//! KalamDB) to see what crossed the wire and to break things on purpose:
//!
//! - it counts HTTP requests by method and path (it parses the client's
//!   HTTP/1.1 requests, keep-alive included) and WebSocket upgrades, and
//!   knows how many connections (and WebSockets among them) are open;
//! - [`FaultProxy::drop_all`] cuts every open connection at once (a server
//!   crash or network loss as the client sees it), without a close frame;
//! - [`FaultProxy::set_refuse`] makes new connections fail (reset at once);
//! - [`FaultProxy::set_stall`] lets connections open but forwards nothing;
//! - [`FaultProxy::freeze_open`] makes the connections open now half-open
//!   for good: nothing more is forwarded either way and nothing is closed,
//!   while new connections work;
//! - [`FaultProxy::set_latency`] delays what the server sends back, and
//!   [`FaultProxy::set_latency_each_way`] delays both directions by a
//!   jittered amount;
//! - [`FaultProxy::set_bandwidth`] throttles every connection to so many
//!   bytes per second in each direction;
//! - [`FaultProxy::reset_request_after`] and
//!   [`FaultProxy::reset_response_after`] reset (RST) the connection that
//!   carries the next N bytes client→server or server→client, after
//!   forwarding exactly those N bytes: a reset in the middle of a request, a
//!   response or a WebSocket frame.
//!
//! It binds 127.0.0.1 on a free port and stops when dropped.

use std::future::pending;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// One request seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// `GET`, `POST`…
    pub method: String,
    /// The request target, e.g. `/v1/api/sql`.
    pub path: String,
    /// The `Authorization` header's scheme (`Bearer`, `Basic`), if any.
    pub auth_scheme: Option<String>,
}

/// A direction of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client → server.
    Up,
    /// Server → client.
    Down,
}

struct Shared {
    requests: Mutex<Vec<SeenRequest>>,
    connections: AtomicUsize,
    open: AtomicUsize,
    open_ws: AtomicUsize,
    refuse: AtomicBool,
    refused: AtomicUsize,
    resets: AtomicUsize,
    stall: watch::Sender<bool>,
    /// Bumped by `freeze_open`: a connection opened before the bump forwards
    /// nothing more.
    freeze: watch::Sender<u64>,
    /// (min, max) delay of each direction: up, down.
    latency: Mutex<[(Duration, Duration); 2]>,
    /// Bytes per second per direction and connection; 0: unlimited.
    bandwidth: AtomicU64,
    /// Armed resets: bytes still to forward up / down before the reset.
    reset_after: Mutex<[Option<usize>; 2]>,
    /// Jitter generator state (xorshift).
    rng: AtomicU64,
}

impl Shared {
    fn latency(&self, dir: Dir) -> Duration {
        let (min, max) = self.latency.lock().map(|l| l[dir as usize]).unwrap_or_default();
        if max <= min {
            return min;
        }
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        let span = (max - min).as_micros() as u64;
        min + Duration::from_micros(x % (span + 1))
    }

    /// How much of `len` bytes going `dir` may be forwarded, and whether the
    /// connection is to be reset after them.
    fn take_budget(&self, dir: Dir, len: usize) -> (usize, bool) {
        let Ok(mut armed) = self.reset_after.lock() else {
            return (len, false);
        };
        match armed[dir as usize] {
            Some(left) if left <= len => {
                armed[dir as usize] = None;
                (left, true)
            }
            Some(left) => {
                armed[dir as usize] = Some(left - len);
                (len, false)
            }
            None => (len, false),
        }
    }
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`. See the module docs.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Bumped by `drop_all`; every connection task watches it.
    generation: watch::Sender<u64>,
    accept_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// While it does not listen: a socket bound to its port and not
    /// listening, so that connections are still refused and no other
    /// listener (another test's, binding port 0) is given the port.
    held: Mutex<Option<tokio::net::TcpSocket>>,
    accept: Accept,
    /// Clients speak TLS to it.
    tls: bool,
}

/// What the accept loop needs (again, after [`FaultProxy::listen_again`]).
#[derive(Clone)]
struct Accept {
    shared: Arc<Shared>,
    generation: watch::Sender<u64>,
    upstream: String,
    tls_front: Option<tokio_rustls::TlsAcceptor>,
}

impl Accept {
    async fn run(self, listener: TcpListener) {
        let Accept {
            shared,
            generation,
            upstream,
            tls_front,
        } = self;
        while let Ok((client, _)) = listener.accept().await {
            if shared.refuse.load(Ordering::SeqCst) {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_zero_linger();
                drop(client);
                continue;
            }
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let cut = generation.subscribe();
            match &tls_front {
                None => {
                    tokio::spawn(serve(client, upstream.clone(), shared.clone(), cut));
                }
                Some(acceptor) => {
                    let (acceptor, upstream, shared) = (acceptor.clone(), upstream.clone(), shared.clone());
                    tokio::spawn(async move {
                        if let Ok(client) = acceptor.accept(client).await {
                            serve(client, upstream, shared, cut).await;
                        }
                    });
                }
            }
        }
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port` or a URL like
    /// `http://127.0.0.1:2900`).
    pub async fn start(upstream: &str) -> std::io::Result<FaultProxy> {
        // In front of a TLS terminator (`https://`), the proxy terminates
        // TLS itself, with the terminator's certificate, and talks plain to
        // what is behind it: it sees every request, and the client sees
        // the same certificate.
        let mut tls_front = None;
        let mut upstream = upstream.to_owned();
        if let Some(rest) = upstream
            .strip_prefix("https://")
            .or_else(|| upstream.strip_prefix("wss://"))
        {
            let addr: SocketAddr = rest
                .trim_end_matches('/')
                .parse()
                .map_err(|_| std::io::Error::other("an https:// upstream must be 127.0.0.1:PORT"))?;
            let (plain, config) = crate::tls::terminator_at(addr)
                .ok_or_else(|| std::io::Error::other("no TLS terminator at that address"))?;
            tls_front = Some(tokio_rustls::TlsAcceptor::from(config));
            upstream = plain.to_string();
        }
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            open_ws: AtomicUsize::new(0),
            refuse: AtomicBool::new(false),
            refused: AtomicUsize::new(0),
            resets: AtomicUsize::new(0),
            stall: watch::channel(false).0,
            freeze: watch::channel(0).0,
            latency: Mutex::new([(Duration::ZERO, Duration::ZERO); 2]),
            bandwidth: AtomicU64::new(0),
            reset_after: Mutex::new([None, None]),
            rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        });
        let (generation, _) = watch::channel(0u64);
        let tls = tls_front.is_some();
        let accept = Accept {
            shared: shared.clone(),
            generation: generation.clone(),
            upstream,
            tls_front,
        };
        let accept_task = tokio::spawn(accept.clone().run(listener));
        Ok(FaultProxy {
            addr,
            shared,
            generation,
            accept_task: Mutex::new(Some(accept_task)),
            held: Mutex::new(None),
            accept,
            tls,
        })
    }

    /// Stops listening: connections to it are refused (by the operating
    /// system) until [`listen_again`](Self::listen_again). Open connections
    /// stay.
    pub async fn stop_listening(&self) {
        let task = self.accept_task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await; // the listener is closed once it returns
        }
        // The port stays taken (a port the OS hands to another listener
        // meanwhile would answer for this dead node).
        let held = tokio::net::TcpSocket::new_v4().and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(self.addr)?;
            Ok(socket)
        });
        if let (Ok(socket), Ok(mut slot)) = (held, self.held.lock()) {
            *slot = Some(socket);
        }
    }

    /// Listens again on the same port.
    pub async fn listen_again(&self) -> std::io::Result<()> {
        drop(self.held.lock().ok().and_then(|mut h| h.take()));
        let listener = TcpListener::bind(self.addr).await?;
        let task = tokio::spawn(self.accept.clone().run(listener));
        if let Ok(mut t) = self.accept_task.lock()
            && let Some(old) = t.replace(task)
        {
            old.abort();
        }
        Ok(())
    }

    /// `http://127.0.0.1:PORT` (`https://` in front of a TLS terminator).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Every HTTP request seen so far, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// How many requests went to `path` (query string ignored).
    pub fn count(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .count()
    }

    /// How many WebSocket upgrades (`GET /v1/ws`) were requested.
    pub fn ws_upgrades(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/v1/ws"))
            .count()
    }

    /// TCP connections accepted so far (refused ones not counted).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// TCP connections refused so far (see [`set_refuse`](Self::set_refuse)).
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections reset by an armed [`reset_request_after`](Self::reset_request_after)
    /// or [`reset_response_after`](Self::reset_response_after).
    pub fn resets(&self) -> usize {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// TCP connections open right now (HTTP keep-alive ones included).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Open connections that carried a WebSocket upgrade request: the
    /// WebSockets open right now, as the client sees them. A connection
    /// counts until both of its directions have ended (or it is cut).
    pub fn open_websockets(&self) -> usize {
        self.shared.open_ws.load(Ordering::SeqCst)
    }

    /// Cuts every open connection now (no close frame, no FIN handshake
    /// from the server: the client sees the connection die).
    pub fn drop_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Refuse new connections while `on`: each is accepted and reset at
    /// once (the client sees a reset before any byte, as from a server
    /// that is not listening).
    pub fn set_refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// Forward nothing while `on` (connections hang).
    pub fn set_stall(&self, on: bool) {
        self.shared.stall.send_replace(on);
    }

    /// Makes every connection open now half-open for good: from now on it
    /// forwards nothing in either direction (what arrives is read and
    /// discarded, so writes keep succeeding) and nothing closes it, as when
    /// a NAT or a peer silently loses the connection. Connections opened
    /// later work normally. `drop_all` or dropping the proxy still cuts them.
    pub fn freeze_open(&self) {
        self.shared.freeze.send_modify(|g| *g += 1);
    }

    /// Hold everything the server sends back for `d` before passing it on
    /// (each piece `d` after it arrived, in order: a slow network, not a slow
    /// server). Applies to open connections too.
    pub fn set_latency(&self, d: Duration) {
        if let Ok(mut l) = self.shared.latency.lock() {
            l[Dir::Down as usize] = (d, d);
        }
    }

    /// Delay each piece of traffic, both ways, by an amount drawn from
    /// `min..=max` (order is kept). Applies to open connections too.
    pub fn set_latency_each_way(&self, min: Duration, max: Duration) {
        if let Ok(mut l) = self.shared.latency.lock() {
            *l = [(min, max.max(min)); 2];
        }
    }

    /// Throttle every connection to `bytes_per_sec` in each direction
    /// (`None`: unlimited). Applies to open connections too.
    pub fn set_bandwidth(&self, bytes_per_sec: Option<u64>) {
        self.shared
            .bandwidth
            .store(bytes_per_sec.unwrap_or(0), Ordering::SeqCst);
    }

    /// The connection that carries the next `n` bytes from a client to the
    /// server (counted from now, over all connections) forwards exactly those
    /// and is then reset on both sides: a request cut in the middle. Once.
    pub fn reset_request_after(&self, n: usize) {
        if let Ok(mut armed) = self.shared.reset_after.lock() {
            armed[Dir::Up as usize] = Some(n);
        }
    }

    /// As [`reset_request_after`](Self::reset_request_after), for the next
    /// `n` bytes from the server to a client: an answer, or a WebSocket
    /// frame, cut in the middle. Once.
    pub fn reset_response_after(&self, n: usize) {
        if let Ok(mut armed) = self.shared.reset_after.lock() {
            armed[Dir::Down as usize] = Some(n);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Ok(mut t) = self.accept_task.lock()
            && let Some(task) = t.take()
        {
            task.abort();
        }
        self.drop_all();
    }
}

/// Counts a connection (and, once it asked for an upgrade, a WebSocket) as
/// open for as long as it lives.
struct OpenGuard {
    shared: Arc<Shared>,
    websocket: AtomicBool,
}

impl OpenGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::SeqCst);
        OpenGuard {
            shared,
            websocket: AtomicBool::new(false),
        }
    }

    fn upgraded(&self) {
        if !self.websocket.swap(true, Ordering::SeqCst) {
            self.shared.open_ws.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.websocket.load(Ordering::SeqCst) {
            self.shared.open_ws.fetch_sub(1, Ordering::SeqCst);
        }
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Copies `r` to `w` in direction `dir` with the proxy's faults applied.
/// Reading and writing run apart, so that latency delays each chunk by its
/// own amount instead of adding up, and a frozen or stalled connection keeps
/// reading. `kill` is raised when an armed reset fires.
async fn forward(
    mut r: impl AsyncRead + Unpin,
    mut w: impl AsyncWrite + Unpin,
    dir: Dir,
    shared: &Shared,
    frozen_at: u64,
    kill: &watch::Sender<bool>,
    mut on_read: impl FnMut(&[u8]),
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            on_read(&buf[..n]);
            if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let write = async move {
        let mut next_free = Instant::now();
        while let Some((arrived, chunk)) = rx.recv().await {
            let latency = shared.latency(dir);
            if !latency.is_zero() {
                tokio::time::sleep_until(arrived + latency).await;
            }
            let _ = shared.stall.subscribe().wait_for(|stalled| !stalled).await;
            if *shared.freeze.borrow() != frozen_at {
                pending::<()>().await;
            }
            let (allowed, reset) = shared.take_budget(dir, chunk.len());
            let rate = shared.bandwidth.load(Ordering::SeqCst);
            let piece = if rate == 0 {
                allowed.max(1)
            } else {
                ((rate / 50) as usize).clamp(1, 16 * 1024)
            };
            for part in chunk[..allowed].chunks(piece) {
                if rate != 0 {
                    tokio::time::sleep_until(next_free).await;
                }
                if w.write_all(part).await.is_err() {
                    return;
                }
                if rate != 0 {
                    next_free =
                        next_free.max(Instant::now()) + Duration::from_secs_f64(part.len() as f64 / rate as f64);
                }
            }
            if reset {
                let _ = w.flush().await;
                shared.resets.fetch_add(1, Ordering::SeqCst);
                kill.send_replace(true);
                pending::<()>().await;
            }
        }
        let _ = w.shutdown().await;
    };
    tokio::join!(read, write);
}

/// A client connection: TCP, or TLS over TCP (in front of a terminator).
trait Front: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn tcp(&self) -> &TcpStream;
}

impl Front for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Front for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

async fn serve<C: Front>(client: C, upstream: String, shared: Arc<Shared>, mut cut: watch::Receiver<u64>) {
    let guard = OpenGuard::new(shared.clone());
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        // Nothing listens upstream (a server restarting): the client sees a
        // reset, as it would without the proxy.
        let _ = client.tcp().set_zero_linger();
        return;
    };
    let _ = client.tcp().set_nodelay(true);
    let _ = server.set_nodelay(true);
    let frozen_at = *shared.freeze.borrow();
    let (kill, mut killed) = watch::channel(false);
    let mut reset = false;
    let (mut cr, mut cw) = tokio::io::split(client);
    {
        let (sr, sw) = server.split();
        let mut parser = RequestParser::default();
        let guard = &guard;
        let shared_up = shared.clone();
        let up = forward(&mut cr, sw, Dir::Up, &shared, frozen_at, &kill, move |data| {
            for seen in parser.feed(data) {
                if parser.upgraded {
                    guard.upgraded();
                }
                if let Ok(mut r) = shared_up.requests.lock() {
                    r.push(seen);
                }
            }
        });
        let down = forward(sr, &mut cw, Dir::Down, &shared, frozen_at, &kill, |_| {});
        tokio::select! {
            _ = async { tokio::join!(up, down) } => {}
            // Cut by any `drop_all` since the connection was accepted (its
            // receiver was subscribed then), even one that came before this
            // task first ran.
            _ = cut.changed() => {}
            _ = killed.wait_for(|k| *k) => reset = true,
        }
    }
    if reset {
        let client = cr.unsplit(cw);
        let _ = client.tcp().set_zero_linger();
        let _ = server.set_zero_linger();
    }
    // Dropping the sockets here closes them (and then the guard stops
    // counting the connection).
}

/// Finds request heads in a client's byte stream: HTTP/1.1 with keep-alive
/// and `Content-Length` bodies (after a WebSocket upgrade, nothing more),
/// or HTTP/2 with prior knowledge (each HEADERS block, decoded).
#[derive(Default)]
struct RequestParser {
    buf: Vec<u8>,
    body_left: usize,
    upgraded: bool,
    /// HTTP/2: the connection's header decoder, and a block still waiting
    /// for its CONTINUATION frames.
    h2: Option<(hpack::Decoder<'static>, Vec<u8>)>,
}

/// The client's first bytes on an HTTP/2 connection with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl RequestParser {
    fn feed(&mut self, data: &[u8]) -> Vec<SeenRequest> {
        let mut seen = Vec::new();
        self.buf.extend_from_slice(data);
        if self.h2.is_none() && self.body_left == 0 && self.buf.starts_with(H2_PREFACE) {
            self.buf.drain(..H2_PREFACE.len());
            self.h2 = Some((hpack::Decoder::new(), Vec::new()));
        }
        if self.h2.is_some() {
            self.feed_h2(&mut seen);
            return seen;
        }
        loop {
            if self.upgraded {
                // WebSocket frames from here on: not HTTP.
                self.buf.clear();
                return seen;
            }
            if self.body_left > 0 {
                let skip = self.body_left.min(self.buf.len());
                self.buf.drain(..skip);
                self.body_left -= skip;
                if self.body_left > 0 {
                    return seen;
                }
            }
            let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                return seen;
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            self.buf.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let mut first = lines.next().unwrap_or_default().split(' ');
            let method = first.next().unwrap_or_default().to_owned();
            let path = first.next().unwrap_or_default().to_owned();
            let mut auth_scheme = None;
            for line in lines {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "authorization" => auth_scheme = value.split(' ').next().map(str::to_owned),
                    "content-length" => self.body_left = value.parse().unwrap_or(0),
                    "upgrade" if value.eq_ignore_ascii_case("websocket") => self.upgraded = true,
                    _ => {}
                }
            }
            seen.push(SeenRequest {
                method,
                path,
                auth_scheme,
            });
        }
    }
}

impl RequestParser {
    /// HTTP/2 frames: each complete HEADERS block is a request.
    fn feed_h2(&mut self, seen: &mut Vec<SeenRequest>) {
        const HEADERS: u8 = 0x1;
        const CONTINUATION: u8 = 0x9;
        const END_HEADERS: u8 = 0x4;
        const PADDED: u8 = 0x8;
        const PRIORITY: u8 = 0x20;
        let Some((decoder, block)) = self.h2.as_mut() else {
            return;
        };
        while self.buf.len() >= 9 {
            let len = usize::from(self.buf[0]) << 16 | usize::from(self.buf[1]) << 8 | usize::from(self.buf[2]);
            if self.buf.len() < 9 + len {
                return;
            }
            let (kind, flags) = (self.buf[3], self.buf[4]);
            let payload = &self.buf[9..9 + len];
            let fragment: &[u8] = match kind {
                HEADERS => {
                    let mut start = 0;
                    let mut end = payload.len();
                    if flags & PADDED != 0 && !payload.is_empty() {
                        start = 1;
                        end = end.saturating_sub(usize::from(payload[0]));
                    }
                    if flags & PRIORITY != 0 {
                        start += 5;
                    }
                    payload.get(start..end).unwrap_or_default()
                }
                CONTINUATION => payload,
                _ => &[],
            };
            if kind == HEADERS || kind == CONTINUATION {
                block.extend_from_slice(fragment);
                if flags & END_HEADERS != 0 {
                    if let Ok(headers) = decoder.decode(block) {
                        let value = |name: &[u8]| {
                            headers
                                .iter()
                                .find(|(n, _)| n.as_slice() == name)
                                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        };
                        seen.push(SeenRequest {
                            method: value(b":method").unwrap_or_default(),
                            path: value(b":path").unwrap_or_default(),
                            auth_scheme: value(b"authorization").and_then(|v| v.split(' ').next().map(str::to_owned)),
                        });
                    }
                    block.clear();
                }
            }
            self.buf.drain(..9 + len);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keep_alive_requests_and_stops_at_upgrade() {
        let mut p = RequestParser::default();
        let stream = b"POST /v1/api/auth/login HTTP/1.1\r\nContent-Length: 5\r\ncontent-type: application/json\r\n\r\nhelloPOST /v1/api/sql HTTP/1.1\r\nAuthorization: Bearer x\r\nContent-Length: 3\r\n\r\nabcGET /v1/ws?compress=false HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x85garbage";
        // Fed in awkward pieces.
        let mut seen = Vec::new();
        for chunk in stream.chunks(7) {
            seen.extend(p.feed(chunk));
        }
        let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["/v1/api/auth/login", "/v1/api/sql", "/v1/ws?compress=false"]);
        assert_eq!(seen[1].auth_scheme.as_deref(), Some("Bearer"));
        assert_eq!(seen[0].auth_scheme, None);
    }
}
