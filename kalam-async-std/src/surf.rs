//! The HTTP transport through a `surf::Client` (feature `surf`). It sends
//! the same `http::Request` values as the default backend and reads the
//! answers under the same limits (the receive timeout around the whole
//! exchange, the largest body).
//!
//! By default the surf client sends over this crate's own pool
//! ([`H1`]: `surf::Client::with_http_client`), so surf's middleware stack
//! runs with the pool's guarantees: a connection goes back to the pool only
//! once its answer is read to its end, an early answer to an upload is
//! reported, at most `http_max_connections` connections. With
//! [`HttpBackend::surf`] the application's client sends as it is built:
//! its own connections (surf's `h1-client` pool puts a connection back
//! when its future is dropped, even mid-request, and brings Tokio), its own
//! proxies and TLS.

use std::sync::Arc;
use std::time::Duration;

use kalam_driver::adapter::net::typed_failure;
use kalam_driver::adapter::{BodyChunks, BodyReader, HttpSettings};
use kalam_proto::proxy::Route;
use kalam_proto::{Error, TransportError};

use crate::http::{H1, HttpBackend, Urls, from_http_types, read_whole, streaming_request, to_http_types};

type Decorate = Arc<dyn Fn(surf::Client) -> surf::Client + Send + Sync>;

/// Which surf client sends.
#[derive(Clone, Default)]
pub(crate) enum Choice {
    /// One over this crate's pool, as is.
    #[default]
    Pool,
    /// One over this crate's pool, with the application's middleware.
    PoolWith(Decorate),
    /// The application's.
    Given(surf::Client),
}

impl std::fmt::Debug for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Choice::Pool => "a surf::Client over this crate's pool",
            Choice::PoolWith(_) => "a surf::Client over this crate's pool, with the application's middleware",
            Choice::Given(_) => "the application's surf::Client",
        })
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "surf")))]
impl HttpBackend {
    /// Every request goes through `client`, the application's
    /// `surf::Client`, as it is built: its middleware, its connections,
    /// its proxies and TLS (the client's `proxy` and `tls` options then
    /// apply to the WebSocket only; a proxy that would apply to the
    /// server's HTTP is refused at `build`, since surf would not use it).
    /// surf's own `h1-client` pool puts a connection back in the pool when a
    /// request is dropped mid-way (a timeout, a cancelled call): prefer
    /// [`surf_with`](Self::surf_with) unless the application's client sends
    /// differently.
    pub fn surf(client: surf::Client) -> Self {
        HttpBackend {
            surf: Choice::Given(client),
        }
    }

    /// Every request goes through a `surf::Client` over this crate's own
    /// connection pool, after `decorate` has added the application's
    /// middleware to it (`|c| c.with(MyLogger)`).
    pub fn surf_with(decorate: impl Fn(surf::Client) -> surf::Client + Send + Sync + 'static) -> Self {
        HttpBackend {
            surf: Choice::PoolWith(Arc::new(decorate)),
        }
    }
}

/// A `surf::Client` with the client's limits.
#[derive(Clone)]
pub(crate) struct SurfHttp {
    client: surf::Client,
    deadlines: Arc<crate::deadline::Deadlines>,
    receive_timeout: Duration,
    max_body: usize,
    urls: Arc<Urls>,
}

impl SurfHttp {
    pub(crate) fn new(settings: &HttpSettings, choice: &Choice, pool: H1) -> kalam_proto::Result<Self> {
        let over_pool = || surf::Client::with_http_client(Pooled(pool.clone()));
        let client = match choice {
            Choice::Pool => over_pool(),
            Choice::PoolWith(decorate) => decorate(over_pool()),
            Choice::Given(client) => {
                let target = settings.target();
                if let Route::Forward(proxy) | Route::Tunnel(proxy) =
                    settings.net.route(target.scheme, &target.host, target.port)
                {
                    return Err(Error::InvalidConfig(format!(
                        "a proxy ({proxy}) applies to {}, but HTTP goes through the application's surf client, \
                         which would not use it: configure the proxy on that client, or turn it off here \
                         (ProxyMode::Disabled)",
                        settings.authority
                    )));
                }
                client.clone()
            }
        };
        Ok(SurfHttp {
            client,
            deadlines: Arc::default(),
            receive_timeout: settings.receive_timeout,
            max_body: settings.max_body,
            urls: Arc::default(),
        })
    }

    /// Sends one request and reads the whole answer, within the receive timeout.
    pub(crate) async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, TransportError> {
        let request = to_http_types(request, &self.urls)?;
        self.within(async {
            let mut response = self.client.send(request).await.map_err(|e| failure(&e))?;
            let body = read_whole(response.take_body(), self.max_body).await?;
            from_http_types(response.as_ref(), body)
        })
        .await
    }

    /// Sends one request with its body streamed from `body`, and answers
    /// with the head; the body is read as it arrives.
    pub(crate) async fn send_streaming(
        &self,
        request: http::Request<()>,
        body: Option<(BodyChunks, u64)>,
    ) -> Result<http::Response<BodyReader>, TransportError> {
        let (request, source_failed) = streaming_request(request, body, &self.urls)?;
        self.within(async {
            let mut response = match self.client.send(request).await {
                Ok(response) => response,
                // The upload's own source failed (a file cut short): its
                // error, not the connection's.
                Err(e) => {
                    return Err(source_failed
                        .take()
                        .map(TransportError::Io)
                        .unwrap_or_else(|| failure(&e)));
                }
            };
            let head = from_http_types(response.as_ref(), ())?;
            let reader: BodyReader = Box::pin(response.take_body());
            Ok(head.map(|()| reader))
        })
        .await
    }

    async fn within<T>(
        &self,
        exchange: impl std::future::Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        self.deadlines.within(self.receive_timeout, exchange).await
    }
}

/// surf's error, typed: the pool's own error as it was (through surf's
/// middleware), a TLS or proxy failure of another client as its own error,
/// the rest `Io`.
fn failure(e: &surf::Error) -> TransportError {
    if let Some(ours) = e.downcast_ref::<TransportError>() {
        return ours.clone();
    }
    match e.downcast_ref::<std::io::Error>() {
        Some(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => TransportError::Connect(io.to_string()),
        Some(io) => typed_failure(io).unwrap_or_else(|| TransportError::Io(io.to_string())),
        None => TransportError::Io(e.to_string()),
    }
}

/// This crate's pool as surf's HTTP client.
#[derive(Clone)]
struct Pooled(H1);

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("kalam-async-std's async-h1 pool")
    }
}

impl http_client::HttpClient for Pooled {
    fn send<'a, 'b>(
        &'a self,
        request: http_types::Request,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<http_types::Response, http_types::Error>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            self.0
                .exchange(request)
                .await
                .map_err(|e| http_types::Error::new(http_types::StatusCode::BadGateway, e))
        })
    }
}
