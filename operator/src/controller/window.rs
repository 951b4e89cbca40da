//! The schedule's window: which days are looked at, and which prefixes of the source must be
//! listed to see them (one per day for the last month, one per month before), so that a poll
//! reads only as far back as the schedule says, and a day or month whose partitions are all
//! committed can be listed less often than the days still at work.

use eventpipe_transformer::layout::{Layout, PartitionKey};
use k8s_openapi::jiff::civil::Date;
use chrono::Datelike;
use k8s_openapi::jiff::{Timestamp, ToSpan};

use crate::crd::ScheduleSpec;

/// The last this many days of a window are listed day by day; the months before, month by month.
const DAILY_LISTING_DAYS: i64 = 31;

/// A directory of the source to list (a day's or a month's) and the last day it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The directory relative to the source URL in every spelling the layout reads, zero-padded
    /// first (`year=2026/month=09/`, `year=2026/month=9/`, as Spark writes it); one empty path
    /// for the whole source.
    pub paths: Vec<String>,
    /// The last day of the window it covers.
    pub last_day: Date,
}

impl Prefix {
    /// The zero-padded spelling, which names the prefix.
    pub fn name(&self) -> &str {
        &self.paths[0]
    }

    /// Whether every day it covers ended more than a day before `today` (so that its partitions
    /// are closed whatever the grace period).
    pub fn closed(&self, today: Date) -> bool {
        self.last_day.checked_add(2.days()).is_ok_and(|after| after <= today)
    }
}

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

    /// The window starting `days` earlier: what must be listed to see the directories its
    /// first days read.
    pub fn reaching_back(&self, days: i64) -> Self {
        Self { first: self.first.checked_sub(days.days()).unwrap_or(self.first), last: self.last }
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

    /// The source prefixes to list, oldest first, without duplicates: a month whose days all lie
    /// more than [`DAILY_LISTING_DAYS`] before the window's last day is listed as one prefix;
    /// later days one by one.
    pub fn listing_prefixes(&self, layout: &Layout) -> Vec<Prefix> {
        let daily_from = self.last.checked_sub((DAILY_LISTING_DAYS - 1).days()).unwrap_or(self.first);
        let mut prefixes: Vec<Prefix> = Vec::new();
        let mut day = self.first;
        while day <= self.last {
            let (year, month) = (day.year() as u16, day.month() as u8);
            let daily = day.last_of_month() >= daily_from;
            let paths = layout.listing_prefixes(year, Some(month), daily.then_some(day.day() as u8));
            if paths.iter().any(String::is_empty) {
                return vec![Prefix { paths: vec![String::new()], last_day: self.last }];
            }
            match prefixes.last_mut() {
                Some(last) if last.paths == paths => last.last_day = day,
                _ => prefixes.push(Prefix { paths, last_day: day }),
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
            names(&window.listing_prefixes(&layout)),
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
    fn the_last_month_is_listed_by_day_and_older_months_by_month() {
        let schedule = ScheduleSpec { start_date: Some("2026-08-30".into()), ..ScheduleSpec::default() };
        let window = Window::of(&schedule, now()).unwrap();
        let layout = Layout::parse("year={year}/month={month}/day={day}/hour={hour}/").unwrap();
        let prefixes = window.listing_prefixes(&layout);
        let months = &prefixes[..2];
        assert_eq!(names(months), ["year=2026/month=08/", "year=2026/month=09/"]);
        assert_eq!(months[1].paths, ["year=2026/month=09/", "year=2026/month=9/"], "both spellings of a month, listed together");
        assert_eq!(months.iter().map(|p| p.last_day.to_string()).collect::<Vec<_>>(), ["2026-08-31", "2026-09-30"]);
        assert_eq!(prefixes[2].paths, ["year=2026/month=10/day=01/", "year=2026/month=10/day=1/"], "October holds a day of the last 31: listed by day");
        assert_eq!(prefixes.len(), 2 + 31 + 24);
        let today = now().to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
        assert!(months[1].closed(today) && prefixes[prefixes.len() - 3].closed(today), "ended more than a day ago");
        assert!(!prefixes[prefixes.len() - 2].closed(today), "yesterday may still take late files within the grace period");
        let flat = Layout::parse("{day}-{month}-{year}/").unwrap();
        assert_eq!(names(&window.listing_prefixes(&flat)), [""], "no common directory: list everything");
    }

    fn names(prefixes: &[Prefix]) -> Vec<&str> {
        prefixes.iter().map(Prefix::name).collect()
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
