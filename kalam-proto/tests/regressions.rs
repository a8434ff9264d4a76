//! Regression tests for bugs found in the auth machine.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use kalam_proto::{
    AuthConfig, AuthMachine, AuthOutput, AuthProvider, Endpoints, Error, Now, Operation, QueryRequest, RequestKind,
};

fn jwt(iat: u64, exp: u64) -> String {
    let claims =
        format!(r#"{{"sub":"root","iss":"kalamdb","exp":{exp},"iat":{iat},"role":"system","token_type":"access"}}"#);
    format!(
        "{}.{}.sig",
        B64.encode(r#"{"typ":"JWT","alg":"HS256"}"#),
        B64.encode(claims)
    )
}

fn login_answer(access: &str) -> http::Response<Vec<u8>> {
    let body = format!(
        r#"{{"user":{{"id":"root","role":"system","email":null}},"admin_ui_access":true,"expires_at":"x","access_token":"{access}","refresh_token":"r","refresh_expires_at":"x"}}"#
    );
    http::Response::new(body.into_bytes())
}

/// A server whose tokens are already expired by the client's rule on
/// arrival (`KALAMDB_JWT_EXPIRY_HOURS=0` issues `exp == iat`) once made the
/// machine log in again and again without end; later it refused such a
/// token after one login ("no way to renew it is configured", with a
/// password configured). The server takes it for its 60 s leeway: it is
/// used, after exactly one login.
#[test]
fn issued_token_already_expired_by_the_skew_is_used_once_logged_in() {
    let (logins, queries, result) = run_with_token_exp(0);
    assert_eq!((logins, queries), (1, 1));
    assert!(matches!(result, Some(Ok(_))), "{result:?}");
}

/// A token that is past even the server's leeway when it arrives (by the
/// server's own clock) fails the login rung with a typed error naming where
/// it came from, after one login: no loop, no request with it.
#[test]
fn issued_token_past_the_leeway_fails_once_and_says_so() {
    let (logins, queries, result) = run_with_token_exp(-600);
    assert_eq!((logins, queries), (1, 0));
    match result {
        Some(Err(Error::StaleToken { from, ago_secs, .. })) => {
            assert_eq!((from, ago_secs), ("login", 600));
        }
        other => panic!("{other:?}"),
    }
}

/// Logs in (basic credentials) to a server whose tokens' `exp` is
/// `exp_offset` seconds from the answer's `Date`, answers any query Ok.
fn run_with_token_exp(exp_offset: i64) -> (u32, u32, Option<kalam_proto::Result<kalam_proto::Reply>>) {
    const T: u64 = 1_800_000_000;
    let now = Now::new(kalam_proto::Instant::ZERO, Duration::from_secs(T));
    let mut m = AuthMachine::new(
        Endpoints::new("http://127.0.0.1:1").unwrap(),
        AuthProvider::system_user_auth("pw".into()),
        AuthConfig::default(),
        now,
    );
    let op = m.submit(Operation::Query(QueryRequest::new("SELECT 1")), now);
    let (mut logins, mut queries, mut result) = (0, 0, None);
    for _ in 0..100 {
        match m.poll_output() {
            Some(AuthOutput::Transmit {
                id,
                kind: RequestKind::Login,
                ..
            }) => {
                logins += 1;
                // Issued at the server's now (no `Date` header: `iat` is
                // the clock sample), expiring `exp_offset` from it.
                let exp = (T as i64 + exp_offset) as u64;
                m.handle_response(id, &login_answer(&jwt(T, exp)), now);
            }
            Some(AuthOutput::Transmit { id, kind, .. }) => {
                assert_eq!(kind, RequestKind::Query);
                queries += 1;
                let ok = r#"{"status":"success","results":[{"row_count":0,"as_user":"root"}],"took":1.0}"#;
                m.handle_response(id, &http::Response::new(ok.as_bytes().to_vec()), now);
            }
            Some(AuthOutput::Done { op: done, result: r }) => {
                assert_eq!(done, op);
                result = Some(r);
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    (logins, queries, result)
}
