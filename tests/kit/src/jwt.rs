//! HS256 tokens with the server's claims (PROTOCOL §2.3).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The claims of a KalamDB token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Always `kalamdb`.
    pub iss: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// E-mail or null.
    pub email: Option<String>,
    /// Lower-case role.
    pub role: String,
    /// `access` or `refresh`.
    pub token_type: String,
}

impl Claims {
    /// The server's claim set: issuer `kalamdb`, no e-mail.
    pub fn new(sub: &str, role: &str, token_type: &str, iat: u64, exp: u64) -> Claims {
        Claims {
            sub: sub.to_owned(),
            iss: "kalamdb".into(),
            exp,
            iat,
            email: None,
            role: role.to_owned(),
            token_type: token_type.to_owned(),
        }
    }
}

/// Signs claims with `secret`.
pub fn sign(secret: &str, claims: &Claims) -> String {
    let header = B64.encode(r#"{"typ":"JWT","alg":"HS256"}"#);
    let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let input = format!("{header}.{payload}");
    format!("{input}.{}", B64.encode(mac(secret, &input)))
}

fn mac(secret: &str, input: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(input.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed, bad signature, wrong issuer, missing claims.
    Invalid,
    /// More than the leeway past `exp`.
    Expired,
}

/// Checks signature, issuer, `exp` (with `leeway`) and `iat` (not more than
/// `leeway` in the future).
pub fn verify(secret: &str, token: &str, now: u64, leeway: u64) -> Result<Claims, Refusal> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Refusal::Invalid);
    };
    let sig = B64.decode(s).map_err(|_| Refusal::Invalid)?;
    let expected = mac(secret, &format!("{h}.{p}"));
    if !constant_time_eq(&sig, &expected) {
        return Err(Refusal::Invalid);
    }
    let claims: Claims =
        serde_json::from_slice(&B64.decode(p).map_err(|_| Refusal::Invalid)?).map_err(|_| Refusal::Invalid)?;
    if claims.iss != "kalamdb" || claims.iat > now.saturating_add(leeway) {
        return Err(Refusal::Invalid);
    }
    if now > claims.exp.saturating_add(leeway) {
        return Err(Refusal::Expired);
    }
    Ok(claims)
}

/// What a JWT library finds wrong with a token's header, in the words the
/// server leaks on `/auth/refresh` and `/auth/me` (`Base64 error: …`,
/// `JSON error: …`, `InvalidToken`); `None` if the header parses.
pub fn header_problem(token: &str) -> Option<String> {
    let mut parts = token.rsplitn(3, '.');
    let (Some(_signature), Some(_payload), Some(header)) = (parts.next(), parts.next(), parts.next()) else {
        return Some("InvalidToken".into());
    };
    let bytes = match B64.decode(header) {
        Ok(b) => b,
        Err(e) => return Some(format!("Base64 error: {e}")),
    };
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes) {
        Ok(_) => None,
        Err(e) => Some(format!("JSON error: {e}")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let c = Claims {
            sub: "root".into(),
            iss: "kalamdb".into(),
            exp: 1000,
            iat: 900,
            email: None,
            role: "system".into(),
            token_type: "access".into(),
        };
        let t = sign("s", &c);
        assert_eq!(verify("s", &t, 950, 60), Ok(c.clone()));
        assert_eq!(verify("s", &t, 1060, 60).map(|c| c.sub), Ok("root".into()));
        assert_eq!(verify("s", &t, 1061, 60), Err(Refusal::Expired));
        assert_eq!(verify("x", &t, 950, 60), Err(Refusal::Invalid));
        assert_eq!(verify("s", "a.b", 950, 60), Err(Refusal::Invalid));
        assert_eq!(
            verify("s", &t, 800, 60),
            Err(Refusal::Invalid),
            "iat too far in the future"
        );
    }

    #[test]
    fn header_problems_in_the_servers_words() {
        // wire-samples/http_refresh_errors.json
        assert_eq!(
            header_problem("garbage.token.value").as_deref(),
            Some("Base64 error: Invalid last symbol 101, offset 6.")
        );
        assert_eq!(header_problem("garbage").as_deref(), Some("InvalidToken"));
        assert!(header_problem("aaa.bbb.ccc").is_some_and(|p| p.starts_with("Base64 error: ")));
        // "notjson", base64url-encoded.
        assert!(header_problem("bm90anNvbg.e30.c2ln").is_some_and(|p| p.starts_with("JSON error: ")));
        let t = sign(
            "s",
            &Claims {
                sub: "a".into(),
                iss: "kalamdb".into(),
                exp: 1,
                iat: 1,
                email: None,
                role: "user".into(),
                token_type: "access".into(),
            },
        );
        assert_eq!(header_problem(&t), None);
    }

    #[test]
    fn verifies_a_real_server_token() {
        // wire-samples/http_login_success.json, secret of shared/kalamdb-server.
        let t = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyb290IiwiaXNzIjoia2FsYW1kYiIsImV4cCI6MTc5NTQ2MjY3NiwiaWF0IjoxNzk1Mzc2Mjc2LCJlbWFpbCI6InJvb3RAbG9jYWxob3N0Iiwicm9sZSI6InN5c3RlbSIsInRva2VuX3R5cGUiOiJhY2Nlc3MifQ.efA5tMj8j2OKnh2HcxGzTb08t1mlEsw2N8vA3AoXJ14";
        let c = verify("local-test-secret-0123456789abcdefghijklmnop", t, 1_795_376_300, 60).unwrap();
        assert_eq!((c.sub.as_str(), c.role.as_str()), ("root", "system"));
        // And signing the same claims gives the same token, byte for byte.
        assert_eq!(sign("local-test-secret-0123456789abcdefghijklmnop", &c), t);
    }
}
