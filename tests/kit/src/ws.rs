//! The WebSocket side: `GET /v1/ws` live queries (PROTOCOL §4).
//!
//! Checked frame by frame against every recorded WebSocket session of
//! `../shared/wire-samples` by `tests/kit/tests/ws_replay.rs` (which runs the
//! same replay against the real server in CI). What the kit does as the
//! server does: both ways of authenticating (the upgrade's `Authorization`
//! header, with the protocol from the query string, or the first message),
//! the generic `auth_error` and close 1008, the auth and heartbeat timeouts,
//! JSON or MessagePack serialization (`auth_success`, `auth_error` and
//! `error` stay JSON text), gzip of messages of 512 bytes and more unless
//! `?compress=false`, control pongs, the echo of a client's close frame,
//! close 1011 for a message it cannot parse, initial-data pages
//! (`batch_size`, `next_batch`, `last_rows`, `from`, chosen by `_seq` and
//! sent in key order, see `sql::live`), one `change` frame per row (an
//! update with the key and `_seq` in both images; the filter checked
//! against the new row), the server's error and close texts, the per-user
//! subscription limit and the message rate limit.
//!
//! Deliberate differences from the real server: see the crate docs
//! ("Where the kit differs from the server on purpose").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{AUTHORIZATION, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::http::KitBody;
use crate::sql::{Change, LivePage, live_schema, project};
use crate::{State, jwt};

/// Server → client messages of this size and more are gzipped when
/// compression is on.
const GZIP_THRESHOLD: usize = 512;
/// How long an unauthenticated socket may stay silent.
const AUTH_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) async fn upgrade(req: Request<Incoming>, state: Arc<State>) -> Response<KitBody> {
    let is_upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned().filter(|_| is_upgrade) else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(KitBody::full(Bytes::from_static(b"WebSocket upgrade expected")))
            .unwrap_or_default();
    };
    let query = req.uri().query().unwrap_or("").to_ascii_lowercase();
    let compress = !query.split('&').any(|kv| kv == "compress=false");
    // Read only when authenticating with the upgrade's header.
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let header_protocol = json!({
        "serialization": param("serialization").unwrap_or_else(|| "json".into()),
        // `gzip` unless the query says otherwise, even with
        // `?compress=false` (which alone decides compression).
        "compression": param("compression").unwrap_or_else(|| "gzip".into()),
    });
    let header_token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    state.count(|c| c.ws_upgrades += 1);
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            let header_auth = header_token.map(|t| (t, header_protocol));
            Session::new(state, compress).run(ws, header_auth).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "Upgrade")
        .header(SEC_WEBSOCKET_ACCEPT, accept)
        .body(KitBody::full(Bytes::new()))
        .unwrap_or_default()
}

struct Sub {
    table: String,
    columns: Vec<String>,
    /// The table's primary-key columns.
    keys: Vec<String>,
    where_sql: Option<String>,
    batch_size: usize,
    /// Subscribed with `options`: it has initial data to page through.
    initial: bool,
    /// The number of the last initial-data batch sent.
    batch_num: u32,
    /// Initial data still being paged: changes wait here.
    loading: bool,
    /// Change notifications that matched it (for the dropping setting).
    notified: u64,
    /// Where the initial data ends: the table's highest `_seq` when the
    /// subscription was made. Pages stop there; changes after it wait in
    /// `buffered` until the last page is sent.
    snapshot_seq: i64,
    buffered: Vec<Arc<Change>>,
    /// Changes are numbered in commit order as this session receives them;
    /// the subscription sees only those numbered above this (committed
    /// after it was registered), whatever order the session's loop happens
    /// to take frames and changes in.
    after: u64,
}

/// The server's per-connection message rate limit: a token bucket with
/// continuous refill, as the server's `TokenBucket` (refills only after at
/// least 10 ms, whole tokens, and the remainder is lost).
struct Bucket {
    capacity: u32,
    tokens: u32,
    per_sec: f64,
    last_refill: Instant,
}

impl Bucket {
    fn new(per_sec: u32) -> Self {
        Bucket {
            capacity: per_sec,
            tokens: per_sec,
            per_sec: f64::from(per_sec),
            last_refill: Instant::now(),
        }
    }

    fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last_refill);
        if elapsed >= Duration::from_millis(10) {
            let add = (self.per_sec * elapsed.as_secs_f64()) as u32;
            if add > 0 {
                self.tokens = self.capacity.min(self.tokens.saturating_add(add));
                self.last_refill = now;
            }
        }
        if self.tokens >= 1 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

struct Session {
    state: Arc<State>,
    compress: bool,
    user: Option<(String, String)>,
    /// The protocol object of the first `auth_success`.
    protocol: Value,
    /// `protocol.serialization` was `msgpack`.
    msgpack: bool,
    subs: BTreeMap<String, Sub>,
    held: Vec<Message>,
    bucket: Bucket,
    /// Changes taken from the broadcast so far (the number of the last one).
    received: u64,
}

enum Step {
    Continue,
    Close(u16, String),
    /// The client closed: answer with its own close frame, then end.
    Echo,
    Drop,
}

impl Session {
    fn new(state: Arc<State>, compress: bool) -> Self {
        let bucket = Bucket::new(state.ws.limits.max_messages_per_sec);
        Session {
            state,
            compress,
            user: None,
            protocol: Value::Null,
            msgpack: false,
            subs: BTreeMap::new(),
            held: Vec::new(),
            bucket,
            received: 0,
        }
    }

    async fn run(
        mut self,
        ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
        header_auth: Option<(String, Value)>,
    ) {
        self.state.open_sockets.fetch_add(1, Ordering::SeqCst);
        let (mut sink, mut stream) = ws.split();
        let mut out: Vec<Message> = Vec::new();
        let mut changes = self.state.changes.subscribe();
        let mut drops = self.state.ws.drop_generation.subscribe();
        let mut malformed = self.state.ws.malformed_generation.subscribe();
        let mut stall = self.state.ws.stall.subscribe();
        drops.borrow_and_update();
        malformed.borrow_and_update();
        let idle = self
            .state
            .ws
            .idle_timeout
            .lock()
            .map(|d| *d)
            .unwrap_or(Duration::from_secs(10));
        let opened = Instant::now();
        let mut last_heard = Instant::now();
        let mut step = Step::Continue;
        if let Some((token, protocol)) = header_auth {
            step = self.authenticate(&token, protocol, &mut out);
        }
        loop {
            // Send what is due, unless stalled.
            if !*stall.borrow() {
                let pending: Vec<Message> = self.held.drain(..).chain(out.drain(..)).collect();
                for m in pending {
                    if sink.send(m).await.is_err() {
                        step = Step::Drop;
                        break;
                    }
                }
            } else {
                self.held.append(&mut out);
            }
            match std::mem::replace(&mut step, Step::Continue) {
                Step::Continue => {}
                Step::Drop => break,
                Step::Echo => {
                    // The library has queued the echo of the client's close
                    // frame (same code and reason); closing flushes it.
                    let _ = sink.close().await;
                    break;
                }
                Step::Close(code, reason) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.into(),
                        })))
                        .await;
                    break;
                }
            }
            let deadline = if self.user.is_some() {
                last_heard + idle
            } else {
                (opened + AUTH_TIMEOUT).min(last_heard + idle)
            };
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(m)) => {
                        last_heard = Instant::now();
                        step = self.on_frame(m, &mut out, &changes);
                    }
                    _ => break,
                },
                change = changes.recv() => match change {
                    Ok(c) => self.on_change(&c, &mut out),
                    Err(RecvError::Lagged(n)) => self.received += n,
                    Err(RecvError::Closed) => break,
                },
                _ = drops.changed() => break, // dropped without a close frame
                _ = malformed.changed() => out.push(Message::Text("{this is not json".into())),
                _ = stall.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    if self.user.is_none() && Instant::now() >= opened + AUTH_TIMEOUT {
                        self.push(&mut out, json!({"type": "auth_error", "message": "Authentication timeout - no auth message received within 3 seconds"}));
                        step = Step::Close(1008, "Authentication timeout".into());
                    } else {
                        step = Step::Close(1000, "Heartbeat timeout".into());
                    }
                }
            }
        }
        // Closing the socket frees the slots of the subscriptions on it.
        self.release_slots(self.subs.len());
        self.state.open_sockets.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether `user` may register one more subscription.
    fn slot_free(&self, user: &str) -> bool {
        let limit = self.state.ws.limits.max_subscriptions_per_user;
        self.state
            .ws
            .subscriptions
            .lock()
            .map(|s| s.get(user).copied().unwrap_or(0) < limit)
            .unwrap_or(true)
    }

    /// A subscription was registered: it takes a slot of the user.
    fn take_slot(&self, user: &str) {
        if let Ok(mut slots) = self.state.ws.subscriptions.lock() {
            *slots.entry(user.to_owned()).or_insert(0) += 1;
        }
    }

    /// Gives back `n` slots of this session's user (never below zero).
    fn release_slots(&self, n: usize) {
        let Some((user, _)) = &self.user else { return };
        if let Ok(mut slots) = self.state.ws.subscriptions.lock()
            && let Some(taken) = slots.get_mut(user)
        {
            *taken = taken.saturating_sub(n);
        }
    }

    /// Queues a message: JSON text, or gzip binary when large and
    /// compression is on; in MessagePack mode every message but
    /// `auth_success`, `auth_error` and `error` is binary MessagePack
    /// (gzipped when large and compression is on).
    fn push(&self, out: &mut Vec<Message>, v: Value) {
        let json_only = matches!(v["type"].as_str(), Some("auth_success" | "auth_error" | "error"));
        if self.msgpack
            && !json_only
            && let Ok(packed) = rmp_serde::to_vec(&v)
        {
            let packed = if self.compress && packed.len() >= GZIP_THRESHOLD {
                gzip(&packed)
            } else {
                packed
            };
            out.push(Message::Binary(packed.into()));
            return;
        }
        let text = v.to_string();
        if self.compress && text.len() >= GZIP_THRESHOLD {
            out.push(Message::Binary(gzip(text.as_bytes()).into()));
        } else {
            out.push(Message::Text(text.into()));
        }
    }

    fn authenticate(&mut self, token: &str, protocol: Value, out: &mut Vec<Message>) -> Step {
        if self.user.is_some() {
            // A second authenticate repeats the first answer; its token is
            // not even checked.
            let (user, role) = self.user.clone().unwrap_or_default();
            let protocol = self.protocol.clone();
            self.push(
                out,
                json!({"type": "auth_success", "user": user, "role": role, "protocol": protocol}),
            );
            return Step::Continue;
        }
        let refused = self.state.ws.refuse_auth.load(Ordering::SeqCst);
        match self.state.verify(token, "access") {
            Ok((claims, role)) if !refused => {
                self.state.count(|c| c.ws_auths += 1);
                self.push(
                    out,
                    json!({"type": "auth_success", "user": claims.sub, "role": role, "protocol": protocol}),
                );
                self.msgpack = protocol["serialization"] == "msgpack";
                self.protocol = protocol;
                self.user = Some((claims.sub, role));
                Step::Continue
            }
            Ok(_) | Err(jwt::Refusal::Invalid) | Err(jwt::Refusal::Expired) => {
                self.push(out, json!({"type": "auth_error", "message": "Invalid credentials"}));
                Step::Close(1008, "Authentication failed".into())
            }
        }
    }

    /// One client frame. Frames are handled strictly in the order they
    /// arrive, each answered before the next is read.
    fn on_frame(&mut self, m: Message, out: &mut Vec<Message>, changes: &Receiver<Arc<Change>>) -> Step {
        let v: Value = match m {
            Message::Text(t) => {
                // Every text message counts, before it is even parsed.
                if !self.bucket.try_take() {
                    self.state.count(|c| c.ws_rate_limited += 1);
                    self.push(out, json!({"type": "error", "subscription_id": "rate_limit", "code": "RATE_LIMIT_EXCEEDED", "message": "Too many messages"}));
                    return Step::Continue;
                }
                match serde_json::from_str(&t) {
                    Ok(v) => v,
                    Err(e) => return invalid(&e.to_string()),
                }
            }
            // MessagePack mode: a binary frame is a MessagePack map (gzipped
            // or not); text JSON is still accepted.
            Message::Binary(b) if self.msgpack && self.user.is_some() => {
                let unpacked = match gunzip_if_gzip(&b) {
                    Some(data) => rmp_serde::from_slice::<Value>(&data).map_err(|e| e.to_string()),
                    None => Err("invalid gzip data".to_owned()),
                };
                match unpacked {
                    Ok(v) => v,
                    Err(e) => {
                        self.push(out, json!({"type": "error", "subscription_id": "protocol", "code": "UNSUPPORTED_DATA", "message": format!("Invalid MessagePack: {e}")}));
                        return Step::Continue;
                    }
                }
            }
            Message::Binary(_) => {
                self.push(out, json!({"type": "error", "subscription_id": "protocol", "code": "UNSUPPORTED_DATA", "message": "Binary not supported"}));
                return Step::Continue;
            }
            Message::Close(_) => return Step::Echo,
            _ => return Step::Continue, // pings are answered by the library
        };
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "authenticate" => {
                let Some(protocol) = v.get("protocol").cloned() else {
                    return invalid("missing field `protocol`");
                };
                if protocol.get("serialization").is_none() || protocol.get("compression").is_none() {
                    return invalid("missing field in `protocol`");
                }
                let Some(token) = v.get("token").and_then(Value::as_str) else {
                    return invalid("missing field `token`");
                };
                self.authenticate(token, protocol, out)
            }
            "ping" => Step::Continue,
            "subscribe" | "next_batch" | "unsubscribe" if self.user.is_none() => {
                if kind == "subscribe" {
                    self.push(out, json!({"type": "error", "subscription_id": "subscribe", "code": "AUTH_REQUIRED", "message": "Authentication required before subscribing"}));
                }
                Step::Continue
            }
            "subscribe" => {
                self.state.count(|c| c.ws_subscribes += 1);
                let Some(sub) = v.get("subscription") else {
                    return invalid("missing field `subscription`");
                };
                let (Some(id), Some(sql)) = (
                    sub.get("id").and_then(Value::as_str),
                    sub.get("sql").and_then(Value::as_str),
                ) else {
                    return invalid("missing field `id` or `sql`");
                };
                if let Some(from) = sub
                    .get("options")
                    .and_then(|o| o.get("from").or_else(|| o.get("from_seq_id")))
                    && !from.is_i64()
                    && !from.is_null()
                {
                    return invalid(&not_i64(from));
                }
                self.subscribe(id, sql, sub.get("options"), out, changes);
                Step::Continue
            }
            "next_batch" => {
                self.state.count(|c| c.ws_next_batches += 1);
                let Some(id) = v.get("subscription_id").and_then(Value::as_str) else {
                    return invalid("missing field `subscription_id`");
                };
                let last = match v.get("last_seq_id") {
                    None | Some(Value::Null) => None,
                    Some(n) if n.is_i64() => n.as_i64(),
                    Some(other) => return invalid(&not_i64(other)),
                };
                self.next_batch(id, last, out);
                Step::Continue
            }
            "unsubscribe" => {
                self.state.count(|c| c.ws_unsubscribes += 1);
                if let Some(id) = v.get("subscription_id").and_then(Value::as_str) {
                    self.subs.remove(id);
                    // The server gives a slot back for every unsubscribe,
                    // known id or not.
                    self.release_slots(1);
                }
                Step::Continue
            }
            _ => invalid(&format!(
                "unknown variant `{kind}`, expected one of `authenticate`, `subscribe`, `next_batch`, `unsubscribe`, `ping`"
            )),
        }
    }

    fn sub_error(&self, out: &mut Vec<Message>, id: &str, code: &str, message: &str) {
        self.push(
            out,
            json!({"type": "error", "subscription_id": id, "code": code, "message": message}),
        );
    }

    fn subscribe(
        &mut self,
        id: &str,
        sql: &str,
        options: Option<&Value>,
        out: &mut Vec<Message>,
        changes: &Receiver<Arc<Change>>,
    ) {
        if id.trim().is_empty() {
            return self.sub_error(
                out,
                "invalid_subscription",
                "INVALID_SUBSCRIPTION_ID",
                "Subscription ID cannot be empty",
            );
        }
        let Some((user, role)) = self.user.clone() else { return };
        // As the server: the per-user limit is checked first, the slot
        // taken only when the subscription is registered.
        if !self.slot_free(&user) {
            self.state.count(|c| c.ws_subscriptions_refused += 1);
            return self.sub_error(out, id, "SUBSCRIPTION_LIMIT_EXCEEDED", "Maximum subscriptions reached");
        }
        let parsed = match parse_live_sql(sql) {
            Ok(p) => p,
            Err(m) => return self.sub_error(out, id, "INVALID_SQL", &m),
        };
        let (table, columns, where_sql) = parsed;
        let admin = role == "dba" || role == "system";
        if table.starts_with("system.") && !admin {
            return self.sub_error(out, id, "UNAUTHORIZED", "System tables require an admin role");
        }
        let Ok(mut engine) = self.state.engine.lock() else {
            return;
        };
        let Some(def) = engine.live_table(&table) else {
            drop(engine);
            let t = table.replace('.', ":");
            return self.sub_error(out, id, "NOT_FOUND", &format!("Not found: Table not found: {t}"));
        };
        let batch_size = options
            .and_then(|o| o.get("batch_size"))
            .and_then(Value::as_u64)
            .unwrap_or(1000)
            .clamp(1, 1000) as usize;
        let last_rows = options.and_then(|o| o.get("last_rows")).and_then(Value::as_u64);
        let from = options
            .and_then(|o| o.get("from").or_else(|| o.get("from_seq_id")))
            .and_then(Value::as_i64);
        if let Some(n) = last_rows
            && n as usize > batch_size
            && from.is_none()
        {
            drop(engine);
            return self.sub_error(
                out,
                id,
                "UNSUPPORTED",
                &format!("last_rows ({n}) cannot exceed batch_size ({batch_size}); paginated last_rows replay is not supported"),
            );
        }
        let schema = live_schema(&def, &columns);
        let mut sub = Sub {
            table: def.full.to_ascii_lowercase(),
            columns: project(&def, &columns),
            keys: def.columns.iter().filter(|c| c.pk).map(|c| c.name.clone()).collect(),
            where_sql,
            batch_size,
            initial: options.is_some(),
            batch_num: 0,
            loading: options.is_some(),
            notified: 0,
            snapshot_seq: 0,
            buffered: Vec::new(),
            // Read under the engine's lock, which every commit holds while
            // it broadcasts its changes: those already broadcast (waiting in
            // this session's receiver) came before this registration.
            after: self.received + changes.len() as u64,
        };
        let owner = if def.kind.per_user() {
            user.clone()
        } else {
            "root".to_owned()
        };
        if options.is_none() {
            drop(engine);
            self.push(
                out,
                json!({
                    "type": "subscription_ack", "subscription_id": id, "total_rows": 0,
                    "batch_control": {"batch_num": 0, "has_more": false, "status": "ready", "last_seq_id": null},
                    "schema": schema,
                }),
            );
            self.take_slot(&user);
            self.subs.insert(id.to_owned(), sub);
            return;
        }
        // One row more than the page, to tell whether more follow; the
        // page comes in key order and is cut after that (as the server).
        let (limit, newest) = match (last_rows, from) {
            (Some(n), None) => (n as usize + 1, true),
            _ => (batch_size + 1, false),
        };
        sub.snapshot_seq = engine.live_snapshot_end(&owner, &def.full);
        let rows = engine.live_rows(LivePage {
            user: &owner,
            table: &def.full,
            columns: &columns,
            where_sql: sub.where_sql.as_deref(),
            after_seq: from,
            upto_seq: Some(sub.snapshot_seq),
            limit,
            newest,
        });
        drop(engine);
        let mut rows = match rows {
            Ok(r) => r,
            Err(e) => return self.sub_error(out, id, "SUBSCRIPTION_FAILED", &e.message),
        };
        let has_more = !newest && rows.len() > batch_size;
        if newest {
            // `last_rows`: cut to N, then sent newest-first.
            rows.truncate(limit - 1);
            rows.reverse();
        } else {
            rows.truncate(batch_size);
        }
        // The `_seq` of the last row as sent, not the highest.
        let last_seq = rows.last().and_then(row_seq);
        let control = json!({
            "batch_num": 0, "has_more": has_more,
            "status": if has_more { "loading" } else { "ready" },
            "last_seq_id": last_seq,
        });
        self.push(out, json!({"type": "subscription_ack", "subscription_id": id, "total_rows": 0, "batch_control": control, "schema": schema}));
        self.push(
            out,
            json!({"type": "initial_data_batch", "subscription_id": id, "rows": rows, "batch_control": control}),
        );
        sub.loading = has_more;
        self.take_slot(&user);
        self.subs.insert(id.to_owned(), sub);
        if !has_more {
            self.flush_buffered(id, out);
        }
    }

    fn next_batch(&mut self, id: &str, last: Option<i64>, out: &mut Vec<Message>) {
        let Some((user, _)) = self.user.clone() else { return };
        let Some(sub) = self.subs.get(id) else {
            return self.sub_error(
                out,
                id,
                "BATCH_FETCH_FAILED",
                &format!("Not found: Subscription not found: {id}"),
            );
        };
        if !sub.initial {
            return self.sub_error(
                out,
                id,
                "BATCH_FETCH_FAILED",
                &format!("Invalid operation: Subscription {id} was created without initial data loading"),
            );
        }
        let Ok(mut engine) = self.state.engine.lock() else {
            return;
        };
        let Some(def) = engine.live_table(&sub.table) else {
            return;
        };
        let owner = if def.kind.per_user() { user } else { "root".to_owned() };
        let cols: Vec<String> = sub
            .columns
            .iter()
            .filter(|c| c.as_str() != "_deleted")
            .cloned()
            .collect();
        let cols = if sub.columns.iter().any(|c| c == "_deleted") {
            vec!["*".to_owned()]
        } else {
            cols
        };
        let rows = engine.live_rows(LivePage {
            user: &owner,
            table: &def.full,
            columns: &cols,
            where_sql: sub.where_sql.as_deref(),
            after_seq: last,
            upto_seq: Some(sub.snapshot_seq),
            limit: sub.batch_size + 1,
            newest: false,
        });
        drop(engine);
        let Ok(mut rows) = rows else { return };
        let batch_size = sub.batch_size;
        let has_more = rows.len() > batch_size;
        rows.truncate(batch_size);
        let last_seq = rows.last().and_then(row_seq);
        let mut batch_num = 1;
        if let Some(s) = self.subs.get_mut(id) {
            s.loading = has_more;
            s.batch_num += 1;
            batch_num = s.batch_num;
        }
        let control = json!({
            "batch_num": batch_num, "has_more": has_more,
            "status": if has_more { "loading_batch" } else { "ready" },
            "last_seq_id": last_seq,
        });
        self.push(
            out,
            json!({"type": "initial_data_batch", "subscription_id": id, "rows": rows, "batch_control": control}),
        );
        if !has_more {
            self.flush_buffered(id, out);
        }
    }

    /// Changes that arrived during the initial load, newer than the snapshot.
    fn flush_buffered(&mut self, id: &str, out: &mut Vec<Message>) {
        let Some(sub) = self.subs.get_mut(id) else { return };
        let mut buffered = std::mem::take(&mut sub.buffered);
        let cut = sub.snapshot_seq;
        buffered.retain(|c| change_seq(c) > cut);
        buffered.sort_by_key(|c| change_seq(c));
        for c in buffered {
            self.deliver(id, &c, out);
        }
    }

    /// The next change from the broadcast (commit order).
    fn on_change(&mut self, c: &Arc<Change>, out: &mut Vec<Message>) {
        self.received += 1;
        let Some((user, _)) = self.user.clone() else { return };
        if c.owner.as_ref().is_some_and(|o| *o != user) {
            return; // another user's row
        }
        let table = c.table.to_ascii_lowercase();
        let number = self.received;
        let ids: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.table == table && number > s.after)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let Some(sub) = self.subs.get_mut(&id) else { continue };
            if sub.loading {
                sub.buffered.push(c.clone());
                continue;
            }
            self.deliver(&id, c, out);
        }
    }

    fn deliver(&mut self, id: &str, c: &Change, out: &mut Vec<Message>) {
        let Some(sub) = self.subs.get(id) else { return };
        // The filter is checked against the new image (the deleted row for a delete).
        let image = c.new.as_ref().or(c.old.as_ref());
        if let (Some(w), Some(row)) = (&sub.where_sql, image) {
            let matches = self
                .state
                .engine
                .lock()
                .map(|mut e| e.row_matches(&c.table, row, w))
                .unwrap_or(true);
            if !matches {
                return;
            }
        }
        if let Some(n) = self.state.ws.limits.drop_every_nth_change
            && let Some(sub) = self.subs.get_mut(id)
        {
            sub.notified += 1;
            if sub.notified % n == 0 {
                return; // "Notification channel full …, dropping notification"
            }
        }
        let Some(sub) = self.subs.get(id) else { return };
        let cols = &sub.columns;
        let pick = |row: &Map<String, Value>, keep_null: bool| -> Map<String, Value> {
            cols.iter()
                .filter_map(|k| row.get(k).map(|v| (k.clone(), v.clone())))
                .filter(|(_, v)| keep_null || !v.is_null())
                .collect()
        };
        let msg = match c.kind {
            "insert" => {
                let Some(new) = &c.new else { return };
                json!({"type": "change", "subscription_id": id, "change_type": "insert", "rows": [pick(new, true)]})
            }
            "update" => {
                // The new row's non-null columns and the old values of the
                // changed ones, each with the key (listed or not) and `_seq`.
                let (Some(new), Some(old)) = (&c.new, &c.old) else {
                    return;
                };
                let keyed = |k: &String| sub.keys.contains(k) || k == "_seq";
                let mut row = pick(new, false);
                row.remove("_deleted");
                for k in &sub.keys {
                    if let Some(v) = new.get(k) {
                        row.insert(k.clone(), v.clone());
                    }
                }
                let before: Map<String, Value> = old
                    .iter()
                    .filter(|(k, v)| keyed(k) || (new.get(*k) != Some(*v) && cols.contains(*k) && *k != "_deleted"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                json!({"type": "change", "subscription_id": id, "change_type": "update", "rows": [row], "old_values": [before]})
            }
            _ => {
                // The listed columns and `_seq`; `_deleted: true` with `*`.
                let Some(old) = &c.old else { return };
                let mut row = pick(old, true);
                if cols.iter().any(|c| c == "_deleted") {
                    row.insert("_deleted".into(), json!(true));
                }
                json!({"type": "change", "subscription_id": id, "change_type": "delete", "old_values": [row]})
            }
        };
        self.push(out, msg);
    }
}

/// The parser's words for a value that should have been an `i64`
/// (`invalid type: string "12", expected i64`).
fn not_i64(v: &Value) -> String {
    serde_json::from_value::<i64>(v.clone())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "invalid type, expected i64".into())
}

/// Close 1011 with the server's reason, cut to the 123 bytes a close
/// reason can hold.
fn invalid(detail: &str) -> Step {
    let mut reason = format!("Invalid message: {detail}");
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    reason.truncate(cut);
    Step::Close(1011, reason)
}

fn row_seq(row: &Map<String, Value>) -> Option<i64> {
    row.get("_seq").and_then(|v| v.as_str()?.parse().ok())
}

fn change_seq(c: &Change) -> i64 {
    c.new.as_ref().or(c.old.as_ref()).and_then(row_seq).unwrap_or(0)
}

/// `SELECT cols FROM ns.table [WHERE …]` → (table, columns, where), or the
/// server's `INVALID_SQL` message.
fn parse_live_sql(sql: &str) -> Result<(String, Vec<String>, Option<String>), String> {
    let s = sql.trim().trim_end_matches(';');
    let upper = s.to_ascii_uppercase();
    let first = upper.split_whitespace().next().unwrap_or("");
    const STATEMENTS: [&str; 20] = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "WITH", "SHOW", "EXPLAIN", "SET", "BEGIN",
        "COMMIT", "ROLLBACK", "TRUNCATE", "GRANT", "REVOKE", "DESCRIBE", "EXECUTE", "VALUES",
    ];
    if !STATEMENTS.contains(&first) {
        let found = s.split_whitespace().next().unwrap_or("EOF");
        return Err(format!(
            "Invalid SQL: Parse error: Failed to parse SQL: sql parser error: Expected: an SQL statement, found: {found} at Line: 1, Column: 1"
        ));
    }
    let only = "Only SELECT ... FROM ... [WHERE ...] is supported.";
    if first == "WITH" {
        return Err(format!(
            "Invalid SQL: Invalid SQL: Subscription query does not support WITH clauses. {only}"
        ));
    }
    if first != "SELECT" {
        return Err("Invalid SQL: Invalid SQL: Only SELECT queries are supported for subscriptions".into());
    }
    for (clause, message) in [
        (
            " JOIN ",
            format!("Subscription query does not support JOIN clauses. {only}"),
        ),
        (
            " GROUP BY ",
            format!("Subscription query does not support GROUP BY. {only}"),
        ),
        (
            " ORDER BY ",
            format!("Subscription query does not support ORDER BY. {only}"),
        ),
        (
            " UNION ",
            "Subscription query supports only simple SELECT statements.".to_owned(),
        ),
        (
            " LIMIT ",
            "Subscription query supports only SELECT ... FROM ... [WHERE ...].".to_owned(),
        ),
        (
            " HAVING ",
            "Subscription query supports only SELECT ... FROM ... [WHERE ...].".to_owned(),
        ),
    ] {
        if upper.contains(clause) {
            return Err(format!("Invalid SQL: Invalid SQL: {message}"));
        }
    }
    let from = upper.find(" FROM ").ok_or("Invalid SQL: missing FROM")?;
    let columns: Vec<String> = s
        .get(7..from)
        .ok_or("Invalid SQL: missing columns")?
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_owned())
        .collect();
    let rest = s[from + 6..].trim();
    let (table, where_sql) = match rest.to_ascii_uppercase().find(" WHERE ") {
        Some(w) => (rest[..w].trim(), Some(rest[w + 7..].trim().to_owned())),
        None => (rest, None),
    };
    if !table.contains('.') {
        return Err("Invalid SQL: Query must use namespace.table format".into());
    }
    let columns = if columns.iter().any(|c| c == "*") {
        vec![]
    } else {
        columns
    };
    Ok((table.trim_matches('"').to_owned(), columns, where_sql))
}

/// gzip (RFC 1952) of `data`.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend(crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

/// `data` itself, or its gunzipped content when it starts with the gzip
/// magic bytes (`None` when that content is broken).
fn gunzip_if_gzip(data: &[u8]) -> Option<Vec<u8>> {
    if !data.starts_with(&[0x1f, 0x8b]) {
        return Some(data.to_vec());
    }
    let flags = *data.get(3)?;
    let mut pos = 10;
    if flags & 4 != 0 {
        pos += 2 + u16::from_le_bytes([*data.get(10)?, *data.get(11)?]) as usize;
    }
    for bit in [8, 16] {
        if flags & bit != 0 {
            pos += data.get(pos..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & 2 != 0 {
        pos += 2;
    }
    let body = data.get(pos..data.len().checked_sub(8)?)?;
    miniz_oxide::inflate::decompress_to_vec(body).ok()
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_sql() {
        assert_eq!(
            parse_live_sql("SELECT * FROM demo.items WHERE qty > 5").unwrap(),
            ("demo.items".into(), vec![], Some("qty > 5".into()))
        );
        assert!(
            parse_live_sql("SELECT * FROM items")
                .unwrap_err()
                .contains("namespace.table")
        );
        assert!(
            parse_live_sql("SELECT * FROM a.b ORDER BY x")
                .unwrap_err()
                .contains("does not support ORDER BY")
        );
        assert_eq!(
            parse_live_sql("SELEC * FROM a.b").unwrap_err(),
            "Invalid SQL: Parse error: Failed to parse SQL: sql parser error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1"
        );
        assert!(
            parse_live_sql("DELETE FROM a.b")
                .unwrap_err()
                .contains("Only SELECT queries")
        );
        assert!(parse_live_sql("SELECT FROM a.b").is_err(), "no columns, and no panic");
    }

    #[test]
    fn crc() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    fn texts(out: &mut Vec<Message>) -> Vec<Value> {
        out.drain(..)
            .map(|m| match m {
                Message::Text(t) => serde_json::from_str(&t).unwrap(),
                other => panic!("expected text, got {other:?}"),
            })
            .collect()
    }

    fn sql(state: &State, statement: &str) {
        state
            .engine
            .lock()
            .unwrap()
            .run("root", "system", statement, &[], None)
            .unwrap_or_else(|e| panic!("{statement}: {}", e.message));
    }

    /// However the session's loop happens to order a subscribe frame and a
    /// change that was committed before it, the subscription sees only the
    /// changes committed after it was registered (as on the server).
    #[tokio::test]
    async fn a_subscription_sees_only_changes_committed_after_it() {
        let server = crate::TestServer::start().await;
        let state = server.state.clone();
        sql(&state, "CREATE NAMESPACE kit_order");
        sql(&state, "CREATE TABLE kit_order.t (id BIGINT PRIMARY KEY, v TEXT)");
        let mut changes = state.changes.subscribe();
        let mut session = Session::new(state.clone(), false);
        session.user = Some(("root".into(), "system".into()));
        let mut out = Vec::new();
        // Committed (and broadcast) before the subscribe is handled, but
        // still waiting in the session's receiver.
        sql(&state, "INSERT INTO kit_order.t (id, v) VALUES (1, 'before')");
        let subscribe = json!({"type": "subscribe", "subscription": {"id": "s", "sql": "SELECT * FROM kit_order.t"}});
        let step = session.on_frame(Message::Text(subscribe.to_string().into()), &mut out, &changes);
        assert!(matches!(step, Step::Continue));
        assert_eq!(texts(&mut out)[0]["type"], "subscription_ack");
        sql(&state, "INSERT INTO kit_order.t (id, v) VALUES (2, 'after')");
        while let Ok(c) = changes.try_recv() {
            session.on_change(&c, &mut out);
        }
        let delivered = texts(&mut out);
        assert_eq!(delivered.len(), 1, "{delivered:?}");
        assert_eq!(delivered[0]["rows"][0]["id"], "2");
    }

    /// Initial-data pages are chosen by `_seq` but handed back in key
    /// order and cut after that, as the server's: with rows updated in
    /// reverse key order, `batch_size: 3` pages deliver 14 rows, 9 distinct,
    /// one never (PROTOCOL §4.6), each batch numbered, `last_seq_id` the
    /// `_seq` of the last row as sent.
    #[tokio::test]
    async fn pages_skip_and_repeat_rows_as_the_servers_do() {
        let server = crate::TestServer::start().await;
        let state = server.state.clone();
        sql(&state, "CREATE NAMESPACE kit_pages");
        sql(&state, "CREATE TABLE kit_pages.t (id BIGINT PRIMARY KEY, v TEXT)");
        for id in 1..=10 {
            sql(&state, &format!("INSERT INTO kit_pages.t (id, v) VALUES ({id}, 'a')"));
        }
        for id in (1..=10).rev() {
            sql(&state, &format!("UPDATE kit_pages.t SET v = 'b' WHERE id = {id}"));
        }
        let changes = state.changes.subscribe();
        let mut session = Session::new(state.clone(), false);
        session.user = Some(("root".into(), "system".into()));
        let mut out = Vec::new();
        let subscribe = json!({"type": "subscribe", "subscription": {"id": "p", "sql": "SELECT * FROM kit_pages.t", "options": {"batch_size": 3}}});
        session.on_frame(Message::Text(subscribe.to_string().into()), &mut out, &changes);
        let mut batches = texts(&mut out).split_off(1); // after the ack
        let mut delivered = Vec::new();
        for n in 0.. {
            let batch = batches.pop().expect("one batch per request");
            let control = &batch["batch_control"];
            assert_eq!(control["batch_num"], n);
            let rows = batch["rows"].as_array().unwrap();
            let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
            assert_eq!(
                control["last_seq_id"].to_string(),
                rows.last().unwrap()["_seq"].as_str().unwrap()
            );
            delivered.extend(ids.iter().map(|i| i.to_string()));
            if control["has_more"] == false {
                break;
            }
            let next = json!({"type": "next_batch", "subscription_id": "p", "last_seq_id": control["last_seq_id"]});
            session.on_frame(Message::Text(next.to_string().into()), &mut out, &changes);
            batches = texts(&mut out);
        }
        assert_eq!(
            delivered,
            ["7", "8", "9", "5", "6", "7", "3", "4", "5", "1", "2", "3", "1", "2"]
        );
    }

    /// The message rate limit: a full bucket, then one error frame per
    /// dropped message; binary frames do not count.
    #[tokio::test]
    async fn the_message_bucket_drops_text_beyond_its_capacity() {
        let server = crate::TestServer::builder().max_ws_messages_per_sec(3).start().await;
        let state = server.state.clone();
        let changes = state.changes.subscribe();
        let mut session = Session::new(state.clone(), false);
        // Refills 3 per second: the next whole token is 333 ms away, far
        // beyond these few calls.
        session.bucket.last_refill = Instant::now() + Duration::from_secs(3600);
        let mut out = Vec::new();
        let ping = || Message::Text(r#"{"type":"ping"}"#.into());
        for _ in 0..3 {
            session.on_frame(ping(), &mut out, &changes);
        }
        assert!(out.is_empty(), "three pings pass unanswered");
        session.on_frame(Message::Binary(Bytes::from_static(b"x")), &mut out, &changes);
        assert_eq!(texts(&mut out)[0]["code"], "UNSUPPORTED_DATA", "binary does not count");
        let step = session.on_frame(ping(), &mut out, &changes);
        assert!(matches!(step, Step::Continue), "the connection stays");
        assert_eq!(
            texts(&mut out),
            [
                json!({"type": "error", "subscription_id": "rate_limit", "code": "RATE_LIMIT_EXCEEDED", "message": "Too many messages"})
            ]
        );
        // Even a message the server cannot parse is counted first.
        let step = session.on_frame(Message::Text("{garbage".into()), &mut out, &changes);
        assert!(matches!(step, Step::Continue));
        assert_eq!(texts(&mut out)[0]["code"], "RATE_LIMIT_EXCEEDED");
        assert_eq!(server.counters().ws_rate_limited, 2);
    }
}
