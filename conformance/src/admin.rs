//! Conformance scenarios for the health check and first-time setup, on any
//! runtime, against the kit and the real server.

use kalam_client::Runtime;

use crate::scenarios::root;
use crate::{Backend, FaultProxy};

/// `health_check()` and `needs_setup()` need no token: no login goes out,
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
    assert_eq!(proxy.count("/v1/api/auth/login"), 0, "no login for open endpoints");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests.iter().all(|r| r.auth_scheme.is_none()), "{requests:?}");
}
