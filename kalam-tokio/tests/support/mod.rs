//! Test support shared by the conformance suites: the servers the suite runs
//! against, token minting with a known secret, and the fault proxy.

#![allow(dead_code)]

pub mod logs;
pub mod scenarios;

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a scenario needs to know about a server.
pub trait Backend: Send + Sync {
    /// `http://127.0.0.1:PORT`.
    fn url(&self) -> String;
    /// The root user's password.
    fn root_password(&self) -> String;
    /// The server's HS256 secret, to mint tokens it accepts (or rejects).
    fn jwt_secret(&self) -> String;
}

pub use kalam_testkit::FaultProxy;

impl Backend for kalam_testkit::TestServer {
    fn url(&self) -> String {
        kalam_testkit::TestServer::url(self)
    }
    fn root_password(&self) -> String {
        kalam_testkit::TestServer::root_password(self).to_owned()
    }
    fn jwt_secret(&self) -> String {
        kalam_testkit::TestServer::jwt_secret(self).to_owned()
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Mints an HS256 JWT with the server's claim set.
pub fn mint(secret: &str, sub: &str, role: &str, token_type: &str, iat: u64, exp: u64) -> String {
    let header = B64.encode(r#"{"typ":"JWT","alg":"HS256"}"#);
    let claims = serde_json::json!({
        "sub": sub, "iss": "kalamdb", "exp": exp, "iat": iat,
        "email": null, "role": role, "token_type": token_type,
    });
    let payload = B64.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length works");
    mac.update(signing_input.as_bytes());
    let sig = B64.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// A throwaway real KalamDB server (../shared/kalamdb-server), stopped on drop.
pub struct RealServer {
    url: String,
    pid: String,
    data_dir: String,
    dir: PathBuf,
}

/// Where the real server's scripts are.
pub fn real_server_dir() -> PathBuf {
    std::env::var_os("KALAMDB_SERVER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/kalamdb-server")))
}

pub const REAL_ROOT_PASSWORD: &str = "kalamdb123";
pub const REAL_JWT_SECRET: &str = "local-test-secret-0123456789abcdefghijklmnop";

impl RealServer {
    /// Starts a server. These tests run only when asked for (`--ignored`),
    /// so a missing server is a failure here, never a silent pass.
    pub fn start() -> RealServer {
        let dir = real_server_dir();
        let script = dir.join("start.sh");
        assert!(
            script.exists(),
            "the real KalamDB server is not at {} (set KALAMDB_SERVER_DIR)",
            dir.display()
        );
        let out = Command::new("bash")
            .arg(&script)
            .env("KALAMDB_ROOT_PASSWORD", REAL_ROOT_PASSWORD)
            .env("KALAMDB_JWT_SECRET", REAL_JWT_SECRET)
            .output()
            .expect("run start.sh");
        assert!(
            out.status.success(),
            "start.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in start.sh output {line:?}"))
                .to_owned()
        };
        RealServer {
            url: field("URL="),
            pid: field("PID="),
            data_dir: field("DATA_DIR="),
            dir,
        }
    }
}

impl Backend for RealServer {
    fn url(&self) -> String {
        self.url.clone()
    }
    fn root_password(&self) -> String {
        REAL_ROOT_PASSWORD.into()
    }
    fn jwt_secret(&self) -> String {
        REAL_JWT_SECRET.into()
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(self.dir.join("stop.sh"))
            .arg(&self.pid)
            .arg(&self.data_dir)
            .output();
    }
}
