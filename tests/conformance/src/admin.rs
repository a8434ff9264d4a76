//! Conformance scenarios for the health check and first-time setup, on any
//! runtime, against the kit and the real server.

use kalam_driver::prelude::*;
use kalam_driver::{KalamLinkClient, Runtime};

use crate::scenarios::root;
use crate::{Backend, FaultProxy};

/// `health_check()`, `needs_setup()` and `cluster_health()` need no token: no login goes out,
/// nothing carries an `Authorization` header, and a configured server says
/// it needs no setup.
pub async fn health_check_needs_no_token<R: Runtime>(b: &dyn Backend) {
    let proxy = FaultProxy::start(&b.url()).await.expect("proxy");
    let client = root::<R>(b, &proxy.url());
    let health = client.health_check().await.expect("health from loopback");
    assert!(health.is_healthy(), "{health:?}");
    assert!(!health.version.is_empty());
    assert_eq!(health.api_version, "v1");
    assert!(
        !client.needs_setup().await.expect("setup status"),
        "a configured server"
    );
    let cluster = client.cluster_health().await.expect("cluster health from loopback");
    assert!(cluster.is_healthy() && cluster.is_cluster_mode, "{cluster:?}");
    let leader = cluster.leader().expect("a single node leads");
    assert!(leader.is_self && leader.node_id == cluster.node_id, "{cluster:?}");
    assert_eq!(proxy.count("/v1/api/auth/login"), 0, "no login for open endpoints");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests.iter().all(|r| r.auth_scheme.is_none()), "{requests:?}");
}

/// A client without credentials, for the open endpoints.
fn anonymous<R: Runtime>(url: &str) -> KalamLinkClient<R> {
    crate::builder::<R>().base_url(url).build().expect("client")
}

/// `setup(..)` on a configured server (every server `start.sh` starts is
/// one) is refused with the typed `already_configured` (409), and changes
/// nothing: root's password still works.
pub async fn setup_is_refused_once_configured<R: Runtime>(b: &dyn Backend) {
    let client = anonymous::<R>(&b.url());
    assert!(!client.needs_setup().await.expect("setup status"));
    let e = client
        .setup(SetupRequest::new("second_admin", "Adm1n-Passw0rd!", "R00t-Passw0rd!"))
        .await
        .expect_err("a configured server");
    assert_eq!(
        (e.code(), e.server().map(|s| s.status)),
        (Some(&ErrorCode::AlreadyConfigured), Some(409)),
        "{e}"
    );
    root::<R>(b, &b.url())
        .execute_query("SELECT 1")
        .await
        .expect("root's password is unchanged");
}

/// The whole first-time setup, on a server started without a root password
/// (the kit's `needs_setup(true)`; `start.sh` always sets one): the status
/// says so, weak passwords and bad users are refused with their codes, the
/// setup creates the DBA user and sets root's password, returns no token
/// (both log in afterwards), and a second setup is `already_configured`.
/// Nothing is sent with a token.
pub async fn first_time_setup_then_login<R: Runtime>(b: &dyn Backend) {
    let proxy = FaultProxy::start(&b.url()).await.expect("proxy");
    let client = anonymous::<R>(&proxy.url());
    let status = client.setup_status().await.expect("setup status");
    assert!(status.needs_setup, "{status:?}");
    assert!(!status.message.is_empty());
    assert!(client.needs_setup().await.unwrap());

    let weak = client
        .setup(SetupRequest::new("admin", "short", "R00t-Passw0rd!"))
        .await
        .expect_err("a weak password");
    assert_eq!(
        (weak.code(), weak.server().map(|s| s.status)),
        (Some(&ErrorCode::WeakPassword), Some(400)),
        "{weak}"
    );
    let bad_user = client
        .setup(SetupRequest::new("bad/user", "Adm1n-Passw0rd!", "R00t-Passw0rd!"))
        .await
        .expect_err("an invalid user id");
    assert_eq!(bad_user.code(), Some(&ErrorCode::InvalidUser), "{bad_user}");
    let sent = proxy.count("/v1/api/auth/setup");
    let root_as_dba = client
        .setup(SetupRequest::new("root", "Adm1n-Passw0rd!", "R00t-Passw0rd!"))
        .await
        .expect_err("root may not be the DBA user");
    assert!(matches!(root_as_dba, Error::InvalidInput(_)), "{root_as_dba}");
    assert_eq!(proxy.count("/v1/api/auth/setup"), sent, "refused before sending");
    assert!(client.needs_setup().await.unwrap(), "refusals changed nothing");

    let done = client
        .setup(SetupRequest::new("admin", "Adm1n-Passw0rd!", "R00t-Passw0rd!").with_email("admin@example.com"))
        .await
        .expect("setup");
    assert_eq!((done.user.id.as_str(), done.user.role.as_str()), ("admin", "dba"));
    assert!(!client.needs_setup().await.unwrap());

    let admin = crate::builder::<R>()
        .base_url(proxy.url())
        .auth(AuthProvider::basic_auth("admin".into(), "Adm1n-Passw0rd!".into()))
        .build()
        .unwrap();
    assert_eq!(admin.current_user().await.expect("the DBA logs in").user.role, "dba");
    let root = crate::builder::<R>()
        .base_url(proxy.url())
        .auth(AuthProvider::system_user_auth("R00t-Passw0rd!".into()))
        .build()
        .unwrap();
    root.execute_query("SELECT 1")
        .await
        .expect("root logs in with its new password");

    let again = client
        .setup(SetupRequest::new("admin2", "Adm1n-Passw0rd!", "R00t-Passw0rd!"))
        .await
        .expect_err("a second setup");
    assert_eq!(again.code(), Some(&ErrorCode::AlreadyConfigured), "{again}");
    let open: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/api/auth/setup" || r.path == "/v1/api/auth/status")
        .collect();
    assert!(open.iter().all(|r| r.auth_scheme.is_none()), "{open:?}");
}

/// A client that is not on the server's machine (the kit's
/// `remote_peers(true)`): health, setup status and setup answer 403, which
/// is the typed `Error::LocalhostOnly` naming the endpoint, not a crash;
/// the remote readiness check, an authenticated `SELECT 1`, works.
pub async fn localhost_only_endpoints_refuse_a_remote_client<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    let health = client.health_check().await.expect_err("remote");
    match &health {
        Error::LocalhostOnly { endpoint, server } => {
            assert_eq!(*endpoint, "/v1/api/healthcheck");
            assert_eq!((server.status, &server.code), (403, &ErrorCode::Forbidden));
        }
        other => panic!("expected LocalhostOnly, got {other:?}"),
    }
    assert!(
        health.to_string().contains("SELECT 1"),
        "the message says what to do: {health}"
    );
    assert!(matches!(client.needs_setup().await, Err(Error::LocalhostOnly { .. })));
    let cluster = client.cluster_health().await;
    assert!(
        matches!(&cluster, Err(Error::LocalhostOnly { endpoint, .. }) if *endpoint == "/v1/api/cluster/health"),
        "{cluster:?}"
    );
    let setup = client
        .setup(SetupRequest::new("admin", "Adm1n-Passw0rd!", "R00t-Passw0rd!"))
        .await;
    assert!(matches!(setup, Err(Error::LocalhostOnly { .. })), "{setup:?}");
    client
        .execute_query("SELECT 1")
        .await
        .expect("the remote readiness check");
}
