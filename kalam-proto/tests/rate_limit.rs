//! The server's query rate: KalamDB takes 100 SQL requests per second per
//! user and refuses the rest `429 RATE_LIMIT_EXCEEDED` before running them.
//! The client sends a refused request again after a pause, paces SQL
//! under the rate the server took, and answers every caller by its
//! deadline.

mod support;

use std::time::Duration;

use kalam_proto::{Error, Instant, RequestKind};
use support::{OK, Pump, W};

const LIMITED: &str =
    r#"{"status":"error","error":{"code":"RATE_LIMIT_EXCEEDED","message":"Too many queries"},"results":[]}"#;

/// A server with a fixed one-second window per user, like KalamDB's.
struct Server {
    per_second: usize,
    window: u64,
    in_window: usize,
    refused: usize,
    answered: usize,
    /// (time, request id) of every request sent.
    sends: Vec<Instant>,
}

impl Server {
    fn new(per_second: usize) -> Server {
        Server {
            per_second,
            window: 0,
            in_window: 0,
            refused: 0,
            answered: 0,
            sends: Vec::new(),
        }
    }

    /// Answers everything outstanding.
    fn serve(&mut self, p: &mut Pump, always_refuse: Option<&str>) {
        while let Some(s) = p.pending_http() {
            let id = s.id;
            assert_eq!(s.kind, RequestKind::Query);
            self.sends.push(p.now.instant);
            let window = p.now.instant.as_duration().as_secs();
            if window != self.window {
                self.window = window;
                self.in_window = 0;
            }
            if let Some(body) = always_refuse {
                self.refused += 1;
                p.answer(id, 429, body);
            } else if self.in_window < self.per_second {
                self.in_window += 1;
                self.answered += 1;
                p.answer(id, 200, OK);
            } else {
                self.refused += 1;
                p.answer(id, 429, LIMITED);
            }
        }
    }
}

fn run(p: &mut Pump, server: &mut Server, ws: &[W], always_refuse: Option<&str>) {
    for _ in 0..100_000 {
        server.serve(p, always_refuse);
        if ws.iter().all(|w| p.result(*w).is_some()) {
            return;
        }
        let at = p.core.poll_timeout().expect("waiting callers wait on the timer");
        // To the timer's millisecond, rounded up.
        let at = at.saturating_duration_since(Instant::ZERO);
        p.run_until(at.as_micros().div_ceil(1000) as u64);
    }
    panic!("never done");
}

#[test]
fn five_hundred_concurrent_queries_all_succeed_under_a_limit_of_a_hundred_per_second() {
    let mut p = Pump::with_token("t");
    let mut server = Server::new(100);
    let ws: Vec<W> = (0..500).map(|i| p.query(&format!("SELECT {i}"))).collect();
    run(&mut p, &mut server, &ws, None);
    let failed: Vec<_> = ws.iter().filter_map(|w| p.error(*w)).collect();
    assert!(
        failed.is_empty(),
        "{} failed at {:?} ({} sent, {} refused), first {:?}",
        failed.len(),
        p.now.instant,
        server.sends.len(),
        server.refused,
        failed.first()
    );
    let elapsed = p.now.instant.as_duration();
    assert!(
        elapsed <= Duration::from_secs(8),
        "{elapsed:?} for 500 at 100 per second"
    );
    // Refusals: the first burst over the limit, then few.
    assert!(server.refused <= 200, "{} refusals", server.refused);
    // Never more than the in-flight cap at once (the pump checks it), and
    // after the first refusal never more than the rate in any second.
    let first_refusal = server.sends[100];
    let later: Vec<Instant> = server.sends.iter().copied().filter(|t| *t > first_refusal).collect();
    for (i, t) in later.iter().enumerate() {
        let in_second = later[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_secs(1))
            .count();
        assert!(in_second <= 100, "{in_second} requests in the second from {t:?}");
    }
}

#[test]
fn a_server_that_keeps_refusing_answers_every_caller_by_its_deadline() {
    let mut p = Pump::with_token("t");
    let mut server = Server::new(100);
    let refuse = r#"{"error":"RATE_LIMIT_EXCEEDED","message":"slow down","retry_after_seconds":1}"#;
    let ws: Vec<W> = (0..200).map(|i| p.query(&format!("SELECT {i}"))).collect();
    run(&mut p, &mut server, &ws, Some(refuse));
    for w in &ws {
        match p.error(*w) {
            Some(Error::Server(e)) => {
                assert_eq!(e.status, 429);
                assert_eq!(e.retry_after_secs, Some(1), "the server's word is kept");
            }
            other => panic!("expected the 429, got {other:?}"),
        }
    }
    let deadline = Duration::from_secs(30);
    assert!(p.now.instant.as_duration() <= deadline, "answered by the deadline");
    assert!(
        server.sends.iter().all(|t| t.as_duration() <= deadline),
        "nothing sent after the deadline"
    );
    // One pause for everyone: not 200 timers, not 200 × 30 requests.
    assert!(server.refused <= 200 + 60, "{} requests", server.refused);
}

#[test]
fn with_the_retry_off_a_refusal_goes_to_the_caller_at_once() {
    let config = kalam_proto::ClientConfig::new(
        &kalam_proto::ConnectionOptions::default().with_rate_limit_retry(false),
        &kalam_proto::KalamLinkTimeouts::default(),
        7,
    );
    let mut p = Pump::new(
        kalam_proto::AuthProvider::jwt_token(support::jwt("access", support::T0 + 3600, "t")),
        config,
    );
    let w = p.query("SELECT 1");
    p.answer_next(429, LIMITED);
    assert!(matches!(p.error(w), Some(Error::Server(e)) if e.status == 429));
    assert_eq!(p.http.len(), 1);
}
