//! The WebSocket, written once: the runtime connects a byte stream,
//! async-tungstenite does the framing, and the driver task polls the socket
//! itself, beside its HTTP exchanges, commands and timer. A frame goes from
//! the socket through the client core into the subscriber's queue in one
//! task: one hop from the socket to the subscriber. The client core decides
//! what frames mean.
//!
//! A socket's life: [`Socket::open`] starts the TCP connection and the
//! upgrade (within the connect timeout); once connected it reports
//! [`SocketReport::Open`]. The core's first frame, `authenticate`, is
//! written raw by this module (see [`write_frame`]) and tungstenite takes
//! the socket over after it. From then on [`Socket::poll`] writes what the
//! driver queued with [`Socket::send`] and reads the next frame. A server's
//! close is answered, and a socket the driver no longer wants is closed, in
//! a small task of its own ([`Socket::retire`]), so the driver never waits
//! for either.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::future::{Either, select};
use futures_util::{AsyncReadExt as _, AsyncWriteExt as _, Sink, SinkExt as _, StreamExt as _};
use kalam_proto::{Incoming, TransportError};

use crate::adapter::{Runtime, SocketSettings};
use crate::msg::{OutFrame, SocketReport};

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

type Step<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;
type Ws<R> = WebSocketStream<<R as Runtime>::Stream>;

enum State<R: Runtime> {
    /// TCP (or TLS) and the upgrade, within the connect timeout.
    Connecting(Pin<Box<dyn Future<Output = Result<R::Stream, TransportError>> + Send>>),
    /// Upgraded and reported open; waiting for the core's first frame.
    Upgraded(R::Stream),
    /// Writing the first frame raw, then handing the socket to tungstenite.
    Authenticating(Step<Ws<R>>),
    Open(Box<Ws<R>>),
    /// Reported closed; nothing more comes.
    Done,
}

/// One WebSocket connection, owned and polled by the driver task.
pub(crate) struct Socket<R: Runtime> {
    attempt: u64,
    state: State<R>,
    /// Frames to write, in order; an unbounded queue as before (the core
    /// paces what it sends below the server's rate).
    out: VecDeque<OutFrame>,
    /// A frame was handed to tungstenite and not yet flushed.
    unflushed: bool,
    config: WebSocketConfig,
}

impl<R: Runtime> Socket<R> {
    /// Starts connecting to `url`; the reports carry `attempt`.
    pub(crate) fn open(url: String, settings: SocketSettings, attempt: u64) -> Self {
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(settings.max_frame);
        config.max_frame_size = Some(settings.max_frame);
        let connect = async move {
            let handshake = Box::pin(async {
                let mut stream = R::connect(&url, &settings.net)
                    .await
                    .map_err(|e| crate::adapter::net::connect_error(&e))?;
                upgrade(&url, &mut stream).await.map_err(TransportError::Connect)?;
                Ok::<_, TransportError>(stream)
            });
            let limit = Box::pin(R::sleep_until(crate::driver::later(R::now(), settings.connect_timeout)));
            match select(handshake, limit).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => Err(TransportError::Timeout(settings.connect_timeout)),
            }
        };
        Socket {
            attempt,
            state: State::Connecting(Box::pin(connect)),
            out: VecDeque::new(),
            unflushed: false,
            config,
        }
    }

    /// The attempt this socket belongs to.
    pub(crate) fn attempt(&self) -> u64 {
        self.attempt
    }

    /// Queues a frame; [`poll`](Self::poll) writes it.
    pub(crate) fn send(&mut self, frame: OutFrame) {
        self.out.push_back(frame);
    }

    /// Writes what is queued (as far as the socket takes it without
    /// waiting) and reads the next report: open, a frame, or closed. After
    /// `Closed` it is pending for ever.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<(u64, SocketReport)> {
        let attempt = self.attempt;
        let closed = |state: &mut State<R>, code, reason| {
            *state = State::Done;
            Poll::Ready((attempt, SocketReport::Closed(code, reason)))
        };
        loop {
            match &mut self.state {
                State::Connecting(connect) => match connect.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(error)) => {
                        self.state = State::Done;
                        return Poll::Ready((attempt, SocketReport::Failed(error)));
                    }
                    Poll::Ready(Ok(stream)) => {
                        self.state = State::Upgraded(stream);
                        return Poll::Ready((attempt, SocketReport::Open));
                    }
                },
                State::Upgraded(_) => {
                    let Some(first) = self.out.pop_front() else {
                        return Poll::Pending;
                    };
                    let State::Upgraded(mut stream) = std::mem::replace(&mut self.state, State::Done) else {
                        unreachable!("matched above")
                    };
                    let config = self.config;
                    // The core's first frame is `authenticate`, which
                    // carries the token. It is framed and written here, not
                    // by tungstenite, whose trace logs print every frame it
                    // sends (and every upgrade request, which is why the
                    // upgrade is this module's own too).
                    let text = match first {
                        OutFrame::Text(text) => Some(text),
                        other => {
                            self.out.push_front(other);
                            None
                        }
                    };
                    self.state = State::Authenticating(Box::pin(async move {
                        if let Some(text) = text {
                            write_frame(&mut stream, text.as_bytes())
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        Ok(WebSocketStream::from_raw_socket(stream, Role::Client, Some(config)).await)
                    }));
                }
                State::Authenticating(step) => match step.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(why)) => return closed(&mut self.state, None, why),
                    Poll::Ready(Ok(ws)) => self.state = State::Open(Box::new(ws)),
                },
                State::Open(ws) => {
                    if let Err(e) = write(ws, &mut self.out, &mut self.unflushed, cx) {
                        return closed(&mut self.state, None, e.to_string());
                    }
                    return match ws.poll_next_unpin(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Some(Ok(Message::Close(frame)))) => {
                            let State::Open(ws) = std::mem::replace(&mut self.state, State::Done) else {
                                unreachable!("matched above")
                            };
                            answer_close::<R>(*ws);
                            let (code, reason) = frame.map_or((None, String::new()), |f| {
                                (Some(u16::from(f.code)), f.reason.to_string())
                            });
                            Poll::Ready((attempt, SocketReport::Closed(code, reason)))
                        }
                        Poll::Ready(Some(Ok(m))) => Poll::Ready((attempt, SocketReport::Frame(m))),
                        Poll::Ready(Some(Err(e))) => closed(&mut self.state, None, e.to_string()),
                        Poll::Ready(None) => closed(&mut self.state, None, String::new()),
                    };
                }
                State::Done => return Poll::Pending,
            }
        }
    }

    /// Lets go of the socket: what is queued and then a close frame
    /// (`close`), or a bare close, are written in a task of its own, within
    /// a second. A socket not yet open is simply dropped.
    pub(crate) fn retire(self, close: Option<(u16, &'static str)>) {
        let Socket { state, mut out, .. } = self;
        let State::Open(ws) = state else { return };
        let mut ws = *ws;
        R::spawn(async move {
            let finish = Box::pin(async move {
                while let Some(frame) = out.pop_front() {
                    ws.feed(message(frame)).await?;
                }
                match close {
                    Some((code, reason)) => ws.send(message(OutFrame::Close(code, reason))).await,
                    None => ws.close(None).await,
                }
            });
            let limit = Box::pin(R::sleep_until(crate::driver::later(R::now(), Duration::from_secs(1))));
            let _ = select(finish, limit).await;
        });
    }
}

fn message(frame: OutFrame) -> Message {
    match frame {
        OutFrame::Text(t) => Message::Text(t.into()),
        OutFrame::Ping => Message::Ping(Default::default()),
        OutFrame::Close(code, reason) => Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })),
    }
}

/// Hands the queued frames to tungstenite while it takes them, then
/// flushes; whatever the socket cannot take yet stays queued, and the
/// driver is woken when it can.
fn write<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    out: &mut VecDeque<OutFrame>,
    unflushed: &mut bool,
    cx: &mut Context<'_>,
) -> Result<(), async_tungstenite::tungstenite::Error> {
    while !out.is_empty() {
        match Pin::new(&mut *ws).poll_ready(cx) {
            Poll::Pending => break,
            Poll::Ready(r) => r?,
        }
        let frame = out.pop_front().expect("not empty");
        Pin::new(&mut *ws).start_send(message(frame))?;
        *unflushed = true;
    }
    if *unflushed && let Poll::Ready(r) = Pin::new(&mut *ws).poll_flush(cx) {
        *unflushed = false;
        r?;
    }
    Ok(())
}

/// Answers a server's close: tungstenite queued the reply and writes it as
/// the stream is read on to its end (the server then closes the
/// connection). In a task of its own, within a second.
fn answer_close<R: Runtime>(mut ws: Ws<R>) {
    R::spawn(async move {
        let drain = Box::pin(async move { while ws.next().await.is_some() {} });
        let limit = Box::pin(R::sleep_until(crate::driver::later(R::now(), Duration::from_secs(1))));
        let _ = select(drain, limit).await;
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
