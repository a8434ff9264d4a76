//! The server's shared state: users and tables (the SQL engine), issued and
//! expired tokens, counters, faults, the WebSocket controls and limits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::{Change, Claims, Counters, Fault, SeenRequest, files, jwt, limits, sql, unix_now};

/// The server's WebSocket limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WsLimits {
    pub(crate) max_subscriptions_per_user: usize,
    pub(crate) max_messages_per_sec: u32,
    /// Drop every n-th change notification of each subscription, silently,
    /// as the server drops what does not fit its per-subscription channel
    /// under a burst (PROTOCOL §10.2).
    pub(crate) drop_every_nth_change: Option<u64>,
}

/// Controls of the WebSocket side.
pub(crate) struct WsControls {
    pub(crate) refuse_auth: AtomicBool,
    pub(crate) stall: watch::Sender<bool>,
    /// Bumped to drop every socket.
    pub(crate) drop_generation: watch::Sender<u64>,
    /// Bumped to send one malformed frame on every socket.
    pub(crate) malformed_generation: watch::Sender<u64>,
    pub(crate) idle_timeout: Mutex<Duration>,
    pub(crate) limits: WsLimits,
    /// Subscription slots taken per user, across all connections (as the
    /// server counts them: see `ws::Session`).
    pub(crate) subscriptions: Mutex<HashMap<String, usize>>,
}

/// The server's shared state.
pub(crate) struct State {
    pub(crate) root_password: String,
    pub(crate) secret: String,
    pub(crate) lifetime: Duration,
    pub(crate) engine: Mutex<sql::Engine>,
    pub(crate) changes: broadcast::Sender<Arc<Change>>,
    pub(crate) counters: Mutex<Counters>,
    pub(crate) seen: Mutex<Vec<SeenRequest>>,
    pub(crate) issued: Mutex<HashSet<String>>,
    pub(crate) expired: Mutex<HashSet<String>>,
    /// Tokens refused as invalid ([`TestServer::force_invalidate_all`](crate::TestServer::force_invalidate_all)).
    pub(crate) invalidated: Mutex<HashSet<String>>,
    /// The kit's clock minus the machine's, in seconds
    /// ([`TestServerBuilder::clock_offset`](crate::TestServerBuilder::clock_offset)).
    pub(crate) clock_offset: i64,
    pub(crate) faults: Mutex<VecDeque<(usize, Fault)>>,
    pub(crate) latency: Mutex<Duration>,
    pub(crate) ws: WsControls,
    pub(crate) open_sockets: AtomicUsize,
    /// Files uploaded into FILE columns.
    pub(crate) files: Mutex<files::Files>,
    pub(crate) file_limits: files::FileLimits,
    /// Every peer is treated as remote (the localhost-only endpoints refuse).
    pub(crate) remote_peers: bool,
    pub(crate) started: std::time::Instant,
    /// Auth and SQL request rates (off unless the builder sets them).
    pub(crate) rates: limits::RateLimits,
}

impl State {
    pub(crate) fn count(&self, f: impl FnOnce(&mut Counters)) {
        if let Ok(mut c) = self.counters.lock() {
            f(&mut c);
        }
    }

    /// The kit's clock, Unix seconds: the machine's, moved by the clock offset.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from((unix_now() as i64).saturating_add(self.clock_offset)).unwrap_or(0)
    }

    /// Issues a token (recorded, so `force_expire_all` can expire it).
    pub(crate) fn issue(&self, user: &str, role: &str, email: Option<String>, token_type: &str) -> (String, u64) {
        let now = self.now();
        let lifetime = self.lifetime.as_secs();
        let exp = now.saturating_add(if token_type == "refresh" {
            lifetime.saturating_mul(7)
        } else {
            lifetime
        });
        let claims = Claims {
            sub: user.to_owned(),
            iss: "kalamdb".into(),
            exp,
            iat: now,
            email,
            role: role.to_owned(),
            token_type: token_type.to_owned(),
        };
        let mut claims = claims;
        let mut token = jwt::sign(&self.secret, &claims);
        // Tokens are a pure function of their claims: one issued in the same
        // second as a token `force_expire_all` expired would be that token.
        // Move it a second on (well within the 60 s leeway) until it is new.
        let retired = |t: &String| {
            self.expired.lock().map(|e| e.contains(t)).unwrap_or(false)
                || self.invalidated.lock().map(|e| e.contains(t)).unwrap_or(false)
        };
        while retired(&token) {
            claims.iat += 1;
            claims.exp = claims.exp.saturating_add(1);
            token = jwt::sign(&self.secret, &claims);
        }
        if let Ok(mut i) = self.issued.lock() {
            i.insert(token.clone());
        }
        (token, claims.exp)
    }

    /// Verifies a token of `token_type` against the user store.
    pub(crate) fn verify(&self, token: &str, token_type: &str) -> Result<(Claims, String), jwt::Refusal> {
        let claims = jwt::verify(&self.secret, token, self.now(), 60)?;
        if self.invalidated.lock().map(|e| e.contains(token)).unwrap_or(false) {
            return Err(jwt::Refusal::Invalid);
        }
        if self.expired.lock().map(|e| e.contains(token)).unwrap_or(false) {
            return Err(jwt::Refusal::Expired);
        }
        if claims.token_type != token_type {
            return Err(jwt::Refusal::Invalid);
        }
        let engine = self.engine.lock().map_err(|_| jwt::Refusal::Invalid)?;
        let user = engine.users.get(&claims.sub).ok_or(jwt::Refusal::Invalid)?;
        if user.role != claims.role {
            return Err(jwt::Refusal::Invalid);
        }
        let role = user.role.clone();
        Ok((claims, role))
    }
}
