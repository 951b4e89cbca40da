//! Event-time partitions run end to end on local files whose modification times are set to when
//! each object "arrived", checked against a model of the rule written from its statement alone:
//! a row is kept by the day of its event time when that day reads its object (the object's own
//! day; the day after it; or a day before it whose end plus the lateness has not passed when the
//! object's directory starts and when the object arrived), and otherwise rejected by its own
//! directory's run as `late`, `early` (more than a day ahead) or `no event time`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use eventpipe_transformer::layout::PartitionKey;
use eventpipe_transformer::spec::{BadRecordPolicy, Column, ColumnType, EventTimeSpec, TimestampUnit};
use eventpipe_transformer::task::{Summary, Task};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use tempfile::TempDir;

/// The days of the generated directories: from `first`, local to `zone`.
#[derive(Clone, Copy, Debug)]
struct Calendar {
    first: NaiveDate,
    zone: Tz,
}

/// UTC from 2026-11-23; the calendars with a daylight-saving change in their first days.
const UTC: Calendar = Calendar { first: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(), zone: Tz::UTC };
const CALENDARS: [Calendar; 3] = [
    UTC,
    Calendar { first: NaiveDate::from_ymd_opt(2026, 3, 28).unwrap(), zone: Tz::Europe__Berlin },
    Calendar { first: NaiveDate::from_ymd_opt(2026, 10, 31).unwrap(), zone: Tz::America__New_York },
];

impl Calendar {
    fn date(&self, offset: i64) -> NaiveDate {
        self.first + Duration::days(offset)
    }

    /// Local midnight.
    fn start(&self, date: NaiveDate) -> DateTime<Utc> {
        self.zone.from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap()).earliest().unwrap().to_utc()
    }

    fn end(&self, date: NaiveDate) -> DateTime<Utc> {
        self.start(date + Duration::days(1))
    }

    fn day_of(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.zone).date_naive()
    }
}

fn date(offset: i64) -> NaiveDate {
    UTC.date(offset)
}

fn key(date: NaiveDate) -> PartitionKey {
    use chrono::Datelike;
    PartitionKey { year: date.year() as u16, month: date.month() as u8, day: date.day() as u8, hour: None }
}

fn start(date: NaiveDate) -> DateTime<Utc> {
    UTC.start(date)
}

/// The user-event columns with a nullable event time.
fn columns() -> Vec<Column> {
    let mut columns = support::event_columns();
    columns[3] = Column { name: "timestamp".into(), data_type: ColumnType::Timestamp, nullable: true, unit: Some(TimestampUnit::Seconds), format: None };
    columns
}

/// One object: its directory (days after the calendar's first), when it arrived (minutes after its
/// directory's start) and its rows: an event time in minutes after the first day's start (or
/// none), or a bad row.
#[derive(Clone, Debug)]
struct Object {
    directory: i64,
    arrival_minutes: i64,
    rows: Vec<Row>,
}

#[derive(Clone, Debug)]
enum Row {
    At(Option<i64>),
    Bad,
}

fn object() -> impl Strategy<Value = Object> {
    let row = prop_oneof![18 => proptest::option::weighted(0.95, -1500..6000i64).prop_map(Row::At), 1 => Just(Row::Bad)];
    (0..3i64, -30..2000i64, proptest::collection::vec(row, 0..8)).prop_map(|(directory, arrival_minutes, rows)| Object { directory, arrival_minutes, rows })
}

/// What the model says of every row, by id: kept by a day, or rejected by its directory's run
/// with a reason.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    kept: BTreeMap<NaiveDate, BTreeSet<i64>>,
    rejected: BTreeMap<i64, String>,
}

fn model(calendar: Calendar, objects: &[Object], lateness: Duration) -> Expected {
    let reads = |output: NaiveDate, directory: NaiveDate, arrived: DateTime<Utc>| {
        let reach = calendar.end(output) + lateness;
        output == directory
            || (output == directory + Duration::days(1) && arrived <= reach)
            || (output < directory && calendar.start(directory) <= reach && arrived <= reach)
    };
    let mut expected = Expected::default();
    for (object_index, object) in objects.iter().enumerate() {
        let directory = calendar.date(object.directory);
        let arrived = calendar.start(directory) + Duration::minutes(object.arrival_minutes);
        for (row_index, row) in object.rows.iter().enumerate() {
            let id = id(object_index, row_index);
            let event = match row {
                Row::Bad => {
                    expected.rejected.insert(id, "bad".into());
                    continue;
                }
                Row::At(None) => {
                    expected.rejected.insert(id, "no event time".into());
                    continue;
                }
                Row::At(Some(minutes)) => calendar.start(calendar.first) + Duration::minutes(*minutes),
            };
            let owner = calendar.day_of(event);
            if reads(owner, directory, arrived) {
                expected.kept.entry(owner).or_default().insert(id);
            } else if owner > directory + Duration::days(1) {
                expected.rejected.insert(id, "early".into());
            } else {
                expected.rejected.insert(id, "late".into());
            }
        }
    }
    expected
}

fn id(object: usize, row: usize) -> i64 {
    (object * 100 + row) as i64
}

/// Writes the objects below `source`, each modified when it arrived.
fn write(calendar: Calendar, source: &Path, objects: &[Object]) {
    for (object_index, object) in objects.iter().enumerate() {
        let directory = calendar.date(object.directory);
        let dir = source.join(key(directory).sink_path());
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::from(support::HEADER);
        for (row_index, row) in object.rows.iter().enumerate() {
            let id = id(object_index, row_index);
            text.push_str(&match row {
                Row::At(Some(minutes)) => format!("{id},n,v,{}\n", (calendar.start(calendar.first) + Duration::minutes(*minutes)).timestamp()),
                Row::At(None) => format!("{id},n,v,\n"),
                Row::Bad => format!("bad{id},n,v,1\n"),
            });
        }
        let path = dir.join(format!("object-{object_index}.csv"));
        std::fs::write(&path, text).unwrap();
        let arrived = calendar.start(directory) + Duration::minutes(object.arrival_minutes);
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::from(arrived)).unwrap();
    }
}

/// Local directories and the task of one output day.
struct Pipeline {
    source: TempDir,
    sink: TempDir,
    rejected: TempDir,
    lateness: String,
    calendar: Calendar,
}

impl Pipeline {
    fn new(lateness: &str) -> Self {
        Self::in_calendar(lateness, UTC)
    }

    fn in_calendar(lateness: &str, calendar: Calendar) -> Self {
        let dir = || TempDir::new().unwrap();
        Self { source: dir(), sink: dir(), rejected: dir(), lateness: lateness.into(), calendar }
    }

    fn task(&self, day: NaiveDate) -> Task {
        let mut task = support::TaskBuilder::new(self.source.path().to_str().unwrap(), self.sink.path().to_str().unwrap())
            .columns(columns())
            .policy(BadRecordPolicy::Quarantine)
            .rejected_url(self.rejected.path().to_str().unwrap())
            .build();
        task.partition = key(day);
        task.pipeline.source.event_time = Some(EventTimeSpec { column: "timestamp".into(), lateness: self.lateness.clone(), time_zone: Some(self.calendar.zone.name().into()) });
        task
    }

    async fn run(&self, day: NaiveDate) -> eventpipe_transformer::Result<Summary> {
        eventpipe_transformer::run::run(&self.task(day)).await
    }

    /// The ids committed for a day.
    async fn kept(&self, day: NaiveDate) -> BTreeSet<i64> {
        let dir = self.sink.path().join(key(day).sink_path());
        let holds_data = |dir: &Path| std::fs::read_dir(dir).is_ok_and(|mut entries| entries.any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".parquet")));
        if !holds_data(&dir) {
            return BTreeSet::new();
        }
        let ctx = datafusion::prelude::SessionContext::new();
        let batches = support::query_parquet(&ctx, &format!("{}/", dir.display()), "SELECT id FROM out").await;
        batches
            .iter()
            .flat_map(|batch| {
                let ids = batch.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap();
                ids.values().to_vec()
            })
            .collect()
    }

    /// Every rejected row of the days the tests run, by id, with its reason (`bad` for rows that
    /// are not rows).
    fn rejected_rows(&self) -> BTreeMap<i64, String> {
        let mut rejected = BTreeMap::new();
        let directories = (-2..=3).map(|offset| self.rejected.path().join(key(self.calendar.date(offset)).sink_path()));
        let files = directories.filter_map(|dir| std::fs::read_dir(dir).ok()).flatten().map(|entry| entry.unwrap().path());
        for file in files {
            for line in std::fs::read_to_string(file).unwrap().lines() {
                let json: serde_json::Value = serde_json::from_str(line).unwrap();
                let (id, reason) = match json.get("row") {
                    Some(row) => (row["id"].as_i64().unwrap(), json["reason"].as_str().unwrap().to_string()),
                    None => (json["text"].as_str().unwrap().trim_start_matches("bad").split(',').next().unwrap().parse().unwrap(), "bad".into()),
                };
                assert!(rejected.insert(id, reason).is_none(), "row {id} rejected twice");
            }
        }
        rejected
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(Config {
        cases: 120,
        rng_seed: RngSeed::Fixed(0x0e7e_2025),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    })]

    /// Each output day holds exactly the rows the model keeps for it, every other row is in the
    /// rejected-rows location once with the model's reason, and each run's counts add up: read =
    /// kept + routed + rejected. In UTC, and in local days with a daylight-saving change (Berlin
    /// springs forward on 2026-03-29, New York falls back on 2026-11-01).
    #[test]
    fn each_day_holds_exactly_its_events(
        objects in proptest::collection::vec(object(), 1..6),
        lateness_minutes in prop_oneof![Just(0i64), 1..180i64, Just(1440)],
        calendar in proptest::sample::select(CALENDARS.to_vec()),
    ) {
        let pipeline = Pipeline::in_calendar(&format!("{lateness_minutes}m"), calendar);
        write(calendar, pipeline.source.path(), &objects);
        let expected = model(calendar, &objects, Duration::minutes(lateness_minutes));
        let runtime = runtime();
        let mut read = 0;
        for offset in -2..=3 {
            let day = calendar.date(offset);
            let kept = match runtime.block_on(pipeline.run(day)) {
                Ok(summary) => {
                    prop_assert_eq!(summary.rows_read, summary.rows_written + summary.rows_routed + summary.rows_rejected, "{}", day);
                    read += summary.rows_written + summary.rows_rejected;
                    runtime.block_on(pipeline.kept(day))
                }
                Err(error) => {
                    prop_assert!(error.to_string().contains("no input objects"), "{}: {}", day, error);
                    BTreeSet::new()
                }
            };
            prop_assert_eq!(kept, expected.kept.get(&day).cloned().unwrap_or_default(), "{}", day);
        }
        prop_assert_eq!(pipeline.rejected_rows(), expected.rejected);
        let rows: usize = objects.iter().map(|object| object.rows.len()).sum();
        prop_assert_eq!(read, rows as u64, "across the days, every row kept or rejected once");
    }
}

/// Firehose files the last minutes of the 24th under the 25th. With a lateness of 2 hours the
/// 24th reads them and holds them; an object that arrives under the 25th after 02:00 is late:
/// the 24th does not change, and the 25th's run rejects its row of the 24th as `late`. A late
/// object within the lateness makes the 24th's inputs change, so it is processed again.
#[tokio::test]
async fn rows_filed_under_the_next_day_belong_to_their_own() {
    let pipeline = Pipeline::new("2h");
    let (day, next) = (date(1), date(2));
    let object = |directory, arrival_minutes, event_minutes: &[i64]| Object { directory, arrival_minutes, rows: event_minutes.iter().map(|m| Row::At(Some(*m))).collect() };
    let minutes = |date: NaiveDate, minute: i64| (start(date) - start(self::date(0))).num_minutes() + minute;
    write(UTC, pipeline.source.path(), &[object(1, 600, &[minutes(day, 600)]), object(2, 5, &[minutes(day, 1438), minutes(next, 1)])]);
    let first = pipeline.run(day).await.unwrap();
    assert_eq!((first.rows_read, first.rows_written, first.rows_routed, first.rows_rejected), (3, 2, 1, 0));
    assert_eq!(pipeline.kept(day).await, BTreeSet::from([0, 100]), "the 24th holds its row filed under the 25th");
    let second = pipeline.run(next).await.unwrap();
    assert_eq!((second.rows_written, second.rows_routed), (1, 2), "the 24th's rows in both directories are routed");

    // Within the lateness: the 24th's inputs change and it is processed again.
    write(UTC, pipeline.source.path(), &[object(1, 600, &[minutes(day, 600)]), object(2, 5, &[minutes(day, 1438), minutes(next, 1)]), object(2, 90, &[minutes(day, 1439)])]);
    let again = pipeline.run(day).await.unwrap();
    assert!(!again.skipped && again.rows_written == 3, "{again:?}");
    // After it: the 24th is unchanged, the 25th rejects the row as late.
    write(UTC, pipeline.source.path(), &[object(1, 600, &[minutes(day, 600)]), object(2, 5, &[minutes(day, 1438), minutes(next, 1)]), object(2, 90, &[minutes(day, 1439)]), object(2, 150, &[minutes(day, 1439)])]);
    assert!(pipeline.run(day).await.unwrap().skipped, "an object after the lateness is not the 24th's");
    let late = pipeline.run(next).await.unwrap();
    assert_eq!((late.rows_read, late.rows_written, late.rows_routed, late.rows_rejected), (5, 1, 3, 1));
    assert_eq!(pipeline.rejected_rows(), BTreeMap::from([(300, "late".to_string())]));
}

/// A bad row belongs to its directory: under `policy: fail` the run of its own day fails naming
/// it; the day before, which reads the object for its in-time rows, counts it as routed.
#[tokio::test]
async fn a_bad_row_fails_only_the_run_of_its_own_directory() {
    let pipeline = Pipeline::new("2h");
    let (day, next) = (date(1), date(2));
    let minute = (start(next) - start(date(0))).num_minutes() - 1;
    write(UTC, pipeline.source.path(), &[
        Object { directory: 1, arrival_minutes: 600, rows: vec![Row::At(Some(minute - 600))] },
        Object { directory: 2, arrival_minutes: 5, rows: vec![Row::At(Some(minute)), Row::Bad] },
    ]);
    let fail = |day| {
        let mut task = pipeline.task(day);
        task.pipeline.bad_records.policy = BadRecordPolicy::Fail;
        task
    };
    let summary = eventpipe_transformer::run::run(&fail(day)).await.unwrap();
    assert_eq!((summary.rows_read, summary.rows_written, summary.rows_routed, summary.rows_rejected), (3, 2, 1, 0));
    let error = eventpipe_transformer::run::run(&fail(next)).await.unwrap_err().to_string();
    assert!(error.contains("object-1.csv") && error.contains("line 3"), "{error}");
}

/// Hourly partitions: the 23:00 hour reads the next hour's objects that arrived within its
/// 30 minutes of lateness; a later object's row of 23:00 is rejected as late by 00:00's run.
#[tokio::test]
async fn hours_read_the_next_hours_objects_within_the_lateness() {
    let pipeline = Pipeline::new("30m");
    let hour = |day: NaiveDate, hour: u8| PartitionKey { hour: Some(hour), ..key(day) };
    let (eleven, midnight) = (hour(date(1), 23), hour(date(2), 0));
    let at = |key: &PartitionKey, minutes: i64| key.start().unwrap() + Duration::minutes(minutes);
    let put = |key: &PartitionKey, name: &str, rows: &[(i64, DateTime<Utc>)], arrived: DateTime<Utc>| {
        let dir = pipeline.source.path().join(key.sink_path());
        std::fs::create_dir_all(&dir).unwrap();
        let body: String = rows.iter().map(|(id, at)| format!("{id},n,v,{}\n", at.timestamp())).collect();
        std::fs::write(dir.join(name), format!("{}{body}", support::HEADER)).unwrap();
        std::fs::File::options().write(true).open(dir.join(name)).unwrap().set_modified(arrived.into()).unwrap();
    };
    put(&eleven, "a.csv", &[(1, at(&eleven, 10))], at(&eleven, 15));
    put(&midnight, "b.csv", &[(2, at(&eleven, 59)), (3, at(&midnight, 1))], at(&midnight, 20));
    put(&midnight, "c.csv", &[(4, at(&eleven, 59))], at(&midnight, 40));
    let run = |key: PartitionKey| {
        let mut task = pipeline.task(date(0));
        task.partition = key;
        task.pipeline.source.layout = "year={year}/month={month}/day={day}/hour={hour}/".into();
        async move { eventpipe_transformer::run::run(&task).await.unwrap() }
    };
    let first = run(eleven).await;
    assert_eq!((first.rows_read, first.rows_written, first.rows_routed, first.rows_rejected), (3, 2, 1, 0), "{first:?}");
    let second = run(midnight).await;
    assert_eq!((second.rows_read, second.rows_written, second.rows_routed, second.rows_rejected), (4, 1, 2, 1), "{second:?}");
    let late: Vec<String> = std::fs::read_to_string(pipeline.rejected.path().join(midnight.sink_path()).join(format!("rejected-{}.jsonl", second.run_id)))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(late.len(), 1);
    assert!(late[0].contains("\"reason\":\"late\"") && late[0].contains("\"id\":4"), "{late:?}");
}
