//! Property tests of the WebSocket session over random histories, driven
//! through the client core with the shared pump: the session's tokens come
//! from the auth machine (a dynamic provider, a login, or a static token),
//! answered when the history says so. After every step:
//!
//! - frames go out only on an open socket, and nothing but `authenticate`
//!   before the server's `auth_success` (the pump checks);
//! - at most one socket attempt is current at a time (an abandoned one is
//!   refused when it opens) (the pump checks);
//! - a subscription's events stop after its end, which comes once (the pump
//!   checks); an unsubscribed one has ended;
//! - events reach only the subscription the frame names, and only from a
//!   frame;
//! - a subscribe's caller is answered with `Subscribed` exactly when the
//!   server's acknowledgement was delivered, otherwise with an error when
//!   the subscription ends, and waits while it neither;
//! - reconnect delays stay within the configured maximum (the pump checks);
//! - the timer never asks to be woken in the past without progress (the
//!   pump checks whenever it handles a timeout).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use kalam_proto::{
    Answer, AuthProvider, ClientConfig, ConnectionOptions, Error, KalamLinkTimeouts, LiveEvent, RequestKind, SubId,
    SubscriptionOptions, TransportError,
};
use proptest::prelude::*;
use support::{
    AUTH_ERROR, AUTH_SUCCESS, BAD_LOGIN, Pump, RATE_LIMITED, T0, W, ack_frame, batch_frame, change_frame, jwt,
    login_body, sub_error_frame,
};

#[derive(Debug, Clone)]
enum Frame {
    AuthSuccess,
    AuthError,
    Ack {
        sub: usize,
        generation: u32,
        options: bool,
    },
    Batch {
        sub: usize,
        generation: u32,
        batch: u32,
        more: bool,
        seq: i64,
    },
    Change {
        sub: usize,
        generation: u32,
        kind: u8,
        seq: i64,
    },
    SubError {
        sub: usize,
        generation: u32,
    },
    PseudoError,
    Garbage(String),
}

#[derive(Debug, Clone)]
enum Ev {
    Subscribe {
        options: bool,
    },
    Unsubscribe {
        pick: usize,
    },
    Connect,
    Disconnect,
    Token {
        kind: u8,
    },
    Connected {
        stale: bool,
    },
    Frame(Frame),
    Closed {
        stale: bool,
    },
    Advance {
        ms: u64,
    },
    Timeout,
    CredentialsChanged {
        kind: u8,
    },
    /// A cooperative driver and server, made of the steps above: a good
    /// token for what waits on one, the socket opens, `auth_success`, and
    /// an acknowledgement for each subscribe sent on this socket and not yet
    /// answered. Takes histories past the handshake.
    Serve,
}

/// Mostly the first attempt's wire id; sometimes a retry's (`k1.1`).
fn generation() -> impl Strategy<Value = u32> {
    prop_oneof![6 => Just(0u32), 1 => 1u32..3]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        3 => Just(Frame::AuthSuccess),
        1 => Just(Frame::AuthError),
        2 => (0usize..6, generation(), any::<bool>())
            .prop_map(|(sub, generation, options)| Frame::Ack { sub, generation, options }),
        2 => (0usize..6, generation(), 0u32..3, any::<bool>(), 0i64..1_000_000)
            .prop_map(|(sub, generation, batch, more, seq)| Frame::Batch { sub, generation, batch, more, seq }),
        3 => (0usize..6, generation(), 0u8..3, 0i64..1_000_000)
            .prop_map(|(sub, generation, kind, seq)| Frame::Change { sub, generation, kind, seq }),
        1 => (0usize..6, generation()).prop_map(|(sub, generation)| Frame::SubError { sub, generation }),
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
        1 => (0u8..4).prop_map(|kind| Ev::CredentialsChanged { kind }),
        3 => Just(Ev::Serve),
    ]
}

/// Ids the session chose are k1, k2…; sometimes pick one it never made.
fn wire(sub: usize, generation: u32) -> String {
    if generation == 0 {
        format!("k{}", sub + 1)
    } else {
        format!("k{}.{generation}", sub + 1)
    }
}

impl Frame {
    /// The text, and the subscription it names (if any).
    fn text(&self) -> (String, Option<SubId>) {
        let named = |sub: usize| Some(SubId(sub as u64 + 1));
        match self {
            Frame::AuthSuccess => (AUTH_SUCCESS.to_owned(), None),
            Frame::AuthError => (AUTH_ERROR.to_owned(), None),
            Frame::Ack {
                sub,
                generation,
                options,
            } => (ack_frame(&wire(*sub, *generation), *options), named(*sub)),
            Frame::Batch {
                sub,
                generation,
                batch,
                more,
                seq,
            } => (batch_frame(&wire(*sub, *generation), *batch, *more, *seq), named(*sub)),
            Frame::Change {
                sub,
                generation,
                kind,
                seq,
            } => (change_frame(&wire(*sub, *generation), *kind, *seq), named(*sub)),
            Frame::SubError { sub, generation } => (sub_error_frame(&wire(*sub, *generation)), named(*sub)),
            Frame::PseudoError => (RATE_LIMITED.to_owned(), None),
            Frame::Garbage(g) => (g.clone(), None),
        }
    }
}

/// A token the provider or the server hands out again and again.
fn same_token() -> String {
    jwt("access", T0 + 1_000_000, "same")
}

struct World {
    p: Pump,
    /// The credentials the history started with.
    start: AuthProvider,
    subs: Vec<(W, SubId)>,
    /// Subscriptions whose acknowledgement (`Subscribed`) was delivered.
    acked: BTreeSet<SubId>,
    /// Frames sent before this index were answered by `Serve` (or predate
    /// the current socket).
    served: usize,
    n: u64,
}

impl World {
    fn fresh_token(&mut self) -> String {
        self.n += 1;
        jwt("access", self.p.now.unix_secs() + 3600, &format!("t{}", self.n))
    }

    /// Answers what the auth machine waits on for the session's token: the
    /// dynamic provider, or a login or refresh.
    fn token(&mut self, kind: u8) {
        let fetch = self.p.pending_fetches().next().map(|f| f.id);
        let request = self.p.http.iter().rev().find(|s| !s.answered).map(|s| (s.id, s.kind));
        if let Some(id) = fetch {
            let answer = match kind {
                0 | 1 => Ok(AuthProvider::jwt_token(self.fresh_token())),
                2 => Ok(AuthProvider::jwt_token(same_token())),
                3 => Err(Error::Transport(TransportError::Connect("down".into()))),
                _ => Ok(AuthProvider::none()),
            };
            self.p.credentials(id, answer);
        } else if let Some((id, kind_of)) = request {
            assert!(matches!(kind_of, RequestKind::Login | RequestKind::Refresh));
            self.n += 1;
            let refresh = jwt("refresh", self.p.now.unix_secs() + 7200, &format!("r{}", self.n));
            match kind {
                0 | 1 => {
                    let access = self.fresh_token();
                    self.p.answer_login(id, &access, &refresh);
                }
                2 => self.p.answer(id, 200, &login_body(&same_token(), &refresh)),
                3 => self.p.fail(id, TransportError::Connect("down".into())),
                _ => self.p.answer(id, 401, BAD_LOGIN),
            }
        }
    }

    /// `Ev::Serve`; returns the subscriptions the frames it fed name.
    fn serve(&mut self) -> BTreeSet<SubId> {
        let mut named = BTreeSet::new();
        self.token(0);
        if let Some(a) = self.p.opening {
            self.p.socket_open(a);
        }
        if self.p.socket.is_none() {
            return named;
        }
        if !self.p.authed {
            self.served = self.p.frames.len();
            self.p.frame(AUTH_SUCCESS);
        }
        let ids: Vec<(String, bool)> = self.p.frames[self.served..]
            .iter()
            .filter(|(_, f)| f["type"] == "subscribe")
            .map(|(_, f)| {
                let s = &f["subscription"];
                let id = s["id"].as_str().expect("a subscription id").to_owned();
                (id, !s["options"]["batch_size"].is_null())
            })
            .collect();
        self.served = self.p.frames.len();
        for (id, has_more) in ids {
            let sub = id[1..].split('.').next().and_then(|n| n.parse().ok()).map(SubId);
            named.extend(sub);
            if self.p.socket.is_some() {
                self.p.frame(&ack_frame(&id, has_more));
            }
        }
        named
    }

    fn step(&mut self, ev: &Ev) -> Result<(), TestCaseError> {
        let delivered = self.p.delivered.len();
        // The subscriptions the frames fed in this step name, if any were fed.
        let mut route: Option<BTreeSet<SubId>> = None;
        match ev {
            Ev::Serve => route = Some(self.serve()),
            Ev::Subscribe { options } => {
                let opts = options.then(|| SubscriptionOptions::default().with_batch_size(10));
                let (w, sub) = self.p.subscribe("SELECT * FROM a.b", opts);
                match sub {
                    Some(sub) => self.subs.push((w, sub)),
                    None => prop_assert!(self.p.error(w).is_some(), "refused at once, unanswered"),
                }
            }
            Ev::Unsubscribe { pick } => {
                if !self.subs.is_empty() {
                    let (_, sub) = self.subs[pick % self.subs.len()];
                    self.p.unsubscribe(sub);
                    // No more events are promised for it either.
                    prop_assert!(self.p.ended.iter().any(|(s, _)| *s == sub), "unsubscribed, not ended");
                }
            }
            Ev::Connect => {
                self.p.connect();
            }
            Ev::Disconnect => {
                let w = self.p.disconnect();
                prop_assert!(matches!(self.p.result(w), Some(Ok(Answer::Disconnected))));
                prop_assert_eq!(self.p.core.subscriptions(), 0);
            }
            Ev::Token { kind } => self.token(*kind),
            Ev::Connected { stale } => {
                if let Some(&(a, _)) = self.p.opens.last() {
                    let attempt = if *stale { a.wrapping_sub(1) } else { a };
                    self.p.socket_open(attempt);
                }
            }
            Ev::Frame(f) => {
                if self.p.socket.is_some() {
                    let (text, named) = f.text();
                    route = Some(named.into_iter().collect());
                    self.p.frame(&text);
                }
            }
            Ev::Closed { stale } => {
                if let Some(&(a, _)) = self.p.opens.last() {
                    let attempt = if *stale { a.wrapping_sub(1) } else { a };
                    self.p.closed(attempt, None, "");
                }
            }
            Ev::Advance { ms } => self.p.advance(Duration::from_millis(*ms)),
            Ev::Timeout => {
                self.p.tick();
            }
            Ev::CredentialsChanged { kind } => {
                let credentials = match kind {
                    0 => AuthProvider::jwt_token(self.fresh_token()),
                    1 => self.start.clone(),
                    2 => AuthProvider::basic_auth("root".into(), "pw".into()),
                    _ => AuthProvider::none(),
                };
                self.p.set_credentials(credentials);
            }
        }
        // Routing: events come from frames, to the subscription they name;
        // but `Reconnecting`, which comes from the socket's loss (a close,
        // or a deadline: silence, a frame that cannot be handled).
        for (sub, event) in &self.p.delivered[delivered..] {
            if matches!(event, LiveEvent::Reconnecting { .. }) {
                prop_assert!(
                    matches!(ev, Ev::Closed { .. } | Ev::Timeout | Ev::Frame(_) | Ev::Serve),
                    "{:?} for {:?} after {:?}",
                    event,
                    sub,
                    ev
                );
                continue;
            }
            let Some(named) = &route else {
                return Err(TestCaseError::fail(format!("{event:?} for {sub:?} with no frame")));
            };
            prop_assert!(
                named.contains(sub),
                "{:?} routed to the wrong subscription {:?}",
                event,
                sub
            );
            if matches!(event, LiveEvent::Subscribed { .. }) {
                self.acked.insert(*sub);
            }
        }
        // A subscribe's caller is answered at the acknowledgement, or with
        // an error when the subscription ends unacknowledged.
        for &(w, sub) in &self.subs {
            let acked = self.acked.contains(&sub);
            let ended = self.p.ended.iter().any(|(s, _)| *s == sub);
            match self.p.result(w) {
                Some(Ok(Answer::Subscribed(s))) => {
                    prop_assert_eq!(*s, sub);
                    prop_assert!(acked, "{:?}'s caller answered before the acknowledgement", sub);
                }
                Some(Ok(other)) => prop_assert!(false, "{:?}'s caller answered {:?}", sub, other),
                Some(Err(e)) => {
                    prop_assert!(!acked, "{:?} acknowledged, its caller answered {:?}", sub, e);
                    prop_assert!(ended, "{:?}'s caller failed ({:?}), the subscription lives on", sub, e);
                }
                None => prop_assert!(
                    !acked && !ended,
                    "{:?}'s caller waits (acknowledged: {}, ended: {})",
                    sub,
                    acked,
                    ended
                ),
            }
        }
        Ok(())
    }
}

fn cases() -> u32 {
    #[allow(clippy::disallowed_methods)] // a test knob, not the library
    std::env::var("KALAM_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

/// One history: a core with these settings and starting credentials
/// (0: a dynamic provider, 1: a password, 2: a static token), then the
/// events, checked after every step.
fn run(seed: u64, auto_reconnect: bool, start: u8, events: &[Ev]) -> Result<(), TestCaseError> {
    let options = ConnectionOptions::default()
        .with_auto_reconnect(auto_reconnect)
        .with_reconnect_delay(Duration::from_millis(500), Duration::from_secs(5));
    let config = ClientConfig::new(&options, &KalamLinkTimeouts::default(), seed).with_dynamic_provider(start == 0);
    let credentials = match start {
        0 => AuthProvider::none(),
        1 => AuthProvider::basic_auth("root".into(), "pw".into()),
        _ => AuthProvider::jwt_token(jwt("access", T0 + 3600, "static")),
    };
    let mut w = World {
        p: Pump::new(credentials.clone(), config),
        start: credentials,
        subs: Vec::new(),
        acked: BTreeSet::new(),
        served: 0,
        n: 0,
    };
    for ev in events {
        w.step(ev)?;
    }
    // Subscriptions still registered are those not ended.
    let open = w
        .subs
        .iter()
        .filter(|(_, s)| w.p.ended.iter().all(|(e, _)| e != s))
        .count();
    prop_assert!(w.p.core.session().subscriptions() <= open + w.subs.len());
    prop_assert_eq!(w.p.core.session().subscriptions(), open);
    prop_assert_eq!(w.p.core.subscriptions(), open);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_session_rules_hold_over_random_histories(
        seed in any::<u64>(),
        auto_reconnect in any::<bool>(),
        start in 0u8..3,
        events in prop::collection::vec(event(), 1..80),
    ) {
        run(seed, auto_reconnect, start, &events)?;
    }
}

/// The histories that failed when the session was driven directly (see
/// `ws_props.proptest-regressions`; its seeds no longer make the same
/// histories), with every kind of starting credentials.
#[test]
fn past_failures_hold() {
    use Ev::*;
    let sub = || Subscribe { options: false };
    let cases = [
        vec![sub(), Token { kind: 0 }, Disconnect, Connect, Token { kind: 0 }],
        vec![
            sub(),
            sub(),
            sub(),
            sub(),
            Token { kind: 0 },
            sub(),
            Connected { stale: false },
            Frame(self::Frame::Batch {
                sub: 0,
                generation: 0,
                batch: 0,
                more: true,
                seq: 0,
            }),
        ],
    ];
    for events in &cases {
        for start in 0..3 {
            if let Err(e) = run(0, false, start, events) {
                panic!("start {start}, {events:?}: {e}");
            }
        }
    }
}
