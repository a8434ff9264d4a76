//! TLS for tests: a private CA made at test time ([`TestCa`]), server and
//! client certificates from it (good, expired, for another name), and a
//! [`TlsTerminator`]: a TLS listener on 127.0.0.1 that hands the decrypted
//! bytes to a plain upstream (the kit, or the real server), optionally
//! requiring a client certificate. A [`FaultProxy`](crate::FaultProxy)
//! started on a terminator's `https://` URL terminates TLS itself, with the
//! terminator's certificate, so it still sees every request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority made for one test run.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, in PEM and DER.
#[derive(Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

/// How a server certificate is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Valid now, for `localhost` and `127.0.0.1`.
    Good,
    /// Expired a year ago.
    Expired,
    /// Valid, for `db.invalid` only.
    OtherName,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A new CA.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "kalam test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    /// The CA's certificate, PEM (what a client adds as a root).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A server certificate.
    pub fn server(&self, validity: Validity) -> Issued {
        let names: Vec<String> = match validity {
            Validity::OtherName => vec!["db.invalid".into()],
            _ => vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        };
        let mut params = CertificateParams::new(names).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "kalam test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if validity == Validity::Expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        self.issue(params)
    }

    /// A client certificate (for mutual TLS).
    pub fn client(&self, name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A server configuration presenting `server`, asking for a client
    /// certificate from this CA when `require_client_cert`.
    pub fn server_config(&self, server: &Issued, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.cert_der()).expect("CA as a root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone()));
        let mut config = builder
            .with_single_cert(vec![server.cert_der.clone(), self.cert_der()], key)
            .expect("server certificate");
        // What is behind takes HTTP/2 and HTTP/1.1 alike.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Terminators by address: the plain upstream and the TLS configuration.
type Registry = Mutex<HashMap<SocketAddr, (SocketAddr, Arc<rustls::ServerConfig>)>>;

/// Terminators by address, for [`FaultProxy`](crate::FaultProxy).
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The plain upstream and the TLS configuration of the terminator at
/// `addr`, if one listens there.
pub(crate) fn terminator_at(addr: SocketAddr) -> Option<(SocketAddr, Arc<rustls::ServerConfig>)> {
    registry().lock().ok()?.get(&addr).cloned()
}

/// TLS on 127.0.0.1 in front of a plain server.
pub struct TlsTerminator {
    addr: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsTerminator {
    /// Listens with `config` and forwards each connection, decrypted, to
    /// `upstream` (`host:port` or `http://host:port`).
    pub async fn start(upstream: &str, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsTerminator> {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/');
        let upstream: SocketAddr = tokio::net::lookup_host(upstream)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other("no upstream address"))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        if let Ok(mut r) = registry().lock() {
            r.insert(addr, (upstream, config.clone()));
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let accept_task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    // A handshake the client gives up on (an unknown CA, say)
                    // just ends the connection.
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = plain.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Ok(TlsTerminator { addr, accept_task })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.accept_task.abort();
        if let Ok(mut r) = registry().lock() {
            r.remove(&self.addr);
        }
    }
}
