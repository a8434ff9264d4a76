//! FILE uploads on the client's own driver after `TOKEN_EXPIRED`, on Tokio,
//! against the test kit (which can expire every token it issued).

use kalam_conformance::{TestServer, files};
use kalam_tokio::rt::Tokio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_token_expired_on_the_client() {
    let server = TestServer::start().await;
    files::files_token_expired_on_the_client::<Tokio>(&server).await;
    server.shutdown().await;
}

/// The multipart boundary of an upload: read from the head of the request
/// a bare listener receives (the upload then fails; only the head counts).
async fn boundary_of_an_upload(reconnect_seed: u64) -> String {
    use kalam_tokio::{FileUpload, KalamLinkClient, QueryRequest};
    use tokio::io::AsyncReadExt as _;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let client = KalamLinkClient::builder()
        .base_url(&url)
        .jwt_token("a.b.c")
        .reconnect_seed(reconnect_seed)
        .build()
        .unwrap();
    let upload = tokio::spawn(async move {
        let sql = QueryRequest::new(r#"INSERT INTO n.t (id, f) VALUES (1, FILE("doc"))"#);
        client
            .execute_with_files(sql, vec![FileUpload::from_bytes("doc", "a.txt", b"hello".to_vec())])
            .await
    });
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before the head");
        head.extend_from_slice(&buf[..n]);
    }
    drop(socket);
    let _ = upload.await;
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-type: multipart/form-data; boundary="))
        .unwrap_or_else(|| panic!("no multipart content type in {head}"))
        .trim()
        .to_owned()
}

/// `reconnect_seed` fixes the reconnect jitter (for tests); it must not make
/// the multipart boundaries predictable, or a file written to contain the
/// boundary could end its part early and add parts of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_reconnect_seed_leaves_upload_boundaries_unpredictable() {
    let a = boundary_of_an_upload(7).await;
    let b = boundary_of_an_upload(7).await;
    assert_ne!(a, b, "two clients with the same reconnect seed framed uploads alike");
}

/// A file downloaded into a `tokio::fs::File`, and read from a download's
/// body with `tokio::io::copy`: Tokio's I/O types through `compat`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_work_with_tokio_io() {
    use kalam_tokio::{AuthProvider, FileRef, FileUpload, KalamLinkClient, QueryRequest, compat};

    let server = TestServer::start().await;
    let client = KalamLinkClient::builder()
        .base_url(server.url())
        .auth(AuthProvider::system_user_auth(server.root_password().to_owned()))
        .build()
        .unwrap();
    client
        .execute_query("CREATE NAMESPACE IF NOT EXISTS tio")
        .await
        .unwrap();
    client
        .execute_query("CREATE TABLE IF NOT EXISTS tio.docs (id BIGINT PRIMARY KEY, f FILE) WITH (TYPE='USER')")
        .await
        .unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    client
        .execute_with_files(
            QueryRequest::new(r#"INSERT INTO tio.docs (id, f) VALUES (1, FILE("doc"))"#),
            vec![FileUpload::from_bytes("doc", "data.bin", data.clone())],
        )
        .await
        .unwrap();
    let r = client
        .execute_query("SELECT f FROM tio.docs WHERE id = 1")
        .await
        .unwrap();
    let file: FileRef = r.rows().next().unwrap().get("f").unwrap();

    let dir = std::env::temp_dir().join(format!("kalam-tokio-io-{}", std::process::id()));
    tokio::fs::create_dir_all(&dir).await.unwrap();
    let path = dir.join("copy.bin");
    let mut out = tokio::fs::File::create(&path).await.unwrap();
    let n = client
        .download_file(&file, "tio", "docs", &mut compat(&mut out))
        .await
        .unwrap();
    drop(out);
    assert_eq!(n, data.len() as u64);
    assert_eq!(tokio::fs::read(&path).await.unwrap(), data);

    let body = client.download_file_reader(&file, "tio", "docs").await.unwrap();
    let mut copied = Vec::new();
    tokio::io::copy(&mut compat(body), &mut copied).await.unwrap();
    assert_eq!(copied, data);
    let _ = tokio::fs::remove_dir_all(&dir).await;
    server.shutdown().await;
}
