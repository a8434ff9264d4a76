//! The WebSocket task, written once: the runtime connects a byte stream,
//! async-tungstenite does the handshake and the framing, and this task
//! moves frames between the socket and the driver. The client core decides
//! what they mean.

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use futures_util::StreamExt as _;
use futures_util::future::{Either, select};
use kalam_proto::Incoming;

use crate::msg::{Event, OutFrame, SocketReport};
use crate::rt::{Runtime, SocketSettings};
use crate::sync::Sender;

/// A received WebSocket message.
pub(crate) type Frame = Message;

/// A received frame as the session reads it.
pub(crate) fn incoming(frame: &Frame) -> Incoming<'_> {
    match frame {
        Message::Text(t) => Incoming::Text(t.as_str()),
        Message::Binary(b) => Incoming::Binary(b.as_ref()),
        _ => Incoming::Control,
    }
}

/// Opens a socket to `url` in a task of its own and runs it until it
/// closes; every report carries `attempt`.
pub(crate) fn open<R: Runtime>(url: String, settings: SocketSettings, attempt: u64, report: Sender<Event>) {
    R::spawn(async move {
        let say = |r: SocketReport| {
            let _ = report.send(Event::Socket(attempt, r));
        };
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(settings.max_frame);
        config.max_frame_size = Some(settings.max_frame);
        let handshake = Box::pin(async {
            let stream = R::connect(&url).await.map_err(|e| e.to_string())?;
            async_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
                .await
                .map_err(|e| format!("WebSocket handshake failed: {e}"))
        });
        let limit = Box::pin(R::sleep_until(R::now() + settings.connect_timeout));
        let ws = match select(handshake, limit).await {
            Either::Left((Ok((ws, _response)), _)) => ws,
            Either::Left((Err(why), _)) => return say(SocketReport::Closed(None, why)),
            Either::Right(_) => return say(SocketReport::Closed(None, "connect timed out".into())),
        };
        let (mut sink, mut source) = ws.split();
        let (tx, mut outgoing) = crate::sync::channel();
        say(SocketReport::Open(tx));
        let reader = Box::pin(async {
            while let Some(frame) = source.next().await {
                match frame {
                    Ok(Message::Close(frame)) => {
                        return frame.map_or((None, String::new()), |f| {
                            (Some(u16::from(f.code)), f.reason.to_string())
                        });
                    }
                    Ok(m) => say(SocketReport::Frame(m)),
                    Err(e) => return (None, e.to_string()),
                }
            }
            (None, String::new())
        });
        let writer = Box::pin(async move {
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
            let _ = sink.close(None).await;
        });
        let (code, reason) = match select(reader, writer).await {
            Either::Left((closed, _)) => closed,
            // The driver closed it, or no longer wants it.
            Either::Right(((), _)) => (None, "closed by the client".into()),
        };
        say(SocketReport::Closed(code, reason));
    });
}
