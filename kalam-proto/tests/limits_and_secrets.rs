//! Secrets stay out of `Debug` and error texts; what the server would
//! refuse is refused before sending, with a typed error; error texts say
//! what happened once.

use std::time::Duration;

use kalam_proto::{
    AuthProvider, Endpoints, Error, ErrorCode, LiveEvent, LiveRows, LoginResponse, QueryRequest, SchemaField,
    ServerError,
};
use serde_json::json;

#[test]
fn login_response_debug_hides_both_tokens() {
    let login: LoginResponse = serde_json::from_value(json!({
        "user": {"id": "root", "role": "system", "email": null},
        "admin_ui_access": true, "expires_at": "x",
        "access_token": "eyJ.access-secret.sig", "refresh_token": "eyJ.refresh-secret.sig",
        "refresh_expires_at": "y"
    }))
    .unwrap();
    let shown = format!("{login:?} {login:#?}");
    assert!(
        !shown.contains("access-secret") && !shown.contains("refresh-secret"),
        "{shown}"
    );
    assert!(shown.contains("root"), "the rest is still shown: {shown}");
}

#[test]
fn urls_in_errors_hide_every_part_of_a_password_and_the_query() {
    for (url, secret) in [
        ("http://root:p@ss@host:2900", "p@ss"),
        ("http://root:p@ss@host:2900/kalam", "ss@host"),
        ("http://user@host?token=eyJ.secret", "eyJ.secret"),
        ("http://host:2900/?token=eyJ.secret", "eyJ.secret"),
    ] {
        let e = Endpoints::new(url).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::InvalidUrl { .. }), "{url}: {e:?}");
        assert!(!text.contains(secret), "{url} leaks in {text}");
        assert!(!format!("{e:?}").contains(secret), "{url} leaks in {e:?}");
    }
}

#[test]
fn ports_out_of_range_are_refused_when_building() {
    for url in ["http://localhost:99999", "http://localhost:0", "http://localhost:65536"] {
        assert!(
            matches!(Endpoints::new(url), Err(Error::InvalidUrl { ref reason, .. }) if reason.contains("port")),
            "{url}"
        );
    }
    assert!(Endpoints::new("http://localhost:65535").is_ok());
}

#[test]
fn what_the_server_would_refuse_is_refused_before_sending() {
    let refused = |q: QueryRequest| matches!(q.to_body(), Err(Error::InvalidInput(_)));
    assert!(refused(QueryRequest::new("x".repeat((1 << 20) + 1))), "SQL over 1 MiB");
    assert!(!refused(QueryRequest::new(format!("SELECT '{}'", "é".repeat(1000)))));
    assert!(
        refused(QueryRequest::new("SELECT 1").with_params(vec![json!(1); 51])),
        "51 params"
    );
    assert!(refused(
        QueryRequest::new("SELECT $1").with_params(vec![json!("x".repeat((512 << 10) + 1))])
    ));
    let big = json!("x".repeat(500 << 10));
    assert!(
        refused(QueryRequest::new("SELECT $1, $2, $3, $4, $5").with_params(vec![big; 5])),
        "a body over 2 MiB"
    );
    assert!(!refused(
        QueryRequest::new("SELECT $1").with_params(vec![json!("x".repeat(512 << 10))])
    ));
}

#[test]
fn a_missing_table_has_its_own_code() {
    assert_eq!(ErrorCode::parse("NOT_FOUND"), ErrorCode::NotFound);
    assert_eq!(ErrorCode::NotFound.as_str(), "NOT_FOUND");
}

#[test]
fn websocket_refusals_do_not_claim_an_http_status() {
    let e = ServerError {
        status: 0,
        code: ErrorCode::InvalidSql,
        message: "Invalid SQL".into(),
        details: None,
        retry_after_secs: None,
    };
    let text = e.to_string();
    assert!(!text.contains("answered 0"), "{text}");
    assert!(text.contains("INVALID_SQL") && text.contains("Invalid SQL"), "{text}");
}

#[test]
fn live_rows_are_ordered_by_the_keys_value() {
    let schema: Vec<SchemaField> = serde_json::from_value(json!([
        {"name":"id","data_type":"BigInt","index":0,"flags":["pk","nn","uq"]},
        {"name":"name","data_type":"Text","index":1}
    ]))
    .unwrap();
    let mut live = LiveRows::new();
    live.apply(&LiveEvent::Subscribed {
        schema,
        resumed_from: None,
    });
    for id in ["11", "2", "1", "100", "-3"] {
        live.apply(&LiveEvent::Insert {
            row: json!({"id": id, "name": format!("n{id}")})
                .as_object()
                .cloned()
                .unwrap()
                .into(),
        });
    }
    let ids: Vec<&str> = live.rows().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["-3", "1", "2", "11", "100"]);
    assert_eq!(live.get("11").unwrap()["name"], "n11");
}

#[test]
fn a_down_server_is_named_as_the_reason_not_credentials() {
    use kalam_proto::{
        ClientConfig, ClientCore, ConnectionOptions, CoreOutput, KalamLinkTimeouts, Now, TransportError,
    };
    let options = ConnectionOptions::default().with_max_reconnect_attempts(Some(0));
    let config = ClientConfig::new(&options, &KalamLinkTimeouts::default(), 1);
    let now = Now::from_secs(0, 1_800_000_000);
    let auth = AuthProvider::basic_auth("root".into(), "pw".into());
    let mut core = ClientCore::new(Endpoints::new("http://127.0.0.1:9").unwrap(), auth, config, now);
    core.connect(Some(1u8), now);
    let mut result = None;
    for _ in 0..10 {
        while let Some(o) = core.poll_output() {
            match o {
                CoreOutput::SendHttp { id, .. } => {
                    let refused = TransportError::Connect("Connection refused (os error 111)".into());
                    core.handle_http_error(id, refused, now.advance(Duration::from_millis(1)));
                }
                CoreOutput::Complete { result: r, .. } => result = Some(r),
                _ => {}
            }
        }
    }
    let text = result.expect("connect answered").unwrap_err().to_string();
    assert!(text.contains("Connection refused"), "{text}");
    assert!(!text.contains("could not get credentials"), "{text}");
}

#[test]
fn the_cores_outputs_never_show_a_password_or_a_token_in_debug() {
    use kalam_proto::{ClientConfig, ClientCore, ConnectionOptions, CoreOutput, Incoming, KalamLinkTimeouts, Now};
    let config = ClientConfig::new(&ConnectionOptions::default(), &KalamLinkTimeouts::default(), 1);
    let now = Now::from_secs(0, 1_800_000_000);
    let auth = AuthProvider::basic_auth("root".into(), "pa55-SECRET".into());
    let mut core = ClientCore::new(Endpoints::new("http://127.0.0.1:2900").unwrap(), auth, config, now);
    let _ = core.subscribe("SELECT * FROM a.b", None, 1u8, now);
    let mut shown = String::new();
    let token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.e30.TOKEN-SECRET";
    for _ in 0..3 {
        while let Some(o) = core.poll_output() {
            shown.push_str(&format!("{o:?} {core:?}\n"));
            match o {
                CoreOutput::SendHttp { id, .. } => {
                    let body = format!(
                        r#"{{"user":{{"id":"root","role":"system","email":null}},"expires_at":"x","access_token":"{token}","refresh_token":"{token}","refresh_expires_at":"x"}}"#
                    );
                    core.handle_http_response(id, &http::Response::new(body.into_bytes()), now);
                }
                CoreOutput::OpenSocket { attempt, .. } => {
                    core.handle_socket_open(attempt, now);
                    core.handle_frame(attempt, Incoming::Control, now);
                }
                _ => {}
            }
        }
    }
    assert!(shown.contains("SendText"), "the authenticate frame went out: {shown}");
    assert!(
        !shown.contains("pa55-SECRET") && !shown.contains("TOKEN-SECRET"),
        "{shown}"
    );
}
