//! Regression tests for bugs found in the auth machine.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use kalam_proto::{
    AuthConfig, AuthMachine, AuthOutput, AuthProvider, Endpoints, Error, Now, Operation, QueryRequest, RequestKind,
};

fn jwt(exp: u64) -> String {
    let claims = format!(
        r#"{{"sub":"root","iss":"kalamdb","exp":{exp},"iat":{},"role":"system","token_type":"access"}}"#,
        exp.saturating_sub(60)
    );
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

/// A server whose tokens are already expired by the client's clock (say
/// `KALAMDB_JWT_EXPIRY_HOURS=0`, or a client clock far ahead) once made the
/// machine log in again and again without end. Now the login fails with a
/// typed error after exactly one attempt.
#[test]
fn issued_token_already_expired_does_not_loop() {
    let now = Now::new(kalam_proto::Instant::ZERO, Duration::from_secs(1_800_000_000));
    let mut m = AuthMachine::new(
        Endpoints::new("http://127.0.0.1:1").unwrap(),
        AuthProvider::system_user_auth("pw".into()),
        AuthConfig::default(),
        now,
    );
    let op = m.submit(Operation::Query(QueryRequest::new("SELECT 1")), now);
    let mut logins = 0;
    let mut result = None;
    for _ in 0..100 {
        match m.poll_output() {
            Some(AuthOutput::Transmit { id, kind, .. }) => {
                assert_eq!(kind, RequestKind::Login, "no query may go out with an expired token");
                logins += 1;
                // exp == now: expired by the 30 s skew.
                m.handle_response(id, &login_answer(&jwt(1_800_000_000)), now);
            }
            Some(AuthOutput::Done { op: done, result: r }) => {
                assert_eq!(done, op);
                result = Some(r);
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert_eq!(logins, 1);
    assert!(matches!(result, Some(Err(Error::TokenExpired))), "{result:?}");
}
