//! What the client core hands out: answers for waiters, hook
//! notifications, and the outputs a driver performs.

use http::Request;

use crate::auth_machine::{CredentialRequestId, CredentialSource, RequestId};
use crate::error::{Error, Result};
use crate::live::LiveEvent;
use crate::nodes::NodeSwitch;
use crate::ops::{Reply, RequestKind};
use crate::ws::SubId;

/// A successful result for a waiter.
// Moved once, from the core to the waiter: boxing the reply would cost an
// allocation per query for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Answer {
    /// An operation's reply ([`ClientCore::submit`](super::ClientCore::submit)).
    Reply(Reply),
    /// The WebSocket is authenticated ([`ClientCore::connect`](super::ClientCore::connect)).
    Connected,
    /// The WebSocket is closed ([`ClientCore::disconnect`](super::ClientCore::disconnect)).
    Disconnected,
    /// The server acknowledged the subscription ([`ClientCore::subscribe`](super::ClientCore::subscribe)).
    Subscribed(SubId),
}

impl Answer {
    /// The typed reply an operation asked for: `answer.into_reply::<QueryResponse>()`.
    /// Any other answer is a routing bug, reported as [`Error::Runtime`].
    pub fn into_reply<T: TryFrom<Reply, Error = Reply>>(self) -> Result<T> {
        match self {
            Answer::Reply(reply) => T::try_from(reply).map_err(Reply::unexpected),
            other => Err(other.unexpected()),
        }
    }

    /// The subscription a [`ClientCore::subscribe`](super::ClientCore::subscribe) answered.
    pub fn into_subscribed(self) -> Result<SubId> {
        match self {
            Answer::Subscribed(sub) => Ok(sub),
            other => Err(other.unexpected()),
        }
    }

    fn unexpected(self) -> Error {
        match self {
            Answer::Reply(reply) => reply.unexpected(),
            other => Error::Runtime(format!("the driver answered with the wrong kind of reply: {other:?}")),
        }
    }
}

/// A notification for the application's hooks.
#[derive(Debug, Clone)]
pub enum Hook {
    /// The WebSocket is authenticated (after every (re)connect).
    Connected,
    /// The WebSocket closed or dropped, with the reason.
    Disconnected(String),
    /// A connection-level error of the WebSocket.
    Error(Error),
    /// The client moved to another node of its cluster ([`crate::nodes`]).
    NodeChanged(NodeSwitch),
}

/// What the driver must do next. Its `Debug` shows no request header or
/// body and no frame text (they carry tokens and passwords).
pub enum CoreOutput<W> {
    /// Send this HTTP request; feed the answer to
    /// [`ClientCore::handle_http`](super::ClientCore::handle_http) (decoded with [`crate::decode`] for `kind`)
    /// or [`ClientCore::handle_http_response`](super::ClientCore::handle_http_response), or the failure to
    /// [`ClientCore::handle_http_error`](super::ClientCore::handle_http_error).
    SendHttp {
        /// Echo this back.
        id: RequestId,
        /// What the request is: it picks the decoder.
        kind: RequestKind,
        /// The request, complete with headers.
        request: Request<Vec<u8>>,
    },
    /// Send this upload: the head (the transport adds `Content-Length:
    /// plan.content_length`) and its body streamed segment by segment from
    /// the caller's sources. Feed the answer, decoded for
    /// [`RequestKind::Upload`], like a [`CoreOutput::SendHttp`]'s.
    SendUpload {
        /// Echo this back.
        id: RequestId,
        /// The head, complete with headers.
        request: Request<()>,
        /// The body.
        plan: crate::files::UploadPlan,
    },
    /// Open a WebSocket; report [`ClientCore::handle_socket_open`](super::ClientCore::handle_socket_open) or
    /// [`ClientCore::handle_socket_closed`](super::ClientCore::handle_socket_closed) with the same `attempt`.
    OpenSocket {
        /// The URL.
        url: String,
        /// Identifies this socket in later reports.
        attempt: u64,
    },
    /// Send a text frame on the open socket.
    SendText(String),
    /// Send a control ping on the open socket.
    SendPing,
    /// Close the open socket with this close frame (the core already counts
    /// it as gone; later reports of it are ignored).
    CloseSocket {
        /// Close code.
        code: u16,
        /// Reason.
        reason: &'static str,
    },
    /// Call the application's credential callback; feed the result to
    /// [`ClientCore::handle_credentials`](super::ClientCore::handle_credentials) (or report a panic with
    /// [`ClientCore::handle_callback_panicked`](super::ClientCore::handle_callback_panicked)). The core enforces the time
    /// limit itself.
    FetchCredentials {
        /// Echo this back.
        id: CredentialRequestId,
        /// Which callback.
        source: CredentialSource,
    },
    /// Answer a waiter.
    Complete {
        /// The waiter handed in with the command.
        waiter: W,
        /// Its result.
        result: Result<Answer>,
    },
    /// Hand these events, in order, to the subscriber's queue. If they do not
    /// all fit, report [`ClientCore::handle_subscriber_full`](super::ClientCore::handle_subscriber_full).
    Deliver {
        /// The subscription.
        sub: SubId,
        /// Its events (all the events of one input, batched).
        events: Vec<LiveEvent>,
    },
    /// The subscription is over: after the events already delivered, its
    /// stream ends, with this error if any. Drop its queue.
    EndSubscription {
        /// The subscription.
        sub: SubId,
        /// Why, unless it ended cleanly.
        error: Option<Error>,
    },
    /// Notify the application's hook.
    Hook(Hook),
}

impl<W: std::fmt::Debug> std::fmt::Debug for CoreOutput<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::framing::{RequestSummary, TextSummary};
        match self {
            CoreOutput::SendHttp { id, kind, request } => f
                .debug_struct("SendHttp")
                .field("id", id)
                .field("kind", kind)
                .field("request", &RequestSummary(request))
                .finish(),
            CoreOutput::SendUpload { id, request, plan } => f
                .debug_struct("SendUpload")
                .field("id", id)
                .field("request", &format_args!("{} {}", request.method(), request.uri()))
                .field("plan", plan)
                .finish(),
            CoreOutput::OpenSocket { url, attempt } => f
                .debug_struct("OpenSocket")
                .field("url", url)
                .field("attempt", attempt)
                .finish(),
            CoreOutput::SendText(t) => f.debug_tuple("SendText").field(&TextSummary(t)).finish(),
            CoreOutput::SendPing => f.write_str("SendPing"),
            CoreOutput::CloseSocket { code, reason } => f
                .debug_struct("CloseSocket")
                .field("code", code)
                .field("reason", reason)
                .finish(),
            CoreOutput::FetchCredentials { id, source } => f
                .debug_struct("FetchCredentials")
                .field("id", id)
                .field("source", source)
                .finish(),
            CoreOutput::Complete { waiter, result } => f
                .debug_struct("Complete")
                .field("waiter", waiter)
                .field("result", result)
                .finish(),
            CoreOutput::Deliver { sub, events } => f
                .debug_struct("Deliver")
                .field("sub", sub)
                .field("events", &events.len())
                .finish(),
            CoreOutput::EndSubscription { sub, error } => f
                .debug_struct("EndSubscription")
                .field("sub", sub)
                .field("error", error)
                .finish(),
            CoreOutput::Hook(h) => f.debug_tuple("Hook").field(h).finish(),
        }
    }
}
