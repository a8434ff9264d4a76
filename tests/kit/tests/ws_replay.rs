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
//! Beside the recordings, a few sessions are written here in the same
//! format from what the real server was seen to do (upgrade-header
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
use kalam_testkit::{Claims, DEFAULT_JWT_SECRET, RealServer, TestServer, sign_jwt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

mod samples;
use samples::{remint, remint_header, unix_ms_of, unix_now_ms};

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

/// Sessions written here in the recordings' format, from what the real
/// server was seen to do (and checked against it with the recordings):
/// the protocol an upgrade-header authentication reports when the query
/// string names none, and MessagePack chosen in the query string.
fn extra_sessions() -> Vec<Session> {
    let now = unix_now_ms();
    let token = sign_jwt(
        DEFAULT_JWT_SECRET,
        &Claims {
            sub: "root".into(),
            iss: "kalamdb".into(),
            exp: (now / 1000.0) as u64 + 3600,
            iat: (now / 1000.0) as u64,
            email: Some("root@localhost".into()),
            role: "system".into(),
            token_type: "access".into(),
        },
    );
    let upgrade = |t: f64, path: &str| {
        json!({"dir": "handshake", "t_ms": t, "request": {"method": "GET", "path": path, "headers": {
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13", "Authorization": format!("Bearer {token}")}},
            "response": {"status": 101}})
    };
    let text = |t: f64, dir: &str, v: Value| json!({"dir": dir, "t_ms": t, "opcode": "text", "text": v.to_string()});
    let close =
        |t: f64, dir: &str| json!({"dir": dir, "t_ms": t, "opcode": "close", "close": {"code": 1000, "reason": ""}});
    let success = |serialization: &str| {
        json!({"type": "auth_success", "user": "root", "role": "system",
            "protocol": {"serialization": serialization, "compression": "gzip"}})
    };
    // Row 1 of demo.live_items, as the recordings last saw it.
    let control =
        json!({"batch_num": 0, "has_more": false, "status": "ready", "last_seq_id": 382_978_040_937_680_896_u64});
    let flags = |f: &[&str]| json!(f);
    let schema = json!([
        {"name": "id", "data_type": "BigInt", "index": 0, "flags": flags(&["pk", "nn", "uq"])},
        {"name": "name", "data_type": "Text", "index": 1, "flags": flags(&["nn"])},
        {"name": "qty", "data_type": "Int", "index": 2},
        {"name": "note", "data_type": "Text", "index": 3},
        {"name": "_seq", "data_type": "BigInt", "index": 4, "flags": flags(&["nn"])},
        {"name": "_deleted", "data_type": "Boolean", "index": 5, "flags": flags(&["nn"])},
    ]);
    let msgpack = |t: f64, v: Value| json!({"dir": "recv", "t_ms": t, "opcode": "binary", "decoded": {"encoding": "msgpack", "json": v}});
    let frames = vec![
        upgrade(0.0, "/v1/ws"),
        text(1.0, "recv", success("json")),
        close(2.0, "send"),
        close(3.0, "recv"),
        upgrade(10.0, "/v1/ws?compress=false"),
        text(11.0, "recv", success("json")),
        close(12.0, "send"),
        close(13.0, "recv"),
        upgrade(20.0, "/v1/ws?serialization=msgpack"),
        text(21.0, "recv", success("msgpack")),
        text(
            22.0,
            "send",
            json!({"type": "subscribe", "subscription": {"id": "hdr_mp", "sql": "SELECT * FROM demo.live_items WHERE id = 1", "options": {}}}),
        ),
        msgpack(
            23.0,
            json!({"type": "subscription_ack", "subscription_id": "hdr_mp", "total_rows": 0, "batch_control": control, "schema": schema}),
        ),
        msgpack(
            24.0,
            json!({"type": "initial_data_batch", "subscription_id": "hdr_mp", "rows": [
                {"id": "1", "name": "apple", "qty": 3, "note": null, "_seq": "382978040937680896", "_deleted": false}
            ], "batch_control": control}),
        ),
        close(25.0, "send"),
        close(26.0, "recv"),
    ];
    let header = Session {
        file: "(written here) header authentication defaults".into(),
        frames,
        start_ms: now,
    };

    // Changes seen through a column list (PROTOCOL §4.5): the key is added
    // to an update's rows and old values, an update of a column outside
    // the list still comes, with the key and `_seq` alone as old values,
    // and a delete has the listed columns and `_seq` (no key, no
    // `_deleted`). A table of its own: the `websockets` library session's
    // subscription to demo.live_items is still open.
    let sql = |t: f64, statement: &str| {
        json!({"dir": "http", "t_ms": t, "label": statement, "exchange": {
            "request": {"method": "POST", "path": "/v1/api/sql",
                "headers": {"Content-Type": "application/json", "Authorization": format!("Bearer {token}")},
                "body_raw": json!({"sql": statement}).to_string()},
            "response": {"status": 200, "body_raw": r#"{"status":"success"}"#}}})
    };
    let change = |t: f64, kind: &str, rows: Value, old: Value| {
        let mut v = json!({"type": "change", "subscription_id": "cols", "change_type": kind});
        if !rows.is_null() {
            v["rows"] = rows;
        }
        if !old.is_null() {
            v["old_values"] = old;
        }
        text(t, "recv", v)
    };
    let frames = vec![
        sql(
            0.0,
            "CREATE TABLE demo.col_items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, qty INT, note TEXT) WITH (TYPE = 'USER')",
        ),
        sql(0.0, "INSERT INTO demo.col_items (id, name, qty) VALUES (1, 'apple', 3)"),
        json!({"dir": "handshake", "t_ms": 0.0, "request": {"method": "GET", "path": "/v1/ws?compress=false", "headers": {
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13"}}, "response": {"status": 101}}),
        text(
            1.0,
            "send",
            json!({"type": "authenticate", "method": "jwt", "token": token, "protocol": {"serialization": "json", "compression": "none"}}),
        ),
        text(
            2.0,
            "recv",
            json!({"type": "auth_success", "user": "root", "role": "system", "protocol": {"serialization": "json", "compression": "none"}}),
        ),
        text(
            3.0,
            "send",
            json!({"type": "subscribe", "subscription": {"id": "cols", "sql": "SELECT name, qty FROM demo.col_items WHERE id = 1"}}),
        ),
        text(
            4.0,
            "recv",
            json!({"type": "subscription_ack", "subscription_id": "cols", "total_rows": 0,
            "batch_control": {"batch_num": 0, "has_more": false, "status": "ready", "last_seq_id": null},
            "schema": [
                {"name": "name", "data_type": "Text", "index": 0, "flags": flags(&["nn"])},
                {"name": "qty", "data_type": "Int", "index": 1},
            ]}),
        ),
        sql(5.0, "UPDATE demo.col_items SET qty = 4 WHERE id = 1"),
        change(
            6.0,
            "update",
            json!([{"name": "apple", "qty": 4, "id": "1", "_seq": "1000000000000000001"}]),
            json!([{"qty": 3, "id": "1", "_seq": "1000000000000000000"}]),
        ),
        sql(7.0, "UPDATE demo.col_items SET note = 'n' WHERE id = 1"),
        change(
            8.0,
            "update",
            json!([{"name": "apple", "qty": 4, "id": "1", "_seq": "1000000000000000002"}]),
            json!([{"id": "1", "_seq": "1000000000000000001"}]),
        ),
        sql(9.0, "DELETE FROM demo.col_items WHERE id = 1"),
        change(
            10.0,
            "delete",
            Value::Null,
            json!([{"name": "apple", "qty": 4, "_seq": "1000000000000000003"}]),
        ),
        close(11.0, "send"),
        close(12.0, "recv"),
    ];
    let columns = Session {
        file: "(written here) changes through a column list".into(),
        frames,
        start_ms: now,
    };

    // MessagePack on the default (gzip) path: large messages are
    // gzip(MessagePack); the rows are the recorded ones of demo.docs.
    let recorded = samples::files("ws_protocol_compression_none_on_default_path.json");
    let recorded = &recorded.first().expect("the compression sample").1["frames"];
    let as_docs_mp = |v: &Value| {
        let mut v = v.clone();
        v["subscription_id"] = json!("docs_mp");
        v
    };
    let ack = serde_json::from_str::<Value>(recorded[4]["text"].as_str().unwrap_or_default()).unwrap_or_default();
    let batch = &recorded[5]["decoded"]["json"];
    let packed = |t: f64, gzip: bool, v: Value| {
        let mut decoded = json!({"encoding": "msgpack", "json": v});
        if gzip {
            decoded["compression"] = json!("gzip");
        }
        json!({"dir": "recv", "t_ms": t, "opcode": "binary", "decoded": decoded})
    };
    // Paging edge cases on demo.many (rows 1 to 7 and 100): a `next_batch`
    // without `last_seq_id` starts again from the first row; one for a
    // subscription without initial data is refused.
    let many = |t: f64, id: &str, rows: Value, n: u32, more: bool, last: &str| {
        let status = match (more, n) {
            (false, _) => "ready",
            (true, 0) => "loading",
            (true, _) => "loading_batch",
        };
        let control = json!({"batch_num": n, "has_more": more, "status": status, "last_seq_id": last.parse::<u64>().unwrap_or(0)});
        text(
            t,
            "recv",
            json!({"type": "initial_data_batch", "subscription_id": id, "rows": rows, "batch_control": control}),
        )
    };
    let many_rows = json!([
        {"id": "1", "v": "v1", "_seq": "382978087716753408", "_deleted": false},
        {"id": "2", "v": "v2", "_seq": "382978087716753409", "_deleted": false},
    ]);
    let many_schema = json!([
        {"name": "id", "data_type": "BigInt", "index": 0, "flags": flags(&["pk", "nn", "uq"])},
        {"name": "v", "data_type": "Text", "index": 1},
        {"name": "_seq", "data_type": "BigInt", "index": 2, "flags": flags(&["nn"])},
        {"name": "_deleted", "data_type": "Boolean", "index": 3, "flags": flags(&["nn"])},
    ]);
    let frames = vec![
        upgrade(0.0, "/v1/ws?serialization=msgpack"),
        text(1.0, "recv", success("msgpack")),
        text(
            2.0,
            "send",
            json!({"type": "subscribe", "subscription": {"id": "docs_mp", "sql": "SELECT * FROM demo.docs", "options": {}}}),
        ),
        packed(3.0, false, as_docs_mp(&ack)),
        packed(4.0, true, as_docs_mp(batch)),
        close(5.0, "send"),
        close(6.0, "recv"),
        upgrade(10.0, "/v1/ws?compress=false&serialization=json&compression=none"),
        text(
            11.0,
            "recv",
            json!({"type": "auth_success", "user": "root", "role": "system", "protocol": {"serialization": "json", "compression": "none"}}),
        ),
        text(
            12.0,
            "send",
            json!({"type": "subscribe", "subscription": {"id": "pg", "sql": "SELECT * FROM demo.many", "options": {"batch_size": 2}}}),
        ),
        text(
            13.0,
            "recv",
            json!({"type": "subscription_ack", "subscription_id": "pg", "total_rows": 0,
                "batch_control": {"batch_num": 0, "has_more": true, "status": "loading", "last_seq_id": 382_978_087_716_753_409_u64},
                "schema": many_schema}),
        ),
        many(14.0, "pg", many_rows.clone(), 0, true, "382978087716753409"),
        text(15.0, "send", json!({"type": "next_batch", "subscription_id": "pg"})),
        many(16.0, "pg", many_rows, 1, true, "382978087716753409"),
        text(
            17.0,
            "send",
            json!({"type": "subscribe", "subscription": {"id": "live_only", "sql": "SELECT * FROM demo.many"}}),
        ),
        text(
            18.0,
            "recv",
            json!({"type": "subscription_ack", "subscription_id": "live_only", "total_rows": 0,
                "batch_control": {"batch_num": 0, "has_more": false, "status": "ready", "last_seq_id": null},
                "schema": many_schema}),
        ),
        text(
            19.0,
            "send",
            json!({"type": "next_batch", "subscription_id": "live_only", "last_seq_id": 382_978_087_716_753_409_u64}),
        ),
        text(
            20.0,
            "recv",
            json!({"type": "error", "subscription_id": "live_only", "code": "BATCH_FETCH_FAILED",
                "message": "Invalid operation: Subscription live_only was created without initial data loading"}),
        ),
        close(21.0, "send"),
        close(22.0, "recv"),
    ];
    let paging = Session {
        file: "(written here) MessagePack with gzip, and paging edge cases".into(),
        frames,
        start_ms: now,
    };

    // Messages the server cannot take close the connection with 1011 and
    // the parser's words (PROTOCOL §4.4).
    let plain = |t: f64| {
        json!({"dir": "handshake", "t_ms": t, "request": {"method": "GET", "path": "/v1/ws?compress=false", "headers": {
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13"}}, "response": {"status": 101}})
    };
    let authenticate = json!({"type": "authenticate", "method": "jwt", "token": token, "protocol": {"serialization": "json", "compression": "none"}});
    let authenticated = json!({"type": "auth_success", "user": "root", "role": "system", "protocol": {"serialization": "json", "compression": "none"}});
    let closed = |t: f64, reason: &str| json!({"dir": "recv", "t_ms": t, "opcode": "close", "close": {"code": 1011, "reason": reason}});
    let mut frames = vec![
        plain(0.0),
        json!({"dir": "send", "t_ms": 1.0, "opcode": "text", "text": "{garbage"}),
        closed(2.0, "Invalid message: key must be a string at line 1 column 2"),
    ];
    for (n, (message, reason)) in [
        (json!({"type": "subscribe"}), "Invalid message: missing field `subscription`"),
        (
            json!({"type": "next_batch", "subscription_id": "x", "last_seq_id": "12"}),
            "Invalid message: invalid type: string \"12\", expected i64",
        ),
        (
            json!({"type": "subscribe", "subscription": {"id": "f", "sql": "SELECT * FROM demo.many", "options": {"from": "12"}}}),
            "Invalid message: invalid type: string \"12\", expected i64",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let t = 10.0 * (n + 1) as f64;
        frames.extend([
            plain(t),
            text(t + 1.0, "send", authenticate.clone()),
            text(t + 2.0, "recv", authenticated.clone()),
            text(t + 3.0, "send", message),
            closed(t + 4.0, reason),
        ]);
    }
    let unparsable = Session {
        file: "(written here) messages the server cannot take".into(),
        frames,
        start_ms: now,
    };

    // The filter is checked against the new row (PROTOCOL §4.6): a row
    // that enters it comes as an update, one that leaves it not at all.
    let filt = |t: f64, kind: &str, rows: Value, old: Value| {
        let mut v = json!({"type": "change", "subscription_id": "filt", "change_type": kind});
        if !rows.is_null() {
            v["rows"] = rows;
        }
        if !old.is_null() {
            v["old_values"] = old;
        }
        text(t, "recv", v)
    };
    let frames = vec![
        sql(
            0.0,
            "CREATE TABLE demo.filt (id BIGINT PRIMARY KEY, qty INT) WITH (TYPE = 'USER')",
        ),
        sql(0.0, "INSERT INTO demo.filt (id, qty) VALUES (1, 1)"),
        plain(1.0),
        text(2.0, "send", authenticate.clone()),
        text(3.0, "recv", authenticated.clone()),
        text(
            4.0,
            "send",
            json!({"type": "subscribe", "subscription": {"id": "filt", "sql": "SELECT * FROM demo.filt WHERE qty > 5"}}),
        ),
        text(
            5.0,
            "recv",
            json!({"type": "subscription_ack", "subscription_id": "filt", "total_rows": 0,
            "batch_control": {"batch_num": 0, "has_more": false, "status": "ready", "last_seq_id": null},
            "schema": [
                {"name": "id", "data_type": "BigInt", "index": 0, "flags": flags(&["pk", "nn", "uq"])},
                {"name": "qty", "data_type": "Int", "index": 1},
                {"name": "_seq", "data_type": "BigInt", "index": 2, "flags": flags(&["nn"])},
                {"name": "_deleted", "data_type": "Boolean", "index": 3, "flags": flags(&["nn"])},
            ]}),
        ),
        sql(6.0, "UPDATE demo.filt SET qty = 10 WHERE id = 1"),
        filt(
            7.0,
            "update",
            json!([{"id": "1", "qty": 10, "_seq": "1100000000000000001"}]),
            json!([{"id": "1", "qty": 1, "_seq": "1100000000000000000"}]),
        ),
        sql(8.0, "UPDATE demo.filt SET qty = 2 WHERE id = 1"),
        sql(9.0, "INSERT INTO demo.filt (id, qty) VALUES (2, 50)"),
        filt(
            10.0,
            "insert",
            json!([{"id": "2", "qty": 50, "_seq": "1100000000000000003", "_deleted": false}]),
            Value::Null,
        ),
        sql(11.0, "DELETE FROM demo.filt WHERE id = 2"),
        filt(
            12.0,
            "delete",
            Value::Null,
            json!([{"id": "2", "qty": 50, "_seq": "1100000000000000004", "_deleted": true}]),
        ),
        close(13.0, "send"),
        close(14.0, "recv"),
    ];
    let filters = Session {
        file: "(written here) rows entering and leaving a filter".into(),
        frames,
        start_ms: now,
    };

    // A change committed while the initial data is still being paged
    // (PROTOCOL §4.6 step 3).
    let load = |t: f64, rows: Value, n: u32, more: bool, last: &str| {
        let status = match (more, n) {
            (false, _) => "ready",
            (true, 0) => "loading",
            (true, _) => "loading_batch",
        };
        let control = json!({"batch_num": n, "has_more": more, "status": status, "last_seq_id": last.parse::<u64>().unwrap_or(0)});
        text(
            t,
            "recv",
            json!({"type": "initial_data_batch", "subscription_id": "load", "rows": rows, "batch_control": control}),
        )
    };
    let row = |id: &str, seq: &str| json!({"id": id, "qty": 1, "_seq": seq, "_deleted": false});
    let frames = vec![
        sql(
            0.0,
            "CREATE TABLE demo.load (id BIGINT PRIMARY KEY, qty INT) WITH (TYPE = 'USER')",
        ),
        sql(0.0, "INSERT INTO demo.load (id, qty) VALUES (1, 1), (2, 1), (3, 1)"),
        plain(1.0),
        text(2.0, "send", authenticate.clone()),
        text(3.0, "recv", authenticated.clone()),
        text(
            4.0,
            "send",
            json!({"type": "subscribe", "subscription": {"id": "load", "sql": "SELECT * FROM demo.load", "options": {"batch_size": 2}}}),
        ),
        text(
            5.0,
            "recv",
            json!({"type": "subscription_ack", "subscription_id": "load", "total_rows": 0,
            "batch_control": {"batch_num": 0, "has_more": true, "status": "loading", "last_seq_id": 1_200_000_000_000_000_001_u64},
            "schema": [
                {"name": "id", "data_type": "BigInt", "index": 0, "flags": flags(&["pk", "nn", "uq"])},
                {"name": "qty", "data_type": "Int", "index": 1},
                {"name": "_seq", "data_type": "BigInt", "index": 2, "flags": flags(&["nn"])},
                {"name": "_deleted", "data_type": "Boolean", "index": 3, "flags": flags(&["nn"])},
            ]}),
        ),
        load(
            6.0,
            json!([row("1", "1200000000000000000"), row("2", "1200000000000000001")]),
            0,
            true,
            "1200000000000000001",
        ),
        sql(7.0, "INSERT INTO demo.load (id, qty) VALUES (4, 1)"),
        text(
            8.0,
            "send",
            json!({"type": "next_batch", "subscription_id": "load", "last_seq_id": 1_200_000_000_000_000_001_u64}),
        ),
        // The pages end where the table stood at the subscribe; the row
        // inserted since comes as a change right after the last page.
        load(
            9.0,
            json!([row("3", "1200000000000000002")]),
            1,
            false,
            "1200000000000000002",
        ),
        text(
            10.0,
            "recv",
            json!({"type": "change", "subscription_id": "load", "change_type": "insert", "rows": [row("4", "1200000000000000003")]}),
        ),
        sql(11.0, "INSERT INTO demo.load (id, qty) VALUES (5, 1)"),
        text(
            12.0,
            "recv",
            json!({"type": "change", "subscription_id": "load", "change_type": "insert", "rows": [row("5", "1200000000000000004")]}),
        ),
        close(13.0, "send"),
        close(14.0, "recv"),
    ];
    let loading = Session {
        file: "(written here) a change during the initial load".into(),
        frames,
        start_ms: now,
    };

    // Rows updated while the initial data is paged: one already sent, one
    // not yet. Neither is in a later page; both come as updates after the
    // last one.
    let load2 = |t: f64, rows: Value, n: u32, more: bool, last: &str| {
        let status = if more { "loading" } else { "ready" };
        let control = json!({"batch_num": n, "has_more": more, "status": status, "last_seq_id": last.parse::<u64>().unwrap_or(0)});
        text(
            t,
            "recv",
            json!({"type": "initial_data_batch", "subscription_id": "load2", "rows": rows, "batch_control": control}),
        )
    };
    let row2 = |id: &str, qty: i64, seq: &str| json!({"id": id, "qty": qty, "_seq": seq, "_deleted": false});
    let update = |t: f64, id: &str, new_seq: &str, old_seq: &str| {
        text(
            t,
            "recv",
            json!({"type": "change", "subscription_id": "load2", "change_type": "update",
                "rows": [{"id": id, "qty": 2, "_seq": new_seq}], "old_values": [{"id": id, "qty": 1, "_seq": old_seq}]}),
        )
    };
    let frames = vec![
        sql(
            0.0,
            "CREATE TABLE demo.load2 (id BIGINT PRIMARY KEY, qty INT) WITH (TYPE = 'USER')",
        ),
        sql(0.0, "INSERT INTO demo.load2 (id, qty) VALUES (1, 1), (2, 1), (3, 1)"),
        plain(1.0),
        text(2.0, "send", authenticate.clone()),
        text(3.0, "recv", authenticated.clone()),
        text(
            4.0,
            "send",
            json!({"type": "subscribe", "subscription": {"id": "load2", "sql": "SELECT * FROM demo.load2", "options": {"batch_size": 1}}}),
        ),
        text(
            5.0,
            "recv",
            json!({"type": "subscription_ack", "subscription_id": "load2", "total_rows": 0,
            "batch_control": {"batch_num": 0, "has_more": true, "status": "loading", "last_seq_id": 1_300_000_000_000_000_000_u64},
            "schema": [
                {"name": "id", "data_type": "BigInt", "index": 0, "flags": flags(&["pk", "nn", "uq"])},
                {"name": "qty", "data_type": "Int", "index": 1},
                {"name": "_seq", "data_type": "BigInt", "index": 2, "flags": flags(&["nn"])},
                {"name": "_deleted", "data_type": "Boolean", "index": 3, "flags": flags(&["nn"])},
            ]}),
        ),
        load2(
            6.0,
            json!([row2("1", 1, "1300000000000000000")]),
            0,
            true,
            "1300000000000000000",
        ),
        sql(7.0, "UPDATE demo.load2 SET qty = 2 WHERE id <= 2"),
        text(
            8.0,
            "send",
            json!({"type": "next_batch", "subscription_id": "load2", "last_seq_id": 1_300_000_000_000_000_000_u64}),
        ),
        load2(
            9.0,
            json!([row2("3", 1, "1300000000000000002")]),
            1,
            false,
            "1300000000000000002",
        ),
        update(10.0, "1", "1300000000000000003", "1300000000000000000"),
        update(11.0, "2", "1300000000000000004", "1300000000000000001"),
        close(12.0, "send"),
        close(13.0, "recv"),
    ];
    let updated = Session {
        file: "(written here) rows updated during the initial load".into(),
        frames,
        start_ms: now,
    };
    vec![header, columns, paging, unparsable, filters, loading, updated]
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
    for session in extra_sessions() {
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
