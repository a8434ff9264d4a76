//! Expired-token recovery with an `auth_refresher`.
//!
//! The client starts with a token that has already expired. It never sends
//! an expired token: it calls the refresher (once, however many queries
//! wait), installs the new token, and runs the queries.

#[path = "common.rs"]
mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kalam_tokio::{AuthProvider, AuthRefreshCallback, KalamLinkClient, Result};

/// An unsigned JWT whose `exp` lies in the past: the client sees it expired.
fn expired_token() -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use std::time::{SystemTime, UNIX_EPOCH};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = format!(
        r#"{{"sub":"root","iss":"kalamdb","exp":{},"iat":{},"role":"system","token_type":"access"}}"#,
        now - 3600,
        now - 7200
    );
    format!(
        "{}.{}.unsigned",
        B64.encode(r#"{"typ":"JWT","alg":"HS256"}"#),
        B64.encode(claims)
    )
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let target = common::target().await;

    // Where fresh tokens come from: here, a login with a bootstrap client.
    let bootstrap = KalamLinkClient::builder().base_url(&target.url).build()?;
    let calls = Arc::new(AtomicUsize::new(0));
    let refresher: AuthRefreshCallback = {
        let (bootstrap, password, calls) = (bootstrap.clone(), target.root_password.clone(), calls.clone());
        Arc::new(move || {
            let (bootstrap, password, calls) = (bootstrap.clone(), password.clone(), calls.clone());
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let login = bootstrap.login("root", &password).await?;
                Ok(AuthProvider::jwt_token(login.access_token))
            }) as Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send>>
        })
    };

    let client = KalamLinkClient::builder()
        .base_url(&target.url)
        .auth(AuthProvider::jwt_token(expired_token()))
        .auth_refresher(refresher)
        .build()?;

    let queries = (0..5).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.execute_query(&format!("SELECT {i}")).await })
    });
    for q in queries {
        q.await??;
    }
    println!(
        "5 concurrent queries succeeded; the refresher was called {} time(s)",
        calls.load(Ordering::SeqCst)
    );
    Ok(())
}
