//! A client over the nodes of a cluster (`base_urls`), against the kit's
//! cluster mode ([`KitCluster`]: N front doors to one server, any of which
//! can be killed). The four scenarios for any [`Backend`] put the nodes in
//! front of it (so they run on the real server too); the `NOT_LEADER` one
//! needs the kit's controls. The real 3-node cluster has its own suite
//! (`cluster_real`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kalam_driver::prelude::*;
use kalam_driver::{KalamLinkClient, Runtime};
use kalam_proto::{NodeFailure, NodeSwitch};
use kalam_testkit::KitCluster;

use crate::core_scenarios::{insert, quick_reconnects, root, rows_exactly_once, setup_table, short_timeouts, spawn};
use crate::scenarios::{PATIENCE, eventually};
use crate::{Backend, TestServer};

/// The moves the client's `on_node_change` hook heard.
type Moves = Arc<Mutex<Vec<NodeSwitch>>>;

/// A root client over `urls`, with short limits and quick reconnects.
fn cluster_client<R: Runtime>(password: String, urls: &[String]) -> (KalamLinkClient<R>, Moves) {
    let moves: Moves = Arc::default();
    let heard = moves.clone();
    let client = crate::builder::<R>()
        .base_urls(urls.iter().cloned())
        .auth(AuthProvider::system_user_auth(password))
        .connection_options(quick_reconnects().with_ping_interval(Duration::from_secs(1)))
        .timeouts(short_timeouts())
        .on_node_change(move |s| heard.lock().unwrap().push(s.clone()))
        .build()
        .expect("client");
    (client, moves)
}

fn moves_of(moves: &Moves) -> Vec<(String, String, NodeFailure)> {
    moves
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.from.clone(), s.to.clone(), s.reason.clone()))
        .collect()
}

async fn count<R: Runtime>(client: &KalamLinkClient<R>, sql: &str) -> usize {
    match tokio::time::timeout(PATIENCE, client.execute_query(sql)).await {
        Ok(Ok(r)) => r.rows().count(),
        other => panic!("{sql}: {other:?}"),
    }
}

/// Node 0 is dead from the start: the login, the DDL, the write and the
/// read all go to node 1 (node 0 is never reached; the hook hears one move,
/// `Unreachable`). Node 1 dies with a kept-alive connection open: the next
/// read goes to node 2, and the client stays there.
pub async fn cluster_reads_and_writes_skip_a_dead_node<R: Runtime>(b: &dyn Backend) {
    let nodes = KitCluster::in_front_of(&b.url(), 3).await;
    let urls = nodes.urls();
    nodes.kill(0).await;
    let (client, moves) = cluster_client::<R>(b.root_password(), &urls);
    let table = setup_table(&client, "conf_cluster_skip").await;
    insert(&client, &table, 1).await;
    assert_eq!(count(&client, &format!("SELECT * FROM {table}")).await, 1);
    assert_eq!(nodes.node(0).requests().len(), 0, "node 0 is dead");
    assert!(nodes.queries_to(1) >= 3, "{} queries to node 1", nodes.queries_to(1));
    // (Through a forwarding proxy, the proxy answers 502 for the dead node.)
    let why = match crate::network::proxied() {
        true => NodeFailure::Gateway(502),
        false => NodeFailure::Unreachable,
    };
    assert_eq!(moves_of(&moves), vec![(urls[0].clone(), urls[1].clone(), why)]);

    nodes.kill(1).await;
    assert_eq!(count(&client, &format!("SELECT * FROM {table}")).await, 1);
    insert(&client, &table, 2).await;
    assert_eq!(count(&client, &format!("SELECT * FROM {table}")).await, 2);
    assert!(nodes.queries_to(2) >= 3, "{} queries to node 2", nodes.queries_to(2));
    let moved = moves_of(&moves);
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert_eq!((&moved[1].0, &moved[1].1), (&urls[1], &urls[2]));
    // Node 0 is back: the client stays where it is.
    nodes.revive(0).await;
    let before = nodes.queries_to(2);
    assert_eq!(count(&client, "SELECT 1").await, 1);
    assert_eq!(nodes.queries_to(2), before + 1, "sticky");
}

/// A write and a read are in flight on node 0 (its answers held back) when
/// it dies after the server ran them: the write is
/// [`Error::OutcomeUnknown`] and was not sent again (its row is there
/// once); the read is answered by another node.
pub async fn cluster_a_write_in_flight_at_a_kill_is_unknown_and_never_repeated<R: Runtime>(b: &dyn Backend) {
    let nodes = KitCluster::in_front_of(&b.url(), 3).await;
    let (client, _) = cluster_client::<R>(b.root_password(), &nodes.urls());
    let direct = root::<R>(b, &b.url());
    let table = setup_table(&client, "conf_cluster_unknown").await;
    insert(&client, &table, 1).await;
    // Node 0 now holds its answers back; the requests still reach the server.
    nodes.node(0).set_latency(Duration::from_secs(2));
    let write = spawn::<R, _>({
        let client = client.clone();
        let sql = format!("INSERT INTO {table} (id, name, qty) VALUES (7, 'once', 7)");
        async move { client.execute_query(&sql).await }
    });
    let read = spawn::<R, _>({
        let client = client.clone();
        let sql = format!("SELECT * FROM {table} WHERE id = 1");
        async move { client.execute_query(&sql).await }
    });
    // The server ran the write (seen directly), its answer is held: kill.
    let probe = format!("SELECT * FROM {table} WHERE id = 7");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while count(&direct, &probe).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    nodes.kill(0).await;
    match tokio::time::timeout(PATIENCE, write).await {
        Ok(Err(e @ Error::OutcomeUnknown { .. })) => assert!(e.is_outcome_unknown()),
        other => panic!("expected OutcomeUnknown for the write, got {other:?}"),
    }
    match tokio::time::timeout(PATIENCE, read).await {
        Ok(Ok(r)) => assert_eq!(r.rows().count(), 1),
        other => panic!("the read should be answered by another node, got {other:?}"),
    }
    assert_eq!(count(&direct, &probe).await, 1, "the write ran exactly once");
    let resent: usize = (1..3)
        .map(|i| {
            nodes
                .node(i)
                .requests()
                .iter()
                .filter(|r| r.path == "/v1/api/sql")
                .count()
        })
        .sum();
    assert_eq!(resent, 1, "only the read went to another node");
}

/// The live query's node dies while another client writes: the socket
/// moves to another node, resubscribes from its last row, and every row
/// written meanwhile arrives exactly once.
pub async fn cluster_live_query_moves_to_a_survivor_and_loses_no_row<R: Runtime>(b: &dyn Backend) {
    let nodes = KitCluster::in_front_of(&b.url(), 3).await;
    let urls = nodes.urls();
    let writer = root::<R>(b, &b.url());
    let table = setup_table(&writer, "conf_cluster_live").await;
    insert(&writer, &table, 1).await;
    let (client, moves) = cluster_client::<R>(b.root_password(), &urls);
    let mut s = client
        .live_events(&format!("SELECT * FROM {table}"))
        .await
        .expect("subscribe");
    rows_exactly_once(&mut s, &[1], "initial rows").await;
    assert_eq!(nodes.node(0).open_websockets(), 1);

    nodes.kill(0).await;
    for id in 2..=6 {
        insert(&writer, &table, id).await;
    }
    rows_exactly_once(&mut s, &[2, 3, 4, 5, 6], "rows written during the failover").await;
    insert(&writer, &table, 7).await;
    rows_exactly_once(&mut s, &[7], "live again").await;
    eventually("the socket is on node 1", || nodes.node(1).open_websockets() == 1).await;
    let moved = moves_of(&moves);
    assert!(
        moved
            .first()
            .is_some_and(|(from, to, _)| from == &urls[0] && to == &urls[1]),
        "{moved:?}"
    );
}

/// Every node dies: a call ends with a typed transport error within its
/// limits (no call waits for ever); a node comes back and the client works
/// again without being rebuilt.
pub async fn cluster_every_node_down_ends_calls_typed_then_recovers<R: Runtime>(b: &dyn Backend) {
    let nodes = KitCluster::in_front_of(&b.url(), 3).await;
    let (client, _) = cluster_client::<R>(b.root_password(), &nodes.urls());
    assert_eq!(count(&client, "SELECT 1").await, 1);
    for i in 0..3 {
        nodes.kill(i).await;
    }
    for sql in ["SELECT 1", "CREATE NAMESPACE IF NOT EXISTS conf_cluster_down"] {
        match tokio::time::timeout(PATIENCE, client.execute_query(sql)).await {
            Ok(Err(Error::Transport(_) | Error::OutcomeUnknown { .. })) => {}
            // Through a forwarding proxy, the proxy answers for the dead nodes.
            Ok(Err(Error::Server(e))) if crate::network::proxied() && e.status == 502 => {}
            other => panic!("{sql}: expected a typed error with every node down, got {other:?}"),
        }
    }
    nodes.revive(2).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match client.execute_query("SELECT 1").await {
            Ok(r) => break assert_eq!(r.rows().count(), 1),
            Err(Error::Transport(_)) => {}
            Err(Error::Server(e)) if crate::network::proxied() && e.status == 502 => {}
            Err(other) => panic!("expected a transport error or success, got {other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "node 2 never served again");
    }
}

/// Kit only: a node answers `NOT_LEADER` naming the leader. A read is sent
/// to the leader named and succeeds; a write is answered with the refusal
/// (typed, not run, not sent again).
pub async fn cluster_not_leader_sends_reads_to_the_leader_and_refuses_writes<R: Runtime>(server: &TestServer) {
    let nodes = KitCluster::in_front_of(&server.url(), 3).await;
    let urls = nodes.urls();
    let (client, moves) = cluster_client::<R>(server.root_password().to_owned(), &urls);
    let table = setup_table(&client, "conf_cluster_leader").await;

    server.fail_next(1, nodes.not_leader(Some(2)));
    assert_eq!(count(&client, &format!("SELECT * FROM {table}")).await, 0);
    assert_eq!(nodes.queries_to(2), 1, "the read went to the leader named");
    assert!(
        moves_of(&moves)
            .iter()
            .any(|(_, to, why)| to == &urls[2] && *why == NodeFailure::ClusterError(ErrorCode::NotLeader)),
        "{:?}",
        moves_of(&moves)
    );

    server.fail_next(1, nodes.not_leader(Some(0)));
    let before: usize = (0..3).map(|i| nodes.queries_to(i)).sum();
    match client
        .execute_query(&format!("INSERT INTO {table} (id, name, qty) VALUES (1, 'x', 1)"))
        .await
    {
        Err(e) => assert_eq!(e.code(), Some(&ErrorCode::NotLeader), "{e:?}"),
        Ok(r) => panic!("the refused write succeeded: {r:?}"),
    }
    let after: usize = (0..3).map(|i| nodes.queries_to(i)).sum();
    assert_eq!(after, before + 1, "the write was sent once");
    assert_eq!(count(&client, &format!("SELECT * FROM {table}")).await, 0);
}
