//! How timestamp text becomes an instant. One parser for every path that reads a value: the CSV
//! decoder calls it for each value, whether the row ends up written or rejected.
//!
//! A value is converted exactly as its column says, or it is refused:
//! - epoch numbers (`unit`) are scaled with checked arithmetic, so an epoch in nanoseconds under
//!   `unit: seconds` is a bad value, not a timestamp in the year −213,373;
//! - formatted text (`format`, chrono's `strftime` syntax) is read field by field: the offset is
//!   the one the text gives (`%z`, `%:z`, `%#z`, `%+`), UTC when the format has none; a format
//!   without seconds, minutes or a time of day means their start (`%Y-%m-%d %H` is the hour's
//!   first second); an offset beyond ±24 hours or a field out of its range is refused, never
//!   replaced;
//! - ISO 8601 / RFC 3339 text (neither `unit` nor `format`) as Arrow reads it.
//!
//! Every instant lies between 0001-01-01 and 9999-12-31 (UTC). A format that cannot be honoured —
//! a zone name (`%Z`) without an offset, or one whose own output cannot be read back — is refused
//! when the pipeline is validated.

use std::fmt::Write;

use chrono::format::{Fixed, Item, Parsed, StrftimeItems};
use chrono::{DateTime, FixedOffset};
use datafusion::arrow::array::{Int64Array, TimestampMicrosecondArray};
use datafusion::arrow::compute::kernels::aggregate::{max, min};
use datafusion::arrow::compute::kernels::cast_utils::string_to_datetime;
use datafusion::arrow::compute::kernels::numeric::mul;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};

use crate::spec::TimestampUnit;

/// The Arrow type every timestamp column ends up as: microseconds, UTC. Parquet stores it as
/// `TIMESTAMP(isAdjustedToUTC=true, MICROS)`, which Athena, Spark, DuckDB and pyarrow all read.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Microseconds of 0001-01-01T00:00:00Z and of 9999-12-31T23:59:59.999999Z.
const RANGE_MICROS: (i64, i64) = (-62_135_596_800_000_000, 253_402_300_799_999_999);

/// A checked timestamp format, parsed once.
#[derive(Clone, Debug, PartialEq)]
pub struct TimestampFormat {
    text: String,
    items: Vec<Item<'static>>,
}

impl TimestampFormat {
    /// Checks a `strftime` format: its specifiers are known, a zone name comes with an offset,
    /// and the format reads back what it writes (so it names a whole date and, where it has a
    /// clock, an unambiguous one: `%I` needs `%p`).
    pub fn parse(format: &str) -> Result<Self, String> {
        let items = StrftimeItems::new(format)
            .parse_to_owned()
            .map_err(|e| format!("format {format:?} is not a chrono strftime format: {e}"))?;
        let has = |wanted: &[Fixed]| items.iter().any(|item| matches!(item, Item::Fixed(fixed) if wanted.contains(fixed)));
        let offsets = [
            Fixed::TimezoneOffset,
            Fixed::TimezoneOffsetColon,
            Fixed::TimezoneOffsetDoubleColon,
            Fixed::TimezoneOffsetTripleColon,
            Fixed::TimezoneOffsetZ,
            Fixed::TimezoneOffsetColonZ,
            Fixed::RFC3339,
            Fixed::RFC2822,
        ];
        if has(&[Fixed::TimezoneName]) && !has(&offsets) {
            return Err(format!(
                "format {format:?} reads a zone name (%Z) but no offset: names such as PST or CET are not converted to \
                 offsets, so the time would be misread; write the offset with %z or %:z"
            ));
        }
        let checked = Self { text: format.to_string(), items };
        // An instant with every field distinct and not at its start, so that a missing or
        // misplaced field shows.
        let sample: DateTime<FixedOffset> =
            DateTime::parse_from_rfc3339("2001-02-03T16:05:06.789012+00:00").expect("a valid RFC 3339 time");
        let mut written = String::new();
        if write!(written, "{}", sample.format_with_items(checked.items.iter())).is_err() {
            return Err(format!("format {format:?} has a specifier that can only read, not write (such as %#z); use %z or %:z"));
        }
        match checked.micros(&written) {
            Ok(read) if checked.write(read) == written => Ok(checked),
            Ok(read) => Err(format!(
                "format {format:?} does not read back what it writes: {written:?} is read as {}",
                checked.write(read)
            )),
            Err(reason) => Err(format!("format {format:?} cannot read back what it writes ({written:?}): {reason}")),
        }
    }

    /// The format as written in the spec.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Microseconds since the epoch of `text`, or why it is refused.
    pub fn micros(&self, text: &str) -> Result<i64, String> {
        let mut parsed = Parsed::new();
        chrono::format::parse(&mut parsed, text, self.items.iter()).map_err(|e| self.mismatch(text, &e.to_string()))?;
        if parsed.timestamp().is_none() {
            // A format as precise as its last field: the fields after it are at their start.
            if parsed.hour_div_12().is_none() && parsed.hour_mod_12().is_none() {
                parsed.set_hour(0).map_err(|e| self.mismatch(text, &e.to_string()))?;
            }
            if parsed.minute().is_none() {
                parsed.set_minute(0).map_err(|e| self.mismatch(text, &e.to_string()))?;
            }
        }
        let offset_seconds = parsed.offset().unwrap_or(0);
        let offset = FixedOffset::east_opt(offset_seconds)
            .ok_or_else(|| format!("{text:?} has the offset {offset_seconds} s, beyond ±24 hours"))?;
        let local = parsed.to_naive_datetime_with_offset(offset_seconds).map_err(|e| self.mismatch(text, &e.to_string()))?;
        let instant = local.and_local_timezone(offset).single().ok_or_else(|| self.mismatch(text, "no such local time"))?;
        in_range(instant.timestamp_micros(), text)
    }

    /// `micros` written in this format, at UTC.
    fn write(&self, micros: i64) -> String {
        let instant = DateTime::from_timestamp_micros(micros).expect("checked range").fixed_offset();
        instant.format_with_items(self.items.iter()).to_string()
    }

    fn mismatch(&self, text: &str, why: &str) -> String {
        format!("{text:?} does not match the format {:?}: {why}", self.text)
    }
}

/// Microseconds since the epoch of an epoch number in `unit`.
pub fn from_epoch(value: i64, unit: TimestampUnit) -> Result<i64, String> {
    value
        .checked_mul(micros_per_unit(unit))
        .filter(|micros| (RANGE_MICROS.0..=RANGE_MICROS.1).contains(micros))
        .ok_or_else(|| format!("{value} is outside the years 1 to 9999 as an epoch in {}", unit_name(unit)))
}

/// Microseconds since the epoch of ISO 8601 / RFC 3339 text, as Arrow's CSV reader reads it
/// (a missing offset means UTC).
pub fn from_iso(text: &str) -> Result<i64, String> {
    let instant = string_to_datetime(&chrono::Utc, text).map_err(|_| format!("{text:?} is not an ISO 8601 timestamp"))?;
    in_range(instant.timestamp_micros(), text)
}

fn in_range(micros: i64, text: &str) -> Result<i64, String> {
    if (RANGE_MICROS.0..=RANGE_MICROS.1).contains(&micros) {
        Ok(micros)
    } else {
        Err(format!("{text:?} is outside the years 1 to 9999"))
    }
}

/// [`from_epoch`] over a whole column, vectorised: a checked multiplication and a range check on
/// the column's minimum and maximum. `None` when some value is refused; [`from_epoch`] then
/// says which and why.
pub fn epochs(values: &Int64Array, unit: TimestampUnit) -> Option<TimestampMicrosecondArray> {
    let micros = mul(values, &Int64Array::new_scalar(micros_per_unit(unit))).ok()?;
    let micros = micros.as_primitive::<Int64Type>();
    let in_range = min(micros).is_none_or(|low| low >= RANGE_MICROS.0) && max(micros).is_none_or(|high| high <= RANGE_MICROS.1);
    in_range.then(|| micros.clone().reinterpret_cast::<TimestampMicrosecondType>())
}

fn micros_per_unit(unit: TimestampUnit) -> i64 {
    match unit {
        TimestampUnit::Seconds => 1_000_000,
        TimestampUnit::Millis => 1_000,
    }
}

fn unit_name(unit: TimestampUnit) -> &'static str {
    match unit {
        TimestampUnit::Seconds => "seconds",
        TimestampUnit::Millis => "milliseconds",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(text: &str) -> TimestampFormat {
        TimestampFormat::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn epochs_scale_with_checked_arithmetic_and_stay_in_range() {
        assert_eq!(from_epoch(1_795_478_400, TimestampUnit::Seconds), Ok(1_795_478_400_000_000));
        assert_eq!(from_epoch(1_795_478_400_123, TimestampUnit::Millis), Ok(1_795_478_400_123_000));
        let nanos_as_seconds = from_epoch(1_795_478_400_000_000_000, TimestampUnit::Seconds).unwrap_err();
        assert!(nanos_as_seconds.contains("outside the years 1 to 9999"), "{nanos_as_seconds}");
        assert!(from_epoch(1_795_478_400_000, TimestampUnit::Seconds).is_err(), "millis under seconds is the year 58,000");
        assert_eq!(from_epoch(-62_135_596_800, TimestampUnit::Seconds), Ok(RANGE_MICROS.0));
    }

    #[test]
    fn the_vectorised_column_conversion_agrees_with_the_single_value_one() {
        let good = Int64Array::from(vec![Some(1_795_478_400), None, Some(-62_135_596_800), Some(0)]);
        let converted = epochs(&good, TimestampUnit::Seconds).unwrap();
        let one_by_one: Vec<Option<i64>> = good.iter().map(|v| v.map(|v| from_epoch(v, TimestampUnit::Seconds).unwrap())).collect();
        assert_eq!(converted.iter().collect::<Vec<_>>(), one_by_one);
        assert!(epochs(&Int64Array::from(vec![Some(1), Some(1_795_478_400_000)]), TimestampUnit::Seconds).is_none());
        assert!(epochs(&Int64Array::from(vec![i64::MAX]), TimestampUnit::Millis).is_none(), "overflow");
    }

    #[test]
    fn text_follows_the_format_with_or_without_offset_or_time() {
        assert_eq!(format("%Y-%m-%d %H:%M:%S").micros("2026-11-24 03:15:00"), Ok(1_795_490_100_000_000));
        assert_eq!(format("%Y-%m-%d %H:%M:%S %z").micros("2026-11-24 04:15:00 +0100"), Ok(1_795_490_100_000_000));
        assert_eq!(format("%Y-%m-%d").micros("2026-11-24"), Ok(1_795_478_400_000_000));
        assert!(format("%Y-%m-%d").micros("24/11/2026").unwrap_err().contains("does not match the format"));
        assert!(format("%Y-%m-%d %H:%M:%S").micros("2026-11-24T03:15:00").is_err());
    }

    /// Each way a value used to come out shifted without an error.
    #[test]
    fn no_value_is_read_as_another_instant() {
        // An hour without minutes is that hour, not midnight.
        assert_eq!(format("%Y-%m-%d %H").micros("2026-11-24 03"), Ok(1_795_489_200_000_000));
        // An offset out of range is refused, not read as UTC.
        let far = format("%Y-%m-%d %H:%M %z").micros("2026-11-24 03:15 +9900").unwrap_err();
        assert!(far.contains("beyond ±24 hours") || far.contains("does not match"), "{far}");
        // A zone name without an offset cannot be honoured: refused when the pipeline is checked.
        let named = TimestampFormat::parse("%Y-%m-%d %H:%M:%S %Z").unwrap_err();
        assert!(named.contains("%Z") && named.contains("%z"), "{named}");
        // With an offset, the name is only read past.
        assert_eq!(format("%Y-%m-%d %H:%M %z %Z").micros("2026-11-24 04:15 +0100 CET"), Ok(1_795_490_100_000_000));
    }

    #[test]
    fn formats_that_cannot_read_back_are_refused() {
        for (bad, why) in [("%m/%d", "cannot read back"), ("%Y-%m-%d %I:%M", "cannot read back"), ("%Q", "not a chrono strftime"), ("%Y-%m-%d %#z", "only read")] {
            let message = TimestampFormat::parse(bad).unwrap_err();
            assert!(message.contains(why), "{bad}: {message}");
        }
        for good in ["%s", "%+", "%d.%m.%Y %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%:z", "%Y%m%d", "%Y-%j"] {
            format(good);
        }
    }

    #[test]
    fn iso_text_is_range_checked() {
        assert_eq!(from_iso("2026-11-24T03:15:00Z"), Ok(1_795_490_100_000_000));
        assert_eq!(from_iso("2026-11-24T04:15:00+01:00"), Ok(1_795_490_100_000_000));
        assert!(from_iso("tomorrow").is_err());
        assert!(from_iso("0000-06-01T00:00:00Z").unwrap_err().contains("outside the years 1 to 9999"));
    }
}
