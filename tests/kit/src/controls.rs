//! What a test reads from the kit (the counters, the requests it saw) and
//! what it makes the kit answer (faults, tokens minted to order).

use crate::unix_now;

/// Counters of what the server saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Successful logins.
    pub logins: usize,
    /// Refused logins.
    pub failed_logins: usize,
    /// Successful refreshes.
    pub refreshes: usize,
    /// `POST /v1/api/sql` requests (answered in any way).
    pub queries: usize,
    /// WebSocket upgrades.
    pub ws_upgrades: usize,
    /// Successful WebSocket authentications.
    pub ws_auths: usize,
    /// `subscribe` messages received.
    pub ws_subscribes: usize,
    /// `unsubscribe` messages received.
    pub ws_unsubscribes: usize,
    /// `next_batch` messages received (pages of initial rows asked for).
    pub ws_next_batches: usize,
    /// WebSocket text messages dropped by the per-connection message rate
    /// limit (each answered with a `RATE_LIMIT_EXCEEDED` error frame).
    pub ws_rate_limited: usize,
    /// Subscriptions refused with `SUBSCRIPTION_LIMIT_EXCEEDED`.
    pub ws_subscriptions_refused: usize,
    /// `POST /v1/api/topics/consume` requests (answered in any way).
    pub topic_consumes: usize,
    /// `POST /v1/api/topics/ack` requests (answered in any way).
    pub topic_acks: usize,
    /// Multipart `POST /v1/api/sql` requests (file uploads, answered in any way).
    pub uploads: usize,
    /// `GET /v1/files/…` requests (answered in any way).
    pub downloads: usize,
}

/// One request, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// Method.
    pub method: String,
    /// Path (without query).
    pub path: String,
    /// The raw `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl SeenRequest {
    /// The scheme of the `Authorization` header (`Bearer`, `Basic`…).
    pub fn auth_scheme(&self) -> Option<&str> {
        self.authorization.as_deref().and_then(|a| a.split(' ').next())
    }
}

/// An answer to give instead of the real one (see [`TestServer::fail_next`](crate::TestServer::fail_next)).
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests to this path (any path if `None`).
    pub path: Option<String>,
    /// Status.
    pub status: u16,
    /// Body.
    pub body: String,
    /// Content type.
    pub content_type: String,
}

impl Fault {
    /// A fault answering `status` with a JSON `body`.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Fault {
            path: None,
            status,
            body: body.into(),
            content_type: "application/json".into(),
        }
    }

    /// A fault answering `status` with a plain-text (or HTML) `body`.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Fault {
            path: None,
            status,
            body: body.into(),
            content_type: "text/html".into(),
        }
    }

    /// Only for requests to `path`.
    pub fn on(mut self, path: &str) -> Self {
        self.path = Some(path.to_owned());
        self
    }
}

/// A token to mint with [`TestServer::mint_token`](crate::TestServer::mint_token).
#[derive(Debug, Clone)]
pub struct Mint {
    /// User id.
    pub user: String,
    /// Role (default: the user's role, else `user`).
    pub role: Option<String>,
    /// `access` or `refresh`.
    pub token_type: String,
    /// Issued at (default now).
    pub iat: Option<u64>,
    /// Expiry (default now + the server's lifetime).
    pub exp: Option<u64>,
    /// Sign with another secret.
    pub wrong_signature: bool,
}

impl Mint {
    /// An access token for `user`.
    pub fn access(user: &str) -> Self {
        Mint {
            user: user.to_owned(),
            role: None,
            token_type: "access".into(),
            iat: None,
            exp: None,
            wrong_signature: false,
        }
    }

    /// A refresh token for `user`.
    pub fn refresh(user: &str) -> Self {
        Mint {
            token_type: "refresh".into(),
            ..Mint::access(user)
        }
    }

    /// Expired an hour ago (well past the 60 s leeway).
    pub fn expired(mut self) -> Self {
        let now = unix_now();
        self.iat = Some(now - 7200);
        self.exp = Some(now - 3600);
        self
    }

    /// Expires in `secs` seconds.
    pub fn expires_in(mut self, secs: u64) -> Self {
        self.exp = Some(unix_now().saturating_add(secs));
        self
    }

    /// Explicit `iat` and `exp`.
    pub fn times(mut self, iat: u64, exp: u64) -> Self {
        self.iat = Some(iat);
        self.exp = Some(exp);
        self
    }

    /// With a role claim.
    pub fn role(mut self, role: &str) -> Self {
        self.role = Some(role.to_owned());
        self
    }

    /// Signed with the wrong secret.
    pub fn wrong_signature(mut self) -> Self {
        self.wrong_signature = true;
        self
    }
}
