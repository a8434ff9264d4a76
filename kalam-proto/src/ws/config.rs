//! Settings of the WebSocket session.

use super::*;

/// Settings of a session.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Send a ping when nothing was sent for this long (≤ 5 s).
    pub ping_interval: Duration,
    /// Treat the connection as dead when nothing arrived for this long.
    pub silence_limit: Duration,
    /// Limit for the TCP + WebSocket handshake.
    pub connect_timeout: Duration,
    /// Limit for the `authenticate` exchange.
    pub auth_timeout: Duration,
    /// Reconnect after a drop.
    pub auto_reconnect: bool,
    /// First reconnect delay.
    pub reconnect_delay: Duration,
    /// Longest reconnect delay.
    pub max_reconnect_delay: Duration,
    /// Give up after this many failed attempts in a row.
    pub max_reconnect_attempts: Option<u32>,
    /// Ask for gzip frames (only if this build can read them).
    pub gzip: bool,
    /// Seed of the jitter generator.
    pub seed: u64,
    /// A subscription not acknowledged this long after it was asked for
    /// (or after its subscribe frame left, if pacing held it back) ends with
    /// [`Error::SubscribeTimeout`].
    pub subscribe_timeout: Duration,
    /// Text frames the session may send at once on a fresh socket.
    pub send_burst: u32,
    /// Text frames per second after the burst. The server allows 50 per
    /// second per connection (a token bucket of 50) and drops the excess
    /// (PROTOCOL §6), so the session stays well below.
    pub send_rate: u32,
    /// Largest frame after inflating a gzip frame (a gzip-bomb guard):
    /// `ConnectionOptions::max_response_bytes`, the same bound as any answer.
    pub max_inflated: usize,
    /// After a resume, drop rows equal (every column but `_seq`) to one of
    /// the last rows delivered: a cluster's nodes stamp a row's change with
    /// their own `_seq`, so the resume from another node can send a row
    /// again (on by the core with several nodes).
    pub drop_resumed_duplicates: bool,
}

impl WsConfig {
    /// Settings from the client options.
    pub fn from_options(options: &ConnectionOptions, timeouts: &KalamLinkTimeouts, seed: u64) -> Self {
        let ping = options
            .ping_interval
            .min(Duration::from_secs(5))
            .max(Duration::from_millis(10));
        WsConfig {
            ping_interval: ping,
            silence_limit: (ping * 3).max(Duration::from_secs(10)),
            connect_timeout: timeouts.connection_timeout,
            auth_timeout: timeouts.auth_timeout,
            auto_reconnect: options.auto_reconnect,
            reconnect_delay: options.reconnect_delay,
            max_reconnect_delay: options.max_reconnect_delay.max(options.reconnect_delay),
            max_reconnect_attempts: options.max_reconnect_attempts,
            gzip: !options.disable_compression && crate::gzip::SUPPORTED,
            seed,
            subscribe_timeout: timeouts.subscribe_timeout,
            send_burst: DEFAULT_SEND_BURST,
            send_rate: DEFAULT_SEND_RATE,
            max_inflated: options.max_response_bytes,
            drop_resumed_duplicates: false,
        }
    }
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig::from_options(&ConnectionOptions::default(), &KalamLinkTimeouts::default(), 0x5eed)
    }
}

/// Text frames sent at once on a fresh socket (the server's bucket holds 50).
pub const DEFAULT_SEND_BURST: u32 = 40;
/// Text frames per second after the burst (the server refills 50 per second).
pub const DEFAULT_SEND_RATE: u32 = 30;
