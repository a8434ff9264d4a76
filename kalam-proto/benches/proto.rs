//! Costs of the pure core: stamping a token on a request, and one machine
//! step (a query in, its request out; its answer in, the result out).
//! Target: under 1 µs per step, and no allocation to stamp a cached token
//! (the allocation part is asserted in tests/alloc.rs).

use std::hint::black_box;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{Criterion, criterion_group, criterion_main};
use kalam_proto::{
    AuthConfig, AuthMachine, AuthOutput, AuthProvider, Endpoints, Instant, Now, Operation, QueryRequest,
};

fn token() -> String {
    let claims =
        r#"{"sub":"root","iss":"kalamdb","exp":1900000000,"iat":1800000000,"role":"system","token_type":"access"}"#;
    format!(
        "{}.{}.c2lnbmF0dXJl",
        B64.encode(r#"{"typ":"JWT","alg":"HS256"}"#),
        B64.encode(claims)
    )
}

const ANSWER: &[u8] = br#"{"status":"success","results":[{"schema":[{"name":"id","data_type":"BigInt","index":0,"flags":["pk","nn","uq"]},{"name":"name","data_type":"Text","index":1}],"rows":[["1","apple"]],"row_count":1,"as_user":"root"}],"took":1.2,"error":null}"#;

fn benches(c: &mut Criterion) {
    let now = Now::new(Instant::ZERO, Duration::from_secs(1_800_000_000));
    let auth = AuthProvider::jwt_token(token());

    c.bench_function("stamp: AuthProvider::apply_to_request (builds the header)", |b| {
        let mut req = http::Request::new(Vec::<u8>::new());
        b.iter(|| auth.apply_to_request(black_box(&mut req)).unwrap())
    });

    let machine = AuthMachine::new(
        Endpoints::new("http://127.0.0.1:2900").unwrap(),
        auth.clone(),
        AuthConfig::default(),
        now,
    );
    c.bench_function("stamp: cached Authorization value", |b| {
        let mut req = http::Request::new(Vec::<u8>::new());
        req.headers_mut().reserve(8);
        b.iter(|| {
            let v = machine.authorization(black_box(now)).unwrap().clone();
            req.headers_mut().insert(http::header::AUTHORIZATION, v);
        })
    });

    let mut m = AuthMachine::new(
        Endpoints::new("http://127.0.0.1:2900").unwrap(),
        auth,
        AuthConfig::default(),
        now,
    );
    let response = http::Response::new(ANSWER.to_vec());
    c.bench_function("round trip: submit, drain request, answer, drain result", |b| {
        b.iter(|| {
            m.submit(
                Operation::Query(QueryRequest::new("SELECT id, name FROM demo.items WHERE id = 1")),
                now,
            );
            let Some(AuthOutput::Transmit { id, request, .. }) = m.poll_output() else {
                unreachable!()
            };
            black_box(&request);
            // Answer it so the machine does not accumulate operations.
            m.handle_response(id, &response, now);
            black_box(m.poll_output());
        })
    });

    let m2 = std::cell::RefCell::new(AuthMachine::new(
        Endpoints::new("http://127.0.0.1:2900").unwrap(),
        AuthProvider::jwt_token(token()),
        AuthConfig::default(),
        now,
    ));
    c.bench_function("step: answer in, result out (decoding a one-row result)", |b| {
        b.iter_batched(
            || {
                let mut m = m2.borrow_mut();
                m.submit(Operation::Query(QueryRequest::new("SELECT 1")), now);
                match m.poll_output() {
                    Some(AuthOutput::Transmit { id, .. }) => id,
                    _ => unreachable!(),
                }
            },
            |id| {
                let mut m = m2.borrow_mut();
                m.handle_response(id, &response, now);
                black_box(m.poll_output())
            },
            criterion::BatchSize::SmallInput,
        )
    });

    // A live change frame as the server sends it (PROTOCOL §4.5), decoded
    // into the typed message, against a plain `serde_json::Value` parse of
    // the same bytes (the bare limit of the live path).
    let frame = r#"{"type":"change","subscription_id":"k12","change_type":"update","rows":[{"id":"42","name":"apricot","qty":7,"price":1.25,"_seq":"7212341234123412"}],"old_values":[{"id":"42","name":"apple","_seq":"7212341234123401"}]}"#;
    c.bench_function("live: decode a change frame (typed)", |b| {
        b.iter(|| black_box(kalam_proto::ws_messages::decode_text(black_box(frame)).unwrap()))
    });
    c.bench_function("live: serde_json::Value parse of the same frame (bare limit)", |b| {
        b.iter(|| black_box(serde_json::from_str::<serde_json::Value>(black_box(frame)).unwrap()))
    });
}

criterion_group!(proto, benches);
criterion_main!(proto);
