//! Test support shared by the conformance suites: the servers the suite runs
//! against, token minting with a known secret, and the fault proxy.

#![allow(dead_code)]

pub mod logs;
pub mod scenarios;

/// Calls `$m!` with the name of every conformance scenario, so each backend
/// runs the same list.
#[allow(unused_macros)]
macro_rules! for_each_scenario {
    ($m:ident) => {
        $m!(
            one_login_for_concurrent_first_queries,
            refused_password_is_typed_and_final,
            refresher_called_once_for_expired_token,
            token_expired_answer_is_recovered_once,
            provider_asked_for_http_without_connect,
            unicode_and_bigint_round_trip,
            bad_input_is_typed,
            explicit_login_refresh_and_refresh_token_misuse,
            subscriptions_share_one_socket,
            dropped_socket_loses_no_change,
            reconnect_asks_provider_again,
            refused_ws_auth_surfaces_once,
            stalled_subscriber_does_not_delay_another,
            live_events_returns_after_ack_changes_only,
            live_events_returns_after_ack_initial_rows,
            live_events_returns_after_ack_refusal_is_err,
            many_subscriptions_all_deliver,
            credentials_from_refresher_become_current,
            live_stream_outlives_client_handles,
        );
    };
}

/// Server settings a scenario needs beyond the server's defaults. Both
/// runners (testkit.rs, real_server.rs) start each scenario's server with
/// [`ServerSettings::for_scenario`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerSettings {
    /// `rate_limit.max_subscriptions_per_user` (the server's default is 10).
    pub max_subscriptions_per_user: Option<usize>,
}

impl ServerSettings {
    /// What the scenario called `name` needs.
    pub fn for_scenario(name: &str) -> ServerSettings {
        match name {
            "many_subscriptions_all_deliver" => ServerSettings {
                max_subscriptions_per_user: Some(scenarios::MANY_SUBSCRIPTIONS_PER_USER_LIMIT),
            },
            _ => ServerSettings::default(),
        }
    }

    /// An in-process kit with these settings.
    pub async fn start_kit(&self) -> kalam_testkit::TestServer {
        let mut builder = kalam_testkit::TestServer::builder();
        if let Some(n) = self.max_subscriptions_per_user {
            builder = builder.max_subscriptions_per_user(n);
        }
        builder.start().await
    }

    /// A real server with these settings (through `KALAMDB_EXTRA_TOML`).
    pub fn start_real(&self) -> RealServer {
        match self.max_subscriptions_per_user {
            Some(n) => {
                let toml = format!("[rate_limit]\nmax_subscriptions_per_user = {n}");
                RealServer::start_with(&[("KALAMDB_EXTRA_TOML", &toml)])
            }
            None => RealServer::start(),
        }
    }
}

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

pub use kalam_testkit::RealServer;
pub use kalam_testkit::real::{REAL_JWT_SECRET, REAL_ROOT_PASSWORD};

impl Backend for RealServer {
    fn url(&self) -> String {
        RealServer::url(self)
    }
    fn root_password(&self) -> String {
        REAL_ROOT_PASSWORD.into()
    }
    fn jwt_secret(&self) -> String {
        REAL_JWT_SECRET.into()
    }
}
