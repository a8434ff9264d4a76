//! `KalamLinkClient`: a cheap handle on the driver task.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use kalam_proto::{
    Answer, AuthProvider, AuthRefreshCallback, ClientConfig, ClientCore, ConnectionOptions, DynamicAuthProvider,
    Endpoints, Error, KalamLinkTimeouts, MeResponse, Operation, QueryRequest, QueryResponse, Reply, Result, SubId,
    SubscriptionInfo, SubscriptionOptions,
};
use kalam_proto::{ClusterHealth, HealthResponse, SetupRequest, SetupResponse, SetupStatus};
#[cfg(feature = "auth-flows")]
use kalam_proto::{LoginResponse, ProxyConfig, ProxyMode, Secret};

use crate::adapter::{HttpSettings, Runtime, SocketSettings};
use crate::consumer::{BoxSleep, ConsumerBuilder, Timer};
use crate::driver::{Callbacks, Clock, Driver};
use crate::live::{LiveEvents, LiveQuery};
use crate::msg::Command;
use crate::sync::{Sender, reply};

/// The default base URL.
pub const DEFAULT_BASE_URL: &str = "http://localhost:2900";

/// A KalamDB client, on the runtime `R` (the adapters name it for you:
/// `kalam_tokio::KalamLinkClient`, `kalam_async_std::KalamLinkClient`).
///
/// Cheap to clone (`Arc` + channel sender), `Send + Sync`. All clones share
/// one driver task, hence one auth state: a login, a refreshed token or
/// [`update_shared_auth`](Self::update_shared_auth) on any clone is seen by
/// every clone.
///
/// **Lifetime.** The driver task runs while any handle is alive: a clone of
/// the client, or a live stream ([`LiveEvents`], [`LiveQuery`]) it opened.
/// A live stream therefore keeps delivering after the client itself is
/// dropped. When the last handle is dropped, the WebSocket is closed (1000)
/// and the task stops; HTTP calls still in flight are abandoned.
pub struct KalamLinkClient<R: Runtime> {
    inner: Arc<Inner>,
    _rt: PhantomData<fn() -> R>,
}

impl<R: Runtime> Clone for KalamLinkClient<R> {
    fn clone(&self) -> Self {
        KalamLinkClient {
            inner: self.inner.clone(),
            _rt: PhantomData,
        }
    }
}

struct Inner {
    commands: Sender<Command>,
    /// The driver, for callers to poll while they wait (see `drive`).
    driver: Arc<crate::drive::Shared>,
    base_url: String,
    /// Every node's base URL (the one server's alone without a cluster).
    node_urls: Vec<String>,
    provider: Option<Arc<dyn DynamicAuthProvider>>,
    options: ConnectionOptions,
    timeouts: KalamLinkTimeouts,
}

impl<R: Runtime> std::fmt::Debug for KalamLinkClient<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KalamLinkClient")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> KalamLinkClient<R> {
    /// A builder with the defaults: `http://localhost:2900`, no credentials.
    pub fn builder() -> KalamLinkClientBuilder<R> {
        KalamLinkClientBuilder::default()
    }

    /// The server's base URL, normalised (with several nodes, the first).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Every node's base URL, normalised, in the order given to
    /// [`base_urls`](KalamLinkClientBuilder::base_urls) (one without a
    /// cluster).
    pub fn node_urls(&self) -> &[String] {
        &self.inner.node_urls
    }

    /// The connection options the client was built with.
    pub fn connection_options(&self) -> &ConnectionOptions {
        &self.inner.options
    }

    /// The timeouts the client was built with.
    pub fn timeouts(&self) -> &KalamLinkTimeouts {
        &self.inner.timeouts
    }

    /// Runs SQL (one statement or several separated by `;`).
    ///
    /// A server answer with `status: "error"` is an `Err` with the server's
    /// code. An expired token is renewed (once for all concurrent callers)
    /// and the query retried once.
    pub async fn execute_query(&self, sql: &str) -> Result<QueryResponse> {
        self.execute(QueryRequest::new(sql)).await
    }

    /// Runs SQL with positional parameters for `$1`, `$2`, ….
    pub async fn execute_query_with_params(&self, sql: &str, params: Vec<serde_json::Value>) -> Result<QueryResponse> {
        self.execute(QueryRequest::new(sql).with_params(params)).await
    }

    /// Runs a [`QueryRequest`] (SQL, parameters, default namespace).
    pub async fn execute(&self, request: impl Into<QueryRequest>) -> Result<QueryResponse> {
        self.submit(Operation::Query(request.into())).await
    }

    /// Runs one statement (SQL, or a [`QueryRequest`] with parameters) and
    /// reads its first result's rows as the application's own type `T`
    /// (serde; see [`QueryResult::rows_as`](kalam_proto::QueryResult::rows_as)):
    /// fields by column name, BIGINT strings into integers, FILE columns
    /// into `FileRef`, NULL into `None`. A row that does not fit is
    /// [`Error::Cell`](kalam_proto::Error::Cell), naming the row and column.
    ///
    /// The rows are read in one pass from the answer's bytes, in the
    /// caller's task ([`kalam_proto::rows::answer_rows_as`]): no
    /// `serde_json::Value` is built for a row or a cell.
    pub async fn query_as<T: serde::de::DeserializeOwned>(&self, request: impl Into<QueryRequest>) -> Result<Vec<T>> {
        let body: Vec<u8> = self.submit(Operation::QueryRows(request.into())).await?;
        kalam_proto::rows::answer_rows_as(&body)
    }

    /// The authenticated user (`GET /v1/api/auth/me`).
    pub async fn current_user(&self) -> Result<MeResponse> {
        self.submit(Operation::Me).await
    }

    /// Logs in and returns the token pair. Changes nothing in this client:
    /// build a client with the token, or pass it to
    /// [`update_shared_auth`](Self::update_shared_auth).
    #[cfg(feature = "auth-flows")]
    pub async fn login(&self, user: &str, password: &str) -> Result<LoginResponse> {
        let op = Operation::Login {
            user: user.to_owned(),
            password: Secret::new(password),
        };
        self.submit(op).await
    }

    /// Exchanges a refresh token for a new token pair. Changes nothing in
    /// this client.
    #[cfg(feature = "auth-flows")]
    pub async fn refresh_access_token(&self, refresh_token: &str) -> Result<LoginResponse> {
        let op = Operation::Refresh {
            refresh_token: Secret::new(refresh_token),
        };
        self.submit(op).await
    }

    /// Replaces the credentials. All clones share one auth state, so this is
    /// the same as [`update_shared_auth`](Self::update_shared_auth).
    pub fn set_auth(&self, auth: AuthProvider) {
        self.update_shared_auth(auth);
    }

    /// Replaces the credentials of this client and every clone. Tokens
    /// obtained with the old credentials are dropped; requests waiting for a
    /// token go on with the new credentials. Setting the current credentials
    /// again changes nothing.
    pub fn update_shared_auth(&self, auth: AuthProvider) {
        let _ = self.inner.commands.send(Command::SetAuth(auth));
    }

    /// Fresh credentials: runs the `DynamicAuthProvider` if one is
    /// configured, otherwise returns the credentials currently configured.
    pub async fn fresh_auth(&self) -> Result<AuthProvider> {
        if let Some(p) = &self.inner.provider {
            return p.get_auth().await;
        }
        let (tx, rx) = reply();
        self.command(Command::GetAuth(tx))?;
        rx.await
    }

    /// Opens the WebSocket now and waits until it is authenticated, so that
    /// the first live query does not pay for the set-up. Without it the
    /// first [`live`](Self::live) / [`live_events`](Self::live_events) opens
    /// the socket. All live queries share this one socket.
    ///
    /// It answers with the first attempt's outcome: a token (from the
    /// credentials, within the receive timeout), the socket (within the
    /// connection timeout) and `authenticate` (within the auth timeout). On
    /// failure the error names the cause, `on_error` / `on_disconnect`
    /// fire, and the session keeps reconnecting in the background.
    pub async fn connect(&self) -> Result<()> {
        let (tx, rx) = reply();
        self.command(Command::Connect(Some(tx)))?;
        rx.await??;
        Ok(())
    }

    /// Whether the WebSocket is up and authenticated (`false` while it
    /// reconnects, and before the first live query or `connect`).
    pub async fn is_connected(&self) -> bool {
        let (tx, rx) = reply();
        if self.command(Command::IsConnected(tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// The live queries open on this client (from any clone): id, SQL, the
    /// last `_seq` delivered, when it was opened and last delivered an
    /// event, and where it stands (subscribing, loading its initial rows,
    /// live, or resubscribing after a drop). Empty once the client is
    /// closed.
    pub async fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let (tx, rx) = reply();
        if self.command(Command::Subscriptions(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Ends the live query `id` (a stream's `id()`, or one from
    /// [`subscriptions`](Self::subscriptions)) from anywhere, as dropping its
    /// stream does: the server is told, and the stream ends (`None`). An
    /// id no longer open changes nothing.
    pub fn cancel_subscription(&self, id: SubId) {
        let _ = self.command(Command::Unsubscribe(id));
    }

    /// Closes the WebSocket; every live query ends. HTTP queries still work.
    pub async fn disconnect(&self) {
        let (tx, rx) = reply();
        if self.command(Command::Disconnect(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// A live query's typed change events, with its initial rows first.
    /// `sql` is `SELECT … FROM namespace.table [WHERE …]`.
    ///
    /// Returns once the server has acknowledged the subscription, so every
    /// change committed after it returns is delivered. A refused
    /// subscription (bad SQL, a missing table, the server's subscription
    /// limit) is an `Err` from this call, and so is an acknowledgement that
    /// does not come within [`KalamLinkTimeouts::subscribe_timeout`]
    /// ([`Error::SubscribeTimeout`]).
    pub async fn live_events(&self, sql: &str) -> Result<LiveEvents> {
        self.live_events_with(sql, Some(SubscriptionOptions::default().with_batch_size(500)))
            .await
    }

    /// Like [`live_events`](Self::live_events), with every whole row read
    /// as the application's type `T` (serde; see
    /// [`TypedLiveEvent`](kalam_proto::TypedLiveEvent) for what stays a
    /// `LiveRow`: the `old` side of updates and deletes).
    pub async fn live_events_as<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<crate::LiveEventsAs<T>> {
        Ok(crate::LiveEventsAs::new(self.live_events(sql).await?))
    }

    /// Like [`live_events`](Self::live_events) with explicit options:
    /// `None` for changes only (no initial rows), or batch size, last rows,
    /// resume point.
    pub async fn live_events_with(&self, sql: &str, options: Option<SubscriptionOptions>) -> Result<LiveEvents> {
        subscribe(
            &self.inner.commands,
            self.inner.options.subscription_buffer,
            sql,
            options,
        )
        .await
    }

    /// A live query's current result set, kept up to date.
    pub async fn live(&self, sql: &str) -> Result<LiveQuery> {
        self.live_with(sql, SubscriptionOptions::default().with_batch_size(500))
            .await
    }

    /// Like [`live`](Self::live) with explicit options.
    pub async fn live_with(&self, sql: &str, options: SubscriptionOptions) -> Result<LiveQuery> {
        let (events, resubscribe) = self.materialise(sql, options).await?;
        Ok(LiveQuery::new(events, resubscribe))
    }

    /// Like [`live`](Self::live), with the rows read as the application's
    /// type `T` (serde, as [`LiveRow::to`](kalam_proto::LiveRow::to)
    /// reads them), keyed and ordered as the untyped rows
    /// ([`LiveRowsAs`](kalam_proto::LiveRowsAs)).
    pub async fn live_as<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<crate::LiveQueryAs<T>> {
        let options = SubscriptionOptions::default().with_batch_size(500);
        let (events, resubscribe) = self.materialise(sql, options).await?;
        Ok(crate::LiveQueryAs::new(events, resubscribe))
    }

    async fn materialise(
        &self,
        sql: &str,
        options: SubscriptionOptions,
    ) -> Result<(LiveEvents, crate::live::Resubscribe)> {
        let events = self.live_events_with(sql, Some(options.clone())).await?;
        let resubscribe = crate::live::Resubscribe {
            commands: self.inner.commands.clone(),
            buffer: self.inner.options.subscription_buffer,
            sql: sql.to_owned(),
            options,
        };
        Ok((events, resubscribe))
    }

    /// A topic consumer: set `topic` and `group_id`, then `build()`.
    /// Topics need the `service`, `dba` or `system` role (root is
    /// `system`); see [`TopicConsumer`](crate::TopicConsumer) for delivery
    /// (at least once) and acknowledgement.
    pub fn consumer(&self) -> ConsumerBuilder {
        fn sleep_until<R: Runtime>(at: std::time::Instant) -> BoxSleep {
            Box::pin(R::sleep_until(at))
        }
        let timer = Timer {
            now: R::now,
            sleep_until: sleep_until::<R>,
        };
        ConsumerBuilder::new(self.inner.commands.clone(), timer)
    }

    /// The server's health and version (`GET /v1/api/healthcheck`, no
    /// token). The server answers it only to clients on its own machine:
    /// from elsewhere this is [`Error::LocalhostOnly`]; check readiness with
    /// an authenticated `execute_query("SELECT 1")` instead.
    pub async fn health_check(&self) -> Result<HealthResponse> {
        self.submit(Operation::Health).await
    }

    /// The cluster's status as the server sees it: its Raft role, term and
    /// every node with its role and API address (`GET /v1/api/cluster/health`,
    /// no token, localhost only like [`health_check`](Self::health_check)).
    /// A single server answers too, as a one-node cluster.
    pub async fn cluster_health(&self) -> Result<ClusterHealth> {
        self.submit(Operation::ClusterHealth).await
    }

    /// Whether the server still needs its first-time [`setup`](Self::setup)
    /// (root has no password yet). No token; localhost only, like
    /// [`health_check`](Self::health_check).
    pub async fn needs_setup(&self) -> Result<bool> {
        Ok(self.setup_status().await?.needs_setup)
    }

    /// The server's setup status with its message (`GET /v1/api/auth/status`).
    pub async fn setup_status(&self) -> Result<SetupStatus> {
        self.submit(Operation::SetupStatus).await
    }

    /// First-time setup of a fresh server: gives root its password and
    /// creates a first DBA user (`POST /v1/api/auth/setup`, no token,
    /// localhost only). It returns no token: log in afterwards (for example
    /// with [`update_shared_auth`](Self::update_shared_auth)). Refusals keep
    /// the server's code: [`ErrorCode::AlreadyConfigured`](kalam_proto::ErrorCode::AlreadyConfigured),
    /// `WeakPassword`, `InvalidUser`, `UserExists`, `RateLimited`.
    pub async fn setup(&self, request: SetupRequest) -> Result<SetupResponse> {
        self.submit(Operation::Setup(request)).await
    }

    pub(crate) fn command(&self, command: Command) -> Result<()> {
        self.inner.commands.send(command).map_err(|_| Error::Closed)
    }

    /// Runs an operation and returns the reply of the type it answers.
    async fn submit<T: TryFrom<Reply, Error = Reply>>(&self, op: Operation) -> Result<T> {
        let (tx, mut rx) = reply();
        crate::drive::Call::new(
            &self.inner.driver,
            &self.inner.commands,
            Command::Submit(op, tx),
            &mut rx,
        )
        .await??
        .into_reply()
    }
}

/// Subscribes `sql` with a queue of `buffer` events; see
/// [`KalamLinkClient::live_events_with`].
pub(crate) async fn subscribe(
    commands: &crate::sync::Sender<Command>,
    buffer: usize,
    sql: &str,
    options: Option<SubscriptionOptions>,
) -> Result<LiveEvents> {
    let (tx, rx) = reply();
    let (queue, source) = crate::sync::queue(buffer);
    commands
        .send(Command::Subscribe {
            sql: sql.to_owned(),
            options,
            queue,
            reply: tx,
        })
        .map_err(|_| Error::Closed)?;
    // If this future is dropped once the server has acknowledged (the
    // answer waits in the slot, the events in the queue) and before it is
    // polled again, no `LiveEvents` will ever stop the subscription: the
    // guard does, so a cancelled call holds no server slot. (Dropped before
    // the acknowledgement, the driver finds the queue gone when it delivers
    // the first events and stops it itself.)
    let mut pending = PendingSubscribe {
        rx: Some(rx),
        commands: commands.clone(),
    };
    let answer = match pending.rx.as_mut() {
        Some(rx) => rx.await,
        None => Err(Error::Closed),
    };
    pending.rx = None;
    let sub = answer??.into_subscribed()?;
    Ok(LiveEvents::new(sub, source, commands.clone()))
}

/// A subscribe's reply slot while `live_events` waits on it; see there.
struct PendingSubscribe {
    rx: Option<crate::sync::ReplyRx<Result<Answer>>>,
    commands: crate::sync::Sender<Command>,
}

impl Drop for PendingSubscribe {
    fn drop(&mut self) {
        if let Some(Ok(Answer::Subscribed(sub))) = self.rx.take().and_then(|rx| rx.try_take()) {
            let _ = self.commands.send(Command::Unsubscribe(sub));
        }
    }
}

/// Builds a [`KalamLinkClient`].
pub struct KalamLinkClientBuilder<R: Runtime> {
    base_url: String,
    /// The nodes of a cluster, when given ([`base_urls`](Self::base_urls)).
    node_urls: Vec<String>,
    auth: AuthProvider,
    provider: Option<Arc<dyn DynamicAuthProvider>>,
    refresher: Option<AuthRefreshCallback>,
    options: ConnectionOptions,
    timeouts: KalamLinkTimeouts,
    skew: Option<Duration>,
    hooks: Callbacks,
    seed: Option<u64>,
    #[cfg(feature = "rustls")]
    tls: Option<crate::tls::TlsConfig>,
    proxy: Option<ProxyMode>,
    http_version: Option<kalam_proto::HttpVersion>,
    http_backend: R::HttpBackend,
    _rt: PhantomData<fn() -> R>,
}

impl<R: Runtime> Default for KalamLinkClientBuilder<R> {
    fn default() -> Self {
        KalamLinkClientBuilder {
            base_url: DEFAULT_BASE_URL.to_owned(),
            node_urls: Vec::new(),
            auth: AuthProvider::None,
            provider: None,
            refresher: None,
            options: ConnectionOptions::default(),
            timeouts: KalamLinkTimeouts::default(),
            skew: None,
            hooks: Callbacks::default(),
            seed: None,
            #[cfg(feature = "rustls")]
            tls: None,
            proxy: None,
            http_version: None,
            http_backend: R::HttpBackend::default(),
            _rt: PhantomData,
        }
    }
}

impl<R: Runtime> std::fmt::Debug for KalamLinkClientBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KalamLinkClientBuilder")
            .field("base_url", &self.base_url)
            .field("node_urls", &self.node_urls)
            .field("auth", &self.auth)
            .field("auth_provider", &self.provider.is_some())
            .field("auth_refresher", &self.refresher.is_some())
            .field("options", &self.options)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl<R: Runtime> KalamLinkClientBuilder<R> {
    /// The server, e.g. `http://localhost:2900` (the default).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self.node_urls.clear();
        self
    }

    /// The nodes of a KalamDB cluster, e.g.
    /// `["http://db1:2900", "http://db2:2900", "http://db3:2900"]`, instead
    /// of one [`base_url`](Self::base_url) (the last of the two called wins).
    ///
    /// The client uses one node at a time, the first first, and stays on
    /// it while it answers. A node that fails is avoided for a while (1 s,
    /// doubling to 30 s) and the client moves to the next, for its requests
    /// and its live-query socket, which resubscribes there from the last
    /// `_seq` delivered. A request that never reached the node goes to the
    /// next at once; reads, logins and other
    /// [`retry_safe`](kalam_proto::Operation::retry_safe) requests are sent
    /// again after a lost answer or a cluster error (`NOT_LEADER`…); a
    /// statement that may have run is never sent twice:
    /// [`Error::OutcomeUnknown`]. One token serves every node. The
    /// [`on_node_change`](Self::on_node_change) hook hears each move.
    /// An empty list is refused at [`build`](Self::build).
    pub fn base_urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.node_urls = urls.into_iter().map(Into::into).collect();
        if self.node_urls.is_empty() {
            // Refused at build, not silently the default server.
            self.base_url = String::new();
        }
        self
    }

    /// Static credentials.
    pub fn auth(mut self, auth: AuthProvider) -> Self {
        self.auth = auth;
        self
    }

    /// Shortcut for `.auth(AuthProvider::jwt_token(token))`.
    pub fn jwt_token(self, token: impl Into<String>) -> Self {
        self.auth(AuthProvider::jwt_token(token.into()))
    }

    /// Credentials fetched lazily, whenever the client has no valid token.
    pub fn auth_provider(mut self, provider: Arc<dyn DynamicAuthProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Called when the token expired, to get new credentials.
    pub fn auth_refresher(mut self, refresher: AuthRefreshCallback) -> Self {
        self.refresher = Some(refresher);
        self
    }

    /// Connection options.
    pub fn connection_options(mut self, options: ConnectionOptions) -> Self {
        self.options = options;
        self
    }

    /// All time limits.
    pub fn timeouts(mut self, timeouts: KalamLinkTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The time limit of one HTTP exchange (and of a credential callback).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.receive_timeout = timeout;
        self
    }

    /// How long before its `exp` a token counts as expired (default 30 s).
    pub fn token_expiry_skew(mut self, skew: Duration) -> Self {
        self.skew = Some(skew);
        self
    }

    /// Called (wherever the driver runs: its task, or on async-std a
    /// caller's thread while it waits; keep it short) when the WebSocket is
    /// authenticated, after every (re)connect.
    pub fn on_connect(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.hooks.on_connect = Some(Arc::new(hook));
        self
    }

    /// Called when the WebSocket drops or closes, with the reason.
    pub fn on_disconnect(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.hooks.on_disconnect = Some(Arc::new(hook));
        self
    }

    /// Called for connection-level errors of the WebSocket (refused
    /// authentication, protocol errors, undecodable frames).
    pub fn on_error(mut self, hook: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.hooks.on_error = Some(Arc::new(hook));
        self
    }

    /// Called (like the other hooks, where the driver runs) when the client
    /// moves to another node of its cluster ([`base_urls`](Self::base_urls)):
    /// from which node, to which, and why.
    pub fn on_node_change(mut self, hook: impl Fn(&kalam_proto::NodeSwitch) + Send + Sync + 'static) -> Self {
        self.hooks.on_node_change = Some(Arc::new(hook));
        self
    }

    /// The three hooks at once ([`on_connect`](Self::on_connect),
    /// [`on_disconnect`](Self::on_disconnect), [`on_error`](Self::on_error)),
    /// as one value that can be built apart and reused. A hook it leaves
    /// unset keeps the one set before.
    pub fn event_handlers(mut self, handlers: EventHandlers) -> Self {
        let EventHandlers(hooks) = handlers;
        self.hooks.on_connect = hooks.on_connect.or(self.hooks.on_connect);
        self.hooks.on_disconnect = hooks.on_disconnect.or(self.hooks.on_disconnect);
        self.hooks.on_error = hooks.on_error.or(self.hooks.on_error);
        self
    }

    /// How many idle keep-alive HTTP connections are kept for reuse (the
    /// official client's name for
    /// [`ConnectionOptions::with_http_pool_max_idle`]).
    pub fn http_pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.options = self.options.with_http_pool_max_idle(n);
        self
    }

    /// Seed of the reconnect jitter (default: random per client). Fixed
    /// seeds make reconnect schedules reproducible in tests; the multipart
    /// boundaries of uploads stay random whatever the seed.
    pub fn reconnect_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The TLS settings for `https://` and `wss://` (the `rustls` feature):
    /// the roots trusted, a client certificate. Without it, the platform's
    /// roots ([`TlsConfig::platform`](crate::tls::TlsConfig::platform)).
    /// See the adapters' README, "TLS and proxies", for examples.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls(mut self, config: crate::tls::TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// How many times a request whose connection could not be made (so
    /// nothing was sent) is sent again, after a back-off, within the
    /// receive timeout (the official client's name; see
    /// [`ConnectionOptions::with_max_retries`]). Nothing that may have
    /// reached the server is ever sent again. Default 0.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.options = self.options.with_max_retries(n);
        self
    }

    /// The HTTP version of the requests (the official client's name; see
    /// [`HttpVersion`](kalam_proto::HttpVersion)): HTTP/2 multiplexes every
    /// request in flight over one connection, with the in-flight cap and
    /// the token handling unchanged. Needs `kalam-tokio`'s `http2` feature.
    /// Takes precedence over [`ConnectionOptions::http_version`], before or
    /// after [`connection_options`](Self::connection_options).
    pub fn http_version(mut self, version: kalam_proto::HttpVersion) -> Self {
        self.http_version = Some(version);
        self
    }

    /// How the runtime adapter sends HTTP, where it offers a choice: on
    /// kalam-async-std with its `surf` feature, `HttpBackend::surf(client)`
    /// sends every request through the application's `surf::Client` (its
    /// middleware, its logging). Default: the adapter's own (see the
    /// adapter's `HttpBackend`).
    pub fn http_backend(mut self, backend: R::HttpBackend) -> Self {
        self.http_backend = backend;
        self
    }

    /// Goes through these HTTP proxies, whatever the environment says
    /// (see [`kalam_proto::proxy`] for how each target is reached). Takes
    /// precedence over [`ConnectionOptions::proxy`], before or after
    /// [`connection_options`](Self::connection_options).
    pub fn proxy(mut self, proxies: ProxyConfig) -> Self {
        self.proxy = Some(ProxyMode::Use(proxies));
        self
    }

    /// Goes through no proxy, whatever the environment says.
    pub fn no_proxy(mut self) -> Self {
        self.proxy = Some(ProxyMode::Disabled);
        self
    }

    /// Builds the client and starts its driver task. Fails with a typed
    /// error (never panics) for a bad URL, or where the runtime cannot run
    /// it (for Tokio: outside a runtime).
    pub fn build(mut self) -> Result<KalamLinkClient<R>> {
        if let Some(proxy) = self.proxy.take() {
            self.options.proxy = proxy;
        }
        if let Some(version) = self.http_version.take() {
            self.options.http_version = version;
        }
        let urls = match self.node_urls.is_empty() {
            true => std::slice::from_ref(&self.base_url),
            false => &self.node_urls[..],
        };
        let nodes = urls.iter().map(|u| Endpoints::new(u)).collect::<Result<Vec<_>>>()?;
        let node_urls: Vec<String> = nodes.iter().map(|e| e.base().to_owned()).collect();
        R::check()?;
        #[cfg(feature = "rustls")]
        let tls = match nodes.iter().any(Endpoints::is_https) {
            true => Some(self.tls.clone().unwrap_or_default().build()?),
            false => None,
        };
        // One HTTP client (its own connection pool) per node.
        let mut http = Vec::with_capacity(nodes.len());
        let mut http_settings = None;
        for endpoints in &nodes {
            #[allow(unused_mut)] // without `rustls`
            let mut settings = HttpSettings::new::<R>(endpoints, &self.options, &self.timeouts)?;
            #[cfg(feature = "rustls")]
            if let Some(tls) = tls.as_ref().filter(|_| endpoints.is_https()) {
                settings.net = settings.net.with_tls(tls.clone());
            }
            http.push((
                settings.authority.clone(),
                R::http_client(&settings, &self.http_backend)?,
            ));
            http_settings.get_or_insert(settings);
        }
        let http_settings = http_settings.ok_or_else(|| Error::InvalidUrl {
            url: String::new(),
            reason: "no server URL given".into(),
        })?;
        let nodes = kalam_proto::Nodes::new(nodes).ok_or_else(|| Error::InvalidUrl {
            url: String::new(),
            reason: "no server URL given".into(),
        })?;
        let random = || {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new().build_hasher().finish()
        };
        let seed = self.seed.unwrap_or_else(random);
        let mut config = ClientConfig::new(&self.options, &self.timeouts, seed)
            .with_dynamic_provider(self.provider.is_some())
            .with_refresher(self.refresher.is_some());
        // Upload boundaries are always fresh: a fixed `reconnect_seed` (for
        // reproducible reconnects) must not make them guessable to whoever
        // writes a file's bytes.
        config.auth.boundary_seed = random();
        if let Some(skew) = self.skew {
            config = config.with_token_expiry_skew(skew);
        }
        let base_url = node_urls[0].clone();
        let clock = Clock::<R>::start();
        let core = ClientCore::new(nodes, self.auth, config, clock.now());
        let callbacks = Callbacks {
            provider: self.provider.clone(),
            refresher: self.refresher,
            ..self.hooks
        };
        let sockets = SocketSettings {
            connect_timeout: self.timeouts.connection_timeout,
            max_frame: self.options.max_response_bytes,
            net: http_settings.net.clone(),
        };
        let (commands, rx) = crate::sync::channel();
        let driver = crate::drive::Shared::start::<R>(
            Driver::<R>::new(core, http, http_settings.max_body, sockets, callbacks, clock).run(rx),
        );
        Ok(KalamLinkClient {
            inner: Arc::new(Inner {
                commands,
                driver,
                base_url,
                node_urls,
                provider: self.provider,
                options: self.options,
                timeouts: self.timeouts,
            }),
            _rt: PhantomData,
        })
    }
}

/// The connection hooks as one value, for
/// [`KalamLinkClientBuilder::event_handlers`]: each is called where the driver
/// runs (its task, or a waiting caller's thread; keep it short).
///
/// ```
/// use kalam_driver::EventHandlers;
///
/// let handlers = EventHandlers::new()
///     .on_connect(|| println!("live"))
///     .on_disconnect(|why| eprintln!("socket closed: {why}"))
///     .on_error(|e| eprintln!("{e}"));
/// # drop(handlers);
/// ```
#[derive(Clone, Default)]
pub struct EventHandlers(Callbacks);

impl EventHandlers {
    /// No hooks.
    pub fn new() -> Self {
        EventHandlers::default()
    }

    /// When the WebSocket is authenticated, after every (re)connect.
    pub fn on_connect(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.0.on_connect = Some(Arc::new(hook));
        self
    }

    /// When the WebSocket drops or closes, with the reason.
    pub fn on_disconnect(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.0.on_disconnect = Some(Arc::new(hook));
        self
    }

    /// Connection-level errors of the WebSocket, and warnings such as a
    /// large clock skew.
    pub fn on_error(mut self, hook: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.0.on_error = Some(Arc::new(hook));
        self
    }
}

impl std::fmt::Debug for EventHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHandlers")
            .field("on_connect", &self.0.on_connect.is_some())
            .field("on_disconnect", &self.0.on_disconnect.is_some())
            .field("on_error", &self.0.on_error.is_some())
            .finish()
    }
}
