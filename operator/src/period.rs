//! A partition's period — its day, or its hour in an hourly layout — in the schedule's time zone,
//! and when the partition closes: at the end of the period plus the grace period. Until then a
//! source such as Kinesis Data Firehose still writes into it (open); an object that arrives after
//! is late data (closed).

use chrono::{Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;
use eventpipe_transformer::layout::PartitionKey;
use k8s_openapi::jiff::Timestamp;

use crate::crd::ScheduleSpec;

/// The schedule's time zone: `schedule.timezone`, or UTC.
pub fn time_zone(schedule: &ScheduleSpec) -> Result<Tz, String> {
    match &schedule.timezone {
        Some(name) => name.parse().map_err(|_| format!("schedule.timezone {name:?} is not an IANA time zone such as Europe/Berlin")),
        None => Ok(Tz::UTC),
    }
}

/// When the partition closes: the end of its day (or hour) in the schedule's time zone, plus the
/// lateness of event-time partitions (zero otherwise), plus the grace period.
pub fn closes_at(key: &PartitionKey, schedule: &ScheduleSpec, lateness: Duration) -> Result<Timestamp, String> {
    let zone = time_zone(schedule)?;
    let invalid = || format!("partition {key} names no real day");
    let date = NaiveDate::from_ymd_opt(key.year.into(), key.month.into(), key.day.into()).ok_or_else(invalid)?;
    let start = date.and_hms_opt(key.hour.unwrap_or(0).into(), 0, 0).ok_or_else(invalid)?;
    let end = start + if key.hour.is_some() { Duration::hours(1) } else { Duration::days(1) };
    // A local time skipped by a daylight-saving change is reached an hour later.
    let end = zone
        .from_local_datetime(&end)
        .earliest()
        .or_else(|| zone.from_local_datetime(&(end + Duration::hours(1))).earliest())
        .ok_or_else(invalid)?;
    let closes = end.timestamp_millis() + lateness.num_milliseconds() + i64::from(schedule.grace_period_seconds) * 1000;
    Timestamp::from_millisecond(closes).map_err(|e| format!("partition {key}: {e}"))
}

/// Today's date in the schedule's time zone, the newest day partitions can have.
pub fn today(schedule: &ScheduleSpec, now: Timestamp) -> Result<NaiveDate, String> {
    let zone = time_zone(schedule)?;
    let now = chrono::DateTime::from_timestamp_millis(now.as_millisecond()).ok_or("the time is out of range")?;
    Ok(now.with_timezone(&zone).date_naive())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(timezone: Option<&str>, grace: u32) -> ScheduleSpec {
        ScheduleSpec { timezone: timezone.map(str::to_string), grace_period_seconds: grace, ..ScheduleSpec::default() }
    }

    fn day(day: u8) -> PartitionKey {
        PartitionKey { year: 2026, month: 11, day, hour: None }
    }

    #[test]
    fn a_day_closes_at_its_end_plus_the_grace_period() {
        assert_eq!(closes_at(&day(24), &schedule(None, 120), Duration::zero()).unwrap().to_string(), "2026-11-25T00:02:00Z");
        let hour = PartitionKey { hour: Some(23), ..day(24) };
        assert_eq!(closes_at(&hour, &schedule(None, 0), Duration::zero()).unwrap().to_string(), "2026-11-25T00:00:00Z");
    }

    #[test]
    fn a_days_end_is_local_to_the_schedules_time_zone() {
        assert_eq!(closes_at(&day(24), &schedule(Some("Europe/Berlin"), 0), Duration::zero()).unwrap().to_string(), "2026-11-24T23:00:00Z");
        assert_eq!(closes_at(&day(24), &schedule(Some("America/Los_Angeles"), 0), Duration::zero()).unwrap().to_string(), "2026-11-25T08:00:00Z");
        // The day before Berlin's clocks go forward has 24 hours; the change day itself 23.
        let spring = PartitionKey { year: 2026, month: 3, day: 29, hour: None };
        assert_eq!(closes_at(&spring, &schedule(Some("Europe/Berlin"), 0), Duration::zero()).unwrap().to_string(), "2026-03-29T22:00:00Z");
        assert!(closes_at(&day(24), &schedule(Some("Mars/Olympus"), 0), Duration::zero()).unwrap_err().contains("IANA"));
        let two_hours_late = closes_at(&day(24), &schedule(Some("Europe/Berlin"), 60), Duration::hours(2)).unwrap();
        assert_eq!(two_hours_late.to_string(), "2026-11-25T01:01:00Z", "an event-time day closes after its lateness");
    }

    #[test]
    fn today_is_the_local_date() {
        let now: Timestamp = "2026-11-24T23:30:00Z".parse().unwrap();
        assert_eq!(today(&schedule(None, 0), now).unwrap().to_string(), "2026-11-24");
        assert_eq!(today(&schedule(Some("Asia/Tokyo"), 0), now).unwrap().to_string(), "2026-11-25");
    }
}
