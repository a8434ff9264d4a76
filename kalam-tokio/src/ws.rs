//! The WebSocket transport: one reader and one writer task per socket. The
//! tasks move frames; the session machine decides what they mean.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// What a socket's tasks report to the driver.
pub(crate) enum SocketEvent {
    /// The handshake finished; frames for the socket go into this sender.
    Open(mpsc::UnboundedSender<Message>),
    /// A frame arrived.
    Frame(Message),
    /// The socket is gone (close code and reason if the server sent one).
    Closed(Option<u16>, String),
}

/// Opens a socket to `url` and runs its reader and writer until it closes.
/// Every report carries `attempt`, so the driver can ignore a stale socket.
pub(crate) fn spawn_socket(
    url: String,
    attempt: u64,
    connect_timeout: Duration,
    max_frame: usize,
    report: impl Fn(u64, SocketEvent) + Send + Sync + Clone + 'static,
) {
    tokio::spawn(async move {
        let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        config.max_message_size = Some(max_frame);
        config.max_frame_size = Some(max_frame);
        let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        let stream = match tokio::time::timeout(connect_timeout, connect).await {
            Ok(Ok((stream, _response))) => stream,
            Ok(Err(e)) => return report(attempt, SocketEvent::Closed(None, format!("could not connect: {e}"))),
            Err(_) => return report(attempt, SocketEvent::Closed(None, "connect timed out".into())),
        };
        let (mut sink, mut source) = stream.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        report(attempt, SocketEvent::Open(tx));
        let writer = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let closing = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || closing {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let mut close: (Option<u16>, String) = (None, String::new());
        while let Some(frame) = source.next().await {
            match frame {
                Ok(Message::Close(frame)) => {
                    if let Some(f) = frame {
                        close = (Some(u16::from(f.code)), f.reason.to_string());
                    }
                    break;
                }
                Ok(m) => report(attempt, SocketEvent::Frame(m)),
                Err(e) => {
                    close.1 = e.to_string();
                    break;
                }
            }
        }
        writer.abort();
        report(attempt, SocketEvent::Closed(close.0, close.1));
    });
}

/// A close frame with a code and reason.
pub(crate) fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}
