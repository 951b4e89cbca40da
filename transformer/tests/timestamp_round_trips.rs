//! Timestamps written by the book and read back: an instant written in a supported `format` (at
//! any offset, where the format carries one), as an epoch in either unit, or as ISO 8601 text, is
//! read as the same instant — to the format's precision — and never as another one. Text the
//! format cannot honour (an offset beyond ±24 hours) is refused.
//!
//! Seeds are fixed; failures are kept next to this file and replayed first.

use chrono::{DateTime, FixedOffset, Utc};
use eventpipe_transformer::spec::TimestampUnit;
use eventpipe_transformer::csv::timestamps::{TimestampFormat, from_epoch, from_iso};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};

/// Formats as users write them, and whether each carries an offset.
const FORMATS: &[(&str, bool)] = &[
    ("%Y-%m-%d %H:%M:%S", false),
    ("%Y-%m-%dT%H:%M:%S%.f%:z", true),
    ("%Y-%m-%d %H:%M:%S %z", true),
    ("%Y-%m-%dT%H:%M%z", true),
    ("%d/%m/%Y %H:%M", false),
    ("%Y-%m-%d %H", false),
    ("%Y-%m-%d", false),
    ("%Y%m%d%H%M%S", false),
    ("%s", false),
    ("%+", true),
    ("%Y-%j %H:%M:%S%.3f", false),
    ("%a, %d %b %Y %H:%M:%S %z", true),
    ("%Y-%m-%d %I:%M:%S %p", false),
    ("%m/%d/%Y %I:%M %p %:z", true),
];

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z in microseconds; a day's margin keeps
/// every offset's local time within the years too.
const DAY_MICROS: i64 = 86_400_000_000;
const FIRST: i64 = -62_135_596_800_000_000 + DAY_MICROS;
const LAST: i64 = 253_402_300_799_999_999 - DAY_MICROS;

fn config() -> Config {
    Config {
        cases: 2000,
        rng_seed: RngSeed::Fixed(0x7135_7a3b),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    }
}

fn instant(micros: i64, offset_minutes: i32) -> DateTime<FixedOffset> {
    let offset = FixedOffset::east_opt(offset_minutes * 60).unwrap();
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap().with_timezone(&offset)
}

proptest! {
    #![proptest_config(config())]

    /// Text a format wrote is read as the instant it was written from, to the format's
    /// precision: writing the instant read gives the same text back, and it lies at most a day
    /// (the coarsest format's unit) before the one written, never after it.
    #[test]
    fn formatted_text_reads_back_as_its_instant(
        format in 0..FORMATS.len(),
        micros in FIRST..LAST,
        offset_minutes in -(24 * 60 - 1)..(24 * 60),
    ) {
        let (text_format, has_offset) = FORMATS[format];
        let offset_minutes = if has_offset { offset_minutes } else { 0 };
        let written = instant(micros, offset_minutes).format(text_format).to_string();
        let parsed = TimestampFormat::parse(text_format).unwrap();
        let read = match parsed.micros(&written) {
            Ok(read) => read,
            // chrono writes instants before 1970 with %s but reads no sign: refused, not misread.
            Err(_) if text_format == "%s" && written.starts_with('-') => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("{written:?} in {text_format:?}: {e}"))),
        };
        prop_assert_eq!(instant(read, offset_minutes).format(text_format).to_string(), written.clone());
        prop_assert!(read <= micros && micros - read < DAY_MICROS, "{} read as {} from {:?}", micros, read, written);
    }

    /// An offset beyond ±24 hours is refused, never replaced by UTC or wrapped around.
    #[test]
    fn offsets_out_of_range_are_refused(micros in FIRST..LAST, hours in 24i32..100, minutes in 0i32..60, negative in any::<bool>()) {
        let utc = instant(micros, 0).format("%Y-%m-%d %H:%M:%S").to_string();
        let written = format!("{utc} {}{hours:02}{minutes:02}", if negative { '-' } else { '+' });
        prop_assert!(TimestampFormat::parse("%Y-%m-%d %H:%M:%S %z").unwrap().micros(&written).is_err(), "{:?} was read", written);
    }

    /// Epoch numbers are read exactly in either unit, and refused outside the years 1 to 9999
    /// (an epoch in another unit than declared is usually out of range).
    #[test]
    fn epochs_read_back_exactly_or_are_refused(seconds in any::<i64>(), millis in any::<i64>()) {
        let in_range = |micros: Option<i64>| micros.is_some_and(|m| (FIRST - DAY_MICROS..=LAST + DAY_MICROS).contains(&m));
        match from_epoch(seconds, TimestampUnit::Seconds) {
            Ok(read) => prop_assert_eq!(Some(read), seconds.checked_mul(1_000_000)),
            Err(_) => prop_assert!(!in_range(seconds.checked_mul(1_000_000))),
        }
        match from_epoch(millis, TimestampUnit::Millis) {
            Ok(read) => prop_assert_eq!(Some(read), millis.checked_mul(1_000)),
            Err(_) => prop_assert!(!in_range(millis.checked_mul(1_000))),
        }
    }

    /// ISO 8601 / RFC 3339 text at any offset is read as its instant, to the microsecond.
    #[test]
    fn iso_text_reads_back_exactly(micros in FIRST..LAST, offset_minutes in -(24 * 60 - 1)..(24 * 60), z in any::<bool>()) {
        let written = instant(micros, offset_minutes).to_rfc3339_opts(chrono::SecondsFormat::Micros, z && offset_minutes == 0);
        prop_assert_eq!(from_iso(&written), Ok(micros), "{}", written);
    }
}
