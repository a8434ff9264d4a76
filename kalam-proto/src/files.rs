//! FILE columns (PROTOCOL §3.6): the [`FileRef`] a FILE cell holds, the
//! download path built from it, the multipart framing of an upload, and the
//! limits checked before anything is sent.
//!
//! An upload's body is too large to frame in memory and its data belongs to
//! the application (a path, bytes, an async reader), so the core frames
//! only what it writes itself: an upload leaves the core as an
//! [`UploadPlan`], a list of [`Segment`]s, "these framed bytes" or "file
//! part *i*, *n* bytes", which the driver streams in order from the
//! caller's sources. The plan knows the body's exact length, so the request
//! carries a `Content-Length` and the limits are checked before the first
//! byte leaves.
//!
//! Retries: an upload answered `TOKEN_EXPIRED` is sent again after the
//! token is renewed, like a query, when its data can be read again (paths
//! and bytes: [`UploadRequest::replayable`]). Data from an async reader is
//! gone once sent: the core then renews the token (the next upload will not
//! meet the same refusal) and answers [`Error::UploadNotReplayable`], which
//! says the upload was not sent twice.

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::{DecodeError, Error, Result};
use crate::framing::{Endpoints, QueryRequest};
use crate::ops::RequestKind;
use crate::options::ConnectionOptions;
use crate::types::FromValue;

/// A FILE column's value: the server stores this JSON as the cell's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The file's id (a snowflake, as a string).
    pub id: String,
    /// The storage subfolder (`f0001`…).
    pub sub: String,
    /// The name the file was uploaded with.
    pub name: String,
    /// Its size in bytes.
    #[serde(deserialize_with = "u64_or_string")]
    pub size: u64,
    /// Its MIME type, as uploaded.
    pub mime: String,
    /// The SHA-256 of its bytes, lower-case hex.
    pub sha256: String,
    /// The shard, when the table is sharded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
}

fn u64_or_string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64().ok_or_else(|| serde::de::Error::custom("size is not a u64")),
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        _ => Err(serde::de::Error::custom("size is not a number")),
    }
}

/// Longest sanitised name in a stored name.
const MAX_STORED_STEM: usize = 50;
/// Longest extension kept in a stored name.
const MAX_EXTENSION: usize = 10;

impl FileRef {
    /// Reads a FILE cell's text (FileRef JSON).
    pub fn parse(text: &str) -> Result<FileRef> {
        serde_json::from_str(text).map_err(|e| DecodeError::new(0, "FileRef", e).into())
    }

    /// The name the server stores the file under (PROTOCOL §3.6):
    /// `<id>-<sanitised name>.<ext>`, or `<id>.<ext>` when nothing of the
    /// name survives. The name (before its last `.`) is lower-cased; ASCII
    /// letters and digits are kept, each run of spaces, `_` and `-` becomes
    /// one `-`, everything else is dropped; no `-` at either end; at most 50
    /// characters. The extension (after the last `.`) is lower-cased and
    /// kept when it is at most 10 ASCII letters and digits (an empty one
    /// after a final `.` included), else it is `bin`; a name without a `.`
    /// gets `bin`.
    pub fn stored_name(&self) -> String {
        let (stem, ext) = match self.name.rsplit_once('.') {
            Some((stem, ext)) => (stem, ext.to_ascii_lowercase()),
            None => (self.name.as_str(), String::new()),
        };
        let ext_ok =
            self.name.contains('.') && ext.len() <= MAX_EXTENSION && ext.bytes().all(|b| b.is_ascii_alphanumeric());
        let ext = if ext_ok { ext } else { "bin".to_owned() };
        let mut clean = String::with_capacity(stem.len());
        for c in stem.chars() {
            if c.is_ascii_alphanumeric() {
                clean.push(c.to_ascii_lowercase());
            } else if matches!(c, ' ' | '_' | '-') && !clean.is_empty() && !clean.ends_with('-') {
                clean.push('-');
            }
        }
        clean.truncate(MAX_STORED_STEM); // ASCII only: any index is a char boundary
        let clean = clean.trim_end_matches('-');
        if clean.is_empty() {
            format!("{}.{ext}", self.id)
        } else {
            format!("{}-{clean}.{ext}", self.id)
        }
    }

    /// The download path, `/v1/files/{namespace}/{table}/{sub}/{stored_name}`
    /// (not the bare id the official client uses, which the server answers
    /// 404). Refused with [`Error::InvalidInput`] when the namespace, the
    /// table or the reference's own parts are not plain identifiers (they
    /// become path segments).
    pub fn download_path(&self, namespace: &str, table: &str) -> Result<String> {
        for (what, part) in [
            ("namespace", namespace),
            ("table", table),
            ("file id", self.id.as_str()),
            ("file subfolder", self.sub.as_str()),
        ] {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(Error::InvalidInput(format!(
                    "the {what} {part:?} is not a plain identifier (ASCII letters, digits, `_`)"
                )));
            }
        }
        Ok(format!(
            "{FILES_ROUTE}{namespace}/{table}/{}/{}",
            self.sub,
            self.stored_name()
        ))
    }

    /// Like [`download_path`](Self::download_path), reading another user's
    /// file of a USER table (`?user_id=`; admin roles only).
    pub fn download_path_for_user(&self, namespace: &str, table: &str, user_id: &str) -> Result<String> {
        if user_id.is_empty()
            || !user_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::InvalidInput(format!(
                "the user id {user_id:?} is not a plain identifier"
            )));
        }
        Ok(format!("{}?user_id={user_id}", self.download_path(namespace, table)?))
    }
}

impl<'a> FromValue<'a> for FileRef {
    const EXPECTED: &'static str = "a FILE value (FileRef JSON)";
    fn from_value(v: &'a Value) -> Option<Self> {
        match v {
            Value::String(s) => FileRef::parse(s).ok(),
            Value::Object(_) => FileRef::deserialize(v).ok(),
            _ => None,
        }
    }
}

/// The limits checked before an upload is sent. The defaults are the
/// server's (PROTOCOL §6): 25 MiB per file, 20 files per request, and a
/// request body of at most 10 MiB (the server answers a larger
/// `Content-Length` with `413 BODY_TOO_LARGE` before reading it, so with
/// its default settings no single request carries more than 10 MiB of files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// Largest file.
    pub max_file_bytes: u64,
    /// Most files in one request.
    pub max_files: usize,
    /// Largest request body (files and framing).
    pub max_body_bytes: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits::from_options(&ConnectionOptions::default())
    }
}

impl FileLimits {
    /// The limits in the client's options.
    pub fn from_options(options: &ConnectionOptions) -> Self {
        FileLimits {
            max_file_bytes: options.max_file_bytes,
            max_files: options.max_files_per_request,
            max_body_bytes: options.max_upload_body_bytes,
        }
    }
}

/// One file of an upload, as the core sees it: its placeholder, the name
/// and MIME type it is stored with, and its exact length. The data stays
/// with the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadFile {
    /// The `FILE("placeholder")` the SQL refers to it by.
    pub placeholder: String,
    /// The name it is stored under (the part's filename).
    pub filename: String,
    /// Its MIME type (the part's `Content-Type`).
    pub mime: String,
    /// Its exact length in bytes.
    pub len: u64,
}

/// A SQL request with files (`multipart/form-data` to `/v1/api/sql`).
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRequest {
    /// The statement (exactly one), its parameters and namespace.
    pub query: QueryRequest,
    /// The files, in the order of their parts.
    pub files: Vec<UploadFile>,
    /// Whether the data can be read again for a second attempt (paths and
    /// bytes can; an async reader cannot).
    pub replayable: bool,
    /// The driver's name for the data's sources, echoed in the
    /// [`UploadPlan`].
    pub sources: u64,
}

/// A piece of an upload's body.
#[derive(Clone, PartialEq, Eq)]
pub enum Segment {
    /// Bytes the core framed (part headers, the text parts, the boundaries).
    Framed(Vec<u8>),
    /// The data of file `index` of the request: exactly `len` bytes.
    File {
        /// Index into [`UploadRequest::files`].
        index: usize,
        /// Its length.
        len: u64,
    },
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Segment::Framed(b) => write!(f, "Framed(<{} bytes>)", b.len()),
            Segment::File { index, len } => write!(f, "File {{ index: {index}, len: {len} }}"),
        }
    }
}

/// An upload's body, for the driver to stream: the segments in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPlan {
    /// [`UploadRequest::sources`].
    pub sources: u64,
    /// The multipart boundary.
    pub boundary: String,
    /// The body, in order.
    pub segments: Vec<Segment>,
    /// The body's exact length (the request's `Content-Length`).
    pub content_length: u64,
    /// The files' bytes among it (what upload progress counts to).
    pub file_bytes: u64,
}

/// A multipart boundary from the core's seed and a per-request number:
/// 128 bits of a seeded generator, so it cannot be guessed by whoever
/// wrote a file and is checked against every byte the core frames.
pub fn boundary(seed: u64, n: u64) -> String {
    let a = splitmix(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let b = splitmix(a ^ n);
    format!("kalam-{a:016x}{b:016x}")
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Checks an upload's files against the limits and what the server
/// accepts, before anything is sent: [`Error::TooManyFiles`],
/// [`Error::FileTooLarge`], and [`Error::InvalidInput`] for no files, a
/// placeholder used twice or holding quotes, backslashes, parentheses or
/// control characters, a filename with control characters, and a MIME type
/// that is not a header value. [`multipart_plan`] runs it, then checks the
/// SQL as for a query and the framed body's size ([`Error::UploadTooLarge`]).
pub fn check_upload(upload: &UploadRequest, limits: &FileLimits) -> Result<()> {
    if upload.files.is_empty() {
        return Err(Error::InvalidInput(
            "an upload needs at least one file (use a query otherwise)".into(),
        ));
    }
    if upload.files.len() > limits.max_files {
        return Err(Error::TooManyFiles {
            count: upload.files.len(),
            limit: limits.max_files,
        });
    }
    for (i, f) in upload.files.iter().enumerate() {
        if f.len > limits.max_file_bytes {
            return Err(Error::FileTooLarge {
                name: f.filename.clone(),
                size: f.len,
                limit: limits.max_file_bytes,
            });
        }
        let bad_placeholder = f.placeholder.is_empty()
            || f.placeholder
                .chars()
                .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\' | '(' | ')'));
        if bad_placeholder {
            return Err(Error::InvalidInput(format!(
                "file placeholder {:?}: use letters, digits, `_` or `-`",
                f.placeholder
            )));
        }
        if upload.files[..i].iter().any(|g| g.placeholder == f.placeholder) {
            return Err(Error::InvalidInput(format!(
                "file placeholder {:?} is used twice",
                f.placeholder
            )));
        }
        if f.filename.chars().any(char::is_control) {
            return Err(Error::InvalidInput(format!(
                "file name {:?} has control characters",
                f.filename
            )));
        }
        if f.mime.is_empty() || HeaderValue::from_str(&f.mime).is_err() {
            return Err(Error::InvalidInput(format!(
                "MIME type {:?} is not a header value",
                f.mime
            )));
        }
    }
    Ok(())
}

/// Frames an upload: the `sql`, `params` and `namespace_id` parts, then one
/// part per file, named `file:<placeholder>`, with its filename (quotes and
/// backslashes escaped) and `Content-Type`. Checks the limits first
/// ([`check_upload`]). The boundary is `boundary(seed, n)`, or the next one
/// if framed text happens to contain it.
pub fn multipart_plan(upload: &UploadRequest, limits: &FileLimits, seed: u64, n: u64) -> Result<UploadPlan> {
    check_upload(upload, limits)?;
    // The same checks as a JSON query (SQL length, parameters).
    upload.query.to_body()?;
    let params = match &upload.query.params {
        Some(p) => Some(serde_json::to_string(p).map_err(|e| Error::InvalidInput(e.to_string()))?),
        None => None,
    };
    let mut texts: Vec<(&str, &str)> = vec![("sql", upload.query.sql.as_str())];
    if let Some(p) = &params {
        texts.push(("params", p));
    }
    if let Some(ns) = &upload.query.namespace {
        texts.push(("namespace_id", ns));
    }
    let mut attempt = n;
    let boundary = loop {
        let b = boundary(seed, attempt);
        let clash = texts.iter().any(|(_, t)| t.contains(&b))
            || upload
                .files
                .iter()
                .any(|f| f.filename.contains(&b) || f.placeholder.contains(&b));
        if !clash {
            break b;
        }
        attempt = attempt.wrapping_add(1 << 32);
    };
    let mut segments = Vec::with_capacity(upload.files.len() * 2 + 1);
    let mut head = Vec::new();
    for (name, text) in &texts {
        head.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
        );
        head.extend_from_slice(text.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    for (index, f) in upload.files.iter().enumerate() {
        head.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file:{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
                f.placeholder,
                escape_quoted(&f.filename),
                f.mime
            )
            .as_bytes(),
        );
        segments.push(Segment::Framed(std::mem::take(&mut head)));
        segments.push(Segment::File { index, len: f.len });
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    segments.push(Segment::Framed(head));
    // Declared lengths are the caller's: added without overflowing, a sum
    // past `u64::MAX` stands at `u64::MAX` and is over any limit.
    let file_bytes = upload.files.iter().fold(0u64, |sum, f| sum.saturating_add(f.len));
    let framed = segments.iter().fold(0u64, |sum, s| match s {
        Segment::Framed(b) => sum.saturating_add(b.len() as u64),
        Segment::File { .. } => sum,
    });
    let content_length = framed.saturating_add(file_bytes);
    if content_length > limits.max_body_bytes || content_length == u64::MAX {
        return Err(Error::UploadTooLarge {
            size: content_length,
            limit: limits.max_body_bytes,
        });
    }
    Ok(UploadPlan {
        sources: upload.sources,
        boundary,
        segments,
        content_length,
        file_bytes,
    })
}

impl UploadPlan {
    /// The `Content-Type` header value of this body.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }
}

/// A quoted-string's content: `\` and `"` escaped with a backslash (the
/// server's parser unescapes them; `%22` would be stored literally).
fn escape_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The head of an upload: `POST /v1/api/sql` with the multipart
/// `Content-Type` and the `Authorization` value (none for anonymous
/// access). The transport sets `Content-Length` from
/// [`UploadPlan::content_length`] and streams the body.
pub fn upload_request(ep: &Endpoints, plan: &UploadPlan, authorization: Option<&HeaderValue>) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = ep.uri(RequestKind::Upload).clone();
    if let Ok(v) = HeaderValue::from_str(&plan.content_type()) {
        req.headers_mut().insert(CONTENT_TYPE, v);
    }
    if let Some(a) = authorization {
        req.headers_mut().insert(AUTHORIZATION, a.clone());
    }
    req
}

/// The route every download path is under.
const FILES_ROUTE: &str = "/v1/files/";

/// `GET` of a file at `path` (from [`FileRef::download_path`]). The path
/// must be under `/v1/files/` with no `..` segment; anything else (which
/// could move the request, and the token it carries, to another host or
/// endpoint: `@evil.example/…` after the base URL names another host) is
/// refused with [`Error::InvalidInput`].
pub fn download_request(ep: &Endpoints, path: &str, authorization: Option<&HeaderValue>) -> Result<Request<Vec<u8>>> {
    let not_a_download = || Error::InvalidInput(format!("not a download path under {FILES_ROUTE}: {path:?}"));
    let route = path.split(['?', '#']).next().unwrap_or_default();
    if !route.starts_with(FILES_ROUTE) || route.split('/').any(|s| s == ".." || s == ".") {
        return Err(not_a_download());
    }
    let uri: http::Uri = format!("{}{path}", ep.base()).parse().map_err(|_| not_a_download())?;
    if uri.authority() != ep.uri(RequestKind::Upload).authority() {
        return Err(not_a_download());
    }
    let mut req = Request::new(Vec::new());
    *req.uri_mut() = uri;
    if let Some(a) = authorization {
        req.headers_mut().insert(AUTHORIZATION, a.clone());
    }
    Ok(req)
}

/// Carried in the extensions of a [`RequestKind::Download`]
/// request: the `sink` of its [`Operation::Download`](crate::Operation::Download),
/// so the driver knows whose the streamed body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadSink(pub u64);

/// What a download's answer said about the file, before its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadInfo {
    /// `Content-Type` (guessed by the server from the extension).
    pub content_type: Option<String>,
    /// `Content-Length`, when sent.
    pub content_length: Option<u64>,
}

/// Whether the driver must hand a download answer's body to the caller as
/// a stream (a 2xx: the file) rather than read it for
/// [`decode_download`] (an error: small, and decoded like any other).
pub fn download_streams_body(status: StatusCode) -> bool {
    status.is_success()
}

/// Decodes a download answer's head (a 2xx; its body is the file's bytes,
/// not read here) or its error: `404 {"code":"FILE_NOT_FOUND","error":…}`,
/// `401 TOKEN_EXPIRED` and the other SQL-envelope errors.
pub fn decode_download(status: StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Result<DownloadInfo> {
    if !download_streams_body(status) {
        return Err(crate::framing::decode_error(status, headers, body).into());
    }
    let text = |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok(DownloadInfo {
        content_type: text(CONTENT_TYPE),
        content_length: text(http::header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> FileRef {
        FileRef {
            id: "384055047387873280".into(),
            sub: "f0001".into(),
            name: name.into(),
            size: 4,
            mime: "text/plain".into(),
            sha256: String::new(),
            shard: None,
        }
    }

    /// Each name was uploaded to the real server and its stored file
    /// listed (PROTOCOL §3.6; the official client gets these wrong).
    #[test]
    fn stored_names_follow_the_server() {
        let id = "384055047387873280";
        for (name, stored) in [
            ("Hello World_ x.TXT", "hello-world-x.txt"),
            ("__a--b  c__.Md", "a-b-c.md"),
            ("-a-.txt", "a.txt"),
            ("my.file.tar.gz", "myfiletar.gz"),
            ("a/b\\c.txt", "abc.txt"),
            ("Ünïcødé файл.PDF", "ncd.pdf"),
            ("noext", "noext.bin"),
            ("x.abcdefghij", "x.abcdefghij"),
            ("x.abcdefghijk", "x.bin"),
            ("x.t_t", "x.bin"),
            ("x.ÄB", "x.bin"),
            ("a.b.C1", "ab.c1"),
            ("A.TXT.", "atxt."),
            ("a b.", "a-b."),
        ] {
            assert_eq!(file(name).stored_name(), format!("{id}-{stored}"), "{name:?}");
        }
        // Nothing of the name survives: `<id>.<ext>`.
        for (name, stored) in [("", "bin"), (".hidden", "hidden"), ("  .txt", "txt"), ("файл", "bin")] {
            assert_eq!(file(name).stored_name(), format!("{id}.{stored}"), "{name:?}");
        }
        // At most 50 characters, then no dash at the end.
        let long = format!("{}.txt", "a".repeat(60));
        assert_eq!(file(&long).stored_name(), format!("{id}-{}.txt", "a".repeat(50)));
        let cut_at_dash = format!("{} b.txt", "a".repeat(49));
        assert_eq!(file(&cut_at_dash).stored_name(), format!("{id}-{}.txt", "a".repeat(49)));
        let fifty = format!("a-{}-c.txt", "b".repeat(48));
        assert_eq!(file(&fifty).stored_name(), format!("{id}-a-{}.txt", "b".repeat(48)));
    }

    #[test]
    fn download_path_uses_the_stored_name() {
        let f = file("hello.txt");
        assert_eq!(
            f.download_path("p", "docs").unwrap(),
            "/v1/files/p/docs/f0001/384055047387873280-hello.txt"
        );
        assert_eq!(
            f.download_path_for_user("p", "docs", "alice").unwrap(),
            "/v1/files/p/docs/f0001/384055047387873280-hello.txt?user_id=alice"
        );
        for (ns, table) in [("p/..", "docs"), ("p", ""), ("p", "d?x=1")] {
            assert!(matches!(f.download_path(ns, table), Err(Error::InvalidInput(_))));
        }
        let mut evil = file("x.txt");
        evil.sub = "../../etc".into();
        assert!(matches!(evil.download_path("p", "d"), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn file_ref_reads_from_a_cell() {
        let text = r#"{"id":"384055047387873280","sub":"f0001","name":"hello.txt","size":12,"mime":"text/plain","sha256":"ab","shard":3}"#;
        let f = FileRef::parse(text).unwrap();
        assert_eq!((f.size, f.shard), (12, Some(3)));
        assert_eq!(FileRef::from_value(&Value::String(text.into())), Some(f.clone()));
        assert!(FileRef::parse("{}").is_err());
        let back: FileRef = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }

    fn upload(files: Vec<UploadFile>) -> UploadRequest {
        UploadRequest {
            query: QueryRequest::new(r#"INSERT INTO p.docs (id, f) VALUES ($1, FILE("doc"))"#)
                .param(1)
                .with_namespace("p"),
            files,
            replayable: true,
            sources: 7,
        }
    }

    fn part(placeholder: &str, filename: &str, len: u64) -> UploadFile {
        UploadFile {
            placeholder: placeholder.into(),
            filename: filename.into(),
            mime: "text/plain".into(),
            len,
        }
    }

    #[test]
    fn multipart_framing() {
        let plan = multipart_plan(
            &upload(vec![part("doc", "a\"b\\c.txt", 5)]),
            &FileLimits::default(),
            1,
            2,
        )
        .unwrap();
        let b = boundary(1, 2);
        assert_eq!(plan.content_type(), format!("multipart/form-data; boundary={b}"));
        assert_eq!(plan.sources, 7);
        assert_eq!(plan.file_bytes, 5);
        let mut body = Vec::new();
        for s in &plan.segments {
            match s {
                Segment::Framed(bytes) => body.extend_from_slice(bytes),
                Segment::File { index, len } => {
                    assert_eq!((*index, *len), (0, 5));
                    body.extend_from_slice(b"HELLO");
                }
            }
        }
        assert_eq!(body.len() as u64, plan.content_length);
        let expected = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"sql\"\r\n\r\nINSERT INTO p.docs (id, f) VALUES ($1, FILE(\"doc\"))\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n[1]\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"namespace_id\"\r\n\r\np\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"file:doc\"; filename=\"a\\\"b\\\\c.txt\"\r\nContent-Type: text/plain\r\n\r\nHELLO\r\n\
             --{b}--\r\n"
        );
        assert_eq!(String::from_utf8(body).unwrap(), expected);
    }

    #[test]
    fn boundary_never_in_framed_text() {
        let b = boundary(9, 3);
        let mut u = upload(vec![part("doc", "x.txt", 1)]);
        u.query.sql = format!("INSERT INTO p.d (id, f) VALUES (1, FILE(\"doc\")) -- {b}");
        let plan = multipart_plan(&u, &FileLimits::default(), 9, 3).unwrap();
        assert!(!plan.content_type().ends_with(&b));
        assert_ne!(boundary(9, 3), boundary(9, 4));
        assert_ne!(boundary(9, 3), boundary(10, 3));
    }

    #[test]
    fn limits_refuse_before_sending() {
        let limits = FileLimits {
            max_file_bytes: 100,
            max_files: 2,
            max_body_bytes: 1000,
        };
        let e = multipart_plan(&upload(vec![part("doc", "x", 101)]), &limits, 0, 0).unwrap_err();
        assert!(
            matches!(
                e,
                Error::FileTooLarge {
                    size: 101,
                    limit: 100,
                    ..
                }
            ),
            "{e}"
        );
        let three = vec![part("a", "x", 1), part("b", "x", 1), part("c", "x", 1)];
        let e = multipart_plan(&upload(three), &limits, 0, 0).unwrap_err();
        assert!(matches!(e, Error::TooManyFiles { count: 3, limit: 2 }), "{e}");
        let big = vec![part("a", "x", 100), part("b", "x", 100)];
        let limits = FileLimits {
            max_body_bytes: 250,
            ..limits
        };
        let e = multipart_plan(&upload(big), &limits, 0, 0).unwrap_err();
        assert!(matches!(e, Error::UploadTooLarge { limit: 250, .. }), "{e}");
        for bad in [
            vec![],
            vec![part("", "x", 1)],
            vec![part("a\"b", "x", 1)],
            vec![part("a", "x", 1), part("a", "y", 1)],
            vec![part("a", "x\r\nEvil: 1", 1)],
        ] {
            let e = multipart_plan(&upload(bad.clone()), &FileLimits::default(), 0, 0).unwrap_err();
            assert!(matches!(e, Error::InvalidInput(_)), "{bad:?}: {e}");
        }
        let mut bad_mime = part("a", "x", 1);
        bad_mime.mime = "text/plain\r\nX: y".into();
        assert!(matches!(
            multipart_plan(&upload(vec![bad_mime]), &FileLimits::default(), 0, 0),
            Err(Error::InvalidInput(_))
        ));
    }

    /// Limits raised to the top (a server configured without them) and
    /// declared lengths that add up past `u64::MAX`: a typed refusal, not
    /// an arithmetic overflow.
    #[test]
    fn lengths_that_overflow_are_refused_not_a_panic() {
        let limits = FileLimits {
            max_file_bytes: u64::MAX,
            max_files: 20,
            max_body_bytes: u64::MAX,
        };
        let huge = vec![part("a", "x", u64::MAX / 2 + 1), part("b", "y", u64::MAX / 2 + 1)];
        let e = multipart_plan(&upload(huge), &limits, 0, 0).unwrap_err();
        assert!(
            matches!(
                e,
                Error::UploadTooLarge {
                    size: u64::MAX,
                    limit: u64::MAX
                }
            ),
            "{e}"
        );
        // The files fit in a u64 but not with the framing around them.
        let e = multipart_plan(&upload(vec![part("a", "x", u64::MAX - 10)]), &limits, 0, 0).unwrap_err();
        assert!(matches!(e, Error::UploadTooLarge { size: u64::MAX, .. }), "{e}");
    }

    /// `download_path` takes any string from the caller: whatever it holds,
    /// the request (and the token it carries) stays on the client's server
    /// and under `/v1/files/`.
    #[test]
    fn download_requests_never_leave_the_server_or_the_files_route() {
        let auth = HeaderValue::from_static("Bearer secret-token");
        for base in [
            "http://kalam.example.com",
            "http://localhost:2900",
            "https://db.example.com:8443/prefix",
        ] {
            let ep = Endpoints::new(base).unwrap();
            let own = ep.uri(RequestKind::Upload).authority().unwrap().clone();
            let ok = download_request(&ep, "/v1/files/p/docs/f0001/1-a.txt?user_id=bob", Some(&auth)).unwrap();
            assert_eq!(ok.uri().authority(), Some(&own));
            for evil in [
                "@evil.com/v1/files/p/d/f0001/1-a.txt",
                ".evil.com/v1/files/p/d/f0001/1-a.txt",
                "evil/v1/files/x",
                "//evil.com/v1/files/x",
                "/v1/api/sql",
                "/v1/files/../api/sql",
                "/v1/files/p/../../api/sql",
                "",
            ] {
                match download_request(&ep, evil, Some(&auth)) {
                    Err(Error::InvalidInput(_)) => {}
                    Ok(r) => panic!("{base} + {evil:?} went to {}", r.uri()),
                    Err(e) => panic!("{base} + {evil:?}: {e:?}"),
                }
            }
        }
    }

    #[test]
    fn download_answers() {
        let h = http::HeaderMap::new();
        let e = decode_download(
            StatusCode::NOT_FOUND,
            &h,
            br#"{"code":"FILE_NOT_FOUND","error":"File not found"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code().map(|c| c.as_str()), Some("FILE_NOT_FOUND"));
        let e = decode_download(StatusCode::UNAUTHORIZED, &h, br#"{"error":{"code":"TOKEN_EXPIRED","message":"Invalid credentials"},"results":[],"status":"error","took":0.1}"#).unwrap_err();
        assert!(e.is_token_expired());
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let info = decode_download(StatusCode::OK, &h, b"").unwrap();
        assert_eq!(info.content_length, Some(12));
        assert_eq!(info.content_type.as_deref(), Some("text/plain"));
    }
}
