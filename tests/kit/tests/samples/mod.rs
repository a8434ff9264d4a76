//! The recorded exchanges of `../shared/wire-samples`, shared by the tests
//! that replay them (`wire_samples.rs` for HTTP, `ws_replay.rs` for the
//! WebSocket sessions): where they are, in which order, and how a recorded
//! token is signed again for today.

#![allow(dead_code)] // Each test binary uses a different part.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use kalam_testkit::{Claims, DEFAULT_JWT_SECRET, Refusal, sign_jwt, verify_jwt};
use serde_json::Value;

pub fn samples_dir() -> PathBuf {
    std::env::var_os("KALAM_WIRE_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/wire-samples")))
}

/// The sessions written by hand in the recordings' format (not recorded:
/// from what the real server was seen to do), kept beside the kit's tests.
pub fn extra_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/samples/extra"))
}

/// Every sample file whose name starts with `prefix`, in recording order.
pub fn files(prefix: &str) -> Vec<(String, Value)> {
    files_in(samples_dir(), prefix)
}

/// Every hand-written session of [`extra_dir`], in the order of their
/// `captured_at`.
pub fn extra_files() -> Vec<(String, Value)> {
    files_in(extra_dir(), "")
}

fn files_in(dir: PathBuf, prefix: &str) -> Vec<(String, Value)> {
    let mut files: Vec<(String, String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "the wire samples are not at {} ({e}); set KALAM_WIRE_SAMPLES",
                dir.display()
            )
        })
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".json"))
        })
        .map(|p| {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let at = v["captured_at"].as_str().unwrap_or_default().to_owned();
            (at, p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.into_iter().map(|(_, f, v)| (f, v)).collect()
}

/// `2026-11-22T19:37:57.900+00:00` → Unix milliseconds.
pub fn unix_ms_of(rfc3339: &str) -> f64 {
    let date = &rfc3339[..10];
    let mut p = date.split('-').map(|x| x.parse::<i64>().unwrap());
    let (y, m, d) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let t: Vec<f64> = rfc3339[11..]
        .split(['+', 'Z'])
        .next()
        .unwrap()
        .split(':')
        .map(|x| x.parse().unwrap())
        .collect();
    (days * 86_400) as f64 * 1000.0 + (t[0] * 3600.0 + t[1] * 60.0 + t[2]) * 1000.0
}

pub fn unix_now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// A recorded token, signed again with its claims' times moved so that it
/// is now what it was at `used_at_ms` (recorded Unix time): fresh, within
/// the leeway, or expired. A token whose signature did not verify under the
/// recording server's secret is signed with another secret; garbage stays.
pub fn remint(token: &str, used_at_ms: f64) -> String {
    let Some(claims) = token
        .split('.')
        .nth(1)
        .and_then(|p| B64.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Claims>(&b).ok())
    else {
        return token.to_owned();
    };
    // Genuine: the recording server would have taken its signature and
    // claims when it was used (it may have been expired then).
    let used_at = (used_at_ms / 1000.0).floor() as u64;
    let genuine = !matches!(
        verify_jwt(DEFAULT_JWT_SECRET, token, used_at, 60),
        Err(Refusal::Invalid)
    );
    // Rounded down: a token is never fresher than it was (61 s past `exp`
    // stays beyond the 60 s leeway).
    let shift = ((unix_now_ms() - used_at_ms) / 1000.0).floor() as i64;
    let moved = Claims {
        exp: (claims.exp as i64 + shift) as u64,
        iat: (claims.iat as i64 + shift) as u64,
        ..claims
    };
    let secret = if genuine {
        DEFAULT_JWT_SECRET
    } else {
        "some-other-secret-0123456789abcdef"
    };
    sign_jwt(secret, &moved)
}

/// A `Bearer` header with its token signed again ([`remint`]); any other
/// value as it is.
pub fn remint_header(value: &str, used_at_ms: f64) -> String {
    match value.strip_prefix("Bearer ") {
        Some(token) => format!("Bearer {}", remint(token, used_at_ms)),
        None => value.to_owned(),
    }
}
