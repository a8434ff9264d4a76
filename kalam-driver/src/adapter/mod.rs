//! What a runtime adapter (`kalam-tokio`, `kalam-async-std`) needs, and an
//! application does not: the [`Runtime`] trait it implements, the settings
//! it is built with, the idle-connection pool, how to connect (proxies,
//! tunnels, TLS settings: [`net`]), and
//! the transport pieces that do not depend on the runtime (an answer body
//! that gives its connection back at its end, the error for TLS not
//! compiled in). The crate root holds the application's API.
//!
//! ## What stays in each adapter, and why
//!
//! A runtime call stays in its adapter: spawning, timers, TCP connect, the
//! TLS connector of its I/O traits, and the HTTP/1.1 engine (hyper on
//! Tokio, async-h1 on async-std). The WebSocket is written once, over any
//! connected byte stream (`socket`), because one engine (async-tungstenite)
//! serves both runtimes. HTTP/1.1 could follow it: one engine over a byte
//! stream would make the pool, early answers and body streaming single
//! code. Two reasons keep the engines apart today: hyper is the Tokio
//! ecosystem's HTTP engine (its HTTP/2, which the official client offers,
//! comes with it), and on Tokio the client matches the bare hyper loop
//! (0.97–0.98x one query at a time, README "Performance"), so moving off it
//! has no speed to win and an engine to maintain. The one behaviour both
//! engines had to be taught, taking an answer that comes before the upload
//! is read, is done in each engine's own terms (hyper reads while it
//! writes and only needs the writes to a closed peer to stop; async-h1
//! writes and reads in two futures this client races) and checked by the
//! same conformance scenario on both. A decision about it is not the
//! adapter's: when a connection may be reused is written once,
//! [`reusable_after`] (for an engine that cannot see a close itself).

mod body;
pub mod net;
pub mod pool;
mod rt;

pub use body::ReleaseAtEnd;
pub use net::{Network, Target};
pub use rt::{BodyChunks, BodyReader, HttpSettings, Runtime, SocketSettings};

use kalam_proto::TransportError;

/// Whether a connection may carry another request after an answer with
/// `status` and its `Connection` header, for an HTTP engine that cannot
/// see the server close it (async-h1; hyper can, and asks `is_closed`):
/// the request went out whole, the server did not say `close`, and the
/// answer is not an error (a server answers some errors, a refused token,
/// before it reads the body, and then closes the connection, often without
/// saying so; reused, it fails the next request, which it never got). The
/// cost: a burst of refused requests opens new connections for their
/// retries (never more at once than the in-flight cap).
pub fn reusable_after(sent_whole: bool, status: u16, connection: Option<&str>) -> bool {
    sent_whole && status < 400 && connection.is_none_or(|v| !v.trim().eq_ignore_ascii_case("close"))
}

/// The error of an exchange whose connection failed before any byte of an
/// answer came (`answer_bytes` is 0): on a kept-alive connection taken
/// from the pool that is [`TransportError::ClosedBeforeAnswer`] (the
/// server's idle close may have raced the request, or it may have failed
/// running it; the request is not sent again, since a statement must not
/// run twice); otherwise the I/O error as it is.
pub fn failed_exchange(reused: bool, answer_bytes: u64, io: String) -> TransportError {
    if reused && answer_bytes == 0 {
        TransportError::ClosedBeforeAnswer
    } else {
        TransportError::Io(io)
    }
}

/// The error for `https://` or `wss://` when `adapter` (the crate name) was
/// built without its `rustls` feature.
pub fn tls_not_compiled(adapter: &str) -> std::io::Error {
    std::io::Error::other(format!("https:// and wss:// need the `rustls` feature of {adapter}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_alive_connection_closed_unanswered_is_its_own_error() {
        assert_eq!(
            failed_exchange(true, 0, "eof".into()),
            TransportError::ClosedBeforeAnswer
        );
        assert_eq!(
            failed_exchange(true, 12, "eof".into()),
            TransportError::Io("eof".into())
        );
        assert_eq!(
            failed_exchange(false, 0, "eof".into()),
            TransportError::Io("eof".into())
        );
    }

    #[test]
    fn reuse_rule() {
        assert!(reusable_after(true, 200, None));
        assert!(reusable_after(true, 200, Some("keep-alive")));
        assert!(!reusable_after(true, 200, Some(" Close")));
        assert!(!reusable_after(false, 200, None), "a request not sent whole");
        assert!(!reusable_after(true, 401, None), "an error answer");
        assert!(!reusable_after(true, 500, None));
    }
}
