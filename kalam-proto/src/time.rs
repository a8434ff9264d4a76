//! Time as a value.
//!
//! `kalam-proto` never reads a clock. Every input carries a [`Now`]: a monotonic
//! [`Instant`] for timers, and the wall-clock time since the Unix epoch for
//! comparing with a JWT's `exp`. Drivers build `Now` from their runtime's clocks;
//! tests build it by hand and can step through hours of token life in
//! microseconds.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on the driver's monotonic clock, measured from an origin the driver
/// chooses (usually the moment the client was built).
///
/// It is deliberately not `std::time::Instant`, which cannot be built without
/// reading the clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(Duration);

impl Instant {
    /// The origin of the monotonic clock.
    pub const ZERO: Instant = Instant(Duration::ZERO);

    /// The instant `d` after the origin.
    pub const fn from_duration(d: Duration) -> Self {
        Instant(d)
    }

    /// The instant `secs` seconds after the origin.
    pub const fn from_secs(secs: u64) -> Self {
        Instant(Duration::from_secs(secs))
    }

    /// The instant `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(Duration::from_millis(ms))
    }

    /// Time since the origin.
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_sub(rhs))
    }
}

/// The current time, as the driver read it: both clocks at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers and deadlines.
    pub instant: Instant,
    /// Wall-clock time since the Unix epoch, for JWT `exp`/`iat`.
    pub unix: Duration,
}

impl Now {
    /// Both clocks.
    pub const fn new(instant: Instant, unix: Duration) -> Self {
        Now { instant, unix }
    }

    /// Convenience for tests: `mono_secs` on the monotonic clock, `unix_secs`
    /// on the wall clock.
    pub const fn from_secs(mono_secs: u64, unix_secs: u64) -> Self {
        Now {
            instant: Instant::from_secs(mono_secs),
            unix: Duration::from_secs(unix_secs),
        }
    }

    /// Both clocks advanced by `d`.
    pub fn advance(self, d: Duration) -> Self {
        Now {
            instant: self.instant + d,
            unix: self.unix.saturating_add(d),
        }
    }

    /// Wall-clock seconds since the Unix epoch.
    pub fn unix_secs(self) -> u64 {
        self.unix.as_secs()
    }

    /// The monotonic instant at which the wall clock reads `unix_secs`
    /// (the present if that moment has passed).
    pub fn instant_at_unix(self, unix_secs: u64) -> Instant {
        let target = Duration::from_secs(unix_secs);
        self.instant + target.saturating_sub(self.unix)
    }
}
