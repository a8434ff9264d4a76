//! Every HTTP answer decoder, fed arbitrary bodies: the endpoint table's
//! decoder for each request kind (SQL, login, refresh, me, health, setup,
//! topics, download heads), the error decoder (all of the server's body
//! shapes), typed rows read in one pass from the bytes, and FILE column
//! text. A typed error at worst, never a panic; an error answer's status
//! is kept.
#![no_main]

use http::{HeaderMap, HeaderValue, StatusCode};
use kalam_proto::{ENDPOINTS, FileRef, framing};
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Row {
    id: i64,
    name: Option<String>,
    price: Option<f64>,
    at: Option<kalam_proto::Timestamp>,
    doc: Option<FileRef>,
}

fuzz_target!(|data: &[u8]| {
    let (status, retry_after, body) = match data {
        [a, b, c, rest @ ..] => (u16::from_be_bytes([*a, *b]) % 500 + 100, *c, rest),
        _ => (200, 0, data),
    };
    let status = StatusCode::from_u16(status).expect("100..600");
    let mut headers = HeaderMap::new();
    if retry_after & 1 == 1 {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(u32::from(retry_after / 2)));
        headers.insert(
            http::header::DATE,
            HeaderValue::from_static("Sat, 05 Dec 2026 12:00:00 GMT"),
        );
    }
    for endpoint in &ENDPOINTS {
        let decoded = kalam_proto::decode(endpoint.kind, status, &headers, body);
        if !status.is_success() && endpoint.kind != kalam_proto::RequestKind::Download {
            assert!(
                decoded.result.is_err(),
                "{:?}: a {status} answer read as a reply",
                endpoint.kind
            );
        }
    }
    let e = framing::decode_error(status, &headers, body);
    assert_eq!(e.status, status.as_u16());
    let _ = kalam_proto::rows::answer_rows_as::<Row>(body);
    let _ = kalam_proto::rows::answer_rows_as::<(String, bool, Vec<u8>)>(body);
    let _ = kalam_proto::rows::answer_rows_as::<serde_json::Value>(body);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = FileRef::parse(text);
    }
});
