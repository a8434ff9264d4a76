//! The server answers an upload before reading its body (it checks the
//! token first) and closes the connection. The connection is never used
//! again: the next request goes on a new one and is answered, rather than
//! being written into a connection whose peer is gone.

use kalam_tokio::{FileUpload, KalamLinkClient, QueryRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const REFUSED: &str = r#"{"error":{"code":"INVALID_CREDENTIALS","message":"Invalid credentials"},"results":[],"status":"error","took":0.1}"#;
const ONE: &str = r#"{"status":"success","results":[{"schema":[{"name":"x","data_type":"Int","index":0}],"rows":[[1]],"row_count":1}],"took":1.0}"#;

/// Reads a request's head; returns it.
async fn head(socket: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the head");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn answer(socket: &mut TcpStream, status: &str, body: &str) {
    let text = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(text.as_bytes()).await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_closed_after_an_early_answer_is_not_reused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        // The upload: refused on its head, then the connection is dropped
        // with most of the body unread.
        let (mut first, _) = listener.accept().await.unwrap();
        let upload = head(&mut first).await;
        assert!(upload.starts_with("POST /v1/api/sql"), "{upload}");
        answer(&mut first, "401 Unauthorized", REFUSED).await;
        drop(first);
        // The query that follows: on a new connection.
        let (mut second, _) = listener.accept().await.unwrap();
        let query = head(&mut second).await;
        answer(&mut second, "200 OK", ONE).await;
        query
    });
    let client = KalamLinkClient::builder()
        .base_url(&url)
        .jwt_token("a.b.c")
        .build()
        .unwrap();
    let big = vec![b'x'; 8 << 20];
    let sql = QueryRequest::new(r#"INSERT INTO n.t (id, f) VALUES (1, FILE("doc"))"#);
    let refused = client
        .execute_with_files(sql, vec![FileUpload::from_bytes("doc", "a.bin", big)])
        .await
        .expect_err("refused");
    assert!(refused.is_credentials_rejected(), "{refused}");
    // At once, before the driver had any reason to look at the old
    // connection again.
    client.set_auth(kalam_tokio::AuthProvider::jwt_token("d.e.f".to_owned()));
    let r = client
        .execute_query("SELECT 1")
        .await
        .expect("answered on a new connection");
    assert_eq!(r.rows().count(), 1);
    let query = server.await.unwrap();
    assert!(query.starts_with("POST /v1/api/sql"), "{query}");
}
