//! Partition layouts: the path template of a source partition (`year={year}/month={month}/day={day}/`)
//! and the partition key it names. Pure functions, no I/O.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// The date (and hour, for hourly layouts) one partition covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionKey {
    /// Four-digit year.
    pub year: u16,
    /// Month, 1–12.
    pub month: u8,
    /// Day of month, 1–31.
    pub day: u8,
    /// Hour, 0–23, for hourly layouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<u8>,
}

impl PartitionKey {
    /// The Hive-style path of this partition in the sink, with a trailing slash:
    /// `year=2026/month=11/day=24/`.
    pub fn sink_path(&self) -> String {
        format!("{self}/")
    }

    /// The partition values as (column name, value) pairs, in path order.
    pub fn columns(&self) -> Vec<(&'static str, i32)> {
        let mut columns = vec![
            ("year", i32::from(self.year)),
            ("month", i32::from(self.month)),
            ("day", i32::from(self.day)),
        ];
        if let Some(hour) = self.hour {
            columns.push(("hour", i32::from(hour)));
        }
        columns
    }

    /// Midnight (or the hour) at the start of this partition, UTC.
    pub fn start(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let date = chrono::NaiveDate::from_ymd_opt(self.year.into(), self.month.into(), self.day.into())?;
        Some(date.and_hms_opt(self.hour.unwrap_or(0).into(), 0, 0)?.and_utc())
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "year={:04}/month={:02}/day={:02}", self.year, self.month, self.day)?;
        if let Some(hour) = self.hour {
            write!(f, "/hour={hour:02}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for PartitionKey {
    type Err = String;

    /// Reads a key as it displays: `year=2026/month=11/day=24[/hour=05]`.
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("{text:?} is not a partition (year=YYYY/month=MM/day=DD[/hour=HH])");
        let mut values = text.trim_end_matches('/').split('/').map(|part| part.split_once('='));
        let mut next = |name: &str| match values.next() {
            Some(Some((key, value))) if key == name => value.parse::<u16>().map_err(|_| invalid()),
            _ => Err(invalid()),
        };
        let (year, month, day) = (next("year")?, next("month")?, next("day")?);
        let hour = next("hour").ok();
        let narrow = |value: u16| u8::try_from(value).map_err(|_| invalid());
        let key = Self { year, month: narrow(month)?, day: narrow(day)?, hour: hour.map(narrow).transpose()? };
        if values.next().is_some() || key.start().is_none() || key.to_string() != text.trim_end_matches('/') {
            return Err(invalid());
        }
        Ok(key)
    }
}

/// Why a layout template is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// A required placeholder is absent.
    #[error("layout {layout:?} lacks the placeholder {{{placeholder}}}")]
    MissingPlaceholder {
        /// The template as written.
        layout: String,
        /// The missing placeholder's name.
        placeholder: &'static str,
    },
    /// A `{...}` that is not one of year, month, day, hour, or one that appears twice.
    #[error("layout {layout:?} has an unknown or repeated placeholder {{{placeholder}}}; use {{year}}, {{month}}, {{day}} and optionally {{hour}}, once each")]
    BadPlaceholder {
        /// The template as written.
        layout: String,
        /// The offending placeholder's name.
        placeholder: String,
    },
    /// An unbalanced brace.
    #[error("layout {layout:?} has an unbalanced brace")]
    UnbalancedBrace {
        /// The template as written.
        layout: String,
    },
}

/// A parsed partition layout.
#[derive(Clone, Debug)]
pub struct Layout {
    template: String,
    segments: Vec<Segment>,
    pattern: Regex,
    hourly: bool,
}

/// A piece of a layout template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Text that every partition's path has.
    Literal(String),
    /// A date part. Month, day and hour are written with two digits or, where no other
    /// placeholder follows at once, also without the leading zero (`month=1`, as Spark writes).
    Placeholder { name: &'static str, unpadded_too: bool },
}

const PLACEHOLDERS: [&str; 4] = ["year", "month", "day", "hour"];

impl Layout {
    /// Parses a template such as `year={year}/month={month}/day={day}/`. A missing trailing slash
    /// is added: a partition is always a directory.
    pub fn parse(template: &str) -> Result<Self, LayoutError> {
        let mut template = template.trim_start_matches('/').to_string();
        if !template.ends_with('/') {
            template.push('/');
        }
        let mut segments = Vec::new();
        let mut rest = template.as_str();
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(LayoutError::UnbalancedBrace { layout: template.clone() });
            }
            if open > 0 {
                segments.push(Segment::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .map(|i| open + i)
                .ok_or_else(|| LayoutError::UnbalancedBrace { layout: template.clone() })?;
            let name = &rest[open + 1..close];
            let seen = |known: &&str| segments.iter().any(|s| matches!(s, Segment::Placeholder { name, .. } if name == known));
            let known = PLACEHOLDERS
                .iter()
                .find(|known| **known == name && !seen(known))
                .ok_or_else(|| LayoutError::BadPlaceholder { layout: template.clone(), placeholder: name.to_string() })?;
            rest = &rest[close + 1..];
            // Without text after it, a short value could not be told from the next one's digits.
            let unpadded_too = *known != "year" && !rest.starts_with('{');
            segments.push(Segment::Placeholder { name: known, unpadded_too });
        }
        segments.push(Segment::Literal(rest.to_string()));
        for required in ["year", "month", "day"] {
            if !segments.iter().any(|s| matches!(s, Segment::Placeholder { name, .. } if *name == required)) {
                return Err(LayoutError::MissingPlaceholder { layout: template, placeholder: required });
            }
        }
        let mut pattern = String::from("^");
        for segment in &segments {
            match segment {
                Segment::Literal(text) => pattern.push_str(&regex::escape(text)),
                // ASCII digits: Unicode's `\d` makes each layout's regex ten times larger (280 KB),
                // and the operator keeps one per pipeline.
                Segment::Placeholder { name: "year", .. } => pattern.push_str(r"(?P<year>[0-9]{4})"),
                Segment::Placeholder { name, unpadded_too: true } => pattern.push_str(&format!(r"(?P<{name}>[0-9]{{1,2}})")),
                Segment::Placeholder { name, unpadded_too: false } => pattern.push_str(&format!(r"(?P<{name}>[0-9]{{2}})")),
            }
        }
        pattern.push_str(r"(?P<file>[^/]+)$");
        let pattern = Regex::new(&pattern).expect("escaped literals and fixed groups form a valid regex");
        let hourly = segments.iter().any(|s| matches!(s, Segment::Placeholder { name: "hour", .. }));
        Ok(Self { template, segments, pattern, hourly })
    }

    /// The template, normalised to end with a slash.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Whether partitions are hourly.
    pub fn is_hourly(&self) -> bool {
        self.hourly
    }

    /// A partition of this layout, for planning a query without data.
    pub fn sample_partition(&self) -> PartitionKey {
        PartitionKey { year: 2026, month: 1, day: 1, hour: self.hourly.then_some(0) }
    }

    /// The partition a data object belongs to, from its path relative to the source prefix, or
    /// `None` when the path is not directly inside a partition directory, names an impossible date,
    /// or is hidden (its name starts with `_` or `.`).
    pub fn partition_of(&self, relative_path: &str) -> Option<PartitionKey> {
        let captures = self.pattern.captures(relative_path)?;
        let file = captures.name("file")?.as_str();
        if file.starts_with('_') || file.starts_with('.') {
            return None;
        }
        let number = |name: &str| captures.name(name).map(|m| m.as_str().parse::<u16>().ok());
        let key = PartitionKey {
            year: number("year")??,
            month: u8::try_from(number("month")??).ok()?,
            day: u8::try_from(number("day")??).ok()?,
            hour: match number("hour") {
                Some(hour) => Some(u8::try_from(hour?).ok().filter(|h| *h < 24)?),
                None => None,
            },
        };
        key.start().map(|_| key)
    }

    /// The longest directory prefixes that hold every partition of the given year, month or day:
    /// the template filled in with the values given, cut at the directory holding the first
    /// placeholder left — one prefix per spelling of the values (`month=01/` and `month=1/`).
    /// `listing_prefixes(2026, Some(11), None)` is `["year=2026/month=11/"]` for the default
    /// layout.
    pub fn listing_prefixes(&self, year: u16, month: Option<u8>, day: Option<u8>) -> Vec<String> {
        let values = [("year", Some(year)), ("month", month.map(u16::from)), ("day", day.map(u16::from))];
        let value = |name: &str| values.iter().find(|(known, _)| *known == name).and_then(|(_, value)| *value);
        let directory = |filled: String| filled[..filled.rfind('/').map_or(0, |slash| slash + 1)].to_string();
        let mut prefixes: Vec<String> = self.spellings(value).into_iter().map(directory).collect();
        prefixes.dedup();
        prefixes
    }

    /// Every path of a partition's directory relative to the source prefix: the template filled
    /// in with the partition's values in each spelling the layout reads, zero-padded first.
    pub fn source_paths(&self, key: &PartitionKey) -> Vec<String> {
        let value = |name: &str| match name {
            "year" => Some(key.year),
            "month" => Some(u16::from(key.month)),
            "day" => Some(u16::from(key.day)),
            _ => Some(u16::from(key.hour.unwrap_or(0))),
        };
        self.spellings(value)
    }

    /// The template filled in with `value`s up to the first placeholder without one, in every
    /// spelling: each value below 10 of a placeholder that reads both spellings doubles them.
    fn spellings(&self, value: impl Fn(&str) -> Option<u16>) -> Vec<String> {
        let mut filled = vec![String::new()];
        for segment in &self.segments {
            let spellings = match segment {
                Segment::Literal(text) => vec![text.clone()],
                Segment::Placeholder { name, unpadded_too } => match value(name) {
                    None => break,
                    Some(year) if *name == "year" => vec![format!("{year:04}")],
                    Some(number) if *unpadded_too && number < 10 => vec![format!("{number:02}"), number.to_string()],
                    Some(number) => vec![format!("{number:02}")],
                },
            };
            filled = filled.iter().flat_map(|start| spellings.iter().map(move |spelling| format!("{start}{spelling}"))).collect();
        }
        filled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(year: u16, month: u8, day: u8, hour: Option<u8>) -> PartitionKey {
        PartitionKey { year, month, day, hour }
    }

    #[test]
    fn listing_prefixes_stop_at_the_first_directory_with_a_placeholder() {
        let daily = Layout::parse("events/year={year}/month={month}/day={day}/").unwrap();
        assert_eq!(daily.listing_prefixes(2026, Some(11), Some(24)), ["events/year=2026/month=11/day=24/"]);
        assert_eq!(daily.listing_prefixes(2026, Some(11), Some(4)), ["events/year=2026/month=11/day=04/", "events/year=2026/month=11/day=4/"]);
        assert_eq!(daily.listing_prefixes(2026, Some(11), None), ["events/year=2026/month=11/"]);
        assert_eq!(daily.listing_prefixes(2026, None, None), ["events/year=2026/"]);
        let hourly = Layout::parse("{year}/{month}/{day}/{hour}").unwrap();
        assert_eq!(hourly.listing_prefixes(2026, Some(1), Some(2)), ["2026/01/02/", "2026/01/2/", "2026/1/02/", "2026/1/2/"]);
        let flat = Layout::parse("dt={year}-{month}-{day}/").unwrap();
        assert_eq!(flat.listing_prefixes(2026, Some(11), Some(24)), ["dt=2026-11-24/"]);
        assert_eq!(flat.listing_prefixes(2026, Some(11), None), [""]);
    }

    #[test]
    fn default_layout_matches_hive_style_paths() {
        let layout = Layout::parse(&crate::spec::default_layout()).unwrap();
        assert_eq!(layout.partition_of("year=2026/month=11/day=24/a.csv"), Some(key(2026, 11, 24, None)));
        assert_eq!(layout.partition_of("year=2026/month=1/day=2/a.csv.gz"), Some(key(2026, 1, 2, None)));
        assert!(!layout.is_hourly());
    }

    #[test]
    fn objects_outside_partition_directories_are_ignored() {
        let layout = Layout::parse("year={year}/month={month}/day={day}").unwrap();
        for path in [
            "year=2026/month=11/day=24/",
            "year=2026/month=11/day=24/nested/a.csv",
            "year=2026/month=11/a.csv",
            "year=2026/month=11/day=24/_SUCCESS",
            "year=2026/month=11/day=24/.hidden.csv",
            "year=2026/month=13/day=01/a.csv",
            "year=2026/month=02/day=30/a.csv",
            "other/year=2026/month=11/day=24/a.csv",
        ] {
            assert_eq!(layout.partition_of(path), None, "{path}");
        }
    }

    #[test]
    fn hourly_and_plain_layouts() {
        let layout = Layout::parse("{year}/{month}/{day}/{hour}/").unwrap();
        assert!(layout.is_hourly());
        assert_eq!(layout.partition_of("2026/11/24/07/x.csv"), Some(key(2026, 11, 24, Some(7))));
        assert_eq!(layout.partition_of("2026/11/24/24/x.csv"), None);
        assert_eq!(layout.source_paths(&key(2026, 1, 2, Some(13)))[0], "2026/01/02/13/");
        let dashed = Layout::parse("dt={year}-{month}-{day}/").unwrap();
        assert_eq!(dashed.partition_of("dt=2026-11-24/x.csv"), Some(key(2026, 11, 24, None)));
    }

    /// Spark writes `month=1/day=2/`: both spellings are one partition, and both are read.
    #[test]
    fn unpadded_directories_are_the_same_partition_and_are_listed() {
        let layout = Layout::parse(&crate::spec::default_layout()).unwrap();
        let january = key(2026, 1, 2, None);
        for path in ["year=2026/month=1/day=2/a.csv", "year=2026/month=01/day=02/b.csv", "year=2026/month=1/day=02/c.csv"] {
            assert_eq!(layout.partition_of(path), Some(january), "{path}");
            let directory = &path[..path.rfind('/').unwrap() + 1];
            assert!(layout.source_paths(&january).iter().any(|listed| listed == directory), "{directory} is listed");
        }
        assert_eq!(layout.source_paths(&key(2026, 11, 24, None)), ["year=2026/month=11/day=24/"]);
        // Placeholders side by side have no text between them to end a short value: two digits only.
        let compact = Layout::parse("{year}{month}{day}/").unwrap();
        assert_eq!(compact.partition_of("20261124/a.csv"), Some(key(2026, 11, 24, None)));
        assert_eq!(compact.partition_of("2026112/a.csv"), Some(key(2026, 11, 2, None)), "the day ends at the slash");
        assert_eq!(compact.partition_of("202612/a.csv"), None, "a one-digit month cannot be told from the day");
        assert_eq!(compact.source_paths(&key(2026, 1, 2, None)), ["20260102/", "2026012/"]);
    }

    #[test]
    fn bad_templates_are_named() {
        assert_eq!(
            Layout::parse("year={year}/month={month}/").unwrap_err(),
            LayoutError::MissingPlaceholder { layout: "year={year}/month={month}/".into(), placeholder: "day" }
        );
        assert!(matches!(Layout::parse("{year}/{month}/{day}/{minute}/"), Err(LayoutError::BadPlaceholder { .. })));
        assert!(matches!(Layout::parse("{year}/{year}/{month}/{day}/"), Err(LayoutError::BadPlaceholder { .. })));
        assert!(matches!(Layout::parse("{year/{month}/{day}/"), Err(LayoutError::BadPlaceholder { .. })));
        assert!(matches!(Layout::parse("year}/{month}/{day}/"), Err(LayoutError::UnbalancedBrace { .. })));
        let message = Layout::parse("{month}/{day}").unwrap_err().to_string();
        assert!(message.contains("{year}"), "{message}");
    }

    #[test]
    fn sink_paths_are_hive_style_and_zero_padded() {
        assert_eq!(key(2026, 1, 2, None).sink_path(), "year=2026/month=01/day=02/");
        assert_eq!(key(2026, 1, 2, Some(5)).to_string(), "year=2026/month=01/day=02/hour=05");
        assert_eq!(key(2026, 1, 2, Some(5)).columns().last(), Some(&("hour", 5)));
    }

    #[test]
    fn partition_keys_read_back_as_they_display() {
        for key in [PartitionKey { year: 2026, month: 11, day: 24, hour: None }, PartitionKey { year: 2026, month: 1, day: 2, hour: Some(5) }] {
            assert_eq!(key.to_string().parse::<PartitionKey>(), Ok(key));
            assert_eq!(key.sink_path().parse::<PartitionKey>(), Ok(key));
        }
        for bad in ["year=2026/month=11", "year=2026/month=1/day=24", "year=2026/month=02/day=30", "year=2026/month=11/day=24/x=1", "day=24/month=11/year=2026"] {
            assert!(bad.parse::<PartitionKey>().is_err(), "{bad}");
        }
    }
}
