//! Conformance scenarios for what a new user meets in the first hour: a
//! column set to NULL in a live update, a live stream whose server goes
//! away.

use kalam_driver::Runtime;
use kalam_driver::prelude::*;

use crate::Backend;
use crate::scenarios::{next_event, root, setup_table, until_ready};

/// `UPDATE … SET qty = NULL` under a live query: the server leaves the
/// column out of the update's new image, and the README's pattern
/// `row.get::<Option<i64>>("qty")` reads `None` (not `NoSuchColumn`).
pub async fn a_column_set_to_null_reads_as_none_in_a_live_update<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    let table = setup_table(&client, "conf_null_update").await;
    client
        .execute_query(&format!("DELETE FROM {table} WHERE id = 4242"))
        .await
        .expect("clean");
    client
        .execute_query(&format!("INSERT INTO {table} (id, name, qty) VALUES (4242, 'n', 5)"))
        .await
        .expect("insert");
    let mut s = client
        .live_events(&format!("SELECT * FROM {table} WHERE id = 4242"))
        .await
        .expect("subscribe");
    until_ready(&mut s).await;
    client
        .execute_query(&format!("UPDATE {table} SET qty = NULL WHERE id = 4242"))
        .await
        .expect("update");
    loop {
        if let LiveEvent::Update { row, .. } = next_event(&mut s).await {
            assert_eq!(row.get::<i64>("id"), Ok(4242), "{row:?}");
            assert_eq!(row.get::<Option<i64>>("qty"), Ok(None), "{row:?}");
            assert_eq!(row.get::<Option<&str>>("name"), Ok(Some("n")), "{row:?}");
            break;
        }
    }
}

/// What an application can ask of a client: whether the WebSocket is up,
/// the live queries open (id, SQL, last `_seq`, times, state), and ending
/// one by id from anywhere.
pub async fn connection_and_subscription_state<R: Runtime>(b: &dyn Backend) {
    use crate::scenarios::PATIENCE;

    let client = root::<R>(b, &b.url());
    let table = setup_table(&client, "conf_state").await;
    client
        .execute_query(&format!("DELETE FROM {table} WHERE id = 77"))
        .await
        .expect("clean");
    assert!(!client.is_connected().await, "no socket before the first live query");
    let sql = format!("SELECT * FROM {table} WHERE id = 77");
    let mut s = client.live_events(&sql).await.expect("subscribe");
    until_ready(&mut s).await;
    assert!(client.is_connected().await);
    client
        .execute_query(&format!("INSERT INTO {table} (id, name, qty) VALUES (77, 's', 1)"))
        .await
        .expect("insert");
    let seq = loop {
        if let LiveEvent::Insert { row } = next_event(&mut s).await {
            break row.seq();
        }
    };
    let subs = client.clone().subscriptions().await;
    assert_eq!(subs.len(), 1, "{subs:?}");
    let info = &subs[0];
    assert_eq!(info.id, s.id());
    assert_eq!(info.sql, sql);
    assert_eq!(info.state, SubscriptionState::Live);
    assert_eq!(info.last_seq, seq);
    assert!(info.last_event.is_some_and(|t| t >= info.created), "{info:?}");

    client.cancel_subscription(s.id());
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Some(item) = s.next().await {
            item.expect("no error on a cancelled stream");
        }
    })
    .await;
    assert!(ended.is_ok(), "the cancelled stream ends");
    assert!(client.subscriptions().await.is_empty());
}

/// The hooks given as one `EventHandlers` value fire like the builder's
/// `on_*` methods.
pub async fn event_handlers_fire<R: Runtime>(b: &dyn Backend) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kalam_driver::EventHandlers;

    let connects = Arc::new(AtomicUsize::new(0));
    let counted = connects.clone();
    let client = crate::builder::<R>()
        .base_url(b.url())
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .http_pool_max_idle_per_host(2)
        .event_handlers(EventHandlers::new().on_connect(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }))
        .build()
        .expect("client");
    client.connect().await.expect("connect");
    assert_eq!(connects.load(Ordering::SeqCst), 1);
    assert!(client.is_connected().await);
    client.execute_query("SELECT 1").await.expect("a query");
}

/// Far more concurrent queries than the server takes per second (100 per
/// user): every one succeeds, paced and retried by the client, with no
/// connection beyond the cap. 500 against the kit (set to the server's
/// limit), 500 and then 2,000 against the real server.
pub async fn concurrent_queries_within_the_servers_rate<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    client.execute_query("SELECT 1").await.expect("logged in");
    let rounds: &[usize] = if b.is_real() { &[500, 2_000] } else { &[500] };
    for &n in rounds {
        let queries = (0..n).map(|i| {
            let client = client.clone();
            async move { client.execute_query(&format!("SELECT {i}")).await }
        });
        let results = futures_util::future::join_all(queries).await;
        let failed: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        assert!(
            failed.is_empty(),
            "{} of {n} failed, first: {:?}",
            failed.len(),
            failed.first()
        );
    }
}

/// `max_retries(n)`: a query sent while nothing listens (the connection is
/// refused, so nothing was sent) goes again after a back-off and succeeds
/// once the server listens again; without it the caller gets the refusal.
/// (Direct, not through a proxy: a proxy answers for a down server.)
pub async fn max_retries_carries_a_query_over_a_refused_connection<R: Runtime>(b: &dyn Backend) {
    let proxy = crate::FaultProxy::start(&b.url()).await.expect("proxy");
    // A token, so that the clients need no login while nothing listens.
    let token = root::<R>(b, &b.url())
        .login(kalam_proto::SYSTEM_USER, &b.root_password())
        .await
        .expect("login")
        .access_token;
    proxy.stop_listening().await;
    let client = |retries: u32| {
        crate::builder::<R>()
            .base_url(proxy.url())
            .no_proxy()
            .jwt_token(token.clone())
            .max_retries(retries)
            .build()
            .expect("client")
    };
    let patient = client(8);
    match client(0).execute_query("SELECT 2").await {
        Err(Error::Transport(TransportError::Connect(_))) => {}
        other => panic!("without retries, the refusal: {other:?}"),
    }
    let (tx, query) = tokio::sync::oneshot::channel();
    R::spawn(async move {
        let _ = tx.send(patient.execute_query("SELECT 3").await);
    });
    // Down for a while (the patient client's first tries are refused),
    // then back.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    proxy.listen_again().await.expect("listening again");
    let answer = tokio::time::timeout(crate::PATIENCE, query)
        .await
        .expect("answered in time");
    answer
        .expect("the query's task answered")
        .expect("the query went through once the server listened again");
}
