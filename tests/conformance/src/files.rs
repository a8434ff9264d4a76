//! Conformance scenarios for FILE columns: uploads (from a path, bytes and
//! an async reader, with progress), the FileRef read back, downloads by the
//! stored name, limits refused before sending, and an upload recovered after
//! a real `TOKEN_EXPIRED` answer. Re-exported by [`crate::scenarios`] and
//! listed in [`for_each_scenario!`](crate::for_each_scenario): every runner
//! runs them, against the kit and the real server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::AsyncReadExt as _;
use kalam_driver::adapter::BodyChunks;
use kalam_driver::prelude::*;
use kalam_driver::{KalamLinkClient, Runtime};

use crate::scenarios::{machine_behind_an_expired_token, root};
use crate::{Backend, FaultProxy, unix_now};
use kalam_testkit::sha256_hex;

const NAMESPACE: &str = "conf_files";
const TABLE: &str = "docs";

/// Deterministic bytes that are not all alike (every byte value occurs).
fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

async fn files_table<R: Runtime>(client: &KalamLinkClient<R>) -> String {
    client
        .execute_query(&format!("CREATE NAMESPACE IF NOT EXISTS {NAMESPACE}"))
        .await
        .expect("create namespace");
    client
        .execute_query(&format!(
            "CREATE TABLE IF NOT EXISTS {NAMESPACE}.{TABLE} (id BIGINT PRIMARY KEY, f FILE) WITH (TYPE='USER')"
        ))
        .await
        .expect("create a table with a FILE column");
    format!("{NAMESPACE}.{TABLE}")
}

fn insert(table: &str, id: i64) -> QueryRequest {
    QueryRequest::new(format!(r#"INSERT INTO {table} (id, f) VALUES ($1, FILE("doc"))"#)).param(id)
}

async fn file_of<R: Runtime>(client: &KalamLinkClient<R>, table: &str, id: i64) -> FileRef {
    let r = client
        .execute(QueryRequest::new(format!("SELECT id, f FROM {table} WHERE id = $1")).param(id))
        .await
        .expect("select the row");
    let row = r.rows().next().expect("the row");
    row.get::<FileRef>("f").expect("the FILE column reads as a FileRef")
}

/// Uploads from bytes (with progress), a path and a reader; each FileRef
/// read back has the size, name and SHA-256 of what was sent; each file
/// downloads (by its stored name) to the same bytes; a missing file is the
/// server's typed `FILE_NOT_FOUND`.
pub async fn files_upload_select_download_round_trip<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    let table = files_table(&client).await;

    // Bytes, with progress.
    let bytes = data(300 << 10, 1);
    let seen = Arc::new(Mutex::new(Vec::<UploadProgress>::new()));
    let record = seen.clone();
    let r = client
        .execute_with_files_progress(
            insert(&table, 1),
            vec![FileUpload::from_bytes("doc", "Hello World_ x.TXT", bytes.clone())],
            move |p| record.lock().unwrap().push(p),
        )
        .await
        .expect("upload from bytes");
    assert_eq!(r.results[0].row_count, 1);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 1, "progress in several steps: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].sent < w[1].sent), "monotonic: {seen:?}");
    assert!(seen.iter().all(|p| p.total == bytes.len() as u64));
    assert_eq!(
        seen.last().map(|p| p.sent),
        Some(bytes.len() as u64),
        "ends at the size"
    );

    // A path.
    let on_disk = data(100 << 10, 2);
    let path = std::env::temp_dir().join(format!("kalam-conf-{}-{}.pdf", std::process::id(), unix_now()));
    std::fs::write(&path, &on_disk).expect("write a temp file");
    client
        .execute_with_files(insert(&table, 2), vec![FileUpload::from_path("doc", &path)])
        .await
        .expect("upload from a path");
    let _ = std::fs::remove_file(&path);

    // An async reader, and a name with non-ASCII letters. (A `"` in a name
    // is sent escaped, `\"`, which the real server unescapes; the kit
    // stores the backslash, so names with quotes are left to the unit
    // tests of the framing.)
    let streamed = data(50 << 10, 3);
    let reader = futures_util::io::Cursor::new(streamed.clone());
    client
        .execute_with_files(
            insert(&table, 3),
            vec![
                FileUpload::from_reader("doc", "Ünïcødé (draft) файл.bin", reader, streamed.len() as u64)
                    .with_mime("application/x-test"),
            ],
        )
        .await
        .expect("upload from a reader");

    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    for (id, sent, name, mime) in [
        (1, &bytes, "Hello World_ x.TXT", "text/plain"),
        (2, &on_disk, name.as_str(), "application/pdf"),
        (3, &streamed, "Ünïcødé (draft) файл.bin", "application/x-test"),
    ] {
        let file = file_of(&client, &table, id).await;
        assert_eq!(file.size, sent.len() as u64, "{file:?}");
        assert_eq!(file.name, name);
        assert_eq!(file.mime, mime);
        assert_eq!(file.sha256, sha256_hex(sent), "the server hashed what was sent");
        let mut out = Vec::new();
        let n = client
            .download_file(&file, NAMESPACE, TABLE, &mut out)
            .await
            .unwrap_or_else(|e| panic!("download {}: {e}", file.stored_name()));
        assert_eq!(n, sent.len() as u64);
        assert_eq!(sha256_hex(&out), file.sha256, "downloaded bytes match");
        assert!(out == *sent);
    }

    // As a reader.
    let file = file_of(&client, &table, 1).await;
    let mut download = client
        .download_file_reader(&file, NAMESPACE, TABLE)
        .await
        .expect("download");
    assert_eq!(download.info().content_length, Some(bytes.len() as u64));
    let mut out = Vec::new();
    download.read_to_end(&mut out).await.expect("read the body");
    assert!(out == bytes);

    // A reference that says the file is smaller than what the server
    // sends (a stale or forged reference): a transport error, and the
    // writer never gets more than the reference's size.
    let mut smaller = file.clone();
    smaller.size = 10;
    let mut out = Vec::new();
    let e = client
        .download_file(&smaller, NAMESPACE, TABLE, &mut out)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
    assert!(out.len() <= 10, "{} bytes written past the reference's size", out.len());

    // A file that is not there.
    let mut missing = file.clone();
    missing.id = "1".into();
    let e = client
        .download_file(&missing, NAMESPACE, TABLE, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(e.code().map(ErrorCode::as_str), Some("FILE_NOT_FOUND"), "{e:?}");
    assert_eq!(e.server().map(|s| s.status), Some(404));

    // A reader that ends before its declared length: the upload fails (the
    // body is cut, never padded), and nothing is inserted.
    // It fails at once (well within PATIENCE, shorter than the 30 s receive
    // timeout that a hung exchange would wait for) and names the source.
    let short = futures_util::io::Cursor::new(vec![1u8; 10]);
    let e = tokio::time::timeout(
        crate::PATIENCE,
        client.execute_with_files(
            insert(&table, 4),
            vec![FileUpload::from_reader("doc", "short.bin", short, 1000)],
        ),
    )
    .await
    .expect("a failed source fails the upload at once")
    .unwrap_err();
    assert!(
        matches!(&e, Error::Transport(t) if t.to_string().contains("short.bin") && t.to_string().contains("before its declared length")),
        "{e:?}"
    );
    let r = client
        .execute(QueryRequest::new(format!("SELECT id FROM {table} WHERE id = 4")))
        .await
        .expect("select");
    assert_eq!(r.rows().count(), 0, "nothing was inserted");
}

/// Uploads over a limit are refused with typed errors before any byte is
/// sent: the proxy sees no SQL request at all.
pub async fn files_over_limits_are_refused_before_sending<R: Runtime>(b: &dyn Backend) {
    let proxy = FaultProxy::start(&b.url()).await.expect("proxy");
    let options = ConnectionOptions::default()
        .with_max_file_bytes(1024)
        .with_max_files_per_request(2);
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .connection_options(options)
        .build()
        .expect("client");
    let sql = QueryRequest::new(format!(
        r#"INSERT INTO {NAMESPACE}.{TABLE} (id, f) VALUES (1, FILE("a"))"#
    ));
    let e = client
        .execute_with_files(
            sql.clone(),
            vec![FileUpload::from_bytes("a", "big.bin", vec![0u8; 1025])],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::FileTooLarge {
                size: 1025,
                limit: 1024,
                ..
            }
        ),
        "{e:?}"
    );
    let reader = futures_util::io::Cursor::new(vec![0u8; 10]);
    let e = client
        .execute_with_files(sql.clone(), vec![FileUpload::from_reader("a", "r.bin", reader, 5000)])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::FileTooLarge { size: 5000, .. }), "{e:?}");
    let three = ["a", "b", "c"].map(|p| FileUpload::from_bytes(p, "x.txt", b"x".to_vec()));
    let e = client.execute_with_files(sql.clone(), three.into()).await.unwrap_err();
    assert!(matches!(e, Error::TooManyFiles { count: 3, limit: 2 }), "{e:?}");
    // A path that cannot be opened: the I/O error itself, with the path.
    let nowhere = std::env::temp_dir().join(format!("kalam-conf-missing-{}-{}.bin", std::process::id(), unix_now()));
    let e = client
        .execute_with_files(sql.clone(), vec![FileUpload::from_path("a", &nowhere)])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::FileSource { path, source }
            if *path == nowhere && source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    // The server's request body limit (10 MiB) by default.
    let default = root::<R>(b, &proxy.url());
    let e = default
        .execute_with_files(sql, vec![FileUpload::from_bytes("a", "big.bin", vec![0u8; 11 << 20])])
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::UploadTooLarge { limit, .. } if limit == 10 << 20),
        "{e:?}"
    );
    assert_eq!(proxy.count("/v1/api/sql"), 0, "not one upload request left the client");
}

/// The core sends an upload from bytes with a token the server finds
/// expired (the client's clock is set back, so it thinks the token good);
/// the server answers `TOKEN_EXPIRED`, the refresher is called once, and the
/// same body is sent again and runs once. The file (8 MiB) is far larger
/// than the sockets' buffers: the server answers before it has read the
/// body and then closes, so the client must take that early answer rather
/// than fail on the broken pipe of the unread body.
pub async fn files_token_expired_upload_is_sent_again<R: Runtime>(b: &dyn Backend) {
    use kalam_proto::{AuthOutput, Operation, Reply, RequestKind, Segment, UploadFile, UploadRequest};

    let client = root::<R>(b, &b.url());
    let table = files_table(&client).await;
    let proxy = FaultProxy::start(&b.url()).await.expect("proxy");
    let (mut m, now, http) = machine_behind_an_expired_token::<R>(b, &proxy.url());
    let calls = Arc::new(AtomicUsize::new(0));
    let file = data(8 << 20, 4);
    let op = m.submit(
        Operation::Upload(UploadRequest {
            query: insert(&table, 7),
            files: vec![UploadFile {
                placeholder: "doc".into(),
                filename: "retry.bin".into(),
                mime: "application/octet-stream".into(),
                len: file.len() as u64,
            }],
            replayable: true,
            sources: 1,
        }),
        now,
    );
    let password = b.root_password();
    let result = loop {
        match m.poll_output() {
            Some(AuthOutput::TransmitUpload { id, request, plan }) => {
                let chunks: Vec<std::io::Result<Vec<u8>>> = plan
                    .segments
                    .iter()
                    .map(|s| match s {
                        Segment::Framed(b) => Ok(b.clone()),
                        Segment::File { .. } => Ok(file.clone()),
                    })
                    .collect();
                let body: BodyChunks = Box::pin(futures_util::stream::iter(chunks));
                let response = R::send_streaming(http.clone(), request, Some((body, plan.content_length)))
                    .await
                    .expect("HTTP exchange");
                let (parts, mut reader) = response.into_parts();
                let mut answer = Vec::new();
                reader.read_to_end(&mut answer).await.expect("answer body");
                let decoded = kalam_proto::decode(RequestKind::Upload, parts.status, &parts.headers, &answer);
                m.handle_decoded(id, decoded, now);
            }
            Some(AuthOutput::Transmit { id, request, .. }) => {
                let response = R::send_http(http.clone(), request).await.expect("HTTP exchange");
                m.handle_response(id, &response, now);
            }
            Some(AuthOutput::FetchCredentials { id, .. }) => {
                calls.fetch_add(1, Ordering::SeqCst);
                let login = client
                    .login("root", &password)
                    .await
                    .map(|l| AuthProvider::jwt_token(l.access_token));
                m.handle_credentials(id, login, now);
            }
            Some(AuthOutput::Warning(_)) => {} // a clock-skew warning
            Some(AuthOutput::NodeChanged(_)) => panic!("one node: nothing to move to"),
            Some(AuthOutput::Done { op: done, result }) => {
                assert_eq!(done, op);
                break result;
            }
            None => panic!("the machine stalled"),
        }
    };
    assert!(matches!(result, Ok(Reply::Query(_))), "{result:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one refresher call");
    assert_eq!(
        proxy.count("/v1/api/sql"),
        2,
        "sent, refused TOKEN_EXPIRED, sent again once"
    );
    let stored = file_of(&client, &table, 7).await;
    assert_eq!(stored.sha256, sha256_hex(&file));
    let r = client
        .execute_query(&format!("SELECT id FROM {table} WHERE id = 7"))
        .await
        .expect("select");
    assert_eq!(r.rows().count(), 1, "the row exists once");
}

/// On the client's own driver (kit only: it can expire every token it
/// issued): after `TOKEN_EXPIRED`, an upload from bytes is sent again, and
/// an upload from a reader is sent once and answered
/// [`Error::UploadNotReplayable`] with the token renewed, so the next
/// request goes through without another login.
pub async fn files_token_expired_on_the_client<R: Runtime>(server: &crate::TestServer) {
    let client = crate::builder::<R>()
        .base_url(server.url())
        .auth(AuthProvider::basic_auth("root".into(), server.root_password().into()))
        .build()
        .expect("client");
    client.execute_query("SELECT 1").await.expect("log in");
    let sql = QueryRequest::new(format!(
        r#"INSERT INTO {NAMESPACE}.{TABLE} (id, f) VALUES (1, FILE("doc"))"#
    ));

    // From a reader: sent once, refused, not sent again.
    server.force_expire_all();
    let before = server.counters();
    let reader = futures_util::io::Cursor::new(vec![7u8; 1000]);
    let e = client
        .execute_with_files(sql.clone(), vec![FileUpload::from_reader("doc", "r.bin", reader, 1000)])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UploadNotReplayable), "{e:?}");
    let after = server.counters();
    assert_eq!(after.queries, before.queries + 1, "the upload left once");
    assert_eq!(
        after.logins,
        before.logins + 1,
        "the token was renewed (the refresh token had expired too)"
    );
    client.execute_query("SELECT 1").await.expect("the renewed token works");
    assert_eq!(server.counters().logins, after.logins, "no further login");

    // From bytes: sent again with the renewed token.
    server.force_expire_all();
    let before = server.counters();
    let result = client
        .execute_with_files(sql, vec![FileUpload::from_bytes("doc", "b.bin", vec![7u8; 1000])])
        .await;
    assert!(!result.as_ref().is_err_and(Error::is_token_expired), "{result:?}");
    assert_eq!(
        server.counters().queries,
        before.queries + 2,
        "refused, then sent again once"
    );
}

/// A download whose body is still being read holds its connection, and so
/// its place under `http_max_connections`: with a cap of 1, a second
/// download waits until the first body is read, and the two share one
/// connection (before, each unread body held a connection of its own,
/// outside the cap).
pub async fn files_a_streaming_download_counts_against_the_cap<R: Runtime>(b: &dyn Backend) {
    let direct = root::<R>(b, &b.url());
    let table = files_table(&direct).await;
    let bytes = data(64 << 10, 3);
    direct
        .execute_with_files(
            insert(&table, 7),
            vec![FileUpload::from_bytes("doc", "capped.bin", bytes.clone())],
        )
        .await
        .expect("upload");
    let file = file_of(&direct, &table, 7).await;
    let proxy = FaultProxy::start(&b.url()).await.expect("proxy");
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .connection_options(ConnectionOptions::default().with_http_max_connections(1))
        .build()
        .expect("client");
    client.execute_query("SELECT 1").await.expect("warm: one connection");
    let mut first = client
        .download_file_reader(&file, NAMESPACE, TABLE)
        .await
        .expect("first download");
    let second = {
        let client = client.clone();
        let file = file.clone();
        tokio::spawn(async move {
            let mut d = client.download_file_reader(&file, NAMESPACE, TABLE).await?;
            let mut out = Vec::new();
            d.read_to_end(&mut out)
                .await
                .map_err(|e| Error::Runtime(e.to_string()))?;
            Ok::<_, Error>(out)
        })
    };
    let mut out = Vec::new();
    first.read_to_end(&mut out).await.expect("read the first body");
    assert!(out == bytes);
    let out = tokio::time::timeout(crate::PATIENCE, second)
        .await
        .expect("the second download goes once the first body is read")
        .expect("task")
        .expect("second download");
    assert!(out == bytes);
    assert_eq!(proxy.connections(), 1, "one connection, as the cap says");
}
