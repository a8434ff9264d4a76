//! The messages between the handles, the driver and its tasks.

use kalam_proto::{
    Answer, AuthProvider, CredentialRequestId, Decoded, Operation, RequestId, Result, SubId, SubscriptionInfo,
    SubscriptionOptions, TransportError,
};

use crate::sync::{QueueTx, ReplyTx};

/// A waiter: the reply slot of one call.
pub(crate) type Waiter = ReplyTx<Result<Answer>>;

/// What the handles ask of the driver.
pub(crate) enum Command {
    Submit(Operation, Waiter),
    /// An upload or a download, with the caller's sources or body slot.
    SubmitFiles(Operation, crate::files::Attach, Waiter),
    SetAuth(AuthProvider),
    GetAuth(ReplyTx<AuthProvider>),
    Connect(Option<Waiter>),
    Disconnect(Waiter),
    Subscribe {
        sql: String,
        options: Option<SubscriptionOptions>,
        queue: QueueTx,
        reply: Waiter,
    },
    Unsubscribe(SubId),
    /// Whether the WebSocket is up and authenticated.
    IsConnected(ReplyTx<bool>),
    /// The live queries open.
    Subscriptions(ReplyTx<Vec<SubscriptionInfo>>),
}

/// What comes back to the driver: answers of its own futures.
pub(crate) enum Event {
    Http(RequestId, std::result::Result<Decoded, TransportError>),
    Credentials(CredentialRequestId, CallbackOutcome),
}

pub(crate) enum CallbackOutcome {
    Answered(Result<AuthProvider>),
    Panicked,
    /// The core's limit passed first (it has already given up on it).
    Abandoned,
}

/// What a socket reports to the driver that polls it.
pub(crate) enum SocketReport {
    /// Connected and upgraded: ready for the core's first frame.
    Open,
    Frame(crate::socket::Frame),
    Closed(Option<u16>, String),
    /// Could not connect or upgrade.
    Failed(kalam_proto::TransportError),
}

/// A frame to send. Its `Debug` shows a text frame's size, not its text.
#[derive(Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// A text frame.
    Text(String),
    /// A control ping.
    Ping,
    /// A close frame; the socket is closed after it.
    Close(u16, &'static str),
}

impl std::fmt::Debug for OutFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutFrame::Text(t) => write!(f, "Text(<{} bytes>)", t.len()),
            OutFrame::Ping => f.write_str("Ping"),
            OutFrame::Close(code, reason) => f.debug_tuple("Close").field(code).field(reason).finish(),
        }
    }
}
