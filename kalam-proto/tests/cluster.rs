//! A client over the nodes of a cluster (`kalam_proto::nodes`): which node
//! each request and the socket go to, what is sent again after a node
//! fails, and what never is.

mod support;

use std::time::Duration;

use kalam_proto::{
    AuthProvider, ClientConfig, ConnectionOptions, Error, ErrorCode, Hook, KalamLinkTimeouts, NodeFailure,
    TransportError,
};
use support::{OK, Pump, T0, jwt};

const NODES: [&str; 3] = ["http://10.0.0.1:2900", "http://10.0.0.2:2900", "http://10.0.0.3:2900"];

fn config() -> ClientConfig {
    ClientConfig::new(&ConnectionOptions::default(), &KalamLinkTimeouts::default(), 7)
}

fn cluster() -> Pump {
    Pump::with_nodes(&NODES, AuthProvider::jwt_token(jwt("access", T0 + 3600, "t")), config())
}

fn refused() -> TransportError {
    TransportError::Connect("Connection refused (os error 111)".into())
}

fn reset() -> TransportError {
    TransportError::Io("connection reset by peer".into())
}

fn cluster_error(code: &str, message: &str) -> String {
    format!(r#"{{"status":"error","results":[],"took":0.1,"error":{{"code":"{code}","message":"{message}"}}}}"#)
}

fn switches(p: &Pump) -> Vec<(String, String, NodeFailure)> {
    p.hooks
        .iter()
        .filter_map(|h| match h {
            Hook::NodeChanged(s) => Some((s.from.clone(), s.to.clone(), s.reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn requests_stay_on_the_first_node_while_it_answers() {
    let mut p = cluster();
    for _ in 0..3 {
        let w = p.query("INSERT INTO a.b VALUES (1)");
        let sent = p.pending_http().expect("sent");
        assert_eq!(sent.host, "10.0.0.1:2900");
        let id = sent.id;
        p.answer(id, 200, OK);
        assert!(p.query_ok(w));
    }
    assert!(switches(&p).is_empty());
}

#[test]
fn a_refused_connection_goes_to_the_next_node_at_once_and_the_client_stays_there() {
    let mut p = cluster();
    let w = p.query("INSERT INTO a.b VALUES (1)");
    let first = p.pending_http().expect("sent").id;
    p.fail(first, refused());
    let again = p.pending_http().expect("sent again at once, nothing was written");
    assert_eq!(again.host, "10.0.0.2:2900");
    let id = again.id;
    p.answer(id, 200, OK);
    assert!(p.query_ok(w), "{:?}", p.result(w));
    assert_eq!(
        switches(&p),
        vec![(NODES[0].into(), NODES[1].into(), NodeFailure::Unreachable)]
    );
    // Sticky: the next request goes to node 2 even after node 1's back-off.
    p.run_until(60_000);
    p.query("SELECT 1");
    assert_eq!(p.pending_http().expect("sent").host, "10.0.0.2:2900");
}

#[test]
fn a_read_whose_answer_was_lost_is_read_again_from_another_node() {
    for error in [
        reset(),
        TransportError::ClosedBeforeAnswer,
        TransportError::Timeout(Duration::from_secs(30)),
    ] {
        let mut p = cluster();
        let w = p.query("SELECT * FROM a.b");
        let id = p.pending_http().expect("sent").id;
        p.fail(id, error.clone());
        assert!(p.pending_http().is_none(), "{error:?}: after a back-off, not at once");
        p.run_until(100);
        let again = p.pending_http().expect("read again");
        assert_eq!(again.host, "10.0.0.2:2900");
        let id = again.id;
        p.answer(id, 200, OK);
        assert!(p.query_ok(w), "{error:?}: {:?}", p.result(w));
    }
}

#[test]
fn a_write_whose_answer_was_lost_is_never_sent_twice_and_its_outcome_is_unknown() {
    for error in [
        reset(),
        TransportError::ClosedBeforeAnswer,
        TransportError::Timeout(Duration::from_secs(30)),
    ] {
        let mut p = cluster();
        let w = p.query("INSERT INTO a.b VALUES (1)");
        let id = p.pending_http().expect("sent").id;
        p.fail(id, error.clone());
        match p.error(w) {
            Some(Error::OutcomeUnknown { node, source }) => {
                assert_eq!(node, NODES[0]);
                assert!(matches!(**source, Error::Transport(_)), "{source:?}");
            }
            other => panic!("{error:?}: expected OutcomeUnknown, got {other:?}"),
        }
        p.run_until(60_000);
        assert_eq!(p.http.len(), 1, "{error:?}: sent again");
        // The node is left all the same.
        p.query("SELECT 1");
        assert_eq!(p.pending_http().expect("sent").host, "10.0.0.2:2900");
    }
}

#[test]
fn a_write_marked_idempotent_is_sent_again() {
    let mut p = cluster();
    let w = p.submit(kalam_proto::Operation::Query(
        kalam_proto::QueryRequest::new("DELETE FROM a.b WHERE id = 5").idempotent(),
    ));
    let id = p.pending_http().expect("sent").id;
    p.fail(id, reset());
    p.run_until(100);
    let id = p.pending_http().expect("sent again").id;
    p.answer(id, 200, OK);
    assert!(p.query_ok(w));
}

#[test]
fn not_leader_sends_a_read_to_the_named_leader_and_answers_a_write_with_the_refusal() {
    let mut p = cluster();
    let w = p.query("SELECT 1");
    let id = p.pending_http().expect("sent").id;
    let body = cluster_error("NOT_LEADER", "Not leader for shard. Leader: 10.0.0.3:2900");
    p.answer(id, 503, &body);
    p.run_until(100);
    let again = p.pending_http().expect("sent again");
    assert_eq!(again.host, "10.0.0.3:2900", "the leader named");
    let id = again.id;
    p.answer(id, 200, OK);
    assert!(p.query_ok(w));

    let w = p.query("INSERT INTO a.b VALUES (1)");
    let id = p.pending_http().expect("sent").id;
    p.answer(
        id,
        503,
        &cluster_error("NOT_LEADER", "Not leader for shard. Leader: 10.0.0.1:2900"),
    );
    assert_eq!(p.error(w).and_then(Error::code), Some(&ErrorCode::NotLeader));
    p.run_until(60_000);
    assert_eq!(p.http.len(), 3, "the write was not sent again");
}

#[test]
fn forward_failed_on_a_write_is_an_unknown_outcome() {
    let mut p = cluster();
    let w = p.query("UPDATE a.b SET v = 1 WHERE id = 1");
    let id = p.pending_http().expect("sent").id;
    p.answer(id, 502, &cluster_error("FORWARD_FAILED", "could not forward"));
    match p.error(w) {
        Some(Error::OutcomeUnknown { source, .. }) => {
            assert_eq!(source.code(), Some(&ErrorCode::ForwardFailed))
        }
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
}

#[test]
fn with_every_node_down_every_caller_is_answered_within_its_budget() {
    let mut p = cluster();
    let reads: Vec<_> = (0..3).map(|_| p.query("SELECT 1")).collect();
    let write = p.query("INSERT INTO a.b VALUES (1)");
    let budget = KalamLinkTimeouts::default().receive_timeout;
    let mut t = 0;
    while !p.unanswered().is_empty() {
        let pending: Vec<_> = p.http.iter().filter(|s| !s.answered).map(|s| s.id).collect();
        for id in pending {
            p.fail(id, refused());
        }
        t += 50;
        p.run_until(t);
        assert!(
            Duration::from_millis(t) <= budget + Duration::from_secs(1),
            "still waiting at {t} ms"
        );
    }
    for w in reads.into_iter().chain([write]) {
        assert!(
            matches!(p.error(w), Some(Error::Transport(TransportError::Connect(_)))),
            "{:?}",
            p.result(w)
        );
    }
    // A node comes back: the next query goes through.
    p.run_until(t + 60_000);
    let w = p.query("SELECT 1");
    let id = p.pending_http().expect("sent").id;
    p.answer(id, 200, OK);
    assert!(p.query_ok(w));
}

#[test]
fn one_login_serves_every_node_and_moves_with_the_client() {
    let mut p = Pump::with_nodes(&NODES, AuthProvider::basic_auth("root".into(), "pw".into()), config());
    let w = p.query("SELECT 1");
    let login = p.pending_http().expect("login");
    assert_eq!(login.host, "10.0.0.1:2900");
    let id = login.id;
    p.fail(id, refused());
    let login = p.pending_http().expect("login sent to the next node");
    assert_eq!(
        (login.kind, login.host.as_str()),
        (kalam_proto::RequestKind::Login, "10.0.0.2:2900")
    );
    let id = login.id;
    p.answer_login(id, &jwt("access", T0 + 3600, "a"), &jwt("refresh", T0 + 7200, "r"));
    let q = p.pending_http().expect("the query");
    assert_eq!(q.host, "10.0.0.2:2900");
    let id = q.id;
    p.answer(id, 200, OK);
    assert!(p.query_ok(w));
    // The query's node fails: the next node takes the same token, no login.
    let w = p.query("SELECT 2");
    let id = p.pending_http().expect("sent").id;
    p.fail(id, refused());
    let q = p.pending_http().expect("to node 3");
    assert_eq!(q.host, "10.0.0.3:2900");
    let id = q.id;
    p.answer(id, 200, OK);
    assert!(p.query_ok(w));
    assert_eq!(
        p.sent_of(kalam_proto::RequestKind::Login).len(),
        2,
        "one login, sent twice"
    );
}

#[test]
fn the_socket_follows_the_client_to_the_next_node_and_resumes_from_the_last_seq() {
    let mut p = cluster();
    let (w, sub) = p.subscribe("SELECT * FROM a.b", None);
    let sub = sub.expect("a subscription");
    assert!(p.opens[0].1.starts_with("ws://10.0.0.1:2900/"), "{}", p.opens[0].1);
    p.bring_up();
    let id = last_wire(&p);
    p.frame(&support::ack_frame(&id, false));
    assert!(p.result(w).is_some());
    p.frame(&support::change_frame(&id, 1, 41));
    // The node dies: the socket drops without a close frame.
    p.socket_closed(None, "connection reset");
    p.run_until(60_000);
    let (_, url) = p.opens.last().expect("reconnected").clone();
    assert!(url.starts_with("ws://10.0.0.2:2900/"), "{url}");
    p.bring_up();
    let resubscribe = p.frames_of("subscribe").last().cloned().unwrap();
    assert_eq!(resubscribe["subscription"]["options"]["from"], 41, "{resubscribe}");
    assert_eq!(
        switches(&p),
        vec![(NODES[0].into(), NODES[1].into(), NodeFailure::SocketLost)]
    );
    assert!(p.events(sub).len() >= 2);
}

#[test]
fn a_not_leader_sent_as_a_400_is_a_refusal_too() {
    let mut p = cluster();
    let body = r#"{"status":"error","results":[],"took":0.1,"error":{"code":"SQL_EXECUTION_ERROR","message":"Statement 1 failed: Not leader for shard. Leader: None"}}"#;
    let w = p.query("SELECT 1");
    let id = p.pending_http().expect("sent").id;
    p.answer(id, 400, body);
    p.run_until(100);
    let again = p.pending_http().expect("a read goes again");
    assert_eq!(again.host, "10.0.0.2:2900");
    let id = again.id;
    p.answer(id, 200, OK);
    assert!(p.query_ok(w));
    let w = p.query("INSERT INTO a.b VALUES (1)");
    let id = p.pending_http().expect("sent").id;
    p.answer(id, 400, body);
    let e = p.error(w).expect("answered");
    assert!(e.is_not_leader() && !e.is_outcome_unknown(), "{e:?}");
    // An ordinary execution error is neither.
    let w = p.query("INSERT INTO a.b VALUES (1)");
    let id = p.pending_http().expect("sent").id;
    p.answer(id, 400, r#"{"status":"error","results":[],"took":0.1,"error":{"code":"SQL_EXECUTION_ERROR","message":"Statement 1 failed: duplicate key"}}"#);
    let e = p.error(w).expect("answered");
    assert!(!e.is_cluster_transient(), "{e:?}");
}

/// The wire id of the last subscribe sent.
fn last_wire(p: &Pump) -> String {
    p.frames_of("subscribe").last().expect("a subscribe")["subscription"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A subscription on a socket brought up, acknowledged: it and its wire id.
fn acknowledged_subscription(p: &mut Pump) -> (kalam_proto::SubId, String) {
    let (_, sub) = p.subscribe("SELECT * FROM a.b", None);
    let sub = sub.expect("a subscription");
    p.bring_up();
    let wire = last_wire(p);
    p.frame(&support::ack_frame(&wire, false));
    (sub, wire)
}

/// The socket drops without a close frame; once the session has
/// reconnected and resubscribed, the resubscribe's wire id.
fn resubscribed(p: &mut Pump, why: &str) -> String {
    p.socket_closed(None, why);
    p.run_until(60_000);
    p.bring_up();
    last_wire(p)
}

fn insert_frame(wire: &str, id: i64, seq: i64) -> String {
    format!(
        r#"{{"type":"change","subscription_id":"{wire}","change_type":"insert","rows":[{{"id":"{id}","v":"x","_seq":"{seq}"}}]}}"#
    )
}

/// After a move to another node, the resume sends rows already delivered
/// again, stamped with that node's own `_seq` (seen on the real cluster),
/// and a node behind the one left notifies changes already delivered: each
/// is dropped, by its content; new rows and a new version of a row are not.
#[test]
fn rows_already_delivered_are_dropped_after_a_resume() {
    use kalam_proto::LiveEvent;
    let mut p = cluster();
    let (sub, wire) = acknowledged_subscription(&mut p);
    p.frame(&insert_frame(&wire, 1, 40));
    p.frame(&insert_frame(&wire, 2, 41));
    let wire = resubscribed(&mut p, "node died");
    let before = p.events(sub).len();
    p.frame(&support::ack_frame(&wire, true));
    // Row 2 again under the new node's `_seq` (its columns in another
    // order, as another node sends them), and row 3, new.
    p.frame(&format!(
        r#"{{"type":"initial_data_batch","subscription_id":"{wire}","rows":[{{"_seq":"45","v":"x","id":"2"}},{{"id":"3","v":"x","_seq":"46"}}],"batch_control":{{"batch_num":0,"has_more":false,"status":"loading","last_seq_id":null}}}}"#
    ));
    // A node behind notifies row 1 again; then row 4, and row 1 changed.
    p.frame(&insert_frame(&wire, 1, 47));
    p.frame(&insert_frame(&wire, 4, 48));
    p.frame(&format!(
        r#"{{"type":"change","subscription_id":"{wire}","change_type":"update","rows":[{{"id":"1","v":"y","_seq":"49"}}],"old_values":[{{"id":"1","v":"x","_seq":"47"}}]}}"#
    ));
    let ids: Vec<(String, i64)> = p.events(sub)[before..]
        .iter()
        .flat_map(|e| {
            let rows = match e {
                LiveEvent::InitialRows { rows, .. } => rows.clone(),
                LiveEvent::Insert { row } | LiveEvent::Update { row, .. } => vec![row.clone()],
                _ => vec![],
            };
            rows.into_iter()
                .map(|r| (r.get::<String>("v").unwrap(), r.get::<i64>("id").unwrap()))
        })
        .collect();
    assert_eq!(ids, vec![("x".into(), 3), ("x".into(), 4), ("y".into(), 1)]);
}

#[test]
fn one_node_drops_nothing_it_is_sent() {
    use kalam_proto::LiveEvent;
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 3600, "t")), config());
    let (sub, wire) = acknowledged_subscription(&mut p);
    p.frame(&insert_frame(&wire, 1, 40));
    let wire = resubscribed(&mut p, "dropped");
    p.frame(&support::ack_frame(&wire, false));
    p.frame(&insert_frame(&wire, 1, 41));
    let inserts = p
        .events(sub)
        .iter()
        .filter(|e| matches!(e, LiveEvent::Insert { .. }))
        .count();
    assert_eq!(inserts, 2, "with one node, what the server sends is delivered");
}

/// The login kept to send to another node holds the password: the core's
/// `Debug` shows it in no form, and it is not kept once answered.
#[test]
fn the_login_kept_for_another_node_shows_no_password() {
    let mut p = Pump::with_nodes(
        &NODES,
        AuthProvider::basic_auth("root".into(), "pw-secret-7".into()),
        config(),
    );
    p.query("SELECT 1");
    let body = p.pending_http().expect("login").body.clone();
    let as_bytes = format!("{body:?}");
    let as_bytes = &as_bytes[1..as_bytes.len() - 1];
    for shown in [format!("{:?}", p.core), format!("{:#?}", p.core)] {
        assert!(!shown.contains("pw-secret-7"), "the password in Debug");
        assert!(!shown.contains(as_bytes), "the login body's bytes in Debug");
    }
}

/// A proxy or load balancer in front of a node answers for it when it is
/// down (`502` with its own page): the node is left; a read goes again, a
/// write is unknown.
#[test]
fn a_gateway_answering_for_a_dead_node_moves_the_client() {
    let mut p = cluster();
    let w = p.query("SELECT 1");
    let id = p.pending_http().expect("sent").id;
    p.answer(id, 502, "<html><head><title>502 Bad Gateway</title></head></html>");
    p.run_until(100);
    let again = p.pending_http().expect("read again");
    assert_eq!(again.host, "10.0.0.2:2900");
    let id = again.id;
    p.answer(id, 200, OK);
    assert!(p.query_ok(w));
    assert_eq!(switches(&p)[0].2, NodeFailure::Gateway(502));
    let w = p.query("INSERT INTO a.b VALUES (1)");
    let id = p.pending_http().expect("sent").id;
    p.answer(id, 504, "gateway timeout");
    assert!(p.error(w).is_some_and(Error::is_outcome_unknown), "{:?}", p.result(w));
    // A KalamDB 503 with its own code is not a gateway's.
    let e = Error::Server(kalam_proto::ServerError {
        status: 503,
        code: ErrorCode::NotLeader,
        message: String::new(),
        details: None,
        retry_after_secs: None,
    });
    assert!(!e.is_gateway_failure() && e.is_cluster_transient());
}
