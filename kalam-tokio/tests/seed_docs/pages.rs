// The code of the upstream documentation pages (../shared/seeds/), written
// against a crate named `kalam_client`. Included by each adapter's
// seed_docs.rs with that name bound to the adapter: one copy for both.

mod authentication_page {
    use super::kalam_client;
    use kalam_client::{AuthProvider, KalamLinkClient};

    fn auth_types() {
        AuthProvider::basic_auth("admin".into(), "kalamdb123".into()); // login bootstrap
        AuthProvider::jwt_token("eyJhbGci...".into()); // bearer token
        AuthProvider::system_user_auth("kalamdb123".into()); // root system user
        AuthProvider::none(); // localhost bypass
    }

    fn builder() -> kalam_client::Result<KalamLinkClient> {
        let client = KalamLinkClient::builder()
            .base_url("http://localhost:2900")
            .auth(AuthProvider::basic_auth("admin".into(), "kalamdb123".into()))
            .build()?;
        Ok(client)
    }

    fn jwt(access_token: String) -> kalam_client::Result<()> {
        let client = KalamLinkClient::builder()
            .base_url("http://localhost:2900")
            .auth(AuthProvider::jwt_token(access_token.clone()))
            .build()?;
        KalamLinkClient::builder()
            .base_url("http://localhost:2900")
            .jwt_token(access_token)
            .build()?;
        Ok(())
    }

    async fn explicit_login_and_refresh(refresh_token: String) -> kalam_client::Result<()> {
        let bootstrap = KalamLinkClient::builder().base_url("http://localhost:2900").build()?;
        let login = bootstrap.login("admin", "kalamdb123").await?;
        let client = KalamLinkClient::builder()
            .base_url("http://localhost:2900")
            .auth(AuthProvider::jwt_token(login.access_token))
            .build()?;
        let refreshed = client.refresh_access_token(&refresh_token).await?;
        let new_token = refreshed.access_token;
        client.set_auth(AuthProvider::jwt_token(new_token.clone()));
        // or, for shared clones:
        client.update_shared_auth(AuthProvider::jwt_token(new_token));
        Ok(())
    }

    mod token_expired_recovery {
        use std::{future::Future, pin::Pin, sync::Arc};

        use super::kalam_client;
        use kalam_client::{AuthProvider, AuthRefreshCallback, KalamLinkClient, Result};

        async fn fetch_fresh_token() -> Result<String> {
            Ok("eyJ...".into())
        }

        fn build(initial_token: String) -> Result<KalamLinkClient> {
            let refresher: AuthRefreshCallback = Arc::new(|| {
                Box::pin(async {
                    let token = fetch_fresh_token().await?;
                    Ok(AuthProvider::jwt_token(token))
                }) as Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send>>
            });
            let client = KalamLinkClient::builder()
                .base_url("http://localhost:2900")
                .auth(AuthProvider::jwt_token(initial_token))
                .auth_refresher(refresher)
                .build()?;
            Ok(client)
        }
    }

    fn system_user() {
        let auth = AuthProvider::system_user_auth(
            std::env::var("KALAMDB_ROOT_PASSWORD").unwrap_or_else(|_| "kalamdb123".into()),
        );
    }
}

mod auth_aware_client_page {
    use std::{future::Future, pin::Pin, sync::Arc};

    use super::kalam_client;
    use kalam_client::{AuthProvider, ConnectionOptions, DynamicAuthProvider, KalamLinkClient, Result};

    async fn load_fresh_jwt() -> Result<String> {
        Ok("eyJ...".into())
    }

    struct TokenStore {
        // e.g. Arc<RwLock<Option<String>>>
    }

    impl DynamicAuthProvider for TokenStore {
        fn get_auth(&self) -> Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send + '_>> {
            Box::pin(async move {
                let token = load_fresh_jwt().await?;
                Ok(AuthProvider::jwt_token(token))
            })
        }
    }

    fn build() -> Result<KalamLinkClient> {
        let client = KalamLinkClient::builder()
            .base_url("http://localhost:2900")
            .auth_provider(Arc::new(TokenStore {}))
            .build()?;
        Ok(client)
    }

    async fn run_live_loop(client: &KalamLinkClient) -> Result<()> {
        let mut live = client.live("SELECT * FROM app.events").await?;
        while let Some(rows) = live.next().await {
            rows?;
        }
        Ok(())
    }

    async fn run_service(my_token_store: TokenStore) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let client = Arc::new(
            KalamLinkClient::builder()
                .base_url("http://localhost:2900")
                .auth_provider(Arc::new(my_token_store))
                .build()?,
        );

        client.connect().await?;

        let worker = {
            let client = Arc::clone(&client);
            tokio::spawn(async move { run_live_loop(&client).await })
        };

        worker.await??;
        client.disconnect().await;
        Ok(())
    }

    async fn refresh_without_rebuilding(client: &KalamLinkClient, new_token: String) -> Result<()> {
        let fresh = client.fresh_auth().await?; // re-runs DynamicAuthProvider if configured
        client.update_shared_auth(fresh);
        client.update_shared_auth(AuthProvider::jwt_token(new_token));
        Ok(())
    }

    fn eager() -> Result<KalamLinkClient> {
        KalamLinkClient::builder()
            .connection_options(ConnectionOptions::default().with_ws_lazy_connect(false))
            .build()
    }
}
