//! How the scenarios' clients reach the server: directly (the default),
//! over TLS with the kit's test CA, or through an HTTP proxy. A runner sets
//! it once for its test binary ([`ClientNetwork::install`]); every
//! scenario builds its clients with [`builder`], so the whole suite runs
//! over each network a runner picks.

use std::sync::OnceLock;

use kalam_driver::tls::TlsConfig;
use kalam_driver::{KalamLinkClient, KalamLinkClientBuilder, Runtime};
use kalam_proto::ProxyConfig;

/// The TLS settings and proxies of every client a scenario builds.
#[derive(Clone, Debug, Default)]
pub struct ClientNetwork {
    /// The TLS settings (the test CA as a root, a client certificate).
    pub tls: Option<TlsConfig>,
    /// The proxies.
    pub proxy: Option<ProxyConfig>,
    /// The HTTP version.
    pub http_version: Option<kalam_proto::HttpVersion>,
}

static NETWORK: OnceLock<ClientNetwork> = OnceLock::new();

impl ClientNetwork {
    /// Makes this the network of every client built from now on in this
    /// process; the first call wins (a test binary runs one network).
    pub fn install(make: impl FnOnce() -> ClientNetwork) -> &'static ClientNetwork {
        NETWORK.get_or_init(make)
    }
}

/// Every client of this process speaks HTTP/2 (and trusts the test CA,
/// for HTTP/2 over TLS).
pub fn install_http2() {
    ClientNetwork::install(|| ClientNetwork {
        http_version: Some(kalam_proto::HttpVersion::Http2),
        tls: Some(
            TlsConfig::platform()
                .add_root_pem(test_ca().0.cert_pem().as_bytes())
                .expect("the test CA"),
        ),
        proxy: None,
    });
}

/// Whether this process's clients speak HTTP/2.
pub fn http2() -> bool {
    NETWORK
        .get()
        .is_some_and(|n| n.http_version == Some(kalam_proto::HttpVersion::Http2))
}

/// Whether this process's clients go through a proxy.
pub fn proxied() -> bool {
    NETWORK.get().is_some_and(|n| n.proxy.is_some())
}

/// `settings` with the process's TLS settings (for the scenarios that
/// drive a machine over `R`'s HTTP client themselves).
pub fn apply(settings: &mut kalam_driver::adapter::HttpSettings) {
    if let Some(tls) = NETWORK.get().and_then(|n| n.tls.as_ref()) {
        settings.net = settings.net.clone().with_tls(tls.build().expect("TLS settings"));
    }
}

/// A client builder with the process's network ([`ClientNetwork`]).
pub fn builder<R: Runtime>() -> KalamLinkClientBuilder<R> {
    let mut builder = KalamLinkClient::<R>::builder();
    if let Some(network) = NETWORK.get() {
        if let Some(tls) = &network.tls {
            builder = builder.tls(tls.clone());
        }
        if let Some(proxy) = &network.proxy {
            builder = builder.proxy(proxy.clone());
        }
        if let Some(version) = network.http_version {
            builder = builder.http_version(version);
        }
    }
    builder
}

// ------------------------------------------------------------------ TLS

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use kalam_driver::prelude::*;
use kalam_testkit::{HttpProxy, Issued, TestCa, TestServer, TlsTerminator, Validity};

use crate::{Backend, PATIENCE};

/// The CA of this test process, and its good server certificate.
pub fn test_ca() -> &'static (TestCa, Issued) {
    static CA: OnceLock<(TestCa, Issued)> = OnceLock::new();
    CA.get_or_init(|| {
        let ca = TestCa::new();
        let server = ca.server(Validity::Good);
        (ca, server)
    })
}

/// Every client of this process trusts the test CA (beside the
/// platform's roots).
pub fn install_tls() {
    ClientNetwork::install(|| ClientNetwork {
        tls: Some(
            TlsConfig::platform()
                .add_root_pem(test_ca().0.cert_pem().as_bytes())
                .expect("the test CA"),
        ),
        proxy: None,
        http_version: None,
    });
}

/// A server behind TLS: the URL is the terminator's `https://`.
pub struct OverTls<B> {
    inner: B,
    front: TlsTerminator,
}

impl<B: Backend> OverTls<B> {
    /// `inner` behind a terminator with the test CA's certificate
    /// (`require_client_cert`: mutual TLS).
    pub async fn start(inner: B, require_client_cert: bool) -> OverTls<B> {
        let (ca, server) = test_ca();
        let front = TlsTerminator::start(&inner.url(), ca.server_config(server, require_client_cert))
            .await
            .expect("TLS terminator");
        OverTls { inner, front }
    }

    /// The server behind.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: Backend> Backend for OverTls<B> {
    fn url(&self) -> String {
        self.front.url()
    }
    fn plain_url(&self) -> String {
        self.inner.url()
    }
    fn root_password(&self) -> String {
        self.inner.root_password()
    }
    fn jwt_secret(&self) -> String {
        self.inner.jwt_secret()
    }
    fn restart(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.inner.restart()
    }
    fn rotate_jwt_secret(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.inner.rotate_jwt_secret()
    }
    fn is_real(&self) -> bool {
        self.inner.is_real()
    }
}

/// A client of `url` with `tls`, as root.
fn root_with<R: Runtime>(b: &dyn Backend, url: &str, tls: TlsConfig) -> KalamLinkClient<R> {
    KalamLinkClient::<R>::builder()
        .base_url(url)
        .tls(tls)
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .timeouts(
            KalamLinkTimeouts::default()
                .with_connection_timeout(Duration::from_secs(5))
                .with_subscribe_timeout(Duration::from_secs(5)),
        )
        .build()
        .expect("client")
}

fn tls_failure(result: Result<QueryResponse>) -> TlsFailure {
    match result {
        Err(Error::Transport(TransportError::Tls { failure, .. })) => failure,
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

/// The TLS failures a deployment meets, each typed, over HTTP and the
/// WebSocket: an unknown CA, a certificate for another name, an expired
/// one, and a server that wants a client certificate the client lacks; and
/// mutual TLS that works.
pub async fn tls_failures_are_typed<R: Runtime>(plain: &TestServer) {
    let (ca, good) = test_ca();
    let trusting = || {
        TlsConfig::only_added_roots()
            .add_root_pem(ca.cert_pem().as_bytes())
            .expect("CA")
    };
    let front = |server: Issued, mtls: bool| {
        let config = ca.server_config(&server, mtls);
        async move { TlsTerminator::start(&plain.url(), config).await.expect("terminator") }
    };

    // Unknown issuer: the bundled roots do not know the test CA.
    let t = front(good.clone(), false).await;
    let client = root_with::<R>(plain, &t.url(), TlsConfig::webpki_roots());
    let r = tokio::time::timeout(PATIENCE, client.execute_query("SELECT 1"))
        .await
        .expect("answered");
    assert_eq!(tls_failure(r), TlsFailure::UnknownIssuer);
    match tokio::time::timeout(PATIENCE, client.connect())
        .await
        .expect("answered")
    {
        Err(Error::Transport(TransportError::Tls {
            failure: TlsFailure::UnknownIssuer,
            ..
        })) => {}
        other => panic!("wss:// with an unknown issuer: {other:?}"),
    }

    // The certificate is for db.invalid, not 127.0.0.1.
    let t = front(ca.server(Validity::OtherName), false).await;
    let r = root_with::<R>(plain, &t.url(), trusting())
        .execute_query("SELECT 1")
        .await;
    assert_eq!(tls_failure(r), TlsFailure::WrongHostName);

    // Expired.
    let t = front(ca.server(Validity::Expired), false).await;
    let r = root_with::<R>(plain, &t.url(), trusting())
        .execute_query("SELECT 1")
        .await;
    assert_eq!(tls_failure(r), TlsFailure::Expired);

    // Mutual TLS: refused without a client certificate, served with one.
    let t = front(good.clone(), true).await;
    let r = root_with::<R>(plain, &t.url(), trusting())
        .execute_query("SELECT 1")
        .await;
    let failure = tls_failure(r);
    assert!(
        matches!(
            failure,
            TlsFailure::ClientCertificateRequired | TlsFailure::HandshakeRefused
        ),
        "{failure:?}"
    );
    let me = ca.client("kalam test client");
    let with_cert = trusting()
        .client_auth_pem(me.cert_pem.as_bytes(), me.key_pem.as_bytes())
        .expect("client certificate");
    let client = root_with::<R>(plain, &t.url(), with_cert);
    client.execute_query("SELECT 1").await.expect("mutual TLS over HTTP");
    client.connect().await.expect("mutual TLS over the WebSocket");
}

// --------------------------------------------------------------- proxies

/// A client of `b` through `proxies`, as root.
fn through<R: Runtime>(b: &dyn Backend, proxies: ProxyConfig) -> KalamLinkClient<R> {
    crate::builder::<R>()
        .base_url(b.url())
        .proxy(proxies)
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .build()
        .expect("client")
}

/// Through an HTTP proxy with Basic credentials: every HTTP request (in
/// absolute form for `http://`, a tunnel for `https://`) and the WebSocket
/// (a tunnel) go through it; `NO_PROXY` bypasses it; wrong credentials are
/// a typed refusal.
pub async fn an_http_proxy_carries_every_request<R: Runtime>(b: &dyn Backend) {
    let proxy = HttpProxy::start_with(Some(("kit", "p@ss:word"))).await.expect("proxy");
    let with_credentials = proxy.url().replacen("http://", "http://kit:p%40ss%3Aword@", 1);
    // Over TLS, and for HTTP/2 (which a forwarding proxy cannot carry),
    // every connection is a tunnel.
    let tls = b.url().starts_with("https://") || http2();
    let authority = b
        .url()
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();

    let client = through::<R>(b, ProxyConfig::all(&with_credentials).expect("proxy URL"));
    for i in 0..3 {
        client
            .execute_query(&format!("SELECT {i}"))
            .await
            .expect("a query through the proxy");
    }
    client.connect().await.expect("the WebSocket through the proxy");
    let seen = proxy.seen();
    let tunnels = seen.iter().filter(|l| **l == format!("CONNECT {authority}")).count();
    let forwarded = seen
        .iter()
        .filter(|l| l.starts_with(&format!("POST http://{authority}/v1/api/")))
        .count();
    if tls {
        // One tunnel per connection, the WebSocket's too.
        assert!(tunnels >= 2, "{seen:?}");
    } else {
        assert!(forwarded >= 4, "a login and three queries: {seen:?}");
        assert_eq!(tunnels, 1, "the WebSocket's tunnel: {seen:?}");
    }
    assert!(!seen.iter().any(|l| l.ends_with(" 407")), "{seen:?}");

    // NO_PROXY names the server: straight there.
    let before = proxy.seen().len();
    let host = authority.rsplit_once(':').map_or(authority.as_str(), |(h, _)| h);
    let direct = through::<R>(
        b,
        ProxyConfig::all(&with_credentials).expect("proxy URL").no_proxy(host),
    );
    direct.execute_query("SELECT 1").await.expect("direct");
    direct.connect().await.expect("direct WebSocket");
    assert_eq!(proxy.seen().len(), before, "{:?}", proxy.seen());

    // A server that is down, behind the proxy: the proxy's 502, typed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let down = crate::builder::<R>()
        .base_url(format!("http://127.0.0.1:{port}"))
        .proxy(ProxyConfig::all(&with_credentials).expect("proxy URL"))
        .auth(AuthProvider::jwt_token("not-used".into()))
        .connection_options(ConnectionOptions::default().with_max_reconnect_attempts(Some(0)))
        .build()
        .expect("client");
    match tokio::time::timeout(PATIENCE, down.connect()).await.expect("answered") {
        Err(Error::Transport(TransportError::ProxyRefused { status: 502, .. })) => {}
        other => panic!("expected the proxy's 502 for the WebSocket, got {other:?}"),
    }
    match tokio::time::timeout(PATIENCE, down.execute_query("SELECT 1"))
        .await
        .expect("answered")
    {
        // Forwarded, the proxy's answer; tunnelled (HTTP/2), its refusal.
        Err(Error::Server(e)) if e.status == 502 && !http2() => {}
        Err(Error::Transport(TransportError::ProxyRefused { status: 502, .. })) if http2() => {}
        other => panic!("expected the proxy's 502 for a request, got {other:?}"),
    }

    // Wrong credentials: refused, typed, and the password is nowhere.
    let wrong = proxy.url().replacen("http://", "http://kit:nope-secret@", 1);
    let refused = through::<R>(b, ProxyConfig::all(&wrong).expect("proxy URL"));
    match tokio::time::timeout(PATIENCE, refused.connect())
        .await
        .expect("answered")
    {
        Err(e @ Error::Transport(TransportError::ProxyRefused { status: 407, .. })) => {
            assert!(!e.to_string().contains("nope-secret"), "{e}");
        }
        other => panic!("expected a 407 refusal, got {other:?}"),
    }
    let r = tokio::time::timeout(PATIENCE, refused.execute_query("SELECT 1"))
        .await
        .expect("answered");
    match r {
        Err(Error::Transport(TransportError::ProxyRefused { status: 407, .. })) => {}
        other => panic!("expected a 407, got {other:?}"),
    }
}

/// Every client of this process goes through one HTTP proxy (with Basic
/// credentials), which runs on a thread of its own for the life of the
/// process; answers it, to see what it carried.
pub fn install_proxy() -> &'static HttpProxy {
    static PROXY: OnceLock<HttpProxy> = OnceLock::new();
    let proxy = PROXY.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            rt.block_on(async move {
                let proxy = HttpProxy::start_with(Some(("suite", "s3cret"))).await.expect("proxy");
                let _ = tx.send(proxy);
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("the proxy started")
    });
    ClientNetwork::install(|| ClientNetwork {
        tls: None,
        proxy: Some(ProxyConfig::all(&proxy.url().replacen("http://", "http://suite:s3cret@", 1)).expect("proxy URL")),
        http_version: None,
    });
    proxy
}
