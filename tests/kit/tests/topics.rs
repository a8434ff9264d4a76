//! Topics (PROTOCOL §5): topic DDL, table changes feeding a topic,
//! `POST /v1/api/topics/consume` and `/ack`, and their errors.
//!
//! One exchange runs against the kit with its assertions; the same
//! exchange against the real server (`topics_match_the_real_server`,
//! ignored in a plain `cargo test`) must pass the same assertions and give
//! answers of the same shape.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kalam_testkit::TestServer;
use serde_json::{Value, json};
use support::{Cmp, Http, Recorder, Reply, Step, exchange_matches_real, expired_token};

impl Recorder {
    /// A topic call with raw headers and body.
    async fn call(&mut self, cmp: Cmp, path: &str, headers: &[(&str, &str)], body: &str) -> &Reply {
        let reply = self.http.send("POST", path, headers, body.to_owned()).await;
        self.record(format!("{path} {body}"), cmp, reply)
    }

    /// A topic call as `token` with a JSON body.
    async fn topic(&mut self, token: &str, what: &str, body: Value) -> &Reply {
        let auth = format!("Bearer {token}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        self.call(
            Cmp::Exact,
            &format!("/v1/api/topics/{what}"),
            &headers,
            &body.to_string(),
        )
        .await
    }
}

/// The payloads of a consume answer, decoded, with each message's `op`,
/// `key` and `user`.
fn decoded(r: &Reply) -> Vec<(Value, Value, Value, Value)> {
    r.json()["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let bytes = B64
                .decode(m["payload"].as_str().expect("payload"))
                .expect("standard base64");
            let payload: Value = serde_json::from_slice(&bytes).expect("payload is JSON");
            (payload, m["op"].clone(), m["key"].clone(), m["user"].clone())
        })
        .collect()
}

fn offsets(r: &Reply) -> Vec<u64> {
    r.json()["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect()
}

/// The exchange, with its assertions; its steps for the comparison.
async fn exchange(base: &str) -> Vec<Step> {
    let http = Http::new(base);
    let root = http.login("root", "kalamdb123").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let mut run = Recorder::new(http.clone());
    run.ok(&root, "CREATE NAMESPACE tq").await;
    run.ok(&root, "CREATE SHARED TABLE tq.items (id BIGINT PRIMARY KEY, name TEXT)")
        .await;
    run.ok(&root, "CREATE USER TABLE tq.notes (id BIGINT PRIMARY KEY, body TEXT)")
        .await;
    run.ok(&root, "CREATE USER 'svc' WITH PASSWORD 'password123' ROLE service")
        .await;
    run.ok(&root, "CREATE USER 'bob' WITH PASSWORD 'password123' ROLE user")
        .await;
    let token = |v: Value| v["access_token"].as_str().expect("token").to_owned();
    let svc = token(http.login("svc", "password123").await);
    let bob = token(http.login("bob", "password123").await);

    // Topic DDL and its errors.
    let r = run.ok(&root, "CREATE TOPIC tq.events").await;
    assert_eq!(
        r.json()["results"][0]["message"],
        "Created topic 'tq.events' with 1 partition(s)"
    );
    for (sql, code) in [
        ("CREATE TOPIC tq.events", "SQL_EXECUTION_ERROR"),
        ("CREATE TOPIC plain", "SQL_EXECUTION_ERROR"),
        ("CREATE TOPIC nons.t", "SQL_EXECUTION_ERROR"),
        ("CREATE TOPIC tq.x PARTITIONS x", "INVALID_SQL"),
        (
            "ALTER TOPIC tq.nope ADD SOURCE tq.items ON INSERT",
            "SQL_EXECUTION_ERROR",
        ),
        ("ALTER TOPIC tq.events ADD SOURCE tq.items ON UPSERT", "INVALID_SQL"),
        ("ALTER TOPIC tq.events ADD SOURCE tq.items", "INVALID_SQL"),
        ("DROP TOPIC tq.nope", "SQL_EXECUTION_ERROR"),
    ] {
        let r = run.sql(&root, Cmp::Exact, sql).await;
        assert_eq!((r.status, r.code()), (400, code.to_owned()), "{sql}: {}", r.text());
    }
    let r = run.sql(&svc, Cmp::Exact, "CREATE TOPIC tq.x").await;
    assert_eq!((r.status, r.code()), (403, "PERMISSION_DENIED".to_owned()));
    for op in ["INSERT", "UPDATE", "DELETE"] {
        run.ok(&root, &format!("ALTER TOPIC tq.events ADD SOURCE tq.items ON {op}"))
            .await;
    }
    let r = run
        .sql(&root, Cmp::Exact, "ALTER TOPIC tq.events ADD SOURCE tq.items ON INSERT")
        .await;
    assert_eq!(r.code(), "SQL_EXECUTION_ERROR");

    // Changes feed the topic.
    run.ok(&root, "INSERT INTO tq.items (id, name) VALUES (1, 'a'), (2, 'b')")
        .await;
    run.ok(&root, "UPDATE tq.items SET name = 'c' WHERE id = 1").await;
    run.ok(&root, "DELETE FROM tq.items WHERE id = 2").await;
    let consume = |group: &str, start: Value, limit: u64| json!({"topic_id": "tq.events", "group_id": group, "start": start, "limit": limit});
    let r = run.topic(&svc, "consume", consume("g", json!("Earliest"), 2)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(offsets(r), vec![0, 1]);
    assert_eq!(
        (r.json()["next_offset"].clone(), r.json()["has_more"].clone()),
        (json!(2), json!(true))
    );
    let first = decoded(r);
    assert_eq!(first[0].0["id"], "1");
    assert_eq!(first[0].0["name"], "a");
    assert_eq!(first[0].0["_table"], "tq:items");
    assert_eq!(first[0].0["_deleted"], false);
    assert!(first[0].0["_seq"].is_string() && first[0].0["_commit_seq"].is_string());
    assert_eq!(
        (first[0].1.clone(), first[0].2.clone(), first[0].3.clone()),
        (json!("Insert"), json!("1"), Value::Null)
    );
    // The group's claim: the rest, then nothing (next_offset = the start offset).
    let r = run.topic(&svc, "consume", consume("g", json!("earliest"), 10)).await;
    assert_eq!(offsets(r), vec![2, 3]);
    assert_eq!(
        (r.json()["next_offset"].clone(), r.json()["has_more"].clone()),
        (json!(4), json!(false))
    );
    let rest = decoded(r);
    assert_eq!(
        (rest[0].0["name"].clone(), rest[0].1.clone()),
        (json!("c"), json!("Update"))
    );
    assert_eq!(
        (
            rest[1].0["id"].clone(),
            rest[1].0["_deleted"].clone(),
            rest[1].1.clone()
        ),
        (json!("2"), json!(true), json!("Delete"))
    );
    let r = run.topic(&svc, "consume", consume("g", json!("Earliest"), 10)).await;
    assert_eq!((offsets(r), r.json()["next_offset"].clone()), (vec![], json!(0)));
    // Latest, an explicit offset, and a committed offset that wins over `start`.
    let r = run.topic(&svc, "consume", consume("latest", json!("Latest"), 10)).await;
    assert_eq!((offsets(r), r.json()["next_offset"].clone()), (vec![], json!(4)));
    let r = run
        .topic(&svc, "consume", consume("off", json!({"Offset": 3}), 10))
        .await;
    assert_eq!(offsets(r), vec![3]);
    let ack = json!({"topic_id": "tq.events", "group_id": "acked", "upto_offset": 1});
    let r = run.topic(&root, "ack", ack).await;
    assert_eq!(r.json(), json!({"success": true, "acknowledged_offset": 1}));
    let r = run.topic(&svc, "consume", consume("acked", json!("Latest"), 1)).await;
    assert_eq!((offsets(r), r.json()["has_more"].clone()), (vec![2], json!(true)));

    // Errors: role, unknown topic, auth, malformed bodies.
    let r = run.topic(&bob, "consume", consume("g", json!("Earliest"), 1)).await;
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            json!({"error": "Topic consumption requires service, dba, or system role", "code": "FORBIDDEN"})
        )
    );
    let r = run
        .topic(
            &bob,
            "ack",
            json!({"topic_id": "tq.events", "group_id": "g", "upto_offset": 0}),
        )
        .await;
    assert_eq!((r.status, r.json()["code"].clone()), (403, json!("FORBIDDEN")));
    let r = run
        .topic(&svc, "consume", json!({"topic_id": "tq.nope", "group_id": "g"}))
        .await;
    assert_eq!(
        (r.status, r.json()),
        (
            404,
            json!({"error": "Topic 'tq.nope' does not exist", "code": "NOT_FOUND"})
        )
    );
    let r = run
        .topic(
            &svc,
            "ack",
            json!({"topic_id": "tq.nope", "group_id": "g", "upto_offset": 0}),
        )
        .await;
    assert_eq!(r.status, 404);
    let expired = expired_token("svc", "service");
    let r = run.topic(&expired, "consume", consume("g", json!("Earliest"), 1)).await;
    assert_eq!((r.status, r.code()), (401, "TOKEN_EXPIRED".to_owned()));
    let r = run
        .topic("garbage", "consume", consume("g", json!("Earliest"), 1))
        .await;
    assert_eq!((r.status, r.code()), (401, "INVALID_CREDENTIALS".to_owned()));
    let r = run
        .call(
            Cmp::Shape,
            "/v1/api/topics/ack",
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "MISSING_AUTHORIZATION".to_owned()));
    let svc_auth = format!("Bearer {svc}");
    let json_headers = [
        ("authorization", svc_auth.as_str()),
        ("content-type", "application/json"),
    ];
    for (path, body, text) in [
        (
            "consume",
            r#"{"topic_id":"tq.events"}"#,
            "Json deserialize error: missing field `group_id` at line 1 column 24",
        ),
        (
            "consume",
            r#"{"topic_id":"tq.events","group_id":"g","start":"Middle"}"#,
            "Json deserialize error: Invalid start position: Middle at line 1 column 56",
        ),
        (
            "ack",
            r#"{"topic_id":"tq.events","group_id":"g"}"#,
            "Json deserialize error: missing field `upto_offset` at line 1 column 39",
        ),
        (
            "ack",
            "{bad",
            "Json deserialize error: key must be a string at line 1 column 2",
        ),
    ] {
        let r = run
            .call(Cmp::Exact, &format!("/v1/api/topics/{path}"), &json_headers, body)
            .await;
        assert_eq!((r.status, r.text()), (400, text.to_owned()), "{body}");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }
    let r = run
        .call(
            Cmp::Exact,
            "/v1/api/topics/consume",
            &[("authorization", &svc_auth)],
            "{}",
        )
        .await;
    assert_eq!((r.status, r.text()), (400, "Content type error".to_owned()));

    // A USER table, two partitions, the writer as `user`, key-only payloads.
    run.ok(&root, "CREATE TOPIC tq.notes_topic PARTITIONS 2").await;
    run.ok(
        &root,
        "ALTER TOPIC tq.notes_topic ADD SOURCE tq.notes ON INSERT WITH (payload = 'key')",
    )
    .await;
    let r = run
        .sql(
            &bob,
            Cmp::Exact,
            "INSERT INTO tq.notes (id, body) VALUES (1, 'x'), (2, 'y'), (3, 'z'), (4, 'w')",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut seen = Vec::new();
    for partition in [0, 1] {
        let body =
            json!({"topic_id": "tq.notes_topic", "group_id": "n", "start": "Earliest", "partition_id": partition});
        let r = run.topic(&svc, "consume", body).await;
        for (payload, op, key, user) in decoded(r) {
            assert_eq!((op, user), (json!("Insert"), json!("bob")));
            assert!(payload.get("_table").is_none(), "key payloads have no _table");
            assert_eq!(payload["id"], key);
            seen.push(key);
        }
    }
    seen.sort_by_key(|k| k.as_str().map(str::to_owned));
    assert_eq!(seen, vec![json!("1"), json!("2"), json!("3"), json!("4")]);

    // A STREAM table (no `_commit_seq` in its rows), and EXECUTE AS: the
    // target is the message's user.
    run.ok(
        &root,
        "CREATE STREAM TABLE tq.ev (id BIGINT PRIMARY KEY, v TEXT) WITH (TTL_SECONDS = 60)",
    )
    .await;
    run.ok(&root, "CREATE TOPIC tq.evt").await;
    run.ok(&root, "ALTER TOPIC tq.evt ADD SOURCE tq.ev ON INSERT").await;
    run.ok(&root, "ALTER TOPIC tq.evt ADD SOURCE tq.notes ON INSERT").await;
    let r = run
        .sql(&bob, Cmp::Exact, "INSERT INTO tq.ev (id, v) VALUES (1, 'a')")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    run.ok(
        &root,
        "EXECUTE AS USER 'bob' (INSERT INTO tq.notes (id, body) VALUES (9, 'as bob'))",
    )
    .await;
    let body = json!({"topic_id": "tq.evt", "group_id": "e", "start": "Earliest"});
    let r = run.topic(&svc, "consume", body).await;
    let got = decoded(r);
    assert_eq!(got.len(), 2);
    assert!(got[0].0.get("_commit_seq").is_none(), "{}", got[0].0);
    assert_eq!(
        (got[0].0["_table"].clone(), got[0].3.clone()),
        (json!("tq:ev"), json!("bob"))
    );
    assert_eq!(
        (got[1].0["body"].clone(), got[1].3.clone()),
        (json!("as bob"), json!("bob"))
    );

    // CLEAR and DROP.
    run.sql(&root, Cmp::Shape, "CLEAR TOPIC tq.events").await;
    // The real server clears in a job, after answering: wait (unrecorded,
    // each probe a new group, which no claim hides anything from) until a
    // group reading from the start finds nothing.
    let auth = format!("Bearer {svc}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    for probe in 0.. {
        let body = consume(&format!("clear-probe-{probe}"), json!("Earliest"), 10).to_string();
        let r = run.http.send("POST", "/v1/api/topics/consume", &headers, body).await;
        if offsets(&r).is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "CLEAR TOPIC never took effect: {}",
            r.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = run
        .topic(&svc, "consume", consume("after-clear", json!("Earliest"), 10))
        .await;
    assert_eq!(offsets(r), Vec::<u64>::new(), "{}", r.text());
    let r = run.sql(&root, Cmp::Shape, "DROP TOPIC tq.events").await;
    assert_eq!(r.status, 200);
    let r = run.topic(&svc, "consume", consume("g", json!("Earliest"), 1)).await;
    assert_eq!(r.status, 404);
    run.steps
}

#[tokio::test]
async fn topics_fed_by_table_changes() {
    let server = TestServer::start().await;
    let steps = exchange(&server.url()).await;
    let count = |prefix: &str| steps.iter().filter(|s| s.label.starts_with(prefix)).count();
    let c = server.counters();
    // Plus the one unrecorded probe after CLEAR TOPIC (the kit clears at once).
    assert_eq!(
        (c.topic_consumes, c.topic_acks),
        (count("/v1/api/topics/consume") + 1, count("/v1/api/topics/ack"))
    );
    // What the exchange left, as the kit's accessors see it: bob's four
    // notes and the one written as bob.
    assert_eq!(
        server.committed_offset("tq.events", "acked", 0),
        None,
        "dropped with its topic"
    );
    assert_eq!(
        server
            .topic_len("tq.notes_topic", 0)
            .zip(server.topic_len("tq.notes_topic", 1))
            .map(|(a, b)| a + b),
        Some(5)
    );
    assert_eq!(server.topic_len("tq.notes_topic", 2), None);
    assert_eq!(server.topic_len("tq.events", 0), None);
    server.shutdown().await;
}

#[tokio::test]
async fn committed_offsets_are_visible_to_tests() {
    let server = TestServer::start().await;
    let http = Http::new(&server.url());
    let root = http.login("root", "kalamdb123").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    http.ok(&root, "CREATE NAMESPACE tq").await;
    http.ok(&root, "CREATE TOPIC tq.t").await;
    assert_eq!(server.committed_offset("tq.t", "g", 0), None);
    let auth = format!("Bearer {root}");
    let r = http
        .send(
            "POST",
            "/v1/api/topics/ack",
            &[("authorization", &auth), ("content-type", "application/json")],
            json!({"topic_id": "tq.t", "group_id": "g", "upto_offset": 41}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.committed_offset("tq.t", "g", 0), Some(41));
    assert_eq!(server.committed_offset("tq.t", "g", 1), None);
    assert_eq!(server.topic_len("tq.t", 0), Some(0));
    server.shutdown().await;
}

/// The payload's keys, sorted (the server writes them in hash order).
fn payload_keys(r: &Reply) -> Vec<Vec<String>> {
    if !r.json()["messages"].is_array() {
        return Vec::new();
    }
    decoded(r)
        .into_iter()
        .map(|(p, ..)| {
            let mut k: Vec<String> = p.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
            k.sort();
            k
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs the real KalamDB server (../shared/kalamdb-server): cargo test -p kalam-testkit --test topics -- --ignored"]
async fn topics_match_the_real_server() {
    let exchange = |url: String| async move { exchange(&url).await };
    exchange_matches_real(exchange, |r, k, diffs| {
        // `took` is in every SQL envelope, and never the same.
        diffs.retain(|d| !d.starts_with("$.took"));
        let (rr, kr) = (&r.reply, &k.reply);
        if r.label.starts_with("/v1/api/topics/consume") && payload_keys(rr) != payload_keys(kr) {
            diffs.push(format!(
                "payload keys {:?}, kit {:?}",
                payload_keys(rr),
                payload_keys(kr)
            ));
        }
    })
    .await;
}
