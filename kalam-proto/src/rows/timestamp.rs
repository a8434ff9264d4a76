//! TIMESTAMP, DATE and TIME cells: [`Timestamp`], and with the `time`
//! feature [`time_columns`].

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

/// From this magnitude on, a TIMESTAMP value is read as nanoseconds since
/// the epoch; below it, as microseconds (see [`Timestamp`]).
pub const NANOS_FROM: i64 = 100_000_000_000_000_000;

/// A TIMESTAMP (or DATETIME) cell: an instant, to the nanosecond.
/// Deserializes from a JSON integer or a string of one.
///
/// KalamDB sends a TIMESTAMP as an integer count since the Unix epoch, in
/// **microseconds** for a table column and in **nanoseconds** for a
/// computed value (`NOW()`, `CAST(… AS TIMESTAMP)`), under the same
/// `Timestamp` label (PROTOCOL §7). One rule tells them apart: a value
/// whose magnitude is at least [`NANOS_FROM`] (10¹⁷) is nanoseconds,
/// anything smaller is microseconds. 10¹⁷ µs is the year 5138 and 10¹⁷ ns
/// is March 1973, so the rule misreads only a table value past the year
/// 5138 or a computed value within three years of 1970. Read the raw
/// integer (`i64`) where that matters.
///
/// ```
/// use kalam_proto::rows::Timestamp;
///
/// let table: Timestamp = serde_json::from_str("1733400000123456").unwrap(); // µs
/// let computed: Timestamp = serde_json::from_str("1733400000123456789").unwrap(); // ns
/// assert_eq!(table.unix_micros(), 1_733_400_000_123_456);
/// assert_eq!(computed.unix_nanos(), 1_733_400_000_123_456_789);
/// assert_eq!(computed.unix_micros(), table.unix_micros());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    nanos: i128,
}

impl Timestamp {
    /// The instant a TIMESTAMP cell's integer stands for.
    pub fn from_wire(value: i64) -> Timestamp {
        if value.unsigned_abs() >= NANOS_FROM.unsigned_abs() {
            Timestamp::from_nanos(i128::from(value))
        } else {
            Timestamp::from_micros(value)
        }
    }

    /// Microseconds since the epoch.
    pub fn from_micros(micros: i64) -> Timestamp {
        Timestamp {
            nanos: i128::from(micros) * 1_000,
        }
    }

    /// Nanoseconds since the epoch.
    pub fn from_nanos(nanos: i128) -> Timestamp {
        Timestamp { nanos }
    }

    /// Nanoseconds since the epoch.
    pub fn unix_nanos(self) -> i128 {
        self.nanos
    }

    /// Microseconds since the epoch (rounded down; what a table column
    /// stores).
    pub fn unix_micros(self) -> i64 {
        let micros = self.nanos.div_euclid(1_000);
        i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
    }

    /// The time since the epoch; `None` before it. (`UNIX_EPOCH + d` is
    /// the `SystemTime`.)
    pub fn since_epoch(self) -> Option<Duration> {
        let nanos = u128::try_from(self.nanos).ok()?;
        let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
        Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
    }

    /// The instant in UTC as a `time::OffsetDateTime`; `None` outside the
    /// range that type holds.
    #[cfg(feature = "time")]
    #[cfg_attr(docsrs, doc(cfg(feature = "time")))]
    pub fn to_offset_date_time(self) -> Option<time::OffsetDateTime> {
        time::OffsetDateTime::from_unix_timestamp_nanos(self.nanos).ok()
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        d.deserialize_any(WireInt("a TIMESTAMP (an integer count since the epoch)"))
            .map(Timestamp::from_wire)
    }
}

/// An integer cell, from a JSON integer or a string of one (as BIGINT
/// arrives).
struct WireInt(&'static str);

impl Visitor<'_> for WireInt {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        v.trim()
            .parse()
            .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
    }
}

/// `deserialize_with` functions for the [`time`](https://docs.rs/time)
/// crate's types (feature `time`): TIMESTAMP into `OffsetDateTime` (UTC, by
/// the µs/ns rule of [`Timestamp`]), DATE (days since the epoch) into
/// `Date`, TIME (µs since midnight) into `Time`; each with an `_opt`
/// form for a nullable column.
///
/// ```
/// use kalam_proto::rows::time_columns;
///
/// #[derive(serde::Deserialize)]
/// struct Event {
///     #[serde(deserialize_with = "time_columns::timestamp")]
///     at: time::OffsetDateTime,
///     #[serde(deserialize_with = "time_columns::date_opt")]
///     day: Option<time::Date>,
/// }
/// let e: Event = serde_json::from_str(r#"{"at":1733402096123456,"day":null}"#).unwrap();
/// assert_eq!(e.at.unix_timestamp(), 1_733_402_096);
/// ```
#[cfg(feature = "time")]
#[cfg_attr(docsrs, doc(cfg(feature = "time")))]
pub mod time_columns {
    use serde::de::{Deserialize, Deserializer, Error};

    use super::{Timestamp, WireInt};

    /// Days from the Julian day number to the Unix epoch (1970-01-01).
    const EPOCH_JULIAN_DAY: i64 = 2_440_588;

    fn to_datetime<E: Error>(t: Timestamp) -> Result<time::OffsetDateTime, E> {
        t.to_offset_date_time()
            .ok_or_else(|| E::custom(format_args!("TIMESTAMP {} ns is out of range", t.unix_nanos())))
    }

    fn to_date<E: Error>(days: i64) -> Result<time::Date, E> {
        days.checked_add(EPOCH_JULIAN_DAY)
            .and_then(|jd| i32::try_from(jd).ok())
            .and_then(|jd| time::Date::from_julian_day(jd).ok())
            .ok_or_else(|| E::custom(format_args!("DATE {days} days is out of range")))
    }

    fn to_time<E: Error>(micros: i64) -> Result<time::Time, E> {
        let (secs, micro) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
        if !(0..86_400).contains(&secs) {
            return Err(E::custom(format_args!("TIME {micros} µs is not within a day")));
        }
        time::Time::from_hms_micro(
            (secs / 3600) as u8,
            (secs / 60 % 60) as u8,
            (secs % 60) as u8,
            micro as u32,
        )
        .map_err(E::custom)
    }

    /// A TIMESTAMP column.
    pub fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<time::OffsetDateTime, D::Error> {
        to_datetime(Timestamp::deserialize(d)?)
    }

    /// A nullable TIMESTAMP column.
    pub fn timestamp_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<time::OffsetDateTime>, D::Error> {
        Option::<Timestamp>::deserialize(d)?.map(to_datetime).transpose()
    }

    /// A DATE column.
    pub fn date<'de, D: Deserializer<'de>>(d: D) -> Result<time::Date, D::Error> {
        to_date(d.deserialize_any(WireInt("a DATE (days since the epoch)"))?)
    }

    /// A nullable DATE column.
    pub fn date_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<time::Date>, D::Error> {
        Option::<Days>::deserialize(d)?.map(|Days(n)| to_date(n)).transpose()
    }

    /// A TIME column.
    pub fn time_of_day<'de, D: Deserializer<'de>>(d: D) -> Result<time::Time, D::Error> {
        to_time(d.deserialize_any(WireInt("a TIME (µs since midnight)"))?)
    }

    /// A nullable TIME column.
    pub fn time_of_day_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<time::Time>, D::Error> {
        Option::<Days>::deserialize(d)?.map(|Days(n)| to_time(n)).transpose()
    }

    /// An integer cell (a day count or µs), for the `_opt` forms.
    struct Days(i64);

    impl<'de> Deserialize<'de> for Days {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Days, D::Error> {
            d.deserialize_any(WireInt("an integer")).map(Days)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_and_nanos_by_magnitude() {
        let us = Timestamp::from_wire(1_733_400_000_123_456);
        let ns = Timestamp::from_wire(1_733_400_000_123_456_789);
        assert_eq!(us.unix_micros(), ns.unix_micros());
        assert_eq!(ns.unix_nanos() - us.unix_nanos(), 789);
        assert_eq!(Timestamp::from_wire(-5).unix_nanos(), -5_000);
        assert_eq!(Timestamp::from_wire(-NANOS_FROM).unix_nanos(), -i128::from(NANOS_FROM));
        assert_eq!(Timestamp::from_wire(NANOS_FROM - 1).unix_micros(), NANOS_FROM - 1);
        assert_eq!(Timestamp::from_nanos(-1).unix_micros(), -1, "rounded down");
        assert_eq!(us.since_epoch().unwrap().as_micros(), 1_733_400_000_123_456);
        assert_eq!(ns.since_epoch().unwrap().subsec_nanos(), 123_456_789);
        assert_eq!(Timestamp::from_wire(-1).since_epoch(), None);
    }

    #[test]
    fn from_json_numbers_and_strings() {
        let t: Timestamp = serde_json::from_str("\"1733400000123456\"").unwrap();
        assert_eq!(t.unix_micros(), 1_733_400_000_123_456);
        for bad in ["1.5", "\"x\"", "true", "18446744073709551615"] {
            assert!(serde_json::from_str::<Timestamp>(bad).is_err(), "{bad}");
        }
    }

    #[cfg(feature = "time")]
    #[test]
    fn time_crate_types() {
        #[derive(serde::Deserialize)]
        struct Row {
            #[serde(deserialize_with = "time_columns::timestamp")]
            at: time::OffsetDateTime,
            #[serde(deserialize_with = "time_columns::timestamp_opt")]
            computed: Option<time::OffsetDateTime>,
            #[serde(deserialize_with = "time_columns::date")]
            day: time::Date,
            #[serde(deserialize_with = "time_columns::date_opt")]
            no_day: Option<time::Date>,
            #[serde(deserialize_with = "time_columns::time_of_day")]
            clock: time::Time,
        }
        let r: Row = serde_json::from_str(
            r#"{"at":1733400000123456,"computed":"1733400000123456789","day":20062,"no_day":null,"clock":45296000007}"#,
        )
        .unwrap();
        assert_eq!(r.at.unix_timestamp_nanos(), 1_733_400_000_123_456_000);
        assert_eq!(r.computed.unwrap().nanosecond(), 123_456_789);
        assert_eq!((r.day.year(), r.day.month() as u8, r.day.day()), (2024, 12, 5));
        assert!(r.no_day.is_none());
        assert_eq!(
            (
                r.clock.hour(),
                r.clock.minute(),
                r.clock.second(),
                r.clock.microsecond()
            ),
            (12, 34, 56, 7)
        );
        assert!(
            serde_json::from_str::<Row>(r#"{"at":0,"computed":null,"day":0,"no_day":null,"clock":86400000000}"#)
                .is_err()
        );
        // Out of every range: an error, never an overflow.
        let huge = r#"{"at":0,"computed":null,"day":9223372036854775807,"no_day":-9223372036854775808,"clock":0}"#;
        assert!(serde_json::from_str::<Row>(huge).is_err());
    }
}
