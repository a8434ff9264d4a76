//! The WebSocket transport: one reader and one writer per socket. They move
//! frames; the client core decides what they mean.

use futures_util::{SinkExt, StreamExt};
use kalam_client::{OutFrame, Socket, SocketSettings};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

/// Opens a socket to `url` and runs its reader and writer until it closes.
pub(crate) fn open(url: String, settings: SocketSettings, socket: Socket<Message>) {
    tokio::spawn(async move {
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(settings.max_frame);
        config.max_frame_size = Some(settings.max_frame);
        let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        let stream = match tokio::time::timeout(settings.connect_timeout, connect).await {
            Ok(Ok((stream, _response))) => stream,
            Ok(Err(e)) => return socket.closed(None, format!("could not connect: {e}")),
            Err(_) => return socket.closed(None, "connect timed out".into()),
        };
        let (mut sink, mut source) = stream.split();
        let mut outgoing = socket.open();
        let writer = tokio::spawn(async move {
            while let Some(frame) = outgoing.recv().await {
                let (message, closing) = match frame {
                    OutFrame::Text(t) => (Message::Text(t.into()), false),
                    OutFrame::Ping => (Message::Ping(Default::default()), false),
                    OutFrame::Close(code, reason) => (
                        Message::Close(Some(CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.into(),
                        })),
                        true,
                    ),
                };
                if sink.send(message).await.is_err() || closing {
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
                Ok(m) => socket.frame(m),
                Err(e) => {
                    close.1 = e.to_string();
                    break;
                }
            }
        }
        writer.abort();
        socket.closed(close.0, close.1);
    });
}
