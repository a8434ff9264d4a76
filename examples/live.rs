//! Two live queries on one WebSocket; rows inserted over HTTP appear live.
//!
//! ```sh
//! cargo run -p kalam-examples --example live                     # embedded test server
//! KALAMDB_URL=http://localhost:2900 cargo run -p kalam-examples --example live
//! ```

#[path = "common.rs"]
mod common;

use kalam_tokio::{AuthProvider, ConnectionOptions, KalamLinkClient, LiveEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = common::target().await;

    let client = KalamLinkClient::builder()
        .base_url(&target.url)
        .auth(AuthProvider::system_user_auth(target.root_password.clone()))
        // Open the socket at start-up rather than at the first subscription.
        .connection_options(ConnectionOptions::default().with_ws_lazy_connect(false))
        .on_connect(|| println!("[socket connected]"))
        .on_disconnect(|reason| println!("[socket closed: {reason}]"))
        .build()?;

    client.execute_query("CREATE NAMESPACE IF NOT EXISTS live_demo").await?;
    client
        .execute_query("CREATE TABLE IF NOT EXISTS live_demo.orders (id BIGINT PRIMARY KEY, item TEXT, qty INT)")
        .await?;
    client
        .execute_query("DELETE FROM live_demo.orders WHERE id >= 1")
        .await?;
    client
        .execute_query("INSERT INTO live_demo.orders (id, item, qty) VALUES (1, 'tea', 2)")
        .await?;

    // Both subscriptions share the client's one socket.
    let mut all = client.live("SELECT * FROM live_demo.orders").await?;
    let mut big = client
        .live_events("SELECT * FROM live_demo.orders WHERE qty >= 10")
        .await?;

    let rows = all.next().await.ok_or("subscription ended")??;
    println!("initial rows: {}", rows.len());

    // Wait until the second subscription has its (empty) snapshot.
    while let Some(event) = big.next().await {
        if matches!(event?, LiveEvent::Ready) {
            break;
        }
    }

    for (id, item, qty) in [(2, "coffee", 12), (3, "water", 1)] {
        client
            .execute_query(&format!(
                "INSERT INTO live_demo.orders (id, item, qty) VALUES ({id}, '{item}', {qty})"
            ))
            .await?;
        let rows = all.next().await.ok_or("subscription ended")??;
        let items: Vec<&str> = rows.rows().filter_map(|r| r["item"].as_str()).collect();
        println!("all orders now: {}", items.join(", "));
    }

    // Only the large order matched the second subscription's filter.
    match big.next().await {
        Some(Ok(LiveEvent::Insert { row })) => {
            println!("large order: {} x{}", row["item"].as_str().unwrap_or("?"), row["qty"])
        }
        other => println!("unexpected: {other:?}"),
    }

    client.disconnect().await;
    Ok(())
}
