//! Log in as root, create a namespace and a table, insert rows, select them
//! and print them as a table.
//!
//! ```sh
//! cargo run -p kalam-examples --example quickstart                     # embedded test server
//! KALAMDB_URL=http://localhost:2900 cargo run -p kalam-examples --example quickstart
//! ```

#[path = "common.rs"]
mod common;

use kalam_tokio::{AuthProvider, KalamLinkClient, QueryRequest};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = common::target().await;

    // Basic credentials are exchanged for a JWT once, at the first query.
    let client = KalamLinkClient::builder()
        .base_url(&target.url)
        .auth(AuthProvider::system_user_auth(target.root_password.clone()))
        .build()?;

    client
        .execute_query("CREATE NAMESPACE IF NOT EXISTS quickstart")
        .await?;
    client
        .execute_query(
            "CREATE TABLE IF NOT EXISTS quickstart.fruits \
             (id BIGINT PRIMARY KEY, name TEXT NOT NULL, qty INT, price DOUBLE)",
        )
        .await?;
    client
        .execute_query("DELETE FROM quickstart.fruits WHERE id >= 1")
        .await?;

    // Parameters bind positionally to $1, $2, …
    for (id, name, qty, price) in [(1, "apple", 3, 1.25), (2, "banana", 12, 0.5), (3, "cherry", 40, 7.0)] {
        client
            .execute(
                QueryRequest::new("INSERT INTO quickstart.fruits (id, name, qty, price) VALUES ($1, $2, $3, $4)")
                    .with_params(vec![json!(id), json!(name), json!(qty), json!(price)]),
            )
            .await?;
    }

    let response = client
        .execute_query("SELECT id, name, qty, price FROM quickstart.fruits ORDER BY id")
        .await?;
    let result = response.first().ok_or("no result")?;

    println!("{:>4}  {:<8} {:>4} {:>7}", "id", "name", "qty", "price");
    for row in result.rows() {
        // BIGINT arrives as a JSON string; `get::<i64>` reads it back as a number.
        let id: i64 = row.get("id")?;
        let name: &str = row.get("name")?;
        let qty: Option<i32> = row.get("qty")?;
        let price: Option<f64> = row.get("price")?;
        println!(
            "{id:>4}  {name:<8} {:>4} {:>7.2}",
            qty.map(|q| q.to_string()).unwrap_or_default(),
            price.unwrap_or_default()
        );
    }
    println!(
        "{} row(s), as user {}",
        result.row_count,
        result.as_user.as_deref().unwrap_or("?")
    );
    Ok(())
}
