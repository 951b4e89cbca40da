//! One parser for timestamp values, used by both paths: the fast path calls it through two scalar
//! functions in the typed `events` projection, the row-by-row path to judge a single value. A
//! value is accepted by one exactly when it is accepted by the other.
//!
//! Accepted: instants from 0001-01-01 to 9999-12-31 (UTC). Epoch numbers are scaled with checked
//! arithmetic, so an epoch in nanoseconds under `unit: seconds` is a bad value, not a timestamp in
//! the year −213,373; formatted text follows chrono's `strftime` syntax, with an offset (`%z`,
//! `%:z`) or without one (then UTC), and a format without a time of day means midnight UTC.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, TimestampMicrosecondArray};
use datafusion::arrow::compute::kernels::aggregate::{max, min};
use datafusion::arrow::compute::kernels::numeric::mul;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimestampMicrosecondType};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result as DataFusionResult;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, cast,
};

use crate::schema::timestamp_type;
use crate::spec::TimestampUnit;

/// Microseconds of 0001-01-01T00:00:00Z and of 9999-12-31T23:59:59.999999Z.
const RANGE_MICROS: (i64, i64) = (-62_135_596_800_000_000, 253_402_300_799_999_999);

/// Microseconds since the epoch of an epoch number in `unit`.
pub fn from_epoch(value: i64, unit: TimestampUnit) -> Result<i64, String> {
    value
        .checked_mul(micros_per_unit(unit))
        .filter(|micros| (RANGE_MICROS.0..=RANGE_MICROS.1).contains(micros))
        .ok_or_else(|| format!("{value} is outside the years 1 to 9999 as an epoch in {}", unit_name(unit)))
}

/// Microseconds since the epoch of `text` written in `format`.
pub fn from_text(text: &str, format: &str) -> Result<i64, String> {
    let micros = DateTime::parse_from_str(text, format)
        .map(|with_offset| with_offset.timestamp_micros())
        .or_else(|_| NaiveDateTime::parse_from_str(text, format).map(|naive| naive.and_utc().timestamp_micros()))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, format).map(|date| date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_micros())
        })
        .map_err(|error| format!("{text:?} does not match the format {format:?}: {error}"))?;
    if (RANGE_MICROS.0..=RANGE_MICROS.1).contains(&micros) {
        Ok(micros)
    } else {
        Err(format!("{text:?} is outside the years 1 to 9999"))
    }
}

/// [`from_epoch`] over a whole column, vectorised: a checked multiplication and a range check on
/// the column's minimum and maximum. Only a column with a refused value goes value by value, to
/// report the first one as [`from_epoch`] does.
fn epochs(values: &Int64Array, unit: TimestampUnit) -> Result<TimestampMicrosecondArray, String> {
    let scaled = mul(values, &Int64Array::new_scalar(micros_per_unit(unit))).ok().map(|micros| micros.as_primitive::<Int64Type>().clone());
    let in_range = |micros: &Int64Array| {
        min(micros).is_none_or(|low| low >= RANGE_MICROS.0) && max(micros).is_none_or(|high| high <= RANGE_MICROS.1)
    };
    match scaled {
        Some(micros) if in_range(&micros) => Ok(micros.reinterpret_cast::<TimestampMicrosecondType>()),
        _ => values.iter().map(|value| value.map(|v| from_epoch(v, unit)).transpose()).collect(),
    }
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

/// The typed timestamp of a raw epoch column (`Int64`) in `unit`.
pub fn epoch_expr(raw: Expr, unit: TimestampUnit, column: &str) -> Expr {
    let function = Conversion { kind: Kind::Epoch(unit), column: column.to_string(), signature: signature(DataType::Int64) };
    ScalarUDF::new_from_impl(function).call(vec![raw])
}

/// The typed timestamp of a raw text column in `format`.
pub fn text_expr(raw: Expr, format: &str, column: &str) -> Expr {
    let function = Conversion {
        kind: Kind::Text(format.to_string()),
        column: column.to_string(),
        signature: signature(DataType::Utf8),
    };
    ScalarUDF::new_from_impl(function).call(vec![cast(raw, DataType::Utf8)])
}

fn signature(input: DataType) -> Signature {
    Signature::exact(vec![input], Volatility::Immutable)
}

/// Which parser a conversion applies.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Kind {
    Epoch(TimestampUnit),
    Text(String),
}

/// A raw column to UTC microseconds, failing on the first value the parser refuses (the run then
/// checks the input row by row, with the same parser, to name the bad rows).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Conversion {
    kind: Kind,
    column: String,
    signature: Signature,
}

impl ScalarUDFImpl for Conversion {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Epoch(_) => "eventpipe_epoch_timestamp",
            Kind::Text(_) => "eventpipe_text_timestamp",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DataFusionResult<DataType> {
        Ok(timestamp_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DataFusionResult<ColumnarValue> {
        let [input] = args.args.as_slice() else {
            return exec_err!("{} takes one argument", self.name());
        };
        let array = input.to_array(args.number_rows)?;
        let converted: Result<TimestampMicrosecondArray, String> = match &self.kind {
            Kind::Epoch(unit) => epochs(array.as_primitive::<Int64Type>(), *unit),
            Kind::Text(format) => array.as_string::<i32>().iter().map(|text| text.map(|t| from_text(t, format)).transpose()).collect(),
        };
        match converted {
            Ok(micros) => {
                let typed: ArrayRef = Arc::new(micros.with_timezone("UTC"));
                Ok(match input {
                    ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&typed, 0)?),
                    ColumnarValue::Array(_) => ColumnarValue::Array(typed),
                })
            }
            Err(reason) => exec_err!("column {:?}: {reason}", self.column),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let bad = Int64Array::from(vec![Some(1), Some(1_795_478_400_000), Some(i64::MAX)]);
        assert_eq!(epochs(&bad, TimestampUnit::Seconds).unwrap_err(), from_epoch(1_795_478_400_000, TimestampUnit::Seconds).unwrap_err());
        assert!(epochs(&Int64Array::from(vec![i64::MAX]), TimestampUnit::Millis).is_err(), "overflow");
    }

    #[test]
    fn text_follows_the_format_with_or_without_offset_or_time() {
        assert_eq!(from_text("2026-11-24 03:15:00", "%Y-%m-%d %H:%M:%S"), Ok(1_795_490_100_000_000));
        assert_eq!(from_text("2026-11-24 04:15:00 +0100", "%Y-%m-%d %H:%M:%S %z"), Ok(1_795_490_100_000_000));
        assert_eq!(from_text("2026-11-24", "%Y-%m-%d"), Ok(1_795_478_400_000_000));
        assert!(from_text("24/11/2026", "%Y-%m-%d").unwrap_err().contains("does not match the format"));
        assert!(from_text("2026-11-24T03:15:00", "%Y-%m-%d %H:%M:%S").is_err());
    }
}
