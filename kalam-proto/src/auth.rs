//! Credentials as the application gives them.

use std::fmt;

use http::HeaderValue;
use http::header::AUTHORIZATION;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// The user name behind [`AuthProvider::system_user_auth`].
pub const SYSTEM_USER: &str = "root";

/// How the client authenticates.
///
/// Basic credentials are never sent on a query: the client exchanges them for
/// a JWT at `POST /v1/api/auth/login` and uses the JWT from then on. `Debug`
/// never shows a password or token.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthProvider {
    /// A user id and password, exchanged for a JWT at login.
    BasicAuth {
        /// The user id.
        user: String,
        /// The password.
        password: Secret,
    },
    /// An access JWT, sent as `Authorization: Bearer …`.
    JwtToken(Secret),
    /// No credentials. The server of this protocol version answers
    /// `401 MISSING_AUTHORIZATION` to every query without a token; this exists
    /// for servers in front of which something else authenticates.
    None,
}

impl AuthProvider {
    /// User id and password, exchanged for a JWT on first use.
    pub fn basic_auth(user: String, password: String) -> Self {
        AuthProvider::BasicAuth {
            user,
            password: Secret::new(password),
        }
    }

    /// An access token (JWT).
    pub fn jwt_token(token: String) -> Self {
        AuthProvider::JwtToken(Secret::new(token))
    }

    /// Basic auth as the system user `root`.
    pub fn system_user_auth(password: String) -> Self {
        AuthProvider::basic_auth(SYSTEM_USER.to_owned(), password)
    }

    /// No credentials.
    pub fn none() -> Self {
        AuthProvider::None
    }

    /// Stamps the credentials on a request: `Authorization: Bearer <token>`
    /// for a JWT, nothing for [`AuthProvider::None`], and
    /// [`Error::BasicAuthNotStampable`] for basic credentials, which by
    /// design only ever travel to the login endpoint.
    pub fn apply_to_request<B>(&self, request: &mut http::Request<B>) -> Result<()> {
        match self {
            AuthProvider::JwtToken(token) => {
                request
                    .headers_mut()
                    .insert(AUTHORIZATION, bearer_header(token.expose())?);
                Ok(())
            }
            AuthProvider::None => Ok(()),
            AuthProvider::BasicAuth { .. } => Err(Error::BasicAuthNotStampable),
        }
    }

    /// Whether these are basic credentials (user and password).
    pub fn is_basic(&self) -> bool {
        matches!(self, AuthProvider::BasicAuth { .. })
    }
}

impl fmt::Debug for AuthProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthProvider::BasicAuth { user, .. } => f
                .debug_struct("BasicAuth")
                .field("user", user)
                .field("password", &"***")
                .finish(),
            AuthProvider::JwtToken(_) => f.write_str("JwtToken(***)"),
            AuthProvider::None => f.write_str("None"),
        }
    }
}

/// Builds the `Bearer` header value for a token, marked sensitive so HTTP
/// libraries leave it out of their own debug output.
pub fn bearer_header(token: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Error::InvalidInput("token contains characters not allowed in a header".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let all = format!(
            "{:?} {:?} {:?} {:?}",
            AuthProvider::basic_auth("alice".into(), "pa55word".into()),
            AuthProvider::jwt_token("eyJsecret".into()),
            AuthProvider::system_user_auth("rootpw".into()),
            AuthProvider::none()
        );
        assert!(!all.contains("pa55word"));
        assert!(!all.contains("eyJsecret"));
        assert!(!all.contains("rootpw"));
        assert!(all.contains("alice"));
        assert!(all.contains("root"));
    }

    #[test]
    fn apply_to_request() {
        let mut req = http::Request::new(());
        AuthProvider::jwt_token("tok".into())
            .apply_to_request(&mut req)
            .unwrap();
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer tok");
        assert!(req.headers()[AUTHORIZATION].is_sensitive());

        let mut req = http::Request::new(());
        AuthProvider::none().apply_to_request(&mut req).unwrap();
        assert!(req.headers().get(AUTHORIZATION).is_none());

        let mut req = http::Request::new(());
        let err = AuthProvider::basic_auth("u".into(), "p".into())
            .apply_to_request(&mut req)
            .unwrap_err();
        assert!(matches!(err, Error::BasicAuthNotStampable));
        assert!(req.headers().get(AUTHORIZATION).is_none());

        let mut req = http::Request::new(());
        let err = AuthProvider::jwt_token("bad\ntoken".into())
            .apply_to_request(&mut req)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
    }

    #[test]
    fn system_user_is_root() {
        assert_eq!(
            AuthProvider::system_user_auth("x".into()),
            AuthProvider::basic_auth("root".into(), "x".into())
        );
    }
}
