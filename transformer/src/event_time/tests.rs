use proptest::prelude::*;

use super::*;
use crate::spec::{Column, EventTimeSpec, TimestampUnit};
use crate::task::InputObject;

fn event_time(lateness: &str, zone: Option<&str>, layout: &str) -> EventTime {
    let source = SourceSpec {
        schema: vec![Column { name: "ts".into(), data_type: ColumnType::Timestamp, nullable: true, unit: Some(TimestampUnit::Seconds), format: None }],
        event_time: Some(EventTimeSpec { column: "ts".into(), lateness: lateness.into(), time_zone: zone.map(str::to_string) }),
        ..SourceSpec::default()
    };
    EventTime::of(&source, &Layout::parse(layout).unwrap()).unwrap().unwrap()
}

fn daily(lateness: &str) -> EventTime {
    event_time(lateness, None, "year={year}/month={month}/day={day}/")
}

fn day(day: u8) -> PartitionKey {
    PartitionKey { year: 2026, month: 11, day, hour: None }
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

#[test]
fn a_day_reads_the_day_before_and_the_days_its_lateness_reaches() {
    assert_eq!(daily("2h").reads(&day(24)), [day(23), day(24), day(25)]);
    assert_eq!(daily("0m").reads(&day(24)), [day(23), day(24), day(25)], "an object of the next day modified before midnight");
    assert_eq!(daily("1d").reads(&day(24)), [day(23), day(24), day(25), day(26)]);
    assert_eq!(daily("2h").readers(&day(25)), [day(24), day(25), day(26)]);
    let hourly = event_time("90m", None, "{year}/{month}/{day}/{hour}/");
    let hour = |day, hour| PartitionKey { year: 2026, month: 11, day, hour: Some(hour) };
    assert_eq!(hourly.reads(&hour(24, 23)), [hour(24, 22), hour(24, 23), hour(25, 0), hour(25, 1)]);
}

#[test]
fn an_object_after_the_lateness_is_read_by_its_own_directory_only() {
    let event_time = daily("2h");
    assert!(event_time.includes(&day(24), &day(25), at("2026-11-25T01:59:59Z")));
    assert!(!event_time.includes(&day(24), &day(25), at("2026-11-25T02:00:01Z")));
    assert!(event_time.includes(&day(25), &day(25), at("2027-01-01T00:00:00Z")));
    let bounds = event_time.fates(&day(25), &day(25), at("2026-11-25T03:00:00Z"));
    assert_eq!(bounds.fate(Some(at("2026-11-24T23:59:00Z"))), Fate::Late);
    assert_eq!(bounds.fate(Some(at("2026-11-25T12:00:00Z"))), Fate::Kept);
    assert_eq!(bounds.fate(Some(at("2026-11-26T12:00:00Z"))), Fate::Routed, "the next day reads it: clocks ahead");
    assert_eq!(bounds.fate(Some(at("2026-11-27T00:00:00Z"))), Fate::Early);
    assert_eq!(bounds.fate(None), Fate::NoEventTime);
    let in_time = event_time.fates(&day(25), &day(25), at("2026-11-25T01:00:00Z"));
    assert_eq!(in_time.fate(Some(at("2026-11-24T23:59:00Z"))), Fate::Routed);
    let neighbour = event_time.fates(&day(24), &day(25), at("2026-11-25T01:00:00Z"));
    assert_eq!(neighbour.fate(Some(at("2026-11-24T23:59:00Z"))), Fate::Kept);
    assert_eq!(neighbour.fate(None), Fate::Routed, "rejected by its own directory's run, not this one");
}

/// Partition bounds are local: a Berlin day starts at 23:00 UTC the day before, and the day its
/// clocks go forward has 23 hours.
#[test]
fn days_are_local_to_the_time_zone() {
    let berlin = event_time("2h", Some("Europe/Berlin"), "year={year}/month={month}/day={day}/");
    assert_eq!(berlin.start(&day(24)), at("2026-11-23T23:00:00Z"));
    assert_eq!(berlin.partition_of(at("2026-11-24T23:30:00Z")), day(25));
    let spring = PartitionKey { year: 2026, month: 3, day: 29, hour: None };
    assert_eq!(berlin.end(&spring) - berlin.start(&spring), Duration::hours(23));
}

#[test]
fn bad_event_time_specs_are_named() {
    let layout = Layout::parse("year={year}/month={month}/day={day}/").unwrap();
    let mut source = SourceSpec {
        schema: vec![Column { name: "id".into(), data_type: ColumnType::Int64, nullable: true, unit: None, format: None }],
        event_time: Some(EventTimeSpec { column: "id".into(), lateness: "2h".into(), time_zone: None }),
        ..SourceSpec::default()
    };
    let message = |source: &SourceSpec| EventTime::of(source, &layout).unwrap_err().to_string();
    assert!(message(&source).contains("must be a timestamp column"), "{}", message(&source));
    source.event_time.as_mut().unwrap().column = "ts".into();
    assert!(message(&source).contains("is not a column"), "{}", message(&source));
    source.schema[0] = Column { name: "ts".into(), data_type: ColumnType::Timestamp, nullable: true, unit: None, format: None };
    source.event_time.as_mut().unwrap().lateness = "8d".into();
    assert!(message(&source).contains("at most 7d"), "{}", message(&source));
    source.event_time.as_mut().unwrap().lateness = "2w".into();
    assert!(message(&source).contains("lateness"), "{}", message(&source));
}

/// One generated row: its directory (days after the 20th), its object's arrival (minutes after
/// the directory's start) and its event time (minutes after the 20th), if any.
#[derive(Clone, Debug)]
struct Row {
    directory: i64,
    arrival_minutes: i64,
    event_minutes: Option<i64>,
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    let row = (0..4i64, -120..3000i64, proptest::option::weighted(0.95, -2000..9000i64))
        .prop_map(|(directory, arrival_minutes, event_minutes)| Row { directory, arrival_minutes, event_minutes });
    proptest::collection::vec(row, 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(25), failure_persistence: None, ..ProptestConfig::default() })]

    /// The reference: a row is kept by the partition of its event time when that partition reads
    /// its object, and else rejected by its own directory's run, once; every other run that reads
    /// the object counts it as routed. Checked over the outputs `compose` makes, in UTC and in a
    /// time zone with a daylight-saving change in the range.
    #[test]
    fn every_row_is_kept_or_rejected_exactly_once(rows in rows(), lateness_minutes in 0..2880i64, berlin in any::<bool>()) {
        let zone = berlin.then_some("Europe/Berlin");
        let event_time = event_time(&format!("{lateness_minutes}m"), zone, "year={year}/month={month}/day={day}/");
        let base = PartitionKey { year: 2026, month: 3, day: 27, hour: None };
        let mut sources = Partitions::new();
        let mut objects = Vec::new();
        for (index, row) in rows.iter().enumerate() {
            let directory = event_time.step(&base, row.directory);
            let modified = event_time.start(&directory) + Duration::minutes(row.arrival_minutes);
            let input = InputObject { path: format!("{directory}/{index}.csv"), size: 1, etag: Some(index.to_string()), modified: None };
            let found = sources.entry(directory).or_insert_with(|| DiscoveredPartition { inputs: Vec::new(), modified: Vec::new() });
            found.inputs.push(input.clone());
            found.modified.push(modified);
            let event = row.event_minutes.map(|minutes| event_time.start(&base) + Duration::minutes(minutes));
            objects.push((input, directory, modified, event));
        }
        let outputs = event_time.compose(&sources);
        for (input, directory, modified, event) in &objects {
            let mut kept = 0;
            let mut rejected = 0;
            for (output, composed) in &outputs {
                if !composed.inputs.contains(input) {
                    continue;
                }
                let fate = event_time.fates(output, directory, *modified).fate(*event);
                match fate {
                    Fate::Kept => kept += 1,
                    Fate::Routed => {}
                    rejected_as => {
                        prop_assert_eq!(output, directory, "only a directory's own run rejects");
                        rejected += 1;
                        let owner = event.map(|event| event_time.partition_of(event));
                        match rejected_as {
                            Fate::NoEventTime => prop_assert!(owner.is_none()),
                            Fate::Early => prop_assert!(owner.is_some_and(|owner| owner > event_time.step(directory, 1))),
                            _ => prop_assert!(owner.is_some_and(|owner| !event_time.includes(&owner, directory, *modified) && owner <= event_time.step(directory, 1))),
                        }
                    }
                }
            }
            prop_assert_eq!(kept + rejected, 1, "{:?} of {} modified {} with event time {:?}", input, directory, modified, event);
            // The rule as the spec states it: the partition of the event time reads the object if
            // it is its directory, or the day after it (clocks ahead), or a day before it whose end
            // plus the lateness is past both the directory's start and the object's arrival.
            let owner = event.map(|event| event_time.partition_of(event));
            let reach = |owner: &PartitionKey| event_time.end(owner) + event_time.lateness();
            let owner_reads = owner.is_some_and(|owner| {
                owner == *directory
                    || (owner == event_time.step(directory, 1) && *modified <= reach(&owner))
                    || (owner < *directory && event_time.start(directory) <= reach(&owner) && *modified <= reach(&owner))
            });
            prop_assert_eq!(kept == 1, owner_reads, "kept exactly when its partition reads its object");
        }
    }
}
