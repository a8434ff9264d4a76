//! How the auth machine gets a token: the recovery ladder (refresh token,
//! the application's callbacks, a login), the expiry rule, and refreshing
//! ahead of expiry.

use std::time::Duration;

use http::HeaderValue;

use super::{AuthMachine, AuthOutput, CredentialRequestId, CredentialSource, InFlight, Phase, RequestId};
use crate::auth::{AuthProvider, bearer_header};
use crate::error::{Error, Result};
use crate::framing;
use crate::jwt::{self, JwtClaims};
use crate::ops::RequestKind;
use crate::secret::Secret;
use crate::time::Now;
use crate::types::LoginResponse;

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
        })
    }

    pub(super) fn exp(&self) -> Option<u64> {
        self.claims.as_ref().and_then(|c| c.exp)
    }

    pub(super) fn usable_at(&self, now: Now, skew: Duration) -> bool {
        self.claims
            .as_ref()
            .is_none_or(|c| !c.is_expired_at(now.unix_secs(), skew.as_secs()))
    }
}

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
    pub(super) fn can_renew(&self) -> bool {
        self.refresh.is_some()
            || self.config.has_refresher
            || self.config.has_dynamic_provider
            || (self.credentials.is_basic() && self.rejected.is_none())
    }

    /// Starts the next untried way to get a token. False when none is left.
    pub(super) fn start_next_rung(&mut self, now: Now) -> bool {
        let skew = self.config.skew.as_secs();
        let refresh_ok = self
            .refresh
            .as_ref()
            .is_some_and(|(_, exp)| exp.is_none_or(|e| now.unix_secs().saturating_add(skew) < e));
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
                    match framing::refresh_request(&self.endpoints, secret) {
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
                    let request = framing::login_request(&self.endpoints, user, password);
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
    pub(super) fn recovery_answered(&mut self, id: RequestId, result: Result<LoginResponse>, now: Now) {
        let configured_login = match self.phase {
            Phase::LoggingIn { req, configured } if req == id => configured,
            Phase::Refreshing { req } if req == id => false,
            _ => return, // forgotten by set_credentials
        };
        let was_refresh = matches!(self.phase, Phase::Refreshing { .. });
        self.phase = Phase::Idle;
        let skew = self.config.skew;
        match result.and_then(|login| {
            let token = Token::new(Secret::new(login.access_token), Origin::Issued)?;
            if !token.usable_at(now, skew) {
                // Already expired by this client's clock (a token lifetime
                // shorter than the skew, or clocks far apart). Using it would
                // break the rule; retrying would loop. This rung fails.
                return Err(Error::TokenExpired);
            }
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
        if self
            .access
            .as_ref()
            .is_some_and(|t| !t.usable_at(now, self.config.skew))
        {
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
        let due = self
            .access
            .as_ref()
            .and_then(Token::exp)
            .is_some_and(|exp| now.unix_secs().saturating_add(self.ahead().as_secs()) >= exp);
        if !due {
            return;
        }
        self.ahead_tried = Some(self.token_gen);
        if let Some((secret, _)) = &self.refresh
            && let Ok(request) = framing::refresh_request(&self.endpoints, secret)
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
        self.timer = self.access.as_ref().and_then(Token::exp).map(|exp| {
            let at = if armed {
                exp.saturating_sub(self.ahead().as_secs())
            } else {
                exp.saturating_sub(self.config.skew.as_secs())
            };
            now.instant_at_unix(at)
        });
    }
}
