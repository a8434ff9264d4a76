//! HTTP proxies: which proxy a connection goes through, and the framing of
//! a `CONNECT` tunnel, decided here so that every adapter does the same.
//!
//! - An `http://` request through a proxy is sent to the proxy in absolute
//!   form (`POST http://db:8080/v1/api/sql HTTP/1.1`), with
//!   `Proxy-Authorization` when the proxy URL has credentials
//!   ([`Route::Forward`]).
//! - An `https://` request, and every WebSocket (`ws://` and `wss://`), goes
//!   through a `CONNECT` tunnel ([`Route::Tunnel`]): the proxy sees the
//!   target's host and port only; TLS, when there is TLS, is end to end.
//! - `http_proxy` serves `http://` and `ws://` targets, `https_proxy`
//!   `https://` and `wss://` ones; `no_proxy` names the hosts reached
//!   directly.
//!
//! The environment is read by the driver, not here (kalam-proto reads
//! nothing): [`ProxyConfig::from_env_with`] takes the lookup.

use std::fmt;
// `core::net`: address values only; kalam-proto opens no socket.
use core::net::IpAddr;

use base64::Engine as _;

use crate::secret::Secret;

/// A proxy server: `http://[user:password@]host[:port]` (the port defaults
/// to 80; a URL without a scheme is taken as `http://`). Its password never
/// shows in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyServer {
    host: String,
    port: u16,
    /// `user:password`, percent-decoded.
    credentials: Option<Secret>,
}

/// A proxy URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("proxy URL {url:?}: {reason}")]
pub struct ProxyUrlError {
    /// The URL, its credentials removed.
    pub url: String,
    /// Why it was refused.
    pub reason: String,
}

impl ProxyServer {
    /// Parses a proxy URL. Only `http://` proxies are supported (the
    /// client speaks plain HTTP to the proxy; TLS to the target is end to
    /// end through a tunnel).
    pub fn parse(url: &str) -> Result<ProxyServer, ProxyUrlError> {
        let url = url.trim();
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), url),
        };
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, rest),
        };
        let shown = match userinfo {
            Some(_) => format!("{scheme}://***@{hostport}"),
            None => format!("{scheme}://{hostport}"),
        };
        let refuse = |reason: &str| ProxyUrlError {
            url: shown.clone(),
            reason: reason.to_owned(),
        };
        if scheme != "http" {
            return Err(refuse("only http:// proxies are supported"));
        }
        let hostport = hostport.trim_end_matches('/');
        if hostport.contains('/') || hostport.contains('?') || hostport.contains('#') {
            return Err(refuse("a proxy URL has no path"));
        }
        let (host, port) = split_host_port(hostport).ok_or_else(|| refuse("no host, or a bad port"))?;
        let credentials = match userinfo {
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = percent_decode(user).ok_or_else(|| refuse("bad percent-encoding in the user"))?;
                let password =
                    percent_decode(password).ok_or_else(|| refuse("bad percent-encoding in the password"))?;
                Some(Secret::new(format!("{user}:{password}")))
            }
            None => None,
        };
        Ok(ProxyServer {
            host,
            port: port.unwrap_or(80),
            credentials,
        })
    }

    /// The proxy's host (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the URL carried credentials.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// The `Proxy-Authorization` value (Basic), marked sensitive, when the
    /// URL carried credentials.
    pub fn authorization(&self) -> Option<http::HeaderValue> {
        let credentials = self.credentials.as_ref()?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials.expose());
        let mut value = http::HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// The `CONNECT` request that opens a tunnel to `host:port`.
    pub fn connect_request(&self, host: &str, port: u16) -> Vec<u8> {
        let target = authority(host, port);
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(credentials) = &self.credentials {
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials.expose());
            request.push_str("Proxy-Authorization: Basic ");
            request.push_str(&encoded);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.into_bytes()
    }
}

impl fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Display for ProxyServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", authority(&self.host, self.port))
    }
}

/// `host:port`, an IPv6 address in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host[:port]`, `[v6][:port]`.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => return None, // a bare IPv6 address needs brackets
            None => (s, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a connection's target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
    /// `ws://`
    Ws,
    /// `wss://`
    Wss,
}

impl Scheme {
    /// From a URL scheme.
    pub fn parse(scheme: &str) -> Option<Scheme> {
        match scheme.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            "ws" => Some(Scheme::Ws),
            "wss" => Some(Scheme::Wss),
            _ => None,
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Wss)
    }
}

/// How a connection to a target is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// Straight to the target.
    Direct,
    /// To the proxy, each request in absolute form (`http://` targets).
    Forward(&'a ProxyServer),
    /// To the proxy, then a `CONNECT` tunnel to the target.
    Tunnel(&'a ProxyServer),
}

impl<'a> Route<'a> {
    /// The route with a tunnel where it would forward (for a protocol a
    /// forwarding proxy cannot carry, such as HTTP/2 with prior knowledge).
    pub fn tunnelled(self) -> Route<'a> {
        match self {
            Route::Forward(p) => Route::Tunnel(p),
            other => other,
        }
    }

    /// The host and port to open the TCP connection to.
    pub fn first_hop<'h>(&'h self, host: &'h str, port: u16) -> (&'h str, u16) {
        match self {
            Route::Direct => (host, port),
            Route::Forward(p) | Route::Tunnel(p) => (p.host(), p.port()),
        }
    }
}

/// The hosts reached without a proxy: `NO_PROXY`'s list.
///
/// Entries, separated by commas or spaces: `*` (every host); a domain,
/// which matches itself and its subdomains (`example.com` and
/// `.example.com` both match `db.example.com`); an IP address; a network
/// in CIDR form (`10.0.0.0/8`, `fd00::/8`); any of these with `:port` to
/// match only that port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    entries: Vec<NoProxyEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxyHost {
    Domain(String),
    Ip(IpAddr),
    Net(IpAddr, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NoProxyEntry {
    host: NoProxyHost,
    port: Option<u16>,
}

impl NoProxy {
    /// Parses a `NO_PROXY` value; entries that cannot be read are skipped.
    pub fn parse(list: &str) -> NoProxy {
        let mut no_proxy = NoProxy::default();
        for entry in list.split([',', ' ']).map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no_proxy.all = true;
                continue;
            }
            if let Some((net, bits)) = entry.split_once('/') {
                if let (Ok(ip), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u8>()) {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    if bits <= max {
                        no_proxy.entries.push(NoProxyEntry {
                            host: NoProxyHost::Net(ip, bits),
                            port: None,
                        });
                    }
                }
                continue;
            }
            if let Ok(ip) = entry.parse::<IpAddr>() {
                no_proxy.entries.push(NoProxyEntry {
                    host: NoProxyHost::Ip(ip),
                    port: None,
                });
                continue;
            }
            let Some((host, port)) = split_host_port(entry) else {
                continue;
            };
            let host = match host.parse::<IpAddr>() {
                Ok(ip) => NoProxyHost::Ip(ip),
                Err(_) => NoProxyHost::Domain(host.trim_start_matches("*.").trim_start_matches('.').to_owned()),
            };
            no_proxy.entries.push(NoProxyEntry { host, port });
        }
        no_proxy
    }

    /// Whether `host:port` is reached without a proxy.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        let ip = host.parse::<IpAddr>().ok();
        self.entries.iter().any(|entry| {
            entry.port.is_none_or(|p| p == port)
                && match (&entry.host, ip) {
                    (NoProxyHost::Domain(d), None) => {
                        host == d || host.strip_suffix(d.as_str()).is_some_and(|rest| rest.ends_with('.'))
                    }
                    (NoProxyHost::Ip(e), Some(ip)) => *e == ip,
                    (NoProxyHost::Net(net, bits), Some(ip)) => in_network(ip, *net, *bits),
                    _ => false,
                }
        })
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The proxies a client uses: one for `http://`/`ws://` targets, one for
/// `https://`/`wss://` targets, and the hosts reached directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    http: Option<ProxyServer>,
    https: Option<ProxyServer>,
    no_proxy: NoProxy,
}

impl ProxyConfig {
    /// No proxy for any target.
    pub fn none() -> ProxyConfig {
        ProxyConfig::default()
    }

    /// One proxy for every target.
    pub fn all(url: &str) -> Result<ProxyConfig, ProxyUrlError> {
        let proxy = ProxyServer::parse(url)?;
        Ok(ProxyConfig {
            http: Some(proxy.clone()),
            https: Some(proxy),
            no_proxy: NoProxy::default(),
        })
    }

    /// The proxy for `http://` and `ws://` targets.
    pub fn http(mut self, url: &str) -> Result<ProxyConfig, ProxyUrlError> {
        self.http = Some(ProxyServer::parse(url)?);
        Ok(self)
    }

    /// The proxy for `https://` and `wss://` targets.
    pub fn https(mut self, url: &str) -> Result<ProxyConfig, ProxyUrlError> {
        self.https = Some(ProxyServer::parse(url)?);
        Ok(self)
    }

    /// The hosts reached directly, as a `NO_PROXY` list ([`NoProxy`]).
    pub fn no_proxy(mut self, list: &str) -> ProxyConfig {
        self.no_proxy = NoProxy::parse(list);
        self
    }

    /// The configuration the environment gives, `get` reading a variable:
    /// `http_proxy`, `https_proxy`, `all_proxy` (for both when the other is
    /// unset) and `no_proxy`, each in lower case or, when that is unset,
    /// upper case. An empty value counts as unset. A variable that is not a
    /// usable proxy URL is an error (a typo should not silently bypass the
    /// proxy the deployment relies on).
    pub fn from_env_with(get: impl Fn(&str) -> Option<String>) -> Result<ProxyConfig, ProxyUrlError> {
        let var = |name: &str| {
            get(name)
                .or_else(|| get(&name.to_ascii_uppercase()))
                .filter(|v| !v.trim().is_empty())
        };
        let all = var("all_proxy").map(|u| ProxyServer::parse(&u)).transpose()?;
        let http = var("http_proxy").map(|u| ProxyServer::parse(&u)).transpose()?;
        let https = var("https_proxy").map(|u| ProxyServer::parse(&u)).transpose()?;
        Ok(ProxyConfig {
            http: http.or_else(|| all.clone()),
            https: https.or(all),
            no_proxy: var("no_proxy").map(|l| NoProxy::parse(&l)).unwrap_or_default(),
        })
    }

    /// Whether no target goes through a proxy.
    pub fn is_none(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// How to reach `host:port` for a `scheme` target.
    pub fn route(&self, scheme: Scheme, host: &str, port: u16) -> Route<'_> {
        let proxy = if scheme.is_tls() { &self.https } else { &self.http };
        match proxy {
            Some(_) if self.no_proxy.matches(host, port) => Route::Direct,
            Some(p) if scheme == Scheme::Http => Route::Forward(p),
            Some(p) => Route::Tunnel(p),
            None => Route::Direct,
        }
    }
}

/// Which proxies a client uses ([`ConnectionOptions::proxy`](crate::ConnectionOptions::proxy)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// The environment's (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`,
    /// `NO_PROXY`, in either case), read when the client is built. The
    /// default, as curl and reqwest do.
    #[default]
    FromEnvironment,
    /// None, whatever the environment says.
    Disabled,
    /// These.
    Use(ProxyConfig),
}

/// What a proxy answered to `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectAnswer {
    /// Not all of its head yet: read more.
    Incomplete,
    /// `2xx`: the tunnel is open; the head was `head_len` bytes.
    Established {
        /// Bytes of the answer's head; anything after them is the target's.
        head_len: usize,
    },
    /// Anything else (`407`: the proxy wants credentials, or others).
    Refused {
        /// The status code.
        status: u16,
    },
    /// Not an HTTP answer, or a head over 16 KiB.
    Garbled,
}

/// Reads a proxy's answer to `CONNECT` from the bytes read so far.
pub fn parse_connect_answer(buf: &[u8]) -> ConnectAnswer {
    const MAX_HEAD: usize = 16 * 1024;
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD || (!buf.is_empty() && !b"HTTP/1.".starts_with(&buf[..buf.len().min(7)])) {
            ConnectAnswer::Garbled
        } else {
            ConnectAnswer::Incomplete
        };
    };
    let head = &buf[..end];
    let status_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(status) if version.starts_with("HTTP/1.") => {
            if (200..300).contains(&status) {
                ConnectAnswer::Established { head_len: end + 4 }
            } else {
                ConnectAnswer::Refused { status }
            }
        }
        _ => ConnectAnswer::Garbled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = ProxyServer::parse("http://us%40er:p%3Ass@proxy.corp:3128").unwrap();
        assert_eq!((p.host(), p.port()), ("proxy.corp", 3128));
        assert_eq!(
            p.authorization().unwrap().to_str().unwrap(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("us@er:p:ss")
            )
        );
        assert!(p.authorization().unwrap().is_sensitive());
        let shown = format!("{p:?} {p}");
        assert!(!shown.contains("p:ss") && !shown.contains("us@er"), "{shown}");

        let p = ProxyServer::parse("proxy:8080").unwrap();
        assert_eq!((p.host(), p.port(), p.has_credentials()), ("proxy", 8080, false));
        let p = ProxyServer::parse("http://[::1]:9/").unwrap();
        assert_eq!((p.host(), p.port()), ("::1", 9));
        assert_eq!(ProxyServer::parse("http://Proxy").unwrap().port(), 80);

        for bad in [
            "socks5://p:1080",
            "https://p:443",
            "http://p:99999",
            "http://p/path",
            "http://",
            "::1",
        ] {
            assert!(ProxyServer::parse(bad).is_err(), "{bad}");
        }
        let e = ProxyServer::parse("https://me:secret@p").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn connect_framing() {
        let p = ProxyServer::parse("http://a:b@p:1").unwrap();
        assert_eq!(
            String::from_utf8(p.connect_request("db.example", 443)).unwrap(),
            "CONNECT db.example:443 HTTP/1.1\r\nHost: db.example:443\r\nProxy-Authorization: Basic YTpi\r\n\r\n"
        );
        let p = ProxyServer::parse("p:1").unwrap();
        assert_eq!(
            String::from_utf8(p.connect_request("::1", 8080)).unwrap(),
            "CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"
        );

        assert_eq!(parse_connect_answer(b""), ConnectAnswer::Incomplete);
        assert_eq!(
            parse_connect_answer(b"HTTP/1.1 200 Connection established\r\n"),
            ConnectAnswer::Incomplete
        );
        assert_eq!(
            parse_connect_answer(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            ConnectAnswer::Established { head_len: 39 }
        );
        assert_eq!(
            parse_connect_answer(b"HTTP/1.0 200 OK\r\nProxy-Agent: x\r\n\r\nextra"),
            ConnectAnswer::Established { head_len: 35 }
        );
        assert_eq!(
            parse_connect_answer(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"),
            ConnectAnswer::Refused { status: 407 }
        );
        assert_eq!(parse_connect_answer(b"SSH-2.0-OpenSSH"), ConnectAnswer::Garbled);
        assert_eq!(parse_connect_answer(b"HTTP/1.1 abc\r\n\r\n"), ConnectAnswer::Garbled);
        assert_eq!(parse_connect_answer(&[b'H'; 20_000][..]), ConnectAnswer::Garbled);
        assert_eq!(
            parse_connect_answer("HTTP/1.1 200 é\r\n\r\n".as_bytes()),
            ConnectAnswer::Established { head_len: 19 }
        );
    }

    #[test]
    fn no_proxy_lists() {
        let n = NoProxy::parse("localhost, .internal,corp.example:8080 10.0.0.0/8,::1, 192.168.1.5,fd00::/8,bad/99");
        assert!(n.matches("localhost", 80));
        assert!(n.matches("LOCALHOST.", 80));
        assert!(n.matches("db.internal", 1) && n.matches("internal", 1));
        assert!(!n.matches("notinternal", 1));
        assert!(n.matches("x.corp.example", 8080) && !n.matches("x.corp.example", 80));
        assert!(n.matches("10.1.2.3", 1) && !n.matches("11.1.2.3", 1));
        assert!(n.matches("[::1]", 1) && n.matches("::1", 1));
        assert!(n.matches("192.168.1.5", 1) && !n.matches("192.168.1.6", 1));
        assert!(n.matches("fd12::1", 1) && !n.matches("fe80::1", 1));
        assert!(!n.matches("example.com", 1));
        assert!(NoProxy::parse("*").matches("anything", 1));
        assert!(!NoProxy::parse("").matches("anything", 1));
        assert!(NoProxy::parse("0.0.0.0/0").matches("8.8.8.8", 1));
    }

    #[test]
    fn routes() {
        let config = ProxyConfig::from_env_with(|name| match name {
            "HTTP_PROXY" => Some("http://plain:3128".into()),
            "https_proxy" => Some("secure:3129".into()),
            "HTTPS_PROXY" => Some("ignored:1".into()),
            "NO_PROXY" => Some("skip.me".into()),
            _ => None,
        })
        .unwrap();
        let plain = ProxyServer::parse("plain:3128").unwrap();
        let secure = ProxyServer::parse("secure:3129").unwrap();
        assert_eq!(config.route(Scheme::Http, "db", 80), Route::Forward(&plain));
        assert_eq!(config.route(Scheme::Ws, "db", 80), Route::Tunnel(&plain));
        assert_eq!(config.route(Scheme::Https, "db", 443), Route::Tunnel(&secure));
        assert_eq!(config.route(Scheme::Wss, "db", 443), Route::Tunnel(&secure));
        assert_eq!(config.route(Scheme::Https, "a.skip.me", 443), Route::Direct);
        assert_eq!(
            config.route(Scheme::Http, "db", 80).first_hop("db", 80),
            ("plain", 3128)
        );

        let all = ProxyConfig::from_env_with(|name| (name == "ALL_PROXY").then(|| "p:1".into())).unwrap();
        assert!(matches!(all.route(Scheme::Wss, "db", 1), Route::Tunnel(_)));
        let none = ProxyConfig::from_env_with(|name| (name == "http_proxy").then(String::new)).unwrap();
        assert!(none.is_none());
        assert_eq!(none.route(Scheme::Http, "db", 80), Route::Direct);
        assert!(ProxyConfig::from_env_with(|name| (name == "HTTPS_PROXY").then(|| "socks5://x".into())).is_err());
    }
}
