//! TLS for `https://` and `wss://` (the `rustls` feature): which roots the
//! client trusts, its certificate for mutual TLS, and the typed failures.
//!
//! One [`TlsConfig`], given to the builder's `tls` method, covers the HTTP
//! requests and the WebSocket alike. Without one, the client trusts the
//! platform's roots ([`TlsConfig::platform`]).
//!
//! **Why rustls-native-certs for the platform's roots** (and not
//! rustls-platform-verifier): it is pure Rust and one small crate more
//! (openssl-probe), it reads the same store the system's tools use
//! (`/etc/ssl/certs` and the like, or `SSL_CERT_FILE` / `SSL_CERT_DIR`
//! when set), and its roots combine with the application's own
//! ([`TlsConfig::add_root_pem`]) in one verifier. The platform verifier
//! would also apply macOS's and Windows' own policies (revocation,
//! enterprise constraints), at the price of platform code and crates; a
//! [`TlsConfig::custom`] configuration can use it where that matters.

use std::sync::{Arc, OnceLock};

use kalam_proto::{Error, Result, TlsFailure, TransportError};
pub use rustls;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Which roots the client trusts, and its certificate for mutual TLS.
///
/// ```no_run
/// # fn main() -> Result<(), kalam_driver::prelude::Error> {
/// use kalam_driver::tls::TlsConfig;
///
/// let ca = std::fs::read("private-ca.pem").unwrap();
/// let (chain, key) = (std::fs::read("client.pem").unwrap(), std::fs::read("client.key").unwrap());
/// let tls = TlsConfig::platform()
///     .add_root_pem(&ca)?
///     .client_auth_pem(&chain, &key)?;
/// # let _ = tls; Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Build {
        roots: Roots,
        extra: Vec<CertificateDer<'static>>,
        client: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    },
    Custom(Arc<rustls::ClientConfig>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Roots {
    Platform,
    Webpki,
    None,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Build { roots, extra, client } => f
                .debug_struct("TlsConfig")
                .field("roots", roots)
                .field("extra_roots", &extra.len())
                .field("client_certificate", &client.is_some())
                .finish(),
            Inner::Custom(_) => f.write_str("TlsConfig(custom rustls::ClientConfig)"),
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig::platform()
    }
}

impl TlsConfig {
    /// The platform's trust store (the default). Where the platform has
    /// none (a minimal container image), the bundled webpki roots, with a
    /// warning in the log.
    pub fn platform() -> Self {
        Self::with_roots(Roots::Platform)
    }

    /// The webpki roots bundled with this crate (Mozilla's), whatever the
    /// platform has.
    pub fn webpki_roots() -> Self {
        Self::with_roots(Roots::Webpki)
    }

    /// No roots but those added with [`add_root_pem`](Self::add_root_pem):
    /// trust a private CA only.
    pub fn only_added_roots() -> Self {
        Self::with_roots(Roots::None)
    }

    /// A configuration of the application's own, used as it is (ALPN,
    /// verifier, versions…).
    pub fn custom(config: Arc<rustls::ClientConfig>) -> Self {
        TlsConfig {
            inner: Inner::Custom(config),
        }
    }

    fn with_roots(roots: Roots) -> Self {
        TlsConfig {
            inner: Inner::Build {
                roots,
                extra: Vec::new(),
                client: None,
            },
        }
    }

    /// Trusts the certificates in `pem` as roots too (a private CA). A PEM
    /// without a certificate, or one that does not parse, is an error.
    pub fn add_root_pem(mut self, pem: &[u8]) -> Result<Self> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidConfig(format!("root certificate PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::InvalidConfig(
                "root certificate PEM: no certificate in it".into(),
            ));
        }
        match &mut self.inner {
            Inner::Build { extra, .. } => extra.extend(certs),
            Inner::Custom(_) => {
                return Err(Error::InvalidConfig(
                    "a custom rustls::ClientConfig takes no added roots".into(),
                ));
            }
        }
        Ok(self)
    }

    /// Presents this certificate chain (leaf first) and private key (PKCS#8,
    /// PKCS#1 or SEC1) to a server that asks for one (mutual TLS).
    pub fn client_auth_pem(mut self, chain: &[u8], key: &[u8]) -> Result<Self> {
        let certs = CertificateDer::pem_slice_iter(chain)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidConfig(format!("client certificate PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::InvalidConfig(
                "client certificate PEM: no certificate in it".into(),
            ));
        }
        // The key's own error could quote it: say only what failed.
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|_| Error::InvalidConfig("client key PEM: no usable private key in it".into()))?;
        match &mut self.inner {
            Inner::Build { client, .. } => *client = Some((certs, Arc::new(key))),
            Inner::Custom(_) => {
                return Err(Error::InvalidConfig(
                    "a custom rustls::ClientConfig takes no added client certificate".into(),
                ));
            }
        }
        Ok(self)
    }

    /// The rustls configuration.
    pub fn build(&self) -> Result<Arc<rustls::ClientConfig>> {
        let (roots, extra, client) = match &self.inner {
            Inner::Custom(config) => return Ok(config.clone()),
            Inner::Build { roots, extra, client } => (roots, extra, client),
        };
        let mut store = match roots {
            Roots::Platform => platform_roots().as_ref().clone(),
            Roots::Webpki => webpki(),
            Roots::None => rustls::RootCertStore::empty(),
        };
        for cert in extra {
            store
                .add(cert.clone())
                .map_err(|e| Error::InvalidConfig(format!("root certificate: {e}")))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?
            .with_root_certificates(store);
        let config = match client {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| Error::InvalidConfig(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

fn webpki() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The platform's roots, read once per process.
fn platform_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "a platform root certificate could not be read");
            }
            let mut store = rustls::RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("no root certificates in the platform's store; using the bundled webpki roots");
                return Arc::new(webpki());
            }
            Arc::new(store)
        })
        .clone()
}

/// The server name to verify, from a host.
pub fn server_name(host: &str) -> std::io::Result<rustls::pki_types::ServerName<'static>> {
    rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// The typed failure for a rustls error.
pub fn classify(e: &rustls::Error) -> TransportError {
    use rustls::{AlertDescription as A, CertificateError as C};
    let failure = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => TlsFailure::UnknownIssuer,
            C::NotValidForName | C::NotValidForNameContext { .. } => TlsFailure::WrongHostName,
            C::Expired | C::ExpiredContext { .. } => TlsFailure::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => TlsFailure::NotYetValid,
            C::Revoked => TlsFailure::Revoked,
            _ => TlsFailure::BadCertificate,
        },
        rustls::Error::AlertReceived(alert) => match alert {
            A::CertificateRequired => TlsFailure::ClientCertificateRequired,
            _ => TlsFailure::HandshakeRefused,
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => TlsFailure::NotTls,
        rustls::Error::NoCertificatesPresented => TlsFailure::BadCertificate,
        _ => TlsFailure::Other,
    };
    TransportError::Tls {
        failure,
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_a_typed_error_that_quotes_no_key() {
        let e = TlsConfig::platform().add_root_pem(b"not a pem").unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)), "{e:?}");
        let key = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        let e = TlsConfig::platform()
            .client_auth_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", key)
            .map(drop)
            .err();
        if let Some(e) = e {
            assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        }
        assert!(format!("{:?}", TlsConfig::webpki_roots()).contains("Webpki"));
    }

    #[test]
    fn failures_are_classified() {
        use rustls::CertificateError as C;
        let kind = |e: rustls::Error| match classify(&e) {
            TransportError::Tls { failure, .. } => failure,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind(rustls::Error::InvalidCertificate(C::UnknownIssuer)),
            TlsFailure::UnknownIssuer
        );
        assert_eq!(
            kind(rustls::Error::InvalidCertificate(C::NotValidForName)),
            TlsFailure::WrongHostName
        );
        assert_eq!(kind(rustls::Error::InvalidCertificate(C::Expired)), TlsFailure::Expired);
        assert_eq!(
            kind(rustls::Error::AlertReceived(
                rustls::AlertDescription::CertificateRequired
            )),
            TlsFailure::ClientCertificateRequired
        );
        assert_eq!(
            kind(rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure)),
            TlsFailure::HandshakeRefused
        );
    }
}
