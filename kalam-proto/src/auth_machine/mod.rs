//! The auth lifecycle machine.
//!
//! [`AuthMachine`] owns the client's credentials and tokens and every HTTP
//! exchange that needs them. It is a pure state machine in the style of
//! `quinn-proto`: inputs go in through `submit` / `handle_*` with the current
//! time, and what must happen next comes out of [`AuthMachine::poll_output`].
//! Nothing happens between calls.
//!
//! ```text
//!                 ┌──────────── login / refresh / callback fails ───────────┐
//!                 ▼                                                         │
//!  Unauthenticated ──need token──► LoggingIn / FetchingCredentials ──ok──► Authenticated
//!                                                                          │   ▲
//!                 exp − skew passed, or a query answered TOKEN_EXPIRED      │   │ ok
//!                                                                          ▼   │
//!                                                  Expired ──need token──► Refreshing
//! ```
//!
//! Rules it keeps:
//! - Expiry is judged on the server's clock, estimated from its answers'
//!   `Date` headers ([`ServerClock`]). A token counts as expired `skew`
//!   (default 30 s) before its `exp`; an expired token is never handed out.
//!   With a refresh token, the machine refreshes `refresh_ahead` (default
//!   60 s) before `exp` (not before half its life), while the old token
//!   still serves. A token that arrives with less than twice the skew left
//!   (a 0-hour token) is used while the server takes it, up to 50 s past
//!   `exp` ([`SERVER_LEEWAY`] less a margin), and never refreshed ahead.
//! - Before any answer has carried the server's time, the local clock
//!   never condemns a token alone: the machine first sends one tokenless
//!   clock probe (`GET /v1/api/healthcheck`; any answer has a `Date`).
//! - Tokens refused `TOKEN_EXPIRED` before any use, twice in a row, make
//!   the next recovery wait (1 s, 2 s, … 30 s): no login storm.
//! - Single flight: however many operations wait, at most one login, refresh
//!   or credential callback is in flight.
//! - A query answered `TOKEN_EXPIRED` is retried once after recovery. Recovery
//!   tries, in order: the refresh token from an earlier login, the
//!   application's refresher, the dynamic provider, the stored basic
//!   credentials. (With no token yet, the provider is asked before the
//!   refresher.) If none works, every waiter gets the same typed error.
//! - A token refused with `INVALID_CREDENTIALS` (the server rotated its
//!   secret, the user's role changed) is recovered from the same way when
//!   the machine has a way to another token (a refresh token, the
//!   refresher, the provider, a password not refused): one recovery for
//!   every request waiting, each refused request retried once, a second
//!   refusal final.
//! - Refused credentials (wrong password, `INVALID_CREDENTIALS` for a token
//!   the application gave and nothing to renew it with) are final until the
//!   application supplies new ones: no request is repeated in a loop.
//! - An answer to a request the machine no longer waits for is ignored.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use http::{HeaderValue, Request, Response};

use crate::auth::{AuthProvider, bearer_header};
use crate::error::{Error, Result, TransportError};
use crate::files::{self, UploadPlan};
use crate::framing::{self, Endpoints};
use crate::nodes::Nodes;
use crate::ops::{Decoded, Operation, Reply, RequestKind, TokenUse, decode};
use crate::secret::Secret;
use crate::time::{Instant, Now};
use crate::types::LoginResponse;

mod clock;
mod failover;
mod io;
mod pacing;
mod queue;
mod recovery;
mod retry;
mod token;

pub use io::{AuthConfig, AuthOutput, AuthState, CredentialRequestId, CredentialSource, OpId, RequestId};

pub use clock::{MAX_OFFSET, ServerClock, parse_http_date};
use recovery::Rung;
pub use token::SERVER_LEEWAY;
use token::{Origin, Token};

#[derive(Debug)]
enum Phase {
    Idle,
    LoggingIn {
        req: RequestId,
        configured: bool,
    },
    Refreshing {
        req: RequestId,
    },
    Fetching {
        id: CredentialRequestId,
        source: CredentialSource,
    },
}

#[derive(Debug)]
enum InFlight {
    /// An operation's request, sent with the access token of generation
    /// `token_gen` (`None`: sent without one).
    Op { op: OpId, token_gen: Option<u64> },
    /// The machine's own login or refresh (checked against `phase`).
    Recovery,
    /// A tokenless request whose answer's `Date` teaches the server's clock.
    ClockProbe,
}

/// The clock probe: before the local clock condemns a token on its own
/// word (no answer has carried the server's time yet), the machine asks
/// the server for the time once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    NotYet,
    InFlight,
    Done,
}

#[derive(Debug)]
struct PendingOp {
    operation: Operation,
    /// The prepared SQL body, kept for the one retry.
    body: Vec<u8>,
    /// An upload's framed body.
    plan: Option<UploadPlan>,
    retried: bool,
    /// When it was submitted: a refusal for rate is retried until
    /// `retry_budget` after it.
    submitted: Instant,
    /// Times it was sent again after a connection that could not be made.
    attempts: u32,
}

/// The auth lifecycle machine. See the [module docs](self).
#[derive(Debug)]
pub struct AuthMachine {
    /// The server, or the nodes of its cluster ([`crate::nodes`]).
    nodes: Nodes,
    /// With several nodes: the node each request in flight went to.
    sent_to: BTreeMap<RequestId, usize>,
    /// With several nodes: the login or refresh in flight, kept to send it
    /// to another node when its node fails, and how often it was.
    recovery_resend: Option<failover::Resend>,
    config: AuthConfig,
    credentials: AuthProvider,
    access: Option<Token>,
    token_gen: u64,
    had_token: bool,
    refresh: Option<(Secret, Option<u64>)>,
    /// Sticky refusal of the configured credentials.
    rejected: Option<Error>,
    /// The token the server refused last, and how: a callback that hands
    /// it back is a failed rung, not a token to send again.
    refused: Option<(Secret, Error)>,
    /// The provider answered "no credentials": send without a token.
    anonymous_ok: bool,
    phase: Phase,
    tried: Vec<Rung>,
    last_error: Option<Error>,
    waiting: VecDeque<OpId>,
    /// Operations that send no request of their own (a token for the
    /// WebSocket), waiting for a token: they take no HTTP slot, so they never
    /// wait behind the in-flight cap.
    waiting_tokens: VecDeque<OpId>,
    ops: BTreeMap<OpId, PendingOp>,
    inflight: BTreeMap<RequestId, (RequestKind, InFlight)>,
    /// Operation requests among `inflight` (the cap counts these), and
    /// downloads whose body the driver still streams.
    op_requests: usize,
    /// Downloads answered whose body is still being read: each keeps its
    /// place under the cap (its connection is busy) until
    /// [`AuthMachine::handle_body_done`].
    open_bodies: BTreeSet<RequestId>,
    out: VecDeque<AuthOutput>,
    timer: Option<Instant>,
    /// The token generation for which a refresh ahead of expiry was tried.
    ahead_tried: Option<u64>,
    /// A fresh token was asked for: the dynamic provider goes first.
    prefer_provider: bool,
    /// The server's clock, estimated from its answers.
    clock: ServerClock,
    probe: Probe,
    /// The server's query rate, as learned from its refusals.
    pacer: pacing::RatePacer,
    /// Operations whose connection could not be made, and when they go
    /// again ([`retry`]).
    delayed: Vec<(Instant, OpId)>,
    /// A request with the current token was answered other than
    /// `TOKEN_EXPIRED`: the server takes it.
    token_accepted: bool,
    /// Tokens in a row refused `TOKEN_EXPIRED` before any request with them
    /// succeeded (the server issues tokens it then refuses).
    fresh_refusals: u32,
    /// After such refusals, no recovery starts before this.
    recover_after: Option<Instant>,
    /// The newest token generation refused on a retry (the token a recovery
    /// got was refused too): a late refusal of an older token starts no
    /// new recovery.
    refused_again: Option<u64>,
    next_id: u64,
}

impl AuthMachine {
    /// A machine for the server at `endpoints` (one [`Endpoints`], or the
    /// [`Nodes`] of a cluster) with the application's credentials. Nothing
    /// is sent until an operation needs it; a token given here arms the
    /// expiry timer at once.
    pub fn new(endpoints: impl Into<Nodes>, credentials: AuthProvider, config: AuthConfig, now: Now) -> Self {
        let pacer_seed = config.boundary_seed;
        let mut m = AuthMachine {
            nodes: endpoints.into(),
            sent_to: BTreeMap::new(),
            recovery_resend: None,
            config,
            credentials: AuthProvider::None,
            access: None,
            token_gen: 0,
            had_token: false,
            refresh: None,
            rejected: None,
            refused: None,
            anonymous_ok: false,
            phase: Phase::Idle,
            tried: Vec::new(),
            last_error: None,
            waiting: VecDeque::new(),
            waiting_tokens: VecDeque::new(),
            ops: BTreeMap::new(),
            inflight: BTreeMap::new(),
            op_requests: 0,
            open_bodies: BTreeSet::new(),
            out: VecDeque::new(),
            timer: None,
            ahead_tried: None,
            prefer_provider: false,
            clock: ServerClock::default(),
            probe: Probe::NotYet,
            pacer: pacing::RatePacer::new(pacer_seed),
            delayed: Vec::new(),
            token_accepted: false,
            fresh_refusals: 0,
            recover_after: None,
            refused_again: None,
            next_id: 1,
        };
        m.install_credentials(credentials, now);
        m.update_timer(now);
        m
    }

    /// The endpoints of the server (of the node in use).
    pub fn endpoints(&self) -> &Endpoints {
        self.nodes.endpoints()
    }

    /// The server's nodes and the one in use.
    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// The credentials the application configured (not tokens obtained with them).
    pub fn credentials(&self) -> &AuthProvider {
        &self.credentials
    }

    /// The state of the auth lifecycle.
    pub fn state(&self) -> AuthState {
        match self.phase {
            Phase::LoggingIn { .. } => AuthState::LoggingIn,
            Phase::Fetching { .. } => AuthState::FetchingCredentials,
            Phase::Refreshing { .. } if self.access.is_none() => AuthState::Refreshing,
            _ if self.access.is_some() => AuthState::Authenticated,
            _ if self.had_token => AuthState::Expired,
            _ => AuthState::Unauthenticated,
        }
    }

    /// The current access token, if one is held and usable at `now`.
    pub fn access_token(&self, now: Now) -> Option<&Secret> {
        self.access.as_ref().filter(|t| self.usable(t, now)).map(|t| &t.secret)
    }

    /// The cached `Authorization` header value of the usable token at `now`.
    /// Cloning it does not allocate.
    pub fn authorization(&self, now: Now) -> Option<&HeaderValue> {
        self.access.as_ref().filter(|t| self.usable(t, now)).map(|t| &t.header)
    }

    /// Operations submitted and not yet done.
    pub fn pending_ops(&self) -> usize {
        self.ops.len()
    }

    // ----------------------------------------------------------------- inputs

    /// Submits an operation. Its result comes out as [`AuthOutput::Done`].
    ///
    /// An operation whose endpoint carries no access token (login,
    /// refresh, health, setup) goes out at once and its body is not kept
    /// (it may hold a password); the others wait for a usable token.
    pub fn submit(&mut self, operation: Operation, now: Now) -> OpId {
        let op = OpId(self.fresh_id());
        let mut body = match operation.body() {
            Ok(b) => b,
            Err(e) => {
                self.out.push_back(AuthOutput::Done { op, result: Err(e) });
                return op;
            }
        };
        let plan = match &operation {
            Operation::Upload(u) => {
                match files::multipart_plan(u, &self.config.files, self.config.boundary_seed, op.0) {
                    Ok(plan) => Some(plan),
                    Err(e) => {
                        // Refused before anything is sent.
                        self.out.push_back(AuthOutput::Done { op, result: Err(e) });
                        return op;
                    }
                }
            }
            _ => None,
        };
        let fresh = matches!(operation, Operation::Token { fresh: true }) && self.config.has_dynamic_provider;
        let is_token = operation.kind().is_none();
        let without_access = operation
            .kind()
            .filter(|k| !matches!(k.endpoint().token, TokenUse::Access { .. }));
        let request = without_access.map(|kind| {
            let bearer = match &operation {
                Operation::Refresh { refresh_token } => Some(bearer_header(refresh_token.expose())).transpose(),
                _ => Ok(None),
            };
            bearer.map(|b| {
                let body = std::mem::take(&mut body);
                (kind, framing::request(self.nodes.endpoints(), kind, body, b.as_ref()))
            })
        });
        self.ops.insert(
            op,
            PendingOp {
                operation,
                body,
                plan,
                retried: false,
                submitted: now.instant,
                attempts: 0,
            },
        );
        match request {
            Some(Ok((kind, request))) => {
                self.transmit(kind, request, InFlight::Op { op, token_gen: None });
            }
            Some(Err(e)) => self.finish(op, Err(e)),
            None => {
                if fresh && !matches!(self.phase, Phase::Fetching { .. }) {
                    // Ask the provider again rather than reuse the cached token.
                    if self.access.take().is_some() {
                        self.token_gen += 1;
                    }
                    self.prefer_provider = true;
                }
                if is_token {
                    self.waiting_tokens.push_back(op);
                } else {
                    self.waiting.push_back(op);
                }
                self.drive(now);
            }
        }
        self.update_timer(now);
        op
    }

    /// Replaces the credentials (`set_auth` / `update_shared_auth`). Tokens
    /// obtained with the old credentials are dropped, an in-flight login or
    /// refresh is forgotten (its answer will be ignored), a sticky refusal is
    /// cleared, and waiting operations go on with the new credentials.
    /// Setting credentials equal to the current ones changes nothing.
    pub fn set_credentials(&mut self, credentials: AuthProvider, now: Now) {
        if credentials == self.credentials && self.rejected.is_none() {
            return;
        }
        self.install_credentials(credentials, now);
        self.phase = Phase::Idle;
        self.tried.clear();
        self.last_error = None;
        self.drive(now);
        self.update_timer(now);
    }

    /// Feeds the answer to a request from [`AuthOutput::Transmit`].
    pub fn handle_response<B: AsRef<[u8]>>(&mut self, id: RequestId, response: &Response<B>, now: Now) {
        let Some(&(kind, _)) = self.inflight.get(&id) else {
            return; // not waited for (any more)
        };
        let decoded = decode(kind, response.status(), response.headers(), response.body().as_ref());
        self.handle_decoded(id, decoded, now);
    }

    /// Feeds an answer already decoded with [`decode`] (same effect as
    /// [`handle_response`](Self::handle_response) with the raw answer).
    /// An answer decoded for another kind of request than `id` is ignored,
    /// like an answer to a request no longer waited for.
    ///
    /// An error on a request that carried the access token goes through
    /// the recovery rule of its [`Endpoint`](crate::ops::Endpoint)
    /// (`recovers`); any other result goes to the caller as it is.
    pub fn handle_decoded(&mut self, id: RequestId, decoded: Decoded, now: Now) {
        if self.inflight.get(&id).is_none_or(|(kind, _)| *kind != decoded.kind) {
            return; // not waited for (any more), or not its answer
        }
        let node = self.sent_node(id);
        let Some((kind, inflight)) = self.take_inflight(id) else {
            return;
        };
        let cluster_error = self.nodes.is_cluster()
            && decoded
                .result
                .as_ref()
                .is_err_and(|e| e.is_cluster_transient() || e.is_gateway_failure());
        if self.nodes.is_cluster() && !cluster_error {
            self.nodes.succeeded(node);
        }
        if let Some(date) = decoded.date {
            self.observe_clock(date, now);
        }
        if pacing::paced(kind) && !decoded.result.as_ref().is_err_and(pacing::is_rate_limited) {
            self.pacer.taken(now.instant);
        }
        if let InFlight::Op {
            token_gen: Some(sent_gen),
            ..
        } = inflight
            && sent_gen == self.token_gen
            && !decoded
                .result
                .as_ref()
                .is_err_and(|e| e.is_token_expired() || e.is_credentials_rejected())
        {
            self.token_accepted = true;
            self.fresh_refusals = 0;
        }
        if kind == RequestKind::Download && decoded.result.is_ok() && matches!(inflight, InFlight::Op { .. }) {
            // Its body streams on its connection: the place stays taken.
            self.op_requests += 1;
            self.open_bodies.insert(id);
        }
        match (inflight, decoded.result) {
            (InFlight::Op { op, .. }, Err(e)) if cluster_error => {
                if let Some(e) = self.failover(op, node, e, now) {
                    self.finish(op, Err(e));
                }
            }
            (InFlight::Recovery, Err(e)) if cluster_error => {
                if let Some(e) = self.resend_recovery(id, node, e, now) {
                    self.recovery_answered(id, Err(e), decoded.date.is_some(), now);
                }
            }
            (InFlight::Op { op, token_gen }, Err(e)) if kind.endpoint().recovers => {
                self.op_failed(op, token_gen, e, now)
            }
            (InFlight::Op { op, .. }, result) => self.finish(op, result),
            (InFlight::Recovery, result) => {
                // Answered: the copy kept for another node goes (a password).
                self.recovery_resend = None;
                let login = result.and_then(|r| LoginResponse::try_from(r).map_err(Reply::unexpected));
                self.recovery_answered(id, login, decoded.date.is_some(), now);
            }
            // Whatever it says (a remote client gets 403): only its Date counts.
            (InFlight::ClockProbe, _) => self.probe = Probe::Done,
        }
        self.drive(now);
        self.update_timer(now);
    }

    /// A download's body (request `id`, answered 2xx) has been read to its
    /// end or dropped: its connection, and its place under the in-flight
    /// cap, are free again.
    pub fn handle_body_done(&mut self, id: RequestId, now: Now) {
        if self.open_bodies.remove(&id) {
            self.op_requests -= 1;
            self.drive(now);
            self.update_timer(now);
        }
    }

    /// Feeds a request's failure to get an answer.
    pub fn handle_transport_error(&mut self, id: RequestId, error: TransportError, now: Now) {
        let node = self.sent_node(id);
        let Some((kind, inflight)) = self.take_inflight(id) else {
            return;
        };
        // Say where: "POST http://host:2900/v1/api/auth/login: …".
        let uri = self.nodes.endpoints_of(node).uri(kind);
        let error = error.at(&format!("{} {uri}", kind.endpoint().method));
        match inflight {
            // Retried only when nothing was sent (`retry`): otherwise the
            // statement may have run. With several nodes, `failover`.
            InFlight::Op { op, .. } => {
                let error = Error::Transport(error);
                let error = if self.nodes.is_cluster() {
                    self.failover(op, node, error, now)
                } else {
                    self.transport_retry(op, error, now)
                };
                if let Some(error) = error {
                    self.finish(op, Err(error));
                }
            }
            InFlight::Recovery => {
                let error = Error::Transport(error);
                if let Some(error) = self.resend_recovery(id, node, error, now) {
                    self.recovery_answered(id, Err(error), false, now)
                }
            }
            InFlight::ClockProbe => self.probe = Probe::Done,
        }
        self.drive(now);
        self.update_timer(now);
    }

    /// Feeds the application's answer to [`AuthOutput::FetchCredentials`].
    pub fn handle_credentials(&mut self, id: CredentialRequestId, result: Result<AuthProvider>, now: Now) {
        let source = match self.phase {
            Phase::Fetching { id: current, source } if current == id => source,
            _ => return, // forgotten by set_credentials
        };
        self.phase = Phase::Idle;
        // What the application's callback returns becomes the current
        // credentials: setting the earlier ones again is then a change.
        if let Ok(credentials @ (AuthProvider::JwtToken(_) | AuthProvider::BasicAuth { .. })) = &result {
            self.credentials = credentials.clone();
        }
        match result {
            Ok(AuthProvider::JwtToken(secret)) => {
                let from = match source {
                    CredentialSource::DynamicProvider => "the provider",
                    CredentialSource::Refresher => "the refresher",
                };
                let again = self
                    .refused
                    .as_ref()
                    .filter(|(r, _)| *r == secret)
                    .map(|(_, e)| e.clone());
                let token = match again {
                    // The server refused this very token: not sent again.
                    Some(e) => Err(e),
                    None => Token::new(secret, Origin::Callback),
                };
                match token.and_then(|t| self.arriving(t, from, now)) {
                    Ok(t) => {
                        if source == CredentialSource::DynamicProvider {
                            // A provider's token replaces any refresh token of earlier logins.
                            self.refresh = None;
                        }
                        self.install_token(t);
                    }
                    Err(e) => self.last_error = Some(e),
                }
            }
            Ok(AuthProvider::BasicAuth { user, password }) => {
                // This login is the login rung of this episode.
                self.tried.push(Rung::Login);
                let request = framing::login_request(self.nodes.endpoints(), &user, &password);
                let req = self.transmit(RequestKind::Login, request, InFlight::Recovery);
                self.phase = Phase::LoggingIn { req, configured: false };
            }
            Ok(AuthProvider::None) => self.anonymous_ok = true,
            Err(e) => self.last_error = Some(Error::CredentialCallback(std::sync::Arc::new(e))),
        }
        self.drive(now);
        self.update_timer(now);
    }

    /// Call when [`poll_timeout`](Self::poll_timeout)'s instant is reached.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.timer.is_some_and(|t| t <= now.instant) {
            self.timer = None;
            self.expire_if_due(now);
            self.maybe_refresh_ahead(now);
            self.release_delayed(now);
            self.drive(now);
        }
        self.update_timer(now);
    }

    /// Call when a server refused the current token outside the HTTP path
    /// (a WebSocket `auth_error`): the token is dropped and the next
    /// operation that needs one recovers as after `TOKEN_EXPIRED`.
    pub fn handle_token_rejected(&mut self, token: &Secret, now: Now) {
        if self.access.as_ref().is_some_and(|t| &t.secret == token) {
            let error = Error::WsAuthFailed("the server refused the token".into());
            if let Some(t) = self.access.take()
                && t.origin == Origin::Configured
                && !self.can_renew(now)
            {
                // The application's own token, and nothing to renew it
                // with: final until it gives another.
                self.rejected = Some(error.clone());
            }
            self.refused = Some((token.clone(), error));
            self.token_gen += 1;
        }
        self.update_timer(now);
    }

    // ---------------------------------------------------------------- outputs

    /// The next thing the driver must do, until `None`.
    pub fn poll_output(&mut self) -> Option<AuthOutput> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    // -------------------------------------------------------------- internals

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn install_credentials(&mut self, credentials: AuthProvider, now: Now) {
        // New credentials from the application: no back-off from refusals
        // of tokens obtained with the old ones.
        self.fresh_refusals = 0;
        self.recover_after = None;
        self.refused_again = None;
        self.refused = None;
        self.access = None;
        self.token_gen += 1;
        self.had_token = false;
        self.refresh = None;
        self.rejected = None;
        self.anonymous_ok = false;
        if let AuthProvider::JwtToken(secret) = &credentials {
            match Token::new(secret.clone(), Origin::Configured) {
                Ok(mut t) => {
                    t.arrived(now);
                    self.install_token(t);
                }
                Err(e) => self.rejected = Some(e),
            }
        }
        self.credentials = credentials;
    }

    fn install_token(&mut self, token: Token) {
        self.prefer_provider = false;
        self.token_accepted = false;
        self.access = Some(token);
        self.token_gen += 1;
        self.had_token = true;
        self.tried.clear();
        self.last_error = None;
    }

    /// Removes a request from those in flight; a freed place goes to the
    /// next waiting operation.
    fn take_inflight(&mut self, id: RequestId) -> Option<(RequestKind, InFlight)> {
        if self.nodes.is_cluster() {
            self.sent_to.remove(&id);
        }
        let taken = self.inflight.remove(&id);
        if matches!(taken, Some((_, InFlight::Op { .. }))) {
            self.op_requests -= 1;
        }
        taken
    }

    fn transmit(&mut self, kind: RequestKind, request: Request<Vec<u8>>, inflight: InFlight) -> RequestId {
        let id = RequestId(self.fresh_id());
        if matches!(inflight, InFlight::Op { .. }) {
            self.op_requests += 1;
        }
        if self.nodes.is_cluster() {
            self.sent_to.insert(id, self.nodes.current());
            if matches!(inflight, InFlight::Recovery) {
                self.recovery_resend = Some(failover::Resend {
                    id,
                    kind,
                    request: request.clone(),
                    tries: 0,
                });
            }
        }
        self.inflight.insert(id, (kind, inflight));
        self.out.push_back(AuthOutput::Transmit { id, kind, request });
        id
    }

    /// The node request `id` went to (the one in use with one node).
    fn sent_node(&self, id: RequestId) -> usize {
        self.sent_to.get(&id).copied().unwrap_or(self.nodes.current())
    }
}
