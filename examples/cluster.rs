//! One client over the three nodes of a KalamDB cluster: a live query and a
//! writer keep going while the node they use dies.
//!
//! ```sh
//! cargo run -p kalam-examples --example cluster        # embedded kit in cluster mode (3 nodes, one state)
//! KALAMDB_URLS=http://127.0.0.1:23001,http://127.0.0.1:23002,http://127.0.0.1:23003 \
//!     cargo run -p kalam-examples --example cluster    # a real cluster (root password: KALAMDB_ROOT_PASSWORD)
//! ```
//!
//! On the embedded cluster, the example kills the node in use halfway;
//! against a real cluster, stop a node yourself while it runs (it writes
//! for about 20 s) and watch the client move.

use std::time::Duration;

use kalam_testkit::KitCluster;
use kalam_tokio::{AuthProvider, Error, KalamLinkClient, LiveEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (urls, password, embedded) = match std::env::var("KALAMDB_URLS") {
        Ok(urls) => {
            let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
            let password = std::env::var("KALAMDB_ROOT_PASSWORD").unwrap_or_else(|_| "kalamdb123".into());
            (urls, password, None)
        }
        Err(_) => {
            let cluster = KitCluster::start(3).await;
            println!(
                "KALAMDB_URLS is not set: using an embedded 3-node kit cluster at {:?}",
                cluster.urls()
            );
            let password = cluster
                .server()
                .map(|s| s.root_password().to_owned())
                .unwrap_or_default();
            (cluster.urls(), password, Some(cluster))
        }
    };

    // Every node is given; the client uses one at a time and moves on when it fails.
    let client = KalamLinkClient::builder()
        .base_urls(urls.clone())
        .auth(AuthProvider::system_user_auth(password))
        .on_node_change(|moved| println!("-- {moved}"))
        .on_disconnect(|why| println!("-- live socket lost: {why}"))
        .build()?;

    client
        .execute_query("CREATE NAMESPACE IF NOT EXISTS cluster_demo")
        .await?;
    client
        .execute_query("CREATE SHARED TABLE IF NOT EXISTS cluster_demo.events (id BIGINT PRIMARY KEY, note TEXT)")
        .await?;
    client
        .execute_query("DELETE FROM cluster_demo.events WHERE id >= 0")
        .await?;

    let mut live = client.live_events("SELECT * FROM cluster_demo.events").await?;
    let reader = tokio::spawn(async move {
        let mut seen = std::collections::BTreeMap::<i64, usize>::new();
        while let Some(Ok(event)) = live.next().await {
            // After a move, rows written meanwhile come as initial rows of
            // the resumed subscription (from its last `_seq`), then live.
            let rows = match &event {
                LiveEvent::Insert { row } | LiveEvent::Update { row, .. } => std::slice::from_ref(row),
                LiveEvent::InitialRows { rows, .. } => &rows[..],
                _ => &[],
            };
            for row in rows {
                let id = row.get::<i64>("id").unwrap_or_default();
                *seen.entry(id).or_default() += 1;
                println!("live: {id}");
            }
            if seen.len() >= 20 {
                break;
            }
        }
        seen
    });

    for id in 1..=20i64 {
        if id == 10
            && let Some(cluster) = &embedded
        {
            println!("-- killing node 0 ({})", urls[0]);
            cluster.kill(0).await;
        }
        let insert = format!("INSERT INTO cluster_demo.events (id, note) VALUES ({id}, 'n{id}')");
        match client.execute_query(&insert).await {
            Ok(_) => println!("wrote {id}"),
            // The node died with the statement in flight: it may have run.
            // Check before writing it again (here: it has a primary key).
            Err(e @ Error::OutcomeUnknown { .. }) => {
                println!("{id}: {e}");
                let check = format!("SELECT id FROM cluster_demo.events WHERE id = {id}");
                if client.execute_query(&check).await?.rows().count() == 0 {
                    client.execute_query(&insert).await?;
                }
            }
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(if embedded.is_some() { 20 } else { 1000 })).await;
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), reader).await??;
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
    println!("the live query saw {} of 20 rows; seen twice: {twice:?}", seen.len());
    Ok(())
}
