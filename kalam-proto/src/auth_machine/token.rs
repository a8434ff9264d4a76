//! An access token and the rule that says when it is used.
//!
//! Expiry is judged on the server's clock ([`ServerClock`]): a token counts
//! as expired `skew` before its `exp`, and is refreshed `ahead` before it.
//! A token that already looks expired when it arrives (a lifetime shorter
//! than the skew, as a server set to 0-hour tokens issues, or a clock
//! estimate that is off) is still used while the server would accept it,
//! until `exp` plus the server's leeway less a margin for the trip; it is
//! never refreshed ahead (each new one would be due at once). The server
//! has the last word: its `TOKEN_EXPIRED` is recovered from.

use std::time::Duration;

use http::HeaderValue;

use super::clock::ServerClock;
use crate::auth::bearer_header;
use crate::error::{Error, Result};
use crate::jwt::{self, JwtClaims};
use crate::secret::Secret;
use crate::time::{Instant, Now};

/// How long past `exp` the server still accepts a token (PROTOCOL §2.3).
pub const SERVER_LEEWAY: Duration = Duration::from_secs(60);

/// Of that leeway, what a token that arrived looking expired leaves unused:
/// room for the request's trip and for a clock estimate off by a second or two.
const LEEWAY_MARGIN: Duration = Duration::from_secs(10);

/// Where the current access token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Given by the application (builder or `set_auth`).
    Configured,
    /// From a login or refresh this machine made.
    Issued,
    /// From the dynamic provider or the refresher.
    Callback,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) secret: Secret,
    pub(super) header: HeaderValue,
    claims: Option<JwtClaims>,
    pub(super) origin: Origin,
    /// It looked expired by the skew rule when it arrived.
    stale_on_arrival: bool,
    /// It was already due for a refresh ahead of expiry when it arrived.
    short_lived: bool,
}

impl Token {
    pub(super) fn new(secret: Secret, origin: Origin) -> Result<Token> {
        let claims = jwt::inspect(secret.expose()).ok();
        if claims.as_ref().is_some_and(JwtClaims::is_refresh) {
            return Err(Error::RefreshTokenAsAccessToken);
        }
        let header = bearer_header(secret.expose())?;
        // The first clone of a value built from a String moves its buffer to
        // shared storage (one allocation). Pay it here, once per token, so
        // that stamping requests never allocates.
        drop(header.clone());
        Ok(Token {
            secret,
            header,
            claims,
            origin,
            stale_on_arrival: false,
            short_lived: false,
        })
    }

    /// `exp`, on the server's clock.
    pub(super) fn exp(&self) -> Option<i64> {
        self.claims
            .as_ref()
            .and_then(|c| c.exp)
            .and_then(|e| i64::try_from(e).ok())
    }

    /// `iat`, on the server's clock.
    pub(super) fn iat(&self) -> Option<u64> {
        self.claims.as_ref().and_then(|c| c.iat)
    }

    /// Notes how the token looks when it arrives at server time `server_now`.
    pub(super) fn arrived(&mut self, server_now: i64, skew: Duration, ahead: Duration) {
        if let Some(exp) = self.exp() {
            self.stale_on_arrival = server_now.saturating_add(secs(skew)) >= exp;
            self.short_lived = server_now.saturating_add(secs(ahead)) >= exp;
        }
    }

    /// The server time from which the token is not used any more; `None`
    /// for a token without `exp`.
    pub(super) fn unusable_from(&self, skew: Duration) -> Option<i64> {
        let exp = self.exp()?;
        Some(if self.stale_on_arrival {
            exp.saturating_add(secs(SERVER_LEEWAY - LEEWAY_MARGIN))
        } else {
            exp.saturating_sub(secs(skew))
        })
    }

    /// Whether it is used at server time `server_now`.
    pub(super) fn usable(&self, server_now: i64, skew: Duration) -> bool {
        self.unusable_from(skew).is_none_or(|t| server_now < t)
    }

    /// The server time at which to refresh it ahead of expiry; `None` for a
    /// token too short-lived for that.
    pub(super) fn refresh_from(&self, ahead: Duration) -> Option<i64> {
        if self.short_lived {
            return None;
        }
        self.exp().map(|exp| exp.saturating_sub(secs(ahead)))
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The local instant at which the server's clock reads `server_time`.
pub(super) fn local_instant(clock: &ServerClock, now: Now, server_time: i64) -> Instant {
    let ahead = server_time.saturating_sub(clock.server_now(now));
    now.instant + Duration::from_secs(u64::try_from(ahead).unwrap_or(0))
}
