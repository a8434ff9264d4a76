//! Tokio's I/O traits where the client takes `futures` ones.
//!
//! The client is written once for every runtime, so its byte streams are
//! the `futures` crate's [`AsyncRead`]/[`AsyncWrite`]
//! (`download_file` writes into one, `download_file_reader` returns one,
//! `FileUpload::from_reader` reads from one). [`compat`] lets a Tokio type
//! (a `tokio::fs::File`, a `TcpStream`, a `DuplexStream`…) stand where one
//! is taken, and [`Compat`] lets a `futures` reader be read with Tokio's
//! `AsyncReadExt`:
//!
//! ```no_run
//! # async fn run(client: kalam_tokio::KalamLinkClient, file: kalam_tokio::FileRef) -> kalam_tokio::Result<()> {
//! let mut out = tokio::fs::File::create("copy.bin").await.map_err(kalam_tokio::Error::other)?;
//! client.download_file(&file, "app", "docs", &mut kalam_tokio::compat(&mut out)).await?;
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{AsyncRead, AsyncWrite};

/// A Tokio reader or writer as a `futures` one, and a `futures` reader as
/// a Tokio one.
#[derive(Debug)]
pub struct Compat<T>(T);

/// Wraps `io` (see the [module docs](self)).
pub fn compat<T>(io: T) -> Compat<T> {
    Compat(io)
}

impl<T> Compat<T> {
    /// The wrapped value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> AsyncWrite for Compat<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<T: tokio::io::AsyncRead + Unpin> AsyncRead for Compat<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let mut read = tokio::io::ReadBuf::new(buf);
        std::task::ready!(Pin::new(&mut self.0).poll_read(cx, &mut read))?;
        Poll::Ready(Ok(read.filled().len()))
    }
}

/// A `futures` reader read with Tokio's traits (a
/// `download_file_reader`'s body into `tokio::io::copy`, say).
impl<T: AsyncRead + Unpin> tokio::io::AsyncRead for Compat<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = std::task::ready!(Pin::new(&mut self.0).poll_read(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}
