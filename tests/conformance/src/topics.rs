//! Conformance scenarios for the topic consumer (`client.consumer()`), on
//! any runtime, against the kit and the real server: table-change topics
//! fed by SQL, read with acknowledgements, auto-commit, typed refusals, and
//! the same token handling as SQL (the JWT, `TOKEN_EXPIRED` recovery, the
//! dynamic provider).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use kalam_driver::prelude::*;
use kalam_driver::{KalamLinkClient, Runtime, TopicConsumer};

use crate::scenarios::{PATIENCE, machine_behind_an_expired_token, root};
use crate::{Backend, FaultProxy};

/// Creates `ns.orders` and the topic `ns.order_events`, fed by its inserts.
/// Returns (table, topic).
pub async fn topic_fixture<R: Runtime>(client: &KalamLinkClient<R>, ns: &str) -> (String, String) {
    let (table, topic) = (format!("{ns}.orders"), format!("{ns}.order_events"));
    for sql in [
        format!("CREATE NAMESPACE IF NOT EXISTS {ns}"),
        format!("CREATE TABLE IF NOT EXISTS {table} (id BIGINT PRIMARY KEY, item TEXT)"),
        format!("CREATE TOPIC {topic}"),
        format!("ALTER TOPIC {topic} ADD SOURCE {table} ON INSERT"),
    ] {
        client
            .execute_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    (table, topic)
}

async fn insert<R: Runtime>(client: &KalamLinkClient<R>, table: &str, ids: std::ops::RangeInclusive<i64>) {
    let values: Vec<String> = ids.map(|i| format!("({i}, 'item-{i}')")).collect();
    client
        .execute_query(&format!("INSERT INTO {table} (id, item) VALUES {}", values.join(", ")))
        .await
        .expect("insert");
}

/// The next record (failing the test after a long wait or at the end).
pub async fn next_record(c: &mut TopicConsumer) -> ConsumerRecord {
    match tokio::time::timeout(PATIENCE, c.next()).await {
        Ok(Some(Ok(r))) => r,
        Ok(Some(Err(e))) => panic!("the consumer failed: {e}"),
        Ok(None) => panic!("the consumer ended"),
        Err(_) => panic!("no record within {PATIENCE:?}"),
    }
}

/// The next item, which must be an error; returns it.
async fn next_error(c: &mut TopicConsumer) -> Error {
    match tokio::time::timeout(PATIENCE, c.next()).await {
        Ok(Some(Err(e))) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn item(r: &ConsumerRecord) -> String {
    let row: serde_json::Value = r.payload_json().expect("the payload is the row as JSON");
    row["item"].as_str().expect("item").to_owned()
}

/// Records come in offset order with their row, key and operation; an
/// acknowledgement commits them, so the next consumer of the group reads on
/// after them; another group reads the topic from its own start.
pub async fn consumer_reads_acks_and_resumes<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    let (table, topic) = topic_fixture(&client, "conf_topics").await;
    insert(&client, &table, 1..=5).await;
    let mut consumer = client
        .consumer()
        .topic(&topic)
        .group_id("billing")
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .max_poll_records(2)
        .poll_interval(Duration::from_millis(20))
        .build()
        .expect("consumer");
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next_record(&mut consumer).await);
    }
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4], "in offset order, each once");
    let mut items: Vec<String> = got.iter().map(item).collect();
    items.sort();
    assert_eq!(items, ["item-1", "item-2", "item-3", "item-4", "item-5"]);
    for r in &got {
        assert_eq!(r.op, TopicOp::Insert);
        assert_eq!(r.topic_id, topic);
        let row: serde_json::Value = r.payload_json().unwrap();
        assert_eq!(r.key.as_deref(), row["id"].as_str(), "the key is the primary key");
        assert!(r.timestamp_ms > 0);
    }
    let acked = consumer.ack(4).await.expect("ack");
    assert_eq!(acked.acknowledged_offset, 4);
    assert_eq!(consumer.committed(), Some(4));
    drop(consumer);

    insert(&client, &table, 6..=6).await;
    let mut again = client
        .consumer()
        .topic(&topic)
        .group_id("billing")
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let r = next_record(&mut again).await;
    assert_eq!(
        (r.offset, item(&r)),
        (5, "item-6".to_owned()),
        "resumes after the commit"
    );

    // Another group, read as a Stream.
    let audit = client
        .consumer()
        .topic(&topic)
        .group_id("audit")
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .max_poll_records(100)
        .build()
        .unwrap()
        .into_stream();
    let records: Vec<Result<ConsumerRecord>> = tokio::time::timeout(PATIENCE, audit.take(6).collect())
        .await
        .expect("six records in time");
    let seen: Vec<u64> = records.into_iter().map(|r| r.expect("record").offset).collect();
    assert_eq!(seen, vec![0, 1, 2, 3, 4, 5], "another group reads from its own start");
}

/// With auto-commit, a batch is committed when the next one is asked for:
/// not before (at-least-once), and with one acknowledgement per batch.
pub async fn consumer_auto_commit_commits_each_batch<R: Runtime>(b: &dyn Backend) {
    let proxy = FaultProxy::start(&b.url()).await.expect("proxy");
    let client = root::<R>(b, &proxy.url());
    let (table, topic) = topic_fixture(&client, "conf_autocommit").await;
    insert(&client, &table, 1..=3).await;
    let mut consumer = client
        .consumer()
        .topic(&topic)
        .group_id("g")
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(true)
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    // The three rows may come in one batch or (on a server that publishes
    // them a little later) in several: each batch but the last one is
    // committed when the next is asked for.
    let mut batches: Vec<Vec<u64>> = Vec::new();
    while batches.iter().map(Vec::len).sum::<usize>() < 3 {
        let batch = tokio::time::timeout(PATIENCE, consumer.poll()).await.expect("in time");
        batches.push(batch.expect("poll").iter().map(|r| r.offset).collect());
        let expected = batches.iter().rev().nth(1).and_then(|b| b.last().copied());
        assert_eq!(
            consumer.committed(),
            expected,
            "the batch before, not the one being processed"
        );
        assert_eq!(
            proxy.count("/v1/api/topics/ack"),
            batches.len() - 1,
            "one commit per batch"
        );
    }
    let last = *batches.last().unwrap().last().unwrap();
    assert_eq!(last, 2);

    insert(&client, &table, 4..=4).await;
    let next = tokio::time::timeout(PATIENCE, consumer.poll())
        .await
        .expect("in time")
        .expect("poll");
    assert_eq!(next.last().unwrap().offset, 3);
    assert_eq!(
        consumer.committed(),
        Some(last),
        "the first batch, committed before the next poll"
    );
    assert_eq!(proxy.count("/v1/api/topics/ack"), batches.len(), "one commit per batch");
    // Stopping: commit what was handed out.
    let done = consumer.commit().await.expect("commit").expect("something to commit");
    assert_eq!(done.acknowledged_offset, 3);
    assert!(consumer.commit().await.expect("commit").is_none(), "nothing new");
    assert!(
        proxy
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/v1/api/topics/"))
            .all(|r| r.auth_scheme.as_deref() == Some("Bearer")),
        "every topic request carries the JWT"
    );
}

/// Refusals are typed and end the consumer: an unknown topic (404
/// `NOT_FOUND`), and a `user`-role account, which may not consume (403
/// `FORBIDDEN`). A consumer without a topic or group is refused at build.
pub async fn consumer_refusals_are_typed<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    let (_, topic) = topic_fixture(&client, "conf_refusals").await;
    assert!(matches!(
        client.consumer().topic(&topic).build(),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        client.consumer().group_id("g").build(),
        Err(Error::InvalidInput(_))
    ));

    let mut missing = client
        .consumer()
        .topic("conf_refusals.no_such_topic")
        .group_id("g")
        .build()
        .unwrap();
    let e = next_error(&mut missing).await;
    assert_eq!(
        (e.code(), e.server().map(|s| s.status)),
        (Some(&ErrorCode::NotFound), Some(404)),
        "{e}"
    );
    assert!(missing.next().await.is_none(), "an unknown topic ends the consumer");
    assert!(missing.is_finished());
    let again = missing.poll().await.expect_err("an ended consumer");
    assert_eq!(
        again.code(),
        Some(&ErrorCode::NotFound),
        "the error that ended it: {again}"
    );

    client
        .execute_query("CREATE USER conf_reader WITH PASSWORD 'ReaderPass123!' ROLE user")
        .await
        .expect("create user");
    let reader = crate::builder::<R>()
        .base_url(b.url())
        .auth(AuthProvider::basic_auth("conf_reader".into(), "ReaderPass123!".into()))
        .build()
        .unwrap();
    let mut denied = reader.consumer().topic(&topic).group_id("g").build().unwrap();
    let e = next_error(&mut denied).await;
    assert_eq!(
        (e.code(), e.server().map(|s| s.status)),
        (Some(&ErrorCode::Forbidden), Some(403)),
        "{e}"
    );
    assert!(
        denied.next().await.is_none(),
        "a role that may not consume ends the consumer"
    );
    // The account itself is fine: its SQL still works.
    reader.execute_query("SELECT 1").await.expect("the user's SQL");
    let ack = denied.ack(0).await.expect_err("ack refused too");
    assert_eq!(ack.code(), Some(&ErrorCode::Forbidden));
}

/// Topic requests take the query path through the auth machine: an answer
/// `TOKEN_EXPIRED` is recovered from (here with the refresher) and the
/// request retried once; with a dynamic provider, the provider's token is
/// used and the provider asked once.
pub async fn consumer_token_handling_is_the_query_path<R: Runtime>(b: &dyn Backend) {
    use kalam_proto::{AuthOutput, ConsumeRequest, Operation, Reply};

    let client = root::<R>(b, &b.url());
    let (table, topic) = topic_fixture(&client, "conf_topic_tokens").await;
    insert(&client, &table, 1..=1).await;

    // TOKEN_EXPIRED from the server, as in `token_expired_answer_is_recovered_once`:
    // a machine whose clock is two hours behind holds a token the server
    // finds expired.
    let proxy = FaultProxy::start(&b.url()).await.expect("proxy");
    let (mut m, then, http) = machine_behind_an_expired_token::<R>(b, &proxy.url());
    let mut request = ConsumeRequest::new(&topic, "tokens");
    request.start = AutoOffsetReset::Earliest;
    let op = m.submit(Operation::ConsumeTopic(request), then);
    let refreshes = AtomicUsize::new(0);
    let login = root::<R>(b, &b.url());
    let result = loop {
        match m.poll_output() {
            Some(AuthOutput::Transmit { id, request, .. }) => {
                let response = R::send_http(http.clone(), request).await.expect("HTTP exchange");
                m.handle_response(id, &response, then);
            }
            Some(AuthOutput::FetchCredentials { id, .. }) => {
                refreshes.fetch_add(1, Ordering::SeqCst);
                let token = login.login("root", &b.root_password()).await.map(|l| l.access_token);
                m.handle_credentials(id, token.map(AuthProvider::jwt_token), then);
            }
            Some(AuthOutput::Warning(_)) => {} // a clock-skew warning
            Some(AuthOutput::NodeChanged(_)) => panic!("one node: nothing to move to"),
            Some(AuthOutput::Done { op: done, result }) => {
                assert_eq!(done, op);
                break result;
            }
            Some(AuthOutput::TransmitUpload { .. }) => panic!("no upload was asked for"),
            None => panic!("the machine stalled"),
        }
    };
    let Ok(Reply::Consume(consumed)) = result else {
        panic!("{result:?}")
    };
    // (The row may not be published yet on a server that publishes a little
    // after the insert: what counts here is that the retry was answered.)
    assert!(consumed.messages.len() <= 1, "{consumed:?}");
    assert_eq!(refreshes.load(Ordering::SeqCst), 1, "one refresher call");
    assert_eq!(
        proxy.count("/v1/api/topics/consume"),
        2,
        "sent, refused TOKEN_EXPIRED, retried once"
    );

    // The dynamic provider, when there is no valid token.
    let provider = Arc::new(RootProvider::<R> {
        bootstrap: root::<R>(b, &b.url()),
        password: b.root_password(),
        calls: AtomicUsize::new(0),
    });
    let with_provider = crate::builder::<R>()
        .base_url(proxy.url())
        .auth_provider(provider.clone())
        .build()
        .unwrap();
    let mut consumer = with_provider
        .consumer()
        .topic(&topic)
        .group_id("provided")
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .build()
        .unwrap();
    let r = next_record(&mut consumer).await;
    assert_eq!(item(&r), "item-1");
    consumer.ack(r.offset).await.expect("ack");
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1, "asked once, its token reused");
}

/// A DynamicAuthProvider that logs in as root, counting calls.
struct RootProvider<R: Runtime> {
    bootstrap: KalamLinkClient<R>,
    password: String,
    calls: AtomicUsize,
}

impl<R: Runtime> DynamicAuthProvider for RootProvider<R> {
    fn get_auth(&self) -> Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send + '_>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let login = self.bootstrap.login("root", &self.password).await?;
            Ok(AuthProvider::jwt_token(login.access_token))
        })
    }
}

/// The claim timeout of `unacknowledged_records_come_again`'s kit.
pub const SHORT_VISIBILITY_TIMEOUT: Duration = Duration::from_millis(300);

/// At least once, end to end: a consumer that stops (crashes) before
/// acknowledging loses nothing. Once the server's claim on what it handed
/// out expires (here `SHORT_VISIBILITY_TIMEOUT`), the next consumer of the
/// group gets the same records; after its acknowledgement they do not come
/// again.
pub async fn unacknowledged_records_come_again<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    let (table, topic) = topic_fixture(&client, "conf_redeliver").await;
    insert(&client, &table, 1..=2).await;
    let consumer = || {
        client
            .consumer()
            .topic(&topic)
            .group_id("workers")
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .poll_interval(Duration::from_millis(20))
            .max_backoff(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    let mut crashed = consumer();
    let first = [next_record(&mut crashed).await, next_record(&mut crashed).await];
    assert_eq!([first[0].offset, first[1].offset], [0, 1]);
    drop(crashed); // stops before acknowledging

    let mut next = consumer();
    let again = [next_record(&mut next).await, next_record(&mut next).await];
    assert_eq!([again[0].offset, again[1].offset], [0, 1], "delivered again");
    assert_eq!(again[0].payload, first[0].payload);
    next.ack(1).await.expect("ack");
    insert(&client, &table, 3..=3).await;
    let r = next_record(&mut next).await;
    assert_eq!(
        (r.offset, item(&r)),
        (2, "item-3".to_owned()),
        "acknowledged ones stay done"
    );
}
