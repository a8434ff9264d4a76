//! The topic consumer's back-off on the runtime's own clock, with Tokio's
//! paused time: no sleeps as synchronisation and no wall clock. The kit
//! answers each poll at once, with nothing until a row is inserted.

use std::time::Duration;

use kalam_testkit::{Mint, TestServer};
use kalam_tokio::{AutoOffsetReset, KalamLinkClient};

#[tokio::test(start_paused = true)]
async fn empty_polls_back_off_to_the_cap_and_records_end_the_wait() {
    let server = TestServer::start().await;
    // A minted token: no login (and no password hashing) in paused time.
    let client = KalamLinkClient::builder()
        .base_url(server.url())
        .jwt_token(server.mint_token(Mint::access("root")))
        .build()
        .unwrap();
    for sql in [
        "CREATE NAMESPACE IF NOT EXISTS b",
        "CREATE TABLE IF NOT EXISTS b.t (id BIGINT PRIMARY KEY, v TEXT)",
        "CREATE TOPIC b.events",
        "ALTER TOPIC b.events ADD SOURCE b.t ON INSERT",
    ] {
        client.execute_query(sql).await.unwrap();
    }
    let mut consumer = client
        .consumer()
        .topic("b.events")
        .group_id("g")
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .poll_interval(Duration::from_secs(1))
        .max_backoff(Duration::from_secs(4))
        .build()
        .unwrap();
    let polls = || {
        server
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/api/topics/consume")
            .count()
    };
    let start = tokio::time::Instant::now();
    let reader = tokio::spawn(async move { consumer.poll().await.map(|batch| (batch, consumer)) });
    // Polls at 0, 1, 3 (1 + 2), 7 (+ 4), 11 (+ 4, the cap), 15 s.
    for (at_ms, expected) in [(500, 1), (1500, 2), (3500, 3), (7500, 4), (11500, 5), (15500, 6)] {
        tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
        assert_eq!(polls(), expected, "consume requests by {at_ms} ms");
    }
    client
        .execute_query("INSERT INTO b.t (id, v) VALUES (1, 'x')")
        .await
        .unwrap();
    let (batch, consumer) = reader.await.unwrap().expect("the poll returns the record");
    assert_eq!(batch.len(), 1);
    let waited = tokio::time::Instant::now() - start;
    assert!(
        waited <= Duration::from_millis(19_500),
        "the next poll (at 19 s, 4 s after the last) found it: {waited:?}"
    );
    assert_eq!(polls(), 7);
    assert_eq!(consumer.position(), Some(1));
}
