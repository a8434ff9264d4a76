//! Where the examples find a server: `KALAMDB_URL` (and
//! `KALAMDB_ROOT_PASSWORD`) when set, otherwise an embedded test server.

use kalam_testkit::TestServer;

/// A server to talk to. Keeps the embedded one alive while in scope.
pub struct Target {
    pub url: String,
    pub root_password: String,
    _embedded: Option<TestServer>,
}

pub async fn target() -> Target {
    let root_password = std::env::var("KALAMDB_ROOT_PASSWORD").unwrap_or_else(|_| "kalamdb123".into());
    match std::env::var("KALAMDB_URL") {
        Ok(url) if !url.is_empty() => Target {
            url,
            root_password,
            _embedded: None,
        },
        _ => {
            let server = TestServer::builder().root_password(&root_password).start().await;
            println!(
                "KALAMDB_URL is not set: using an embedded KalamDB-compatible test server at {}",
                server.url()
            );
            Target {
                url: server.url(),
                root_password,
                _embedded: Some(server),
            }
        }
    }
}
