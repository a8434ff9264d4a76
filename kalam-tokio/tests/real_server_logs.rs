//! Secrets never reach the logs (a test binary of its own: it installs a
//! global TRACE subscriber). Needs the real server, like conformance_real.rs.
//!
//! Tokio-only: the log lines checked here are kalam-driver's (the same on
//! every runtime), and the capture is a process-wide subscriber, so one
//! runtime suffices.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use kalam_conformance::scenarios::{root, setup_table};
use kalam_conformance::{Backend, RealServer, until_ready};
use kalam_tokio::rt::Tokio;
use kalam_tokio::{AuthProvider, KalamLinkClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real KalamDB server: cargo test -p kalam-tokio --test real_server_logs -- --ignored"]
async fn no_secrets_in_logs() {
    let server = RealServer::start();
    no_secrets_in_logs_of(&server).await;
}

/// Nothing the client logs, at any level, carries a password or a token.
async fn no_secrets_in_logs_of(b: &dyn Backend) {
    let logs = capture();
    let password = b.root_password();
    let client = root::<Tokio>(b, &b.url());
    let table = setup_table(&client, "conf_logs").await;
    client.execute_query("SELECT 1").await.unwrap();
    let _ = client.execute_query("SELEC broken").await;
    let mut s = client.live_events(&format!("SELECT * FROM {table}")).await.unwrap();
    until_ready(&mut s).await;
    let login = client.login("root", &password).await.unwrap();
    let _ = KalamLinkClient::builder()
        .base_url(b.url())
        .auth(AuthProvider::basic_auth("root".into(), "wrong-pass-XYZZY".into()))
        .build()
        .unwrap()
        .execute_query("SELECT 1")
        .await;
    client.disconnect().await;
    let text = logs.text();
    assert!(text.contains("kalam.http"), "the client did log: {text}");
    for secret in [
        password.as_str(),
        "wrong-pass-XYZZY",
        &login.access_token,
        &login.refresh_token,
    ] {
        assert!(!text.contains(secret), "a secret reached the logs");
    }
    // Tokens start with the JWT header's base64: none may appear at all.
    assert!(
        !text.contains("eyJ0eXAi") && !text.contains("eyJhbGci"),
        "a token reached the logs"
    );
}

/// Every tracing event, captured at TRACE level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Sink(Captured);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test binary) a global TRACE subscriber, with the
/// `log` bridge, writing into the returned buffer.
fn capture() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            // As an application would: tracing-subscriber's defaults, which
            // also capture the `log` records of every dependency
            // (tungstenite's frames, hyper's, async-h1's…).
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || Sink(writer.clone()))
                .with_ansi(false)
                .try_init()
                .expect("one global subscriber");
            captured
        })
        .clone()
}
