//! The recorded WebSocket sessions of `../shared/wire-samples` replayed
//! frame by frame against the kit and, when asked, against the real server.
//!
//! Every `ws_*.json` session and the WebSocket part of
//! `expiry_natural_token_expiry.json` is replayed with a raw RFC 6455 client
//! written here (masked client frames, nothing answered automatically: no
//! pongs, no close replies), as the recorder was:
//!
//! - the same upgrade request (path, query, headers; a bearer header is
//!   re-minted), whose status is compared;
//! - the recorded client frames, in order: text and binary (MessagePack
//!   encoded again from the decoded copy), pings, closes. Tokens are
//!   re-minted with the same claims and their times moved so that each is
//!   as fresh, or as expired, at the moment it is sent as it was when
//!   recorded. Sequence numbers the client echoes (`next_batch.last_seq_id`,
//!   `options.from`) are replaced by the ones this server sent;
//! - the recorded side-channel HTTP requests (setup, the inserts that cause
//!   changes), whose status and error code are compared.
//!
//! Each server frame is compared with the recording by shape: opcode; the
//! gzip and MessagePack flags of binary frames; the structure by the kit's
//! `shape_diff` (message keys in order, row keys in any order as the server
//! sends them, lengths, value types); every value except server-generated
//! sequence numbers exactly (error codes and messages, batch control
//! fields, schemas, row counts, the rows themselves and their order);
//! sequence numbers by consistency (the same recorded `_seq` is the same
//! replayed `_seq` everywhere, and different ones differ); close codes and
//! reasons, and that the server then ends the TCP connection; timeouts
//! within the server's documented range (PROTOCOL §6), or the kit's
//! configured ones.
//!
//! The server's state is rebuilt first by replaying every HTTP sample's
//! requests (the samples' own DDL, users and rows), in recording order, then
//! the sessions in recording order, so each sees the rows the recording saw.
//! The expiry session was recorded on a second, fresh server: it gets one.
//!
//! Waits are not replayed: the next frame is sent as soon as the previous
//! answer is in. What the recorder's pauses made sure of is made sure of
//! otherwise:
//! - before a side-channel request that follows a client frame with no
//!   answer (an `unsubscribe`, say), the replay sends a ping of its own and
//!   waits for its pong, so the server has handled that frame (the pong is
//!   not compared; frames before it are);
//! - after a side-channel request the recording got no frame for, the
//!   replay listens for 300 ms: a change that comes is compared with the
//!   next recorded frame, and so reported;
//! - a run of `change` frames with nothing between them (the rows of one
//!   statement, or one change fanned out to several subscriptions) is
//!   matched as a set: the real server sends them in no fixed order;
//! - a session whose end is a server-initiated close after a silence (auth
//!   timeout, heartbeat timeout, the `websockets` library's session) is
//!   left to wait on its own task while the next sessions run, so the real
//!   server's replay takes about 20 s.
//!
//! Beside the recordings, a few sessions are written by hand in the same
//! format (`tests/samples/extra/*.json`, replayed after the recorded ones,
//! in the order of their `captured_at`) from what the real server was seen
//! to do (upgrade-header
//! authentication defaults, MessagePack with gzip, paging edge cases,
//! changes through a column list, rows entering and leaving a filter, the
//! 1011 reasons, changes made while the initial data is paged): the
//! real-server test checks them like the recordings.
//!
//! Not replayed: the recorder's idle waits meant to show that the server
//! sends no pings of its own (`ws_ping_pong.json`); a ping from the server
//! during any replayed session is reported.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kalam_testkit::shape::{ShapeRules, shape_diff_with};
use kalam_testkit::{RealServer, TestServer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

mod samples;
use samples::{remint, remint_header, unix_ms_of};

/// The kit's heartbeat timeout for the replay (the server's is 10 s).
const KIT_IDLE: Duration = Duration::from_secs(3);
/// How long a replay listens for a change the recording did not get.
const QUIET: Duration = Duration::from_millis(300);

/// Where a replay runs, and the timeouts it must see there.
struct Target {
    name: &'static str,
    /// `host:port` of the main server, and of a fresh one for the expiry session.
    addr: String,
    fresh_addr: String,
    /// From connect to the auth-timeout `auth_error`.
    auth_timeout: (Duration, Duration),
    /// From the client's last frame to the heartbeat-timeout close.
    idle_timeout: (Duration, Duration),
    /// How long a frame that should come at once may take.
    patience: Duration,
}

impl Target {
    fn kit(addr: String, fresh_addr: String) -> Self {
        Target {
            name: "kit",
            addr,
            fresh_addr,
            // The kit's auth timeout is the server's 3 s, checked at once
            // rather than on the server's 5 s tick; it counts from a moment
            // before the replay has read the upgrade's answer.
            auth_timeout: (Duration::from_millis(2900), Duration::from_secs(8)),
            idle_timeout: (KIT_IDLE, KIT_IDLE + Duration::from_secs(5)),
            patience: Duration::from_secs(5),
        }
    }

    fn real(addr: String, fresh_addr: String) -> Self {
        Target {
            name: "real server",
            addr,
            fresh_addr,
            // PROTOCOL §4.2, §4.7: 3 s and 10 s, checked on a 5 s tick.
            auth_timeout: (Duration::from_millis(2900), Duration::from_millis(9500)),
            // (a loaded CI machine may add a moment to the 15 s).
            idle_timeout: (Duration::from_millis(9900), Duration::from_millis(17500)),
            patience: Duration::from_secs(10),
        }
    }
}

/// Sequence numbers seen in the recording, and what this server sent in
/// their place.
#[derive(Default, Clone)]
struct Seqs {
    forward: HashMap<String, String>,
    back: HashMap<String, String>,
}

impl Seqs {
    fn check(&mut self, recorded: &str, actual: &str) -> Option<String> {
        if let Some(known) = self.forward.get(recorded) {
            return (known != actual)
                .then(|| format!("sequence {recorded} was replayed as {known} before, here as {actual}"));
        }
        if let Some(other) = self.back.get(actual) {
            return Some(format!(
                "sequence {actual} stands for both recorded {other} and {recorded}"
            ));
        }
        self.forward.insert(recorded.to_owned(), actual.to_owned());
        self.back.insert(actual.to_owned(), recorded.to_owned());
        None
    }
}

/// One server's replay: its address, the HTTP client, the sequence map and
/// the pacing of authentications (the real server allows 20 a second per IP).
struct Ctx {
    target_name: &'static str,
    addr: String,
    auth_timeout: (Duration, Duration),
    idle_timeout: (Duration, Duration),
    patience: Duration,
    http: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    seqs: Mutex<Seqs>,
    auths: tokio::sync::Mutex<VecDeque<Instant>>,
    sqls: tokio::sync::Mutex<VecDeque<Instant>>,
    tails: Mutex<Vec<JoinHandle<Vec<String>>>>,
}

impl Ctx {
    fn new(t: &Target, addr: &str) -> Arc<Ctx> {
        Arc::new(Ctx {
            target_name: t.name,
            addr: addr.to_owned(),
            auth_timeout: t.auth_timeout,
            idle_timeout: t.idle_timeout,
            patience: t.patience,
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
            seqs: Mutex::new(Seqs::default()),
            auths: tokio::sync::Mutex::new(VecDeque::new()),
            sqls: tokio::sync::Mutex::new(VecDeque::new()),
            tails: Mutex::new(Vec::new()),
        })
    }

    /// Waits until one more request fits `per_sec` in any one-second window
    /// (a rate limit, not a synchronisation).
    async fn pace(window: &tokio::sync::Mutex<VecDeque<Instant>>, per_sec: usize) {
        let mut w = window.lock().await;
        let span = Duration::from_millis(1100);
        while w.front().is_some_and(|t| t.elapsed() > span) {
            w.pop_front();
        }
        if w.len() >= per_sec
            && let Some(oldest) = w.pop_front()
        {
            tokio::time::sleep_until((oldest + span).into()).await;
        }
        w.push_back(Instant::now());
    }

    async fn auth_slot(&self) {
        Self::pace(&self.auths, 10).await;
    }

    /// One recorded HTTP request, sent again; its answer's status and JSON.
    async fn http(&self, request: &Value, used_at_ms: f64) -> Result<(u16, Option<Value>), String> {
        let path = request["path"].as_str().unwrap_or("/");
        if path.starts_with("/v1/api/auth/login") || path.starts_with("/v1/api/auth/refresh") {
            self.auth_slot().await;
        } else if path.starts_with("/v1/api/sql") {
            Self::pace(&self.sqls, 50).await;
        }
        let mut req = http::Request::builder()
            .method(request["method"].as_str().unwrap_or("GET"))
            .uri(format!("http://{}{path}", self.addr));
        for (k, v) in request["headers"].as_object().into_iter().flatten() {
            let lower = k.to_ascii_lowercase();
            if lower == "host" || lower == "content-length" {
                continue;
            }
            let v = v.as_str().unwrap_or_default();
            let v = if lower == "authorization" {
                remint_header(v, used_at_ms)
            } else {
                v.to_owned()
            };
            req = req.header(k.as_str(), v);
        }
        let body = request["body_raw"].as_str().unwrap_or_default().as_bytes().to_vec();
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(self.patience, self.http.request(req))
            .await
            .map_err(|_| "no HTTP answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, serde_json::from_slice(&body).ok()))
    }
}

/// The error code of an HTTP answer (SQL envelope, or the auth endpoints' shape).
fn http_code(body: &Option<Value>) -> Option<String> {
    let b = body.as_ref()?;
    b["error"]["code"]
        .as_str()
        .or_else(|| b["error"].as_str())
        .or_else(|| b["status"].as_str())
        .map(str::to_owned)
}

/// Compares a replayed HTTP answer with the recorded one.
async fn http_frame(ctx: &Ctx, exchange: &Value, used_at_ms: f64) -> Option<String> {
    let want_status = exchange["response"]["status"].as_u64().unwrap_or(0) as u16;
    let want: Option<Value> = exchange["response"]["body_raw"]
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok());
    match ctx.http(&exchange["request"], used_at_ms).await {
        Err(e) => Some(format!("HTTP: {e}")),
        Ok((status, _)) if status != want_status => Some(format!("HTTP status: expected {want_status}, got {status}")),
        Ok((_, got)) if http_code(&want) != http_code(&got) => Some(format!(
            "HTTP: expected code {:?}, got {:?}",
            http_code(&want),
            http_code(&got)
        )),
        Ok(_) => None,
    }
}

// ---------------------------------------------------------------------------
// A raw RFC 6455 client.

/// One frame, as sent or received (payloads decoded).
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Text(Value),
    Binary { gzip: bool, msgpack: bool, json: Value },
    Close(Option<(u16, String)>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Other { opcode: u8, fin: bool },
}

impl Frame {
    fn describe(&self) -> String {
        let short = |v: &Value| {
            let s = v.to_string();
            if s.chars().count() > 160 {
                format!("{}…", s.chars().take(160).collect::<String>())
            } else {
                s
            }
        };
        match self {
            Frame::Text(v) => format!("text {}", short(v)),
            Frame::Binary { gzip, msgpack, json } => format!(
                "binary ({}{}) {}",
                if *gzip { "gzip " } else { "" },
                if *msgpack { "msgpack" } else { "json" },
                short(json)
            ),
            Frame::Close(c) => format!("close {c:?}"),
            Frame::Ping(p) => format!("ping {:?}", String::from_utf8_lossy(p)),
            Frame::Pong(p) => format!("pong {:?}", String::from_utf8_lossy(p)),
            Frame::Other { opcode, fin } => format!("frame opcode {opcode} fin {fin}"),
        }
    }
}

/// gunzip (RFC 1952), enough for one member.
fn gunzip(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 18 || data[0] != 0x1f || data[1] != 0x8b || data[2] != 8 {
        return None;
    }
    let flags = data[3];
    let mut pos = 10;
    if flags & 4 != 0 {
        let n = u16::from_le_bytes([*data.get(pos)?, *data.get(pos + 1)?]) as usize;
        pos += 2 + n;
    }
    for bit in [8, 16] {
        if flags & bit != 0 {
            pos += data.get(pos..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & 2 != 0 {
        pos += 2;
    }
    miniz_oxide::inflate::decompress_to_vec(data.get(pos..data.len() - 8)?).ok()
}

/// A server's binary payload: gzip or not, then JSON or MessagePack.
fn decode_binary(payload: &[u8]) -> Frame {
    let (gzip, data) = match gunzip(payload) {
        Some(d) => (true, d),
        None => (false, payload.to_vec()),
    };
    if data.first() == Some(&b'{') {
        let json = serde_json::from_slice(&data).unwrap_or_else(|e| Value::String(format!("<bad JSON: {e}>")));
        return Frame::Binary {
            gzip,
            msgpack: false,
            json,
        };
    }
    let json =
        rmp_serde::from_slice::<Value>(&data).unwrap_or_else(|e| Value::String(format!("<bad MessagePack: {e}>")));
    Frame::Binary {
        gzip,
        msgpack: true,
        json,
    }
}

enum Received {
    Frame(Frame),
    Eof,
    Timeout,
    Error(String),
}

struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
    mask: u32,
    /// Frames that came while waiting for something else.
    pending: VecDeque<Frame>,
}

impl Conn {
    /// Sends the upgrade request; the status and headers of the answer.
    async fn open(
        addr: &str,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<(u16, Vec<(String, String)>, Conn), String> {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
                .await
                .map_err(|_| "no upgrade answer in time".to_owned())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed during the upgrade".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let rest = buf[head_end + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok((
            status,
            headers,
            Conn {
                tcp,
                buf: rest,
                mask: 0x9e37_79b9,
                pending: VecDeque::new(),
            },
        ))
    }

    /// One masked, unfragmented frame.
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        let mut f = vec![0x80 | opcode];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xffff {
            f.push(0x80 | 126);
            f.extend((len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend((len as u64).to_be_bytes());
        }
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        let key = self.mask.to_be_bytes();
        f.extend(key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.tcp.write_all(&f).await.map_err(|e| e.to_string())
    }

    async fn send_frame(&mut self, frame: &Frame) -> Result<(), String> {
        match frame {
            Frame::Text(Value::String(raw)) => self.send(1, raw.as_bytes()).await,
            Frame::Text(v) => self.send(1, v.to_string().as_bytes()).await,
            Frame::Binary {
                msgpack: true, json, ..
            } => {
                let bytes = rmp_serde::to_vec(json).map_err(|e| e.to_string())?;
                self.send(2, &bytes).await
            }
            Frame::Binary { json, .. } => {
                let raw = STANDARD
                    .decode(json.as_str().unwrap_or_default())
                    .map_err(|e| e.to_string())?;
                self.send(2, &raw).await
            }
            Frame::Close(None) => self.send(8, &[]).await,
            Frame::Close(Some((code, reason))) => {
                let mut p = code.to_be_bytes().to_vec();
                p.extend(reason.as_bytes());
                self.send(8, &p).await
            }
            Frame::Ping(p) => self.send(9, p).await,
            Frame::Pong(p) => self.send(10, p).await,
            Frame::Other { opcode, .. } => self.send(*opcode, &[]).await,
        }
    }

    /// The next server frame, within `wait`.
    async fn recv(&mut self, wait: Duration) -> Received {
        if let Some(f) = self.pending.pop_front() {
            return Received::Frame(f);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Received::Frame(frame);
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                Err(_) => return Received::Timeout,
                Ok(Ok(0)) => return Received::Eof,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return Received::Eof,
                Ok(Err(e)) => return Received::Error(e.to_string()),
            }
        }
    }
}

/// One server frame from the front of `buf`, and the bytes it took.
fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let (b0, b1) = (*buf.first()?, *buf.get(1)?);
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    let masked = b1 & 0x80 != 0;
    let (len, mut pos) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let key = if masked {
        let k: [u8; 4] = buf.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(k)
    } else {
        None
    };
    let mut payload = buf.get(pos..pos + len)?.to_vec();
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    let frame = match (opcode, fin, masked) {
        (1, true, false) => Frame::Text(
            serde_json::from_slice(&payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned())),
        ),
        (2, true, false) => decode_binary(&payload),
        (8, true, false) if payload.len() >= 2 => Frame::Close(Some((
            u16::from_be_bytes([payload[0], payload[1]]),
            String::from_utf8_lossy(&payload[2..]).into_owned(),
        ))),
        (8, true, false) => Frame::Close(None),
        (9, true, false) => Frame::Ping(payload),
        (10, true, false) => Frame::Pong(payload),
        _ => Frame::Other { opcode, fin },
    };
    Some((frame, pos + len))
}

// ---------------------------------------------------------------------------
// The recording's frames.

/// A recorded `send` or `recv` entry as a frame.
fn recorded_frame(f: &Value) -> Frame {
    let payload = |f: &Value| -> Vec<u8> {
        f["payload_text"]
            .as_str()
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| f["payload_b64"].as_str().and_then(|b| STANDARD.decode(b).ok()))
            .unwrap_or_default()
    };
    match f["opcode"].as_str().unwrap_or_default() {
        "text" => {
            let text = f["text"].as_str().unwrap_or_default();
            Frame::Text(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())))
        }
        "binary" => match f["decoded"].as_object() {
            Some(d) => Frame::Binary {
                gzip: d.get("compression").and_then(Value::as_str) == Some("gzip"),
                msgpack: d.get("encoding").and_then(Value::as_str) == Some("msgpack"),
                json: d.get("json").cloned().unwrap_or(Value::Null),
            },
            // Undecodable bytes: kept as base64, sent as they are.
            None => Frame::Binary {
                gzip: false,
                msgpack: false,
                json: f["binary_b64"].clone(),
            },
        },
        "close" => Frame::Close(
            f["close"]["code"]
                .as_u64()
                .map(|c| (c as u16, f["close"]["reason"].as_str().unwrap_or_default().to_owned())),
        ),
        "ping" => Frame::Ping(payload(f)),
        "pong" => Frame::Pong(payload(f)),
        other => panic!("unknown recorded opcode {other:?}"),
    }
}

/// A recorded client message made current: tokens re-minted, the sequence
/// numbers it echoes replaced by this server's.
fn current(v: &Value, key: &str, used_at_ms: f64, seqs: &Seqs) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), current(x, k, used_at_ms, seqs)))
                .collect(),
        ),
        Value::String(t) if key == "token" => Value::String(remint(t, used_at_ms)),
        Value::Number(n) if ["last_seq_id", "from", "from_seq_id"].contains(&key) => seqs
            .forward
            .get(&n.to_string())
            .and_then(|s| s.parse::<u64>().ok())
            .map(Value::from)
            .unwrap_or_else(|| v.clone()),
        other => other.clone(),
    }
}

/// `v` with the keys of its row objects (under `rows` and `old_values`)
/// sorted: the server sends row keys in no particular order.
fn rows_sorted(v: &Value, in_rows: bool) -> Value {
    match v {
        Value::Object(m) => {
            let mut pairs: Vec<(String, Value)> = m
                .iter()
                .map(|(k, x)| (k.clone(), rows_sorted(x, k == "rows" || k == "old_values")))
                .collect();
            if in_rows {
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
            }
            Value::Object(pairs.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| rows_sorted(x, in_rows)).collect()),
        other => other.clone(),
    }
}

/// Differences between a recorded and a replayed message: the structure by
/// the kit's `shape_diff` (message keys in order, row keys in any order,
/// lengths, JSON kinds), then every value exactly, except the sequence
/// numbers the server generates, which must only be consistent.
fn compare_json(want: &Value, got: &Value, seqs: &mut Seqs, out: &mut Vec<String>) {
    let structure = ShapeRules {
        exact_keys: Vec::new(),
        error_text: false,
    };
    out.extend(shape_diff_with(
        &structure,
        &rows_sorted(want, false),
        &rows_sorted(got, false),
    ));
    values("$", "", want, got, seqs, out);
}

fn values(path: &str, key: &str, want: &Value, got: &Value, seqs: &mut Seqs, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, x) in a {
                if let Some(y) = b.get(k) {
                    values(&format!("{path}.{k}"), k, x, y, seqs, out);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                values(&format!("{path}[{i}]"), key, x, y, seqs, out);
            }
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (x, y) if key == "_seq" || key == "last_seq_id" => {
            let text = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
            if let Some(p) = seqs.check(&text(x), &text(y)) {
                out.push(format!("{path}: {p}"));
            }
        }
        (x, y) if x != y && std::mem::discriminant(x) == std::mem::discriminant(y) => {
            out.push(format!("{path}: expected {x}, got {y}"))
        }
        _ => {}
    }
}

fn compare_frames(want: &Frame, got: &Frame, seqs: &mut Seqs, out: &mut Vec<String>) {
    match (want, got) {
        (Frame::Text(a), Frame::Text(b)) => compare_json(a, b, seqs, out),
        (
            Frame::Binary {
                gzip: g1,
                msgpack: m1,
                json: a,
            },
            Frame::Binary {
                gzip: g2,
                msgpack: m2,
                json: b,
            },
        ) => {
            if (g1, m1) != (g2, m2) {
                out.push(format!(
                    "binary flags: expected gzip {g1} msgpack {m1}, got gzip {g2} msgpack {m2}"
                ));
            }
            compare_json(a, b, seqs, out);
        }
        (a, b) if std::mem::discriminant(a) == std::mem::discriminant(b) && a == b => {}
        (a, b) => out.push(format!("expected {}, got {}", a.describe(), b.describe())),
    }
}

// ---------------------------------------------------------------------------
// Replaying a session.

/// An open connection, and when it last heard from the client.
struct Link {
    conn: Conn,
    opened: Instant,
    last_sent: Instant,
    /// The server sent its close: the next thing must be the end of TCP.
    closed: bool,
}

/// The next server frame, or why there is none.
async fn next_frame(link: &mut Link, want: &Frame, wait: Duration) -> Result<Frame, String> {
    match link.conn.recv(wait).await {
        Received::Frame(f) => Ok(f),
        Received::Eof => Err(format!("expected {}, the connection ended", want.describe())),
        Received::Timeout => Err(format!("expected {}, nothing came in {wait:?}", want.describe())),
        Received::Error(e) => Err(format!("expected {}, read error {e}", want.describe())),
    }
}

/// Compares a received frame with the recorded one, timeouts included.
fn check(ctx: &Ctx, link: &mut Link, want: &Frame, got: &Frame, seqs: &mut Seqs, out: &mut Vec<String>) {
    // The auth timeout counts from the upgrade, the heartbeat timeout from
    // the client's last frame.
    let timed = |range: (Duration, Duration), since: Instant, what: &str, out: &mut Vec<String>| {
        let took = since.elapsed();
        if took < range.0 || took > range.1 {
            out.push(format!(
                "{what} after {took:?}, expected within {range:?} on the {}",
                ctx.target_name
            ));
        }
    };
    if let Frame::Text(v) = want
        && v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Authentication timeout"))
    {
        timed(ctx.auth_timeout, link.opened, "auth timeout", out);
    }
    if let Frame::Close(Some((_, reason))) = want
        && reason == "Heartbeat timeout"
    {
        timed(ctx.idle_timeout, link.last_sent, "heartbeat timeout", out);
    }
    compare_frames(want, got, seqs, out);
    if matches!(got, Frame::Close(_)) {
        link.closed = true;
    }
}

/// Receives one recorded server frame and compares it. `false` when the
/// session cannot go on (nothing came, or the connection ended).
async fn expect(ctx: &Ctx, link: &mut Link, want: &Frame, wait: Duration, out: &mut Vec<String>) -> bool {
    match next_frame(link, want, wait).await {
        Ok(got) => {
            let mut seqs = ctx.seqs.lock().unwrap();
            check(ctx, link, want, &got, &mut seqs, out);
            true
        }
        Err(e) => {
            out.push(e);
            false
        }
    }
}

/// Makes sure the server has handled every frame sent so far: a ping, and
/// its pong (a frame of the replay's own, not compared; what comes before
/// the pong is kept for the next comparison).
async fn barrier(link: &mut Link, wait: Duration) -> Result<(), String> {
    const PAYLOAD: &[u8] = b"replay-barrier";
    link.conn.send(9, PAYLOAD).await?;
    let mut early = VecDeque::new();
    loop {
        match link.conn.recv(wait).await {
            Received::Frame(Frame::Pong(p)) if p == PAYLOAD => break,
            Received::Frame(f) => early.push_back(f),
            _ => return Err("the replay's barrier ping got no pong".into()),
        }
    }
    link.conn.pending.extend(early);
    Ok(())
}

/// Whether a recorded entry is a server `change` frame.
fn is_change(f: &Value) -> bool {
    if f["dir"] != "recv" {
        return false;
    }
    match recorded_frame(f) {
        Frame::Text(v) | Frame::Binary { json: v, .. } => v["type"] == "change",
        _ => false,
    }
}

/// After the server's close frame: the server ends the connection.
async fn expect_end(link: &mut Link, out: &mut Vec<String>) {
    match link.conn.recv(Duration::from_secs(3)).await {
        Received::Eof | Received::Error(_) => {}
        Received::Timeout => out.push("after the close handshake the server kept the TCP connection open".into()),
        Received::Frame(f) => out.push(format!("after the close handshake, got {}", f.describe())),
    }
}

struct Session {
    file: String,
    frames: Vec<Value>,
    /// Recorded Unix time of `t_ms == 0` (`captured_at` is the end).
    start_ms: f64,
}

impl Session {
    fn of(file: &str, v: &Value) -> Session {
        let frames = v["frames"].as_array().cloned().unwrap_or_default();
        assert!(!frames.is_empty(), "{file}: no frames");
        let end = frames.last().and_then(|f| f["t_ms"].as_f64()).unwrap_or(0.0);
        Session {
            file: file.to_owned(),
            start_ms: unix_ms_of(v["captured_at"].as_str().unwrap_or_default()) - end,
            frames,
        }
    }
}

fn handshake_headers(f: &Value, used_at_ms: f64) -> (String, Vec<(String, String)>) {
    let pairs: Vec<(String, String)> = if let Some(req) = f.get("request") {
        req["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect()
    } else {
        f["handshake_request_headers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p[0].as_str().unwrap_or_default().to_owned(),
                    p[1].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let headers = pairs
        .into_iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
        .map(|(k, v)| {
            let v = if k.eq_ignore_ascii_case("authorization") {
                remint_header(&v, used_at_ms)
            } else {
                v
            };
            (k, v)
        })
        .collect();
    let path = f["request"]["path"].as_str().unwrap_or("/v1/ws").to_owned();
    (path, headers)
}

/// Replays one session; its differences, each prefixed with the frame.
async fn replay_session(ctx: Arc<Ctx>, s: &Session) -> Vec<String> {
    let mut problems = Vec::new();
    let mut link: Option<Link> = None;
    // The last thing on the socket was a client frame with no answer yet.
    let mut unanswered = false;
    let mut prev_t = 0.0;
    let mut i = 0;
    while i < s.frames.len() {
        let f = &s.frames[i];
        let t = f["t_ms"].as_f64().unwrap_or(0.0);
        let used_at = s.start_ms + t;
        let at = format!("{} #{i} ({t} ms)", s.file);
        let mut out = Vec::new();
        let dir = f["dir"].as_str().unwrap_or_default();
        let library_handshake = dir == "note" && f.get("handshake_request_headers").is_some();
        match dir {
            "handshake" | "note" if dir == "handshake" || library_handshake => {
                if let Some(mut old) = link.take()
                    && !old.closed
                {
                    let _ = old.conn.send_frame(&Frame::Close(Some((1000, String::new())))).await;
                }
                let (path, headers) = handshake_headers(f, used_at);
                if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
                    ctx.auth_slot().await;
                }
                let want = f["response"]["status"].as_u64().unwrap_or(101) as u16;
                match Conn::open(&ctx.addr, &path, &headers).await {
                    Ok((status, hdrs, conn)) => {
                        if status != want {
                            out.push(format!("upgrade status: expected {want}, got {status}"));
                        }
                        if let Some((_, ext)) = hdrs.iter().find(|(k, _)| k == "sec-websocket-extensions") {
                            out.push(format!("an extension was negotiated: {ext}"));
                        }
                        let now = Instant::now();
                        link = Some(Link {
                            conn,
                            opened: now,
                            last_sent: now,
                            closed: false,
                        });
                    }
                    Err(e) => out.push(format!("upgrade: {e}")),
                }
            }
            "note" => {}
            "http" => {
                // Changes caused by this request must find the client's
                // earlier frames (an unsubscribe, say) handled.
                if let Some(l) = link.as_mut().filter(|l| !l.closed)
                    && unanswered
                {
                    if let Err(e) = barrier(l, ctx.patience).await {
                        out.push(e);
                    }
                    unanswered = false;
                }
                if let Some(p) = http_frame(&ctx, &f["exchange"], used_at).await {
                    out.push(format!("{} {p}", f["label"].as_str().unwrap_or_default()));
                }
                // A change the recording did not get must not come now
                // either: a short quiet window when no frame follows.
                let next = s.frames[i + 1..].iter().find(|x| x["dir"] != "note");
                if let Some(l) = link.as_mut().filter(|l| !l.closed)
                    && next.is_none_or(|x| x["dir"] != "recv")
                    && let Received::Frame(early) = l.conn.recv(QUIET).await
                {
                    l.conn.pending.push_back(early);
                }
            }
            "send" => {
                let Some(l) = link.as_mut() else {
                    problems.push(format!("{at}: a send without a connection"));
                    break;
                };
                let frame = match recorded_frame(f) {
                    Frame::Text(v) => {
                        if v["type"] == "authenticate" {
                            ctx.auth_slot().await;
                        }
                        let seqs = ctx.seqs.lock().unwrap();
                        Frame::Text(current(&v, "", used_at, &seqs))
                    }
                    Frame::Binary {
                        gzip,
                        msgpack: true,
                        json,
                    } => {
                        let seqs = ctx.seqs.lock().unwrap();
                        Frame::Binary {
                            gzip,
                            msgpack: true,
                            json: current(&json, "", used_at, &seqs),
                        }
                    }
                    other => other,
                };
                if let Err(e) = l.conn.send_frame(&frame).await {
                    out.push(format!("send: {e}"));
                }
                l.last_sent = Instant::now();
                unanswered = true;
            }
            "recv" => {
                let Some(l) = link.as_mut() else {
                    problems.push(format!("{at}: a recv without a connection"));
                    break;
                };
                let want = recorded_frame(f);
                // A server-initiated frame after a silence, with nothing
                // more from the client: wait for it (and the rest) on
                // another task.
                let rest = &s.frames[i..];
                let silent = t - prev_t > 2500.0
                    && rest
                        .iter()
                        .all(|x| matches!(x["dir"].as_str(), Some("recv") | Some("note")));
                if silent {
                    let Some(l) = link.take() else { break };
                    let (ctx2, file, rest) = (ctx.clone(), s.file.clone(), rest.to_vec());
                    let tail = tokio::spawn(async move { tail(ctx2, file, i, rest, l).await });
                    ctx.tails.lock().unwrap().push(tail);
                    return problems;
                }
                unanswered = false;
                // The change frames of one statement, or of one change
                // fanned out to several subscriptions, come in no fixed
                // order: a run of them is matched as a set.
                let run = s.frames[i..].iter().take_while(|x| is_change(x)).count();
                if run >= 2 {
                    let mut got = Vec::new();
                    for _ in 0..run {
                        match next_frame(l, &want, ctx.patience).await {
                            Ok(g) => got.push(g),
                            Err(e) => {
                                problems.push(format!("{at}: {e} (one of {run} changes)"));
                                return problems;
                            }
                        }
                    }
                    let mut seqs = ctx.seqs.lock().unwrap();
                    for (n, x) in s.frames[i..i + run].iter().enumerate() {
                        let want = recorded_frame(x);
                        let differences = |g: &Frame| {
                            let (mut scratch, mut d) = (seqs.clone(), Vec::new());
                            compare_frames(&want, g, &mut scratch, &mut d);
                            d.len()
                        };
                        let best = (0..got.len()).min_by_key(|&j| differences(&got[j])).unwrap_or(0);
                        let g = got.remove(best);
                        let mut d = Vec::new();
                        check(&ctx, l, &want, &g, &mut seqs, &mut d);
                        let at = format!("{} #{} ({} ms)", s.file, i + n, x["t_ms"]);
                        problems.extend(d.into_iter().map(|p| format!("{at}: {p}")));
                    }
                    prev_t = s.frames[i + run - 1]["t_ms"].as_f64().unwrap_or(t);
                    i += run;
                    continue;
                }
                if !expect(&ctx, l, &want, ctx.patience, &mut out).await {
                    problems.extend(out.into_iter().map(|p| format!("{at}: {p}")));
                    return problems;
                }
                if l.closed {
                    expect_end(l, &mut out).await;
                }
            }
            other => out.push(format!("unknown entry {other:?}")),
        }
        problems.extend(out.into_iter().map(|p| format!("{at}: {p}")));
        prev_t = t;
        i += 1;
    }
    problems
}

/// The rest of a session that only waits for the server.
async fn tail(ctx: Arc<Ctx>, file: String, first: usize, rest: Vec<Value>, mut link: Link) -> Vec<String> {
    let mut problems = Vec::new();
    for (n, f) in rest.iter().enumerate() {
        if f["dir"] != "recv" {
            continue;
        }
        let at = format!("{file} #{} ({} ms)", first + n, f["t_ms"]);
        let mut out = Vec::new();
        let wait = ctx.idle_timeout.1.max(ctx.auth_timeout.1) + Duration::from_secs(2);
        let go_on = expect(&ctx, &mut link, &recorded_frame(f), wait, &mut out).await;
        if go_on && link.closed {
            expect_end(&mut link, &mut out).await;
        }
        problems.extend(out.into_iter().map(|p| format!("{at}: {p}")));
        if !go_on {
            break;
        }
    }
    problems
}

/// The HTTP samples' requests, replayed to rebuild the recording's state.
async fn setup(ctx: &Ctx) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, v) in samples::files("http_") {
        // `captured_at` is the end: each exchange was sent when the
        // later ones' times before it.
        let exchanges = v["exchanges"].as_array().cloned().unwrap_or_default();
        let elapsed = |e: &Value| e["elapsed_ms"].as_f64().unwrap_or(0.0);
        let mut at =
            unix_ms_of(v["captured_at"].as_str().unwrap_or_default()) - exchanges.iter().map(elapsed).sum::<f64>();
        for (n, e) in exchanges.iter().enumerate() {
            let sent_at = at;
            at += elapsed(e);
            if let Some(p) = http_frame(ctx, e, sent_at).await {
                problems.push(format!("setup {file}#{n}: {p}"));
            }
        }
    }
    problems
}

/// Every recorded session against one target; every difference found.
async fn replay_all(target: Target) -> (Vec<String>, Vec<String>) {
    let main = Ctx::new(&target, &target.addr);
    let mut problems = setup(&main).await;
    let mut files = Vec::new();
    for (file, v) in samples::files("ws_") {
        files.push(file.clone());
        let session = Session::of(&file, &v);
        problems.extend(replay_session(main.clone(), &session).await);
    }
    let extra = samples::extra_files();
    assert!(extra.len() >= 7, "expected the hand-written sessions, found {extra:?}");
    for (file, v) in extra {
        let session = Session::of(&format!("samples/extra/{file}"), &v);
        problems.extend(replay_session(main.clone(), &session).await);
    }
    let fresh = Ctx::new(&target, &target.fresh_addr);
    for (file, v) in samples::files("expiry_") {
        files.push(file.clone());
        let session = Session::of(&file, &v);
        problems.extend(replay_session(fresh.clone(), &session).await);
    }
    for ctx in [main, fresh] {
        let tails: Vec<_> = ctx.tails.lock().unwrap().drain(..).collect();
        for t in tails {
            problems.extend(
                t.await
                    .unwrap_or_else(|e| vec![format!("a waiting session panicked: {e}")]),
            );
        }
    }
    assert!(files.len() >= 19, "expected the WebSocket samples, found {files:?}");
    (files, problems)
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_owned()
}

fn report(target: &str, files: &[String], problems: &[String]) -> String {
    format!(
        "{} differences from the recordings on the {target} ({} sessions):\n{}",
        problems.len(),
        files.len(),
        problems.join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recorded_ws_session_replays_on_the_kit() {
    let builder = TestServer::builder()
        .token_lifetime(Duration::from_secs(24 * 3600))
        .ws_idle_timeout(KIT_IDLE);
    let kit = builder.clone().start().await;
    let fresh = builder.start().await;
    let (files, problems) = replay_all(Target::kit(host_port(&kit.url()), host_port(&fresh.url()))).await;
    assert!(problems.is_empty(), "{}", report("kit", &files, &problems));
    kit.shutdown().await;
    fresh.shutdown().await;
}

/// The same replay against the real server: it must agree with its own
/// recordings (a guard for the replay itself).
///
/// A real-server test: `.ci/run` runs it (`--ignored`), and without the real
/// server (see `kalam_testkit::real`) it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real KalamDB server (../shared/kalamdb-server): cargo test -p kalam-testkit --test ws_replay -- --ignored"]
async fn every_recorded_ws_session_replays_on_the_real_server() {
    let real = RealServer::start();
    let fresh = RealServer::start();
    let (files, problems) = replay_all(Target::real(host_port(&real.url()), host_port(&fresh.url()))).await;
    assert!(problems.is_empty(), "{}", report("real server", &files, &problems));
}
