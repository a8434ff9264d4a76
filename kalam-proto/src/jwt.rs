//! Reading a JWT's claims without verifying it.
//!
//! The client cannot verify the server's HS256 signature (it does not know the
//! secret) and does not need to: it only reads `exp` to refresh in time, and
//! `token_type` to refuse a refresh token used as an access token.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;

/// base64url, with or without padding (the server sends none).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The claims the client cares about. Every field is optional: a token from
/// another issuer may lack any of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JwtClaims {
    /// User id.
    #[serde(default)]
    pub sub: Option<String>,
    /// Issuer (`kalamdb` for server-issued tokens).
    #[serde(default)]
    pub iss: Option<String>,
    /// Expiry, Unix seconds.
    #[serde(default)]
    pub exp: Option<u64>,
    /// Issued at, Unix seconds.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Lower-case role at issue time.
    #[serde(default)]
    pub role: Option<String>,
    /// `access` or `refresh`.
    #[serde(default)]
    pub token_type: Option<String>,
}

impl JwtClaims {
    /// Whether the token says it is a refresh token.
    pub fn is_refresh(&self) -> bool {
        self.token_type.as_deref() == Some("refresh")
    }

    /// Whether the token is expired at `unix_secs`, counting it expired
    /// `skew_secs` early. A token without `exp` never expires by this test.
    pub fn is_expired_at(&self, unix_secs: u64, skew_secs: u64) -> bool {
        match self.exp {
            Some(exp) => unix_secs.saturating_add(skew_secs) >= exp,
            None => false,
        }
    }
}

/// Why a string is not a readable JWT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three dot-separated parts.
    #[error("not a JWT (expected three dot-separated parts)")]
    NotAJwt,
    /// The payload is not base64url.
    #[error("JWT payload is not base64url")]
    BadBase64,
    /// The payload is not a JSON object of the expected claim types.
    #[error("JWT payload is not valid claims JSON: {0}")]
    BadClaims(String),
}

/// Reads the claims of a compact JWS (`header.payload.signature`) without
/// checking its signature.
pub fn inspect(token: &str) -> Result<JwtClaims, JwtError> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::NotAJwt);
    };
    if payload.is_empty() {
        return Err(JwtError::NotAJwt);
    }
    let bytes = B64URL.decode(payload).map_err(|_| JwtError::BadBase64)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| JwtError::BadClaims(e.to_string()))?;
    if !value.is_object() {
        return Err(JwtError::BadClaims("the payload is not a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| JwtError::BadClaims(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A token recorded from the real server (wire-samples/http_login_success.json).
    const ROOT_ACCESS: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyb290IiwiaXNzIjoia2FsYW1kYiIsImV4cCI6MTc5NTQ2MjY3NiwiaWF0IjoxNzk1Mzc2Mjc2LCJlbWFpbCI6InJvb3RAbG9jYWxob3N0Iiwicm9sZSI6InN5c3RlbSIsInRva2VuX3R5cGUiOiJhY2Nlc3MifQ.efA5tMj8j2OKnh2HcxGzTb08t1mlEsw2N8vA3AoXJ14";

    #[test]
    fn reads_server_token() {
        let c = inspect(ROOT_ACCESS).unwrap();
        assert_eq!(c.sub.as_deref(), Some("root"));
        assert_eq!(c.iss.as_deref(), Some("kalamdb"));
        assert_eq!(c.exp, Some(1_795_462_676));
        assert_eq!(c.iat, Some(1_795_376_276));
        assert_eq!(c.role.as_deref(), Some("system"));
        assert!(!c.is_refresh());
        assert!(!c.is_expired_at(1_795_462_676 - 31, 30));
        assert!(c.is_expired_at(1_795_462_676 - 30, 30));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for t in [
            "",
            "abc",
            "a.b",
            "a..c",
            "a.b.c.d",
            "x.!!!.y",
            "x.e30.y",
            "x.bnVsbA.y",
            "x.W10.y",
            "é.é.é",
        ] {
            let r = inspect(t);
            if t == "x.e30.y" {
                // `{}`: a JWT with no claims at all.
                assert_eq!(r.unwrap().exp, None);
            } else {
                assert!(r.is_err(), "{t:?} gave {r:?}");
            }
        }
    }
}
