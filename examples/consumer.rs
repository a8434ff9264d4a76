//! Process a topic with at-least-once delivery: a topic is fed by the
//! inserts into a table; a consumer group reads it batch by batch and
//! acknowledges each batch only after processing it, so a crash in between
//! means the batch is delivered again, never lost.
//!
//! ```sh
//! cargo run -p kalam-examples --example consumer                     # embedded test server
//! KALAMDB_URL=http://localhost:2900 cargo run -p kalam-examples --example consumer
//! ```

#[path = "common.rs"]
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kalam_tokio::{AuthProvider, AutoOffsetReset, Error, KalamLinkClient, QueryRequest, QueryResponse};
use serde_json::{Value, json};

/// `Ok` also when the object exists already (the server has no
/// `IF NOT EXISTS` for topics), so the example can run again.
fn created(result: Result<QueryResponse, Error>) -> Result<(), Error> {
    match result {
        Err(e) if e.server().is_some_and(|s| s.message.contains("Already exists")) => Ok(()),
        other => other.map(drop),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = common::target().await;

    // Topics need the service, dba or system role; root is system.
    let client = KalamLinkClient::builder()
        .base_url(&target.url)
        .auth(AuthProvider::system_user_auth(target.root_password.clone()))
        .build()?;

    client.execute_query("CREATE NAMESPACE IF NOT EXISTS shop").await?;
    client
        .execute_query("CREATE TABLE IF NOT EXISTS shop.orders (id BIGINT PRIMARY KEY, item TEXT, qty INT)")
        .await?;
    created(client.execute_query("CREATE TOPIC shop.order_events").await)?;
    created(
        client
            .execute_query("ALTER TOPIC shop.order_events ADD SOURCE shop.orders ON INSERT")
            .await,
    )?;

    // The group's committed offset is where reading resumes; `Earliest`
    // only applies the first time the group reads.
    let mut consumer = client
        .consumer()
        .topic("shop.order_events")
        .group_id("shipping")
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .max_poll_records(50)
        .poll_interval(Duration::from_millis(100))
        .build()?;

    // Some orders come in.
    let base = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 * 10;
    let mut waiting = BTreeSet::new();
    for (i, (item, qty)) in [("apple", 3), ("pear", 1), ("fig", 12)].into_iter().enumerate() {
        let id = base + i as i64;
        client
            .execute(
                QueryRequest::new("INSERT INTO shop.orders (id, item, qty) VALUES ($1, $2, $3)").with_params(vec![
                    json!(id),
                    json!(item),
                    json!(qty),
                ]),
            )
            .await?;
        waiting.insert(id);
    }

    while !waiting.is_empty() {
        // Waits (polling with back-off) until records arrive.
        let batch = match consumer.poll().await {
            Ok(batch) => batch,
            Err(e) if e.server().is_some_and(|s| s.is_transient()) => continue, // rate limit: poll again
            Err(e) => return Err(e.into()),
        };
        for record in &batch {
            let order: Value = record.payload_json()?;
            // BIGINT columns arrive as JSON strings.
            let id: i64 = order["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_default();
            println!(
                "offset {:>3}: ship {} x {} (order {id}, {:?})",
                record.offset, order["qty"], order["item"], record.op
            );
            waiting.remove(&id);
        }
        // Processed: acknowledge. Everything up to this offset is done for
        // the group; a crash before this line delivers the batch again.
        if let Some(last) = batch.last() {
            consumer.ack(last.offset).await?;
        }
    }
    println!(
        "all orders shipped; group `shipping` committed up to offset {}",
        consumer.committed().unwrap_or_default()
    );
    Ok(())
}
