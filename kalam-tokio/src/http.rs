//! The HTTP transport: sends the `http::Request` values kalam-proto builds
//! over a pooled keep-alive hyper client and hands the answers back. No
//! protocol logic lives here.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kalam_client::HttpSettings;
use kalam_proto::{ConnectionOptions, Endpoints, Error, TransportError};

#[cfg(feature = "rustls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "rustls"))]
type Connector = HttpConnector;

/// A pooled HTTP/1.1 client with the client's time and size limits.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<Connector, Full<Bytes>>,
    receive_timeout: Duration,
    max_body: usize,
}

impl HttpClient {
    pub(crate) fn new(
        endpoints: &Endpoints,
        options: &ConnectionOptions,
        settings: &HttpSettings,
    ) -> Result<Self, Error> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        #[cfg(feature = "rustls")]
        let connector = {
            let _ = endpoints; // http and https both work with TLS compiled in
            http.enforce_http(false);
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        };
        #[cfg(not(feature = "rustls"))]
        let connector = {
            if endpoints.is_https() {
                return Err(Error::InvalidUrl {
                    url: endpoints.base().to_owned(),
                    reason: "https needs the `rustls` feature of kalam-tokio".into(),
                });
            }
            http
        };
        let inner = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(options.http_pool_max_idle)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(HttpClient {
            inner,
            receive_timeout: settings.receive_timeout,
            max_body: settings.max_body,
        })
    }

    /// Sends one request and reads the whole answer, within the receive timeout.
    pub(crate) async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::Response<Bytes>, TransportError> {
        let request = request.map(|body| Full::new(Bytes::from(body)));
        let exchange = async {
            let response = self.inner.request(request).await.map_err(client_error)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                        TransportError::BodyTooLarge { limit: self.max_body }
                    } else {
                        TransportError::Io(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body))
        };
        tokio::time::timeout(self.receive_timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout(self.receive_timeout))?
    }
}

fn client_error(e: hyper_util::client::legacy::Error) -> TransportError {
    use std::error::Error as _;
    // The chain says why (connection refused, reset…); it never holds headers.
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_connect() {
        TransportError::Connect(text)
    } else {
        TransportError::Io(text)
    }
}
