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

/// Rows into the application's own structs (serde): every column kind the
/// suite's tables have, NULLs, non-ASCII text and `i64::MAX` (a BIGINT the
/// server sends as a string), from a query and from a live insert; a row
/// that does not fit is a typed error naming the row and the column.
pub async fn typed_rows_round_trip<R: Runtime>(b: &dyn Backend) {
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Item {
        id: i64,
        name: Option<String>,
        qty: Option<i32>,
        price: Option<f64>,
        active: Option<bool>,
    }
    let client = root::<R>(b, &b.url());
    client
        .execute_query("CREATE NAMESPACE IF NOT EXISTS conf_typed")
        .await
        .expect("namespace");
    client
        .execute_query(
            "CREATE TABLE IF NOT EXISTS conf_typed.items \
             (id BIGINT PRIMARY KEY, name TEXT, qty INT, price DOUBLE, active BOOLEAN)",
        )
        .await
        .expect("table");
    client
        .execute(
            QueryRequest::new(
                "INSERT INTO conf_typed.items (id, name, qty, price, active) VALUES ($1, $2, $3, $4, $5)",
            )
            .param(i64::MAX)
            .param("Zoë 🚀 \"q\"")
            .param(-7)
            .param(12.5)
            .param(true),
        )
        .await
        .expect("insert");
    client
        .execute_query("INSERT INTO conf_typed.items (id) VALUES (2)")
        .await
        .expect("insert nulls");
    let items: Vec<Item> = client
        .query_as("SELECT id, name, qty, price, active FROM conf_typed.items ORDER BY id")
        .await
        .expect("typed rows");
    assert_eq!(
        items,
        vec![
            Item {
                id: 2,
                name: None,
                qty: None,
                price: None,
                active: None
            },
            Item {
                id: i64::MAX,
                name: Some("Zoë 🚀 \"q\"".into()),
                qty: Some(-7),
                price: Some(12.5),
                active: Some(true)
            },
        ]
    );
    // By position, into tuples.
    let pairs: Vec<(i64, Option<String>)> = client
        .query_as("SELECT id, name FROM conf_typed.items ORDER BY id")
        .await
        .expect("tuples");
    assert_eq!(pairs[1], (i64::MAX, Some("Zoë 🚀 \"q\"".into())));
    // A row that does not fit.
    match client
        .query_as::<(i64, bool)>("SELECT id, name FROM conf_typed.items WHERE id = 2")
        .await
    {
        Err(Error::Cell(CellError::Row { row: 0, column, .. })) => assert_eq!(column.as_deref(), Some("name")),
        other => panic!("expected a typed row error, got {other:?}"),
    }

    // A live insert, typed.
    let mut s = client
        .live_events("SELECT * FROM conf_typed.items")
        .await
        .expect("subscribe");
    until_ready(&mut s).await;
    client
        .execute_query("INSERT INTO conf_typed.items (id, name, qty, price, active) VALUES (3, 'live', 1, 0.25, false)")
        .await
        .expect("insert");
    let row = loop {
        if let LiveEvent::Insert { row } = next_event(&mut s).await {
            break row;
        }
    };
    assert_eq!(
        row.to::<Item>().expect("a typed live row"),
        Item {
            id: 3,
            name: Some("live".into()),
            qty: Some(1),
            price: Some(0.25),
            active: Some(false)
        }
    );

    // The typed stream: initial rows and an insert with NULLs, as `Item`s.
    let mut typed = client
        .live_events_as::<Item>("SELECT * FROM conf_typed.items")
        .await
        .expect("typed subscribe");
    let mut next = async || {
        tokio::time::timeout(crate::PATIENCE, typed.next())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .expect("a typed event")
    };
    let mut initial = Vec::new();
    loop {
        match next().await {
            TypedLiveEvent::InitialRows { rows, .. } => initial.extend(rows),
            TypedLiveEvent::Ready => break,
            _ => {}
        }
    }
    initial.sort_by_key(|i| i.id);
    assert_eq!(initial.iter().map(|i| i.id).collect::<Vec<_>>(), [2, 3, i64::MAX]);
    client
        .execute_query("INSERT INTO conf_typed.items (id, name) VALUES (4, 'nulls')")
        .await
        .expect("insert");
    let inserted = loop {
        if let TypedLiveEvent::Insert { row } = next().await {
            break row;
        }
    };
    assert_eq!(
        inserted,
        Item {
            id: 4,
            name: Some("nulls".into()),
            qty: None,
            price: None,
            active: None
        }
    );

    // The typed materialised view: the rows as `Item`s, kept up to date by
    // key; an update of one column reads the whole row again.
    let mut view = client
        .live_as::<Item>("SELECT * FROM conf_typed.items")
        .await
        .expect("typed live view");
    let rows = tokio::time::timeout(crate::PATIENCE, view.next())
        .await
        .expect("the rows in time")
        .expect("open")
        .expect("typed rows");
    assert_eq!(rows.rows().map(|i| i.id).collect::<Vec<_>>(), [2, 3, 4, i64::MAX]);
    client
        .execute_query("UPDATE conf_typed.items SET qty = 9 WHERE id = 3")
        .await
        .expect("update");
    loop {
        let rows = tokio::time::timeout(crate::PATIENCE, view.next())
            .await
            .expect("the update in time")
            .expect("open")
            .expect("typed rows");
        if rows.get("3").is_some_and(|i| i.qty == Some(9)) {
            let three = rows.get("3").expect("row 3");
            assert_eq!((three.name.as_deref(), three.price), (Some("live"), Some(0.25)));
            assert_eq!(rows.len(), 4);
            break;
        }
    }
}
