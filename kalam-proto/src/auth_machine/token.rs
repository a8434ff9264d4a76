//! An access token and the rule that says when it is used.
//!
//! Expiry is judged on the server's clock ([`ServerClock`]), from the
//! token's `exp` and the local time it arrived (seen on the server's clock,
//! with the best estimate at the time of judging, so a later `Date` sample
//! corrects the judgement of a token already held):
//! - A token with at least twice the skew left when it arrived counts as
//!   expired `skew` before its `exp`. It is refreshed ahead `ahead` before
//!   `exp`, but never before half of what it had left has passed: a token
//!   barely longer than `ahead` is not renewed every second.
//! - A shorter one (a server set to 0-hour tokens issues `exp = iat`) is
//!   used while the server would accept it, until `exp` plus the server's
//!   leeway less a margin for the trip, and never refreshed ahead.
//! - Until the server's clock is known (no answer carried a `Date` yet),
//!   the local clock cannot condemn a token on its own word: the machine
//!   first asks the server for the time (see `AuthMachine`'s clock probe)
//!   and judges after.

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
    /// The local time it arrived, in Unix seconds.
    arrived_local: i64,
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
            arrived_local: 0,
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

    /// Notes the token as arriving at `now`.
    pub(super) fn arrived(&mut self, now: Now) {
        self.arrived_local = i64::try_from(now.unix_secs()).unwrap_or(i64::MAX);
    }

    /// What it had left when it arrived, judged on the server's clock as
    /// `clock` estimates it now.
    fn left_on_arrival(&self, clock: &ServerClock) -> Option<i64> {
        let arrived = self.arrived_local.saturating_add(clock.offset());
        self.exp().map(|exp| exp.saturating_sub(arrived))
    }

    /// Too short-lived for the skew rule (see the module docs).
    fn short(&self, clock: &ServerClock, skew: Duration) -> bool {
        self.left_on_arrival(clock)
            .is_some_and(|left| left < secs(skew).saturating_mul(2))
    }

    /// The server time from which the token is not used any more; `None`
    /// for a token without `exp`.
    pub(super) fn unusable_from(&self, clock: &ServerClock, skew: Duration) -> Option<i64> {
        let exp = self.exp()?;
        Some(if self.short(clock, skew) {
            exp.saturating_add(secs(SERVER_LEEWAY - LEEWAY_MARGIN))
        } else {
            exp.saturating_sub(secs(skew))
        })
    }

    /// Whether it is used at `now`.
    pub(super) fn usable(&self, clock: &ServerClock, now: Now, skew: Duration) -> bool {
        self.unusable_from(clock, skew)
            .is_none_or(|t| clock.server_now(now) < t)
    }

    /// The server time at which to refresh it ahead of expiry; `None` for a
    /// token too short-lived for that.
    pub(super) fn refresh_from(&self, clock: &ServerClock, skew: Duration, ahead: Duration) -> Option<i64> {
        if self.short(clock, skew) {
            return None;
        }
        let exp = self.exp()?;
        let half_left = self.left_on_arrival(clock)? / 2;
        let arrived = self.arrived_local.saturating_add(clock.offset());
        Some(exp.saturating_sub(secs(ahead)).max(arrived.saturating_add(half_left)))
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
