//! [`TestServer`]: a running kit, its address and its controls.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::{Change, Claims, Counters, Fault, Mint, SeenRequest, State, TestServerBuilder, http, jwt};

/// A running in-process server. Stops on [`shutdown`](Self::shutdown) or drop.
pub struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<State>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// A server with the defaults (root / `kalamdb123`).
    pub async fn start() -> TestServer {
        TestServerBuilder::default().start().await
    }

    /// A builder.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The root password.
    pub fn root_password(&self) -> &str {
        &self.state.root_password
    }

    /// The JWT secret.
    pub fn jwt_secret(&self) -> &str {
        &self.state.secret
    }

    /// Mints a token with any user, role, type, `iat`, `exp` or signature
    /// (role and e-mail default to the user's). Counted as issued, so
    /// [`force_expire_all`](Self::force_expire_all) expires it too.
    pub fn mint_token(&self, m: Mint) -> String {
        let now = self.state.now();
        let known = self
            .state
            .engine
            .lock()
            .ok()
            .and_then(|e| e.users.get(&m.user).map(|u| (u.role.clone(), u.email.clone())));
        let (role, email) = match known {
            Some((role, email)) => (m.role.unwrap_or(role), email),
            None => (m.role.unwrap_or_else(|| "user".into()), None),
        };
        let mut claims = Claims {
            sub: m.user,
            iss: "kalamdb".into(),
            exp: m.exp.unwrap_or(now.saturating_add(self.state.lifetime.as_secs())),
            iat: m.iat.unwrap_or(now),
            email,
            role,
            token_type: m.token_type,
        };
        let secret = if m.wrong_signature {
            "a-different-secret-entirely-0123456789"
        } else {
            &self.state.secret
        };
        let mut t = jwt::sign(secret, &claims);
        // As in `State::issue`: with default times, never hand out a token
        // that `force_expire_all` already expired (tokens are a pure
        // function of their claims).
        while m.iat.is_none() && self.state.expired.lock().map(|e| e.contains(&t)).unwrap_or(false) {
            claims.iat += 1;
            if m.exp.is_none() {
                claims.exp = claims.exp.saturating_add(1);
            }
            t = jwt::sign(secret, &claims);
        }
        if let Ok(mut i) = self.state.issued.lock() {
            i.insert(t.clone());
        }
        t
    }

    /// Every token issued or minted so far (access and refresh) is refused as
    /// `INVALID_CREDENTIALS` from now on, as after a redeploy with a new
    /// JWT secret; users and passwords are unchanged.
    pub fn force_invalidate_all(&self) {
        self.retire_issued(&self.state.invalidated);
    }

    /// Every token issued or minted so far answers `TOKEN_EXPIRED` from now on.
    pub fn force_expire_all(&self) {
        self.retire_issued(&self.state.expired);
    }

    /// Adds every token issued or minted so far to `retired`.
    fn retire_issued(&self, retired: &std::sync::Mutex<std::collections::HashSet<String>>) {
        let issued: Vec<String> = self
            .state
            .issued
            .lock()
            .map(|i| i.iter().cloned().collect())
            .unwrap_or_default();
        if let Ok(mut r) = retired.lock() {
            r.extend(issued);
        }
    }

    /// What the server counted so far.
    pub fn counters(&self) -> Counters {
        self.state.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Every HTTP request seen so far, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The `Authorization` header of every request to `path` so far, in
    /// order (`None` where there was none): e.g. to prove that no `Basic`
    /// header ever reached `/v1/api/sql`.
    pub fn authorizations(&self, path: &str) -> Vec<Option<String>> {
        self.state
            .seen
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|r| r.path == path)
                    .map(|r| r.authorization.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The next `n` requests (to the fault's path, if it has one) get this
    /// answer instead of the real one.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        if let Ok(mut f) = self.state.faults.lock() {
            f.push_back((n, fault));
        }
    }

    /// Added latency before every answer from now on.
    pub fn set_latency(&self, d: Duration) {
        if let Ok(mut l) = self.state.latency.lock() {
            *l = d;
        }
    }

    /// Drops every open WebSocket now, without a close frame.
    pub fn drop_all_sockets(&self) {
        self.state.ws.drop_generation.send_modify(|g| *g += 1);
    }

    /// Refuse WebSocket authentication (`auth_error` + close 1008) while `on`.
    pub fn refuse_ws_auth(&self, on: bool) {
        self.state.ws.refuse_auth.store(on, Ordering::SeqCst);
    }

    /// Stop sending anything on WebSockets while `on` (frames are held back).
    pub fn stall_ws(&self, on: bool) {
        self.state.ws.stall.send_replace(on);
    }

    /// Send one malformed (non-JSON) text frame on every open socket.
    pub fn send_malformed_frame(&self) {
        self.state.ws.malformed_generation.send_modify(|g| *g += 1);
    }

    /// WebSockets open right now.
    pub fn open_sockets(&self) -> usize {
        self.state.open_sockets.load(Ordering::SeqCst)
    }

    /// Subscription slots `user` holds right now, across all connections
    /// (see [`TestServerBuilder::max_subscriptions_per_user`]).
    pub fn subscriptions_of(&self, user: &str) -> usize {
        self.state
            .ws
            .subscriptions
            .lock()
            .map(|s| s.get(user).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The offset consumer group `group` last acknowledged
    /// (`POST /v1/api/topics/ack`) on `partition` of `topic`, if any: what a
    /// test of an at-least-once consumer checks after processing.
    pub fn committed_offset(&self, topic: &str, group: &str, partition: u32) -> Option<u64> {
        self.state
            .engine
            .lock()
            .ok()
            .and_then(|e| e.topics.committed(topic, group, partition))
    }

    /// Messages in `partition` of `topic` (`None` for no such topic or
    /// partition), whatever any group consumed.
    pub fn topic_len(&self, topic: &str, partition: u32) -> Option<usize> {
        self.state
            .engine
            .lock()
            .ok()
            .and_then(|e| e.topics.len(topic, partition))
    }

    /// A receiver of every committed row change.
    pub fn changes(&self) -> broadcast::Receiver<Arc<Change>> {
        self.state.changes.subscribe()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.drop_all_sockets();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Restarts the server on the same port, keeping its data (tables,
    /// rows, users, issued tokens), as a server process restarted by an
    /// operator: every connection is cut (WebSockets without a close frame),
    /// the port refuses connections for a moment, then it serves again.
    /// Subscriptions are gone, as on the real server.
    pub async fn restart(&self) {
        let _ = self.stop.send(true);
        self.drop_all_sockets();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await; // the listener is closed
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                // Not free yet: the old listener is going away.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("the test server could not bind {} again: {e}", self.addr),
            }
        };
        self.stop.send_replace(false);
        let task = tokio::spawn(http::serve(listener, self.state.clone(), self.stop.subscribe()));
        if let Ok(mut t) = self.task.lock() {
            *t = Some(task);
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.drop_all_sockets();
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}
