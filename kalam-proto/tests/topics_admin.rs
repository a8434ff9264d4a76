//! Topic and admin operations through the client core: topics take the same
//! path as SQL (the JWT, the in-flight cap, `TOKEN_EXPIRED` recovery, the
//! dynamic provider); health and setup go out without a token.

mod support;

use kalam_proto::{
    AckRequest, AuthProvider, ConsumeRequest, CredentialSource, Error, ErrorCode, Operation, Reply, RequestKind,
    SetupRequest,
};
use support::{EXPIRED, Pump, T0, config, jwt};

const CONSUMED: &str = r#"{"messages":[{"topic_id":"t","partition_id":0,"offset":4,"payload":"eyJpZCI6MX0=","key":null,"timestamp_ms":1,"user":"root","op":"Insert"}],"next_offset":5,"has_more":false}"#;

fn consume_op() -> Operation {
    Operation::ConsumeTopic(ConsumeRequest::new("app.orders", "billing"))
}

#[test]
fn consume_logs_in_once_and_carries_the_jwt() {
    let mut p = Pump::basic();
    let w = p.submit(consume_op());
    assert_eq!(p.last_http().kind, RequestKind::Login);
    let access = jwt("access", T0 + 3600, "a");
    let login = p.last_http().id;
    p.answer_login(login, &access, &jwt("refresh", T0 + 7200, "r"));
    let c = p.last_http();
    assert_eq!(c.kind, RequestKind::ConsumeTopic);
    assert_eq!(c.auth.as_deref(), Some(format!("Bearer {access}").as_str()));
    assert!(String::from_utf8_lossy(&c.body).contains(r#""group_id":"billing""#));
    let id = c.id;
    p.answer(id, 200, CONSUMED);
    match p.reply(w) {
        Ok(Reply::Consume(r)) => {
            assert_eq!((r.messages[0].offset, r.next_offset), (4, 5));
            assert_eq!(r.messages[0].payload_bytes().unwrap(), br#"{"id":1}"#);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn token_expired_on_consume_and_ack_refreshes_and_retries_once() {
    let mut p = Pump::basic();
    let w = p.submit(consume_op());
    let login = p.last_http().id;
    p.answer_login(login, &jwt("access", T0 + 3600, "a1"), &jwt("refresh", T0 + 7200, "r1"));
    let first = p.last_http().id;
    p.answer(first, 401, EXPIRED);
    assert_eq!(
        p.last_http().kind,
        RequestKind::Refresh,
        "recovery goes through the refresh token"
    );
    let refresh = p.last_http().id;
    let a2 = jwt("access", T0 + 3600, "a2");
    p.answer_login(refresh, &a2, &jwt("refresh", T0 + 7200, "r2"));
    let retry = p.last_http();
    assert_eq!(retry.kind, RequestKind::ConsumeTopic);
    assert_eq!(retry.auth.as_deref(), Some(format!("Bearer {a2}").as_str()));
    let id = retry.id;
    p.answer(id, 200, CONSUMED);
    assert!(matches!(p.reply(w), Ok(Reply::Consume(_))));

    let ack = p.submit(Operation::AckTopic(AckRequest {
        topic_id: "app.orders".into(),
        group_id: "billing".into(),
        partition_id: 0,
        upto_offset: 4,
    }));
    let sent = p.last_http();
    assert_eq!(sent.kind, RequestKind::AckTopic);
    assert_eq!(
        sent.body,
        br#"{"topic_id":"app.orders","group_id":"billing","partition_id":0,"upto_offset":4}"#
    );
    let id = sent.id;
    p.answer(id, 401, EXPIRED);
    let refresh = p.last_http().id;
    p.answer_login(
        refresh,
        &jwt("access", T0 + 3600, "a3"),
        &jwt("refresh", T0 + 7200, "r3"),
    );
    let id = p.last_http().id;
    p.answer(id, 401, EXPIRED);
    assert!(
        p.error(ack).is_some_and(Error::is_token_expired),
        "retried once only: {:?}",
        p.result(ack)
    );
}

#[test]
fn the_dynamic_provider_supplies_the_token_for_topics() {
    let mut p = Pump::new(AuthProvider::none(), config().with_dynamic_provider(true));
    let w = p.submit(consume_op());
    let fetch = p.pending_fetches().next().copied().expect("the provider is asked");
    assert_eq!(fetch.source, CredentialSource::DynamicProvider);
    let token = jwt("access", T0 + 3600, "dyn");
    p.credentials(fetch.id, Ok(AuthProvider::jwt_token(token.clone())));
    let c = p.last_http();
    assert_eq!(
        (c.kind, c.auth.clone()),
        (RequestKind::ConsumeTopic, Some(format!("Bearer {token}")))
    );
    let id = c.id;
    p.answer(id, 200, CONSUMED);
    assert!(matches!(p.reply(w), Ok(Reply::Consume(_))));
}

#[test]
fn role_and_topic_refusals_are_typed_and_keep_the_token() {
    let mut p = Pump::with_token("t");
    let w = p.submit(consume_op());
    let id = p.last_http().id;
    p.answer(
        id,
        403,
        r#"{"error":"Topic consumption requires service, dba, or system role","code":"FORBIDDEN"}"#,
    );
    let e = p.error(w).expect("refused");
    assert_eq!(
        (e.code(), e.server().map(|s| s.status)),
        (Some(&ErrorCode::Forbidden), Some(403))
    );
    let w = p.submit(consume_op());
    let sent = p.last_http();
    assert!(sent.auth.is_some(), "a 403 is not a reason to drop the token");
    let id = sent.id;
    p.answer(id, 404, r#"{"error":"Topic 'x' not found","code":"NOT_FOUND"}"#);
    assert_eq!(p.error(w).and_then(Error::code), Some(&ErrorCode::NotFound));
    // Refused before sending: nothing goes out.
    let before = p.http.len();
    let w = p.submit(Operation::ConsumeTopic(ConsumeRequest::new("", "g")));
    assert!(matches!(p.error(w), Some(Error::InvalidInput(_))));
    assert_eq!(p.http.len(), before);
}

#[test]
fn health_and_setup_go_out_without_a_token_and_without_logging_in() {
    let mut p = Pump::basic();
    let w = p.submit(Operation::Health);
    assert_eq!(p.http.len(), 1, "no login for an open endpoint");
    let h = p.last_http();
    assert_eq!((h.kind, h.auth.clone()), (RequestKind::Health, None));
    let id = h.id;
    p.answer(
        id,
        200,
        r#"{"api_version":"v1","build_date":"x","status":"healthy","version":"0.4.3-rc.4"}"#,
    );
    assert!(matches!(p.reply(w), Ok(Reply::Health(h)) if h.is_healthy()));

    let w = p.submit(Operation::Health);
    let id = p.last_http().id;
    p.answer(
        id,
        403,
        r#"{"error":"Access denied. Health endpoint is localhost-only."}"#,
    );
    assert!(
        matches!(p.error(w), Some(Error::LocalhostOnly { .. })),
        "{:?}",
        p.result(w)
    );

    let w = p.submit(Operation::SetupStatus);
    let id = p.last_http().id;
    assert_eq!(p.last_http().kind, RequestKind::SetupStatus);
    p.answer(
        id,
        200,
        r#"{"needs_setup":true,"message":"Server requires initial setup"}"#,
    );
    assert!(matches!(p.reply(w), Ok(Reply::SetupStatus(s)) if s.needs_setup));

    let w = p.submit(Operation::Setup(SetupRequest::new("admin", "Adm1nPass!", "R00tPass!")));
    let s = p.last_http();
    assert_eq!((s.kind, s.auth.clone()), (RequestKind::Setup, None));
    assert!(String::from_utf8_lossy(&s.body).contains(r#""root_password":"R00tPass!""#));
    let id = s.id;
    p.answer(
        id,
        409,
        r#"{"error":"already_configured","message":"Server is already configured"}"#,
    );
    assert_eq!(p.error(w).and_then(Error::code), Some(&ErrorCode::AlreadyConfigured));
    // The core keeps no copy of the passwords.
    let debug = format!("{:?}", p.core);
    assert!(!debug.contains("Adm1nPass") && !debug.contains("R00tPass"));
    assert!(p.http.iter().all(|s| s.kind != RequestKind::Login));
}
