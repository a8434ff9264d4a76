//! The WebSocket task, written once: the runtime connects a byte stream,
//! async-tungstenite does the handshake and the framing, and this task
//! moves frames between the socket and the driver. The client core decides
//! what they mean.

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::StreamExt as _;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::{Either, select};
use futures_util::{AsyncReadExt as _, AsyncWriteExt as _};
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
            let mut stream = R::connect(&url).await.map_err(|e| e.to_string())?;
            upgrade(&url, &mut stream).await?;
            Ok::<_, String>(stream)
        });
        let limit = Box::pin(R::sleep_until(crate::driver::later(R::now(), settings.connect_timeout)));
        let mut stream = match select(handshake, limit).await {
            Either::Left((Ok(stream), _)) => stream,
            Either::Left((Err(why), _)) => return say(SocketReport::Closed(None, why)),
            Either::Right(_) => return say(SocketReport::Closed(None, "connect timed out".into())),
        };
        let (tx, mut outgoing) = crate::sync::channel();
        say(SocketReport::Open(tx));
        // The core's first frame is `authenticate`, which carries the token.
        // It is framed and written here, not by tungstenite, whose trace
        // logs print every frame it sends (and every upgrade request, which
        // is why the upgrade above is this crate's own too).
        let first = match outgoing.recv().await {
            None => return say(SocketReport::Closed(None, "closed by the client".into())),
            Some(OutFrame::Text(text)) => {
                if let Err(e) = write_frame(&mut stream, text.as_bytes()).await {
                    return say(SocketReport::Closed(None, e.to_string()));
                }
                None
            }
            Some(other) => Some(other),
        };
        let ws = async_tungstenite::WebSocketStream::from_raw_socket(stream, Role::Client, Some(config)).await;
        let (mut sink, mut source) = ws.split();
        // One loop moves frames both ways: what the driver wants sent, and
        // what arrives. Sending waits for the socket, so a slow server
        // slows the sender (the driver never waits for it).
        enum Step {
            In(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
            Out(Option<OutFrame>),
        }
        let mut first = first;
        let (code, reason) = loop {
            let step = match first.take() {
                Some(frame) => Step::Out(Some(frame)),
                None => {
                    std::future::poll_fn(|cx| {
                        if let Poll::Ready(frame) = source.poll_next_unpin(cx) {
                            return Poll::Ready(Step::In(frame));
                        }
                        outgoing.poll_recv(cx).map(Step::Out)
                    })
                    .await
                }
            };
            match step {
                Step::In(Some(Ok(Message::Close(frame)))) => {
                    // Answer the server's close: tungstenite queued the
                    // reply and writes it as the stream is read on to its
                    // end (the server then closes the connection). Within
                    // a second.
                    let limit = Box::pin(R::sleep_until(crate::driver::later(R::now(), Duration::from_secs(1))));
                    let drain = Box::pin(async { while source.next().await.is_some() {} });
                    let _ = select(drain, limit).await;
                    break frame.map_or((None, String::new()), |f| {
                        (Some(u16::from(f.code)), f.reason.to_string())
                    });
                }
                Step::In(Some(Ok(m))) => say(SocketReport::Frame(m)),
                Step::In(Some(Err(e))) => break (None, e.to_string()),
                Step::In(None) => break (None, String::new()),
                // The driver no longer wants the socket.
                Step::Out(None) => {
                    let _ = sink.close(None).await;
                    break (None, "closed by the client".into());
                }
                Step::Out(Some(frame)) => {
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
                    if let Err(e) = sink.send(message).await {
                        break (None, e.to_string());
                    }
                    if closing {
                        break (None, "closed by the client".into());
                    }
                }
            }
        };
        say(SocketReport::Closed(code, reason));
    });
}

/// The HTTP upgrade (RFC 6455 §4.1), written and read here so that no
/// dependency logs it. No credentials travel in it.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(url: &str, stream: &mut S) -> Result<(), String> {
    use async_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
    let uri: http::Uri = url.parse().map_err(|_| format!("not a URL: {url}"))?;
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let key = generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    let io = |e: std::io::Error| format!("WebSocket upgrade failed: {e}");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    // The answer's head, and nothing after it: the server says nothing more
    // before it has the `authenticate` frame.
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("WebSocket upgrade failed: an answer head over 16 KiB".into());
        }
        if stream.read(&mut byte).await.map_err(io)? == 0 {
            return Err("WebSocket upgrade failed: the server closed the connection".into());
        }
        head.push(byte[0]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    response
        .parse(&head)
        .map_err(|e| format!("WebSocket upgrade failed: {e}"))?;
    if response.code != Some(101) {
        let code = response.code.unwrap_or(0);
        let reason = response.reason.unwrap_or("");
        return Err(format!("WebSocket upgrade refused: HTTP {code} {reason}"));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let has = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has("upgrade", "websocket") || !has("connection", "upgrade") {
        return Err("WebSocket upgrade failed: the answer does not upgrade to websocket".into());
    }
    if header("sec-websocket-accept").as_deref() != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err("WebSocket upgrade failed: a wrong Sec-WebSocket-Accept".into());
    }
    // Nothing was asked for: an extension (compression) or a subprotocol
    // the client does not speak would corrupt every frame after this.
    if header("sec-websocket-extensions").is_some() || header("sec-websocket-protocol").is_some() {
        return Err("WebSocket upgrade failed: an extension or subprotocol that was not asked for".into());
    }
    Ok(())
}

/// Writes one masked text frame (RFC 6455 §5.2).
async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, payload: &[u8]) -> std::io::Result<()> {
    use std::hash::{BuildHasher, Hasher};
    // A fresh mask per frame, from the process's random hasher keys.
    let mask = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        .to_le_bytes();
    let mask = [mask[0], mask[1], mask[2], mask[3]];
    let len = payload.len();
    let mut frame = Vec::with_capacity(len + 14);
    frame.push(0x81); // FIN, text
    match len {
        0..=125 => frame.push(0x80 | len as u8),
        126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await?;
    stream.flush().await
}
