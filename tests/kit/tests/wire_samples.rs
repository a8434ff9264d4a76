//! The kit against the recorded exchanges of `../shared/wire-samples` and,
//! when asked, against the real server.
//!
//! Every HTTP sample's requests are replayed, in the order they were
//! recorded, against one fresh server (so the samples' own DDL and inserts
//! are the setup of the later ones). Bearer tokens are re-minted with the
//! same claims and their times shifted to now (signed with the server's
//! secret only if the original verified under it), so expired, forged and
//! garbage tokens keep their meaning. Each answer is compared with the
//! recorded one: status, content type, framing (chunked or with a length),
//! the cookies' names and attributes, plain-text bodies exactly, and for
//! JSON the structure (keys *in order*, value types, array lengths), error
//! codes, row counts and `message` texts. Tokens, times and `_seq` values
//! differ, of course.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kalam_testkit::shape::{ShapeRules, shape_diff_with};
use kalam_testkit::{RealServer, TestServer};
use serde_json::Value;

mod samples;
use samples::{remint_header, unix_ms_of};

struct Exchange {
    file: String,
    index: usize,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    status: u16,
    content_type: String,
    chunked: bool,
    cookies: Vec<String>,
    text: String,
    response: Option<Value>,
}

/// Every HTTP exchange of every sample, in recording order.
fn exchanges() -> Vec<Exchange> {
    let files = samples::files("http_");
    assert!(files.len() >= 20, "expected the HTTP samples, found {}", files.len());
    let mut out = Vec::new();
    for (file, v) in files {
        let captured = v["captured_at"].as_str().unwrap_or_default().to_owned();
        let recorded = v["exchanges"].as_array().filter(|x| !x.is_empty());
        let recorded = recorded.unwrap_or_else(|| panic!("{file}: no \"exchanges\" array, or an empty one"));
        for (index, e) in recorded.iter().enumerate() {
            let req = &e["request"];
            let resp = &e["response"];
            let headers: Vec<(String, String)> = req["headers"]
                .as_object()
                .map(|h| {
                    h.iter()
                        .filter(|(k, _)| !["host", "content-length"].contains(&k.to_ascii_lowercase().as_str()))
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let headers = headers
                .into_iter()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("authorization") {
                        remint_header(&v, unix_ms_of(&captured))
                    } else {
                        v
                    };
                    (k, v)
                })
                .collect();
            let header_values = |name: &str| -> Vec<String> {
                resp["headers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
                    .filter_map(|h| h[1].as_str().map(str::to_owned))
                    .collect()
            };
            let content_type = header_values("content-type").pop().unwrap_or_default();
            let chunked = header_values("transfer-encoding").iter().any(|v| v == "chunked");
            let cookies = header_values("set-cookie").iter().map(|c| cookie_shape(c)).collect();
            let text = resp["body_raw"].as_str().unwrap_or_default().to_owned();
            out.push(Exchange {
                file: file.clone(),
                index,
                method: req["method"].as_str().unwrap_or("GET").to_owned(),
                path: req["path"].as_str().unwrap_or("/").to_owned(),
                headers,
                body: req["body_raw"].as_str().unwrap_or_default().as_bytes().to_vec(),
                status: resp["status"].as_u64().unwrap_or(0) as u16,
                content_type,
                chunked,
                cookies,
                response: serde_json::from_str(&text).ok(),
                text,
            });
        }
    }
    out
}

/// A `Set-Cookie` value with the token and the date replaced by their
/// kinds: `kalamdb_auth=<jwt>; HttpOnly; …; Expires=<http-date>`.
fn cookie_shape(cookie: &str) -> String {
    cookie
        .split("; ")
        .map(|part| match part.split_once('=') {
            Some((k, v)) if k.starts_with("kalamdb_") => {
                let kind = if v.is_empty() {
                    "<empty>"
                } else if v.split('.').count() == 3 {
                    "<jwt>"
                } else {
                    "<other>"
                };
                format!("{k}={kind}")
            }
            Some(("Expires", v)) => {
                // `Mon, 23 Nov 2026 19:37:56 GMT`
                let w: Vec<&str> = v.split(' ').collect();
                let ok = w.len() == 6 && w[0].len() == 4 && w[0].ends_with(',') && w[5] == "GMT" && w[4].len() == 8;
                format!("Expires={}", if ok { "<http-date>" } else { v })
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

struct Answer {
    status: u16,
    content_type: String,
    chunked: bool,
    cookies: Vec<String>,
    text: String,
    json: Option<Value>,
}

async fn replay(base: &str, exchanges: &[Exchange]) -> Vec<Answer> {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut out = Vec::new();
    for e in exchanges {
        let mut req = http::Request::builder()
            .method(e.method.as_str())
            .uri(format!("{base}{}", e.path));
        for (k, v) in &e.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(Bytes::from(e.body.clone()))).unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let chunked = resp
            .headers()
            .get("transfer-encoding")
            .is_some_and(|v| v.as_bytes() == b"chunked");
        let cookies = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| cookie_shape(v.to_str().unwrap_or_default()))
            .collect();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        out.push(Answer {
            status,
            content_type,
            chunked,
            cookies,
            text: String::from_utf8_lossy(&body).into_owned(),
            json: serde_json::from_slice(&body).ok(),
        });
    }
    out
}

fn compare(exchanges: &[Exchange], expected: &[Answer], actual: &[Answer]) -> Vec<String> {
    let mut problems = Vec::new();
    for ((e, want), got) in exchanges.iter().zip(expected).zip(actual) {
        let mut diffs = Vec::new();
        if want.status != got.status {
            diffs.push(format!("status: expected {}, got {}", want.status, got.status));
        }
        if want.content_type != got.content_type {
            diffs.push(format!(
                "content type: expected {:?}, got {:?}",
                want.content_type, got.content_type
            ));
        }
        if want.chunked != got.chunked {
            diffs.push(format!("chunked: expected {}, got {}", want.chunked, got.chunked));
        }
        if want.cookies != got.cookies {
            diffs.push(format!("cookies: expected {:?}, got {:?}", want.cookies, got.cookies));
        }
        match (&want.json, &got.json) {
            (Some(a), Some(b)) => diffs.extend(shape_diff_with(&ShapeRules::wire(), a, b)),
            (None, None) if want.text != got.text => {
                diffs.push(format!("body: expected {:?}, got {:?}", want.text, got.text))
            }
            (None, None) => {}
            (a, b) => diffs.push(format!("JSON body: expected {}, got {}", a.is_some(), b.is_some())),
        }
        for d in diffs {
            problems.push(format!("{}#{} {} {}: {d}", e.file, e.index, e.method, e.path));
        }
    }
    problems
}

fn recorded(exchanges: &[Exchange]) -> Vec<Answer> {
    exchanges
        .iter()
        .map(|e| Answer {
            status: e.status,
            content_type: e.content_type.clone(),
            chunked: e.chunked,
            cookies: e.cookies.clone(),
            text: e.text.clone(),
            json: e.response.clone(),
        })
        .collect()
}

#[tokio::test]
async fn every_http_sample_replays_with_the_recorded_shape() {
    let exchanges = exchanges();
    let server = TestServer::builder()
        .token_lifetime(Duration::from_secs(24 * 3600))
        .start()
        .await;
    let answers = replay(&server.url(), &exchanges).await;
    let problems = compare(&exchanges, &recorded(&exchanges), &answers);
    assert!(
        problems.is_empty(),
        "{} of {} exchanges differ from the recording:\n{}",
        problems.len(),
        exchanges.len(),
        problems.join("\n")
    );
    server.shutdown().await;
}

/// The same exchanges against the real server and the kit: same answers.
///
/// A real-server test: `.ci/run` runs it (`--ignored`), and without the real
/// server (see `kalam_testkit::real`) it fails.
#[tokio::test]
#[ignore = "needs the real KalamDB server (../shared/kalamdb-server): cargo test -p kalam-testkit --test wire_samples -- --ignored"]
async fn kit_answers_like_the_real_server() {
    let exchanges = exchanges();
    let real = RealServer::start();
    println!("comparing the kit with the real server at {}", real.url());
    let real_answers = replay(&real.url(), &exchanges).await;
    // The real server must still match its own recording (a guard for the
    // replay itself)…
    let drift = compare(&exchanges, &recorded(&exchanges), &real_answers);
    assert!(
        drift.is_empty(),
        "the real server drifted from the recording:\n{}",
        drift.join("\n")
    );
    // …and the kit must match the real server.
    let kit = TestServer::start().await;
    let kit_answers = replay(&kit.url(), &exchanges).await;
    let problems = compare(&exchanges, &real_answers, &kit_answers);
    assert!(
        problems.is_empty(),
        "the kit differs from the real server:\n{}",
        problems.join("\n")
    );
    kit.shutdown().await;
}
