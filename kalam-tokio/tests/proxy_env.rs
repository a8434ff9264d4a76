//! The proxy environment variables, end to end: a client built with no
//! proxy setting goes through `HTTP_PROXY` (read when it is built), and
//! `no_proxy()` bypasses it. The environment is the process's, so this
//! binary has its own `main` (no test harness): it sets the variables
//! while it has one thread, then starts the runtime.

#![allow(unsafe_code)] // std::env::set_var, before any other thread exists

use kalam_testkit::{HttpProxy, TestServer};
use kalam_tokio::{AuthProvider, KalamLinkClient};

fn main() {
    // A port for the proxy, to name in the environment before it runs.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // SAFETY: the process has one thread here (no runtime, no test
    // harness), so nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("HTTP_PROXY", format!("http://127.0.0.1:{port}"));
        std::env::set_var("NO_PROXY", "db.internal, .example");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let proxy = HttpProxy::start_at(&format!("127.0.0.1:{port}"), None)
            .await
            .expect("proxy");
        let kit = TestServer::start().await;
        let authority = kit.url().trim_start_matches("http://").to_owned();
        let client = |direct: bool| {
            let builder = KalamLinkClient::builder()
                .base_url(kit.url())
                .auth(AuthProvider::system_user_auth(kit.root_password().to_owned()));
            if direct { builder.no_proxy() } else { builder }
                .build()
                .expect("client")
        };

        client(false)
            .execute_query("SELECT 1")
            .await
            .expect("through the environment's proxy");
        let seen = proxy.seen();
        assert!(
            seen.iter().any(|l| *l == format!("POST http://{authority}/v1/api/sql")),
            "HTTP_PROXY was not used: {seen:?}"
        );

        client(true).execute_query("SELECT 1").await.expect("direct");
        assert_eq!(
            proxy.seen().len(),
            seen.len(),
            "no_proxy() still went through the proxy"
        );
        println!("proxy_env: HTTP_PROXY honoured, no_proxy() bypasses it");
        kit.shutdown().await;
    });
}
