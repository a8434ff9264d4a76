//! The client core driven by an arbitrary sequence of bytes (the
//! `client_core` fuzz target, and the regression tests of what it found):
//! each pair of bytes is one input: the application's commands (queries,
//! `GET /auth/me`, subscriptions, credentials, connect, disconnect), HTTP
//! answers of any status with chosen bodies, transport failures, credential
//! callbacks, timers, sockets opening, failing and dropping, and server
//! frames (chosen or arbitrary text). The pump checks the core's contract
//! at every step; then the application disconnects and the network fails
//! everything, and every waiter must have been answered and every
//! subscription ended once.

use std::time::Duration;

use kalam_proto::{AuthProvider, Operation, RequestKind, TransportError};

use super::{AUTH_ERROR, AUTH_SUCCESS, BAD_LOGIN, EXPIRED, INVALID, OK, Pump, RATE_LIMITED, T0, jwt, login_body};

/// Moves to the core's next timer and handles it.
fn next_timer(p: &mut Pump) {
    if let Some(at) = p.core.poll_timeout() {
        p.advance(at.saturating_duration_since(p.now.instant));
        assert!(p.tick(), "the timer was not due at its time");
    }
}

/// Runs `data` as inputs, then the drain; panics on a broken contract.
pub fn drive(data: &[u8]) {
    let mut p = Pump::basic();
    let mut subs = Vec::new();
    let mut minted = 0u64;
    let mut bytes = data.iter().copied();
    let mut budget = 200;
    while let Some(op) = bytes.next() {
        budget -= 1;
        if budget == 0 {
            break;
        }
        let arg = bytes.next().unwrap_or(0);
        match op % 14 {
            0 => {
                p.query("SELECT 1");
            }
            1 => {
                p.submit(Operation::Me);
            }
            2 | 3 => {
                let pending: Vec<_> = p.http.iter().filter(|s| !s.answered).map(|s| (s.id, s.kind)).collect();
                if let Some((id, kind)) = pending.get(usize::from(arg) % pending.len().max(1)).copied() {
                    minted += 1;
                    let access = jwt(
                        "access",
                        p.server_now() + 60 + u64::from(arg % 4) * 600,
                        &format!("t{minted}"),
                    );
                    let refresh = jwt("refresh", T0 + 1_000_000, &format!("r{minted}"));
                    let login = login_body(&access, &refresh);
                    let (status, body) = match (arg / 4) % 8 {
                        0 if matches!(kind, RequestKind::Login | RequestKind::Refresh) => (200, login.as_str()),
                        0 => (200, OK),
                        1 => (401, EXPIRED),
                        2 => (401, INVALID),
                        3 => (401, BAD_LOGIN),
                        4 => (429, RATE_LIMITED),
                        5 => (500, "<html>oops</html>"),
                        6 => (200, "{\"status\":\"success\",\"results\":[{\"rows\":[[\"x\"]]}]"),
                        _ => (200, login.as_str()),
                    };
                    p.answer(id, status, body);
                }
            }
            4 => {
                let pending: Vec<_> = p.http.iter().filter(|s| !s.answered).map(|s| s.id).collect();
                if let Some(id) = pending.get(usize::from(arg) % pending.len().max(1)).copied() {
                    let e = match arg % 3 {
                        0 => TransportError::Connect("refused".into()),
                        1 => TransportError::Timeout(Duration::from_secs(30)),
                        _ => TransportError::Io("reset".into()),
                    };
                    p.fail(id, e);
                }
            }
            5 => {
                if arg % 4 == 0 {
                    p.advance(Duration::from_millis(u64::from(arg) * 100));
                    p.tick();
                } else {
                    next_timer(&mut p);
                }
            }
            6 => {
                if let Some(f) = p.fetch_log.iter().find(|f| !f.answered && !f.expired) {
                    let id = f.id;
                    minted += 1;
                    let r = if arg % 2 == 0 {
                        Ok(AuthProvider::jwt_token(jwt(
                            "access",
                            p.server_now() + 600,
                            &format!("c{minted}"),
                        )))
                    } else {
                        Err(kalam_proto::Error::Runtime("no credentials".into()))
                    };
                    p.credentials(id, r);
                }
            }
            7 => {
                if let Some(a) = p.opening {
                    if arg % 4 == 0 {
                        p.closed(a, None, "connection refused");
                    } else {
                        p.socket_open(a);
                    }
                }
            }
            8 => {
                if p.socket.is_some() {
                    let frame = match arg % 6 {
                        0 | 1 => AUTH_SUCCESS.to_owned(),
                        2 => AUTH_ERROR.to_owned(),
                        3 => super::ack_frame(&format!("k{}.1", arg % 3), arg % 2 == 0),
                        4 => super::change_frame(&format!("k{}.1", arg % 3), arg % 3, i64::from(arg)),
                        _ => String::from_utf8_lossy(
                            bytes
                                .by_ref()
                                .take(usize::from(arg % 64))
                                .collect::<Vec<_>>()
                                .as_slice(),
                        )
                        .into_owned(),
                    };
                    p.frame(&frame);
                }
            }
            9 => {
                if p.socket.is_some() {
                    p.socket_closed(if arg % 2 == 0 { None } else { Some(1011) }, "reset");
                }
            }
            10 => {
                if subs.len() < 4 {
                    let (_, sub) = p.subscribe(&format!("SELECT * FROM demo.t{arg}"), None);
                    subs.extend(sub);
                }
            }
            11 => {
                if let Some(sub) = subs.get(usize::from(arg) % subs.len().max(1)).copied() {
                    p.unsubscribe(sub);
                }
            }
            12 => p.set_credentials(AuthProvider::basic_auth("root".into(), format!("pw{arg}"))),
            _ => {
                if arg % 2 == 0 {
                    p.connect();
                } else {
                    p.disconnect();
                }
            }
        }
    }
    // The application disconnects and the network fails everything.
    p.disconnect();
    for _ in 0..500 {
        if let Some(id) = p.http.iter().find(|s| !s.answered).map(|s| s.id) {
            p.fail(id, TransportError::Connect("down".into()));
        } else if let Some(id) = p.fetch_log.iter().find(|f| !f.answered && !f.expired).map(|f| f.id) {
            p.credentials(id, Err(kalam_proto::Error::Runtime("down".into())));
        } else if let Some(a) = p.opening {
            p.closed(a, None, "connection refused");
        } else if p.socket.is_some() {
            p.socket_closed(None, "reset");
        } else if p.core.poll_timeout().is_some() {
            next_timer(&mut p);
        } else {
            break;
        }
    }
    assert!(
        p.unanswered().is_empty(),
        "waiters never answered: {:?}",
        p.unanswered()
    );
    assert_eq!(p.core.pending_waiters(), 0, "waiters left after the drain");
    for sub in &subs {
        let ends = p.ended.iter().filter(|(e, _)| e == sub).count();
        assert_eq!(ends, 1, "{sub:?} ended {ends} times");
    }
}
