//! Conformance scenarios that only the test kit's controls can provoke:
//! tokens the server expires behind the client's back, broken answers,
//! malformed frames, server-side socket drops, refused WebSocket
//! authentication, frames held back. They take the kit itself
//! ([`TestServer`]), not any [`Backend`](crate::Backend): the real server
//! has no such controls. Listed in
//! [`for_each_kit_only_scenario!`](crate::for_each_kit_only_scenario)
//! (and `gzip_frames_from_the_server_decode` in
//! [`for_each_kit_only_gzip_scenario!`](crate::for_each_kit_only_gzip_scenario)),
//! so every adapter runs them on its runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kalam_driver::prelude::*;
use kalam_driver::{KalamLinkClient, Runtime};
use kalam_testkit::{Fault, Mint};

use crate::core_scenarios::spawn;
use crate::scenarios::{PATIENCE, eventually, next_event as next, until_ready};
use crate::{FaultProxy, TestServer, mint, unix_now};

/// A root client of the kit that reconnects after 20 ms (at most 100 ms).
fn root<R: Runtime>(server: &TestServer) -> KalamLinkClient<R> {
    crate::builder::<R>()
        .base_url(server.url())
        .auth(AuthProvider::system_user_auth(server.root_password().into()))
        .connection_options(
            ConnectionOptions::default().with_reconnect_delay(Duration::from_millis(20), Duration::from_millis(100)),
        )
        .build()
        .unwrap()
}

/// Creates `ns` and `ns.t (id BIGINT PRIMARY KEY, v TEXT)`; returns `ns.t`.
async fn table<R: Runtime>(client: &KalamLinkClient<R>, ns: &str) -> String {
    client
        .execute_query(&format!("CREATE NAMESPACE IF NOT EXISTS {ns}"))
        .await
        .unwrap();
    client
        .execute_query(&format!("CREATE TABLE {ns}.t (id BIGINT PRIMARY KEY, v TEXT)"))
        .await
        .unwrap();
    format!("{ns}.t")
}

/// A refresher that mints a fresh root access token with the kit's secret
/// (so it is valid after `force_expire_all`), counting its calls.
fn minting_refresher(server: &TestServer) -> (AuthRefreshCallback, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (counter, secret) = (calls.clone(), server.jwt_secret().to_owned());
    let refresher: AuthRefreshCallback = Arc::new(move || {
        let (counter, secret) = (counter.clone(), secret.clone());
        Box::pin(async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let now = unix_now();
            Ok(AuthProvider::jwt_token(mint(
                &secret,
                "root",
                "system",
                "access",
                now,
                now + 3600,
            )))
        }) as Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send>>
    });
    (refresher, calls)
}

/// The server expires every token behind the client's back. The query is
/// answered TOKEN_EXPIRED; the refresh token (expired too) is refused; the
/// stored basic credentials log in again; the query is retried once.
pub async fn server_side_expiry_recovers_through_refresh_then_login<R: Runtime>(server: &TestServer) {
    let client = root::<R>(server);
    client.execute_query("SELECT 1").await.unwrap();
    assert_eq!(server.counters().logins, 1);
    server.force_expire_all();
    let r = client.execute_query("SELECT 2").await.expect("recovered");
    assert_eq!(r.rows().next().unwrap().get::<i64>(0).unwrap(), 2);
    let c = server.counters();
    assert_eq!(c.logins, 2, "one new login");
    assert_eq!(c.queries, 3, "SELECT 1, SELECT 2 refused, SELECT 2 retried");
    let refreshes = server
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/api/auth/refresh")
        .count();
    assert_eq!(refreshes, 1, "the refresh token was tried first, once");
}

/// TOKEN_EXPIRED for many concurrent queries: the refresher runs once and
/// each query is retried once, successfully.
pub async fn server_side_expiry_with_refresher_runs_it_once<R: Runtime>(server: &TestServer) {
    let first = server.mint_token(Mint::access("root"));
    let (refresher, calls) = minting_refresher(server);
    let client = crate::builder::<R>()
        .base_url(server.url())
        .jwt_token(first)
        .auth_refresher(refresher)
        .build()
        .unwrap();
    client.execute_query("SELECT 1").await.unwrap();
    server.force_expire_all();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let c = client.clone();
            spawn::<R, _>(async move { c.execute_query(&format!("SELECT {i}")).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("recovered after one refresh");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the refresher ran once for all");
    // How many of the ten went out with the old token depends on timing (the
    // first refusal can land before the last are submitted); each went out at
    // most twice, and at least one was refused.
    let sent = server.counters().queries - 1;
    assert!((11..=20).contains(&sent), "{sent} requests for 10 queries");
}

/// A retry answered TOKEN_EXPIRED again is a typed error: no third attempt.
pub async fn expired_again_after_recovery_is_final<R: Runtime>(server: &TestServer) {
    // Another token than the configured one (an older `iat`): the same token
    // handed back would not be sent again at all.
    let stale = server.mint_token(Mint {
        iat: Some(unix_now() - 5),
        ..Mint::access("root")
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let refresher: AuthRefreshCallback = {
        let (calls, stale) = (calls.clone(), stale.clone());
        Arc::new(move || {
            let (calls, stale) = (calls.clone(), stale.clone());
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(AuthProvider::jwt_token(stale)) // also expired on the server
            }) as Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send>>
        })
    };
    let client = crate::builder::<R>()
        .base_url(server.url())
        .jwt_token(server.mint_token(Mint::access("root")))
        .auth_refresher(refresher)
        .build()
        .unwrap();
    server.force_expire_all();
    let e = client.execute_query("SELECT 1").await.unwrap_err();
    assert!(e.is_token_expired(), "{e:?}");
    assert_eq!(server.counters().queries, 2, "sent, retried once, no more");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A 5xx HTML page, a non-JSON 200, a truncated body, a JSON error with an
/// unknown shape: each a typed error, and the next query works.
pub async fn broken_answers_are_typed_errors_and_lose_nothing<R: Runtime>(server: &TestServer) {
    let client = root::<R>(server);
    client.execute_query("SELECT 1").await.unwrap();

    server.fail_next(
        1,
        Fault::text(502, "<html><body>502 Bad Gateway</body></html>").on("/v1/api/sql"),
    );
    let e = client.execute_query("SELECT 1").await.unwrap_err();
    let s = e.server().expect("a server error");
    assert_eq!((s.status, &s.code), (502, &ErrorCode::Unspecified));
    assert!(s.message.contains("Bad Gateway"));

    server.fail_next(
        1,
        Fault::json(200, "{\"status\":\"success\",\"results\":[{\"rows\":[[1]").on("/v1/api/sql"),
    );
    assert!(matches!(client.execute_query("SELECT 1").await, Err(Error::Decode(_))));

    server.fail_next(1, Fault::text(200, "not json at all").on("/v1/api/sql"));
    assert!(matches!(client.execute_query("SELECT 1").await, Err(Error::Decode(_))));

    server.fail_next(1, Fault::json(503, r#"{"weird":true}"#).on("/v1/api/sql"));
    let e = client.execute_query("SELECT 1").await.unwrap_err();
    assert_eq!(e.server().map(|s| s.status), Some(503));

    // A refusal for rate never ran the statement: it is sent again after
    // the server's Retry-After, and succeeds.
    let limited = || {
        Fault::json(
            429,
            r#"{"error":"RATE_LIMIT_EXCEEDED","message":"slow down","retry_after_seconds":1}"#,
        )
        .on("/v1/api/sql")
    };
    server.fail_next(1, limited());
    let before = server.counters().queries;
    client
        .execute_query("SELECT 1")
        .await
        .expect("sent again after the pause");
    assert_eq!(server.counters().queries - before, 2, "refused once, then run");
    // With the retry off, the caller gets it typed, with the server's word.
    let no_retry = crate::builder::<R>()
        .base_url(server.url())
        .auth(AuthProvider::system_user_auth(server.root_password().into()))
        .connection_options(ConnectionOptions::default().with_rate_limit_retry(false))
        .build()
        .unwrap();
    no_retry.execute_query("SELECT 1").await.unwrap();
    server.fail_next(1, limited());
    let e = no_retry.execute_query("SELECT 1").await.unwrap_err();
    let s = e.server().unwrap();
    assert_eq!((&s.code, s.retry_after_secs), (&ErrorCode::RateLimitExceeded, Some(1)));

    // A login answered with garbage: typed, and not a sticky refusal.
    let fresh = root::<R>(server);
    server.fail_next(1, Fault::text(500, "oops").on("/v1/api/auth/login"));
    assert!(fresh.execute_query("SELECT 1").await.is_err());
    fresh.execute_query("SELECT 1").await.expect("the next attempt logs in");

    let r = client.execute_query("SELECT 'still fine'").await.unwrap();
    assert_eq!(r.rows().next().unwrap().get::<&str>(0).unwrap(), "still fine");
}

/// The server drops every socket without a close frame: the client
/// reconnects, resubscribes from its last _seq, and loses no change.
pub async fn server_dropping_sockets_loses_no_change<R: Runtime>(server: &TestServer) {
    let client = root::<R>(server);
    let t = table(&client, "kit_drop").await;
    let mut s = client.live_events(&format!("SELECT * FROM {t}")).await.unwrap();
    until_ready(&mut s).await;
    client
        .execute_query(&format!("INSERT INTO {t} (id, v) VALUES (1, 'a')"))
        .await
        .unwrap();
    assert!(matches!(next(&mut s).await, LiveEvent::Insert { .. }));
    server.drop_all_sockets();
    // The drop takes effect on the kit's socket task; until it has, that
    // task could still forward the next changes on the old socket. Once the
    // socket is gone (or the client is already on a new one), it cannot.
    eventually("the kit dropped the socket", || {
        server.open_sockets() == 0 || server.counters().ws_upgrades >= 2
    })
    .await;
    client
        .execute_query(&format!("INSERT INTO {t} (id, v) VALUES (2, 'b')"))
        .await
        .unwrap();
    client
        .execute_query(&format!("INSERT INTO {t} (id, v) VALUES (3, 'c')"))
        .await
        .unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut resumed = None;
    while ids.len() < 2 {
        match next(&mut s).await {
            LiveEvent::Subscribed { resumed_from, .. } => resumed = resumed_from,
            LiveEvent::InitialRows { rows, .. } => {
                ids.extend(rows.iter().map(|r| r["id"].as_str().unwrap().to_owned()))
            }
            LiveEvent::Insert { row } => {
                ids.insert(row["id"].as_str().unwrap().to_owned());
            }
            _ => {}
        }
    }
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["2", "3"]);
    assert!(resumed.is_some(), "resubscribed from the last _seq");
    assert_eq!(server.counters().ws_upgrades, 2);
}

/// A malformed frame is reported once to on_error and loses nothing else.
pub async fn malformed_frame_is_reported_and_the_session_goes_on<R: Runtime>(server: &TestServer) {
    let errors = Arc::new(AtomicUsize::new(0));
    let counter = errors.clone();
    let client = crate::builder::<R>()
        .base_url(server.url())
        .auth(AuthProvider::system_user_auth(server.root_password().into()))
        .on_error(move |e| {
            assert!(matches!(e, Error::Decode(_)), "{e:?}");
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let t = table(&client, "kit_bad_frame").await;
    let mut s = client
        .live_events_with(&format!("SELECT * FROM {t}"), None)
        .await
        .unwrap();
    until_ready(&mut s).await;
    server.send_malformed_frame();
    // The kit's socket task sends it when it next runs; a change committed
    // before then could overtake it (not what this scenario is about).
    eventually("the malformed frame was reported", || {
        errors.load(Ordering::SeqCst) >= 1
    })
    .await;
    client
        .execute_query(&format!("INSERT INTO {t} (id, v) VALUES (1, 'after')"))
        .await
        .unwrap();
    match next(&mut s).await {
        LiveEvent::Insert { row } => assert_eq!(row["v"], "after"),
        other => panic!("{other:?}"),
    }
    assert_eq!(errors.load(Ordering::SeqCst), 1);
    assert_eq!(server.counters().ws_upgrades, 1, "no reconnect for a bad frame");
}

/// The server refuses WebSocket authentication: with basic credentials the
/// client logs in afresh once and tries again; refused again, it reports
/// once and ends the stream.
pub async fn refused_ws_auth_retries_only_with_fresh_credentials<R: Runtime>(server: &TestServer) {
    let errors = Arc::new(AtomicUsize::new(0));
    let counter = errors.clone();
    let client = crate::builder::<R>()
        .base_url(server.url())
        .auth(AuthProvider::system_user_auth(server.root_password().into()))
        .connection_options(
            ConnectionOptions::default().with_reconnect_delay(Duration::from_millis(20), Duration::from_millis(50)),
        )
        .on_error(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    client.execute_query("SELECT 1").await.unwrap();
    server.refuse_ws_auth(true);
    // The call itself fails: the subscription was never acknowledged.
    match tokio::time::timeout(PATIENCE, client.live_events("SELECT * FROM kit.nothing")).await {
        Ok(Err(Error::WsAuthFailed(_))) => {}
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert_eq!(errors.load(Ordering::SeqCst), 1);
    // New credentials were sought (the refresh token from the login) before
    // any retry; a retry happens only with a token that differs from the
    // refused one (a refresh in the same second yields the same token).
    let c = server.counters();
    assert!(c.refreshes + c.logins >= 2, "{c:?}");
    assert!(c.ws_upgrades <= 2, "no blind retries: {c:?}");
    // HTTP still works, and the next live query (after the refusal is lifted) too.
    server.refuse_ws_auth(false);
    client.execute_query("SELECT 1").await.unwrap();
    let t = table(&client, "kit_after").await;
    let mut s = client.live_events(&format!("SELECT * FROM {t}")).await.unwrap();
    assert!(matches!(next(&mut s).await, LiveEvent::Subscribed { .. }));
}

/// Dropping a live stream unsubscribes on the server.
pub async fn dropping_a_stream_unsubscribes<R: Runtime>(server: &TestServer) {
    let client = root::<R>(server);
    let t = table(&client, "kit_unsub").await;
    let mut a = client.live_events(&format!("SELECT * FROM {t}")).await.unwrap();
    until_ready(&mut a).await;
    drop(a);
    // Commands and frames keep their order: once the next subscription is
    // acknowledged, the server has read the unsubscribe.
    let mut b = client.live_events(&format!("SELECT * FROM {t}")).await.unwrap();
    assert!(matches!(next(&mut b).await, LiveEvent::Subscribed { .. }));
    let c = server.counters();
    assert_eq!((c.ws_subscribes, c.ws_unsubscribes), (2, 1));
}

/// With the gzip feature the client accepts compressed frames, and large
/// messages (a big initial batch) arrive gzipped and decode. (Runners list
/// it only when built with their `gzip` feature.)
pub async fn gzip_frames_from_the_server_decode<R: Runtime>(server: &TestServer) {
    let client = root::<R>(server);
    assert!(!client.connection_options().disable_compression);
    let t = table(&client, "kit_gzip").await;
    let values: Vec<String> = (1..=40)
        .map(|i| format!("({i}, 'row number {i} with some padding text')"))
        .collect();
    client
        .execute_query(&format!("INSERT INTO {t} (id, v) VALUES {}", values.join(", ")))
        .await
        .unwrap();
    let mut live = client.live(&format!("SELECT * FROM {t}")).await.unwrap();
    let rows = tokio::time::timeout(PATIENCE, live.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(rows.len(), 40);
}

/// Frames the server holds back (stall) are delivered when it resumes.
pub async fn a_stalled_server_delivers_what_it_held_when_it_resumes<R: Runtime>(server: &TestServer) {
    let client = root::<R>(server);
    let t = table(&client, "kit_stall").await;
    let mut s = client
        .live_events_with(&format!("SELECT * FROM {t}"), None)
        .await
        .unwrap();
    until_ready(&mut s).await;
    server.stall_ws(true);
    client
        .execute_query(&format!("INSERT INTO {t} (id, v) VALUES (1, 'held')"))
        .await
        .unwrap();
    server.stall_ws(false);
    match next(&mut s).await {
        LiveEvent::Insert { row } => assert_eq!(row["v"], "held"),
        other => panic!("{other:?}"),
    }
}

/// A client whose subscriptions wait at most 300 ms for their acknowledgement.
fn impatient<R: Runtime>(server: &TestServer) -> KalamLinkClient<R> {
    crate::builder::<R>()
        .base_url(server.url())
        .auth(AuthProvider::system_user_auth(server.root_password().into()))
        .timeouts(KalamLinkTimeouts::default().with_subscribe_timeout(Duration::from_millis(300)))
        .build()
        .unwrap()
}

/// `subscribe_timeout` bounds `live_events_with`: the socket is up and
/// authenticated, the server reads the subscribe and never answers (it
/// holds every frame back), and the call returns an `Err` rather than
/// waiting for ever. (No clock is asserted: PATIENCE only guards the hang.)
pub async fn live_events_returns_after_ack_subscribe_timeout<R: Runtime>(server: &TestServer) {
    let client = impatient::<R>(server);
    let t = table(&client, "kit_ack_timeout").await;
    client.connect().await.expect("connected and authenticated");
    server.stall_ws(true);
    let call = tokio::time::timeout(PATIENCE, client.live_events_with(&format!("SELECT * FROM {t}"), None)).await;
    match call {
        Err(_) => panic!("live_events_with did not return: subscribe_timeout does not bound it"),
        Ok(Ok(_)) => panic!("expected an Err when no acknowledgement comes within subscribe_timeout, got Ok"),
        Ok(Err(_)) => {}
    }
    assert_eq!(server.counters().ws_subscribes, 1, "the subscribe was sent (and read)");
}

/// The same on a cold client: the server holds back even `auth_success`,
/// and the call still returns an `Err` instead of hanging.
pub async fn live_events_returns_after_ack_subscribe_timeout_cold<R: Runtime>(server: &TestServer) {
    let client = impatient::<R>(server);
    let t = table(&client, "kit_ack_timeout_cold").await;
    server.stall_ws(true);
    let call = tokio::time::timeout(PATIENCE, client.live_events_with(&format!("SELECT * FROM {t}"), None)).await;
    match call {
        Err(_) => panic!("live_events_with did not return: subscribe_timeout does not bound it"),
        Ok(Ok(_)) => panic!("expected an Err when no acknowledgement comes within subscribe_timeout, got Ok"),
        Ok(Err(_)) => {}
    }
}

/// The kit's view of `credentials_from_refresher_become_current`: the first
/// token is expired on the server (not by its `exp`), the refresher swaps in
/// a new one; then `update_shared_auth(<the first token>)` takes effect: the
/// next query carries the first token again, is answered TOKEN_EXPIRED, and
/// the refresher is called again.
pub async fn credentials_from_refresher_become_current_on_the_kit<R: Runtime>(server: &TestServer) {
    let first = server.mint_token(Mint::access("root"));
    let (refresher, calls) = minting_refresher(server);
    let client = crate::builder::<R>()
        .base_url(server.url())
        .jwt_token(first.clone())
        .auth_refresher(refresher)
        .build()
        .unwrap();
    let bearer_first = format!("Bearer {first}");
    client.execute_query("SELECT 1").await.unwrap();
    server.force_expire_all();
    client
        .execute_query("SELECT 2")
        .await
        .expect("recovered through the refresher");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let sent = server.authorizations("/v1/api/sql");
    assert_eq!(sent.len(), 3, "SELECT 1, SELECT 2 refused, SELECT 2 retried");
    assert_ne!(
        sent[2].as_deref(),
        Some(bearer_first.as_str()),
        "the retry carried the refresher's token"
    );
    client.update_shared_auth(AuthProvider::jwt_token(first.clone()));
    client.execute_query("SELECT 3").await.expect("recovered again");
    let sent = server.authorizations("/v1/api/sql");
    assert!(
        sent.get(3).and_then(|a| a.as_deref()) == Some(bearer_first.as_str()),
        "update_shared_auth(<the first token>) was ignored: the next query did not carry it"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "its TOKEN_EXPIRED called the refresher again"
    );
    assert_eq!(sent.len(), 5, "SELECT 3 refused, then retried once");
}

/// A `live_events` call cancelled before the server acknowledged it (a
/// timeout around the call) leaves no subscription behind: when the
/// acknowledgement arrives for nobody, the client stops it at the server.
pub async fn a_cancelled_subscribe_leaves_nothing_behind<R: Runtime>(server: &TestServer) {
    let proxy = FaultProxy::start(&server.url()).await.unwrap();
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .auth(AuthProvider::system_user_auth(server.root_password().into()))
        .build()
        .unwrap();
    let t = table(&client, "kit_cancel").await;
    client.connect().await.unwrap();
    // The server's answers are held back long enough for the call to give up.
    proxy.set_latency(Duration::from_millis(300));
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        client.live_events_with(&format!("SELECT * FROM {t}"), None),
    )
    .await;
    assert!(cancelled.is_err(), "the call was to be cancelled");
    // Registered at the server, then stopped once its ack came back.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.subscriptions_of("root") == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while server.subscriptions_of("root") != 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        server.subscriptions_of("root"),
        0,
        "the cancelled subscription is still registered"
    );
}

/// `Duration::MAX` as a time limit means "never", not a panic in the driver.
pub async fn huge_time_limits_do_not_take_the_driver_down<R: Runtime>(server: &TestServer) {
    let client = crate::builder::<R>()
        .base_url(server.url())
        .auth(AuthProvider::system_user_auth(server.root_password().into()))
        .timeouts(
            KalamLinkTimeouts::default()
                .with_receive_timeout(Duration::MAX)
                .with_subscribe_timeout(Duration::MAX)
                .with_auth_timeout(Duration::MAX)
                .with_connection_timeout(Duration::MAX),
        )
        .build()
        .unwrap();
    let t = table(&client, "kit_huge").await;
    let mut s = client.live_events(&format!("SELECT * FROM {t}")).await.unwrap();
    until_ready(&mut s).await;
    client.execute_query("SELECT 1").await.unwrap();
}
