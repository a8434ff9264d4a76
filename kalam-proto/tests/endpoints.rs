//! The endpoint table (`ENDPOINTS`) drives the client core: for every
//! request kind, its method, route and credential are what goes out, and a
//! `TOKEN_EXPIRED` or `INVALID_CREDENTIALS` answer is recovered from (one
//! renewal, one retry) exactly when the table says so.

mod support;

use kalam_proto::{
    AckRequest, AuthProvider, ConsumeRequest, ENDPOINTS, Error, Operation, QueryRequest, RequestKind, Secret,
    SetupRequest, TokenUse, UploadFile, UploadRequest,
};
use support::{EXPIRED, INVALID, Pump, T0, jwt};

/// An operation that sends a request of `kind`. Adding a kind fails to
/// compile here until it has an example.
fn operation_of(kind: RequestKind) -> Operation {
    match kind {
        RequestKind::Login => Operation::Login {
            user: "root".into(),
            password: Secret::new("pw"),
        },
        RequestKind::Refresh => Operation::Refresh {
            refresh_token: Secret::new(jwt("refresh", T0 + 7200, "given")),
        },
        RequestKind::Me => Operation::Me,
        RequestKind::Query => Operation::Query(QueryRequest::new("SELECT 1")),
        RequestKind::QueryRows => Operation::QueryRows(QueryRequest::new("SELECT 1")),
        RequestKind::ConsumeTopic => Operation::ConsumeTopic(ConsumeRequest::new("app.t", "g")),
        RequestKind::AckTopic => Operation::AckTopic(AckRequest {
            topic_id: "app.t".into(),
            group_id: "g".into(),
            partition_id: 0,
            upto_offset: 1,
        }),
        RequestKind::Health => Operation::Health,
        RequestKind::SetupStatus => Operation::SetupStatus,
        RequestKind::Setup => Operation::Setup(SetupRequest::new("dba", "Str0ng-Passw0rd", "R00t-Passw0rd")),
        RequestKind::Upload => Operation::Upload(UploadRequest {
            query: QueryRequest::new(r#"INSERT INTO p.docs (id, f) VALUES (1, FILE("doc"))"#),
            files: vec![UploadFile {
                placeholder: "doc".into(),
                filename: "a.txt".into(),
                mime: "text/plain".into(),
                len: 3,
            }],
            replayable: true,
            sources: 1,
        }),
        RequestKind::Download => Operation::Download {
            path: "/v1/files/p/docs/f0001/1-a.txt".into(),
            sink: 1,
        },
        RequestKind::ClusterHealth => Operation::ClusterHealth,
    }
}

/// A client logged in with basic credentials and holding a refresh token.
fn logged_in() -> (Pump, String) {
    let mut p = Pump::basic();
    p.query("SELECT 0");
    let login = p.last_http().id;
    let access = jwt("access", T0 + 3600, "a1");
    p.answer_login(login, &access, &jwt("refresh", T0 + 7200, "r1"));
    let q = p.last_http().id;
    p.answer(q, 200, support::OK);
    (p, access)
}

#[test]
fn every_request_goes_out_as_its_row_says() {
    for endpoint in &ENDPOINTS {
        let (mut p, access) = logged_in();
        let before = p.http.len();
        p.submit(operation_of(endpoint.kind));
        assert_eq!(p.http.len(), before + 1, "{:?} sends one request", endpoint.kind);
        let sent = p.last_http();
        assert_eq!(sent.kind, endpoint.kind);
        assert_eq!(&sent.method, endpoint.method, "{:?}", endpoint.kind);
        assert!(
            sent.path.starts_with(endpoint.path),
            "{:?}: {} under {}",
            endpoint.kind,
            sent.path,
            endpoint.path
        );
        let bearer = sent.auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
        match endpoint.token {
            TokenUse::None => assert_eq!(bearer, None, "{:?} carries no token", endpoint.kind),
            TokenUse::Refresh => assert!(bearer.is_some_and(|t| t.contains('.') && t != access)),
            TokenUse::Access { .. } => assert_eq!(bearer, Some(access.as_str()), "{:?}", endpoint.kind),
        }
    }
}

/// Tells a refusal's typed error.
type IsRefusal = fn(&Error) -> bool;

/// `TOKEN_EXPIRED`, and `INVALID_CREDENTIALS` while the client can get
/// another token (here: a refresh token), on every kind of request.
#[test]
fn a_refused_token_is_recovered_exactly_where_the_table_says() {
    let refusals: [(&str, IsRefusal); 2] = [
        (EXPIRED, Error::is_token_expired),
        (INVALID, Error::is_credentials_rejected),
    ];
    for (refusal, is_refusal) in refusals {
        for endpoint in &ENDPOINTS {
            let kind = endpoint.kind;
            let (mut p, _) = logged_in();
            let before = p.sent_of(kind).len();
            let w = p.submit(operation_of(kind));
            let first = p.last_http().id;
            p.answer(first, 401, refusal);
            if endpoint.recovers {
                assert_eq!(p.last_http().kind, RequestKind::Refresh, "{kind:?} renews the token");
                let refresh = p.last_http().id;
                let a2 = jwt("access", T0 + 3600, "a2");
                p.answer_login(refresh, &a2, &jwt("refresh", T0 + 7200, "r2"));
                let retry = p.last_http();
                assert_eq!(retry.kind, kind, "{kind:?} is sent once more");
                assert_eq!(retry.auth.as_deref(), Some(format!("Bearer {a2}").as_str()));
                let retry = retry.id;
                p.answer(retry, 401, refusal);
                assert!(
                    matches!(p.error(w), Some(e) if is_refusal(e)),
                    "{kind:?}: a second refusal is final: {:?}",
                    p.result(w)
                );
                assert_eq!(
                    p.sent_of(kind).len() - before,
                    2,
                    "{kind:?} is retried once, not in a loop"
                );
            } else {
                assert!(
                    matches!(p.error(w), Some(e) if is_refusal(e)),
                    "{kind:?}: the caller gets the answer as it is: {:?}",
                    p.result(w)
                );
                let renewals = p.sent_of(RequestKind::Refresh).len() + p.sent_of(RequestKind::Login).len();
                let own = usize::from(matches!(kind, RequestKind::Login | RequestKind::Refresh));
                assert_eq!(renewals, 1 + own, "{kind:?} causes no renewal");
            }
        }
    }
}

#[test]
fn a_request_that_needs_a_token_fails_without_credentials_and_others_go_anonymous() {
    for endpoint in &ENDPOINTS {
        let mut p = Pump::new(AuthProvider::None, support::config());
        let w = p.submit(operation_of(endpoint.kind));
        match endpoint.token {
            TokenUse::Access { required: true } => {
                assert!(
                    matches!(p.error(w), Some(Error::MissingCredentials)),
                    "{:?}",
                    endpoint.kind
                );
                assert!(p.http.is_empty());
            }
            _ => {
                assert_eq!(p.last_http().kind, endpoint.kind);
                assert!(p.last_http().auth.is_none() || endpoint.token == TokenUse::Refresh);
            }
        }
    }
}
