//! A `DynamicAuthProvider`: credentials fetched lazily whenever the client
//! has no valid token (first query, after expiry, on every WebSocket
//! reconnect).

#[path = "common.rs"]
mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kalam_tokio::{AuthProvider, DynamicAuthProvider, KalamLinkClient, Result};

/// Stands in for a secret manager or an OAuth flow: each call logs in with
/// a bootstrap client and hands out the fresh access token.
struct TokenStore {
    bootstrap: KalamLinkClient,
    password: String,
    calls: AtomicUsize,
}

impl DynamicAuthProvider for TokenStore {
    fn get_auth(&self) -> Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send + '_>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let login = self.bootstrap.login("root", &self.password).await?;
            Ok(AuthProvider::jwt_token(login.access_token))
        })
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let target = common::target().await;
    let store = Arc::new(TokenStore {
        bootstrap: KalamLinkClient::builder().base_url(&target.url).build()?,
        password: target.root_password.clone(),
        calls: AtomicUsize::new(0),
    });

    let client = KalamLinkClient::builder()
        .base_url(&target.url)
        .auth_provider(store.clone())
        .build()?;

    let me = client.current_user().await?;
    println!("authenticated as {} ({})", me.user.id, me.user.role);
    let rows = client.execute_query("SELECT 1").await?;
    println!("SELECT 1 -> {:?}", rows.first().map(|r| &r.raw_rows));

    // Refresh without rebuilding the client.
    let fresh = client.fresh_auth().await?;
    client.update_shared_auth(fresh);
    client.execute_query("SELECT 2").await?;
    println!("the provider was asked {} time(s)", store.calls.load(Ordering::SeqCst));
    Ok(())
}
