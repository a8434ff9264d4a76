//! Health check and first-time setup (PROTOCOL §3.5, §2.8), pure.
//!
//! These endpoints need no token, and the server answers them only to a
//! client on its own machine (a loopback peer). From anywhere else they
//! answer 403, which decodes to [`Error::LocalhostOnly`]: a remote client
//! checks readiness with an authenticated `SELECT 1` instead.
//!
//! Setup turns a fresh server (root has no password) into a usable one: it
//! sets root's password and creates a first DBA user. It returns no token:
//! log in afterwards.

use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, Error, ErrorCode, Result};
use crate::framing;
use crate::ops::RequestKind;
use crate::secret::Secret;
use crate::types::UserInfo;

/// The answer of the health endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HealthResponse {
    /// `healthy` when the server is up.
    pub status: String,
    /// The server's version, e.g. `0.4.3-rc.4`.
    #[serde(default)]
    pub version: String,
    /// The API version, e.g. `v1`.
    #[serde(default)]
    pub api_version: String,
    /// When the server was built.
    #[serde(default)]
    pub build_date: Option<String>,
}

impl HealthResponse {
    /// Whether the server says it is healthy.
    pub fn is_healthy(&self) -> bool {
        self.status.eq_ignore_ascii_case("healthy")
    }
}

/// The answer of `GET /v1/api/cluster/health`: the Raft status of the node
/// asked and what it knows of its peers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClusterHealth {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: String,
    /// The server's version.
    #[serde(default)]
    pub version: String,
    /// Whether the server runs Raft (a single node does too).
    #[serde(default)]
    pub is_cluster_mode: bool,
    /// The cluster's id.
    #[serde(default)]
    pub cluster_id: String,
    /// This node's id.
    pub node_id: u64,
    /// Whether this node leads the cluster's meta group.
    #[serde(default)]
    pub is_leader: bool,
    /// Raft groups, and how many of them this node leads.
    #[serde(default)]
    pub total_groups: u32,
    /// Raft groups this node leads.
    #[serde(default)]
    pub groups_leading: u32,
    /// The current Raft term.
    #[serde(default)]
    pub current_term: u64,
    /// Every node of the cluster, this one included.
    #[serde(default)]
    pub nodes: Vec<ClusterNode>,
}

impl ClusterHealth {
    /// Whether the node says the cluster is healthy.
    pub fn is_healthy(&self) -> bool {
        self.status.eq_ignore_ascii_case("healthy")
    }

    /// The node that leads, as far as this node knows.
    pub fn leader(&self) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.is_leader)
    }
}

/// One node of a [`ClusterHealth`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClusterNode {
    /// Its id.
    pub node_id: u64,
    /// `leader`, `follower`, `learner`, `candidate`.
    #[serde(default)]
    pub role: String,
    /// `active`, `offline`, …
    #[serde(default)]
    pub status: String,
    /// `host:port` of its HTTP API.
    #[serde(default)]
    pub api_addr: String,
    /// The node that answered.
    #[serde(default)]
    pub is_self: bool,
    /// The leader.
    #[serde(default)]
    pub is_leader: bool,
}

/// The answer of `GET /v1/api/auth/status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SetupStatus {
    /// True when root has no password yet: [`SetupRequest`] is due.
    pub needs_setup: bool,
    /// The server's explanation.
    #[serde(default)]
    pub message: String,
}

/// First-time setup: root's password and a first DBA user. `Debug` hides
/// both passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupRequest {
    /// Id of the new DBA user (not `root`).
    pub user: String,
    /// The DBA user's password.
    pub password: Secret,
    /// Root's new password.
    pub root_password: Secret,
    /// The DBA user's e-mail.
    pub email: Option<String>,
}

impl SetupRequest {
    /// A setup creating DBA user `user` with `password` and giving root
    /// `root_password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>, root_password: impl Into<String>) -> Self {
        SetupRequest {
            user: user.into(),
            password: Secret::new(password.into()),
            root_password: Secret::new(root_password.into()),
            email: None,
        }
    }

    /// Sets the DBA user's e-mail.
    pub fn with_email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    /// The JSON body. What the server would refuse anyway is refused here
    /// first: an empty user, the user `root`, names over 128 bytes,
    /// passwords over 256 bytes.
    pub fn to_body(&self) -> Result<Vec<u8>> {
        if self.user.trim().is_empty() {
            return Err(Error::InvalidInput("setup needs the id of the first DBA user".into()));
        }
        if self.user == crate::SYSTEM_USER {
            return Err(Error::InvalidInput("the first DBA user may not be root".into()));
        }
        if self.user.len() > 128 {
            return Err(Error::InvalidInput("the user id is over 128 bytes".into()));
        }
        if self.password.expose().len() > 256 || self.root_password.expose().len() > 256 {
            return Err(Error::InvalidInput("a password is over 256 bytes".into()));
        }
        #[derive(Serialize)]
        struct Body<'a> {
            user: &'a str,
            password: &'a str,
            root_password: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            email: Option<&'a str>,
        }
        serde_json::to_vec(&Body {
            user: &self.user,
            password: self.password.expose(),
            root_password: self.root_password.expose(),
            email: self.email.as_deref(),
        })
        .map_err(|e| Error::InvalidInput(e.to_string()))
    }
}

/// The answer of a successful setup.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SetupResponse {
    /// The DBA user created.
    pub user: UserInfo,
    /// The server's message.
    #[serde(default)]
    pub message: String,
}

fn decode_local<T: serde::de::DeserializeOwned>(
    endpoint: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T> {
    if status == StatusCode::FORBIDDEN {
        let mut server = framing::decode_error(status, headers, body);
        // The health endpoints put their sentence where a code would be.
        if let ErrorCode::Other(text) = &server.code {
            server.message = text.clone();
            server.code = ErrorCode::Forbidden;
        } else if server.code == ErrorCode::Unspecified {
            server.code = ErrorCode::Forbidden;
        }
        return Err(Error::LocalhostOnly { endpoint, server });
    }
    if !status.is_success() {
        return Err(framing::decode_error(status, headers, body).into());
    }
    serde_json::from_slice(body).map_err(|e| DecodeError::new(status.as_u16(), endpoint, e).into())
}

/// Decodes the health answer; a 403 (the client is not on the server's
/// machine) is [`Error::LocalhostOnly`].
pub fn decode_health(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<HealthResponse> {
    decode_local(RequestKind::Health.endpoint().path, status, headers, body)
}

/// Decodes the setup status; a 403 is [`Error::LocalhostOnly`].
pub fn decode_setup_status(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<SetupStatus> {
    decode_local(RequestKind::SetupStatus.endpoint().path, status, headers, body)
}

/// Decodes the cluster status; a 403 is [`Error::LocalhostOnly`].
pub fn decode_cluster_health(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<ClusterHealth> {
    decode_local(RequestKind::ClusterHealth.endpoint().path, status, headers, body)
}

/// Decodes the answer of a setup. Refusals keep the server's code:
/// `already_configured` (409), `weak_password`, `invalid_user` (400),
/// `user_exists` (409), `rate_limited` (429); a 403 is
/// [`Error::LocalhostOnly`].
pub fn decode_setup(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<SetupResponse> {
    decode_local(RequestKind::Setup.endpoint().path, status, headers, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_body_and_checks() {
        let r = SetupRequest::new("admin", "Adm1nPass!", "R00tPass!").with_email("a@x.io");
        let body = String::from_utf8(r.to_body().unwrap()).unwrap();
        assert_eq!(
            body,
            r#"{"user":"admin","password":"Adm1nPass!","root_password":"R00tPass!","email":"a@x.io"}"#
        );
        let debug = format!("{r:?}");
        assert!(!debug.contains("Adm1nPass") && !debug.contains("R00tPass"), "{debug}");
        for bad in [
            SetupRequest::new("", "p", "q"),
            SetupRequest::new("root", "p", "q"),
            SetupRequest::new("a".repeat(129), "p", "q"),
            SetupRequest::new("a", "p".repeat(257), "q"),
        ] {
            assert!(matches!(bad.to_body(), Err(Error::InvalidInput(_))));
        }
        let ep = crate::Endpoints::new("http://h:1/prefix").unwrap();
        let req = framing::request(&ep, RequestKind::Setup, r.to_body().unwrap(), None);
        assert_eq!(req.uri().to_string(), "http://h:1/prefix/v1/api/auth/setup");
        assert_eq!(req.method(), http::Method::POST);
        assert!(req.headers().get(http::header::AUTHORIZATION).is_none());
        let get = |kind| framing::request(&ep, kind, Vec::new(), None);
        assert_eq!(get(RequestKind::Health).uri().path(), "/prefix/v1/api/healthcheck");
        assert_eq!(get(RequestKind::Health).method(), http::Method::GET);
        assert_eq!(get(RequestKind::SetupStatus).uri().path(), "/prefix/v1/api/auth/status");
    }

    #[test]
    fn decodes_the_cluster_status_of_the_real_server() {
        // As the real server (0.4.3-rc.4, one node) answered.
        let body = br#"{"status":"healthy","version":"0.4.3-rc.4","build_date":"2026-11-23 15:45:52 UTC","is_cluster_mode":true,"cluster_id":"vm","node_id":1,"is_leader":true,"total_groups":3,"groups_leading":3,"current_term":1,"last_applied":1,"millis_since_quorum_ack":0,"nodes":[{"node_id":1,"role":"leader","status":"active","api_addr":"127.0.0.1:20672","is_self":true,"is_leader":true,"replication_lag":null,"catchup_progress_pct":null,"hostname":"vm","memory_usage_mb":78,"cpu_usage_percent":88.88889,"uptime_seconds":0,"uptime_human":"0m"}]}"#;
        let c = decode_cluster_health(StatusCode::OK, &HeaderMap::new(), body).unwrap();
        assert!(c.is_healthy() && c.is_cluster_mode && c.is_leader);
        assert_eq!(
            (c.node_id, c.total_groups, c.groups_leading, c.current_term),
            (1, 3, 3, 1)
        );
        let leader = c.leader().unwrap();
        assert_eq!(
            (leader.node_id, leader.api_addr.as_str(), leader.role.as_str()),
            (1, "127.0.0.1:20672", "leader")
        );
        let forbidden = br#"{"error":"Access denied. Cluster health is localhost-only."}"#;
        match decode_cluster_health(StatusCode::FORBIDDEN, &HeaderMap::new(), forbidden) {
            Err(Error::LocalhostOnly { endpoint, server }) => {
                assert_eq!(endpoint, "/v1/api/cluster/health");
                assert_eq!(server.code, ErrorCode::Forbidden);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_cluster_health(StatusCode::OK, &HeaderMap::new(), b"{}"),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn decodes_recorded_answers() {
        let h = HeaderMap::new();
        let ok =
            br#"{"api_version":"v1","build_date":"2026-11-22 19:18:29 UTC","status":"healthy","version":"0.4.3-rc.4"}"#;
        let health = decode_health(StatusCode::OK, &h, ok).unwrap();
        assert!(health.is_healthy());
        assert_eq!(health.version, "0.4.3-rc.4");
        let st = decode_setup_status(
            StatusCode::OK,
            &h,
            br#"{"message":"Server is configured and ready.","needs_setup":false}"#,
        )
        .unwrap();
        assert!(!st.needs_setup);
        let e = decode_health(
            StatusCode::FORBIDDEN,
            &h,
            br#"{"error":"Access denied. Health endpoint is localhost-only."}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::LocalhostOnly { server, .. } if server.status == 403),
            "{e:?}"
        );
        assert_eq!(e.code(), Some(&ErrorCode::Forbidden));
        assert_eq!(
            e.server().unwrap().message,
            "Access denied. Health endpoint is localhost-only."
        );
        assert!(e.to_string().contains("localhost"), "{e}");
        let e = decode_setup_status(
            StatusCode::FORBIDDEN,
            &h,
            br#"{"error":"forbidden","message":"Setup status can only be checked from localhost"}"#,
        )
        .unwrap_err();
        assert!(matches!(e, Error::LocalhostOnly { .. }));
        for (status, kind, code) in [
            (409, "already_configured", ErrorCode::AlreadyConfigured),
            (400, "weak_password", ErrorCode::WeakPassword),
            (400, "invalid_user", ErrorCode::InvalidUser),
            (409, "user_exists", ErrorCode::UserExists),
            (429, "rate_limited", ErrorCode::RateLimited),
        ] {
            let body = format!(r#"{{"error":"{kind}","message":"m"}}"#);
            let e = decode_setup(StatusCode::from_u16(status).unwrap(), &h, body.as_bytes()).unwrap_err();
            assert_eq!(e.code(), Some(&code), "{kind}");
            assert_eq!(e.server().unwrap().status, status);
        }
        let done = decode_setup(
            StatusCode::OK,
            &h,
            br#"{"user":{"id":"admin","role":"dba","email":null},"message":"Setup complete"}"#,
        )
        .unwrap();
        assert_eq!((done.user.id.as_str(), done.user.role.as_str()), ("admin", "dba"));
    }
}
