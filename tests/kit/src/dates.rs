//! The clock and the date formats the server writes (RFC 3339, HTTP dates):
//! a small civil-date library, so the kit needs no date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

pub(crate) fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// Now as RFC 3339 with milliseconds and `+00:00`, like the server.
pub(crate) fn now_rfc3339_millis() -> String {
    rfc3339(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(), 3)
}

/// `(year, month, day)` of a day count since the Unix epoch (Howard
/// Hinnant's civil-from-days).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 (UTC, `+00:00`) with `digits` fractional digits.
pub(crate) fn rfc3339(since_epoch: Duration, digits: usize) -> String {
    let secs = since_epoch.as_secs() as i64;
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let nanos = format!("{:09}", since_epoch.subsec_nanos());
    let frac = &nanos[..digits.min(9)];
    let dot = if frac.is_empty() { "" } else { "." };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{dot}{frac}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

/// An HTTP date (`Mon, 23 Nov 2026 19:37:56 GMT`), as in cookie `Expires`.
pub(crate) fn http_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = unix_secs as i64;
    let days = secs.div_euclid(86_400);
    let (y, m, d) = civil(days);
    let rem = secs.rem_euclid(86_400);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1).clamp(0, 11) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_as_the_server_writes_them() {
        // From wire-samples/http_login_success.json (exp 1795462676).
        assert_eq!(http_date(1_795_462_676), "Mon, 23 Nov 2026 19:37:56 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            rfc3339(Duration::new(1_795_462_676, 625_643_585), 9),
            "2026-11-23T19:37:56.625643585+00:00"
        );
        assert_eq!(
            rfc3339(Duration::new(1_795_462_676, 0), 3),
            "2026-11-23T19:37:56.000+00:00"
        );
        assert_eq!(rfc3339(Duration::new(951_782_400, 0), 0), "2000-02-29T00:00:00+00:00");
    }
}
