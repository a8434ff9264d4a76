//! Decoders against the real recorded exchanges of `../shared/wire-samples`:
//! every HTTP answer and every WebSocket server frame decodes to the right
//! value or the right typed error.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use kalam_proto::framing::{self, QueryRequest, decode_error, decode_login, decode_me, decode_query};
use kalam_proto::ws_messages::{ServerMessage, decode_binary, decode_text};
use kalam_proto::{Endpoints, Error, ErrorCode, KalamDataType, Secret, jwt};
use serde_json::Value;

fn dir() -> PathBuf {
    #[allow(clippy::disallowed_methods)] // a test knob, not the library
    std::env::var_os("KALAM_WIRE_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/wire-samples")))
}

fn load(name: &str) -> Value {
    let p = dir().join(name);
    let bytes = std::fs::read(&p)
        .unwrap_or_else(|e| panic!("wire sample {} missing ({e}); set KALAM_WIRE_SAMPLES", p.display()));
    serde_json::from_slice(&bytes).unwrap()
}

struct Recorded {
    method: String,
    path: String,
    request_body: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn exchanges(name: &str) -> Vec<Recorded> {
    load(name)["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut headers = HeaderMap::new();
            for h in e["response"]["headers"].as_array().into_iter().flatten() {
                if let (Some(k), Some(v)) = (h[0].as_str(), h[1].as_str())
                    && let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v))
                {
                    headers.append(k, v);
                }
            }
            Recorded {
                method: e["request"]["method"].as_str().unwrap().to_owned(),
                path: e["request"]["path"].as_str().unwrap().to_owned(),
                request_body: e["request"]["body_raw"].as_str().unwrap_or_default().to_owned(),
                status: StatusCode::from_u16(e["response"]["status"].as_u64().unwrap() as u16).unwrap(),
                headers,
                body: e["response"]["body_raw"]
                    .as_str()
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec(),
            }
        })
        .collect()
}

fn query(r: &Recorded) -> kalam_proto::Result<kalam_proto::QueryResponse> {
    decode_query(r.status, &r.headers, &r.body)
}

fn server_err(r: kalam_proto::Result<impl std::fmt::Debug>) -> kalam_proto::ServerError {
    match r {
        Err(Error::Server(e)) => e,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[test]
fn every_http_sample_decodes() {
    // Nothing in any sample may fail to decode into a value or a typed error.
    let mut count = 0;
    for entry in std::fs::read_dir(dir()).expect("wire samples directory") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("http_") {
            continue;
        }
        for r in exchanges(&name) {
            count += 1;
            let ok = match r.path.as_str() {
                "/v1/api/auth/login" | "/v1/api/auth/refresh" => decode_login(r.status, &r.headers, &r.body).is_ok(),
                "/v1/api/auth/me" => decode_me(r.status, &r.headers, &r.body).is_ok(),
                "/v1/api/sql" => query(&r).is_ok(),
                _ => true,
            };
            // A 2xx must decode to a value; anything else to a typed server error.
            assert_eq!(ok, r.status.is_success(), "{name} {} {}", r.method, r.path);
            if !r.status.is_success() {
                let e = decode_error(r.status, &r.headers, &r.body);
                assert_eq!(e.status, r.status.as_u16());
                assert!(!e.message.is_empty(), "{name}: an error always says something");
            }
        }
    }
    assert!(count >= 70, "only {count} HTTP exchanges found");
}

#[test]
fn login_success_and_its_tokens() {
    let sample = load("http_login_success.json");
    let r = &exchanges("http_login_success.json")[0];
    let login = decode_login(r.status, &r.headers, &r.body).unwrap();
    assert_eq!(login.user.id, "root");
    assert_eq!(login.user.role, "system");
    assert_eq!(login.user.email.as_deref(), Some("root@localhost"));
    assert!(login.admin_ui_access);
    assert!(login.expires_at.starts_with("2026-11-23T"));
    // The tokens inspect to the claims the recorder decoded.
    let decoded = &sample["decoded_jwt"];
    for (token, key) in [
        (&login.access_token, "access_token"),
        (&login.refresh_token, "refresh_token"),
    ] {
        let claims = jwt::inspect(token).unwrap();
        let want = decoded.get(key).and_then(|d| d.get("claims").or(Some(d))).unwrap();
        assert_eq!(claims.sub.as_deref(), want["sub"].as_str(), "{key}");
        assert_eq!(claims.exp, want["exp"].as_u64(), "{key}");
        assert_eq!(claims.iat, want["iat"].as_u64(), "{key}");
        assert_eq!(claims.token_type.as_deref(), want["token_type"].as_str(), "{key}");
        assert_eq!(claims.role.as_deref(), Some("system"));
    }
    assert!(jwt::inspect(&login.refresh_token).unwrap().is_refresh());
    // The request our builder makes matches the recorded one.
    let ep = Endpoints::new("http://127.0.0.1:2900").unwrap();
    let req = framing::login_request(&ep, "root", &Secret::new("kalamdb123"));
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(req.uri().path(), r.path);
    assert_eq!(req.headers()["content-type"], "application/json");
    let ours: Value = serde_json::from_slice(req.body()).unwrap();
    let theirs: Value = serde_json::from_str(&r.request_body).unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn login_failures() {
    for name in ["http_login_wrong_password.json", "http_login_unknown_user.json"] {
        let r = &exchanges(name)[0];
        let e = server_err(decode_login(r.status, &r.headers, &r.body));
        assert_eq!(
            (e.status, &e.code, e.message.as_str()),
            (401, &ErrorCode::Unauthorized, "Invalid credentials")
        );
        assert!(Error::Server(e).is_credentials_rejected());
    }
    // Malformed bodies: 400 plain text, no code.
    for r in exchanges("http_login_malformed_body.json") {
        let e = server_err(decode_login(r.status, &r.headers, &r.body));
        assert_eq!((e.status, &e.code), (400, &ErrorCode::Unspecified), "{}", e.message);
        assert!(!e.message.is_empty());
    }
    let alias = &exchanges("http_login_username_alias.json")[0];
    assert_eq!(
        decode_login(alias.status, &alias.headers, &alias.body).unwrap().user.id,
        "root"
    );
}

#[test]
fn me_refresh_and_logout() {
    let me = exchanges("http_auth_me.json");
    let ok = decode_me(me[0].status, &me[0].headers, &me[0].body).unwrap();
    assert_eq!((ok.user.id.as_str(), ok.admin_ui_access), ("root", true));
    let e = server_err(decode_me(me[1].status, &me[1].headers, &me[1].body));
    assert_eq!(
        (e.status, &e.code, e.message.as_str()),
        (401, &ErrorCode::Unauthorized, "No auth token found")
    );

    let refresh = exchanges("http_refresh_success.json");
    let pair = decode_login(refresh[0].status, &refresh[0].headers, &refresh[0].body).unwrap();
    assert!(!jwt::inspect(&pair.access_token).unwrap().is_refresh());
    let r = query(&refresh[1]).unwrap();
    assert_eq!(r.rows().next().unwrap().get::<i64>("one").unwrap(), 1);
    // Our refresh request: Bearer refresh token, no body, no cookies.
    let req = framing::refresh_request(&Endpoints::new("http://h:1").unwrap(), &Secret::new("R")).unwrap();
    assert_eq!((req.uri().path(), req.body().len()), ("/v1/api/auth/refresh", 0));
    assert_eq!(req.headers()["authorization"], "Bearer R");
    assert!(req.headers().get("cookie").is_none());

    // No refresh failure is TOKEN_EXPIRED: all are 401 unauthorized.
    for r in exchanges("http_refresh_errors.json") {
        let e = server_err(decode_login(r.status, &r.headers, &r.body));
        assert_eq!((e.status, &e.code), (401, &ErrorCode::Unauthorized), "{}", e.message);
        assert!(!Error::Server(e).is_token_expired());
    }
    let out = &exchanges("http_logout.json")[0];
    assert_eq!(out.status, 200);
}

#[test]
fn sql_auth_failures_use_the_sql_envelope_codes() {
    let cases = [
        ("http_sql_auth_missing.json", ErrorCode::MissingAuthorization),
        ("http_sql_auth_garbage_token.json", ErrorCode::InvalidCredentials),
        ("http_sql_auth_wrong_signature.json", ErrorCode::InvalidCredentials),
        ("http_sql_auth_basic_rejected.json", ErrorCode::InvalidCredentials),
        (
            "http_sql_auth_refresh_token_as_access.json",
            ErrorCode::InvalidCredentials,
        ),
    ];
    for (name, code) in cases {
        for r in exchanges(name) {
            let e = server_err(query(&r));
            assert_eq!((e.status, &e.code), (401, &code), "{name}");
            assert!(Error::Server(e).is_credentials_rejected(), "{name}");
        }
    }
    // Expired (forged with the server's secret): TOKEN_EXPIRED past the 60 s
    // leeway, accepted within it; /auth/me says only "Invalid credentials".
    let forged = exchanges("http_sql_token_expired_forged.json");
    for r in &forged[..2] {
        let e = Error::Server(server_err(query(r)));
        assert!(e.is_token_expired() && !e.is_credentials_rejected());
    }
    assert_eq!(
        query(&forged[2]).unwrap().rows().next().unwrap().get::<i64>(0).unwrap(),
        1
    );
    let me = server_err(decode_me(forged[3].status, &forged[3].headers, &forged[3].body));
    assert_eq!(
        (me.code, me.message.as_str()),
        (ErrorCode::Unauthorized, "Invalid credentials")
    );
}

#[test]
fn sql_results_and_typed_cells() {
    let select = exchanges("http_sql_select.json");
    let all = query(&select[0]).unwrap();
    let res = all.first().unwrap();
    assert_eq!(res.row_count, 4);
    assert_eq!(res.as_user.as_deref(), Some("root"));
    let names: Vec<&str> = res.schema.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["id", "name", "qty", "price", "active", "created_at", "_seq", "_deleted"]
    );
    assert_eq!(res.schema[0].data_type, KalamDataType::BigInt);
    assert!(res.schema[0].is_primary_key());
    assert_eq!(res.schema[5].data_type, KalamDataType::Timestamp);
    let rows: Vec<_> = res.rows().collect();
    assert_eq!(rows[0].get::<i64>("id").unwrap(), 1);
    assert_eq!(rows[0].get::<&str>("name").unwrap(), "apple");
    assert_eq!(rows[2].get::<Option<i32>>("qty").unwrap(), None);
    assert_eq!(rows[2].get::<f64>("price").unwrap(), 7.0);
    assert_eq!(rows[3].get::<Option<bool>>("active").unwrap(), None);
    assert_eq!(rows[0].get::<i64>("_seq").unwrap(), 382_978_030_162_513_920);
    assert!(!rows[0].get::<bool>("_deleted").unwrap());
    // Aggregates: COUNT and SUM are 64-bit, hence strings.
    let agg = query(&select[3]).unwrap();
    let row = agg.rows().next().unwrap();
    assert_eq!(row.get::<i64>("n").unwrap(), 4);
    assert_eq!(agg.first().unwrap().schema[0].data_type, KalamDataType::BigInt);
    // The empty result still has its schema.
    let empty = query(&select[6]).unwrap();
    assert_eq!((empty.first().unwrap().row_count, empty.rows().count()), (0, 0));
    assert!(!empty.first().unwrap().schema.is_empty());

    let types = exchanges("http_sql_types.json");
    let typed = query(&types[3]).unwrap();
    let rows: Vec<_> = typed.rows().collect();
    assert_eq!(
        rows[0].get::<i64>("big").unwrap(),
        9_007_199_254_740_993,
        "above 2^53, exactly"
    );
    assert_eq!(rows[0].get::<i32>("i").unwrap(), 42);
    assert_eq!(rows[0].get::<&str>("t").unwrap(), "héllo \"q\"");
    assert!(rows[0].get::<bool>("b").unwrap());
    assert_eq!(
        rows[0].get::<i64>("ts").unwrap(),
        1_704_164_645_123_456,
        "µs since the epoch"
    );
    assert_eq!(rows[0].get::<i64>("dt").unwrap(), 19_724, "days since the epoch");
    assert_eq!(rows[0].get::<&str>("j").unwrap(), r#"{"a":[1,2]}"#);
    for col in ["i", "big", "f", "d", "b", "t", "ts", "dt", "j"] {
        assert_eq!(rows[1].value(col), Some(&Value::Null), "{col} of the NULL row");
    }

    let limited = exchanges("http_sql_default_limit.json");
    assert_eq!(
        query(&limited[1]).unwrap().first().unwrap().row_count,
        50,
        "the silent default cap"
    );
    assert_eq!(query(&limited[2]).unwrap().first().unwrap().row_count, 60);
}

#[test]
fn dml_ddl_batches_and_sql_errors() {
    let ins = exchanges("http_sql_insert.json");
    assert_eq!(
        query(&ins[1]).unwrap().first().unwrap().message.as_deref(),
        Some("Inserted 2 row(s)")
    );
    // The parameterised request our builder makes is the recorded one.
    let recorded: Value = serde_json::from_str(&ins[2].request_body).unwrap();
    let ours: Value = serde_json::from_slice(
        &QueryRequest::new(recorded["sql"].as_str().unwrap())
            .with_params(recorded["params"].as_array().unwrap().clone())
            .to_body()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ours, recorded);

    let ud = exchanges("http_sql_update_delete.json");
    assert_eq!(
        query(&ud[0]).unwrap().first().unwrap().message.as_deref(),
        Some("Updated 1 row(s)")
    );
    assert_eq!(query(&ud[1]).unwrap().first().unwrap().row_count, 1);

    let ddl = exchanges("http_sql_ddl.json");
    assert!(
        query(&ddl[0])
            .unwrap()
            .first()
            .unwrap()
            .message
            .as_deref()
            .unwrap()
            .contains("created")
    );
    let e = server_err(query(&ddl[4]));
    assert_eq!((e.status, &e.code), (400, &ErrorCode::SqlExecutionError));
    assert!(e.details.is_some(), "admins get the failing statement");

    let batch = exchanges("http_sql_batch.json");
    let b = query(&batch[0]).unwrap();
    let messages: Vec<Option<&str>> = b.results.iter().map(|r| r.message.as_deref()).collect();
    assert_eq!(
        messages,
        [None, Some("Inserted 1 row(s)"), Some("Updated 1 row(s)")],
        "totals after the SELECT"
    );
    assert_eq!(server_err(query(&batch[1])).code, ErrorCode::ParamsWithBatch);

    let errors = exchanges("http_sql_errors.json");
    let codes: Vec<ErrorCode> = errors.iter().map(|r| server_err(query(r)).code).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::InvalidSql,
            ErrorCode::SqlExecutionError,
            ErrorCode::SqlExecutionError,
            ErrorCode::EmptySql,
            ErrorCode::SqlExecutionError,
            ErrorCode::SqlExecutionError,
            ErrorCode::InvalidInput,
            ErrorCode::InvalidInput,
        ]
    );

    let iso = exchanges("http_sql_user_isolation.json");
    let alice = query(&iso[3]).unwrap();
    assert_eq!(alice.first().unwrap().as_user.as_deref(), Some("alice"));
    assert_eq!(alice.rows().count(), 1, "alice sees only her row");
    let denied = server_err(query(&iso[5]));
    assert_eq!((denied.status, &denied.code), (403, &ErrorCode::PermissionDenied));
    assert!(denied.details.is_none(), "no details for the user role");
}

/// Every server frame of every WebSocket sample decodes (JSON, gzip-JSON
/// with the `gzip` feature), or is a typed error (msgpack, gzip without
/// the feature); and the lifecycle sample reads as the protocol says.
#[test]
fn every_ws_server_frame_decodes() {
    let mut decoded = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("ws_") && !name.starts_with("expiry_") {
            continue;
        }
        for f in load(&name)["frames"].as_array().into_iter().flatten() {
            if f["dir"] != "recv" {
                continue;
            }
            match f["opcode"].as_str() {
                Some("text") => {
                    let m = decode_text(f["text"].as_str().unwrap());
                    assert!(m.is_ok(), "{name}: {m:?}");
                    decoded += 1;
                }
                Some("binary") => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(f["binary_b64"].as_str().unwrap())
                        .unwrap();
                    let gz = bytes.starts_with(&[0x1f, 0x8b]);
                    let is_json = f["decoded"]["encoding"] == "json";
                    let r = decode_binary(&bytes);
                    if is_json && (!gz || cfg!(feature = "gzip")) {
                        r.unwrap_or_else(|e| panic!("{name}: {e}"));
                        decoded += 1;
                    } else {
                        assert!(
                            r.is_err(),
                            "{name}: msgpack or gzip without the feature is a typed error"
                        );
                    }
                }
                _ => {}
            }
        }
    }
    assert!(decoded > 50, "only {decoded} frames decoded");
}

#[test]
fn lifecycle_sample_reads_as_the_protocol_says() {
    let frames = load("ws_live_subscription_lifecycle.json");
    let mut kinds = Vec::new();
    let mut seqs = BTreeMap::new();
    for f in frames["frames"].as_array().unwrap() {
        if f["dir"] != "recv" || f["opcode"] != "text" {
            continue;
        }
        match decode_text(f["text"].as_str().unwrap()).unwrap() {
            ServerMessage::AuthSuccess { user, role } => {
                assert_eq!((user.as_deref(), role.as_deref()), (Some("root"), Some("system")));
                kinds.push("auth_success");
            }
            ServerMessage::SubscriptionAck {
                batch_control, schema, ..
            } => {
                assert_eq!(batch_control.unwrap().last_seq_id, Some(382_978_040_937_680_897));
                assert!(schema.iter().any(|f| f.name == "_seq"));
                kinds.push("ack");
            }
            ServerMessage::InitialDataBatch {
                rows, batch_control, ..
            } => {
                assert!(!batch_control.has_more);
                for r in &rows {
                    seqs.insert(r["id"].as_str().unwrap().to_owned(), r.seq().unwrap());
                }
                kinds.push("initial");
            }
            ServerMessage::Change {
                change_type,
                rows,
                old_values,
                ..
            } => {
                use kalam_proto::ws_messages::ChangeType::*;
                match change_type {
                    Insert => assert!(rows.len() == 1 && old_values.is_empty()),
                    Update => {
                        assert!(rows.len() == 1 && old_values.len() == 1);
                        assert!(rows[0].seq() > old_values[0].seq(), "the new _seq is higher");
                    }
                    Delete => {
                        assert!(rows.is_empty() && old_values[0]["_deleted"] == true);
                        let id = old_values[0]["id"].as_str().unwrap();
                        assert!(
                            old_values[0].seq().unwrap() > seqs[id],
                            "a deletion has its own, newer _seq"
                        );
                    }
                }
                kinds.push("change");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(&kinds[..3], ["auth_success", "ack", "initial"]);
    assert_eq!(kinds.iter().filter(|k| **k == "change").count(), 7);
}
