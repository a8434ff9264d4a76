//! The `surf` feature: the client's HTTP goes through a `surf::Client`
//! (the conformance suite runs over the default one in .ci/run; these
//! check what only surf has: the application's middleware sees every
//! request, the application's own client is the one that sends, and a
//! proxy that client would ignore is refused).
#![cfg(feature = "surf")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kalam_async_std::rt::HttpBackend;
use kalam_async_std::{AuthProvider, Error, KalamLinkClient, ProxyConfig, TransportError};
use kalam_testkit::TestServer;

fn kit() -> (tokio::runtime::Runtime, TestServer) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(TestServer::start());
    (rt, server)
}

/// A surf middleware that notes each request's path.
#[derive(Clone)]
struct Counting {
    count: Arc<AtomicUsize>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl surf::middleware::Middleware for Counting {
    fn handle<'a, 'b, 'c>(
        &'a self,
        req: surf::Request,
        client: surf::Client,
        next: surf::middleware::Next<'b>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = surf::Result<surf::Response>> + Send + 'c>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.log.lock().unwrap().push(req.url().path().to_owned());
        Box::pin(async move { next.run(req, client).await })
    }
}

#[test]
fn the_applications_middleware_sees_every_request() {
    let (_rt, server) = kit();
    let seen = Arc::new(AtomicUsize::new(0));
    let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let counting = Counting {
        count: seen.clone(),
        log: paths.clone(),
    };
    let backend = HttpBackend::surf_with(move |client| client.with(counting.clone()));
    let client = KalamLinkClient::builder()
        .base_url(server.url())
        .auth(AuthProvider::basic_auth("root".into(), server.root_password().into()))
        .http_backend(backend)
        .build()
        .unwrap();
    async_std::task::block_on(async {
        for _ in 0..3 {
            client.execute_query("SELECT 1").await.unwrap();
        }
        // A refusal comes back typed through surf, as without it.
        let e = client.execute_query("SELECT * FROM nowhere.nothing").await.unwrap_err();
        assert!(e.server().is_some(), "{e:?}");
    });
    // The login, then four queries.
    assert_eq!(seen.load(Ordering::SeqCst), 5);
    let paths = paths.lock().unwrap();
    assert_eq!(paths[0], "/v1/api/auth/login");
    assert!(paths[1..].iter().all(|p| p == "/v1/api/sql"), "{paths:?}");
}

/// An HTTP client that refuses every request, as a surf backend.
#[derive(Debug)]
struct Refusing(Arc<AtomicUsize>);

impl http_client::HttpClient for Refusing {
    fn send<'a, 'b>(
        &'a self,
        _request: http_types::Request,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<http_types::Response, http_types::Error>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Err(http_types::Error::new(
                500,
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by the test"),
            ))
        })
    }
}

#[test]
fn the_applications_own_client_sends() {
    let (_rt, server) = kit();
    let sent = Arc::new(AtomicUsize::new(0));
    let mine = surf::Client::with_http_client(Refusing(sent.clone()));
    let client = KalamLinkClient::builder()
        .base_url(server.url())
        .auth(AuthProvider::jwt_token("a.b.c".into()))
        .http_backend(HttpBackend::surf(mine))
        .build()
        .unwrap();
    let e = async_std::task::block_on(client.execute_query("SELECT 1")).unwrap_err();
    // A refused connection: nothing reached the server, typed as such.
    assert!(matches!(e, Error::Transport(TransportError::Connect(_))), "{e:?}");
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    assert_eq!(server.counters().queries, 0);
}

#[test]
fn a_proxy_the_applications_client_would_ignore_is_refused() {
    let mine = surf::Client::with_http_client(Refusing(Arc::default()));
    let e = KalamLinkClient::builder()
        .base_url("http://db.internal:2900")
        .proxy(ProxyConfig::all("http://proxy.internal:3128").unwrap())
        .http_backend(HttpBackend::surf(mine))
        .build()
        .unwrap_err();
    assert!(matches!(&e, Error::InvalidConfig(m) if m.contains("surf")), "{e:?}");
}
