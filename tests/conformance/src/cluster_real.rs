//! A client over a real 3-node KalamDB cluster ([`RealCluster`]): what
//! issue 20 asks to see on the real thing, run in order by
//! [`real_cluster_suite`], each on a fresh cluster (one starts in about a
//! second; a node killed and restarted may not see tables created after
//! its restart, a server bug, so a cluster is not reused). Each prints
//! what it measured (`--nocapture`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kalam_driver::prelude::*;
use kalam_driver::{KalamLinkClient, Runtime};
use kalam_testkit::RealCluster;

use crate::REAL_ROOT_PASSWORD;
use crate::core_scenarios::{quick_reconnects, spawn};
use crate::scenarios::PATIENCE;

/// How long a leader election may take here (measured: about 4 s on 2
/// cores; the bound is loose).
const ELECTION: Duration = Duration::from_secs(30);

/// A root client over `order` (indexes into the cluster's nodes, the first
/// used first), with short limits.
fn client<R: Runtime>(cluster: &RealCluster, order: &[usize]) -> KalamLinkClient<R> {
    crate::builder::<R>()
        .base_urls(order.iter().map(|&i| cluster.url(i)))
        .auth(AuthProvider::system_user_auth(REAL_ROOT_PASSWORD.into()))
        .connection_options(quick_reconnects().with_ping_interval(Duration::from_secs(1)))
        .timeouts(
            KalamLinkTimeouts::default()
                .with_connection_timeout(Duration::from_secs(2))
                .with_receive_timeout(Duration::from_secs(5))
                .with_auth_timeout(Duration::from_secs(5))
                .with_subscribe_timeout(Duration::from_secs(5)),
        )
        .on_node_change(|moved| eprintln!("  [cluster] {moved}"))
        .build()
        .expect("client")
}

fn leader(cluster: &RealCluster) -> usize {
    cluster.wait_for_leader(ELECTION).expect("a leader").0
}

/// The nodes with the leader first, or last.
fn order(cluster: &RealCluster, leader_first: bool) -> Vec<usize> {
    let l = leader(cluster);
    let followers = (0..cluster.len()).filter(|&i| i != l);
    match leader_first {
        true => std::iter::once(l).chain(followers).collect(),
        false => followers.chain(std::iter::once(l)).collect(),
    }
}

/// Creates `ns.t (id BIGINT PRIMARY KEY, v TEXT)`, a SHARED table; returns `ns.t`.
async fn table<R: Runtime>(client: &KalamLinkClient<R>, ns: &str) -> String {
    for sql in [
        format!("CREATE NAMESPACE IF NOT EXISTS {ns}"),
        format!("CREATE SHARED TABLE IF NOT EXISTS {ns}.t (id BIGINT PRIMARY KEY, v TEXT)"),
    ] {
        client
            .execute_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    format!("{ns}.t")
}

async fn ids<R: Runtime>(client: &KalamLinkClient<R>, sql: &str) -> Vec<i64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match client.execute_query(sql).await {
            Ok(r) => return r.rows().map(|row| row.get::<i64>("id").expect("id")).collect(),
            Err(e) if Instant::now() < deadline => {
                eprintln!("  {sql}: {e}; again in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

/// Brings every node back and waits for a leader.
fn heal(cluster: &RealCluster) {
    for i in 0..cluster.len() {
        if !cluster.is_alive(i) {
            cluster.restart(i);
        }
    }
    leader(cluster);
}

/// 1. The client's node (the leader: the other nodes forward reads to it,
///    so the survivors cannot serve one until they elect another) is
///    killed during 1,000 sequential SELECTs: each returns rows or one
///    typed error, only a query in flight at the kill may fail, and the rest
///    go to a survivor (reads refused `FORWARD_FAILED` during the election
///    are sent again, within their receive timeout).
pub async fn real_cluster_sequential_selects_survive_a_kill<R: Runtime>(cluster: &RealCluster) {
    let order = order(cluster, true);
    let c = client::<R>(cluster, &order);
    let t = table(&c, "cl_reads").await;
    c.execute_query(&format!("INSERT INTO {t} (id, v) VALUES (1, 'a')"))
        .await
        .expect("insert");
    let (mut ok, mut failed, mut empty) = (0, Vec::new(), Vec::new());
    let mut slowest = Duration::ZERO;
    for i in 0..1000 {
        if i == 800 {
            cluster.kill(order[0]);
        }
        let started = Instant::now();
        match tokio::time::timeout(PATIENCE, c.execute_query(&format!("SELECT * FROM {t} WHERE id = 1"))).await {
            Ok(Ok(r)) => {
                ok += 1;
                if r.rows().count() != 1 {
                    // The server's answer, not the client's doing: after an
                    // election, survivors have answered a committed row's
                    // SELECT with no rows for a while (README, "A cluster").
                    assert!(i >= 800, "select {i} before the kill found no row");
                    empty.push(i);
                }
            }
            Ok(Err(e)) => failed.push((i, e.to_string())),
            Err(_) => panic!("select {i}: no answer within {PATIENCE:?}"),
        }
        slowest = slowest.max(started.elapsed());
    }
    eprintln!(
        "  1,000 SELECTs, node {} (the leader) killed at 800: {ok} ok ({} of them empty, the server's: {:?}), failed {failed:?}, slowest {slowest:?}",
        order[0],
        empty.len(),
        empty.first().zip(empty.last())
    );
    assert!(
        failed.len() <= 1,
        "only the query in flight at the kill may fail: {failed:?}"
    );
}

/// 2. A live subscription on a follower while another client inserts one
///    row every 10 ms through a different node; the subscriber's node is
///    killed: every row whose INSERT succeeded arrives exactly once.
pub async fn real_cluster_live_subscription_survives_its_node<R: Runtime>(cluster: &RealCluster) {
    let order = order(cluster, false);
    let sub_node = order[0];
    let subscriber = client::<R>(cluster, &order);
    let writer_order: Vec<usize> = order[1..].iter().copied().chain([sub_node]).collect();
    let writer = client::<R>(cluster, &writer_order);
    let t = table(&writer, "cl_live").await;
    // The table reaches the subscriber's node when that node applies the DDL.
    ids(&subscriber, &format!("SELECT id FROM {t} LIMIT 1")).await;
    let mut s = subscriber
        .live_events(&format!("SELECT * FROM {t}"))
        .await
        .expect("subscribe");
    // Until the initial data is in.
    loop {
        match tokio::time::timeout(PATIENCE, s.next()).await {
            Ok(Some(Ok(LiveEvent::Ready))) => break,
            Ok(Some(Ok(_))) => {}
            other => panic!("subscribing: {other:?}"),
        }
    }
    const ROWS: i64 = 400;
    let write = Box::pin(spawn::<R, _>({
        let writer = writer.clone();
        let t = t.clone();
        async move {
            let mut written = Vec::new();
            let mut failed = Vec::new();
            for id in 1..=ROWS {
                let sql = format!("INSERT INTO {t} (id, v) VALUES ({id}, 'r')");
                match writer.execute_query(&sql).await {
                    Ok(_) => written.push(id),
                    Err(e) => failed.push((id, e.to_string())),
                }
                // On R's timer: this task runs on R.
                R::sleep_until(R::now() + Duration::from_millis(10)).await;
            }
            (written, failed)
        }
    }));
    let mut seen = BTreeMap::<i64, usize>::new();
    let mut log = Vec::new();
    let mut last = Instant::now();
    let mut gap = (Duration::ZERO, 0i64);
    let mut killed_at = None;
    let mut written = None;
    let mut write = Some(write);
    loop {
        if killed_at.is_none() && seen.len() >= 100 {
            cluster.kill(sub_node);
            killed_at = Some(Instant::now());
        }
        if let Some(w) = &written {
            let w: &Vec<i64> = w;
            if w.iter().all(|id| seen.contains_key(id)) {
                break;
            }
        }
        let next = tokio::time::timeout(Duration::from_millis(200), s.next()).await;
        let rows: Vec<i64> = match next {
            Ok(Some(Ok(LiveEvent::Insert { row }))) => {
                log.push(format!("insert {row:?}"));
                vec![row.get("id").expect("id")]
            }
            Ok(Some(Ok(LiveEvent::InitialRows { rows, .. }))) => {
                log.push(format!("initial {:?}", rows.iter().take(2).collect::<Vec<_>>()));
                rows.iter().map(|r| r.get("id").expect("id")).collect()
            }
            Ok(Some(Ok(other))) => {
                log.push(format!("{other:?}").chars().take(60).collect());
                vec![]
            }
            Ok(other) => panic!("the live query ended: {other:?}"),
            Err(_) => vec![],
        };
        if !rows.is_empty() {
            let now = Instant::now();
            if now - last > gap.0 {
                gap = (now - last, rows[0]);
            }
            last = now;
        }
        for id in rows {
            *seen.entry(id).or_default() += 1;
        }
        if written.is_none()
            && let Some(w) = write.take()
        {
            // Poll the writer without blocking on it.
            match ready_now(w).await {
                Ok((done, failed)) => {
                    eprintln!("  writer: {} written, failed {failed:?}", done.len());
                    written = Some(done);
                }
                Err(w) => write = Some(w),
            }
        }
        assert!(
            killed_at.is_none_or(|k| k.elapsed() < PATIENCE * 4),
            "rows missing after the failover: {:?}",
            written
                .as_ref()
                .map(|w| w.iter().filter(|id| !seen.contains_key(id)).collect::<Vec<_>>())
        );
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "  live: {} rows seen, longest time with no delivery {:?} (before row {}), node {sub_node} killed",
        seen.len(),
        gap.0,
        gap.1
    );
    assert!(
        twice.is_empty(),
        "rows delivered twice: {twice:?}; events around the kill: {:?}",
        &log[log.len().min(98)..log.len().min(112)]
    );
}

/// 3. The leader is killed while one client writes through it: writes
///    resume on the new leader (measured), and an INSERT in flight at the
///    kill, or refused by a survivor that could not forward it while the
///    cluster elects, is reported as unknown (or not-leader), never silently
///    repeated: every INSERT answered Ok is there once, every other at most
///    once.
pub async fn real_cluster_writes_resume_after_the_leader_dies<R: Runtime>(cluster: &RealCluster) {
    let order = order(cluster, true);
    let c = client::<R>(cluster, &order);
    let t = table(&c, "cl_leader").await;
    let mut outcomes = Vec::new();
    let mut killed_at = None;
    let mut resumed_after = None;
    for id in 1..=2000i64 {
        if id == 50 {
            cluster.kill(order[0]);
            killed_at = Some(Instant::now());
        }
        let sql = format!("INSERT INTO {t} (id, v) VALUES ({id}, 'w')");
        let result = tokio::time::timeout(PATIENCE, c.execute_query(&sql))
            .await
            .unwrap_or_else(|_| panic!("insert {id}: no answer within {PATIENCE:?}"));
        if let (Some(k), None, Ok(_)) = (killed_at, resumed_after, &result) {
            resumed_after = Some(k.elapsed());
        }
        outcomes.push((id, result.map(|_| ())));
        if resumed_after.is_some() && id >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resumed_after = resumed_after.expect("writes never resumed after the leader died");
    let errors: Vec<_> = outcomes
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|e| (*id, e.clone())))
        .collect();
    let unknown: Vec<_> = errors.iter().filter(|(_, e)| e.is_outcome_unknown()).collect();
    // Survivors may answer reads without recent rows for a while after an
    // election (see scenario 1): read until every acknowledged row is there.
    let acknowledged: Vec<i64> = outcomes.iter().filter(|(_, r)| r.is_ok()).map(|(id, _)| *id).collect();
    let deadline = Instant::now() + PATIENCE;
    let present = loop {
        let present = ids(&c, &format!("SELECT id FROM {t} ORDER BY id LIMIT 1000")).await;
        if acknowledged.iter().all(|id| present.contains(id)) || Instant::now() > deadline {
            break present;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut counts = BTreeMap::<i64, usize>::new();
    for id in &present {
        *counts.entry(*id).or_default() += 1;
    }
    eprintln!(
        "  leader {} killed at insert 50; writes resumed after {resumed_after:?}; {} errors ({} unknown): {:?}",
        order[0],
        errors.len(),
        unknown.len(),
        errors.iter().map(|(id, e)| format!("{id}: {e}")).collect::<Vec<_>>()
    );
    // Nothing ran twice (the client's part). An acknowledged row missing
    // is the server's: in one run of several, survivors lost (or never
    // showed again) rows the dead leader had acknowledged (README, "A
    // cluster"); it is reported, not counted against the client.
    let mut lost = Vec::new();
    for (id, r) in &outcomes {
        let n = counts.get(id).copied().unwrap_or(0);
        assert!(n <= 1, "insert {id} ran twice");
        if r.is_ok() && n == 0 {
            lost.push(*id);
        }
    }
    if !lost.is_empty() {
        eprintln!(
            "  THE SERVER lost {} of {} acknowledged rows after the leader died: {lost:?}",
            lost.len(),
            acknowledged.len()
        );
    }
    assert!(
        lost.len() < acknowledged.len(),
        "no acknowledged row is there at all: the survivors serve nothing"
    );
    // During the election the survivors answer writes `FORWARD_FAILED`
    // (their call to the dead leader failed: it may have run), so each of
    // those is unknown too, and none is sent again; nothing fails after
    // writes resumed but for the same reasons.
    for (id, e) in &errors {
        assert!(
            e.is_outcome_unknown() || e.is_not_leader() || matches!(e, Error::Transport(_)),
            "insert {id}: untyped or unexpected {e:?}"
        );
    }
    assert!(
        errors.iter().all(|(id, _)| *id >= 49),
        "a write failed before the kill: {errors:?}"
    );
}

/// 4. Every node is killed: calls end with typed errors within their
///    deadlines; the nodes come back and the same client works again.
pub async fn real_cluster_all_nodes_down_then_back<R: Runtime>(cluster: &RealCluster) {
    let c = client::<R>(cluster, &[0, 1, 2]);
    assert_eq!(ids(&c, "SELECT 1 AS id").await, vec![1]);
    for i in 0..cluster.len() {
        cluster.kill(i);
    }
    for sql in ["SELECT 1 AS id", "CREATE NAMESPACE IF NOT EXISTS cl_down"] {
        let started = Instant::now();
        match tokio::time::timeout(PATIENCE, c.execute_query(sql)).await {
            Ok(Err(e @ (Error::Transport(_) | Error::OutcomeUnknown { .. }))) => {
                eprintln!("  every node down: {sql}: {e} after {:?}", started.elapsed())
            }
            other => panic!("{sql}: expected a typed error with every node down, got {other:?}"),
        }
    }
    let back = Instant::now();
    heal(cluster);
    let deadline = Instant::now() + PATIENCE * 4;
    loop {
        match c.execute_query("SELECT 1 AS id").await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "the client never recovered: {e}"),
        }
    }
    eprintln!(
        "  every node back: the client answered {:?} after the restarts began",
        back.elapsed()
    );
}

/// Runs the four scenarios in order, each on a fresh 3-node cluster.
pub async fn real_cluster_suite<R: Runtime>() {
    let fresh = || {
        let started = Instant::now();
        let cluster = RealCluster::start(3);
        eprintln!("  (a 3-node cluster up in {:?})", started.elapsed());
        cluster
    };
    let t = Instant::now();
    eprintln!("1. sequential SELECTs, the client's node killed");
    real_cluster_sequential_selects_survive_a_kill::<R>(&fresh()).await;
    eprintln!("   ({:?})\n2. a live subscription, its node killed", t.elapsed());
    let t = Instant::now();
    real_cluster_live_subscription_survives_its_node::<R>(&fresh()).await;
    eprintln!("   ({:?})\n3. the leader killed under writes", t.elapsed());
    let t = Instant::now();
    real_cluster_writes_resume_after_the_leader_dies::<R>(&fresh()).await;
    eprintln!("   ({:?})\n4. every node killed, then back", t.elapsed());
    let t = Instant::now();
    real_cluster_all_nodes_down_then_back::<R>(&fresh()).await;
    eprintln!("   ({:?})", t.elapsed());
}

/// The output of `f` if it is ready now, else `f` back.
async fn ready_now<F: std::future::Future + Unpin>(mut f: F) -> Result<F::Output, F> {
    let polled = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await;
    polled.ok_or(f)
}
