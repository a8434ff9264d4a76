//! FILE columns (PROTOCOL §3.6): multipart `POST /v1/api/sql`, the FileRef
//! JSON in the column, `GET /v1/files/…`, and their errors.
//!
//! One exchange runs against the kit with its assertions; the same
//! exchange against the real server (`files_match_the_real_server`, ignored
//! in a plain `cargo test`) must pass the same assertions and give answers
//! of the same shape.

mod support;

use kalam_testkit::{TestServer, stored_name};
use serde_json::{Value, json};
use support::{Cmp, Http, Recorder, Reply, Step, exchange_matches_real, expired_token};

/// One part of a multipart body: name, optional (filename, content type), data.
type PartSpec<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a [u8]);

/// A `multipart/form-data` body and its content type.
fn multipart(parts: &[PartSpec<'_>]) -> (String, Vec<u8>) {
    let boundary = "kalam-testkit-boundary-7d9f";
    let mut body = Vec::new();
    for (name, file, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some((filename, ctype)) = file {
            body.extend_from_slice(format!("; filename=\"{filename}\"\r\nContent-Type: {ctype}").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Recorder {
    /// A multipart `POST /v1/api/sql` as `token`.
    async fn upload(&mut self, token: &str, cmp: Cmp, parts: &[PartSpec<'_>]) -> &Reply {
        let (ctype, body) = multipart(parts);
        let auth = format!("Bearer {token}");
        let headers = [("authorization", auth.as_str()), ("content-type", ctype.as_str())];
        let reply = self.http.send("POST", "/v1/api/sql", &headers, body).await;
        let label = format!("multipart {:?}", parts.iter().map(|p| p.0).collect::<Vec<_>>());
        self.record(label, cmp, reply)
    }

    /// `GET path` with an optional Bearer token.
    async fn get(&mut self, token: Option<&str>, path: &str) -> &Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let reply = self.http.send("GET", path, &headers, Vec::new()).await;
        self.record(format!("GET {path}"), Cmp::Exact, reply)
    }
}

/// The FileRef JSON in column `f` of the first row (column 1).
fn file_ref(r: &Reply, row: usize) -> Value {
    let cell = r.rows()[row][1].clone();
    serde_json::from_str(cell.as_str().expect("FILE cells are strings")).expect("FileRef JSON")
}

const HELLO: &[u8] = b"hello world\n";
const HELLO_SHA256: &str = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";

async fn exchange(base: &str) -> Vec<Step> {
    let http = Http::new(base);
    let token = |v: Value| v["access_token"].as_str().expect("token").to_owned();
    let root = token(http.login("root", "kalamdb123").await);
    let mut run = Recorder::new(http.clone());
    run.ok(&root, "CREATE NAMESPACE fx").await;
    run.ok(&root, "CREATE SHARED TABLE fx.docs (id BIGINT PRIMARY KEY, f FILE)")
        .await;
    run.ok(&root, "CREATE USER TABLE fx.mine (id BIGINT PRIMARY KEY, f FILE)")
        .await;
    run.ok(&root, "CREATE USER 'bob' WITH PASSWORD 'password123' ROLE user")
        .await;
    run.ok(&root, "CREATE USER 'svc' WITH PASSWORD 'password123' ROLE service")
        .await;
    let bob = token(http.login("bob", "password123").await);
    let svc = token(http.login("svc", "password123").await);

    // Upload, read the FileRef back, download it.
    let sql = r#"INSERT INTO fx.docs (id, f) VALUES (1, FILE("doc"))"#;
    let r = run
        .upload(
            &root,
            Cmp::Exact,
            &[
                ("sql", None, sql.as_bytes()),
                ("file:doc", Some(("My Hello_File.TXT", "text/plain")), HELLO),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["message"], "Inserted 1 row(s)");
    let r = run.ok(&root, "SELECT id, f FROM fx.docs").await;
    assert_eq!(r.json()["results"][0]["schema"][1]["data_type"], "File");
    let f = file_ref(r, 0);
    let keys: Vec<&String> = f.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["id", "sub", "name", "size", "mime", "sha256"]);
    assert_eq!(
        (&f["sub"], &f["name"], &f["size"], &f["mime"], &f["sha256"]),
        (
            &json!("f0001"),
            &json!("My Hello_File.TXT"),
            &json!(12),
            &json!("text/plain"),
            &json!(HELLO_SHA256)
        )
    );
    let id = f["id"].as_str().expect("id is a string").to_owned();
    let stored = stored_name(&id, "My Hello_File.TXT");
    assert_eq!(stored, format!("{id}-my-hello-file.txt"));
    let path = format!("/v1/files/fx/docs/f0001/{stored}");
    let r = run.get(Some(&root), &path).await;
    assert_eq!((r.status, r.body.as_ref()), (200, HELLO));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(
        r.header("content-disposition").map(str::to_owned),
        Some(format!("inline; filename=\"{stored}\""))
    );
    let r = run.get(Some(&svc), &path).await;
    assert_eq!(r.status, 200, "a service may read a shared table's files");

    // Parts without a filename or a content type: the name is the
    // placeholder, the type comes from the first bytes or the name.
    let png: &[u8] = b"\x89PNG\r\n\x1a\n12345678";
    let sql = br#"INSERT INTO fx.docs (id, f) VALUES (2, FILE("doc")), (3, FILE("pic"))"#;
    let r = run
        .upload(
            &root,
            Cmp::Exact,
            &[("sql", None, sql), ("file:doc", None, HELLO), ("file:pic", None, png)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = run
        .ok(&root, "SELECT id, f FROM fx.docs WHERE id > 1 ORDER BY id")
        .await;
    let (doc, pic) = (file_ref(r, 0), file_ref(r, 1));
    assert_eq!(
        (&doc["name"], &doc["mime"]),
        (&json!("doc"), &json!("application/msword"))
    );
    assert_eq!((&pic["name"], &pic["mime"]), (&json!("pic"), &json!("image/png")));
    let pic_path = format!(
        "/v1/files/fx/docs/f0001/{}",
        stored_name(pic["id"].as_str().expect("id"), "pic")
    );
    assert!(pic_path.ends_with("-pic.bin"));
    let r = run.get(Some(&root), &pic_path).await;
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("application/octet-stream"))
    );

    // Download errors.
    let r = run.get(None, &path).await;
    assert_eq!((r.status, r.code()), (401, "MISSING_AUTHORIZATION".to_owned()));
    let r = run.get(Some(&expired_token("root", "system")), &path).await;
    assert_eq!((r.status, r.code()), (401, "TOKEN_EXPIRED".to_owned()));
    let r = run.get(Some(&root), &format!("/v1/files/fx/docs/f0001/{id}.txt")).await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"code": "FILE_NOT_FOUND", "error": "File not found"}))
    );
    let r = run.get(Some(&root), "/v1/files/fx/nope/f0001/x.txt").await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "Table 'fx:nope' not found"}))
    );
    let r = run.get(Some(&bob), &path).await;
    assert_eq!((r.status, r.code()), (403, "PERMISSION_DENIED".to_owned()));
    let r = run.get(Some(&root), "/v1/files/fx/docs/f001/x.txt").await;
    assert_eq!((r.status, r.code()), (400, "INVALID_INPUT".to_owned()));
    let r = run.get(Some(&root), &format!("{path}?user_id=bob")).await;
    assert_eq!((r.status, r.code()), (400, "INVALID_INPUT".to_owned()));

    // Upload errors.
    let r = run
        .sql(&root, Cmp::Exact, "INSERT INTO fx.docs (id, f) VALUES (2, FILE('doc'))")
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (
            400,
            json!({"code": "INVALID_INPUT", "message": "FILE placeholders require multipart/form-data"})
        )
    );
    let two =
        br#"INSERT INTO fx.docs (id, f) VALUES (2, FILE("doc")); INSERT INTO fx.docs (id, f) VALUES (3, FILE("doc"))"#;
    let hello_part: PartSpec<'_> = ("file:doc", Some(("hello.txt", "text/plain")), HELLO);
    let r = run.upload(&root, Cmp::Exact, &[("sql", None, two), hello_part]).await;
    assert_eq!(
        (r.status, r.json()["error"]["message"].clone()),
        (400, json!("File uploads require a single SQL statement"))
    );
    let missing = br#"INSERT INTO fx.docs (id, f) VALUES (2, FILE("other"))"#;
    // The server's "Did you mean …?" varies between runs: shapes only.
    let r = run
        .upload(&root, Cmp::Shape, &[("sql", None, missing), hello_part])
        .await;
    assert_eq!((r.status, r.code()), (400, "SQL_EXECUTION_ERROR".to_owned()));
    let r = run
        .upload(&root, Cmp::Exact, &[("sql", None, b"SELECT 1"), hello_part])
        .await;
    assert_eq!((r.status, r.code()), (400, "INVALID_INPUT".to_owned()));
    let nope = br#"INSERT INTO fx.nope (id, f) VALUES (2, FILE("doc"))"#;
    let r = run.upload(&root, Cmp::Exact, &[("sql", None, nope), hello_part]).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (
            400,
            json!({"code": "TABLE_NOT_FOUND", "message": "Table 'fx:nope' not found"})
        )
    );
    let r = run.upload(&root, Cmp::Exact, &[("sql", None, b" "), hello_part]).await;
    assert_eq!((r.status, r.code()), (400, "EMPTY_SQL".to_owned()));
    let r = run
        .upload(
            &root,
            Cmp::Exact,
            &[("sql", None, b"SELECT 1"), ("params", None, b"{}")],
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["message"].clone()),
        (400, json!("Params must be a JSON array"))
    );
    let names: Vec<String> = (0..21).map(|i| format!("file:f{i}")).collect();
    let mut many: Vec<PartSpec<'_>> = vec![("sql", None, br#"INSERT INTO fx.docs (id, f) VALUES (9, FILE("f0"))"#)];
    many.extend(names.iter().map(|n| (n.as_str(), Some(("a.txt", "text/plain")), HELLO)));
    let r = run.upload(&root, Cmp::Exact, &many).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (
            400,
            json!({"code": "TOO_MANY_FILES", "message": "Too many files: maximum 20 allowed"})
        )
    );
    let dup = br#"INSERT INTO fx.docs (id, f) VALUES (1, FILE("doc"))"#;
    let r = run.upload(&root, Cmp::Shape, &[("sql", None, dup), hello_part]).await;
    assert_eq!((r.status, r.code()), (400, "SQL_EXECUTION_ERROR".to_owned()));
    let sql = br#"INSERT INTO fx.docs (id, f) VALUES (5, FILE("doc"))"#;
    let r = run.upload(&bob, Cmp::Exact, &[("sql", None, sql), hello_part]).await;
    assert_eq!((r.status, r.code()), (403, "PERMISSION_DENIED".to_owned()));

    // A USER table: the file belongs to its writer.
    let sql = br#"INSERT INTO fx.mine (id, f) VALUES ($1, FILE('a'))"#;
    let r = run
        .upload(
            &bob,
            Cmp::Exact,
            &[
                ("sql", None, sql),
                ("params", None, b"[5]"),
                ("file:a", Some(("bob notes.md", "text/markdown")), HELLO),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = run.ok(&bob, "SELECT id, f FROM fx.mine").await;
    let f = file_ref(r, 0);
    assert_eq!(
        (&f["name"], &f["mime"]),
        (&json!("bob notes.md"), &json!("text/markdown"))
    );
    let stored = stored_name(f["id"].as_str().expect("id"), "bob notes.md");
    let path = format!("/v1/files/fx/mine/{}/{stored}", f["sub"].as_str().expect("sub"));
    let r = run.get(Some(&bob), &path).await;
    assert_eq!((r.status, r.body.as_ref()), (200, HELLO));
    let r = run.get(Some(&root), &path).await;
    assert_eq!(r.status, 404, "root's own rows have no such file");
    let r = run.get(Some(&root), &format!("{path}?user_id=bob")).await;
    assert_eq!(r.status, 200);
    let r = run.get(Some(&svc), &format!("{path}?user_id=bob")).await;
    assert_eq!(r.status, 200, "a service may read a user's file");
    let r = run.get(Some(&bob), &format!("{path}?user_id=svc")).await;
    assert_eq!((r.status, r.code()), (403, "PERMISSION_DENIED".to_owned()));

    // EXECUTE AS USER: the file belongs to the target; not on SHARED tables.
    let sql = br#"EXECUTE AS USER 'bob' (INSERT INTO fx.mine (id, f) VALUES (6, FILE("doc")))"#;
    let r = run.upload(&root, Cmp::Exact, &[("sql", None, sql), hello_part]).await;
    assert_eq!(
        (r.status, r.json()["results"][0]["as_user"].clone()),
        (200, json!("bob")),
        "{}",
        r.text()
    );
    let r = run.ok(&bob, "SELECT id, f FROM fx.mine WHERE id = 6").await;
    let f = file_ref(r, 0);
    let path = format!(
        "/v1/files/fx/mine/{}/{}",
        f["sub"].as_str().expect("sub"),
        stored_name(f["id"].as_str().expect("id"), "hello.txt")
    );
    let r = run.get(Some(&bob), &path).await;
    assert_eq!((r.status, r.body.as_ref()), (200, HELLO));
    let sql = br#"EXECUTE AS USER 'bob' (INSERT INTO fx.docs (id, f) VALUES (7, FILE("doc")))"#;
    let r = run.upload(&root, Cmp::Exact, &[("sql", None, sql), hello_part]).await;
    assert_eq!((r.status, r.code()), (400, "SQL_EXECUTION_ERROR".to_owned()));
    run.steps
}

#[tokio::test]
async fn files_upload_read_back_and_download() {
    let server = TestServer::start().await;
    let steps = exchange(&server.url()).await;
    let count = |prefix: &str| steps.iter().filter(|s| s.label.starts_with(prefix)).count();
    let c = server.counters();
    assert_eq!((c.uploads, c.downloads), (count("multipart"), count("GET /v1/files/")));
    server.shutdown().await;
}

#[tokio::test]
async fn the_per_file_limit_is_a_builder_knob() {
    let server = TestServer::builder().max_file_size(4).start().await;
    let http = Http::new(&server.url());
    let root = http.login("root", "kalamdb123").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    http.ok(&root, "CREATE NAMESPACE fx").await;
    http.ok(&root, "CREATE SHARED TABLE fx.docs (id BIGINT PRIMARY KEY, f FILE)")
        .await;
    let sql = br#"INSERT INTO fx.docs (id, f) VALUES (1, FILE("doc"))"#;
    let send = |data: &'static [u8]| {
        let (ctype, body) = multipart(&[("sql", None, sql), ("file:doc", Some(("a.txt", "text/plain")), data)]);
        let (http, auth) = (http.clone(), format!("Bearer {root}"));
        async move {
            http.send(
                "POST",
                "/v1/api/sql",
                &[("authorization", &auth), ("content-type", &ctype)],
                body,
            )
            .await
        }
    };
    let r = send(b"12345").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (
            400,
            json!({"code": "FILE_TOO_LARGE", "message": "File 'a.txt' exceeds maximum size of 4 bytes"})
        )
    );
    let r = send(b"1234").await;
    assert_eq!(r.status, 200, "{}", r.text());
    server.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the real KalamDB server (../shared/kalamdb-server): cargo test -p kalam-testkit --test files -- --ignored"]
async fn files_match_the_real_server() {
    exchange_matches_real(|url| async move { exchange(&url).await }, |_, _, _| {}).await;
}
