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
    pattern: Regex,
    hourly: bool,
}

const PLACEHOLDERS: [(&str, &str); 4] = [
    ("year", r"(?P<year>\d{4})"),
    ("month", r"(?P<month>\d{1,2})"),
    ("day", r"(?P<day>\d{1,2})"),
    ("hour", r"(?P<hour>\d{1,2})"),
];

impl Layout {
    /// Parses a template such as `year={year}/month={month}/day={day}/`. A missing trailing slash
    /// is added: a partition is always a directory.
    pub fn parse(template: &str) -> Result<Self, LayoutError> {
        let mut template = template.trim_start_matches('/').to_string();
        if !template.ends_with('/') {
            template.push('/');
        }
        let mut pattern = String::from("^");
        let mut seen: Vec<&str> = Vec::new();
        let mut rest = template.as_str();
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(LayoutError::UnbalancedBrace { layout: template.clone() });
            }
            pattern.push_str(&regex::escape(&rest[..open]));
            let close = rest[open..]
                .find('}')
                .map(|i| open + i)
                .ok_or_else(|| LayoutError::UnbalancedBrace { layout: template.clone() })?;
            let name = &rest[open + 1..close];
            let (known, group) = PLACEHOLDERS
                .iter()
                .find(|(known, _)| *known == name && !seen.contains(known))
                .ok_or_else(|| LayoutError::BadPlaceholder { layout: template.clone(), placeholder: name.to_string() })?;
            seen.push(known);
            pattern.push_str(group);
            rest = &rest[close + 1..];
        }
        pattern.push_str(&regex::escape(rest));
        pattern.push_str(r"(?P<file>[^/]+)$");
        for required in ["year", "month", "day"] {
            if !seen.contains(&required) {
                return Err(LayoutError::MissingPlaceholder { layout: template, placeholder: required });
            }
        }
        let pattern = Regex::new(&pattern).expect("escaped literals and fixed groups form a valid regex");
        Ok(Self { hourly: seen.contains(&"hour"), template, pattern })
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

    /// The longest directory prefix that holds every partition of the given year, month or day:
    /// the template filled in with the values given, cut at the directory holding the first
    /// placeholder left. `listing_prefix(2026, Some(11), None)` is `year=2026/month=11/` for the
    /// default layout.
    pub fn listing_prefix(&self, year: u16, month: Option<u8>, day: Option<u8>) -> String {
        let mut filled = self.template.replace("{year}", &format!("{year:04}"));
        if let Some(month) = month {
            filled = filled.replace("{month}", &format!("{month:02}"));
        }
        if let Some(day) = day {
            filled = filled.replace("{day}", &format!("{day:02}"));
        }
        let fixed = filled.find('{').map_or(filled.as_str(), |open| &filled[..open]);
        fixed[..fixed.rfind('/').map_or(0, |slash| slash + 1)].to_string()
    }

    /// The path of a partition's directory relative to the source prefix (the template filled in
    /// with zero-padded values).
    pub fn source_path(&self, key: &PartitionKey) -> String {
        self.template
            .replace("{year}", &format!("{:04}", key.year))
            .replace("{month}", &format!("{:02}", key.month))
            .replace("{day}", &format!("{:02}", key.day))
            .replace("{hour}", &format!("{:02}", key.hour.unwrap_or(0)))
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
        assert_eq!(daily.listing_prefix(2026, Some(11), Some(4)), "events/year=2026/month=11/day=04/");
        assert_eq!(daily.listing_prefix(2026, Some(11), None), "events/year=2026/month=11/");
        assert_eq!(daily.listing_prefix(2026, None, None), "events/year=2026/");
        let hourly = Layout::parse("{year}/{month}/{day}/{hour}").unwrap();
        assert_eq!(hourly.listing_prefix(2026, Some(1), Some(2)), "2026/01/02/");
        let flat = Layout::parse("dt={year}-{month}-{day}/").unwrap();
        assert_eq!(flat.listing_prefix(2026, Some(11), Some(24)), "dt=2026-11-24/");
        assert_eq!(flat.listing_prefix(2026, Some(11), None), "");
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
        assert_eq!(layout.source_path(&key(2026, 1, 2, Some(3))), "2026/01/02/03/");
        let dashed = Layout::parse("dt={year}-{month}-{day}/").unwrap();
        assert_eq!(dashed.partition_of("dt=2026-11-24/x.csv"), Some(key(2026, 11, 24, None)));
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
}
