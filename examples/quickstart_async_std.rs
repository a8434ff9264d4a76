//! The quickstart on async-std: log in as root, create a table, insert
//! rows, select them, and watch one more arrive live. The same code runs
//! under `smol::block_on`.
//!
//! ```sh
//! cargo run -p kalam-examples --example quickstart_async_std                     # embedded test server
//! KALAMDB_URL=http://localhost:2900 cargo run -p kalam-examples --example quickstart_async_std
//! ```

#[path = "common.rs"]
mod common;

use std::time::Duration;

use kalam_async_std::{AuthProvider, KalamLinkClient, LiveEvent, QueryRequest};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The embedded test server is a Tokio program: it gets a runtime of its
    // own, as another process would. The client itself uses no Tokio.
    let kit = tokio::runtime::Runtime::new()?;
    let target = kit.block_on(common::target());
    async_std::task::block_on(run(&target.url, &target.root_password))
}

async fn run(url: &str, root_password: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = KalamLinkClient::builder()
        .base_url(url)
        .auth(AuthProvider::system_user_auth(root_password.to_owned()))
        .build()?;

    client
        .execute_query("CREATE NAMESPACE IF NOT EXISTS quickstart")
        .await?;
    client
        .execute_query("CREATE TABLE IF NOT EXISTS quickstart.fruits (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
        .await?;
    client
        .execute_query("DELETE FROM quickstart.fruits WHERE id >= 1")
        .await?;
    for (id, name) in [(1, "apple"), (2, "banana")] {
        client
            .execute(
                QueryRequest::new("INSERT INTO quickstart.fruits (id, name) VALUES ($1, $2)")
                    .with_params(vec![json!(id), json!(name)]),
            )
            .await?;
    }
    let response = client
        .execute_query("SELECT id, name FROM quickstart.fruits ORDER BY id")
        .await?;
    for row in response.rows() {
        let id: i64 = row.get("id")?;
        let name: &str = row.get("name")?;
        println!("{id:>4}  {name}");
    }

    // Returns once the server has acknowledged the subscription: the insert
    // below arrives as a live event.
    let mut changes = client.live_events_with("SELECT * FROM quickstart.fruits", None).await?;
    client
        .execute_query("INSERT INTO quickstart.fruits (id, name) VALUES (3, 'cherry')")
        .await?;
    let next_insert = async {
        while let Some(event) = changes.next().await {
            if let LiveEvent::Insert { row } = event? {
                return Ok::<_, kalam_async_std::Error>(row);
            }
        }
        Err(kalam_async_std::Error::Closed)
    };
    let row = async_std::future::timeout(Duration::from_secs(10), next_insert).await??;
    println!("live: inserted {}", row["name"]);
    Ok(())
}
