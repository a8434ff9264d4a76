//! How the auth machine gets a token: the recovery ladder (refresh token,
//! the application's callbacks, a login), the expiry rule, and refreshing
//! ahead of expiry.

use std::time::Duration;

use super::token::{Origin, Token, local_instant};
use super::{AuthMachine, AuthOutput, CredentialRequestId, CredentialSource, InFlight, Phase, Probe, RequestId};
use crate::auth::AuthProvider;
use crate::error::{Error, Result};
use crate::framing;
use crate::jwt;
use crate::ops::RequestKind;
use crate::secret::Secret;
use crate::time::Now;
use crate::types::LoginResponse;

/// Back-off before a recovery after fresh tokens were refused, at most.
const MAX_RECOVERY_BACKOFF: Duration = Duration::from_secs(30);

/// The steps of recovery, tried in order, each at most once per episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rung {
    RefreshToken,
    Refresher,
    Provider,
    Login,
}

impl AuthMachine {
    /// Whether some way to a new token is configured: the refresh token of
    /// an earlier login, the application's refresher or dynamic provider,
    /// or basic credentials not yet refused.
    pub(super) fn can_renew(&self, now: Now) -> bool {
        self.refresh_usable(now)
            || self.config.has_refresher
            || self.config.has_dynamic_provider
            || (self.credentials.is_basic() && self.rejected.is_none())
    }

    /// Whether the refresh token of an earlier login is held and not
    /// expired (on the server's clock, with the skew).
    fn refresh_usable(&self, now: Now) -> bool {
        let skew = self.config.skew.as_secs() as i64;
        let server_now = self.clock.server_now(now);
        self.refresh.as_ref().is_some_and(|(_, exp)| {
            exp.is_none_or(|e| server_now.saturating_add(skew) < i64::try_from(e).unwrap_or(i64::MAX))
        })
    }

    /// Starts the next untried way to get a token. False when none is left.
    pub(super) fn start_next_rung(&mut self, now: Now) -> bool {
        let refresh_ok = self.refresh_usable(now);
        let callbacks = if self.had_token {
            [Rung::Refresher, Rung::Provider]
        } else {
            [Rung::Provider, Rung::Refresher]
        };
        let order = if self.prefer_provider {
            [Rung::Provider, Rung::RefreshToken, Rung::Refresher, Rung::Login]
        } else {
            [Rung::RefreshToken, callbacks[0], callbacks[1], Rung::Login]
        };
        for rung in order {
            if self.tried.contains(&rung) {
                continue;
            }
            let available = match rung {
                Rung::RefreshToken => refresh_ok,
                Rung::Refresher => self.config.has_refresher,
                Rung::Provider => self.config.has_dynamic_provider,
                Rung::Login => self.credentials.is_basic() && self.rejected.is_none(),
            };
            if !available {
                continue;
            }
            self.tried.push(rung);
            match rung {
                Rung::RefreshToken => {
                    let Some((secret, _)) = &self.refresh else {
                        continue;
                    };
                    match framing::refresh_request(self.nodes.endpoints(), secret) {
                        Ok(request) => {
                            let req = self.transmit(RequestKind::Refresh, request, InFlight::Recovery);
                            self.phase = Phase::Refreshing { req };
                        }
                        Err(e) => {
                            self.last_error = Some(e);
                            continue;
                        }
                    }
                }
                Rung::Refresher | Rung::Provider => {
                    let source = if rung == Rung::Refresher {
                        CredentialSource::Refresher
                    } else {
                        CredentialSource::DynamicProvider
                    };
                    let id = CredentialRequestId(self.fresh_id());
                    self.phase = Phase::Fetching { id, source };
                    self.out.push_back(AuthOutput::FetchCredentials { id, source });
                }
                Rung::Login => {
                    let AuthProvider::BasicAuth { user, password } = &self.credentials else {
                        continue;
                    };
                    let request = framing::login_request(self.nodes.endpoints(), user, password);
                    let req = self.transmit(RequestKind::Login, request, InFlight::Recovery);
                    self.phase = Phase::LoggingIn { req, configured: true };
                }
            }
            return true;
        }
        false
    }

    pub(super) fn final_error(&self) -> Error {
        if let Some(e) = &self.last_error {
            return e.clone();
        }
        if let Some(e) = &self.rejected {
            return e.clone();
        }
        if self.had_token || self.access.is_some() {
            return Error::TokenExpired;
        }
        match self.credentials {
            AuthProvider::JwtToken(_) => Error::TokenExpired,
            _ => Error::MissingCredentials,
        }
    }

    /// The machine's own login or refresh was answered.
    ///
    /// `dated`: the answer had a `Date` header (already taken as a clock
    /// sample); without one, the token's `iat` is the sample.
    pub(super) fn recovery_answered(&mut self, id: RequestId, result: Result<LoginResponse>, dated: bool, now: Now) {
        let configured_login = match self.phase {
            Phase::LoggingIn { req, configured } if req == id => configured,
            Phase::Refreshing { req } if req == id => false,
            _ => return, // forgotten by set_credentials
        };
        let was_refresh = matches!(self.phase, Phase::Refreshing { .. });
        self.phase = Phase::Idle;
        let from = if was_refresh { "refresh" } else { "login" };
        match result.and_then(|login| {
            let token = Token::new(Secret::new(login.access_token), Origin::Issued)?;
            if !dated && let Some(iat) = token.iat() {
                self.observe_clock(iat, now);
            }
            let token = self.arriving(token, from, now)?;
            let refresh_exp = jwt::inspect(&login.refresh_token).ok().and_then(|c| c.exp);
            Ok((token, Secret::new(login.refresh_token), refresh_exp))
        }) {
            Ok((token, refresh, refresh_exp)) => {
                self.install_token(token);
                self.refresh = Some((refresh, refresh_exp));
            }
            Err(e) => {
                if was_refresh && e.is_credentials_rejected() {
                    self.refresh = None; // that refresh token is no good
                }
                if configured_login && e.is_credentials_rejected() {
                    self.rejected = Some(e.clone()); // final for these credentials
                }
                self.last_error = Some(e);
            }
        }
        self.drive(now);
    }

    pub(super) fn expire_if_due(&mut self, now: Now) {
        if self.access.as_ref().is_some_and(|t| !self.usable(t, now)) {
            self.access = None;
            self.token_gen += 1;
        }
    }

    /// With a refresh token and nothing in flight, refresh ahead of expiry,
    /// once per token.
    pub(super) fn maybe_refresh_ahead(&mut self, now: Now) {
        if !self.refresh_ahead_armed() {
            return;
        }
        let server_now = self.clock.server_now(now);
        let due = self
            .access
            .as_ref()
            .and_then(|t| t.refresh_from(&self.clock, self.config.skew, self.ahead()))
            .is_some_and(|at| server_now >= at);
        if !due {
            return;
        }
        self.ahead_tried = Some(self.token_gen);
        if let Some((secret, _)) = &self.refresh
            && let Ok(request) = framing::refresh_request(self.nodes.endpoints(), secret)
        {
            let req = self.transmit(RequestKind::Refresh, request, InFlight::Recovery);
            self.phase = Phase::Refreshing { req };
        }
    }

    pub(super) fn refresh_ahead_armed(&self) -> bool {
        self.refresh.is_some()
            && self.access.is_some()
            && matches!(self.phase, Phase::Idle)
            && self.ahead_tried != Some(self.token_gen)
    }

    pub(super) fn ahead(&self) -> Duration {
        self.config.refresh_ahead.max(self.config.skew)
    }

    pub(super) fn update_timer(&mut self, now: Now) {
        let armed = self.refresh_ahead_armed();
        let token = self.access.as_ref().and_then(|t| {
            let refresh = t
                .refresh_from(&self.clock, self.config.skew, self.ahead())
                .filter(|_| armed);
            // Unjudged, the expiry timer sends the clock probe; while it is
            // out, the answer is what wakes the machine.
            let expiry = t
                .unusable_from(&self.clock, self.config.skew)
                .filter(|_| self.probe != Probe::InFlight);
            refresh.or(expiry)
        });
        let token = token.map(|at| local_instant(&self.clock, now, at));
        let backoff = self.recover_after.filter(|t| *t > now.instant);
        let pace = self.pace_timer(now);
        let retry = self.retry_timer();
        self.timer = [token, backoff, pace, retry].into_iter().flatten().min();
    }

    /// A token just obtained from `from`, noted as arriving now; refused
    /// when it is past even the server's leeway (a rung that fails, so
    /// recovery cannot loop on it). Before the server's clock is known it
    /// is taken, and the clock probe decides.
    pub(super) fn arriving(&self, mut token: Token, from: &'static str, now: Now) -> Result<Token> {
        token.arrived(now);
        // Before the server's clock is known, the probe judges it.
        let unjudged = self.probe == Probe::NotYet && !self.clock.is_known();
        if unjudged || token.usable(&self.clock, now, self.config.skew) {
            return Ok(token);
        }
        let server_now = self.clock.server_now(now);
        let ago = server_now.saturating_sub(token.exp().unwrap_or(server_now));
        Err(Error::StaleToken {
            from,
            ago_secs: u64::try_from(ago).unwrap_or(0),
            offset_secs: self.clock.offset(),
        })
    }

    /// A server time seen at `now`: a sample of the server's clock. A large
    /// offset is reported once, as a warning.
    pub(super) fn observe_clock(&mut self, server_unix: u64, now: Now) {
        if let Some(offset_secs) = self.clock.observe(server_unix, now, self.config.skew) {
            self.out
                .push_back(AuthOutput::Warning(Error::ClockSkew { offset_secs }));
        }
    }

    /// The current token was refused `TOKEN_EXPIRED` before any request
    /// with it succeeded. Once is a clock estimate off; in a row, the
    /// server issues tokens it then refuses: back off before the next
    /// recovery (1 s, 2 s, 4 s… up to 30 s), so that is no login storm.
    pub(super) fn refused_before_use(&mut self, now: Now) {
        self.fresh_refusals = self.fresh_refusals.saturating_add(1);
        if self.fresh_refusals >= 2 {
            let wait = Duration::from_secs(1u64 << (self.fresh_refusals - 2).min(5)).min(MAX_RECOVERY_BACKOFF);
            self.recover_after = Some(now.instant + wait);
        }
    }

    /// Whether operations wait for the clock probe (see [`Probe`]): the
    /// token is condemned by the local clock alone. Sends the probe, once:
    /// `GET /v1/api/healthcheck`, tokenless, whose answer (even the 403 a
    /// remote client gets) carries the server's `Date`. After it, the token
    /// is judged on the best estimate there is.
    pub(super) fn probing_clock(&mut self, now: Now) -> bool {
        match self.probe {
            Probe::Done => false,
            Probe::InFlight => true,
            Probe::NotYet if self.clock.is_known() => {
                self.probe = Probe::Done;
                false
            }
            Probe::NotYet => {
                let condemned = self
                    .access
                    .as_ref()
                    .is_some_and(|t| !t.usable(&self.clock, now, self.config.skew));
                if !condemned {
                    return false;
                }
                let request = framing::request(self.nodes.endpoints(), RequestKind::Health, Vec::new(), None);
                self.transmit(RequestKind::Health, request, InFlight::ClockProbe);
                self.probe = Probe::InFlight;
                true
            }
        }
    }

    /// Whether the clock probe had its say, or was not needed: the server's
    /// clock is known, or the probe got no `Date`.
    pub(super) fn judged(&self) -> bool {
        self.clock.is_known() || self.probe == Probe::Done
    }

    /// Whether `token` is used at `now`. Before the server's clock is
    /// judged, the local clock does not condemn it (the probe will).
    pub(super) fn usable(&self, token: &Token, now: Now) -> bool {
        !self.judged() || token.usable(&self.clock, now, self.config.skew)
    }
}
