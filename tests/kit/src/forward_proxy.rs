//! An HTTP forward proxy for tests, as a corporate network has one: `CONNECT`
//! tunnels, and absolute-form requests (`POST http://host:port/path`)
//! forwarded in origin form, optionally behind Basic proxy credentials
//! (`407` without them). It records what it was asked for, so a test can
//! check that every request went through it (or, for `NO_PROXY`, none).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP proxy on 127.0.0.1.
pub struct HttpProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    accept_task: tokio::task::JoinHandle<()>,
}

struct Rules {
    /// `user:password` the proxy wants, if any.
    credentials: Option<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl HttpProxy {
    /// A proxy that wants no credentials.
    pub async fn start() -> std::io::Result<HttpProxy> {
        Self::start_with(None).await
    }

    /// A proxy that wants these Basic credentials (`407` otherwise).
    pub async fn start_with(credentials: Option<(&str, &str)>) -> std::io::Result<HttpProxy> {
        Self::start_at("127.0.0.1:0", credentials).await
    }

    /// A proxy on `addr` (a port chosen before, to name in an environment
    /// variable, say).
    pub async fn start_at(addr: &str, credentials: Option<(&str, &str)>) -> std::io::Result<HttpProxy> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rules = Arc::new(Rules {
            credentials: credentials.map(|(u, p)| format!("{u}:{p}")),
            seen: seen.clone(),
        });
        let accept_task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, rules.clone()));
            }
        });
        Ok(HttpProxy {
            addr,
            seen,
            accept_task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it was asked, in order: `CONNECT host:port` for a tunnel,
    /// `METHOD http://host:port/path` for a forwarded request, each
    /// followed by ` 407` when it refused for credentials.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// One request head: the request line, its headers, and the bytes read
/// past it.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    rest: Vec<u8>,
}

async fn read_head<R: tokio::io::AsyncRead + Unpin>(stream: &mut R, mut buf: Vec<u8>) -> Option<Head> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = text.split("\r\n");
            let mut first = lines.next()?.split(' ');
            let method = first.next()?.to_owned();
            let target = first.next()?.to_owned();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect();
            return Some(Head {
                method,
                target,
                headers,
                rest: buf[end + 4..].to_vec(),
            });
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn authorized(&self, rules: &Rules) -> bool {
        let Some(want) = &rules.credentials else { return true };
        let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(want));
        self.header("proxy-authorization") == Some(expected.as_str())
    }
}

fn record(rules: &Rules, line: String) {
    if let Ok(mut s) = rules.seen.lock() {
        s.push(line);
    }
}

async fn serve(mut client: TcpStream, rules: Arc<Rules>) {
    let _ = client.set_nodelay(true);
    let Some(head) = read_head(&mut client, Vec::new()).await else {
        return;
    };
    if head.method == "CONNECT" {
        if !head.authorized(&rules) {
            record(&rules, format!("CONNECT {} 407", head.target));
            let _ = client
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"kit\"\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        }
        record(&rules, format!("CONNECT {}", head.target));
        let Ok(mut upstream) = TcpStream::connect(&head.target).await else {
            let _ = client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        };
        let _ = upstream.set_nodelay(true);
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    }
    // Absolute form: one upstream per client connection (the target of its
    // first request), every request head rewritten to origin form.
    if !head.authorized(&rules) {
        record(&rules, format!("{} {} 407", head.method, head.target));
        let _ = client
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    let Some(authority) = head
        .target
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or_default().to_owned())
    else {
        let _ = client
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    let Ok(upstream) = TcpStream::connect(&authority).await else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    let _ = upstream.set_nodelay(true);
    let (mut ur, mut uw) = upstream.into_split();
    let (mut reader, mut cw) = client.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    });
    let mut next = Some(head);
    while let Some(head) = next.take() {
        if !head.authorized(&rules) {
            // A later request without credentials: the connection ends.
            record(&rules, format!("{} {} 407", head.method, head.target));
            break;
        }
        record(&rules, format!("{} {}", head.method, head.target));
        let path = head
            .target
            .strip_prefix("http://")
            .and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned()))
            .unwrap_or_else(|| "/".into());
        let mut out = format!("{} {} HTTP/1.1\r\n", head.method, path);
        for (name, value) in &head.headers {
            if !name.eq_ignore_ascii_case("proxy-authorization") {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str("\r\n");
        if uw.write_all(out.as_bytes()).await.is_err() {
            break;
        }
        // The body, by its length; what follows is the next head.
        let mut left: usize = head.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let upgrade = head
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let mut rest = head.rest;
        let take = left.min(rest.len());
        if uw.write_all(&rest[..take]).await.is_err() {
            break;
        }
        left -= take;
        rest.drain(..take);
        let mut failed = false;
        while left > 0 {
            let mut chunk = vec![0u8; left.min(64 * 1024)];
            let n = reader.read(&mut chunk).await.unwrap_or(0);
            if n == 0 || uw.write_all(&chunk[..n]).await.is_err() {
                failed = true;
                break;
            }
            left -= n;
        }
        if failed {
            break;
        }
        // An upgraded connection (a WebSocket) is bytes from here on.
        if upgrade {
            let _ = uw.write_all(&rest).await;
            let _ = tokio::io::copy(&mut reader, &mut uw).await;
            break;
        }
        next = read_head(&mut reader, rest).await;
    }
    let _ = uw.shutdown().await;
    let _ = down.await;
}
