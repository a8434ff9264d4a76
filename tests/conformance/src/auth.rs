//! Conformance scenarios for the auth lifecycle where deployments break it:
//! a token refused while the password is still good (a rotated JWT secret,
//! a role change), tokens that are born expired (`KALAMDB_JWT_EXPIRY_HOURS=0`)
//! and a server clock that disagrees with the client's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kalam_driver::prelude::*;
use kalam_driver::{KalamLinkClient, Runtime};

use crate::scenarios::{PATIENCE, next_event, root, setup_table, until_ready};
use crate::{Backend, FaultProxy};

/// Sequential `SELECT i` for `i` in `0..n`, each of which must succeed.
async fn all_succeed<R: Runtime>(client: &KalamLinkClient<R>, n: i64, what: &str) {
    for i in 0..n {
        let r = client
            .execute_query(&format!("SELECT {i}"))
            .await
            .unwrap_or_else(|e| panic!("{what}: query {i} of {n} failed: {e}"));
        let v: i64 = r.rows().next().expect("a row").get(0).expect("a number");
        assert_eq!(v, i);
    }
}

/// The server is redeployed with a new JWT secret while a client holds a
/// token (and a refresh token) signed with the old one. The next query is
/// refused `INVALID_CREDENTIALS`; the client logs in again with its stored
/// password, once, and every one of ten queries succeeds.
pub async fn rotated_jwt_secret_every_query_succeeds<R: Runtime>(b: &dyn Backend) {
    let proxy = FaultProxy::start(&b.url()).await.expect("proxy");
    let client = root::<R>(b, &proxy.url());
    all_succeed(&client, 1, "before the rotation").await;
    b.rotate_jwt_secret().await;
    all_succeed(&client, 10, "after the rotation").await;
    assert_eq!(
        proxy.count("/v1/api/auth/login"),
        2,
        "one login before, one recovery after: {:?}",
        proxy.requests()
    );
    assert!(proxy.count("/v1/api/auth/refresh") <= 1, "{:?}", proxy.requests());
}

/// A user's role changes while the user has a live subscription. The server
/// then refuses the user's outstanding tokens (they carry the old role; the
/// real server after its user cache expires, within 5 s). When the socket
/// drops, the reconnect's `authenticate` with the old token is refused; the
/// client gets one new token by logging in again, authenticates once more
/// and the subscription resumes. HTTP queries recover the same way.
pub async fn role_change_under_a_live_subscription_resumes<R: Runtime>(b: &dyn Backend) {
    const USER: &str = "conf_role_user";
    const PASSWORD: &str = "RoleUserPass123!";
    let admin = root::<R>(b, &b.url());
    admin
        .execute_query("CREATE NAMESPACE IF NOT EXISTS conf_roles")
        .await
        .expect("create namespace");
    // A user table: each user reads and writes their own rows.
    let table = "conf_roles.notes";
    admin
        .execute_query(&format!(
            "CREATE USER TABLE IF NOT EXISTS {table} (id BIGINT PRIMARY KEY, name TEXT, qty INT)"
        ))
        .await
        .expect("create table");
    admin
        .execute_query(&format!("CREATE USER {USER} WITH PASSWORD '{PASSWORD}' ROLE user"))
        .await
        .expect("create the user");
    let proxy = FaultProxy::start(&b.url()).await.expect("proxy");
    let errors = Arc::new(AtomicUsize::new(0));
    let counted = errors.clone();
    let user = crate::builder::<R>()
        .base_url(proxy.url())
        .auth(AuthProvider::basic_auth(USER.into(), PASSWORD.into()))
        .connection_options(
            ConnectionOptions::default().with_reconnect_delay(Duration::from_millis(50), Duration::from_millis(200)),
        )
        .on_error(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .expect("client");
    let insert = |id: i64| format!("INSERT INTO {table} (id, name, qty) VALUES ({id}, 'mine', {id})");
    // The same user writing from another client (straight to the server).
    let writer = crate::builder::<R>()
        .base_url(b.url())
        .auth(AuthProvider::basic_auth(USER.into(), PASSWORD.into()))
        .build()
        .expect("client");
    writer.execute_query(&insert(1)).await.expect("the user's first row");
    let mut s = user
        .live_events(&format!("SELECT * FROM {table}"))
        .await
        .expect("subscribe");
    until_ready(&mut s).await;
    // A token of the old role, to see when the server stops taking it.
    let old = crate::builder::<R>()
        .base_url(b.url())
        .build()
        .expect("client")
        .login(USER, PASSWORD)
        .await
        .expect("login");
    let probe = crate::builder::<R>()
        .base_url(b.url())
        .auth(AuthProvider::jwt_token(old.access_token))
        .build()
        .expect("client");
    admin
        .execute_query(&format!("ALTER USER {USER} SET ROLE service"))
        .await
        .expect("change the role");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match probe.execute_query("SELECT 1").await {
            Err(e) if e.code() == Some(&ErrorCode::InvalidCredentials) => break,
            Ok(_) => {}
            Err(e) => panic!("the old token: expected INVALID_CREDENTIALS, got {e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server kept taking the old role's token"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let upgrades = proxy.ws_upgrades();
    proxy.drop_all();
    // The socket comes back (a refused authenticate, then a new token) and
    // the subscription with it: a row the user writes now is delivered.
    writer
        .execute_query(&insert(2))
        .await
        .expect("an HTTP query with the old role's token recovers too");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "row 2 never came");
        match next_event(&mut s).await {
            LiveEvent::Insert { row } if row.get::<i64>("id").ok() == Some(2) => break,
            LiveEvent::InitialRows { rows, .. } if rows.iter().any(|r| r.get::<i64>("id").ok() == Some(2)) => break,
            _ => {}
        }
    }
    assert!(proxy.ws_upgrades() > upgrades, "it reconnected");
    assert_eq!(errors.load(Ordering::SeqCst), 0, "nothing for the application to see");
    assert_eq!(
        proxy.count("/v1/api/auth/login"),
        2,
        "one login, then one for the new role: {:?}",
        proxy.requests()
    );
}

/// A server set to `KALAMDB_JWT_EXPIRY_HOURS=0` issues tokens with
/// `exp == iat`, and takes them for its 60 s leeway. Twenty sequential
/// queries all succeed, with one login.
pub async fn zero_hour_tokens_every_query_succeeds<R: Runtime>(b: &dyn Backend) {
    let proxy = FaultProxy::start(&b.url()).await.expect("proxy");
    let client = root::<R>(b, &proxy.url());
    all_succeed(&client, 20, "0-hour tokens").await;
    assert_eq!(proxy.count("/v1/api/auth/login"), 1, "{:?}", proxy.requests());
    // The WebSocket's authenticate takes the same token, and the server too.
    let table = setup_table(&client, "conf_zero_hour").await;
    let mut s = client
        .live_events(&format!("SELECT * FROM {table}"))
        .await
        .expect("a live query with a 0-hour token");
    until_ready(&mut s).await;
    assert_eq!(proxy.count("/v1/api/auth/login"), 1, "{:?}", proxy.requests());
}

/// Runs a client whose clock is off from the server's; every query must
/// succeed with one login, and the skew is reported once to `on_error`.
async fn skewed<R: Runtime>(b: &dyn Backend, expect_warning: bool) {
    let proxy = FaultProxy::start(&b.url()).await.expect("proxy");
    let warnings = Arc::new(AtomicUsize::new(0));
    let counted = warnings.clone();
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .on_error(move |e| {
            if matches!(e, Error::ClockSkew { .. }) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .expect("client");
    all_succeed(&client, 20, "a skewed clock").await;
    let table = setup_table(&client, "conf_skew").await;
    let mut s = client
        .live_events(&format!("SELECT * FROM {table}"))
        .await
        .expect("a live query authenticates with the token");
    until_ready(&mut s).await;
    assert_eq!(proxy.count("/v1/api/auth/login"), 1, "{:?}", proxy.requests());
    assert_eq!(proxy.count("/v1/api/auth/refresh"), 0, "{:?}", proxy.requests());
    assert_eq!(warnings.load(Ordering::SeqCst), usize::from(expect_warning));
}

/// The client's clock is 10 minutes ahead of the server's, and the server
/// issues 0-hour tokens: by the client's own clock every token is long
/// expired on arrival. Judged on the server's clock (from its `Date`
/// headers), each is used while the server takes it.
pub async fn a_client_clock_ten_minutes_ahead_changes_nothing<R: Runtime>(b: &dyn Backend) {
    skewed::<R>(b, true).await;
}

/// The client's clock is 25 hours ahead of the server's, and the
/// application configures a token the server issued a moment ago: by the
/// client's clock it expired an hour ago. Before its own clock condemns it,
/// the client asks the server's time once (a tokenless request; any answer
/// carries a `Date`) and then uses the token: queries and a live query work,
/// with no login (there is nothing to log in with) and one probe.
pub async fn a_configured_token_from_a_server_a_day_behind_is_used<R: Runtime>(b: &dyn Backend) {
    let token = crate::builder::<R>()
        .base_url(b.url())
        .build()
        .expect("client")
        .login("root", &b.root_password())
        .await
        .expect("login")
        .access_token;
    let proxy = FaultProxy::start(&b.url()).await.expect("proxy");
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .jwt_token(token)
        .build()
        .expect("client");
    all_succeed(&client, 5, "a configured token, the client's clock a day ahead").await;
    let table = setup_table(&client, "conf_configured_skew").await;
    let mut s = client
        .live_events(&format!("SELECT * FROM {table}"))
        .await
        .expect("a live query authenticates with the token");
    until_ready(&mut s).await;
    assert_eq!(
        proxy.count("/v1/api/healthcheck"),
        1,
        "one probe: {:?}",
        proxy.requests()
    );
    assert_eq!(proxy.count("/v1/api/auth/login"), 0, "{:?}", proxy.requests());
}

/// The client's clock is 25 hours behind the server's, whose tokens live
/// 24 hours: by the client's clock a token would still be good a day after
/// the server refuses it; judged on the server's clock, it is renewed in
/// time. Here: queries succeed, the skew is reported once.
pub async fn a_client_clock_a_day_behind_changes_nothing<R: Runtime>(b: &dyn Backend) {
    skewed::<R>(b, true).await;
}
