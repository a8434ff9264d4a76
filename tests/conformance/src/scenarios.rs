//! The conformance scenarios. Each is generic over the client's runtime
//! `R` and takes any [`Backend`] (the in-process test kit or the real
//! server); most put the fault proxy in front of it, so what crossed the
//! wire can be counted the same way against both.
//!
//! They wait with Tokio's timers and run a [`FaultProxy`] (on Tokio), so
//! they are polled on a thread inside a Tokio runtime; the client under
//! test, `KalamLinkClient<R>`, uses only `R` (its own tasks, HTTP and
//! sockets), and the scenarios spawn their concurrent work with `R::spawn`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kalam_driver::prelude::*;
use kalam_driver::{KalamLinkClient, Runtime};

use crate::{Backend, FaultProxy, mint, unix_now};

/// Upper bound for anything the tests wait for (a guard against hangs, not
/// a synchronisation device).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How many live queries `many_subscriptions_all_deliver` opens on one client.
pub const MANY_SUBSCRIPTIONS: usize = 80;

/// The per-user subscription limit its server is started with: the 80, and
/// the 80 again on a new socket while the server may not yet have freed
/// the old socket's slots (the server's default is 10).
pub const MANY_SUBSCRIPTIONS_PER_USER_LIMIT: usize = 200;

/// Reconnects after 50 ms, backing off to at most 200 ms: scenarios that
/// cut sockets do not wait for the default half second.
pub(crate) fn quick_reconnects() -> ConnectionOptions {
    ConnectionOptions::default().with_reconnect_delay(Duration::from_millis(50), Duration::from_millis(200))
}

async fn proxy(b: &dyn Backend) -> FaultProxy {
    FaultProxy::start(&b.url()).await.expect("start proxy")
}

/// A client at `url` with the root user's credentials (`system_user_auth`).
pub fn root<R: Runtime>(b: &dyn Backend, url: &str) -> KalamLinkClient<R> {
    crate::builder::<R>()
        .base_url(url)
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .build()
        .expect("client")
}

/// A refresher that logs in as root with a bootstrap client, counting calls.
fn counting_refresher<R: Runtime>(b: &dyn Backend) -> (AuthRefreshCallback, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let bootstrap = crate::builder::<R>().base_url(b.url()).build().expect("client");
    let password = b.root_password();
    let counter = calls.clone();
    let refresher: AuthRefreshCallback = Arc::new(move || {
        let (bootstrap, password, counter) = (bootstrap.clone(), password.clone(), counter.clone());
        Box::pin(async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let login = bootstrap.login("root", &password).await?;
            Ok(AuthProvider::jwt_token(login.access_token))
        }) as Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send>>
    });
    (refresher, calls)
}

/// A DynamicAuthProvider that logs in as root, counting calls.
struct CountingProvider<R: Runtime> {
    bootstrap: KalamLinkClient<R>,
    password: String,
    calls: AtomicUsize,
}

impl<R: Runtime> CountingProvider<R> {
    fn new(b: &dyn Backend) -> Arc<Self> {
        Arc::new(CountingProvider {
            bootstrap: crate::builder::<R>().base_url(b.url()).build().expect("client"),
            password: b.root_password(),
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl<R: Runtime> DynamicAuthProvider for CountingProvider<R> {
    fn get_auth(&self) -> Pin<Box<dyn Future<Output = Result<AuthProvider>> + Send + '_>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let login = self.bootstrap.login("root", &self.password).await?;
            Ok(AuthProvider::jwt_token(login.access_token))
        })
    }
}

/// Starts `future` now as a task of the runtime `R` (the way an
/// application on `R` runs concurrent work); await the result for its
/// output.
pub(crate) fn spawn<R: Runtime, T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    R::spawn(async move {
        let _ = tx.send(future.await);
    });
    async move { rx.await.expect("the task ran to the end") }
}

/// The next event of a live query (failing the test after a long wait).
pub async fn next_event(s: &mut LiveEvents) -> LiveEvent {
    match tokio::time::timeout(PATIENCE, s.next()).await {
        Ok(Some(Ok(e))) => e,
        other => panic!("expected a live event, got {other:?}"),
    }
}

/// Reads events until the initial data is complete.
pub async fn until_ready(s: &mut LiveEvents) {
    loop {
        if matches!(next_event(s).await, LiveEvent::Ready) {
            return;
        }
    }
}

/// Creates `ns` and the table `ns.items (id BIGINT PRIMARY KEY, name TEXT,
/// qty INT)` if missing; returns `ns.items`.
pub async fn setup_table<R: Runtime>(client: &KalamLinkClient<R>, ns: &str) -> String {
    client
        .execute_query(&format!("CREATE NAMESPACE IF NOT EXISTS {ns}"))
        .await
        .expect("create namespace");
    client
        .execute_query(&format!(
            "CREATE TABLE IF NOT EXISTS {ns}.items (id BIGINT PRIMARY KEY, name TEXT, qty INT)"
        ))
        .await
        .expect("create table");
    format!("{ns}.items")
}

/// Polls `condition` until it holds, failing with `what` after PATIENCE.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One line per event, for failure messages.
fn describe(e: &LiveEvent) -> String {
    match e {
        LiveEvent::Subscribed { resumed_from, .. } => match resumed_from {
            Some(seq) => format!("Subscribed(resumed from {seq})"),
            None => "Subscribed".into(),
        },
        LiveEvent::InitialRows { rows, .. } => {
            format!("InitialRows{:?}", rows.iter().map(id_of).collect::<Vec<_>>())
        }
        LiveEvent::Ready => "Ready".into(),
        LiveEvent::Insert { row } => format!("Insert({})", id_of(row)),
        LiveEvent::Update { row, .. } => format!("Update({})", id_of(row)),
        LiveEvent::Delete { old } => format!("Delete({})", id_of(old)),
        other => format!("{other:?}"),
    }
}

fn id_of(row: &LiveRow) -> i64 {
    row.get("id").expect("row has an integer id")
}

// ------------------------------------------------------------------- HTTP

/// Basic credentials: N concurrent first queries cause exactly one login,
/// and no Basic header (nor a missing one) ever reaches the SQL endpoint.
pub async fn one_login_for_concurrent_first_queries<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let client = root::<R>(b, &proxy.url());
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let c = client.clone();
            spawn::<R, _>(async move { c.execute_query(&format!("SELECT {i}")).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.expect("query");
        let v: i64 = r.rows().next().expect("a row").get(0).expect("a number");
        assert_eq!(v, i as i64);
    }
    assert_eq!(proxy.count("/v1/api/auth/login"), 1, "{:?}", proxy.requests());
    let sql: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/api/sql")
        .collect();
    assert_eq!(sql.len(), 16);
    assert!(
        sql.iter().all(|r| r.auth_scheme.as_deref() == Some("Bearer")),
        "{sql:?}"
    );
}

/// A wrong password is a typed error, and final: later queries fail the
/// same way without sending the password again.
pub async fn refused_password_is_typed_and_final<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .auth(AuthProvider::basic_auth("root".into(), "not-the-password".into()))
        .build()
        .unwrap();
    for _ in 0..3 {
        let e = client.execute_query("SELECT 1").await.unwrap_err();
        let s = e.server().unwrap_or_else(|| panic!("a server error, got {e:?}"));
        assert_eq!((s.status, &s.code), (401, &ErrorCode::Unauthorized));
        assert!(e.is_credentials_rejected());
    }
    assert_eq!(proxy.count("/v1/api/auth/login"), 1, "no retry loop");
    assert_eq!(proxy.count("/v1/api/sql"), 0);
    // New credentials lift the refusal.
    client.update_shared_auth(AuthProvider::system_user_auth(b.root_password()));
    client.execute_query("SELECT 1").await.expect("new credentials work");
}

/// An expired token is never sent: the refresher is called once for all
/// concurrent waiters, and the queries go out with its token.
pub async fn refresher_called_once_for_expired_token<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let now = unix_now();
    let expired = mint(&b.jwt_secret(), "root", "system", "access", now - 7200, now - 3600);
    let (refresher, calls) = counting_refresher::<R>(b);
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .jwt_token(expired)
        .auth_refresher(refresher)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            spawn::<R, _>(async move { c.execute_query("SELECT 1").await })
        })
        .collect();
    for t in tasks {
        t.await.expect("query after refresh");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        proxy.count("/v1/api/sql"),
        8,
        "each query sent once, none with the expired token"
    );
}

/// An `AuthMachine` for `url` whose clock is two hours behind, so that it
/// holds as fresh a root token the server finds expired an hour ago (and
/// answers `TOKEN_EXPIRED`), with a refresher; the machine's time; and
/// `R`'s HTTP client for `url`. No client can be made to send a token its
/// own clock sees expired, and a real server cannot be made to expire a
/// token early: this is how a scenario meets the server's `TOKEN_EXPIRED`.
pub(crate) fn machine_behind_an_expired_token<R: Runtime>(
    b: &dyn Backend,
    url: &str,
) -> (kalam_proto::AuthMachine, kalam_proto::Now, R::Http) {
    use kalam_driver::adapter::HttpSettings;
    use kalam_proto::{AuthConfig, AuthMachine, Endpoints, Instant, Now};

    let real_now = unix_now();
    let expired = mint(
        &b.jwt_secret(),
        "root",
        "system",
        "access",
        real_now - 7200,
        real_now - 3600,
    );
    let endpoints = Endpoints::new(url).unwrap();
    let now = Now::new(Instant::ZERO, Duration::from_secs(real_now - 7200));
    let machine = AuthMachine::new(
        endpoints.clone(),
        AuthProvider::jwt_token(expired),
        AuthConfig {
            has_refresher: true,
            ..AuthConfig::default()
        },
        now,
    );
    let timeouts = KalamLinkTimeouts::default()
        .with_connection_timeout(PATIENCE)
        .with_receive_timeout(PATIENCE);
    let mut settings = HttpSettings::new::<R>(&endpoints, &ConnectionOptions::default(), &timeouts).expect("settings");
    crate::network::apply(&mut settings);
    let http = R::http_client(&settings, &Default::default()).expect("the runtime's HTTP client");
    (machine, now, http)
}

/// The server's TOKEN_EXPIRED answer: the machine's clock is set two hours
/// behind so it believes an expired token fresh; the server refuses it, the
/// refresher is asked once, and the query is retried once, successfully.
/// (This drives kalam-proto's AuthMachine directly, over `R`'s HTTP client
/// and with an `auth_refresher` of a `KalamLinkClient<R>`: no client can be
/// made to send a token its own clock sees expired, and a real server
/// cannot be made to expire a token early. The kit's `force_expire_all`
/// scenarios in [`kit_controls`](crate::kit_controls) cover the whole client.)
pub async fn token_expired_answer_is_recovered_once<R: Runtime>(b: &dyn Backend) {
    use kalam_proto::{AuthOutput, Operation, Reply};

    let proxy = proxy(b).await;
    let (mut m, now, http) = machine_behind_an_expired_token::<R>(b, &proxy.url());
    let (refresher, refreshes) = counting_refresher::<R>(b);
    let op = m.submit(Operation::Query(QueryRequest::new("SELECT 42")), now);
    let result = loop {
        match m.poll_output() {
            Some(AuthOutput::Transmit { id, request, .. }) => {
                let response = R::send_http(http.clone(), request).await.expect("HTTP exchange");
                m.handle_response(id, &response, now);
            }
            Some(AuthOutput::FetchCredentials { id, .. }) => {
                let credentials = refresher().await;
                m.handle_credentials(id, credentials, now);
            }
            Some(AuthOutput::Warning(_)) => {} // a clock-skew warning
            Some(AuthOutput::NodeChanged(_)) => panic!("one node: nothing to move to"),
            Some(AuthOutput::Done { op: done, result }) => {
                assert_eq!(done, op);
                break result;
            }
            Some(AuthOutput::TransmitUpload { .. }) => panic!("no upload was asked for"),
            None => panic!("the machine stalled"),
        }
    };
    let Ok(Reply::Query(r)) = result else {
        panic!("{result:?}")
    };
    let v: i64 = r.rows().next().unwrap().get(0).unwrap();
    assert_eq!(v, 42);
    assert_eq!(refreshes.load(Ordering::SeqCst), 1, "one refresher call");
    assert_eq!(
        proxy.count("/v1/api/sql"),
        2,
        "sent, refused TOKEN_EXPIRED, retried once"
    );
}

/// A DynamicAuthProvider is asked for HTTP queries too, before any
/// connect(): not at build time, but before the first HTTP request, which
/// carries its token (no request goes out without one).
pub async fn provider_asked_for_http_without_connect<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let provider = CountingProvider::<R>::new(b);
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .auth_provider(provider.clone())
        .build()
        .unwrap();
    assert_eq!(provider.calls(), 0, "not asked at build time");
    let me = client.current_user().await.expect("auth/me");
    assert_eq!(me.user.id, "root");
    assert_eq!(provider.calls(), 1, "asked before the first HTTP request");
    client.execute_query("SELECT 1").await.expect("query");
    assert_eq!(provider.calls(), 1, "asked once, the token reused");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests.iter().all(|r| r.auth_scheme.as_deref() == Some("Bearer")),
        "every request carries the provider's token: {requests:?}"
    );
    // fresh_auth re-runs the provider.
    let fresh = client.fresh_auth().await.unwrap();
    assert!(matches!(fresh, AuthProvider::JwtToken(_)));
    assert_eq!(provider.calls(), 2);
}

/// Non-ASCII SQL and parameters round-trip; 64-bit values read back exactly.
pub async fn unicode_and_bigint_round_trip<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    let table = setup_table(&client, "conf_unicode").await;
    let text = "añil 🍏 中文 \"quoted\" 'single' \\ back";
    client
        .execute_query_with_params(
            &format!("INSERT INTO {table} (id, name, qty) VALUES ($1, $2, $3)"),
            vec![
                serde_json::json!(9_007_199_254_740_993i64),
                serde_json::json!(text),
                serde_json::json!(-7),
            ],
        )
        .await
        .expect("insert");
    let r = client
        .execute_query(&format!(
            "SELECT id, name, qty FROM {table} WHERE name = 'añil 🍏 中文 \"quoted\" ''single'' \\ back'"
        ))
        .await
        .expect("select with unicode literal");
    let row = r.rows().next().expect("the row");
    assert_eq!(row.get::<i64>("id").unwrap(), 9_007_199_254_740_993);
    assert_eq!(row.get::<&str>("name").unwrap(), text);
    assert_eq!(row.get::<i32>("qty").unwrap(), -7);
}

/// Bad input of every kind is a typed error; nothing panics or hangs.
pub async fn bad_input_is_typed<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    let e = client.execute_query("SELEC 1").await.unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::InvalidSql), "{e:?}");
    let e = client.execute_query("").await.unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::EmptySql), "{e:?}");
    let e = client.execute_query("SELECT * FROM nowhere.nothing").await.unwrap_err();
    assert!(e.server().is_some_and(|s| s.status == 400), "{e:?}");
    // A refused connection.
    let proxy = proxy(b).await;
    proxy.set_refuse(true);
    let dead = root::<R>(b, &proxy.url());
    let e = dead.execute_query("SELECT 1").await.unwrap_err();
    // Through a forwarding proxy, the proxy answers for the dead server.
    let proxy_answered = crate::network::proxied() && matches!(&e, Error::Server(s) if s.status == 502);
    assert!(matches!(e, Error::Transport(_)) || proxy_answered, "{e:?}");
    // Nothing listening at all.
    let nobody = crate::builder::<R>()
        .base_url("http://127.0.0.1:9")
        .no_proxy() // a connection refused, not a proxy's answer
        .build()
        .unwrap();
    assert!(matches!(
        nobody.execute_query("SELECT 1").await,
        Err(Error::Transport(TransportError::Connect(_)))
    ));
    // A URL that is not one: a typed error at build time.
    assert!(matches!(
        crate::builder::<R>().base_url("not a url").build(),
        Err(Error::InvalidUrl { .. })
    ));
}

/// Explicit login and refresh; a refresh token offered as an access token
/// is refused locally, and never sent.
pub async fn explicit_login_refresh_and_refresh_token_misuse<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let bootstrap = crate::builder::<R>().base_url(proxy.url()).build().unwrap();
    let login = bootstrap.login("root", &b.root_password()).await.expect("login");
    assert_eq!(login.user.id, "root");
    let refreshed = bootstrap
        .refresh_access_token(&login.refresh_token)
        .await
        .expect("refresh");
    assert!(!refreshed.access_token.is_empty());
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .jwt_token(refreshed.access_token.clone())
        .build()
        .unwrap();
    client.execute_query("SELECT 1").await.expect("refreshed token works");
    let misuse = crate::builder::<R>()
        .base_url(proxy.url())
        .jwt_token(login.refresh_token.clone())
        .build()
        .unwrap();
    let before = proxy.count("/v1/api/sql");
    assert!(matches!(
        misuse.execute_query("SELECT 1").await,
        Err(Error::RefreshTokenAsAccessToken)
    ));
    assert_eq!(proxy.count("/v1/api/sql"), before, "never sent");
    // A refresh with an access token is the server's typed refusal.
    let e = bootstrap.refresh_access_token(&login.access_token).await.unwrap_err();
    assert_eq!(e.server().map(|s| s.status), Some(401), "{e:?}");
    // Debug output never shows the secrets.
    let dbg = format!("{:?} {:?}", AuthProvider::jwt_token(login.access_token.clone()), client);
    assert!(!dbg.contains(&login.access_token));
}

// ------------------------------------------------------------------- live

/// Several live queries share one socket (one upgrade), and each gets the
/// changes that match it.
pub async fn subscriptions_share_one_socket<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let client = root::<R>(b, &proxy.url());
    let table = setup_table(&client, "conf_share").await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut s = client.live_events(&format!("SELECT * FROM {table}")).await.unwrap();
        until_ready(&mut s).await;
        subs.push(s);
    }
    let mut filtered = client
        .live_events_with(&format!("SELECT * FROM {table} WHERE qty > 10"), None)
        .await
        .unwrap();
    until_ready(&mut filtered).await;
    client
        .execute_query(&format!("INSERT INTO {table} (id, name, qty) VALUES (1, 'small', 1)"))
        .await
        .unwrap();
    client
        .execute_query(&format!("INSERT INTO {table} (id, name, qty) VALUES (2, 'big', 50)"))
        .await
        .unwrap();
    for s in &mut subs {
        for expected in [1, 2] {
            match next_event(s).await {
                LiveEvent::Insert { row } => assert_eq!(id_of(&row), expected),
                other => panic!("{other:?}"),
            }
        }
    }
    match next_event(&mut filtered).await {
        LiveEvent::Insert { row } => assert_eq!(id_of(&row), 2, "only the matching row"),
        other => panic!("{other:?}"),
    }
    assert_eq!(proxy.ws_upgrades(), 1, "{:?}", proxy.requests());
}

/// The socket dies (cut by the proxy, no close frame); rows inserted
/// meanwhile arrive after the automatic reconnect and resubscribe-from-_seq.
/// The cut also killed the client's idle HTTP connection (its login's):
/// the next HTTP query still succeeds.
pub async fn dropped_socket_loses_no_change<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .connection_options(quick_reconnects())
        .build()
        .unwrap();
    let direct = root::<R>(b, &b.url());
    let table = setup_table(&direct, "conf_drop").await;
    direct
        .execute_query(&format!("INSERT INTO {table} (id, name, qty) VALUES (1, 'before', 1)"))
        .await
        .unwrap();
    let mut s = client.live_events(&format!("SELECT * FROM {table}")).await.unwrap();
    until_ready(&mut s).await;
    proxy.drop_all();
    for id in 2..=4 {
        direct
            .execute_query(&format!(
                "INSERT INTO {table} (id, name, qty) VALUES ({id}, 'meanwhile', 1)"
            ))
            .await
            .unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut resumed = false;
    let mut told = false;
    while seen.len() < 3 {
        match next_event(&mut s).await {
            // The stream hears of the drop before anything of the resume.
            LiveEvent::Reconnecting { .. } => told = true,
            LiveEvent::Subscribed { resumed_from, .. } => {
                assert!(told, "Subscribed again without Reconnecting first");
                resumed |= resumed_from.is_some()
            }
            LiveEvent::InitialRows { rows, .. } => seen.extend(rows.iter().map(id_of)),
            LiveEvent::Insert { row } => {
                seen.insert(id_of(&row));
            }
            _ => {}
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![2, 3, 4]);
    assert!(proxy.ws_upgrades() >= 2, "it reconnected");
    assert!(told, "the stream heard of the drop");
    let _ = resumed; // a resume, or changes that raced the cut: both lose nothing
    let r = client
        .execute_query(&format!("SELECT id FROM {table} WHERE id = 4"))
        .await
        .expect("an HTTP query after the cut (its pooled connection was cut too)");
    assert_eq!(r.rows().count(), 1);
}

/// Every reconnect asks the DynamicAuthProvider again.
pub async fn reconnect_asks_provider_again<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let provider = CountingProvider::<R>::new(b);
    let connects = Arc::new(AtomicUsize::new(0));
    let counter = connects.clone();
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .auth_provider(provider.clone())
        .connection_options(quick_reconnects())
        .on_connect(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let table = setup_table(&client, "conf_provider").await;
    client.connect().await.expect("connect");
    let mut s = client.live_events(&format!("SELECT * FROM {table}")).await.unwrap();
    until_ready(&mut s).await;
    for reconnect in 1..=2 {
        let before = provider.calls();
        proxy.drop_all();
        // The reconnect re-subscribes: a Subscribed event marks it.
        loop {
            if let LiveEvent::Subscribed { .. } = next_event(&mut s).await {
                break;
            }
        }
        assert!(provider.calls() > before, "asked again on reconnect {reconnect}");
        assert_eq!(connects.load(Ordering::SeqCst), 1 + reconnect);
    }
    assert_eq!(proxy.ws_upgrades(), 3);
}

/// A refused WebSocket authentication is reported once to on_error and once
/// to the subscribing call, and not retried with the same credentials.
pub async fn refused_ws_auth_surfaces_once<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let now = unix_now();
    let forged = mint(
        "not-the-server-secret-at-all-0123456789",
        "root",
        "system",
        "access",
        now,
        now + 3600,
    );
    let errors = Arc::new(AtomicUsize::new(0));
    let counter = errors.clone();
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .jwt_token(forged)
        .connection_options(quick_reconnects())
        .on_error(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    match tokio::time::timeout(PATIENCE, client.live_events("SELECT * FROM conf_refused.items")).await {
        Ok(Err(Error::WsAuthFailed(_))) => {}
        other => panic!("expected the refusal from the call, got {other:?}"),
    }
    assert_eq!(errors.load(Ordering::SeqCst), 1, "reported once");
    assert_eq!(proxy.ws_upgrades(), 1, "no blind retry");
}

/// A consumer that stops reading loses its own subscription (after the
/// buffered events, with SubscriptionLagged) and never delays another.
pub async fn stalled_subscriber_does_not_delay_another<R: Runtime>(b: &dyn Backend) {
    let client = crate::builder::<R>()
        .base_url(b.url())
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .connection_options(ConnectionOptions::default().with_subscription_buffer(4))
        .build()
        .unwrap();
    let table = setup_table(&client, "conf_stall").await;
    let mut stalled = client
        .live_events_with(&format!("SELECT * FROM {table}"), None)
        .await
        .unwrap();
    let mut healthy = client
        .live_events_with(&format!("SELECT * FROM {table}"), None)
        .await
        .unwrap();
    until_ready(&mut healthy).await;
    // The healthy consumer keeps up with every change while the other reads nothing.
    for id in 1..=12 {
        client
            .execute_query(&format!("INSERT INTO {table} (id, name, qty) VALUES ({id}, 'x', 1)"))
            .await
            .unwrap();
        match next_event(&mut healthy).await {
            LiveEvent::Insert { row } => assert_eq!(id_of(&row), id),
            other => panic!("{other:?}"),
        }
    }
    let mut delivered = 0;
    loop {
        match tokio::time::timeout(PATIENCE, stalled.next()).await {
            Ok(Some(Ok(_))) => delivered += 1,
            Ok(Some(Err(Error::SubscriptionLagged { capacity: 4 }))) => break,
            other => panic!("expected SubscriptionLagged, got {other:?}"),
        }
    }
    assert!(delivered <= 4, "only what fit in the buffer: {delivered}");
    assert!(matches!(tokio::time::timeout(PATIENCE, stalled.next()).await, Ok(None)));
}

// ------------------------------------------------------- live: contracts

pub(crate) async fn insert<R: Runtime>(client: &KalamLinkClient<R>, table: &str, id: i64) {
    client
        .execute_query(&format!(
            "INSERT INTO {table} (id, name, qty) VALUES ({id}, 'row', {id})"
        ))
        .await
        .unwrap_or_else(|e| panic!("insert {id}: {e}"));
}

/// A cold client behind a proxy that delays every answer by 100 ms: a
/// subscription that is not yet acknowledged when the call returns is
/// registered well after the rows the test inserts at once.
async fn slow_cold_client<R: Runtime>(b: &dyn Backend) -> (FaultProxy, KalamLinkClient<R>) {
    let proxy = proxy(b).await;
    proxy.set_latency(Duration::from_millis(100));
    let client = root::<R>(b, &proxy.url()); // cold: no login, no socket yet
    (proxy, client)
}

/// Reads `s` up to `Ready`, inserts `sentinel`, and reads on until it
/// arrives: every event up to the sentinel, as (initial row ids, inserted
/// ids, descriptions).
async fn events_until_sentinel<R: Runtime>(
    s: &mut LiveEvents,
    writer: &KalamLinkClient<R>,
    table: &str,
    sentinel: i64,
) -> (Vec<i64>, Vec<i64>, Vec<String>) {
    let (mut initial, mut inserted, mut events) = (Vec::new(), Vec::new(), Vec::new());
    let mut ready = false;
    while !ready {
        let e = next_event(s).await;
        events.push(describe(&e));
        match e {
            LiveEvent::InitialRows { rows, .. } => initial.extend(rows.iter().map(id_of)),
            LiveEvent::Insert { row } => inserted.push(id_of(&row)),
            LiveEvent::Ready => ready = true,
            _ => {}
        }
    }
    insert(writer, table, sentinel).await;
    while !inserted.contains(&sentinel) {
        let e = next_event(s).await;
        events.push(describe(&e));
        match e {
            LiveEvent::InitialRows { rows, .. } => initial.extend(rows.iter().map(id_of)),
            LiveEvent::Insert { row } => inserted.push(id_of(&row)),
            _ => {}
        }
    }
    (initial, inserted, events)
}

/// `live_events_with(sql, None)` (changes only) returns once the server has
/// acknowledged the subscription: on a cold, lazily connected client, every
/// row inserted right after the call returns arrives as an `Insert`.
pub async fn live_events_returns_after_ack_changes_only<R: Runtime>(b: &dyn Backend) {
    let writer = root::<R>(b, &b.url());
    let table = setup_table(&writer, "conf_ack_changes").await;
    let (_proxy, client) = slow_cold_client::<R>(b).await;
    let mut s = tokio::time::timeout(
        PATIENCE,
        client.live_events_with(&format!("SELECT * FROM {table}"), None),
    )
    .await
    .expect("live_events_with returned")
    .expect("subscribed");
    for id in 1..=20 {
        insert(&writer, &table, id).await;
    }
    // Row 21 is inserted once the stream says it is live: it must arrive,
    // and every row before it too.
    let (initial, inserted, events) = events_until_sentinel(&mut s, &writer, &table, 21).await;
    let lost: Vec<i64> = (1..=20).filter(|id| !inserted.contains(id)).collect();
    assert!(
        lost.is_empty() && initial.is_empty(),
        "{} of the 20 rows inserted right after live_events_with returned were lost: {lost:?}; events {events:?}",
        lost.len()
    );
    assert_eq!(inserted, (1..=21).collect::<Vec<_>>(), "in commit order");
}

/// With default options, `live_events` returns after the acknowledgement
/// and the initial rows' snapshot: rows inserted right after the call
/// returns arrive as `Insert`s, not inside `InitialRows`.
pub async fn live_events_returns_after_ack_initial_rows<R: Runtime>(b: &dyn Backend) {
    let writer = root::<R>(b, &b.url());
    let table = setup_table(&writer, "conf_ack_initial").await;
    insert(&writer, &table, 1).await;
    let (_proxy, client) = slow_cold_client::<R>(b).await;
    let mut s = tokio::time::timeout(PATIENCE, client.live_events(&format!("SELECT * FROM {table}")))
        .await
        .expect("live_events returned")
        .expect("subscribed");
    for id in 2..=6 {
        insert(&writer, &table, id).await;
    }
    let (initial, inserted, events) = events_until_sentinel(&mut s, &writer, &table, 7).await;
    assert_eq!(
        (initial, inserted),
        (vec![1], vec![2, 3, 4, 5, 6, 7]),
        "(initial rows, inserts): rows inserted after live_events returned must arrive as inserts; events {events:?}"
    );
}

/// A subscription the server refuses is an `Err` from the call itself,
/// with the server's code: bad SQL, and a table that does not exist.
pub async fn live_events_returns_after_ack_refusal_is_err<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    let table = setup_table(&client, "conf_ack_refused").await;
    let mut failures = Vec::new();
    for (sql, code) in [
        (format!("SELEC * FROM {table}"), "INVALID_SQL"),
        ("SELECT * FROM conf_ack_refused.missing".to_owned(), "NOT_FOUND"),
    ] {
        match tokio::time::timeout(PATIENCE, client.live_events(&sql)).await {
            Err(_) => failures.push(format!("{sql:?}: live_events did not return")),
            Ok(Err(e)) if e.code().map(ErrorCode::as_str) == Some(code) => {}
            Ok(Err(e)) => failures.push(format!("{sql:?}: expected {code}, got {e:?}")),
            Ok(Ok(mut s)) => {
                let then = tokio::time::timeout(PATIENCE, s.next()).await;
                failures.push(format!(
                    "{sql:?}: expected Err({code}) from live_events, got Ok; the stream then yielded {then:?}"
                ));
            }
        }
    }
    // The refusals leave the client usable.
    match tokio::time::timeout(PATIENCE, client.live_events(&format!("SELECT * FROM {table}"))).await {
        Ok(Ok(mut s)) => until_ready(&mut s).await,
        other => failures.push(format!("a good subscription after the refusals: {other:?}")),
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Reads every stream at once (one shared deadline) until it delivers row
/// `id`, as an `Insert` or in `InitialRows` (a resume after a reconnect).
/// Returns, for each stream that did not, why.
async fn deliveries(subs: &mut [LiveEvents], id: i64) -> Vec<(usize, String)> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let reads = subs.iter_mut().enumerate().map(|(i, s)| async move {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, s.next()).await {
                Ok(Some(Ok(LiveEvent::Insert { row }))) if id_of(&row) == id => return None,
                Ok(Some(Ok(LiveEvent::InitialRows { rows, .. }))) if rows.iter().any(|r| id_of(r) == id) => {
                    return None;
                }
                Ok(Some(Ok(e))) => seen.push(describe(&e)),
                Ok(Some(Err(e))) => return Some((i, format!("ended with {e}"))),
                Ok(None) => return Some((i, "ended".to_owned())),
                Err(_) if seen.is_empty() => return Some((i, "no event at all".to_owned())),
                Err(_) => return Some((i, format!("only {}", seen.join(", ")))),
            }
        }
    });
    futures_util::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// `n× reason` per distinct reason.
fn tally<'a>(reasons: impl IntoIterator<Item = &'a str>) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(r, n)| format!("{n}× {r}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// 80 live queries on one client (one socket) all subscribe, and each
/// delivers an insert; after the connection is cut, all 80 resubscribe and
/// each delivers the next insert. The server takes 50 text messages per
/// second per connection (a burst over that is dropped, one error frame
/// each) and, here, 200 subscriptions per user.
pub async fn many_subscriptions_all_deliver<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = errors.clone();
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .connection_options(quick_reconnects())
        .on_error(move |e| sink.lock().unwrap().push(e.to_string()))
        .build()
        .unwrap();
    let writer = root::<R>(b, &b.url());
    let table = setup_table(&writer, "conf_many").await;
    let sql = format!("SELECT * FROM {table}");
    let mut subs = Vec::new();
    for i in 0..MANY_SUBSCRIPTIONS {
        match tokio::time::timeout(PATIENCE, client.live_events_with(&sql, None)).await {
            Ok(Ok(s)) => subs.push(s),
            Ok(Err(e)) => panic!("subscription {i} of {MANY_SUBSCRIPTIONS} refused: {e}"),
            Err(_) => panic!("subscription {i} of {MANY_SUBSCRIPTIONS} did not return"),
        }
    }
    let report = |round: &str, missing: &[(usize, String)]| {
        let errors = errors.lock().unwrap().clone();
        format!(
            "{round}: {} of {MANY_SUBSCRIPTIONS} subscriptions did not deliver ({}); connection-level errors: [{}]",
            missing.len(),
            tally(missing.iter().map(|(_, r)| r.as_str())),
            tally(errors.iter().map(String::as_str)),
        )
    };
    insert(&writer, &table, 1).await;
    let missing = deliveries(&mut subs, 1).await;
    assert!(missing.is_empty(), "{}", report("first insert", &missing));
    assert_eq!(proxy.ws_upgrades(), 1, "one socket for all");
    // Cut the connection (no close frame): every subscription is resent on
    // the next socket, and resumes from the row it saw last.
    proxy.drop_all();
    insert(&writer, &table, 2).await;
    let missing = deliveries(&mut subs, 2).await;
    assert!(missing.is_empty(), "{}", report("after the reconnect", &missing));
    assert!(proxy.ws_upgrades() >= 2, "it reconnected");
}

/// After an `auth_refresher` has replaced the token, the application's
/// `update_shared_auth` with the credentials the client was built with
/// takes effect: they are not "the current credentials" any more. Here
/// they are an expired token (which no client ever sends), so the next
/// query has to call the refresher again.
pub async fn credentials_from_refresher_become_current<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let now = unix_now();
    let initial = mint(&b.jwt_secret(), "root", "system", "access", now - 7200, now - 3600);
    let (refresher, calls) = counting_refresher::<R>(b);
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .jwt_token(initial.clone())
        .auth_refresher(refresher)
        .build()
        .unwrap();
    client
        .execute_query("SELECT 1")
        .await
        .expect("query with the refresher's token");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    client.update_shared_auth(AuthProvider::jwt_token(initial));
    client
        .execute_query("SELECT 2")
        .await
        .expect("query after update_shared_auth");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "update_shared_auth(the initial, expired token) was ignored: the next query went out with the refresher's \
         token instead of asking the refresher again"
    );
    assert_eq!(proxy.count("/v1/api/sql"), 2, "the expired token is never sent");
}

/// The driver runs while any handle is alive: a client clone, a
/// `LiveEvents` or a `LiveQuery`. With every client clone dropped, the live
/// streams still deliver; when the last stream is dropped, the socket closes.
pub async fn live_stream_outlives_client_handles<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let writer = root::<R>(b, &b.url());
    let table = setup_table(&writer, "conf_outlive").await;
    insert(&writer, &table, 1).await;
    let client = root::<R>(b, &proxy.url());
    let clone = client.clone();
    let sql = format!("SELECT * FROM {table}");
    let mut events = client.live_events_with(&sql, None).await.expect("live_events_with");
    until_ready(&mut events).await;
    let mut query = clone.live(&sql).await.expect("live");
    let rows = tokio::time::timeout(PATIENCE, query.next()).await;
    assert!(
        matches!(&rows, Ok(Some(Ok(r))) if r.len() == 1),
        "initial rows: {rows:?}"
    );
    assert_eq!(proxy.open_websockets(), 1, "one socket");
    drop(client);
    drop(clone);
    // No client handle is left; the streams still are.
    insert(&writer, &table, 2).await;
    match next_event(&mut events).await {
        LiveEvent::Insert { row } => assert_eq!(id_of(&row), 2),
        other => panic!(
            "expected the insert after the clients were dropped, got {}",
            describe(&other)
        ),
    }
    let rows = tokio::time::timeout(PATIENCE, query.next()).await;
    assert!(
        matches!(&rows, Ok(Some(Ok(r))) if r.len() == 2),
        "LiveQuery after the clients were dropped: {rows:?}"
    );
    // A LiveQuery alone keeps the driver too.
    drop(events);
    insert(&writer, &table, 3).await;
    let rows = tokio::time::timeout(PATIENCE, query.next()).await;
    assert!(
        matches!(&rows, Ok(Some(Ok(r))) if r.len() == 3),
        "LiveQuery alone: {rows:?}"
    );
    assert_eq!(proxy.open_websockets(), 1, "still the one socket");
    // The last handle goes: the driver stops and closes the socket.
    drop(query);
    eventually("the WebSocket stayed open after the last handle was dropped", || {
        proxy.open_websockets() == 0
    })
    .await;
}

/// `disconnect()` ends every live stream cleanly (what was buffered, then
/// the end, no error), closes the socket and does not reconnect; HTTP
/// queries still work, and a later live query opens a new socket.
pub async fn disconnect_ends_streams_and_closes_the_socket<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let client = crate::builder::<R>()
        .base_url(proxy.url())
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .connection_options(quick_reconnects())
        .build()
        .unwrap();
    let table = setup_table(&client, "conf_disconnect").await;
    insert(&client, &table, 1).await;
    let sql = format!("SELECT * FROM {table}");
    let mut events = client.live_events(&sql).await.expect("live_events");
    until_ready(&mut events).await;
    let mut changes = client.live_events_with(&sql, None).await.expect("live_events_with");
    let mut query = client.live(&sql).await.expect("live");
    let rows = tokio::time::timeout(PATIENCE, query.next()).await;
    assert!(
        matches!(&rows, Ok(Some(Ok(r))) if r.len() == 1),
        "initial rows: {rows:?}"
    );
    assert_eq!((proxy.ws_upgrades(), proxy.open_websockets()), (1, 1), "one socket");

    tokio::time::timeout(PATIENCE, client.disconnect())
        .await
        .expect("disconnect() returned");
    for (name, s) in [("live_events", &mut events), ("live_events_with(None)", &mut changes)] {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(PATIENCE, s.next()).await {
                Ok(None) => break,
                Ok(Some(Ok(e))) => seen.push(describe(&e)),
                Ok(Some(Err(e))) => panic!("{name} ended with an error after disconnect(): {e:?}; before it {seen:?}"),
                Err(_) => panic!("{name} did not end after disconnect(); it yielded {seen:?}"),
            }
        }
    }
    match tokio::time::timeout(PATIENCE, query.next()).await {
        Ok(None) => {}
        other => panic!("live() did not end cleanly after disconnect(): {other:?}"),
    }
    eventually("the WebSocket stayed open after disconnect()", || {
        proxy.open_websockets() == 0
    })
    .await;

    // HTTP still works, and nothing reconnects (the reconnect delay is at
    // most 200 ms).
    let r = client.execute_query("SELECT 7").await.expect("HTTP after disconnect()");
    assert_eq!(r.rows().next().expect("a row").get::<i64>(0).expect("a number"), 7);
    insert(&client, &table, 2).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        (proxy.ws_upgrades(), proxy.open_websockets()),
        (1, 0),
        "no reconnect after disconnect()"
    );

    // A new live query opens a new socket.
    let mut again = tokio::time::timeout(PATIENCE, client.live_events(&sql))
        .await
        .expect("live_events after disconnect() returned")
        .expect("live_events after disconnect()");
    let (initial, _, events) = events_until_sentinel(&mut again, &client, &table, 3).await;
    assert_eq!(initial, vec![1, 2], "{events:?}");
    assert_eq!((proxy.ws_upgrades(), proxy.open_websockets()), (2, 1));
}

/// `https://` and `wss://` to a server that speaks plain HTTP: with the
/// adapter's `rustls` feature, the TLS handshake fails and every call says
/// so with a typed transport error (nothing hangs, nothing panics); without
/// it, building the client is refused with a typed error naming the feature.
pub async fn tls_to_a_plain_server_is_a_typed_error<R: Runtime>(b: &dyn Backend) {
    let url = b.plain_url().replacen("http://", "https://", 1);
    let built = crate::builder::<R>()
        .base_url(&url)
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .timeouts(KalamLinkTimeouts::default().with_subscribe_timeout(Duration::from_millis(500)))
        .build();
    let client = match built {
        Err(Error::InvalidUrl { reason, .. }) => {
            assert!(reason.contains("rustls"), "{reason}");
            return;
        }
        Err(other) => panic!("expected InvalidUrl or a client, got {other:?}"),
        Ok(client) => client,
    };
    match tokio::time::timeout(PATIENCE, client.execute_query("SELECT 1")).await {
        Ok(Err(Error::Transport(_))) => {}
        other => panic!("expected a transport error over TLS, got {other:?}"),
    }
    let live = tokio::time::timeout(PATIENCE, client.live_events("SELECT * FROM tls.nothing")).await;
    assert!(
        matches!(live, Ok(Err(_))),
        "expected an error from wss://, got {live:?}"
    );
}

// ------------------------------------------------------------ fault matrix
//
// Each fault is injected by the fault proxy (or, for a restart, by the
// backend). What every scenario checks: a query either succeeds or fails
// with a typed transport error (never a hang: each call is bounded by
// PATIENCE, and the client's own short timeouts make it fail long before);
// a live query recovers by itself, and the rows it reports are exactly the
// rows changed, each once. Only inserts are made while the subscriber is
// cut off, so PROTOCOL §4.8's caveats (deletions while disconnected are not
// reported; only the latest version of a row is resent) do not hide
// anything: every row must arrive, once.

/// A client for the fault scenarios: root credentials, quick reconnects,
/// a keepalive ping every second (so its 10 s silence limit is checked
/// often), and `timeouts`.
fn fault_client<R: Runtime>(b: &dyn Backend, url: &str, timeouts: KalamLinkTimeouts) -> KalamLinkClient<R> {
    crate::builder::<R>()
        .base_url(url)
        .auth(AuthProvider::system_user_auth(b.root_password()))
        .connection_options(quick_reconnects().with_ping_interval(Duration::from_secs(1)))
        .timeouts(timeouts)
        .build()
        .expect("client")
}

/// The common start of the fault scenarios that watch a table: a writer
/// straight to the server, a table `ns` with row 1, a fault client at `url`
/// and its live query on the table, which has reported row 1 exactly once.
async fn watched_table<R: Runtime>(
    b: &dyn Backend,
    url: &str,
    ns: &str,
    timeouts: KalamLinkTimeouts,
) -> (KalamLinkClient<R>, String, KalamLinkClient<R>, LiveEvents) {
    let writer = root::<R>(b, &b.url());
    let table = setup_table(&writer, ns).await;
    insert(&writer, &table, 1).await;
    let client = fault_client::<R>(b, url, timeouts);
    let mut s = client
        .live_events(&format!("SELECT * FROM {table}"))
        .await
        .expect("subscribe");
    rows_exactly_once(&mut s, &[1], "initial rows").await;
    (writer, table, client, s)
}

/// Short limits for the fault scenarios.
pub(crate) fn short_timeouts() -> KalamLinkTimeouts {
    KalamLinkTimeouts::default()
        .with_connection_timeout(Duration::from_secs(2))
        .with_receive_timeout(Duration::from_secs(3))
        .with_auth_timeout(Duration::from_secs(3))
        .with_subscribe_timeout(Duration::from_secs(3))
}

/// Runs `sql`: `Ok(rows)` or a typed transport error, within PATIENCE;
/// anything else fails the test.
async fn ok_or_transport<R: Runtime>(client: &KalamLinkClient<R>, sql: &str) -> std::result::Result<usize, String> {
    match tokio::time::timeout(PATIENCE, client.execute_query(sql)).await {
        Ok(Ok(r)) => Ok(r.rows().count()),
        Ok(Err(Error::Transport(t))) => Err(t.to_string()),
        Ok(Err(other)) => panic!("{sql}: expected success or a transport error, got {other:?}"),
        Err(_) => panic!("{sql}: no answer within {PATIENCE:?} (its timeouts are shorter)"),
    }
}

/// Runs `sql` until it succeeds (each failure a typed transport error), at
/// most `tries` times; the number of rows.
async fn succeeds_soon<R: Runtime>(client: &KalamLinkClient<R>, sql: &str, tries: usize) -> usize {
    let mut failures = Vec::new();
    for _ in 0..tries {
        match ok_or_transport(client, sql).await {
            Ok(n) => return n,
            Err(e) => failures.push(e),
        }
    }
    panic!("{sql}: still failing after {tries} tries: {failures:?}")
}

/// Reads `s` until every row of `want` has been reported (as an insert, an
/// update, or in initial rows of a resume), within PATIENCE; fails if a row
/// is reported twice, or a row not in `want` is reported. Returns the
/// events, described.
pub(crate) async fn rows_exactly_once(s: &mut LiveEvents, want: &[i64], what: &str) -> Vec<String> {
    let want: std::collections::BTreeSet<i64> = want.iter().copied().collect();
    let mut seen = std::collections::BTreeMap::<i64, usize>::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !want.iter().all(|id| seen.contains_key(id)) {
        let e = match tokio::time::timeout_at(deadline, s.next()).await {
            Ok(Some(Ok(e))) => e,
            Ok(Some(Err(e))) => panic!("{what}: the live query ended with {e:?}; events {events:?}"),
            Ok(None) => panic!("{what}: the live query ended; events {events:?}"),
            Err(_) => {
                let missing: Vec<_> = want.iter().filter(|id| !seen.contains_key(id)).collect();
                panic!("{what}: rows {missing:?} never arrived; events {events:?}")
            }
        };
        events.push(describe(&e));
        match &e {
            LiveEvent::InitialRows { rows, .. } => {
                for r in rows {
                    *seen.entry(id_of(r)).or_default() += 1;
                }
            }
            LiveEvent::Insert { row } | LiveEvent::Update { row, .. } => *seen.entry(id_of(row)).or_default() += 1,
            LiveEvent::Delete { old } => panic!("{what}: unexpected delete of {}; events {events:?}", id_of(old)),
            LiveEvent::Closed(e) => panic!("{what}: the live query closed ({e:?}); events {events:?}"),
            _ => {}
        }
    }
    let wrong: Vec<_> = seen.iter().filter(|(id, n)| **n > 1 || !want.contains(id)).collect();
    assert!(
        wrong.is_empty(),
        "{what}: rows reported twice or not changed ((id, times): {wrong:?}); events {events:?}"
    );
    events
}

/// `n` characters that do not compress (a frame this size stays large with
/// gzip too).
fn incompressible(n: usize) -> String {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// Latency of 50–200 ms each way (jittered per piece, order kept): queries
/// and a live query work, and every change arrives once.
pub async fn fault_latency_each_way<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    proxy.set_latency_each_way(Duration::from_millis(50), Duration::from_millis(200));
    let writer = root::<R>(b, &b.url());
    let table = setup_table(&writer, "conf_latency").await;
    insert(&writer, &table, 1).await;
    let client = fault_client::<R>(b, &proxy.url(), short_timeouts());
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let c = client.clone();
            spawn::<R, _>(async move { c.execute_query(&format!("SELECT {i}")).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.expect("a query over a slow network");
        assert_eq!(
            r.rows().next().expect("a row").get::<i64>(0).expect("a number"),
            i as i64
        );
    }
    let mut s = client
        .live_events(&format!("SELECT * FROM {table}"))
        .await
        .expect("subscribe over a slow network");
    rows_exactly_once(&mut s, &[1], "initial rows").await;
    for id in 2..=5 {
        insert(&writer, &table, id).await;
    }
    rows_exactly_once(&mut s, &[2, 3, 4, 5], "changes over a slow network").await;
    assert_eq!(proxy.ws_upgrades(), 1, "no reconnect was needed");
}

/// A 16 KiB/s link each way: a 20-row answer of ~10 KB (about 0.6 s on the
/// wire) arrives whole; a client whose receive timeout is shorter than the
/// transfer gets a typed timeout; the live query's initial rows and changes
/// arrive once.
pub async fn fault_bandwidth_limit<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    proxy.set_bandwidth(Some(16 * 1024));
    let writer = root::<R>(b, &b.url());
    let table = setup_table(&writer, "conf_bandwidth").await;
    let name = incompressible(480);
    for id in 1..=20 {
        writer
            .execute_query(&format!(
                "INSERT INTO {table} (id, name, qty) VALUES ({id}, '{name}', {id})"
            ))
            .await
            .expect("insert");
    }
    let client = fault_client::<R>(b, &proxy.url(), short_timeouts());
    let n = client
        .execute_query(&format!("SELECT * FROM {table}"))
        .await
        .expect("a 10 KB answer through 16 KiB/s")
        .rows()
        .count();
    assert_eq!(n, 20);
    // At 16 KiB/s the answer needs at least 0.5 s: a 150 ms receive timeout
    // must fire (a token, so that no login is needed).
    let now = unix_now();
    let impatient = crate::builder::<R>()
        .base_url(proxy.url())
        .jwt_token(mint(&b.jwt_secret(), "root", "system", "access", now, now + 3600))
        .timeouts(short_timeouts().with_receive_timeout(Duration::from_millis(150)))
        .build()
        .expect("client");
    match tokio::time::timeout(PATIENCE, impatient.execute_query(&format!("SELECT * FROM {table}"))).await {
        Ok(Err(Error::Transport(TransportError::Timeout(_)))) => {}
        other => panic!("expected a typed receive timeout, got {other:?}"),
    }
    let mut s = client
        .live_events(&format!("SELECT * FROM {table}"))
        .await
        .expect("subscribe through 16 KiB/s");
    rows_exactly_once(&mut s, &(1..=20).collect::<Vec<_>>(), "initial rows").await;
    for id in 21..=23 {
        insert(&writer, &table, id).await;
    }
    rows_exactly_once(&mut s, &[21, 22, 23], "changes through 16 KiB/s").await;
    proxy.set_bandwidth(None);
}

/// The connection is reset after 30 bytes of a request, and (another one)
/// after 20 bytes of an answer: each query succeeds (if the client could
/// safely try again) or fails with a typed transport error; the client
/// stays usable, and an insert whose answer was lost is not sent twice.
pub async fn fault_reset_mid_request<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let writer = root::<R>(b, &b.url());
    let table = setup_table(&writer, "conf_reset_http").await;
    let client = fault_client::<R>(b, &proxy.url(), short_timeouts());
    client
        .execute_query("SELECT 1")
        .await
        .expect("warm: logged in, a pooled connection");

    proxy.reset_request_after(30);
    let first = ok_or_transport(
        &client,
        &format!("INSERT INTO {table} (id, name, qty) VALUES (1, 'cut request', 1)"),
    )
    .await;
    assert_eq!(proxy.resets(), 1, "the request was cut");

    proxy.reset_response_after(20);
    let second = ok_or_transport(
        &client,
        &format!("INSERT INTO {table} (id, name, qty) VALUES (2, 'cut answer', 2)"),
    )
    .await;
    // Over HTTP/2 the insert may fail on the connection the first cut
    // killed (one connection carries every request) before any answer
    // byte: then nothing was cut, and nothing ran.
    if !crate::network::http2() {
        assert_eq!(proxy.resets(), 2, "the answer was cut");
    }

    let ids: Vec<i64> = {
        let r = client
            .execute_query(&format!("SELECT id FROM {table} ORDER BY id"))
            .await
            .expect("a query after the resets");
        r.rows().map(|row| row.get::<i64>(0).expect("an id")).collect()
    };
    // A request cut before it was whole never ran (unless it was retried);
    // the insert whose answer was cut ran exactly once.
    if first.is_ok() {
        assert!(ids.contains(&1), "insert 1 reported success but is missing: {ids:?}");
    }
    // Over HTTP/1.1 the server's first bytes are the answer, so the insert
    // ran; over HTTP/2 they may be its SETTINGS or WINDOW_UPDATE frames,
    // cut before the request reached it.
    if !crate::network::http2() || second.is_ok() {
        assert!(
            ids.contains(&2),
            "insert 2 (its answer cut) did not run: {ids:?} ({second:?})"
        );
    }
    assert!(ids.iter().all(|id| [1, 2].contains(id)), "{ids:?}");
}

/// The WebSocket is reset in the middle of a server frame (a ~4 KB change
/// notification, cut after 600 bytes): the half-read frame is not
/// reported, the live query reconnects and resumes, and every row arrives
/// once.
pub async fn fault_reset_mid_frame<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let (writer, table, _client, mut s) = watched_table::<R>(b, &proxy.url(), "conf_reset_ws", short_timeouts()).await;
    proxy.reset_response_after(600);
    writer
        .execute_query(&format!(
            "INSERT INTO {table} (id, name, qty) VALUES (2, '{}', 2)",
            incompressible(4000)
        ))
        .await
        .expect("insert the big row");
    eventually("the proxy never cut the frame", || proxy.resets() == 1).await;
    for id in 3..=4 {
        insert(&writer, &table, id).await;
    }
    rows_exactly_once(&mut s, &[2, 3, 4], "after a reset mid-frame").await;
    assert!(proxy.ws_upgrades() >= 2, "it reconnected");
    insert(&writer, &table, 5).await;
    rows_exactly_once(&mut s, &[5], "live again").await;
}

/// Half-open connections: the proxy stops forwarding on every open
/// connection, both ways, without closing anything. An HTTP query fails
/// with a typed timeout after the receive timeout (1 s; new connections are
/// stalled too at that point), then queries work again on new connections.
/// The WebSocket is declared dead by the client's silence limit (10 s: the
/// server never pings, the client pings and hears nothing back), and the
/// live query reconnects and resumes: rows inserted meanwhile arrive once.
pub async fn fault_half_open<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let timeouts = short_timeouts().with_receive_timeout(Duration::from_secs(1));
    let (writer, table, client, mut s) = watched_table::<R>(b, &proxy.url(), "conf_half_open", timeouts).await;
    client.execute_query("SELECT 1").await.expect("warm");

    proxy.freeze_open();
    proxy.set_stall(true);
    match tokio::time::timeout(PATIENCE, client.execute_query("SELECT 2")).await {
        Ok(Err(Error::Transport(TransportError::Timeout(_)))) => {}
        other => panic!("expected a typed receive timeout on a half-open connection, got {other:?}"),
    }
    proxy.set_stall(false);
    assert_eq!(succeeds_soon(&client, "SELECT 3", 3).await, 1);

    for id in 2..=3 {
        insert(&writer, &table, id).await;
    }
    rows_exactly_once(&mut s, &[2, 3], "after the WebSocket went half-open").await;
    assert!(proxy.ws_upgrades() >= 2, "it reconnected");
    insert(&writer, &table, 4).await;
    rows_exactly_once(&mut s, &[4], "live again").await;
}

/// Connections are refused for a while (every connection reset at once,
/// open ones cut): queries fail with a typed transport error, the live
/// query keeps trying; once connections are accepted again, queries work
/// and the live query resumes with every row inserted meanwhile, once.
pub async fn fault_refuse_then_accept<R: Runtime>(b: &dyn Backend) {
    let proxy = proxy(b).await;
    let (writer, table, client, mut s) = watched_table::<R>(b, &proxy.url(), "conf_refuse", short_timeouts()).await;

    proxy.set_refuse(true);
    proxy.drop_all();
    for id in 2..=3 {
        insert(&writer, &table, id).await;
    }
    let refused_before = proxy.refused();
    match tokio::time::timeout(PATIENCE, client.execute_query("SELECT 1")).await {
        Ok(Err(Error::Transport(_))) => {}
        // Through a forwarding proxy, the proxy answers for the refusal.
        Ok(Err(Error::Server(e))) if crate::network::proxied() && e.status == 502 => {}
        other => panic!("expected a transport error while refused, got {other:?}"),
    }
    // (It may have failed on a kept-alive connection the cut had just
    // closed, or on a refused new one: either way a typed transport error.)
    eventually("the live query did not try to reconnect while refused", || {
        proxy.refused() >= refused_before + 3
    })
    .await;
    proxy.set_refuse(false);

    assert_eq!(succeeds_soon(&client, "SELECT 1", 3).await, 1);
    rows_exactly_once(&mut s, &[2, 3], "after connections were accepted again").await;
    insert(&writer, &table, 4).await;
    rows_exactly_once(&mut s, &[4], "live again").await;
}

/// The server restarts (on the same port, with its data): the live query
/// reconnects by itself and resumes from its last row, so the rows inserted
/// after the restart arrive once, and nothing from before is resent; HTTP
/// queries work again (the first may fail with a typed transport error);
/// the data survived.
pub async fn fault_server_restart<R: Runtime>(b: &dyn Backend) {
    let (writer, table, client, mut s) = watched_table::<R>(b, &b.url(), "conf_restart", short_timeouts()).await;
    insert(&writer, &table, 2).await;
    rows_exactly_once(&mut s, &[2], "before the restart").await;

    b.restart().await;

    let writer = root::<R>(b, &b.url());
    for id in 3..=4 {
        insert(&writer, &table, id).await;
    }
    assert_eq!(
        succeeds_soon(&client, &format!("SELECT * FROM {table}"), 3).await,
        4,
        "the data survived the restart"
    );
    rows_exactly_once(&mut s, &[3, 4], "after the restart").await;
    insert(&writer, &table, 5).await;
    rows_exactly_once(&mut s, &[5], "live again").await;
}

/// Nothing listens: `connect()` with no reconnects left and a query both
/// fail with a typed transport error whose text says "could not connect"
/// once (not twice), names the host and what was being done (the
/// WebSocket, the query's POST), and never blames credentials.
pub async fn a_down_server_is_reported_once_and_plainly<R: Runtime>(b: &dyn Backend) {
    let _ = b;
    // A port that was free a moment ago and has nothing listening now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let client = crate::builder::<R>()
        .base_url(format!("http://127.0.0.1:{port}"))
        .no_proxy() // a connection refused, not a proxy's answer (see the proxy scenario)
        .jwt_token(mint("any", "root", "system", "access", unix_now(), unix_now() + 3600))
        .connection_options(ConnectionOptions::default().with_max_reconnect_attempts(Some(0)))
        .build()
        .expect("client");
    for (what, result) in [
        (
            "connect",
            tokio::time::timeout(PATIENCE, client.connect())
                .await
                .map(|r| r.map(drop)),
        ),
        (
            "query",
            tokio::time::timeout(PATIENCE, client.execute_query("SELECT 1"))
                .await
                .map(|r| r.map(drop)),
        ),
    ] {
        let error = match result {
            Ok(Err(e @ Error::Transport(_))) => e,
            other => panic!("{what}: expected a transport error, got {other:?}"),
        };
        let text = error.to_string();
        assert_eq!(text.matches("could not connect").count(), 1, "{what}: {text}");
        assert!(!text.contains("credentials"), "{what}: {text}");
        // It says where: the host, and what was being done.
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{what}: {text}");
        let doing = if what == "connect" {
            "WebSocket ws://"
        } else {
            "POST http://"
        };
        assert!(text.contains(doing), "{what}: {text}");
    }
    // A live query that could never be sent (the client keeps trying to
    // connect until the acknowledgement deadline) fails with the cause.
    let client = crate::builder::<R>()
        .base_url(format!("http://127.0.0.1:{port}"))
        .no_proxy() // a connection refused, not a proxy's answer (see the proxy scenario)
        .jwt_token(mint("any", "root", "system", "access", unix_now(), unix_now() + 3600))
        .connection_options(quick_reconnects())
        .timeouts(KalamLinkTimeouts::default().with_subscribe_timeout(Duration::from_millis(800)))
        .build()
        .expect("client");
    match tokio::time::timeout(PATIENCE, client.live_events("SELECT * FROM a.b")).await {
        Ok(Err(Error::Transport(TransportError::Connect(why)))) => {
            assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}")
        }
        other => panic!("live_events: expected the connect failure, got {other:?}"),
    }
}
