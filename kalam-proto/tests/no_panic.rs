//! Every decoder and machine input from the network, fed arbitrary bytes:
//! a typed error at worst, never a panic.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use kalam_proto::framing::{decode_error, decode_login, decode_me, decode_query};
use kalam_proto::ws_messages::{decode_binary, decode_text};
use kalam_proto::{Endpoints, Incoming, Now, Secret, WsConfig, WsSession, jwt};
use proptest::prelude::*;

/// Real answers to mutate.
const SEEDS: &[&str] = &[
    r#"{"status":"success","results":[{"schema":[{"name":"id","data_type":"BigInt","index":0,"flags":["pk"]},{"name":"d","data_type":{"Decimal":{"precision":10,"scale":2}},"index":1}],"rows":[["9007199254740993","1.50"]],"row_count":1,"as_user":"root"}],"took":1.5,"error":null}"#,
    r#"{"error":{"code":"TOKEN_EXPIRED","message":"Invalid credentials"},"results":[],"status":"error","took":0.18}"#,
    r#"{"user":{"id":"root","role":"system","email":null},"admin_ui_access":true,"expires_at":"x","access_token":"a.b.c","refresh_token":"r","refresh_expires_at":"x"}"#,
    r#"{"type":"change","subscription_id":"k1","change_type":"update","rows":[{"id":"1","_seq":"5"}],"old_values":[{"id":"1","_seq":"4"}]}"#,
    r#"{"type":"initial_data_batch","subscription_id":"k1","rows":[{"id":"1"}],"batch_control":{"batch_num":0,"has_more":true,"status":"loading","last_seq_id":382978087716753410}}"#,
    r#"{"type":"subscription_ack","subscription_id":"k1","total_rows":0,"batch_control":{"batch_num":0,"has_more":false,"status":"ready","last_seq_id":null},"schema":[]}"#,
];

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        0..SEEDS.len(),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        any::<usize>(),
    )
        .prop_map(|(i, edits, cut)| {
            let mut b = SEEDS[i].as_bytes().to_vec();
            for (pos, byte) in edits {
                let at = pos % b.len();
                b[at] = byte;
            }
            let cut = cut % (b.len() + 1);
            b.truncate(cut.max(b.len() / 2));
            b
        })
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        "\\PC{0,200}".prop_map(String::into_bytes),
        mutated(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn http_decoders_never_panic(body in any_input(), status in 100u16..600) {
        let status = StatusCode::from_u16(status).unwrap();
        let h = HeaderMap::new();
        let _ = decode_query(status, &h, &body);
        let _ = decode_login(status, &h, &body);
        let _ = decode_me(status, &h, &body);
        let e = decode_error(status, &h, &body);
        prop_assert_eq!(e.status, status.as_u16());
    }

    #[test]
    fn ws_decoders_and_session_never_panic(frames in prop::collection::vec(any_input(), 1..12)) {
        let mut s = WsSession::new(&Endpoints::new("http://127.0.0.1:1").unwrap(), WsConfig::default());
        let now = Now::new(kalam_proto::Instant::ZERO, Duration::from_secs(1_800_000_000));
        let _ = s.subscribe("SELECT * FROM a.b", None, now);
        while s.poll_output().is_some() {}
        s.handle_token(Ok(Secret::new("t")), now);
        while s.poll_output().is_some() {}
        s.handle_connected(1, now);
        s.handle_frame(Incoming::Text(r#"{"type":"auth_success"}"#), now);
        for f in &frames {
            let _ = decode_binary(f);
            if let Ok(t) = std::str::from_utf8(f) {
                let _ = decode_text(t);
                s.handle_frame(Incoming::Text(t), now);
            }
            s.handle_frame(Incoming::Binary(f), now);
            while s.poll_output().is_some() {}
        }
    }

    #[test]
    fn jwt_inspection_never_panics(a in "\\PC{0,40}", b in any_input(), c in "\\PC{0,10}") {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b);
        let _ = jwt::inspect(&format!("{a}.{payload}.{c}"));
        let _ = jwt::inspect(&a);
    }
}
