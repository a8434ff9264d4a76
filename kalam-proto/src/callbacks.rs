//! The application's credential callbacks.
//!
//! These are plain `std` future types, not tied to any runtime, so they are
//! defined once here and shared by every adapter. The machines never call
//! them: a machine asks for credentials with
//! [`AuthOutput::FetchCredentials`](crate::AuthOutput::FetchCredentials), the driver
//! awaits the callback outside the machine, and feeds the result back with
//! [`AuthMachine::handle_credentials`](crate::AuthMachine::handle_credentials).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{AuthProvider, Result};

/// A boxed, sendable future of credentials.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send + 'a>>;

/// Credentials fetched lazily: on first need, on every (re)connect, and
/// whenever the client holds no valid token (for HTTP queries too).
///
/// ```
/// use std::{future::Future, pin::Pin};
/// use kalam_proto::{AuthProvider, DynamicAuthProvider, Result};
///
/// struct TokenStore;
///
/// impl DynamicAuthProvider for TokenStore {
///     fn get_auth(&self) -> Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send + '_>> {
///         Box::pin(async move { Ok(AuthProvider::jwt_token("eyJ...".into())) })
///     }
/// }
/// ```
pub trait DynamicAuthProvider: Send + Sync {
    /// Returns fresh credentials (a JWT, or basic credentials to log in with).
    fn get_auth(&self) -> Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send + '_>>;
}

/// Called when the token expired (a `TOKEN_EXPIRED` answer, or `exp` passed)
/// to get new credentials. Called once for all requests waiting on it.
pub type AuthRefreshCallback =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send>> + Send + Sync>;
