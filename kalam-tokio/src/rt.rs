//! Tokio as a [`Runtime`]: spawn, clock, timer, hyper for HTTP,
//! tokio-tungstenite for the WebSocket.

use bytes::Bytes;
use kalam_client::{HttpSettings, Runtime, Socket, SocketSettings};
use kalam_proto::{ConnectionOptions, Endpoints, Error, Incoming, Result, TransportError};
use tokio_tungstenite::tungstenite::Message;

pub use crate::http::HttpClient;

/// The Tokio runtime (the type parameter of the client types).
#[derive(Debug, Clone, Copy)]
pub struct Tokio;

impl Runtime for Tokio {
    type Http = HttpClient;
    type Body = Bytes;
    type Frame = Message;
    type Sleep = tokio::time::Sleep;

    fn check() -> Result<()> {
        tokio::runtime::Handle::try_current()
            .map(drop)
            .map_err(|_| Error::Runtime("KalamLinkClient must be built inside a Tokio runtime".into()))
    }

    fn spawn<F>(future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(future);
    }

    fn now() -> std::time::Instant {
        // Tokio's clock, so that paused time in tests reaches the client.
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(deadline: std::time::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.into())
    }

    fn http_client(endpoints: &Endpoints, options: &ConnectionOptions, settings: &HttpSettings) -> Result<HttpClient> {
        HttpClient::new(endpoints, options, settings)
    }

    async fn send_http(
        http: HttpClient,
        request: http::Request<Vec<u8>>,
    ) -> std::result::Result<http::Response<Bytes>, TransportError> {
        http.send(request).await
    }

    fn open_socket(url: String, settings: SocketSettings, socket: Socket<Message>) {
        crate::ws::open(url, settings, socket);
    }

    fn incoming(frame: &Message) -> Incoming<'_> {
        match frame {
            Message::Text(t) => Incoming::Text(t.as_str()),
            Message::Binary(b) => Incoming::Binary(b.as_ref()),
            _ => Incoming::Control,
        }
    }
}
