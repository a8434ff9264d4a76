//! Property tests of the WebSocket session over random histories. After
//! every step:
//!
//! - frames go out only on an open socket, and nothing but `authenticate`
//!   before the server's `auth_success`;
//! - at most one socket attempt is current at a time (an abandoned one is
//!   refused when it opens);
//! - a subscription's events stop after its `Closed`, which comes once;
//! - reconnect delays stay within the configured maximum;
//! - the timer never asks to be woken in the past without progress.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kalam_proto::{
    Endpoints, Error, Incoming, Instant, LiveEvent, Now, Secret, SubId, SubscriptionOptions, TransportError, WsConfig,
    WsEvent, WsOutput, WsSession,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Frame {
    AuthSuccess,
    AuthError,
    Ack { sub: usize, options: bool },
    Batch { sub: usize, more: bool, seq: i64 },
    Change { sub: usize, kind: u8, seq: i64 },
    SubError { sub: usize },
    PseudoError,
    Garbage(String),
}

#[derive(Debug, Clone)]
enum Ev {
    Subscribe { options: bool },
    Unsubscribe { pick: usize },
    Connect,
    Disconnect,
    Token { kind: u8 },
    Connected { stale: bool },
    Frame(Frame),
    Closed { stale: bool },
    Advance { ms: u64 },
    Timeout,
    CredentialsChanged,
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        3 => Just(Frame::AuthSuccess),
        1 => Just(Frame::AuthError),
        2 => (0usize..6, any::<bool>()).prop_map(|(sub, options)| Frame::Ack { sub, options }),
        2 => (0usize..6, any::<bool>(), 0i64..1_000_000).prop_map(|(sub, more, seq)| Frame::Batch { sub, more, seq }),
        3 => (0usize..6, 0u8..3, 0i64..1_000_000).prop_map(|(sub, kind, seq)| Frame::Change { sub, kind, seq }),
        1 => (0usize..6).prop_map(|sub| Frame::SubError { sub }),
        1 => Just(Frame::PseudoError),
        1 => "\\PC{0,40}".prop_map(Frame::Garbage),
    ]
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => any::<bool>().prop_map(|options| Ev::Subscribe { options }),
        1 => any::<usize>().prop_map(|pick| Ev::Unsubscribe { pick }),
        1 => Just(Ev::Connect),
        1 => Just(Ev::Disconnect),
        3 => (0u8..5).prop_map(|kind| Ev::Token { kind }),
        3 => any::<bool>().prop_map(|stale| Ev::Connected { stale }),
        8 => frame().prop_map(Ev::Frame),
        2 => any::<bool>().prop_map(|stale| Ev::Closed { stale }),
        3 => prop_oneof![0u64..100, 0u64..6_000, 0u64..60_000].prop_map(|ms| Ev::Advance { ms }),
        3 => Just(Ev::Timeout),
        1 => Just(Ev::CredentialsChanged),
    ]
}

#[derive(Default)]
struct Model {
    /// The attempt id of the socket the driver has (opening or open).
    socket: Option<u64>,
    /// Whether the driver has reported it open.
    open: bool,
    /// Whether the server said auth_success on it.
    authed: bool,
    subs: Vec<SubId>,
    closed: BTreeSet<SubId>,
    tokens_asked: usize,
    last_close: Option<Instant>,
}

struct World {
    s: WsSession,
    now: Now,
    m: Model,
    max_delay: Duration,
    n: u64,
}

impl World {
    fn pump(&mut self) -> Result<bool, TestCaseError> {
        let mut progressed = false;
        while let Some(o) = self.s.poll_output() {
            progressed = true;
            match o {
                WsOutput::NeedToken { .. } => self.m.tokens_asked += 1,
                WsOutput::Connect { attempt, .. } => {
                    prop_assert!(self.m.socket.is_none(), "a second socket while one is live");
                    self.m.socket = Some(attempt);
                    self.m.open = false;
                    self.m.authed = false;
                }
                WsOutput::SendText(t) => {
                    prop_assert!(self.m.socket.is_some() && self.m.open, "text with no open socket");
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["type"] != "authenticate" {
                        prop_assert!(self.m.authed, "{} before auth_success", v["type"]);
                    }
                }
                WsOutput::SendPing => prop_assert!(self.m.socket.is_some() && self.m.open, "ping with no socket"),
                WsOutput::Close { .. } => {
                    self.m.socket = None;
                    self.m.open = false;
                    self.m.authed = false;
                    self.m.last_close = Some(self.now.instant);
                }
                WsOutput::TokenRejected(_) => {}
                WsOutput::Event(WsEvent::Sub(id, e)) => {
                    prop_assert!(!self.m.closed.contains(&id), "an event after Closed: {e:?}");
                    if let LiveEvent::Closed(_) = e {
                        self.m.closed.insert(id);
                    }
                }
                WsOutput::Event(_) => {}
            }
        }
        // A socket the session no longer considers current (abandoned while
        // opening: its late `handle_connected` is refused, and the driver
        // drops it) is not live.
        use kalam_proto::WsState::*;
        if !matches!(self.s.state(), Connecting | Authenticating | Ready) {
            self.m.socket = None;
            self.m.open = false;
            self.m.authed = false;
        }
        if let Some(t) = self.s.poll_timeout()
            && self.s.state() == BackingOff
        {
            prop_assert!(
                t.saturating_duration_since(self.now.instant) <= self.max_delay,
                "backoff beyond the maximum"
            );
        }
        Ok(progressed)
    }

    fn wire(&self, pick: usize) -> String {
        // Ids the session chose are k1, k2…; sometimes pick one it never made.
        format!("k{}", pick + 1)
    }

    fn step(&mut self, ev: &Ev) -> Result<(), TestCaseError> {
        let now = self.now;
        match ev {
            Ev::Subscribe { options } => {
                let opts = options.then(|| SubscriptionOptions::default().with_batch_size(10));
                if let Ok(id) = self.s.subscribe("SELECT * FROM a.b", opts, now) {
                    self.m.subs.push(id);
                }
            }
            Ev::Unsubscribe { pick } => {
                if !self.m.subs.is_empty() {
                    let id = self.m.subs[pick % self.m.subs.len()];
                    self.s.unsubscribe(id, now);
                    // No more events are promised for it either.
                    self.m.closed.insert(id);
                }
            }
            Ev::Connect => self.s.connect(now),
            Ev::Disconnect => self.s.disconnect(now),
            Ev::Token { kind } => {
                self.n += 1;
                let t = match kind {
                    0 | 1 => Ok(Secret::new(format!("token-{}", self.n))),
                    2 => Ok(Secret::new("token-same")),
                    3 => Err(Error::Transport(TransportError::Connect("down".into()))),
                    _ => Err(Error::MissingCredentials),
                };
                self.s.handle_token(t, now);
            }
            Ev::Connected { stale } => {
                if let Some(a) = self.m.socket {
                    let attempt = if *stale { a.wrapping_sub(1) } else { a };
                    if self.s.handle_connected(attempt, now) && !*stale {
                        self.m.open = true;
                    }
                }
            }
            Ev::Frame(f) => {
                if self.m.open {
                    let text = match f {
                        Frame::AuthSuccess => r#"{"type":"auth_success","user":"u","role":"user"}"#.to_owned(),
                        Frame::AuthError => r#"{"type":"auth_error","message":"Invalid credentials"}"#.to_owned(),
                        Frame::Ack { sub, options } => format!(
                            r#"{{"type":"subscription_ack","subscription_id":"{}","total_rows":0,"batch_control":{{"batch_num":0,"has_more":{options},"status":"ready","last_seq_id":null}},"schema":[{{"name":"id","data_type":"BigInt","index":0,"flags":["pk"]}}]}}"#,
                            self.wire(*sub)
                        ),
                        Frame::Batch { sub, more, seq } => format!(
                            r#"{{"type":"initial_data_batch","subscription_id":"{}","rows":[{{"id":"1","_seq":"{seq}"}}],"batch_control":{{"batch_num":0,"has_more":{more},"status":"loading","last_seq_id":{seq}}}}}"#,
                            self.wire(*sub)
                        ),
                        Frame::Change { sub, kind, seq } => {
                            let (t, body) = match kind {
                                0 => ("insert", format!(r#""rows":[{{"id":"1","_seq":"{seq}"}}]"#)),
                                1 => ("update", format!(r#""rows":[{{"id":"1","_seq":"{seq}"}}],"old_values":[{{"id":"1","_seq":"1"}}]"#)),
                                _ => ("delete", format!(r#""old_values":[{{"id":"1","_seq":"{seq}","_deleted":true}}]"#)),
                            };
                            format!(r#"{{"type":"change","subscription_id":"{}","change_type":"{t}",{body}}}"#, self.wire(*sub))
                        }
                        Frame::SubError { sub } => format!(
                            r#"{{"type":"error","subscription_id":"{}","code":"NOT_FOUND","message":"x"}}"#,
                            self.wire(*sub)
                        ),
                        Frame::PseudoError => r#"{"type":"error","subscription_id":"rate_limit","code":"RATE_LIMIT_EXCEEDED","message":"Too many messages"}"#.to_owned(),
                        Frame::Garbage(g) => g.clone(),
                    };
                    if matches!(f, Frame::AuthSuccess) && !self.m.authed {
                        // Only the first auth_success on a socket authenticates it.
                        self.m.authed = true;
                    }
                    self.s.handle_frame(Incoming::Text(&text), now);
                    if matches!(f, Frame::AuthError) {
                        // The session closes; the model learns it from the Close output.
                    }
                }
            }
            Ev::Closed { stale } => {
                if let Some(a) = self.m.socket {
                    let attempt = if *stale { a.wrapping_sub(1) } else { a };
                    self.s.handle_closed(attempt, None, "", now);
                    if !*stale {
                        self.m.socket = None;
                        self.m.open = false;
                        self.m.authed = false;
                    }
                }
            }
            Ev::Advance { ms } => self.now = self.now.advance(Duration::from_millis(*ms)),
            Ev::Timeout => {
                if let Some(t) = self.s.poll_timeout()
                    && t <= self.now.instant
                {
                    self.s.handle_timeout(self.now);
                    let progressed = self.pump()?;
                    prop_assert!(
                        progressed || self.s.poll_timeout().is_none_or(|n| n > self.now.instant),
                        "woken with nothing to do, and asks to be woken in the past again"
                    );
                }
            }
            Ev::CredentialsChanged => self.s.handle_credentials_changed(now),
        }
        self.pump()?;
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("KALAM_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_session_rules_hold_over_random_histories(
        seed in any::<u64>(),
        auto_reconnect in any::<bool>(),
        events in prop::collection::vec(event(), 1..80),
    ) {
        let config = WsConfig {
            seed,
            auto_reconnect,
            max_reconnect_delay: Duration::from_secs(5),
            ..WsConfig::default()
        };
        let max_delay = config.max_reconnect_delay;
        let mut w = World {
            s: WsSession::new(&Endpoints::new("http://127.0.0.1:1").unwrap(), config),
            now: Now::new(Instant::ZERO, Duration::from_secs(1_800_000_000)),
            m: Model::default(),
            max_delay,
            n: 0,
        };
        for ev in &events {
            w.step(ev)?;
        }
        // Subscriptions still registered are those not closed.
        let open: BTreeMap<SubId, ()> = w.m.subs.iter().filter(|s| !w.m.closed.contains(s)).map(|s| (*s, ())).collect();
        prop_assert!(w.s.subscriptions() <= open.len() + w.m.subs.len());
    }
}
