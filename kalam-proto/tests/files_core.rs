//! The client core's decisions for FILE columns, one test each, with no
//! runtime: limits refused before anything is sent, an upload retried after
//! `TOKEN_EXPIRED` when its data can be read again and not otherwise, the
//! token stamped on uploads and downloads, a download's errors decoded and
//! retried like a query's.

mod support;

use kalam_proto::{
    AuthProvider, ClientConfig, ConnectionOptions, CredentialSource, Decoded, Error, KalamLinkTimeouts, Operation,
    QueryRequest, Reply, RequestKind, UploadFile, UploadRequest,
};
use support::{EXPIRED, OK, Pump, T0, jwt};

fn upload(len: u64, replayable: bool) -> Operation {
    Operation::Upload(UploadRequest {
        query: QueryRequest::new(r#"INSERT INTO p.docs (id, f) VALUES (1, FILE("doc"))"#),
        files: vec![UploadFile {
            placeholder: "doc".into(),
            filename: "hello.txt".into(),
            mime: "text/plain".into(),
            len,
        }],
        replayable,
        sources: 1,
    })
}

fn with_refresher(options: &ConnectionOptions) -> Pump {
    let config = ClientConfig::new(options, &KalamLinkTimeouts::default(), 7).with_refresher(true);
    Pump::new(AuthProvider::jwt_token(jwt("access", T0 + 3600, "a")), config)
}

const NOT_FOUND: &str = r#"{"code":"FILE_NOT_FOUND","error":"File not found"}"#;

#[test]
fn an_upload_over_a_limit_is_refused_before_any_request() {
    let options = ConnectionOptions::default()
        .with_max_file_bytes(1000)
        .with_max_files_per_request(1);
    let mut p = with_refresher(&options);
    let w = p.submit(upload(1001, true));
    assert!(matches!(
        p.error(w),
        Some(Error::FileTooLarge {
            size: 1001,
            limit: 1000,
            ..
        })
    ));
    let Operation::Upload(mut two) = upload(1, true) else {
        unreachable!()
    };
    two.files.push(UploadFile {
        placeholder: "doc2".into(),
        ..two.files[0].clone()
    });
    let w = p.submit(Operation::Upload(two));
    assert!(matches!(p.error(w), Some(Error::TooManyFiles { count: 2, limit: 1 })));
    // The server's 10 MiB body limit, whatever the per-file limit says.
    let mut p = Pump::with_token("a");
    let w = p.submit(upload(11 << 20, true));
    assert!(matches!(p.error(w), Some(Error::UploadTooLarge { limit, .. }) if *limit == 10 << 20));
    assert!(p.http.is_empty(), "nothing was sent");
}

#[test]
fn an_upload_carries_the_token_and_its_answer_decodes_like_a_query() {
    let mut p = Pump::with_token("a");
    let w = p.submit(upload(5, true));
    let sent = p.last_http();
    assert_eq!(sent.kind, RequestKind::Upload);
    assert!(sent.auth.as_deref().is_some_and(|a| a.starts_with("Bearer ")));
    let body = String::from_utf8(sent.body.clone()).unwrap();
    assert!(body.contains("name=\"file:doc\"; filename=\"hello.txt\"\r\nContent-Type: text/plain\r\n\r\n*****\r\n"));
    p.answer_next(200, OK);
    assert!(p.query_ok(w));
}

#[test]
fn a_replayable_upload_answered_token_expired_is_sent_again_after_recovery() {
    let mut p = with_refresher(&ConnectionOptions::default());
    let w = p.submit(upload(5, true));
    let first = p.last_http().body.clone();
    assert_eq!(p.answer_next(401, EXPIRED), RequestKind::Upload);
    assert_eq!(p.fetches.last().map(|f| f.1), Some(CredentialSource::Refresher));
    p.answer_fetch(Ok(AuthProvider::jwt_token(jwt("access", T0 + 3600, "b"))));
    let uploads = p.sent_of(RequestKind::Upload);
    assert_eq!(uploads.len(), 2, "sent again");
    assert_ne!(uploads[0].auth, uploads[1].auth, "with the new token");
    assert_eq!(uploads[1].body, first, "the same body");
    p.answer_next(200, OK);
    assert!(p.query_ok(w));
}

#[test]
fn an_upload_from_a_reader_is_never_sent_twice() {
    let mut p = with_refresher(&ConnectionOptions::default());
    let w = p.submit(upload(5, false));
    p.answer_next(401, EXPIRED);
    // The token is renewed (the next upload will not meet the same refusal)…
    p.answer_fetch(Ok(AuthProvider::jwt_token(jwt("access", T0 + 3600, "b"))));
    // …but this one is answered, not sent again.
    assert_eq!(p.sent_of(RequestKind::Upload).len(), 1);
    assert!(
        matches!(p.error(w), Some(Error::UploadNotReplayable)),
        "{:?}",
        p.result(w)
    );
    let w2 = p.submit(upload(5, false));
    assert!(
        p.last_http()
            .auth
            .as_deref()
            .unwrap()
            .ends_with(&jwt("access", T0 + 3600, "b"))
    );
    p.answer_next(200, OK);
    assert!(p.query_ok(w2));
}

#[test]
fn a_failed_recovery_is_the_uploads_error() {
    let mut p = with_refresher(&ConnectionOptions::default());
    let w = p.submit(upload(5, false));
    p.answer_next(401, EXPIRED);
    p.answer_fetch(Err(Error::MissingCredentials));
    assert!(
        matches!(p.error(w), Some(Error::CredentialCallback(_))),
        "{:?}",
        p.result(w)
    );
}

#[test]
fn a_download_is_a_get_with_the_token_and_answers_the_head() {
    let mut p = Pump::with_token("a");
    let w = p.submit(Operation::Download {
        path: "/v1/files/p/docs/f0001/1-hello.txt".into(),
        sink: 9,
    });
    let sent = p.last_http();
    assert_eq!(sent.kind, RequestKind::Download);
    assert_eq!(sent.sink, Some(9), "the driver learns whose body it is");
    assert!(sent.auth.is_some());
    let id = sent.id;
    // The driver streams a 2xx body and decodes only the head.
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("12"));
    let decoded = kalam_proto::decode(RequestKind::Download, http::StatusCode::OK, &headers, b"");
    assert!(matches!(
        decoded,
        Decoded {
            result: Ok(Reply::Download(_)),
            ..
        }
    ));
    p.answer_decoded(id, decoded);
    assert!(matches!(p.reply(w), Ok(Reply::Download(info)) if info.content_length == Some(12)));
}

#[test]
fn a_download_answered_token_expired_is_retried_like_a_query() {
    let mut p = with_refresher(&ConnectionOptions::default());
    let w = p.submit(Operation::Download {
        path: "/v1/files/p/docs/f0001/1-hello.txt".into(),
        sink: 9,
    });
    p.answer_next(401, EXPIRED);
    p.answer_fetch(Ok(AuthProvider::jwt_token(jwt("access", T0 + 3600, "b"))));
    assert_eq!(p.sent_of(RequestKind::Download).len(), 2);
    p.answer_next(404, NOT_FOUND);
    let e = p.error(w).expect("an error");
    assert_eq!(e.code().map(|c| c.as_str()), Some("FILE_NOT_FOUND"));
    assert_eq!(e.server().map(|s| s.status), Some(404));
}

#[test]
fn an_expired_token_is_renewed_before_an_upload_is_sent() {
    // The configured token is past its expiry and the server's leeway: the
    // refresher is asked first, and the upload leaves once, with the new token.
    let config =
        ClientConfig::new(&ConnectionOptions::default(), &KalamLinkTimeouts::default(), 7).with_refresher(true);
    let mut p = Pump::new(AuthProvider::jwt_token(jwt("access", T0 - 120, "old")), config);
    let w = p.submit(upload(5, false));
    // Nothing has told the client the server's time yet: before its own
    // clock condemns the token, it asks (any answer carries a Date).
    assert_eq!(p.http.len(), 1, "only the clock probe goes out");
    assert_eq!(p.answer_next(403, r#"{"error":"localhost only"}"#), RequestKind::Health);
    assert!(
        p.sent_of(RequestKind::Upload).is_empty(),
        "not sent with an expired token"
    );
    p.answer_fetch(Ok(AuthProvider::jwt_token(jwt("access", T0 + 3600, "new"))));
    assert_eq!(p.sent_of(RequestKind::Upload).len(), 1);
    p.answer_next(200, OK);
    assert!(p.query_ok(w));
}

mod properties {
    use kalam_proto::files::{boundary, multipart_plan};
    use kalam_proto::{FileLimits, FileRef, QueryRequest, Segment, UploadFile, UploadRequest};
    use proptest::prelude::*;

    fn file(name: String) -> FileRef {
        FileRef {
            id: "42".into(),
            sub: "f0001".into(),
            name,
            size: 0,
            mime: "text/plain".into(),
            sha256: String::new(),
            shard: None,
        }
    }

    proptest! {
        /// Whatever the name: `<id>[-stem].<ext>`, the stem lower-case ASCII
        /// letters, digits and single inner dashes, at most 50 characters;
        /// the extension `bin`, or at most 10 lower-case letters and digits.
        #[test]
        fn stored_names_are_always_well_formed(name in "\\PC{0,80}") {
            let stored = file(name.clone()).stored_name();
            let rest = stored.strip_prefix("42").expect("starts with the id");
            let (stem, ext) = rest.rsplit_once('.').expect("an extension");
            let stem = stem.strip_prefix('-').unwrap_or(stem);
            prop_assert!(stem.len() <= 50, "{stored}");
            prop_assert!(stem.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{stored}");
            prop_assert!(!stem.starts_with('-') && !stem.ends_with('-') && !stem.contains("--"), "{stored}");
            prop_assert!(rest.is_empty() || rest.starts_with('.') || (rest.starts_with('-') && !stem.is_empty()), "{stored}");
            prop_assert!(ext.len() <= 10 && ext.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{stored}");
            if !name.contains('.') {
                prop_assert_eq!(ext, "bin");
            }
        }

        /// The framed body is exactly `content_length` long, and the boundary
        /// appears in it only as the delimiters, whatever the SQL and names.
        #[test]
        fn framing_is_exact(sql in "\\PC{1,200}", names in proptest::collection::vec("[^\"\\\\\\p{Cc}]{0,30}", 1..4), seed in any::<u64>()) {
            let files: Vec<UploadFile> = names
                .iter()
                .enumerate()
                .map(|(i, n)| UploadFile { placeholder: format!("p{i}"), filename: n.clone(), mime: "a/b".into(), len: i as u64 * 3 })
                .collect();
            let upload = UploadRequest { query: QueryRequest::new(sql), files, replayable: true, sources: 0 };
            let plan = multipart_plan(&upload, &FileLimits::default(), seed, 1).unwrap();
            let mut body = Vec::new();
            for s in &plan.segments {
                match s {
                    Segment::Framed(b) => body.extend_from_slice(b),
                    Segment::File { len, .. } => body.resize(body.len() + *len as usize, b'.'),
                }
            }
            prop_assert_eq!(body.len() as u64, plan.content_length);
            let delimiter = format!("--{}", plan.boundary);
            let text = String::from_utf8_lossy(&body);
            // One delimiter per part (sql + files) and the closing one.
            prop_assert_eq!(text.matches(&delimiter).count(), upload.files.len() + 2);
            prop_assert!(plan.boundary == boundary(seed, 1) || upload.query.sql.contains(&boundary(seed, 1)));
        }
    }
}
