//! # kalam-conformance: one conformance suite for every runtime
//!
//! The scenarios in [`scenarios`] are written once, generic over the
//! client's [`Runtime`](kalam_driver::Runtime): each is an
//! `async fn name<R: Runtime>(b: &dyn Backend)` that uses
//! `kalam_driver::KalamLinkClient<R>`. Each adapter's tests instantiate them
//! with its runtime (`kalam_tokio::rt::Tokio`, `kalam_async_std::rt::AsyncStd`)
//! against the in-process test kit and, in ignored tests, against the real
//! KalamDB server; [`for_each_scenario!`] lists the scenarios so every
//! runner runs the same list.
//!
//! **What a runner must provide.** The scenarios wait with Tokio's timers
//! (`tokio::time::timeout`, `sleep`) and start a [`FaultProxy`], which runs
//! on Tokio: a runner polls a scenario on a thread inside a multi-thread
//! Tokio runtime (a `#[tokio::test]`, or `block_on` of its own executor
//! after `runtime.enter()`). The client under test uses only its own
//! runtime `R`: the scenarios spawn with `R::spawn`, and the three that
//! drive a `kalam-proto` `AuthMachine` directly (a machine whose clock is
//! behind, with a token the server finds expired: for SQL, uploads and
//! topics) send its HTTP with `R`'s HTTP client.

use std::future::Future;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod cluster_real;
pub mod contract;
#[path = "scenarios.rs"]
mod core_scenarios;
pub mod files;
pub mod first_hour;
pub mod kit_controls;
pub mod topics;
pub mod typed;

/// Every conformance scenario, by name (what [`for_each_scenario!`] lists):
/// the core suite (auth, queries, live queries, faults), the topic consumer
/// ([`topics`]), health and first-time setup ([`admin`]), FILE columns
/// ([`files`]) and what only the kit's controls provoke ([`kit_controls`]).
pub mod scenarios {
    pub use crate::admin::*;
    pub use crate::auth::*;
    pub use crate::cluster::*;
    pub use crate::contract::*;
    pub use crate::core_scenarios::*;
    pub use crate::files::*;
    pub use crate::first_hour::*;
    pub use crate::kit_controls::*;
    pub use crate::network::an_http_proxy_carries_every_request;
    pub use crate::topics::*;
    pub use crate::typed::*;
}

pub mod network;

pub use kalam_testkit::real::{REAL_JWT_SECRET, REAL_ROOT_PASSWORD};
pub use kalam_testkit::{FaultProxy, RealServer, TestServer};
pub use network::{ClientNetwork, builder};
pub use scenarios::{PATIENCE, eventually, next_event, until_ready};

/// A Tokio runtime for the kit, the fault proxy and the scenarios' timers,
/// for runners whose client is on another runtime (they poll each scenario
/// on a thread that has entered it).
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

/// Runs `f` on a thread with a large stack and returns what it returns
/// (a panic goes on): the futures of the longest scenarios, polled by
/// `async_std::task::block_on` in a debug build, outgrow a test thread's
/// stack once TLS or a proxy is in the path.
pub fn on_a_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(16 << 20)
            .spawn_scoped(s, f)
            .expect("a scenario thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Calls `$m!` with the name of every conformance scenario (each a function
/// in [`scenarios`]), so every runner runs the same list:
///
/// ```ignore
/// macro_rules! against_the_kit {
///     ($($name:ident),* $(,)?) => {$(
///         #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
///         async fn $name() { /* scenarios::$name::<MyRuntime>(&server).await */ }
///     )*};
/// }
/// kalam_conformance::for_each_scenario!(against_the_kit);
/// ```
#[macro_export]
macro_rules! for_each_scenario {
    ($m:ident) => {
        $m!(
            one_login_for_concurrent_first_queries,
            refused_password_is_typed_and_final,
            refresher_called_once_for_expired_token,
            token_expired_answer_is_recovered_once,
            provider_asked_for_http_without_connect,
            unicode_and_bigint_round_trip,
            bad_input_is_typed,
            explicit_login_refresh_and_refresh_token_misuse,
            subscriptions_share_one_socket,
            dropped_socket_loses_no_change,
            reconnect_asks_provider_again,
            refused_ws_auth_surfaces_once,
            stalled_subscriber_does_not_delay_another,
            live_events_returns_after_ack_changes_only,
            live_events_returns_after_ack_initial_rows,
            live_events_returns_after_ack_refusal_is_err,
            many_subscriptions_all_deliver,
            credentials_from_refresher_become_current,
            live_stream_outlives_client_handles,
            disconnect_ends_streams_and_closes_the_socket,
            tls_to_a_plain_server_is_a_typed_error,
            a_down_server_is_reported_once_and_plainly,
            fault_half_open,
            fault_latency_each_way,
            fault_bandwidth_limit,
            fault_reset_mid_request,
            fault_reset_mid_frame,
            fault_refuse_then_accept,
            fault_server_restart,
            consumer_reads_acks_and_resumes,
            consumer_auto_commit_commits_each_batch,
            consumer_refusals_are_typed,
            consumer_token_handling_is_the_query_path,
            health_check_needs_no_token,
            setup_is_refused_once_configured,
            rotated_jwt_secret_every_query_succeeds,
            role_change_under_a_live_subscription_resumes,
            zero_hour_tokens_every_query_succeeds,
            cluster_reads_and_writes_skip_a_dead_node,
            cluster_a_write_in_flight_at_a_kill_is_unknown_and_never_repeated,
            cluster_live_query_moves_to_a_survivor_and_loses_no_row,
            cluster_every_node_down_ends_calls_typed_then_recovers,
            a_cancelled_live_events_holds_no_server_subscription,
            a_panicking_upload_reader_fails_only_its_upload,
            a_dropped_upload_commits_nothing,
            a_call_left_unpolled_stops_no_one,
            files_upload_select_download_round_trip,
            files_over_limits_are_refused_before_sending,
            files_token_expired_upload_is_sent_again,
            files_a_streaming_download_counts_against_the_cap,
            a_column_set_to_null_reads_as_none_in_a_live_update,
            connection_and_subscription_state,
            event_handlers_fire,
            concurrent_queries_within_the_servers_rate,
            an_http_proxy_carries_every_request,
            max_retries_carries_a_query_over_a_refused_connection,
            typed_rows_round_trip,
            every_column_type_reads_into_a_struct,
        );
    };
}

/// Calls `$m!` with the scenarios that need the in-process kit: those that
/// need a server state only the kit can be started in (see
/// [`ServerSettings::for_scenario`]): a server that needs first-time setup
/// (the real server's `start.sh` always sets root's password), one that sees
/// every client as remote (the real server's clients here are all on
/// loopback), and one whose topic claims expire in a fraction of a second
/// (the real server's take 60 s); and those that drive the kit's own
/// controls ([`kit_controls`]: tokens expired behind the client's back,
/// broken answers, malformed frames, dropped or stalled sockets, refused
/// WebSocket authentication), which take a [`TestServer`]. Each adapter
/// runs them on its runtime against the kit; the real server runs
/// [`for_each_scenario!`]'s `setup_is_refused_once_configured` and
/// `health_check_needs_no_token` instead.
#[macro_export]
macro_rules! for_each_kit_only_scenario {
    ($m:ident) => {
        $m!(
            first_time_setup_then_login,
            localhost_only_endpoints_refuse_a_remote_client,
            unacknowledged_records_come_again,
            a_client_clock_ten_minutes_ahead_changes_nothing,
            a_client_clock_a_day_behind_changes_nothing,
            a_configured_token_from_a_server_a_day_behind_is_used,
            a_live_query_resyncs_what_the_server_dropped,
            server_side_expiry_recovers_through_refresh_then_login,
            server_side_expiry_with_refresher_runs_it_once,
            expired_again_after_recovery_is_final,
            broken_answers_are_typed_errors_and_lose_nothing,
            server_dropping_sockets_loses_no_change,
            malformed_frame_is_reported_and_the_session_goes_on,
            refused_ws_auth_retries_only_with_fresh_credentials,
            dropping_a_stream_unsubscribes,
            a_stalled_server_delivers_what_it_held_when_it_resumes,
            live_events_returns_after_ack_subscribe_timeout,
            live_events_returns_after_ack_subscribe_timeout_cold,
            credentials_from_refresher_become_current_on_the_kit,
            a_cancelled_subscribe_leaves_nothing_behind,
            huge_time_limits_do_not_take_the_driver_down,
            cluster_not_leader_sends_reads_to_the_leader_and_refuses_writes,
        );
    };
}

/// Calls `$m!` with the kit-only scenarios that need the client's gzip
/// support: a runner lists them only when built with its `gzip` feature
/// (`#[cfg(feature = "gzip")] kalam_conformance::for_each_kit_only_gzip_scenario!(…);`).
#[macro_export]
macro_rules! for_each_kit_only_gzip_scenario {
    ($m:ident) => {
        $m!(gzip_frames_from_the_server_decode);
    };
}

/// Server settings a scenario needs beyond the server's defaults. Every
/// runner starts each scenario's server with [`ServerSettings::for_scenario`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerSettings {
    /// `rate_limit.max_subscriptions_per_user` (the server's default is 10).
    pub max_subscriptions_per_user: Option<usize>,
    /// Root has no password yet: the server needs first-time setup (kit only).
    pub needs_setup: bool,
    /// The server sees every client as remote (kit only).
    pub remote_peers: bool,
    /// How long records a consume handed out stay claimed for the group
    /// without an acknowledgement (kit only; the server's default is 60 s).
    pub topic_visibility_timeout: Option<std::time::Duration>,
    /// Access tokens with `exp == iat` (`KALAMDB_JWT_EXPIRY_HOURS=0`; the
    /// server takes them for its 60 s leeway).
    pub zero_hour_tokens: bool,
    /// The server's clock runs this many seconds from the client's (kit only).
    pub clock_offset: Option<i64>,
    /// Every n-th change notification of a subscription is dropped, as the
    /// server does under a burst (kit only).
    pub drop_every_nth_change: Option<u64>,
    /// SQL requests per second per user, as the server's
    /// `rate_limit.max_queries_per_sec` (100 on the real server by
    /// default; the kit has none unless set).
    pub max_queries_per_sec: Option<u32>,
}

impl ServerSettings {
    /// What the scenario called `name` needs.
    pub fn for_scenario(name: &str) -> ServerSettings {
        match name {
            "many_subscriptions_all_deliver" => ServerSettings {
                max_subscriptions_per_user: Some(scenarios::MANY_SUBSCRIPTIONS_PER_USER_LIMIT),
                ..ServerSettings::default()
            },
            "first_time_setup_then_login" => ServerSettings {
                needs_setup: true,
                ..ServerSettings::default()
            },
            "localhost_only_endpoints_refuse_a_remote_client" => ServerSettings {
                remote_peers: true,
                ..ServerSettings::default()
            },
            "zero_hour_tokens_every_query_succeeds" => ServerSettings {
                zero_hour_tokens: true,
                ..ServerSettings::default()
            },
            "a_client_clock_ten_minutes_ahead_changes_nothing" => ServerSettings {
                zero_hour_tokens: true,
                clock_offset: Some(-600),
                ..ServerSettings::default()
            },
            "a_live_query_resyncs_what_the_server_dropped" => ServerSettings {
                drop_every_nth_change: Some(3),
                ..ServerSettings::default()
            },
            "a_configured_token_from_a_server_a_day_behind_is_used" => ServerSettings {
                clock_offset: Some(-25 * 3600),
                ..ServerSettings::default()
            },
            "a_client_clock_a_day_behind_changes_nothing" => ServerSettings {
                clock_offset: Some(25 * 3600),
                ..ServerSettings::default()
            },
            "concurrent_queries_within_the_servers_rate" => ServerSettings {
                max_queries_per_sec: Some(100),
                ..ServerSettings::default()
            },
            "unacknowledged_records_come_again" => ServerSettings {
                topic_visibility_timeout: Some(scenarios::SHORT_VISIBILITY_TIMEOUT),
                ..ServerSettings::default()
            },
            _ => ServerSettings::default(),
        }
    }

    /// An in-process kit with these settings (on the current Tokio runtime).
    pub async fn start_kit(&self) -> TestServer {
        let mut builder = TestServer::builder();
        if let Some(n) = self.max_subscriptions_per_user {
            builder = builder.max_subscriptions_per_user(n);
        }
        if let Some(d) = self.topic_visibility_timeout {
            builder = builder.topic_visibility_timeout(d);
        }
        if self.zero_hour_tokens {
            builder = builder.token_lifetime(std::time::Duration::ZERO);
        }
        if let Some(secs) = self.clock_offset {
            builder = builder.clock_offset(secs);
        }
        if let Some(n) = self.drop_every_nth_change {
            builder = builder.drop_every_nth_change(n);
        }
        if let Some(n) = self.max_queries_per_sec {
            builder = builder.max_queries_per_sec(n);
        }
        builder
            .needs_setup(self.needs_setup)
            .remote_peers(self.remote_peers)
            .start()
            .await
    }

    /// A real server with these settings (through `KALAMDB_EXTRA_TOML`).
    /// `needs_setup` and `remote_peers` cannot be had from it (those
    /// scenarios are in [`for_each_kit_only_scenario!`]).
    pub fn start_real(&self) -> RealServer {
        assert!(
            !self.needs_setup
                && !self.remote_peers
                && self.topic_visibility_timeout.is_none()
                && self.clock_offset.is_none()
                && self.drop_every_nth_change.is_none(),
            "the real server cannot start unconfigured, see loopback clients as remote or run another clock"
        );
        let toml = self
            .max_subscriptions_per_user
            .map(|n| format!("[rate_limit]\nmax_subscriptions_per_user = {n}"));
        let mut env: Vec<(&str, &str)> = Vec::new();
        if let Some(toml) = &toml {
            env.push(("KALAMDB_EXTRA_TOML", toml));
        }
        if self.zero_hour_tokens {
            env.push(("KALAMDB_JWT_EXPIRY_HOURS", "0"));
        }
        RealServer::start_with(&env)
    }
}

/// What a scenario needs to know about a server.
pub trait Backend: Send + Sync {
    /// `http://127.0.0.1:PORT`.
    fn url(&self) -> String;
    /// The root user's password.
    fn root_password(&self) -> String;
    /// The server's HS256 secret, to mint tokens it accepts (or rejects).
    fn jwt_secret(&self) -> String;
    /// Restarts the server on the same port, keeping its data; returns
    /// once it serves again.
    fn restart(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// Makes every token issued so far invalid, as a redeploy with a new
    /// JWT secret does (the real server restarts on the same port with a
    /// new secret); users and passwords stay.
    fn rotate_jwt_secret(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// Whether this is the real server (a scenario may ask more of it than
    /// of the kit, where the point needs time, say).
    fn is_real(&self) -> bool {
        false
    }
    /// The same server without TLS in front (`url` itself where there is
    /// no TLS).
    fn plain_url(&self) -> String {
        self.url()
    }
}

impl Backend for TestServer {
    fn url(&self) -> String {
        TestServer::url(self)
    }
    fn root_password(&self) -> String {
        TestServer::root_password(self).to_owned()
    }
    fn jwt_secret(&self) -> String {
        TestServer::jwt_secret(self).to_owned()
    }
    fn restart(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(TestServer::restart(self))
    }
    fn rotate_jwt_secret(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move { self.force_invalidate_all() })
    }
}

impl Backend for RealServer {
    fn url(&self) -> String {
        RealServer::url(self)
    }
    fn is_real(&self) -> bool {
        true
    }
    fn root_password(&self) -> String {
        REAL_ROOT_PASSWORD.into()
    }
    fn jwt_secret(&self) -> String {
        REAL_JWT_SECRET.into()
    }
    fn restart(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        // Blocks this thread for about a second; the client runs elsewhere.
        Box::pin(async move { RealServer::restart(self) })
    }
    fn rotate_jwt_secret(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move { self.restart_with_jwt_secret("a-rotated-secret-0123456789abcdefghijklmnopqrs") })
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Mints an HS256 JWT with the server's claim set (the kit's signer,
/// [`kalam_testkit::sign_jwt`]).
pub fn mint(secret: &str, sub: &str, role: &str, token_type: &str, iat: u64, exp: u64) -> String {
    kalam_testkit::sign_jwt(secret, &kalam_testkit::Claims::new(sub, role, token_type, iat, exp))
}

/// Pins an adapter's public names: `pin_public_api!(kalam_tokio)` in a
/// test of the adapter names every type an application uses, so a rename
/// or a removal fails to compile (additions are free). The seed-docs tests
/// pin the upstream docs' names and signatures the same way.
#[macro_export]
macro_rules! pin_public_api {
    ($adapter:ident) => {
        #[allow(unused_imports)]
        use $adapter::{
            AckResponse, AuthProvider, AuthRefreshCallback, AutoOffsetReset, CellError, ClusterHealth, ClusterNode,
            ConnectionOptions, ConsumerBuilder, ConsumerRecord, DEFAULT_BASE_URL, DownloadInfo, DynamicAuthProvider,
            Error, ErrorCode, EventHandlers, FileDownload, FileRef, FileSource, FileUpload, HealthResponse,
            KalamDataType, KalamLinkClient, KalamLinkClientBuilder, KalamLinkTimeouts, LiveEvent, LiveEvents,
            LiveEventsAs, LiveQuery, LiveQueryAs, LiveRow, LiveRows, LiveRowsAs, LoginResponse, MeResponse, Param,
            QueryRequest, QueryResponse, QueryResult, Result, Row, SchemaField, Secret, ServerError, SetupRequest,
            SetupResponse, SetupStatus, SubId, SubscriptionInfo, SubscriptionOptions, SubscriptionState, TopicConsumer,
            TopicOp, TransportError, TypedLiveEvent, UploadProgress, UserInfo, generic, rt,
        };
    };
}
