//! FILE columns on any runtime: uploads streamed from paths, bytes or async
//! readers with progress, and downloads streamed to a writer.
//!
//! Every protocol decision is the core's ([`kalam_proto::files`]: framing,
//! limits, which upload may be sent twice, the download path, decoding).
//! What is here is written once for every runtime: the application's data
//! sources, turning the core's [`UploadPlan`] into a body stream (counting
//! progress), and copying a download's body to the caller's writer. The
//! adapters only move bytes ([`Runtime::send_streaming`], [`Runtime::open_file`]).
//!
//! The data never goes through the core: the caller keeps its sources in an
//! `Arc` while it waits, and the driver, which holds only a `Weak` to them
//! by the number the core echoes in the plan, streams them when the core
//! asks. A download's body goes back the same way: the driver puts the
//! answer's reader into the caller's slot and the caller copies it, in its
//! own task; the driver never buffers it.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use futures_util::{AsyncReadExt as _, AsyncWriteExt as _};
use kalam_proto::files::{DownloadSink, download_streams_body};
use kalam_proto::{
    DownloadInfo, Error, FileRef, Operation, QueryRequest, QueryResponse, RequestId, RequestKind, Result, Segment,
    TransportError, UploadFile, UploadPlan, UploadRequest,
};

use crate::adapter::{BodyChunks, BodyReader, Runtime};
use crate::client::KalamLinkClient;
use crate::driver::Task;
use crate::msg::{Command, Event};
use crate::sync::reply;

/// Size of the chunks a file is read and sent in.
const CHUNK: usize = 64 << 10;

/// Where an upload's data comes from.
pub struct FileSource(Source);

enum Source {
    /// Opened when sent (again if sent twice).
    Path(PathBuf),
    /// In memory, shared with every attempt.
    Bytes(Arc<[u8]>),
    /// Read once: an upload from a reader is never sent twice.
    Reader(Mutex<Option<Box<dyn AsyncRead + Send + Unpin>>>, u64),
}

impl FileSource {
    /// A local file, opened (with the runtime's file I/O) when the upload
    /// is sent, and again if it has to be sent again.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        FileSource(Source::Path(path.into()))
    }

    /// Bytes in memory.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Self {
        FileSource(Source::Bytes(bytes.into().into()))
    }

    /// An async reader that yields exactly `len` bytes (the length goes in
    /// the request's head and is checked against the limits before
    /// anything is sent). Its data can be sent only once: if the server
    /// refuses the token of this upload (`TOKEN_EXPIRED`), the client renews
    /// the token and answers [`Error::UploadNotReplayable`].
    pub fn reader(reader: impl AsyncRead + Send + Unpin + 'static, len: u64) -> Self {
        FileSource(Source::Reader(Mutex::new(Some(Box::new(reader))), len))
    }
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::Path(p) => f.debug_tuple("Path").field(p).finish(),
            Source::Bytes(b) => write!(f, "Bytes(<{} bytes>)", b.len()),
            Source::Reader(_, len) => write!(f, "Reader(<{len} bytes>)"),
        }
    }
}

/// One file of an upload: the `FILE("placeholder")` the SQL refers to it
/// by, the name and MIME type it is stored with, and its data.
#[derive(Debug)]
pub struct FileUpload {
    placeholder: String,
    filename: String,
    mime: Option<String>,
    source: FileSource,
}

impl FileUpload {
    /// A file for `FILE("placeholder")`, stored as `filename`.
    pub fn new(placeholder: impl Into<String>, filename: impl Into<String>, source: FileSource) -> Self {
        FileUpload {
            placeholder: placeholder.into(),
            filename: filename.into(),
            mime: None,
            source,
        }
    }

    /// A local file, stored under its own file name.
    pub fn from_path(placeholder: impl Into<String>, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        FileUpload::new(placeholder, name, FileSource::path(path))
    }

    /// Bytes in memory, stored as `filename`.
    pub fn from_bytes(placeholder: impl Into<String>, filename: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        FileUpload::new(placeholder, filename, FileSource::bytes(bytes))
    }

    /// An async reader of exactly `len` bytes, stored as `filename` (see
    /// [`FileSource::reader`]).
    pub fn from_reader(
        placeholder: impl Into<String>,
        filename: impl Into<String>,
        reader: impl AsyncRead + Send + Unpin + 'static,
        len: u64,
    ) -> Self {
        FileUpload::new(placeholder, filename, FileSource::reader(reader, len))
    }

    /// The MIME type (default: from the file name's extension, else
    /// `application/octet-stream`).
    pub fn with_mime(mut self, mime: impl Into<String>) -> Self {
        self.mime = Some(mime.into());
        self
    }
}

/// How far an upload is: file bytes handed to the connection so far, of
/// all the files' bytes. Counts rise monotonically to `total` (a replay
/// after `TOKEN_EXPIRED` counts again from zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadProgress {
    /// File bytes sent so far.
    pub sent: u64,
    /// All the files' bytes.
    pub total: u64,
}

type ProgressFn = Arc<dyn Fn(UploadProgress) + Send + Sync>;

/// A download's body, read as it arrives (an [`AsyncRead`]). The HTTP
/// connection goes back to the pool when it is read to the end.
pub struct FileDownload {
    info: DownloadInfo,
    reader: BodyReader,
}

impl FileDownload {
    /// What the server said about the file (`Content-Type`, `Content-Length`).
    pub fn info(&self) -> &DownloadInfo {
        &self.info
    }
}

impl std::fmt::Debug for FileDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDownload")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for FileDownload {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        self.reader.as_mut().poll_read(cx, buf)
    }
}

/// The data of one upload, kept alive by its caller. When the caller is
/// gone (its future dropped), the upload is cancelled: the body stops
/// mid-way, so the server sees a short body and commits nothing.
pub(crate) struct Sources {
    files: Vec<(String, FileSource)>,
    progress: Option<ProgressFn>,
    cancel: Arc<Cancel>,
}

impl Drop for Sources {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// An upload's cancellation: set when its caller is gone.
#[derive(Default)]
pub(crate) struct Cancel(Mutex<(bool, Option<std::task::Waker>)>);

impl Cancel {
    fn cancel(&self) {
        let waker = {
            let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
            s.0 = true;
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn poll_cancelled(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 {
            return Poll::Ready(());
        }
        s.1 = Some(cx.waker().clone());
        Poll::Pending
    }

    /// `work`, unless the upload is cancelled first.
    async fn or_cancelled<T>(&self, work: impl std::future::Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
        use futures_util::future::{Either, select};
        let cancelled = std::future::poll_fn(|cx| self.poll_cancelled(cx));
        futures_util::pin_mut!(work, cancelled);
        match select(work, cancelled).await {
            Either::Left((result, _)) => result,
            Either::Right(((), _)) => Err(caller_gone()),
        }
    }
}

/// The error that cuts an upload's body short once its caller is gone.
fn caller_gone() -> std::io::Error {
    std::io::Error::other("the upload's caller gave up: the body is cut short, and the server commits nothing")
}

/// Where the driver puts a download's body for its caller.
pub(crate) type Slot = Mutex<Option<BodyReader>>;

/// What a command carries besides its operation.
pub(crate) enum Attach {
    Upload(u64, Weak<Sources>),
    Download(u64, Weak<Slot>),
}

/// The driver's view of the callers' sources and slots (weak: a caller that
/// gives up drops them).
#[derive(Default)]
pub(crate) struct Registry {
    uploads: HashMap<u64, Weak<Sources>>,
    downloads: HashMap<u64, Weak<Slot>>,
}

impl Registry {
    pub(crate) fn attach(&mut self, attach: Attach) {
        self.uploads.retain(|_, w| w.strong_count() > 0);
        self.downloads.retain(|_, w| w.strong_count() > 0);
        match attach {
            Attach::Upload(key, w) => self.uploads.insert(key, w).map(drop),
            Attach::Download(key, w) => self.downloads.insert(key, w).map(drop),
        };
    }
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A MIME type from a file name's extension (a few common ones).
fn guess_mime(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        _ => "application/octet-stream",
    }
}

impl<R: Runtime> KalamLinkClient<R> {
    /// Runs one SQL statement with files (`multipart/form-data`): each
    /// `FILE("name")` in the SQL refers to the [`FileUpload`] with that
    /// placeholder, and the column gets its [`FileRef`].
    ///
    /// ```ignore
    /// client.execute_with_files(
    ///     QueryRequest::new(r#"INSERT INTO docs.files (id, f) VALUES ($1, FILE("doc"))"#).param(1),
    ///     vec![FileUpload::from_path("doc", "report.pdf")],
    /// ).await?;
    /// ```
    ///
    /// The data is streamed, never held whole. The limits
    /// ([`ConnectionOptions`](kalam_proto::ConnectionOptions)`::max_file_bytes`,
    /// `max_files_per_request`, `max_upload_body_bytes`) are checked before
    /// anything is sent, with typed errors. The token is the client's, as
    /// for queries; after `TOKEN_EXPIRED` the upload is sent again with a
    /// renewed token when its data comes from paths and bytes, and answered
    /// [`Error::UploadNotReplayable`] (after renewing the token) when it
    /// comes from a reader. A path that cannot be opened is
    /// [`Error::FileSource`], before anything is sent.
    pub async fn execute_with_files(
        &self,
        request: impl Into<QueryRequest>,
        files: Vec<FileUpload>,
    ) -> Result<QueryResponse> {
        self.upload(request.into(), files, None).await
    }

    /// Like [`execute_with_files`](Self::execute_with_files), calling
    /// `progress` as the files' bytes are sent, on whichever task streams
    /// the body (the client's driver task on async-std, the HTTP
    /// connection's task on Tokio): keep it short, and do not block.
    pub async fn execute_with_files_progress(
        &self,
        request: impl Into<QueryRequest>,
        files: Vec<FileUpload>,
        progress: impl Fn(UploadProgress) + Send + Sync + 'static,
    ) -> Result<QueryResponse> {
        self.upload(request.into(), files, Some(Arc::new(progress))).await
    }

    /// The official client's name for
    /// [`execute_with_files_progress`](Self::execute_with_files_progress).
    pub async fn execute_with_files_with_progress(
        &self,
        request: impl Into<QueryRequest>,
        files: Vec<FileUpload>,
        progress: impl Fn(UploadProgress) + Send + Sync + 'static,
    ) -> Result<QueryResponse> {
        self.execute_with_files_progress(request, files, progress).await
    }

    async fn upload(
        &self,
        query: QueryRequest,
        files: Vec<FileUpload>,
        progress: Option<ProgressFn>,
    ) -> Result<QueryResponse> {
        let mut parts = Vec::with_capacity(files.len());
        let mut sources = Vec::with_capacity(files.len());
        let mut replayable = true;
        for f in files {
            let len = match &f.source.0 {
                Source::Path(path) => {
                    R::open_file(path.clone())
                        .await
                        .map_err(|e| Error::FileSource {
                            path: path.clone(),
                            source: Arc::new(e),
                        })?
                        .1
                }
                Source::Bytes(b) => b.len() as u64,
                Source::Reader(_, len) => {
                    replayable = false;
                    *len
                }
            };
            let mime = f.mime.unwrap_or_else(|| guess_mime(&f.filename).to_owned());
            parts.push(UploadFile {
                placeholder: f.placeholder,
                filename: f.filename.clone(),
                mime,
                len,
            });
            sources.push((f.filename, f.source));
        }
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let sources = Arc::new(Sources {
            files: sources,
            progress,
            cancel: Arc::default(),
        });
        let op = Operation::Upload(UploadRequest {
            query,
            files: parts,
            replayable,
            sources: key,
        });
        let (tx, rx) = reply();
        self.command(Command::SubmitFiles(
            op,
            Attach::Upload(key, Arc::downgrade(&sources)),
            tx,
        ))?;
        // `sources` lives until the answer: the driver streams from it.
        let answer = rx.await?;
        drop(sources);
        answer?.into_reply()
    }

    /// Downloads a FILE column's file of `namespace.table` (the path is
    /// built from the reference's stored name, PROTOCOL §3.6) and copies it
    /// to `writer` as it arrives; returns the bytes written. The token is
    /// the client's and a `TOKEN_EXPIRED` answer is retried like a query.
    /// A missing file is the server's `FILE_NOT_FOUND` (404) error; a body
    /// shorter or longer than [`FileRef::size`] is a transport error, and
    /// `writer` never gets more than `size` bytes (an answer whose
    /// `Content-Length` differs is refused before any byte is written).
    ///
    /// The answer's head must arrive within the receive timeout; the body
    /// then has no time limit of its own (a large file on a slow link takes
    /// what it takes): wrap the call in your runtime's timeout if you need
    /// one. Dropping the future drops the connection.
    pub async fn download_file<W: AsyncWrite + Unpin + ?Sized>(
        &self,
        file: &FileRef,
        namespace: &str,
        table: &str,
        writer: &mut W,
    ) -> Result<u64> {
        let wrong_size = |had: &dyn std::fmt::Display| {
            Error::Transport(TransportError::Io(format!(
                "the file's body had {had} bytes; its reference says {}",
                file.size
            )))
        };
        let mut download = self.download_file_reader(file, namespace, table).await?;
        if let Some(announced) = download.info().content_length
            && announced != file.size
        {
            return Err(wrong_size(&announced));
        }
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = download
                .read(&mut buf)
                .await
                .map_err(|e| Error::Transport(TransportError::Io(e.to_string())))?;
            if n == 0 {
                break;
            }
            // Never more than the reference's size reaches the writer, however
            // long the body runs.
            let room = usize::try_from(file.size - total).unwrap_or(usize::MAX);
            if n > room {
                writer.write_all(&buf[..room]).await.map_err(Error::other)?;
                return Err(wrong_size(&format_args!("more than {}", file.size)));
            }
            writer.write_all(&buf[..n]).await.map_err(Error::other)?;
            total += n as u64;
        }
        writer.flush().await.map_err(Error::other)?;
        if total != file.size {
            return Err(wrong_size(&total));
        }
        Ok(total)
    }

    /// Like [`download_file`](Self::download_file), answering the body as a
    /// reader to consume at the caller's pace.
    pub async fn download_file_reader(&self, file: &FileRef, namespace: &str, table: &str) -> Result<FileDownload> {
        self.download_path(file.download_path(namespace, table)?).await
    }

    /// Downloads the file at a path from
    /// [`FileRef::download_path_for_user`] (an admin reading another user's
    /// file) or [`FileRef::download_path`]. A path that is not under
    /// `/v1/files/` (or has a `..` segment) is refused with
    /// [`Error::InvalidInput`] before anything is sent: the request, and
    /// the token it carries, never go to another host or endpoint.
    pub async fn download_path(&self, path: impl Into<String>) -> Result<FileDownload> {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let slot: Arc<Slot> = Arc::new(Mutex::new(None));
        let op = Operation::Download {
            path: path.into(),
            sink: key,
        };
        let (tx, rx) = reply();
        self.command(Command::SubmitFiles(
            op,
            Attach::Download(key, Arc::downgrade(&slot)),
            tx,
        ))?;
        let info: DownloadInfo = rx.await??.into_reply()?;
        let reader = slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| Error::Runtime("the download's body was not handed over".into()))?;
        Ok(FileDownload { info, reader })
    }
}

/// Reads a small answer body whole (at most `max` bytes).
async fn read_small(mut reader: BodyReader, max: usize) -> std::result::Result<Vec<u8>, TransportError> {
    let mut body = Vec::new();
    (&mut reader)
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .await
        .map_err(|e| TransportError::Io(e.to_string()))?;
    if body.len() > max {
        return Err(TransportError::BodyTooLarge { limit: max });
    }
    Ok(body)
}

/// The exchange of an upload, for the driver's tasks: streams the plan's
/// segments from the caller's sources and decodes the answer.
pub(crate) fn upload<R: Runtime>(
    http: R::Http,
    id: RequestId,
    request: http::Request<()>,
    plan: UploadPlan,
    registry: &Registry,
    max_answer: usize,
) -> Task {
    let sources = registry.uploads.get(&plan.sources).and_then(Weak::upgrade);
    Box::pin(async move {
        let Some(sources) = sources else {
            return Event::Http(id, Err(TransportError::Io("the upload's caller has gone".into())));
        };
        let len = plan.content_length;
        // The stream holds the caller's data only weakly: a caller that
        // gives up cancels it (see `Sources`).
        let cancel = sources.cancel.clone();
        let body = body_stream::<R>(plan, Arc::downgrade(&sources), cancel);
        drop(sources);
        let answer = async {
            let response = R::send_streaming(http, request, Some((body, len))).await?;
            let (parts, reader) = response.into_parts();
            let body = read_small(reader, max_answer).await?;
            Ok(kalam_proto::decode(
                RequestKind::Upload,
                parts.status,
                &parts.headers,
                &body,
            ))
        };
        Event::Http(id, answer.await)
    })
}

/// The exchange of a download, for the driver's tasks: a 2xx answer's body
/// goes to the caller's slot; an error answer is read and decoded.
pub(crate) fn download<R: Runtime>(
    http: R::Http,
    id: RequestId,
    request: http::Request<Vec<u8>>,
    registry: &Registry,
    max_answer: usize,
    done: crate::sync::Sender<RequestId>,
) -> Task {
    let slot = request
        .extensions()
        .get::<DownloadSink>()
        .and_then(|s| registry.downloads.get(&s.0))
        .cloned();
    let (parts, _) = request.into_parts();
    let request = http::Request::from_parts(parts, ());
    Box::pin(async move {
        let answer = async {
            let response = R::send_streaming(http, request, None).await?;
            let (parts, reader) = response.into_parts();
            if download_streams_body(parts.status) {
                match slot.as_ref().and_then(Weak::upgrade) {
                    Some(slot) => {
                        let reader = BodyDone {
                            reader,
                            id,
                            done: Some(done),
                        };
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::pin(reader));
                    }
                    None => return Err(TransportError::Io("the download's caller has gone".into())),
                }
                Ok(kalam_proto::decode(
                    RequestKind::Download,
                    parts.status,
                    &parts.headers,
                    &[],
                ))
            } else {
                let body = read_small(reader, max_answer).await?;
                Ok(kalam_proto::decode(
                    RequestKind::Download,
                    parts.status,
                    &parts.headers,
                    &body,
                ))
            }
        };
        Event::Http(id, answer.await)
    })
}

/// A download's body: when it is read to its end or dropped, the driver
/// hears of it, and the download's place under the in-flight cap (its
/// connection) is free again.
struct BodyDone {
    reader: BodyReader,
    id: RequestId,
    done: Option<crate::sync::Sender<RequestId>>,
}

impl BodyDone {
    fn report(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(self.id);
        }
    }
}

impl AsyncRead for BodyDone {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let result = std::task::ready!(self.reader.as_mut().poll_read(cx, buf));
        if matches!(result, Ok(0) | Err(_)) && !buf.is_empty() {
            self.report();
        }
        Poll::Ready(result)
    }
}

impl Drop for BodyDone {
    fn drop(&mut self) {
        self.report();
    }
}

/// The state of an upload's body stream.
struct BodyState {
    segments: std::vec::IntoIter<Segment>,
    sources: Weak<Sources>,
    cancel: Arc<Cancel>,
    /// The file being read: its reader, bytes still due, its index.
    current: Option<(BodyReader, u64, usize)>,
    sent: u64,
    total: u64,
    done: bool,
}

/// The plan's segments as a stream of chunks: framed bytes as they are,
/// files read from their sources in chunks, each exactly as long as
/// declared (a source that ends early or runs long fails the upload).
fn body_stream<R: Runtime>(plan: UploadPlan, sources: Weak<Sources>, cancel: Arc<Cancel>) -> BodyChunks {
    let state = BodyState {
        segments: plan.segments.into_iter(),
        sources,
        cancel,
        current: None,
        sent: 0,
        total: plan.file_bytes,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        match next_chunk::<R>(&mut s).await {
            Ok(Some(chunk)) => Some((Ok(chunk), s)),
            Ok(None) => None,
            Err(e) => {
                s.done = true;
                Some((Err(e), s))
            }
        }
    }))
}

async fn next_chunk<R: Runtime>(s: &mut BodyState) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        // The caller's data is held only between awaits: a caller that
        // gives up drops it, which cancels the wait in progress.
        let cancel = s.cancel.clone();
        if let Some((reader, due, index)) = &mut s.current {
            let name = s.sources.upgrade().ok_or_else(caller_gone)?.files[*index].0.clone();
            if *due == 0 {
                // Exactly as long as declared: nothing more to read.
                let mut probe = [0u8; 1];
                if cancel.or_cancelled(reader.read(&mut probe)).await? != 0 {
                    return Err(std::io::Error::other(format!(
                        "file {name:?} is longer than its declared length"
                    )));
                }
                s.current = None;
                continue;
            }
            let mut chunk = vec![0u8; (*due).min(CHUNK as u64) as usize];
            let n = cancel.or_cancelled(reader.read(&mut chunk)).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("file {name:?} ended {due} bytes before its declared length"),
                ));
            }
            chunk.truncate(n);
            *due -= n as u64;
            s.sent += n as u64;
            if let Some(progress) = &s.sources.upgrade().ok_or_else(caller_gone)?.progress {
                let p = UploadProgress {
                    sent: s.sent,
                    total: s.total,
                };
                if std::panic::catch_unwind(AssertUnwindSafe(|| progress(p))).is_err() {
                    tracing::warn!("an upload progress callback panicked; the upload goes on");
                }
            }
            return Ok(Some(chunk));
        }
        match s.segments.next() {
            None => return Ok(None),
            Some(Segment::Framed(bytes)) => return Ok(Some(bytes)),
            Some(Segment::File { index, len }) => {
                let opening = s
                    .sources
                    .upgrade()
                    .ok_or_else(caller_gone)
                    .and_then(|src| open(&src, index))?;
                let reader = match opening {
                    Opening::Ready(reader) => reader,
                    Opening::Path(path) => cancel.or_cancelled(async { Ok(R::open_file(path).await?.0) }).await?,
                };
                s.current = Some((reader, len, index));
            }
        }
    }
}

/// The application's reader, polled inside the driver task (or a
/// runtime's connection task): a panic in it fails this upload with an
/// error naming the file, and never unwinds through the driver.
struct Guarded {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    name: String,
    panicked: bool,
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if !this.panicked {
            let reader = &mut this.reader;
            match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(reader).poll_read(cx, buf))) {
                Ok(poll) => return poll,
                Err(_) => {
                    this.panicked = true;
                    tracing::warn!(file = %this.name, "an upload's reader panicked; the upload fails");
                }
            }
        }
        Poll::Ready(Err(std::io::Error::other(format!(
            "the reader of file {:?} panicked",
            this.name
        ))))
    }
}

/// A file of an upload, open or to open.
enum Opening {
    Ready(BodyReader),
    Path(PathBuf),
}

/// Opens file `index` of an upload for reading (a path is opened by the
/// caller of this, on the runtime, without holding the sources).
fn open(sources: &Sources, index: usize) -> std::io::Result<Opening> {
    let Some((name, source)) = sources.files.get(index) else {
        return Err(std::io::Error::other(format!("the upload has no file {index}")));
    };
    match &source.0 {
        Source::Path(path) => Ok(Opening::Path(path.clone())),
        Source::Bytes(bytes) => Ok(Opening::Ready(Box::pin(futures_util::io::Cursor::new(bytes.clone())))),
        Source::Reader(reader, _) => match reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(r) => Ok(Opening::Ready(Box::pin(Guarded {
                reader: r,
                name: name.clone(),
                panicked: false,
            }))),
            None => Err(std::io::Error::other(format!(
                "the reader of file {name:?} was already read"
            ))),
        },
    }
}
