//! Clocks that disagree: the client's clock ahead of or behind the server's
//! by 0 s, 29 s, 31 s, 10 min and 25 h, with token lifetimes of 0 s (a
//! server set to `KALAMDB_JWT_EXPIRY_HOURS=0`), 60 s, 5 min and 24 h.
//!
//! The simulated server dates every answer on its own clock, issues tokens
//! with `iat` = its now and `exp` = `iat` + lifetime, and takes a token until
//! 60 s past its `exp` (its leeway), answering `TOKEN_EXPIRED` after. Over a
//! run of queries spread across several lifetimes: every query succeeds, no
//! request carries a token the server refuses, a renewal happens at most
//! once per lifetime, and a refresh ahead of expiry is sent before the
//! server's `exp`.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use kalam_proto::{AuthProvider, Error, Hook, Instant, RequestKind};
use support::{EXPIRED, OK, Pump, T0, config, login_body};

const OFFSETS: [i64; 9] = [0, 29, -29, 31, -31, 600, -600, 90_000, -90_000];
const LIFETIMES: [u64; 4] = [0, 60, 300, 86_400];

fn token(kind: &str, iat: u64, exp: u64, n: u32) -> String {
    let claims = format!(
        r#"{{"sub":"root","iss":"kalamdb","exp":{exp},"iat":{iat},"role":"system","token_type":"{kind}","n":{n}}}"#
    );
    format!(
        "{}.{}.sig",
        B64.encode(r#"{"typ":"JWT","alg":"HS256"}"#),
        B64.encode(claims)
    )
}

fn exp_of(bearer: &str) -> u64 {
    kalam_proto::jwt::inspect(bearer).unwrap().exp.unwrap()
}

#[derive(Default, Debug)]
struct Tally {
    logins: u32,
    refreshes: u32,
    /// Tokens the application's refresher was asked for.
    fetched: u32,
    probes: u32,
    refused: u32,
}

impl Tally {
    fn renewals(&self) -> u64 {
        u64::from(self.logins + self.refreshes + self.fetched)
    }
}

/// How the client gets its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A user and password: a login, then the refresh token.
    Basic,
    /// A token the application got from the server at time zero, and a
    /// refresher that gets it a new one.
    Configured,
}

/// Answers every request and credential call outstanding, as the server
/// (and an application that gets its tokens from it) would.
fn serve(p: &mut Pump, lifetime: u64, tally: &mut Tally) {
    loop {
        let fetch = p.pending_fetches().next().map(|f| f.id);
        if let Some(s) = p.pending_http() {
            let (id, kind, auth) = (s.id, s.kind, s.auth.clone());
            let server_now = p.server_now();
            match kind {
                RequestKind::Login | RequestKind::Refresh => {
                    if kind == RequestKind::Login {
                        tally.logins += 1;
                    } else {
                        tally.refreshes += 1;
                    }
                    let n = tally.logins + tally.refreshes;
                    let access = token("access", server_now, server_now + lifetime, n);
                    let refresh = token("refresh", server_now, server_now + 7 * 86_400, n);
                    p.answer(id, 200, &login_body(&access, &refresh));
                }
                // The clock probe: a remote client is refused, with a Date.
                RequestKind::Health => {
                    tally.probes += 1;
                    p.answer(id, 403, r#"{"error":"localhost only"}"#);
                }
                _ => {
                    let bearer = auth.expect("a query carries a token");
                    let exp = exp_of(bearer.trim_start_matches("Bearer "));
                    if server_now < exp + 60 {
                        p.answer(id, 200, OK);
                    } else {
                        tally.refused += 1;
                        p.answer(id, 401, EXPIRED);
                    }
                }
            }
        } else if let Some(id) = fetch {
            tally.fetched += 1;
            let server_now = p.server_now();
            let fresh = token("access", server_now, server_now + lifetime, 1000 + tally.fetched);
            p.credentials(id, Ok(AuthProvider::jwt_token(fresh)));
        } else {
            return;
        }
    }
}

/// Moves time to `ms`, firing every timer on the way and serving what each
/// sends at once (a refresh ahead of expiry is answered when it is sent).
fn advance_serving(p: &mut Pump, ms: u64, lifetime: u64, tally: &mut Tally) {
    let target = Instant::from_millis(ms);
    while let Some(at) = p.core.poll_timeout().filter(|at| *at <= target) {
        p.run_until(at.saturating_duration_since(Instant::ZERO).as_millis() as u64);
        serve(p, lifetime, tally);
    }
    p.run_until(ms);
    serve(p, lifetime, tally);
}

fn run(offset: i64, lifetime: u64, mode: Mode) -> Tally {
    let server_t0 = (T0 as i64 + offset).max(0) as u64;
    let mut p = match mode {
        Mode::Basic => Pump::basic(),
        Mode::Configured => Pump::new(
            AuthProvider::jwt_token(token("access", server_t0, server_t0 + lifetime, 0)),
            config().with_refresher(true),
        ),
    };
    p.server_offset = offset;
    let mut tally = Tally::default();
    let l = lifetime;
    let mut times = vec![0, 1, l / 2, l + 1, l + 40, l + 59, l + 120, 2 * l + 120, 3 * l + 300];
    times.extend([l.saturating_sub(61), l.saturating_sub(31), l.saturating_sub(1)]);
    times.sort_unstable();
    times.dedup();
    for t in times {
        advance_serving(&mut p, t * 1000, lifetime, &mut tally);
        let w = p.query(&format!("SELECT {t}"));
        serve(&mut p, lifetime, &mut tally);
        // A back-off (none expected here) would hold the query on the timer.
        while p.result(w).is_none() {
            let at = p.core.poll_timeout().expect("a query waits only on the timer");
            advance_serving(
                &mut p,
                at.saturating_duration_since(Instant::ZERO).as_millis() as u64,
                lifetime,
                &mut tally,
            );
        }
        assert!(
            p.query_ok(w),
            "{mode:?}, offset {offset}, lifetime {lifetime}, t {t}: {:?}",
            p.result(w)
        );
    }
    // A large skew is reported once, as a warning.
    let warnings = p
        .hooks
        .iter()
        .filter(|h| matches!(h, Hook::Error(Error::ClockSkew { .. })))
        .count();
    assert_eq!(
        warnings,
        usize::from(offset.abs() >= 30),
        "{mode:?}, offset {offset}: {:?}",
        p.hooks
    );
    assert!(tally.probes <= 1, "the clock is probed once at most: {tally:?}");
    tally
}

/// The least time one token serves: a token shorter than twice the skew
/// until 50 s past its `exp`; a longer one until it is refreshed (60 s
/// before `exp`, but not before half its life) or 30 s before `exp`.
fn serves_at_least(lifetime: u64) -> u64 {
    if lifetime < 60 {
        lifetime + 50
    } else {
        (lifetime - 60).max(lifetime / 2)
    }
}

fn check(offset: i64, lifetime: u64, mode: Mode) -> Result<(), String> {
    let tally = run(offset, lifetime, mode);
    let span = 3 * lifetime + 300;
    // One renewal per token's service at most, give or take a second of
    // rounding in the clock estimate.
    let bound = span / serves_at_least(lifetime).saturating_sub(2).max(1) + 2;
    let context = format!("{mode:?}, offset {offset}, lifetime {lifetime}: {tally:?}");
    if tally.refused != 0 {
        return Err(format!("a token the server refuses was sent; {context}"));
    }
    if tally.renewals() > bound {
        return Err(format!("more than {bound} renewals; {context}"));
    }
    let logins = u32::from(mode == Mode::Basic);
    if tally.logins != logins {
        return Err(format!(
            "{logins} login expected, renewals by the refresh token; {context}"
        ));
    }
    // The clock is probed when, and only when, the local clock alone would
    // condemn the configured token (50 s past its exp, as the token is short
    // on the local clock then).
    let condemned = mode == Mode::Configured && offset + lifetime as i64 + 50 <= 0;
    if tally.probes != u32::from(condemned) {
        return Err(format!("{} clock probe expected; {context}", u32::from(condemned)));
    }
    Ok(())
}

#[test]
fn queries_succeed_wherever_the_server_takes_the_token() {
    for mode in [Mode::Basic, Mode::Configured] {
        for offset in OFFSETS {
            for lifetime in LIFETIMES {
                check(offset, lifetime, mode).unwrap();
            }
        }
    }
}

#[test]
fn a_token_barely_longer_than_the_margins_is_not_renewed_every_second() {
    for mode in [Mode::Basic, Mode::Configured] {
        for lifetime in [31, 59, 60, 61, 62, 91] {
            for offset in [0, 45, -45] {
                check(offset, lifetime, mode).unwrap();
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Any offset within the estimate's bound and any lifetime up to two
    /// days: the same guarantees as the table above.
    #[test]
    fn any_skew_and_lifetime(
        offset in -500_000i64..500_000,
        lifetime in 0u64..172_800,
        configured in proptest::bool::ANY,
    ) {
        let mode = if configured { Mode::Configured } else { Mode::Basic };
        proptest::prop_assert_eq!(check(offset, lifetime, mode), Ok(()));
    }
}

#[test]
fn the_refresh_ahead_fires_before_the_servers_exp() {
    for offset in OFFSETS {
        for lifetime in [300, 86_400] {
            let mut p = Pump::basic();
            p.server_offset = offset;
            let mut tally = Tally::default();
            let w = p.query("SELECT 1");
            let first_exp = p.server_now() + lifetime; // the login's token, issued now
            serve(&mut p, lifetime, &mut tally);
            assert!(p.query_ok(w));
            // The timer is the refresh ahead: 60 s before exp, on the server's clock.
            let at = p.core.poll_timeout().expect("a refresh ahead is due");
            p.run_until(at.saturating_duration_since(Instant::ZERO).as_millis() as u64);
            let refresh = p.pending_http().expect("a refresh");
            assert_eq!(refresh.kind, RequestKind::Refresh);
            assert_eq!(
                first_exp - p.server_now(),
                60,
                "offset {offset}, lifetime {lifetime}: 60 s before the server's exp"
            );
        }
    }
}

#[test]
fn a_server_that_keeps_refusing_fresh_tokens_gets_no_login_storm() {
    // The server refuses every token as expired (its clock far ahead of
    // what its own Date headers say). Each refused query is retried once;
    // logins back off, so a hundred queries over ten minutes cause few.
    let mut p = Pump::basic();
    let (mut logins, mut refreshes) = (0, 0);
    let mut ws = Vec::new();
    let mut serve = |p: &mut Pump| {
        while let Some(s) = p.pending_http() {
            let (id, kind) = (s.id, s.kind);
            match kind {
                RequestKind::Login => {
                    logins += 1;
                    let now = p.server_now();
                    let access = token("access", now, now + 3600, logins);
                    let refresh = token("refresh", now, now + 7 * 86_400, logins);
                    p.answer(id, 200, &login_body(&access, &refresh));
                }
                RequestKind::Refresh => {
                    refreshes += 1;
                    let now = p.server_now();
                    let access = token("access", now, now + 3600, 1000 + refreshes);
                    p.answer(id, 200, &login_body(&access, "r"));
                }
                _ => p.answer(id, 401, EXPIRED),
            }
        }
    };
    for i in 0..100u64 {
        p.run_until(i * 6_000);
        serve(&mut p);
        ws.push(p.query("SELECT 1"));
        serve(&mut p);
    }
    // Whatever waits on a back-off is answered when it ends.
    for _ in 0..1000 {
        if ws.iter().all(|w| p.result(*w).is_some()) {
            break;
        }
        let at = p.core.poll_timeout().expect("a waiting query waits on the timer");
        p.run_until(at.saturating_duration_since(Instant::ZERO).as_millis() as u64);
        serve(&mut p);
    }
    assert!(ws.iter().all(|w| p.result(*w).is_some()), "every caller is answered");
    assert!(
        ws.iter().filter_map(|w| p.error(*w)).all(Error::is_token_expired),
        "typed"
    );
    assert!(
        ws.iter()
            .filter_map(|w| p.error(*w))
            .all(|e| !e.to_string().contains("no way to renew")),
        "with a password configured, never \"no way to renew\""
    );
    // The back-off doubles from 1 s to 30 s: a handful of renewals to get
    // there, then one per 30 s at most.
    let renewals = logins + refreshes;
    let elapsed = p.now.instant.saturating_duration_since(Instant::ZERO).as_secs() as u32;
    let bound = 8 + elapsed / 30;
    assert!(
        renewals <= bound,
        "{logins} logins and {refreshes} refreshes for 100 queries in {elapsed} s (at most {bound})"
    );
}
