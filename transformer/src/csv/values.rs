//! The declared columns as rules for their values: each column's Arrow field, and how the text of
//! one of its values becomes a typed value — or why it cannot. The CSV decoder applies these rules
//! to every declared column of every row, whether the SQL reads the column or not, so that
//! whether a row is bad never depends on the query or on the other rows.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::spec::{Column, ColumnType, TimestampUnit};
use crate::csv::timestamps::{self, TimestampFormat};

/// One declared column: its field in the `events` table and the rule for its values.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnRule {
    /// Name, Arrow type and nullability. An empty value is null, and refused in a non-nullable
    /// column.
    pub field: Field,
    /// How a value's text is read.
    pub kind: ValueKind,
}

/// How a value's text is read.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueKind {
    /// Any UTF-8 text.
    Text,
    /// A decimal 64-bit integer.
    Int64,
    /// A floating point number, as Arrow reads it.
    Float64,
    /// `true` or `false` in any letter case.
    Bool,
    /// `YYYY-MM-DD`.
    Date,
    /// An instant: ISO 8601 text, an epoch number or text in a format.
    Timestamp(TimestampText),
}

/// How a timestamp column writes its instants.
#[derive(Clone, Debug, PartialEq)]
pub enum TimestampText {
    /// ISO 8601 / RFC 3339 text.
    Iso,
    /// An integer count of `unit`s since the Unix epoch.
    Epoch(TimestampUnit),
    /// Text in a `strftime` format.
    Format(TimestampFormat),
}

impl ColumnRule {
    /// The rule of a declared column; a timestamp format that cannot be honoured is refused,
    /// naming the column.
    pub fn of(column: &Column) -> Result<Self> {
        let (data_type, kind) = match column.data_type {
            ColumnType::String => (DataType::Utf8, ValueKind::Text),
            ColumnType::Int64 => (DataType::Int64, ValueKind::Int64),
            ColumnType::Float64 => (DataType::Float64, ValueKind::Float64),
            ColumnType::Bool => (DataType::Boolean, ValueKind::Bool),
            ColumnType::Date => (DataType::Date32, ValueKind::Date),
            ColumnType::Timestamp => {
                let text = match (column.unit, &column.format) {
                    (Some(unit), _) => TimestampText::Epoch(unit),
                    (None, Some(format)) => TimestampText::Format(
                        TimestampFormat::parse(format)
                            .map_err(|e| Error::Config(format!("source.schema column {:?}: {e}", column.name)))?,
                    ),
                    (None, None) => TimestampText::Iso,
                };
                (crate::csv::timestamps::timestamp_type(), ValueKind::Timestamp(text))
            }
        };
        Ok(Self { field: Field::new(&column.name, data_type, column.nullable), kind })
    }

    /// A nullable text column: how columns are read when none are declared.
    pub fn text(name: &str) -> Self {
        Self { field: Field::new(name, DataType::Utf8, true), kind: ValueKind::Text }
    }

    /// The column's name.
    pub fn name(&self) -> &str {
        self.field.name()
    }
}

/// The rules of the declared columns, in order.
pub fn rules(columns: &[Column]) -> Result<Arc<[ColumnRule]>> {
    columns.iter().map(ColumnRule::of).collect()
}

/// The schema of the columns' values.
pub fn schema(rules: &[ColumnRule]) -> SchemaRef {
    Arc::new(Schema::new(rules.iter().map(|rule| rule.field.clone()).collect::<Vec<_>>()))
}

/// A 64-bit integer, or why it is refused.
#[inline]
pub fn int64(text: &str) -> std::result::Result<i64, String> {
    parse_int64(text).ok_or_else(|| not_valid(text, "int64"))
}

/// A date as days since the Unix epoch, or why it is refused: exactly `YYYY-MM-DD`, a day
/// that exists, in the years 1 to 9999.
#[inline]
pub fn date(text: &str) -> std::result::Result<i32, String> {
    let refused = || not_valid(text, "date (YYYY-MM-DD)");
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        bytes[range].iter().try_fold(0u32, |value, &byte| byte.is_ascii_digit().then(|| value * 10 + u32::from(byte - b'0')))
    };
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return Err(refused());
    }
    let (year, month, day) = (digits(0..4).ok_or_else(refused)?, digits(5..7).ok_or_else(refused)?, digits(8..10).ok_or_else(refused)?);
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day).filter(|_| year >= 1).ok_or_else(refused)?;
    Ok(date.signed_duration_since(chrono::NaiveDate::default()).num_days() as i32)
}

/// The number of an epoch timestamp, before it is scaled and range-checked
/// ([`timestamps::from_epoch`]).
#[inline]
pub fn epoch_number(text: &str, unit: TimestampUnit) -> std::result::Result<i64, String> {
    parse_int64(text).ok_or_else(|| not_valid(text, &format!("epoch in {unit:?}").to_lowercase()))
}

/// An instant in microseconds since the Unix epoch, or why it is refused.
#[inline]
pub fn instant(text_kind: &TimestampText, text: &str) -> std::result::Result<i64, String> {
    match text_kind {
        TimestampText::Iso => timestamps::from_iso(text),
        TimestampText::Epoch(unit) => timestamps::from_epoch(epoch_number(text, *unit)?, *unit),
        TimestampText::Format(format) => format.micros(text),
    }
}

/// A floating point value, or why it is refused: decimal or scientific notation with an
/// optional sign (`-1.5`, `2e10`, `.5`), `inf`, `infinity` or `NaN` in any case; no spaces.
#[inline]
pub fn float64(text: &str) -> std::result::Result<f64, String> {
    text.parse::<f64>().map_err(|_| not_valid(text, "float64"))
}

/// A boolean: `true` or `false` in any letter case.
#[inline]
pub fn boolean(text: &str) -> std::result::Result<bool, String> {
    if text.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if text.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(not_valid(text, "bool (true or false)"))
    }
}

fn not_valid(text: &str, kind: &str) -> String {
    format!("{text:?} is not a valid {kind}")
}

/// A decimal integer with an optional sign (`-12`, `+7`, `007`), in range; no spaces. Up to 18
/// plain digits, which cannot overflow, take a shortcut.
#[inline]
pub fn parse_int64(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if (1..=18).contains(&bytes.len()) {
        let (value, all_digits) = bytes.iter().fold((0i64, true), |(value, all_digits), &byte| {
            let digit = byte.wrapping_sub(b'0');
            (value.wrapping_mul(10).wrapping_add(i64::from(digit)), all_digits && digit < 10)
        });
        if all_digits {
            return Some(value);
        }
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_dates_follow_their_grammar_exactly() {
        let integers = [
            ("0", Some(0)), ("007", Some(7)), ("123456789012345678", Some(123_456_789_012_345_678)), ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775807", Some(i64::MAX)), ("+1", Some(1)), ("9223372036854775808", None), (" 1", None), ("1 ", None),
            ("1a", None), ("", None), ("-", None), ("１", None), ("1.0", None), ("1e3", None),
        ];
        for (text, value) in integers {
            assert_eq!(parse_int64(text), value, "{text:?}");
        }
        for (text, valid) in [("1.5", true), ("-2e3", true), (".5", true), ("NaN", true), ("inf", true), (" 1.5", false), ("1,5", false), ("x", false)] {
            assert_eq!(float64(text).is_ok(), valid, "{text:?}");
        }
        assert_eq!(date("0001-01-01"), Ok(-719_162));
        assert_eq!(date("9999-12-31"), Ok(2_932_896));
        for refused in ["0000-01-01", "2026-1-05", "2026-02-30", " 2026-01-05", "2026-01-05T00:00", "20260105", "+2026-01-05"] {
            assert!(date(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn each_kind_names_what_it_expected() {
        assert_eq!(int64("12"), Ok(12));
        assert_eq!(int64("x").unwrap_err(), "\"x\" is not a valid int64");
        assert_eq!(date("1970-01-02"), Ok(1));
        assert!(date("2026-13-01").unwrap_err().contains("date"));
        let seconds = TimestampText::Epoch(TimestampUnit::Seconds);
        assert_eq!(instant(&seconds, "2"), Ok(2_000_000));
        assert!(instant(&seconds, "1795478400000000000").unwrap_err().contains("outside the years"));
        assert!(instant(&seconds, "2.5").unwrap_err().contains("epoch in seconds"));
        assert_eq!(boolean("TRUE"), Ok(true));
        assert!(boolean("yes").is_err());
        assert!(float64("1e3").is_ok() && float64("one").is_err());
    }

    #[test]
    fn a_zone_name_format_is_refused_naming_the_column() {
        let column = Column {
            name: "at".into(),
            data_type: ColumnType::Timestamp,
            nullable: true,
            unit: None,
            format: Some("%Y-%m-%d %H:%M:%S %Z".into()),
        };
        let message = ColumnRule::of(&column).unwrap_err().to_string();
        assert!(message.contains("column \"at\"") && message.contains("%Z"), "{message}");
    }
}
