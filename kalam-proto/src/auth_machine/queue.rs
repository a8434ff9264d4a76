//! The operation queue: an operation waits while the token is being
//! obtained or renewed (or while the request cap or the query rate holds
//! it back), is dispatched with the current token, and is finished exactly
//! once, with its reply or its error (after a refused token, once more,
//! when the endpoint table says it recovers).

use super::*;

impl AuthMachine {
    pub(super) fn finish(&mut self, op: OpId, result: Result<Reply>) {
        if self.ops.remove(&op).is_some() {
            self.out.push_back(AuthOutput::Done { op, result });
        }
    }

    /// A query failed: decide between retry, sticky refusal and plain failure.
    ///
    /// `TOKEN_EXPIRED`, and `INVALID_CREDENTIALS` for a token the machine
    /// can replace (the server rotated its secret, the user's role changed),
    /// are recovered from as one episode shared by every request waiting,
    /// and each refused request is sent once more: the server refused it
    /// before running it. A second refusal of the same request is final.
    pub(super) fn op_failed(&mut self, op: OpId, token_gen: Option<u64>, error: Error, now: Now) {
        let error = match self.rate_refused(op, error, now) {
            Some(error) => error,
            None => return, // waits for the pause, to go again
        };
        let current = token_gen == Some(self.token_gen);
        let refused_token = token_gen.is_some() && error.is_credentials_rejected();
        // Sent with a token since replaced (new credentials, a recovery):
        // the current one gets its chance, once.
        if error.is_token_expired() || (refused_token && (!current || self.can_renew(now))) {
            // The server refused the token: never send it again, whether or
            // not this operation may be retried.
            if current {
                if !self.token_accepted {
                    self.refused_before_use(now);
                }
                if let Some(t) = self.access.take() {
                    self.refused = Some((t.secret, error.clone()));
                }
                self.token_gen += 1;
            }
            // A late refusal of a token older than one the server already
            // refused after a recovery: the server refuses whatever it is
            // given; another recovery for it would be a storm.
            let superseded = matches!((token_gen, self.refused_again), (Some(s), Some(f)) if s < f);
            let Some(pending) = self.ops.get_mut(&op) else {
                return;
            };
            if pending.retried || superseded {
                if pending.retried
                    && let Some(g) = token_gen
                {
                    self.refused_again = Some(self.refused_again.map_or(g, |f| f.max(g)));
                }
                return self.finish(op, Err(error));
            }
            pending.retried = true;
            self.waiting.push_front(op);
            self.drive(now);
            return;
        }
        if refused_token && current {
            // No other way to a token: the refusal is final until the
            // application gives new credentials.
            if let Some(t) = self.access.take() {
                self.token_gen += 1;
                if t.origin == Origin::Configured {
                    self.rejected = Some(error.clone());
                }
                self.refused = Some((t.secret, error.clone()));
            }
        }
        self.finish(op, Err(error));
    }

    /// Serves waiting operations with a usable token, or starts recovery.
    pub(super) fn drive(&mut self, now: Now) {
        if self.probing_clock(now) {
            return; // the operations wait for the server's time
        }
        self.expire_if_due(now);
        self.maybe_refresh_ahead(now);
        if self.waiting.is_empty() && self.waiting_tokens.is_empty() && matches!(self.phase, Phase::Idle) {
            // No episode in progress: the next one starts afresh.
            self.tried.clear();
            self.last_error = None;
            self.prefer_provider = false;
        }
        while !self.waiting.is_empty() || !self.waiting_tokens.is_empty() {
            // A clone of the cached header value is a reference-count bump:
            // dispatching allocates nothing but each request's own body.
            if let Some(header) = self.access.as_ref().map(|t| t.header.clone()) {
                while let Some(op) = self.waiting_tokens.pop_front() {
                    self.dispatch(op, Some(&header));
                }
                self.dispatch_waiting(Some(&header), now);
                return;
            }
            if self.anonymous_allowed() {
                while let Some(op) = self.waiting_tokens.pop_front() {
                    self.dispatch(op, None);
                }
                self.dispatch_waiting(None, now);
                return;
            }
            if !matches!(self.phase, Phase::Idle) {
                return; // single flight: wait for the one in progress
            }
            if self.recover_after.is_some_and(|t| now.instant < t) {
                return; // backing off: the server refused fresh tokens
            }
            if !self.start_next_rung(now) {
                let error = self.final_error();
                self.tried.clear();
                self.last_error = None;
                let waiting: Vec<OpId> = self.waiting_tokens.drain(..).chain(self.waiting.drain(..)).collect();
                for op in waiting {
                    self.finish(op, Err(error.clone()));
                }
            }
        }
    }

    pub(super) fn anonymous_allowed(&self) -> bool {
        self.anonymous_ok
            || (self.credentials == AuthProvider::None
                && self.rejected.is_none()
                && !self.config.has_dynamic_provider
                && !self.config.has_refresher)
    }

    pub(super) fn dispatch(&mut self, op: OpId, authorization: Option<&HeaderValue>) {
        let Some(pending) = self.ops.get(&op) else {
            return;
        };
        let inflight = InFlight::Op {
            op,
            token_gen: authorization.map(|_| self.token_gen),
        };
        match &pending.operation {
            Operation::Token { .. } => {
                let r = self
                    .access
                    .as_ref()
                    .map(|t| Reply::Token(t.secret.clone()))
                    .ok_or(Error::MissingCredentials);
                self.finish(op, r);
            }
            Operation::Upload(upload) => {
                if pending.retried && !upload.replayable {
                    // Refused once with TOKEN_EXPIRED; the token is renewed
                    // now, but the reader's data is gone: say so, do not
                    // send half an upload.
                    return self.finish(op, Err(Error::UploadNotReplayable));
                }
                if let Some(plan) = pending.plan.clone() {
                    let request = files::upload_request(self.nodes.endpoints(), &plan, authorization);
                    let id = RequestId(self.fresh_id());
                    self.op_requests += 1;
                    if self.nodes.is_cluster() {
                        self.sent_to.insert(id, self.nodes.current());
                    }
                    self.inflight.insert(id, (RequestKind::Upload, inflight));
                    self.out.push_back(AuthOutput::TransmitUpload { id, request, plan });
                }
            }
            Operation::Download { path, sink } => {
                match files::download_request(self.nodes.endpoints(), path, authorization) {
                    Ok(mut request) => {
                        request.extensions_mut().insert(files::DownloadSink(*sink));
                        self.transmit(RequestKind::Download, request, inflight);
                    }
                    Err(e) => self.finish(op, Err(e)),
                }
            }
            operation => {
                let Some(kind) = operation.kind() else { return };
                let required = kind.endpoint().token == (TokenUse::Access { required: true });
                if required && authorization.is_none() {
                    return self.finish(op, Err(Error::MissingCredentials));
                }
                let request = framing::request(self.nodes.endpoints(), kind, pending.body.clone(), authorization);
                self.transmit(kind, request, inflight);
            }
        }
    }
}
