//! The server's clock as this client estimates it.
//!
//! A token's `exp` is a time on the server's clock. The client's own clock
//! may be minutes or hours away from it (a VM whose clock runs ahead, a
//! laptop after sleep), so every answer's `Date` header (and, for tokens
//! the machine obtains, the token's `iat`) is a sample of the offset
//! between the two clocks: `server − client`, in whole seconds. The
//! estimate is the median of the last few samples, so one odd answer (a
//! proxy's cached `Date`) moves nothing; a sample further than
//! [`MAX_OFFSET`] from the client's clock is taken for garbage and ignored.

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Now;

/// Samples further from the client's clock than this are ignored.
pub const MAX_OFFSET: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many recent samples the median is taken over.
const WINDOW: usize = 5;

/// The server's clock, estimated from the times its answers carry.
#[derive(Debug, Clone, Default)]
pub struct ServerClock {
    samples: VecDeque<i64>,
    offset: i64,
    /// The offset last reported as large (reported again only if it moves
    /// by more than the threshold).
    reported: Option<i64>,
}

impl ServerClock {
    /// Takes a server time (Unix seconds) seen at `now`. Returns the new
    /// offset when it is at least `warn_at` and was not reported yet: a
    /// warning for the application.
    pub fn observe(&mut self, server_unix: u64, now: Now, warn_at: Duration) -> Option<i64> {
        let sample = i64::try_from(server_unix)
            .ok()?
            .checked_sub(i64::try_from(now.unix_secs()).ok()?)?;
        if sample.unsigned_abs() > MAX_OFFSET.as_secs() {
            return None;
        }
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        let mut sorted: Vec<i64> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        self.offset = sorted[sorted.len() / 2];
        let threshold = warn_at.as_secs() as i64;
        let large = self.offset.abs() >= threshold.max(1);
        let already = self
            .reported
            .is_some_and(|r| (r - self.offset).abs() < threshold.max(1));
        if large && !already {
            self.reported = Some(self.offset);
            return Some(self.offset);
        }
        None
    }

    /// Whether any sample was taken.
    pub fn is_known(&self) -> bool {
        !self.samples.is_empty()
    }

    /// `server − client`, in seconds (0 while nothing is known).
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The server's time at `now`, in Unix seconds.
    pub fn server_now(&self, now: Now) -> i64 {
        i64::try_from(now.unix_secs())
            .unwrap_or(i64::MAX)
            .saturating_add(self.offset)
    }
}

/// Reads an HTTP `Date` header (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110
/// IMF-fixdate) as Unix seconds; `None` for anything else.
pub fn parse_http_date(text: &str) -> Option<u64> {
    let mut parts = text.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    if h > 23 || m > 59 || s > 60 || !(1970..=9999).contains(&year) {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=month_days).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day as i64);
    u64::try_from(days).ok().map(|d| d * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: u64) -> Now {
        Now::from_secs(0, unix)
    }

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Sat, 05 Dec 2026 07:30:00 GMT"), Some(1_796_455_800));
        assert_eq!(parse_http_date("Tue, 29 Feb 2028 00:00:00 GMT"), Some(1_835_395_200));
        for bad in [
            "",
            "garbage",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 2026 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37:1 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Sun, 06 Nov 99999999999999999999 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_offset_is_the_median_of_recent_samples() {
        let mut c = ServerClock::default();
        assert!(!c.is_known());
        let warn = Duration::from_secs(30);
        assert_eq!(c.observe(1_000_600, at(1_000_000), warn), Some(600), "reported once");
        assert_eq!(c.observe(1_000_601, at(1_000_001), warn), None);
        assert_eq!(c.offset(), 600);
        // One odd answer does not move it.
        c.observe(1_000_000, at(1_000_000), warn);
        assert_eq!(c.offset(), 600);
        assert_eq!(c.server_now(at(2_000_000)), 2_000_600);
        // A sample past the bound is garbage.
        c.observe(u64::MAX, at(1_000_000), warn);
        c.observe(0, at(1_000_000), warn);
        assert_eq!(c.offset(), 600);
    }

    #[test]
    fn a_new_large_offset_is_reported_again() {
        let mut c = ServerClock::default();
        let warn = Duration::from_secs(30);
        assert_eq!(c.observe(10_000, at(10_000), warn), None, "no skew, nothing to say");
        for _ in 0..5 {
            c.observe(10_000 - 3600, at(10_000), warn);
        }
        assert_eq!(c.offset(), -3600);
        assert_eq!(c.reported, Some(-3600));
    }
}
