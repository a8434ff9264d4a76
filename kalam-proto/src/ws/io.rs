//! What goes into the WebSocket session and what comes out of it.

use super::*;

/// A frame the driver received.
#[derive(Debug, Clone)]
pub enum Incoming<'a> {
    /// A text frame.
    Text(&'a str),
    /// A binary frame.
    Binary(&'a [u8]),
    /// A control pong (or ping: any frame proves the server is alive).
    Control,
}

/// What the driver must do next. Its `Debug` shows the size of a text
/// frame, not the text (`authenticate` carries the token).
#[derive(Clone)]
pub enum WsOutput {
    /// Get an access token from the auth machine
    /// ([`Operation::Token`](crate::Operation::Token)) and feed it to
    /// [`WsSession::handle_token`]. `fresh`: ask the dynamic provider again.
    NeedToken {
        /// Ask for new credentials rather than a cached token.
        fresh: bool,
    },
    /// Open a WebSocket to this URL; report [`WsSession::handle_connected`]
    /// or [`WsSession::handle_closed`] with the same `attempt`.
    Connect {
        /// `ws://…/v1/ws?compress=false` or `wss://…`.
        url: String,
        /// Identifies this connection in later reports.
        attempt: u64,
    },
    /// Send a text frame.
    SendText(String),
    /// Send a control ping.
    SendPing,
    /// Close the socket (the session already counts it as gone).
    Close {
        /// Close code.
        code: u16,
        /// Reason.
        reason: &'static str,
    },
    /// Tell the auth machine this token was refused
    /// ([`AuthMachine::handle_token_rejected`](crate::AuthMachine::handle_token_rejected)).
    TokenRejected(Secret),
    /// Something to report to the application.
    Event(WsEvent),
}

impl std::fmt::Debug for WsOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsOutput::NeedToken { fresh } => f.debug_struct("NeedToken").field("fresh", fresh).finish(),
            WsOutput::Connect { url, attempt } => f
                .debug_struct("Connect")
                .field("url", url)
                .field("attempt", attempt)
                .finish(),
            WsOutput::SendText(t) => f
                .debug_tuple("SendText")
                .field(&crate::framing::TextSummary(t))
                .finish(),
            WsOutput::SendPing => f.write_str("SendPing"),
            WsOutput::Close { code, reason } => f
                .debug_struct("Close")
                .field("code", code)
                .field("reason", reason)
                .finish(),
            WsOutput::TokenRejected(t) => f.debug_tuple("TokenRejected").field(t).finish(),
            WsOutput::Event(e) => f.debug_tuple("Event").field(e).finish(),
        }
    }
}

/// Session-level events (the `on_connect` / `on_disconnect` / `on_error`
/// hooks) and subscription events.
#[derive(Debug, Clone)]
pub enum WsEvent {
    /// Authenticated and ready; subscriptions are (re)sent.
    Connected,
    /// The connection ended.
    Disconnected {
        /// Why.
        reason: String,
        /// Whether the session will reconnect by itself.
        will_reconnect: bool,
    },
    /// A connection-level error (refused auth, protocol or rate-limit error).
    Error(Error),
    /// An event of one subscription.
    Sub(SubId, LiveEvent),
}
