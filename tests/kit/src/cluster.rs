//! A cluster of kit nodes: N front doors (each a [`FaultProxy`], with its
//! own port) to one server's state, so that a write through any node is
//! seen on every node and by every node's live queries, as in a KalamDB
//! cluster once a change is applied. Any node can be killed (its
//! connections cut, new ones refused), brought back, delayed or stalled,
//! and the kit's server can answer `NOT_LEADER` on demand.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use kalam_testkit::KitCluster;
//!
//! let cluster = KitCluster::start(3).await;
//! let urls = cluster.urls(); // three http://127.0.0.1:PORT, one state
//! cluster.kill(0).await; // node 0 refuses connections, its sockets drop
//! cluster.revive(0).await;
//! cluster.not_leader_next(1, Some(2)); // the next SQL request: 503 NOT_LEADER naming node 2
//! # let _ = urls;
//! # }
//! ```
//!
//! What it does not model: elections, forwarding and per-node lag. A write
//! is never lost by a node's death here (the state is shared); the real
//! cluster's behaviour is measured with [`RealCluster`](crate::RealCluster).

use crate::{Fault, FaultProxy, TestServer};

/// N kit nodes over one state. See the [module docs](self).
pub struct KitCluster {
    server: Option<TestServer>,
    nodes: Vec<FaultProxy>,
}

impl std::fmt::Debug for KitCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KitCluster").field("urls", &self.urls()).finish()
    }
}

impl KitCluster {
    /// A kit server with `n` nodes in front of it.
    pub async fn start(n: usize) -> KitCluster {
        let server = TestServer::start().await;
        let mut cluster = KitCluster::in_front_of(&server.url(), n).await;
        cluster.server = Some(server);
        cluster
    }

    /// `n` nodes in front of the server at `url` (a kit's, or a real one:
    /// then [`not_leader_next`](Self::not_leader_next) does nothing).
    pub async fn in_front_of(url: &str, n: usize) -> KitCluster {
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(FaultProxy::start(url).await.expect("a kit node"));
        }
        KitCluster { server: None, nodes }
    }

    /// Every node's `http://127.0.0.1:PORT`, node 0 first.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(FaultProxy::url).collect()
    }

    /// Node `i`'s URL.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Node `i`'s front door, for its counters and finer faults (latency,
    /// stalls, resets).
    pub fn node(&self, i: usize) -> &FaultProxy {
        &self.nodes[i]
    }

    /// The kit's server behind the nodes (`None` in front of another one).
    pub fn server(&self) -> Option<&TestServer> {
        self.server.as_ref()
    }

    /// Kills node `i` as a crash does: its connections (WebSockets
    /// included) are cut without a close frame, and new connections are
    /// refused by the operating system until [`revive`](Self::revive).
    pub async fn kill(&self, i: usize) {
        self.nodes[i].stop_listening().await;
        self.nodes[i].drop_all();
    }

    /// Node `i` accepts connections again, on the same port.
    pub async fn revive(&self, i: usize) {
        self.nodes[i].listen_again().await.expect("the node's port again");
    }

    /// The next `n` SQL requests, through any node, are answered `503
    /// NOT_LEADER` (naming node `leader`'s address when given) without
    /// running. Only with the kit's own server ([`start`](Self::start));
    /// in front of another kit, give it [`not_leader`](Self::not_leader)
    /// with [`TestServer::fail_next`].
    pub fn not_leader_next(&self, n: usize, leader: Option<usize>) {
        if let Some(server) = &self.server {
            server.fail_next(n, self.not_leader(leader));
        }
    }

    /// The kit's `503 NOT_LEADER` answer for SQL requests, naming node
    /// `leader`'s address (`Not leader for shard. Leader: 127.0.0.1:PORT`)
    /// when given.
    pub fn not_leader(&self, leader: Option<usize>) -> Fault {
        let named = leader.map_or(String::new(), |i| {
            format!(" Leader: {}", self.url(i).trim_start_matches("http://"))
        });
        let body = format!(
            r#"{{"status":"error","results":[],"took":0.1,"error":{{"code":"NOT_LEADER","message":"Not leader for shard.{named}"}}}}"#
        );
        Fault::json(503, body).on("/v1/api/sql")
    }

    /// SQL requests node `i` has carried.
    pub fn queries_to(&self, i: usize) -> usize {
        self.nodes[i].count("/v1/api/sql")
    }
}
