//! async-std as a [`Runtime`]: spawn, clock, timer, async-h1 for HTTP
//! (`http.rs`), async-std TCP (and rustls, behind the `rustls` feature;
//! `net.rs`) under the WebSocket.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use kalam_driver::adapter::{BodyChunks, BodyReader, HttpSettings, Network, Runtime, Target};
use kalam_proto::{Result, TransportError};

pub use crate::http::{HttpBackend, HttpClient};
use crate::net::Io;

/// The async-std runtime (the type parameter of the client types).
#[derive(Debug, Clone, Copy)]
pub struct AsyncStd;

/// A timer on async-std's reactor.
#[derive(Debug)]
pub struct Sleep(async_io::Timer);

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

impl Runtime for AsyncStd {
    type Http = HttpClient;
    type Body = Vec<u8>;
    type Stream = Box<dyn Io>;
    type Sleep = Sleep;
    type HttpBackend = HttpBackend;

    const NAME: &'static str = "kalam-async-std";
    const TLS: bool = cfg!(feature = "rustls");
    // async-io's reactor and timers are global: a caller in `block_on`
    // (or `smol::block_on`) may poll the driver itself.
    const DRIVE_IN_CALLER: bool = true;

    fn check() -> Result<()> {
        Ok(()) // async-std's executor starts on demand, from any thread
    }

    fn spawn<F>(future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        async_std::task::spawn(future);
    }

    fn now() -> std::time::Instant {
        std::time::Instant::now()
    }

    fn sleep_until(deadline: std::time::Instant) -> Sleep {
        Sleep(async_io::Timer::at(deadline))
    }

    fn http_client(settings: &HttpSettings, backend: &HttpBackend) -> Result<HttpClient> {
        HttpClient::new(settings, backend)
    }

    async fn send_http(
        http: HttpClient,
        request: http::Request<Vec<u8>>,
    ) -> std::result::Result<http::Response<Vec<u8>>, TransportError> {
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
        let file = async_std::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        Ok((Box::pin(file), len))
    }

    fn connect(url: &str, net: &Network) -> impl Future<Output = std::io::Result<Self::Stream>> + Send + 'static {
        let target = Target::of(url);
        let net = net.clone();
        async move { Ok(crate::net::open(&net, &target?).await?.0) }
    }
}
