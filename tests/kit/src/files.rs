//! FILE columns (PROTOCOL §3.6): multipart `POST /v1/api/sql` with
//! `file:<placeholder>` parts, the FileRef JSON stored in the column, and
//! `GET /v1/files/{ns}/{table}/{sub}/{stored_name}`.
//!
//! Files are kept in memory, per table and (for USER tables) per owner,
//! under the stored name the server uses.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The server's default limit on one uploaded file (`files.max_size_bytes`).
pub const DEFAULT_MAX_FILE_SIZE: usize = 25 << 20;
/// The server's default limit on files in one request (`files.max_files_per_request`).
pub const DEFAULT_MAX_FILES_PER_REQUEST: usize = 20;
/// The SHA-256 of `bytes` in lower-case hex, as a FileRef's `sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Files in one subfolder (`f0001`, `f0002`, …) before the next.
const FILES_PER_FOLDER: u32 = 5000;

/// The upload limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileLimits {
    pub(crate) max_file_size: usize,
    pub(crate) max_files: usize,
}

/// A failure of the multipart path: a SQL-envelope error without details.
#[derive(Debug)]
pub(crate) struct UploadError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

fn upload_error(code: &'static str, message: impl Into<String>) -> UploadError {
    UploadError {
        code,
        message: message.into(),
    }
}

/// One `file:<placeholder>` part.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    /// The part's filename (else the placeholder).
    pub(crate) name: String,
    pub(crate) data: Bytes,
    pub(crate) mime: Option<String>,
}

/// A parsed multipart SQL request.
#[derive(Debug, Default)]
pub(crate) struct Multipart {
    pub(crate) sql: String,
    pub(crate) params: Option<Vec<Value>>,
    pub(crate) namespace_id: Option<String>,
    /// By placeholder.
    pub(crate) files: HashMap<String, Part>,
}

/// Whether a content type is `multipart/form-data` (any case).
pub(crate) fn is_multipart(content_type: &str) -> bool {
    content_type
        .get(..19)
        .is_some_and(|p| p.eq_ignore_ascii_case("multipart/form-data"))
}

/// The `boundary` parameter of a content type.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// A header parameter (`name="x"`) of a part's `Content-Disposition`.
fn disposition_param(value: &str, key: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Parses a multipart SQL request as the server does: `sql`, `params`,
/// `namespace_id` and `file:<placeholder>` parts, other parts ignored.
pub(crate) fn parse_multipart(content_type: &str, body: &[u8], limits: FileLimits) -> Result<Multipart, UploadError> {
    let incomplete = || upload_error("INVALID_INPUT", "Multipart parse error: Multipart stream is incomplete");
    let boundary = boundary(content_type).ok_or_else(|| {
        upload_error(
            "INVALID_INPUT",
            "Multipart parse error: Could not find boundary in Content-Type header",
        )
    })?;
    let delimiter = format!("--{boundary}").into_bytes();
    let mut at = find(body, &delimiter, 0).ok_or_else(incomplete)? + delimiter.len();
    let mut out = Multipart::default();
    let mut sql = None;
    let mut params = None;
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            break;
        }
        // CRLF, headers, blank line, data, CRLF, delimiter.
        let head_end = find(body, b"\r\n\r\n", at).ok_or_else(incomplete)?;
        let head = String::from_utf8_lossy(&body[at..head_end]);
        let data_start = head_end + 4;
        let mut next_delim = delimiter.clone();
        next_delim.splice(0..0, *b"\r\n");
        let data_end = find(body, &next_delim, data_start).ok_or_else(incomplete)?;
        let data = Bytes::copy_from_slice(&body[data_start..data_end]);
        at = data_end + next_delim.len();
        let mut name = String::new();
        let mut filename = None;
        let mut mime = None;
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                name = disposition_param(v, "name").unwrap_or_default();
                filename = disposition_param(v, "filename");
            } else if k.trim().eq_ignore_ascii_case("content-type") {
                mime = Some(v.trim().to_owned());
            }
        }
        let text = || String::from_utf8_lossy(&data).into_owned();
        match name.as_str() {
            "sql" => sql = Some(text()),
            "params" => params = Some(text()),
            "namespace_id" => out.namespace_id = Some(text()),
            _ => {
                let Some(key) = name.strip_prefix("file:") else {
                    continue;
                };
                if out.files.len() >= limits.max_files {
                    return Err(upload_error(
                        "TOO_MANY_FILES",
                        format!("Too many files: maximum {} allowed", limits.max_files),
                    ));
                }
                let name = filename.unwrap_or_else(|| key.to_owned());
                if data.len() > limits.max_file_size {
                    return Err(upload_error(
                        "FILE_TOO_LARGE",
                        format!("File '{name}' exceeds maximum size of {} bytes", limits.max_file_size),
                    ));
                }
                out.files.insert(key.to_owned(), Part { name, data, mime });
            }
        }
    }
    out.sql = sql
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| upload_error("EMPTY_SQL", "SQL statement is required"))?;
    if let Some(p) = params {
        let v: Value = serde_json::from_str(&p)
            .map_err(|e| upload_error("INVALID_PARAMETER", format!("Invalid params JSON: {e}")))?;
        let Value::Array(a) = v else {
            return Err(upload_error("INVALID_PARAMETER", "Params must be a JSON array"));
        };
        out.params = Some(a);
    }
    Ok(out)
}

/// The placeholders of `FILE("x")` / `FILE('x')` (any case) in SQL, read
/// as the server reads them (anywhere, even inside a longer word).
pub(crate) fn placeholders(sql: &str) -> Vec<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 5 <= chars.len() {
        let word: String = chars[i..i + 5].iter().collect();
        if !word.eq_ignore_ascii_case("file(") {
            i += 1;
            continue;
        }
        let mut j = i + 5;
        while chars.get(j).is_some_and(|c| c.is_whitespace()) {
            j += 1;
        }
        if let Some(&q) = chars.get(j).filter(|c| **c == '"' || **c == '\'') {
            let name: String = chars[j + 1..].iter().take_while(|c| **c != q).collect();
            j += 1 + name.chars().count();
            if !name.is_empty() {
                out.push(name);
            }
        }
        i = j.max(i + 1);
    }
    out
}

/// `sql` with each `FILE("x")` / `FILE('x')` (spelled `FILE`, `file` or
/// `File`) of a known placeholder replaced by its FileRef JSON as a string
/// literal.
pub(crate) fn substitute(sql: &str, refs: &HashMap<String, Value>) -> String {
    let mut out = sql.to_owned();
    for (name, file_ref) in refs {
        let literal = format!("'{}'", file_ref.to_string().replace('\'', "''"));
        for f in ["FILE", "file", "File"] {
            for q in ['"', '\''] {
                out = out.replace(&format!("{f}({q}{name}{q})"), &literal);
            }
        }
    }
    out
}

/// The name a file is stored (and downloaded) under: `<id>-<sanitized
/// name>.<ext>`, or `<id>.<ext>` when nothing of the name is left (§3.6).
pub fn stored_name(id: &str, name: &str) -> String {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) => (stem, Some(ext)),
        None => (name, None),
    };
    let ext = ext
        .map(str::to_ascii_lowercase)
        .filter(|e| e.len() <= 10 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "bin".into());
    let mapped: String = stem
        .chars()
        .filter_map(|c| match c {
            c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
            ' ' | '_' | '-' => Some('-'),
            _ => None,
        })
        .take(50)
        .collect();
    let mut sanitized = String::with_capacity(mapped.len());
    for c in mapped.chars() {
        if c != '-' || !(sanitized.is_empty() || sanitized.ends_with('-')) {
            sanitized.push(c);
        }
    }
    let sanitized = sanitized.trim_end_matches('-');
    if sanitized.is_empty() {
        format!("{id}.{ext}")
    } else {
        format!("{id}-{sanitized}.{ext}")
    }
}

/// The MIME type the server gives a file uploaded without one: from its
/// first bytes, else from what follows the name's last `.` (the whole name
/// when it has none, as on the server: a part named `doc` is a Word file).
fn detect_mime(name: &str, data: &[u8]) -> &'static str {
    let magic: [(&[u8], &str); 6] = [
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
    ];
    if data.len() >= 8 {
        if let Some((_, m)) = magic.iter().find(|(p, _)| data.starts_with(p)) {
            return m;
        }
        if data.len() >= 12 && data.starts_with(b"RIFF") && &data[8..12] == b"WEBP" {
            return "image/webp";
        }
    }
    let ext = name.rsplit('.').next().unwrap_or_default().to_ascii_lowercase();
    match ext.as_str() {
        "txt" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" => "application/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "csv" => "text/csv",
        "md" => "text/markdown",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "tar" => "application/x-tar",
        "gz" | "gzip" => "application/gzip",
        "rar" => "application/vnd.rar",
        "7z" => "application/x-7z-compressed",
        _ => "application/octet-stream",
    }
}

/// The Content-Type of a download, guessed from the stored name's
/// extension (the common types; anything else is
/// `application/octet-stream`).
pub(crate) fn download_type(stored: &str) -> &'static str {
    let ext = stored
        .rsplit_once('.')
        .map(|e| e.1.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "md" => "text/markdown",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "doc" => "application/msword",
        _ => "application/octet-stream",
    }
}

/// Where a file lives: table (lower case), owner (USER tables), subfolder,
/// stored name.
type FileKey = (String, Option<String>, String, String);

/// The stored files and each table's subfolder counter.
#[derive(Debug, Default)]
pub(crate) struct Files {
    stored: HashMap<FileKey, Bytes>,
    folders: HashMap<String, (u32, u32)>,
    last_id: i64,
}

/// A file about to be stored with its row.
pub(crate) struct Pending {
    key: FileKey,
    data: Bytes,
}

impl Files {
    /// A new Snowflake-like file id.
    fn next_id(&mut self) -> i64 {
        let candidate = (crate::unix_now_ms() - 1_704_067_200_000).max(0) << 22;
        self.last_id = candidate.max(self.last_id + 1);
        self.last_id
    }

    /// The FileRef JSON of each part, and the files to store once the
    /// statement succeeded.
    pub(crate) fn prepare(
        &mut self,
        table: &str,
        owner: Option<&str>,
        parts: &HashMap<String, Part>,
    ) -> (HashMap<String, Value>, Vec<Pending>) {
        let mut refs = HashMap::new();
        let mut pending = Vec::new();
        for (placeholder, part) in parts {
            let id = self.next_id().to_string();
            let folder = self.folders.entry(table.to_ascii_lowercase()).or_insert((1, 0));
            if folder.1 >= FILES_PER_FOLDER {
                *folder = (folder.0 + 1, 0);
            }
            folder.1 += 1;
            let sub = format!("f{:04}", folder.0);
            let mime = part
                .mime
                .clone()
                .unwrap_or_else(|| detect_mime(&part.name, &part.data).to_owned());
            let sha256 = sha256_hex(&part.data);
            let stored = stored_name(&id, &part.name);
            refs.insert(
                placeholder.clone(),
                json!({"id": id, "sub": sub, "name": part.name, "size": part.data.len(), "mime": mime, "sha256": sha256}),
            );
            pending.push(Pending {
                key: (table.to_ascii_lowercase(), owner.map(str::to_owned), sub, stored),
                data: part.data.clone(),
            });
        }
        (refs, pending)
    }

    /// Stores files whose statement succeeded.
    pub(crate) fn commit(&mut self, pending: Vec<Pending>) {
        for p in pending {
            self.stored.insert(p.key, p.data);
        }
    }

    /// A stored file.
    pub(crate) fn get(&self, table: &str, owner: Option<&str>, sub: &str, stored: &str) -> Option<Bytes> {
        self.stored
            .get(&(
                table.to_ascii_lowercase(),
                owner.map(str::to_owned),
                sub.to_owned(),
                stored.to_owned(),
            ))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_follow_the_servers_rule() {
        assert_eq!(stored_name("1", "hello.txt"), "1-hello.txt");
        assert_eq!(stored_name("1", "My Hello_File.TXT"), "1-my-hello-file.txt");
        assert_eq!(stored_name("1", "--a  b--.tar.gz"), "1-a-b-tar.gz");
        assert_eq!(stored_name("1", "文档.pdf"), "1.pdf");
        assert_eq!(stored_name("1", ".hidden"), "1.hidden");
        assert_eq!(stored_name("1", "noext"), "1-noext.bin");
        assert_eq!(stored_name("1", "x.weird-ext"), "1-x.bin");
        assert_eq!(
            stored_name("1", &format!("{}.txt", "a".repeat(80))),
            format!("1-{}.txt", "a".repeat(50))
        );
    }

    #[test]
    fn placeholders_are_found_in_both_quotes_and_any_case() {
        assert_eq!(
            placeholders(r#"INSERT INTO t (a, b) VALUES (FILE("doc"), file( 'img'))"#),
            vec!["doc", "img"]
        );
        assert!(placeholders("SELECT 'file' FROM t").is_empty());
        let refs = HashMap::from([("doc".to_owned(), json!({"id": "1", "name": "it's"}))]);
        assert_eq!(
            substitute(r#"VALUES (FILE("doc"), File('doc'))"#, &refs),
            r#"VALUES ('{"id":"1","name":"it''s"}', '{"id":"1","name":"it''s"}')"#
        );
    }

    #[test]
    fn multipart_parts_and_limits() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"sql\"\r\n\r\nINSERT 1\r\n--XX\r\nContent-Disposition: form-data; name=\"file:doc\"; filename=\"a b.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX--\r\n";
        let limits = FileLimits {
            max_file_size: 5,
            max_files: 1,
        };
        let m = parse_multipart("multipart/form-data; boundary=XX", body, limits).expect("parses");
        assert_eq!(m.sql, "INSERT 1");
        assert_eq!(m.files["doc"].name, "a b.txt");
        assert_eq!(m.files["doc"].data.as_ref(), b"hello");
        assert_eq!(m.files["doc"].mime.as_deref(), Some("text/plain"));
        let small = FileLimits {
            max_file_size: 4,
            ..limits
        };
        let e = parse_multipart("multipart/form-data; boundary=XX", body, small).expect_err("too large");
        assert_eq!(
            (e.code, e.message.as_str()),
            ("FILE_TOO_LARGE", "File 'a b.txt' exceeds maximum size of 4 bytes")
        );
        let e = parse_multipart("multipart/form-data; boundary=XX", b"garbage", limits).expect_err("garbage");
        assert_eq!(e.code, "INVALID_INPUT");
    }
}
