//! An answer's body that gives its connection back at its end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_io::AsyncRead;

use super::pool::IdlePool;

/// An answer's body (any reader) whose connection goes back to `pool` once
/// the body has been read to its end, if `usable` still says so; a body
/// dropped before its end drops its connection (it cannot carry another
/// request with an answer half read).
pub struct ReleaseAtEnd<B, C> {
    body: B,
    release: Option<(C, Arc<IdlePool<C>>)>,
    usable: fn(&C) -> bool,
}

impl<B, C> ReleaseAtEnd<B, C> {
    /// `body`, with the connection to release at its end (`None`: the
    /// connection is not to be reused).
    pub fn new(body: B, release: Option<(C, Arc<IdlePool<C>>)>, usable: fn(&C) -> bool) -> Self {
        ReleaseAtEnd { body, release, usable }
    }
}

impl<B: AsyncRead + Unpin, C: Unpin> AsyncRead for ReleaseAtEnd<B, C> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = std::task::ready!(Pin::new(&mut this.body).poll_read(cx, buf))?;
        if n == 0
            && !buf.is_empty()
            && let Some((conn, pool)) = this.release.take()
            && (this.usable)(&conn)
        {
            pool.put(conn, Instant::now());
        }
        Poll::Ready(Ok(n))
    }
}
