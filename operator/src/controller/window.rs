//! The schedule's window: which days are looked at, and which prefixes of the source must be
//! listed to see them (one per day for short windows, one per month for long ones), so that a
//! poll reads only as far back as the schedule says.

use eventpipe_transformer::layout::{Layout, PartitionKey};
use k8s_openapi::jiff::civil::Date;
use chrono::Datelike;
use k8s_openapi::jiff::{Timestamp, ToSpan};

use crate::crd::ScheduleSpec;

/// At most this many partitions (the newest) are tracked; older ones in a longer window are
/// ignored, which keeps the status small.
pub const MAX_PARTITIONS: usize = 400;
/// Windows up to this many days are listed day by day; longer ones month by month.
const DAILY_LISTING_DAYS: i32 = 31;

/// The days a schedule looks at, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The first day; after `last` when `startDate` lies in the future (an empty window).
    pub first: Date,
    /// The last day: today (UTC).
    pub last: Date,
}

impl Window {
    /// The window of `schedule` at `now`: from `startDate`, or `lookbackDays` back, until today
    /// in the schedule's time zone.
    pub fn of(schedule: &ScheduleSpec, now: Timestamp) -> Result<Self, String> {
        let today = crate::period::today(schedule, now)?;
        let last = Date::new(today.year() as i16, today.month() as i8, today.day() as i8).map_err(|e| e.to_string())?;
        let first = match &schedule.start_date {
            Some(text) => text
                .parse::<Date>()
                .map_err(|e| format!("schedule.startDate {text:?} is not a date (YYYY-MM-DD): {e}"))?,
            None => last
                .checked_sub((i64::from(schedule.lookback_days) - 1).days())
                .map_err(|e| format!("schedule.lookbackDays: {e}"))?,
        };
        Ok(Self { first, last })
    }

    /// What a listing of the window looks at, for messages: `s3://b/events/ from 2026-11-22 to
    /// 2026-11-28 (layout year={year}/month={month}/day={day}/)`.
    pub fn describe(&self, source_url: &str, layout: &Layout) -> String {
        format!("{source_url} from {} to {} (layout {})", self.first, self.last, layout.template())
    }

    /// Whether a partition's day lies in the window.
    pub fn contains(&self, key: &PartitionKey) -> bool {
        let Ok(day) = Date::new(key.year as i16, key.month as i8, key.day as i8) else { return false };
        self.first <= day && day <= self.last
    }

    /// The source prefixes to list, relative to the source URL, without duplicates: for values
    /// below 10, the unpadded spelling as well (`month=9/`, as Spark writes it).
    pub fn listing_prefixes(&self, layout: &Layout) -> Vec<String> {
        let daily = self.last.since(self.first).map(|span| span.get_days()).unwrap_or(i32::MAX) < DAILY_LISTING_DAYS;
        let mut prefixes: Vec<String> = Vec::new();
        let mut day = self.first;
        while day <= self.last {
            let (year, month) = (day.year() as u16, day.month() as u8);
            for prefix in layout.listing_prefixes(year, Some(month), daily.then_some(day.day() as u8)) {
                if prefix.is_empty() {
                    return vec![String::new()];
                }
                if !prefixes.contains(&prefix) {
                    prefixes.push(prefix);
                }
            }
            day = match day.tomorrow() {
                Ok(next) => next,
                Err(_) => break,
            };
        }
        prefixes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-24T10:00:00Z".parse().unwrap()
    }

    fn key(month: u8, day: u8) -> PartitionKey {
        PartitionKey { year: 2026, month, day, hour: None }
    }

    #[test]
    fn lookback_counts_today() {
        let window = Window::of(&ScheduleSpec { lookback_days: 3, ..ScheduleSpec::default() }, now()).unwrap();
        assert_eq!((window.first.to_string(), window.last.to_string()), ("2026-11-22".into(), "2026-11-24".into()));
        assert!(window.contains(&key(11, 22)) && window.contains(&key(11, 24)));
        assert!(!window.contains(&key(11, 21)) && !window.contains(&key(11, 25)));
        let layout = Layout::parse("raw/year={year}/month={month}/day={day}/").unwrap();
        assert_eq!(
            window.listing_prefixes(&layout),
            vec!["raw/year=2026/month=11/day=22/", "raw/year=2026/month=11/day=23/", "raw/year=2026/month=11/day=24/"]
        );
    }

    #[test]
    fn today_is_the_schedules_local_day() {
        let tokyo = ScheduleSpec { lookback_days: 1, timezone: Some("Asia/Tokyo".into()), ..ScheduleSpec::default() };
        let late: Timestamp = "2026-11-24T20:00:00Z".parse().unwrap();
        let window = Window::of(&tokyo, late).unwrap();
        assert!(window.contains(&key(11, 25)) && !window.contains(&key(11, 24)), "05:00 on the 25th in Tokyo");
    }

    #[test]
    fn long_windows_are_listed_by_month() {
        let schedule = ScheduleSpec { start_date: Some("2026-09-30".into()), ..ScheduleSpec::default() };
        let window = Window::of(&schedule, now()).unwrap();
        let layout = Layout::parse("year={year}/month={month}/day={day}/hour={hour}/").unwrap();
        assert_eq!(window.listing_prefixes(&layout), vec!["year=2026/month=09/", "year=2026/month=9/", "year=2026/month=10/", "year=2026/month=11/"]);
        let flat = Layout::parse("{day}-{month}-{year}/").unwrap();
        assert_eq!(window.listing_prefixes(&flat), vec![String::new()], "no common directory: list everything");
    }

    #[test]
    fn a_start_date_in_the_future_is_an_empty_window_and_bad_dates_are_named() {
        let future = ScheduleSpec { start_date: Some("2027-01-01".into()), ..ScheduleSpec::default() };
        let window = Window::of(&future, now()).unwrap();
        assert!(!window.contains(&key(11, 24)));
        assert!(window.listing_prefixes(&Layout::parse("{year}/{month}/{day}/").unwrap()).is_empty());
        let bad = ScheduleSpec { start_date: Some("2026-02-30".into()), ..ScheduleSpec::default() };
        assert!(Window::of(&bad, now()).unwrap_err().contains("schedule.startDate"));
    }
}
