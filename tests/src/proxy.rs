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
//! - [`FaultProxy::set_refuse`] makes new connections fail;
//! - [`FaultProxy::set_stall`] lets connections open but forwards nothing;
//! - [`FaultProxy::set_latency`] delays what the server sends back.
//!
//! It binds 127.0.0.1 on a free port and stops when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

struct Shared {
    requests: Mutex<Vec<SeenRequest>>,
    connections: AtomicUsize,
    open: AtomicUsize,
    open_ws: AtomicUsize,
    refuse: AtomicBool,
    stall: watch::Sender<bool>,
    latency: Mutex<Duration>,
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`. See the module docs.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Bumped by `drop_all`; every connection task watches it.
    generation: watch::Sender<u64>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port` or a URL like
    /// `http://127.0.0.1:2900`).
    pub async fn start(upstream: &str) -> std::io::Result<FaultProxy> {
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
            stall: watch::channel(false).0,
            latency: Mutex::new(Duration::ZERO),
        });
        let (generation, _) = watch::channel(0u64);
        let accept_task = {
            let shared = shared.clone();
            let generation = generation.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if shared.refuse.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let cut = generation.subscribe();
                    tokio::spawn(serve(client, upstream.clone(), shared.clone(), cut));
                }
            })
        };
        Ok(FaultProxy {
            addr,
            shared,
            generation,
            accept_task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
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

    /// Refuse (accept and close at once) new connections while `on`.
    pub fn set_refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// Forward nothing while `on` (connections hang).
    pub fn set_stall(&self, on: bool) {
        self.shared.stall.send_replace(on);
    }

    /// Hold everything the server sends back for `d` before passing it on
    /// (each piece `d` after it arrived, in order: a slow network, not a slow
    /// server). Applies to open connections too.
    pub fn set_latency(&self, d: Duration) {
        if let Ok(mut l) = self.shared.latency.lock() {
            *l = d;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
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

async fn serve(client: TcpStream, upstream: String, shared: Arc<Shared>, mut cut: watch::Receiver<u64>) {
    let guard = OpenGuard::new(shared.clone());
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = {
        let shared = shared.clone();
        let guard = &guard;
        async move {
            let mut parser = RequestParser::default();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for seen in parser.feed(&buf[..n]) {
                    if parser.upgraded {
                        guard.upgraded();
                    }
                    if let Ok(mut r) = shared.requests.lock() {
                        r.push(seen);
                    }
                }
                let _ = shared.stall.subscribe().wait_for(|stalled| !stalled).await;
                if sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = sw.shutdown().await;
        }
    };
    let down = {
        let shared = shared.clone();
        async move {
            // Read and write apart, so that latency delays each chunk by the
            // same amount instead of adding up.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
            let read = async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            };
            let write = async move {
                while let Some((arrived, chunk)) = rx.recv().await {
                    let latency = shared.latency.lock().map(|l| *l).unwrap_or_default();
                    if !latency.is_zero() {
                        tokio::time::sleep_until(arrived + latency).await;
                    }
                    let _ = shared.stall.subscribe().wait_for(|stalled| !stalled).await;
                    if cw.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = cw.shutdown().await;
            };
            tokio::join!(read, write);
        }
    };
    let start = *cut.borrow_and_update();
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = cut.wait_for(|g| *g != start) => {}
    }
    // Dropping the halves here closes both sockets (and then the guard
    // stops counting the connection).
}

/// Finds request heads in a client's byte stream: HTTP/1.1 with keep-alive
/// and `Content-Length` bodies; after a WebSocket upgrade, nothing more.
#[derive(Default)]
struct RequestParser {
    buf: Vec<u8>,
    body_left: usize,
    upgraded: bool,
}

impl RequestParser {
    fn feed(&mut self, data: &[u8]) -> Vec<SeenRequest> {
        let mut seen = Vec::new();
        self.buf.extend_from_slice(data);
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
