//! What goes into the auth machine and what comes out of it: ids, settings,
//! outputs and the state seen from outside.

use std::time::Duration;

use http::Request;

#[cfg(doc)]
use super::AuthMachine;
use crate::error::{Error, Result};
use crate::files::{FileLimits, UploadPlan};
use crate::framing;
use crate::ops::{Reply, RequestKind};

/// Identifies one operation submitted to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Identifies one HTTP request the machine asked the driver to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Identifies one call for credentials the machine asked the driver to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialRequestId(pub u64);

/// Settings of the auth machine.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// A token counts as expired this long before its `exp`, on the
    /// server's clock as estimated (what is left of clock error, and flight
    /// time); a token that arrives with less than twice this left is used
    /// through the server's leeway instead. Default 30 s.
    pub skew: Duration,
    /// With a refresh token, refresh this long before `exp` (at least
    /// `skew`). Default 60 s.
    pub refresh_ahead: Duration,
    /// The application configured a `DynamicAuthProvider`.
    pub has_dynamic_provider: bool,
    /// The application configured an `AuthRefreshCallback`.
    pub has_refresher: bool,
    /// Most operation requests in flight at once; more wait in order
    /// (the machine's own logins and refreshes never wait). Default 64.
    pub max_in_flight: usize,
    /// Limits checked before an upload is sent.
    pub files: FileLimits,
    /// Seeds the multipart boundaries of uploads (and the jitter of the
    /// rate-limit pauses).
    pub boundary_seed: u64,
    /// A SQL request refused `429` (it never ran) is sent again after the
    /// pause, and SQL requests are paced under the rate the server took.
    /// Default on.
    pub rate_limit_retry: bool,
    /// How long after its submission a refused request may still be sent
    /// again; past it, the caller gets the `429`. Default 30 s.
    pub retry_budget: Duration,
    /// How many times an operation whose connection could not be made
    /// (nothing was sent) is sent again, after a back-off, within its
    /// `retry_budget`. Default 0.
    pub max_retries: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            skew: Duration::from_secs(30),
            refresh_ahead: Duration::from_secs(60),
            has_dynamic_provider: false,
            has_refresher: false,
            max_in_flight: 64,
            files: FileLimits::default(),
            boundary_seed: 0,
            rate_limit_retry: true,
            retry_budget: Duration::from_secs(30),
            max_retries: 0,
        }
    }
}

/// Whose credentials the driver must fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// Call the application's `DynamicAuthProvider::get_auth`.
    DynamicProvider,
    /// Call the application's `AuthRefreshCallback`.
    Refresher,
}

/// What the driver must do next. Its `Debug` shows no header and no body.
pub enum AuthOutput {
    /// Send this request; feed the answer to [`AuthMachine::handle_response`]
    /// or the failure to [`AuthMachine::handle_transport_error`].
    Transmit {
        /// Echo this back with the answer.
        id: RequestId,
        /// What the request is.
        kind: RequestKind,
        /// The request, complete with headers.
        request: Request<Vec<u8>>,
    },
    /// Ask the application for credentials; feed the result to
    /// [`AuthMachine::handle_credentials`].
    FetchCredentials {
        /// Echo this back with the result.
        id: CredentialRequestId,
        /// Which callback.
        source: CredentialSource,
    },
    /// Send this upload: the request's head, and its body as a plan to
    /// stream from the caller's sources; feed the answer (decoded as
    /// [`RequestKind::Upload`]) like a [`AuthOutput::Transmit`]'s.
    TransmitUpload {
        /// Echo this back with the answer.
        id: RequestId,
        /// The head, complete with headers but `Content-Length`, which is
        /// [`UploadPlan::content_length`].
        request: Request<()>,
        /// The body.
        plan: UploadPlan,
    },
    /// Something the application should hear of that failed nothing (a
    /// large clock skew, [`Error::ClockSkew`]): for the `on_error` hook.
    Warning(Error),
    /// The client moved to another node of its cluster
    /// ([`crate::nodes`]); requests from now on go there.
    NodeChanged(crate::nodes::NodeSwitch),
    /// An operation finished.
    Done {
        /// The operation.
        op: OpId,
        /// Its result.
        result: Result<Reply>,
    },
}

impl std::fmt::Debug for AuthOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthOutput::Transmit { id, kind, request } => f
                .debug_struct("Transmit")
                .field("id", id)
                .field("kind", kind)
                .field("request", &framing::RequestSummary(request))
                .finish(),
            AuthOutput::FetchCredentials { id, source } => f
                .debug_struct("FetchCredentials")
                .field("id", id)
                .field("source", source)
                .finish(),
            AuthOutput::TransmitUpload { id, request, plan } => f
                .debug_struct("TransmitUpload")
                .field("id", id)
                .field("request", &format_args!("{} {}", request.method(), request.uri()))
                .field("plan", plan)
                .finish(),
            AuthOutput::Warning(e) => f.debug_tuple("Warning").field(e).finish(),
            AuthOutput::NodeChanged(s) => f.debug_tuple("NodeChanged").field(s).finish(),
            AuthOutput::Done { op, result } => f.debug_struct("Done").field("op", op).field("result", result).finish(),
        }
    }
}

/// The auth lifecycle state, as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthState {
    /// No token yet.
    Unauthenticated,
    /// A login is in flight.
    LoggingIn,
    /// The application's provider or refresher is being asked.
    FetchingCredentials,
    /// A usable token is held (a proactive refresh may be in flight).
    Authenticated,
    /// The token expired; it will be renewed when next needed.
    Expired,
    /// A refresh with the refresh token is in flight and no usable token is held.
    Refreshing,
}
