//! The nodes of a cluster, and which one the client uses.
//!
//! A client configured with several URLs (the nodes of one KalamDB cluster)
//! talks to one node at a time, for locality: its HTTP requests and its
//! WebSocket go to the *current* node until that node fails. A node that
//! fails (a connection refused, lost or timed out, or a cluster error such
//! as `NOT_LEADER`) is avoided for a back-off period (1 s, doubling up to
//! 30 s while it keeps failing; a success clears it), and the client moves
//! to the next node in the order given that is not avoided; when every node
//! is avoided, to the one whose back-off ends first. The client stays on
//! the node it moved to (sticky): it does not move back when the failed
//! node returns.
//!
//! With one URL (the usual [`Endpoints`]) nothing here changes anything:
//! failures are handled as they always were.
//!
//! What may be sent again after a failure is decided by the auth machine
//! (see [`Operation::retry_safe`](crate::Operation::retry_safe)); this
//! module only chooses the node.

use std::fmt;
use std::time::Duration;

use crate::error::ErrorCode;
use crate::framing::Endpoints;
use crate::time::Instant;

/// How long a node that failed once is avoided.
pub const FIRST_AVOID: Duration = Duration::from_secs(1);
/// The longest a node is avoided, however often it failed.
pub const MAX_AVOID: Duration = Duration::from_secs(30);

/// Why the client left a node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeFailure {
    /// A connection to it could not be made (refused, unreachable, connect
    /// timeout): nothing was sent.
    Unreachable,
    /// A request's connection was lost or timed out after it was sent.
    ConnectionLost,
    /// It answered a cluster error (`NOT_LEADER`, `CLUSTER_UNAVAILABLE`,
    /// `FORWARD_FAILED`).
    ClusterError(ErrorCode),
    /// The live-query socket to it dropped or could not be opened.
    SocketLost,
    /// A proxy or load balancer in front of it answered for it (`502`,
    /// `503`, `504` without a KalamDB body).
    Gateway(u16),
}

impl fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeFailure::Unreachable => f.write_str("unreachable"),
            NodeFailure::ConnectionLost => f.write_str("connection lost"),
            NodeFailure::ClusterError(code) => write!(f, "answered {code}"),
            NodeFailure::SocketLost => f.write_str("live socket lost"),
            NodeFailure::Gateway(status) => write!(f, "a gateway answered {status}"),
        }
    }
}

/// The client moved from one node to another (for hooks and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSwitch {
    /// The base URL of the node left.
    pub from: String,
    /// The base URL of the node now used.
    pub to: String,
    /// Why the node was left.
    pub reason: NodeFailure,
}

impl fmt::Display for NodeSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "moved from {} ({}) to {}", self.from, self.reason, self.to)
    }
}

#[derive(Debug, Clone)]
struct Node {
    endpoints: Endpoints,
    /// Avoided until then.
    avoid_until: Option<Instant>,
    /// Failures in a row (the back-off doubles with each).
    failures: u32,
}

/// The nodes the client knows and which one it uses. See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct Nodes {
    nodes: Vec<Node>,
    current: usize,
}

impl From<Endpoints> for Nodes {
    fn from(endpoints: Endpoints) -> Self {
        Nodes {
            nodes: vec![Node {
                endpoints,
                avoid_until: None,
                failures: 0,
            }],
            current: 0,
        }
    }
}

impl Nodes {
    /// The nodes at `endpoints`, in the order given (the first is used
    /// first). `None` when `endpoints` is empty.
    pub fn new(endpoints: Vec<Endpoints>) -> Option<Self> {
        if endpoints.is_empty() {
            return None;
        }
        let nodes = endpoints
            .into_iter()
            .map(|endpoints| Node {
                endpoints,
                avoid_until: None,
                failures: 0,
            })
            .collect();
        Some(Nodes { nodes, current: 0 })
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: there is always at least one node.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Several nodes: failures move the client to another.
    pub fn is_cluster(&self) -> bool {
        self.nodes.len() > 1
    }

    /// The index of the node in use.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The endpoints of the node in use.
    pub fn endpoints(&self) -> &Endpoints {
        &self.nodes[self.current].endpoints
    }

    /// The endpoints of node `index` (the current node's when out of range).
    pub fn endpoints_of(&self, index: usize) -> &Endpoints {
        &self.nodes.get(index).unwrap_or(&self.nodes[self.current]).endpoints
    }

    /// Every node's endpoints, in the order given.
    pub fn all(&self) -> impl Iterator<Item = &Endpoints> {
        self.nodes.iter().map(|n| &n.endpoints)
    }

    /// Whether node `index` is being avoided at `now`.
    pub fn is_avoided(&self, index: usize, now: Instant) -> bool {
        self.nodes
            .get(index)
            .and_then(|n| n.avoid_until)
            .is_some_and(|t| now < t)
    }

    /// Node `index` failed at `now` for `reason`: it is avoided for its
    /// back-off, and if it is the node in use, the client moves to the next
    /// one (the switch is returned). A failure of a node the client already
    /// left only lengthens its back-off. With one node, nothing moves.
    pub fn failed(&mut self, index: usize, reason: NodeFailure, now: Instant) -> Option<NodeSwitch> {
        if !self.is_cluster() {
            return None;
        }
        let node = self.nodes.get_mut(index)?;
        // Several requests in flight on a node that dies each report it:
        // only the first counts toward the back-off.
        if node.avoid_until.is_some_and(|t| now < t) && index != self.current {
            return None;
        }
        let avoid = FIRST_AVOID.saturating_mul(1 << node.failures.min(5)).min(MAX_AVOID);
        node.failures = node.failures.saturating_add(1);
        node.avoid_until = Some(now + avoid);
        if index != self.current {
            return None;
        }
        let next = self.next_after(index, now);
        if next == index {
            return None;
        }
        self.current = next;
        Some(NodeSwitch {
            from: self.nodes[index].endpoints.base().to_owned(),
            to: self.nodes[next].endpoints.base().to_owned(),
            reason,
        })
    }

    /// Node `index` answered: its failures are forgotten.
    pub fn succeeded(&mut self, index: usize) {
        if let Some(node) = self.nodes.get_mut(index)
            && (node.failures != 0 || node.avoid_until.is_some())
        {
            node.failures = 0;
            node.avoid_until = None;
        }
    }

    /// The node whose base URL's authority is `addr` (`host:port`, with or
    /// without a scheme), if the client knows it: where a `NOT_LEADER`
    /// answer says the leader is.
    pub fn find(&self, addr: &str) -> Option<usize> {
        let addr = addr.trim();
        let addr = addr.split_once("://").map_or(addr, |(_, rest)| rest);
        let addr = addr.trim_end_matches('/');
        self.nodes.iter().position(|n| {
            let base = n.endpoints.base();
            let authority = base.split_once("://").map_or(base, |(_, rest)| rest);
            authority.split('/').next() == Some(addr)
        })
    }

    /// Moves to node `index` if it is not avoided (a leader named by the
    /// cluster); returns the switch.
    pub fn prefer(&mut self, index: usize, reason: NodeFailure, now: Instant) -> Option<NodeSwitch> {
        if index == self.current || index >= self.nodes.len() || self.is_avoided(index, now) {
            return None;
        }
        let from = self.current;
        self.current = index;
        Some(NodeSwitch {
            from: self.nodes[from].endpoints.base().to_owned(),
            to: self.nodes[index].endpoints.base().to_owned(),
            reason,
        })
    }

    /// When the earliest back-off of an avoided node ends (none avoided:
    /// `None`).
    pub fn next_available(&self, now: Instant) -> Option<Instant> {
        self.nodes
            .iter()
            .filter_map(|n| n.avoid_until)
            .filter(|t| *t > now)
            .min()
    }

    /// Whether some node is not avoided at `now`.
    pub fn any_available(&self, now: Instant) -> bool {
        (0..self.nodes.len()).any(|i| !self.is_avoided(i, now))
    }

    /// The first node after `index` (in the order given, wrapping) that is
    /// not avoided; when all are, the one whose back-off ends first.
    fn next_after(&self, index: usize, now: Instant) -> usize {
        let n = self.nodes.len();
        (1..=n)
            .map(|step| (index + step) % n)
            .find(|&i| !self.is_avoided(i, now))
            .unwrap_or_else(|| {
                (1..=n)
                    .map(|step| (index + step) % n)
                    .min_by_key(|&i| self.nodes[i].avoid_until)
                    .unwrap_or(index)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Nodes {
        Nodes::new(
            ["http://a:1", "http://b:2", "http://c:3/prefix"]
                .iter()
                .map(|u| Endpoints::new(u).unwrap())
                .collect(),
        )
        .unwrap()
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn one_node_never_moves() {
        let mut nodes = Nodes::from(Endpoints::new("http://a:1").unwrap());
        assert!(!nodes.is_cluster());
        assert_eq!(nodes.failed(0, NodeFailure::Unreachable, at(0)), None);
        assert!(!nodes.is_avoided(0, at(1)));
        assert_eq!(nodes.current(), 0);
    }

    #[test]
    fn a_failed_node_is_left_for_the_next_and_the_client_stays_there() {
        let mut nodes = three();
        let switch = nodes.failed(0, NodeFailure::Unreachable, at(0)).unwrap();
        assert_eq!((switch.from.as_str(), switch.to.as_str()), ("http://a:1", "http://b:2"));
        assert_eq!(nodes.current(), 1);
        assert!(nodes.is_avoided(0, at(999)));
        assert!(!nodes.is_avoided(0, at(1000)));
        // Sticky: node 0 back in service does not pull the client back.
        nodes.succeeded(0);
        assert_eq!(nodes.current(), 1);
        // A late report from the node already left moves nothing.
        assert_eq!(nodes.failed(0, NodeFailure::ConnectionLost, at(10)), None);
        assert_eq!(nodes.current(), 1);
    }

    #[test]
    fn the_back_off_doubles_while_a_node_keeps_failing_and_success_clears_it() {
        let mut nodes = three();
        let mut t = 0;
        for expected in [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000] {
            nodes.current = 0;
            nodes.failed(0, NodeFailure::Unreachable, at(t));
            assert!(nodes.is_avoided(0, at(t + expected - 1)), "{expected}");
            assert!(!nodes.is_avoided(0, at(t + expected)), "{expected}");
            t += expected;
        }
        nodes.succeeded(0);
        nodes.current = 0;
        nodes.failed(0, NodeFailure::Unreachable, at(t));
        assert!(!nodes.is_avoided(0, at(t + 1_000)));
    }

    #[test]
    fn with_every_node_avoided_the_one_back_soonest_is_used() {
        let mut nodes = three();
        nodes.failed(0, NodeFailure::Unreachable, at(0)); // → 1, 0 back at 1 s
        nodes.failed(1, NodeFailure::Unreachable, at(100)); // → 2, 1 back at 1.1 s
        assert_eq!(nodes.current(), 2);
        let s = nodes.failed(2, NodeFailure::Unreachable, at(200)).unwrap();
        assert_eq!(s.to, "http://a:1");
        assert_eq!(nodes.next_available(at(200)), Some(at(1_000)));
        assert!(!nodes.any_available(at(500)));
        assert!(nodes.any_available(at(1_000)));
    }

    #[test]
    fn a_leader_named_by_address_is_found_and_preferred_unless_avoided() {
        let mut nodes = three();
        assert_eq!(nodes.find("b:2"), Some(1));
        assert_eq!(nodes.find("http://c:3"), Some(2));
        assert_eq!(nodes.find("z:9"), None);
        let s = nodes
            .prefer(1, NodeFailure::ClusterError(ErrorCode::NotLeader), at(0))
            .unwrap();
        assert_eq!(s.to, "http://b:2");
        nodes.failed(1, NodeFailure::Unreachable, at(0));
        assert_eq!(nodes.prefer(1, NodeFailure::SocketLost, at(10)), None);
    }
}
