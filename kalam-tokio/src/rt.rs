//! Tokio as a [`Runtime`]: spawn, clock, timer, hyper for HTTP (`http.rs`),
//! and Tokio TCP (with rustls for `wss://`, behind the `rustls` feature;
//! `net.rs`) under the WebSocket.

use async_tungstenite::tokio::TokioAdapter;
use bytes::Bytes;
use kalam_driver::adapter::{BodyChunks, BodyReader, HttpSettings, Network, Runtime, Target};
use kalam_proto::{Error, Result, TransportError};

use crate::net::Io;

pub use crate::http::HttpClient;

/// The Tokio runtime (the type parameter of the client types).
#[derive(Debug, Clone, Copy)]
pub struct Tokio;

impl Runtime for Tokio {
    type Http = HttpClient;
    type Body = Bytes;
    type Stream = TokioAdapter<Box<dyn Io>>;
    type Sleep = tokio::time::Sleep;
    type HttpBackend = ();

    const NAME: &'static str = "kalam-tokio";
    const TLS: bool = cfg!(feature = "rustls");
    const HTTP2: bool = cfg!(feature = "http2");

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

    fn http_client(settings: &HttpSettings, _: &()) -> Result<HttpClient> {
        HttpClient::new(settings)
    }

    async fn send_http(
        http: HttpClient,
        request: http::Request<Vec<u8>>,
    ) -> std::result::Result<http::Response<Bytes>, TransportError> {
        http.send(request).await
    }

    async fn send_streaming(
        http: HttpClient,
        request: http::Request<()>,
        body: Option<(BodyChunks, u64)>,
    ) -> std::result::Result<http::Response<BodyReader>, TransportError> {
        http.send_streaming(request, body).await
    }

    async fn open_file(path: std::path::PathBuf) -> std::io::Result<(BodyReader, u64)> {
        let file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        Ok((Box::pin(TokioAdapter::new(file)), len))
    }

    fn connect(
        url: &str,
        net: &Network,
    ) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send + 'static {
        let target = Target::of(url);
        let net = net.clone();
        async move { Ok(TokioAdapter::new(crate::net::open(&net, &target?, false).await?)) }
    }
}
