//! Failover between the nodes of a cluster (only with several nodes; with
//! one, [`retry`](super::retry) decides as it always did).
//!
//! The rule, for an operation whose node failed:
//! - Nothing was sent (the connection could not be made): it goes to the
//!   next node at once, or after a back-off when every node is avoided.
//! - It was sent and the answer was lost (a reset, a closed connection, a
//!   timeout), the node answered a cluster error (`NOT_LEADER`,
//!   `CLUSTER_UNAVAILABLE`, `FORWARD_FAILED`), or a proxy in front of it
//!   answered for it (`502`/`503`/`504` without a KalamDB body; it may or
//!   may not have reached the node): sent again to another node
//!   after a back-off only when it is [`retry_safe`](Operation::retry_safe).
//!   Otherwise it is never sent twice: a lost answer or a node that could
//!   not forward it (`FORWARD_FAILED`: its call to the leader failed, maybe
//!   after the leader ran it) is [`Error::OutcomeUnknown`]; a not-leader
//!   refusal (the node did not take it; [`Error::is_not_leader`]) is the
//!   server's error as it is.
//! - Every attempt stays within the operation's retry budget (its receive
//!   timeout from submission), and at most 16 (or `max_retries`) plus one
//!   per node, so every caller is answered when all nodes are down.
//!
//! A login or refresh of the machine's own goes to the next node the same
//! way, at most once per node.

use super::{AuthMachine, AuthOutput, OpId, Phase, RequestId};
use crate::error::{Error, ErrorCode, TransportError};
use crate::nodes::NodeFailure;
use crate::ops::Operation;
use crate::time::Now;

/// The machine's own login or refresh in flight, kept (with several nodes)
/// to send it to another node: its body holds the password or its header
/// the refresh token, so its `Debug` shows neither.
pub(super) struct Resend {
    pub(super) id: RequestId,
    pub(super) kind: super::RequestKind,
    pub(super) request: http::Request<Vec<u8>>,
    pub(super) tries: u32,
}

impl std::fmt::Debug for Resend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resend")
            .field("id", &self.id)
            .field("request", &crate::framing::RequestSummary(&self.request))
            .field("tries", &self.tries)
            .finish()
    }
}

/// Tries of one operation on a cluster at least (more with `max_retries`),
/// besides one per node.
const MIN_FAILOVER_TRIES: u32 = 16;

/// The leader's address in a `NOT_LEADER` message
/// (`Not leader for shard. Leader: 127.0.0.1:23002`).
fn named_leader(error: &Error) -> Option<&str> {
    let message = &error.server()?.message;
    let (_, rest) = message.split_once("Leader:")?;
    rest.split_whitespace()
        .next()
        .map(|a| a.trim_end_matches([',', '.', ')']))
}

fn failure_of(error: &Error) -> NodeFailure {
    match error {
        Error::Transport(TransportError::Connect(_)) => NodeFailure::Unreachable,
        Error::Server(e) if error.is_gateway_failure() => NodeFailure::Gateway(e.status),
        Error::Server(e) => NodeFailure::ClusterError(e.code.clone()),
        _ => NodeFailure::ConnectionLost,
    }
}

impl AuthMachine {
    /// Node `index` failed: it is avoided, and the client moves on (said
    /// with [`AuthOutput::NodeChanged`]). A `NOT_LEADER` that names a
    /// leader the client knows moves the client there.
    pub fn node_failed(&mut self, index: usize, reason: NodeFailure, now: Now) {
        if let Some(switch) = self.nodes.failed(index, reason, now.instant) {
            self.out.push_back(AuthOutput::NodeChanged(switch));
        }
    }

    fn node_failed_with(&mut self, index: usize, error: &Error, now: Now) {
        self.node_failed(index, failure_of(error), now);
        if error.is_not_leader()
            && let Some(leader) = named_leader(error).and_then(|a| self.nodes.find(a))
            && let Some(switch) =
                self.nodes
                    .prefer(leader, NodeFailure::ClusterError(ErrorCode::NotLeader), now.instant)
        {
            self.out.push_back(AuthOutput::NodeChanged(switch));
        }
    }

    /// Operation `op`, sent to node `node`, failed with `error` (a
    /// transport error or a cluster error): `None` when it goes again (to
    /// another node), else the error for its caller. See the module docs.
    pub(super) fn failover(&mut self, op: OpId, node: usize, error: Error, now: Now) -> Option<Error> {
        let unsent = matches!(error, Error::Transport(TransportError::Connect(_)));
        self.node_failed_with(node, &error, now);
        // The budget is the bound (an election takes seconds: with the
        // back-off, about 7 tries in 5 s, 18 in 30 s); the cap only keeps a
        // huge budget from meaning endless tries.
        let attempts_cap = self
            .config
            .max_retries
            .max(MIN_FAILOVER_TRIES)
            .saturating_add(self.nodes.len() as u32);
        let budget = self.config.retry_budget;
        let available = self.nodes.any_available(now.instant);
        let Some(pending) = self.ops.get_mut(&op) else {
            return Some(error);
        };
        if let Operation::Upload(u) = &pending.operation
            && !u.replayable
        {
            return Some(error);
        }
        if !unsent && !pending.operation.retry_safe() {
            if error.is_not_leader() {
                return Some(error); // refused, not run
            }
            return Some(Error::OutcomeUnknown {
                node: self.nodes.endpoints_of(node).base().to_owned(),
                source: Box::new(error),
            });
        }
        // At once to a node not avoided when nothing was sent; after the
        // back-off otherwise (an election takes a few seconds).
        let at = if unsent && available {
            now.instant
        } else {
            now.instant + super::retry::backoff(pending.attempts)
        };
        if pending.attempts >= attempts_cap || at > pending.submitted + budget {
            return Some(error);
        }
        pending.attempts += 1;
        if at == now.instant {
            self.waiting.push_front(op);
        } else {
            self.delayed.push((at, op));
        }
        None
    }

    /// The machine's own login or refresh (request `id`, sent to `node`)
    /// failed with `error`: with several nodes it goes to the next node
    /// (once per node), and `None` is returned; otherwise the error, for
    /// the recovery to go on as with one node.
    pub(super) fn resend_recovery(&mut self, id: RequestId, node: usize, error: Error, now: Now) -> Option<Error> {
        if !self.nodes.is_cluster() {
            return Some(error);
        }
        let Some(Resend {
            id: sent,
            kind,
            request,
            tries,
        }) = self.recovery_resend.take()
        else {
            return Some(error);
        };
        let retryable =
            matches!(error, Error::Transport(_)) || error.is_cluster_transient() || error.is_gateway_failure();
        if sent != id || !retryable || tries as usize + 1 >= self.nodes.len() {
            return Some(error);
        }
        self.node_failed_with(node, &error, now);
        let from = self.nodes.endpoints_of(node).base().to_owned();
        let to = self.nodes.endpoints().base().to_owned();
        let mut request = request;
        let retargeted = request
            .uri()
            .to_string()
            .strip_prefix(&from)
            .and_then(|path| format!("{to}{path}").parse().ok());
        let Some(uri) = retargeted else {
            return Some(error);
        };
        *request.uri_mut() = uri;
        let new = self.transmit(kind, request, super::InFlight::Recovery);
        if let Some(resend) = &mut self.recovery_resend {
            resend.tries = tries + 1;
        }
        match &mut self.phase {
            Phase::LoggingIn { req, .. } | Phase::Refreshing { req } if *req == id => *req = new,
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ServerError;

    #[test]
    fn the_leader_is_read_from_a_not_leader_message() {
        let e = Error::Server(ServerError {
            status: 503,
            code: ErrorCode::NotLeader,
            message: "Not leader for shard. Leader: 127.0.0.1:23002".into(),
            details: None,
            retry_after_secs: None,
        });
        assert_eq!(named_leader(&e), Some("127.0.0.1:23002"));
        assert_eq!(failure_of(&e), NodeFailure::ClusterError(ErrorCode::NotLeader));
        assert_eq!(
            failure_of(&Error::Transport(TransportError::Connect("refused".into()))),
            NodeFailure::Unreachable
        );
        assert_eq!(
            failure_of(&Error::Transport(TransportError::ClosedBeforeAnswer)),
            NodeFailure::ConnectionLost
        );
    }
}
