//! When a partition may run: settling objects in append mode, closing days, open refreshes.

use super::*;

#[test]
fn a_firehose_day_in_append_mode_converts_each_object_once_it_settles() {
    let scenario = appending().growing(TODAY, &[-600, -30]);
    let plan = scenario.plan();
    assert_eq!(plan.launches.len(), 1);
    let first = plan.launches[0].clone();
    assert_eq!((first.fingerprint.as_str(), first.settled_before), ("n1", Some(at(-120))), "only the settled object");
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.period, plan.status.mode), (Some(Period::Open), Some(ProcessingMode::Append)));

    let scenario = scenario.next(&plan).finish(&first.job, committed(&first, 1));
    let plan = scenario.plan();
    assert!(plan.launches.is_empty(), "the second object has not settled");
    assert_eq!(states(&plan), vec![("day=28".into(), PartitionState::Succeeded, 1)]);
    assert_eq!(plan.requeue_after, Duration::from_secs(90), "looked at again when it settles");

    let mut scenario = scenario.next(&plan);
    scenario.now = at(90);
    let scenario = scenario.growing(TODAY, &[-600, -30, 80]);
    let plan = scenario.plan();
    let second = plan.launches[0].clone();
    assert_eq!((second.fingerprint.as_str(), second.settled_before, second.force), ("n2", Some(at(-30)), false));
    assert!(!plan.happenings.iter().any(|h| matches!(h, Happening::Outdated { .. })), "growing is not a change");
    let plan = scenario.next(&plan).finish(&second.job, committed(&second, 2)).plan();
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.state, entry.increments, entry.fingerprint.as_str()), (PartitionState::Succeeded, Some(2), "n2"));
}

#[test]
fn an_aggregation_runs_once_when_its_day_closes() {
    let mut scenario = Scenario::new().partition(TODAY, "a", -600);
    scenario.spec.schedule.grace_period_seconds = 120;
    scenario.spec.schedule.poll_interval_seconds = 3600 * 24;
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    let entry = &plan.status.partitions[0];
    let closes = Timestamp::from_second(NOW + 8 * 3600 + 120).unwrap();
    assert_eq!((entry.state, entry.period, entry.not_before.clone()), (PartitionState::Open, Some(Period::Open), Some(Time(closes))));
    assert_eq!(condition(&plan, "Ready").0, "True", "waiting for the day to end is not pending work");
    assert_eq!(plan.requeue_after, Duration::from_secs(8 * 3600 + 120), "looked at again when it closes");

    // More objects while open change nothing but the fingerprint.
    let mut scenario = scenario.next(&plan);
    scenario.partitions[0].fingerprint = "b".into();
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    assert_eq!(plan.status.partitions[0].state, PartitionState::Open);

    let mut scenario = scenario.next(&plan);
    scenario.now = closes;
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(TODAY, 1)]);
    assert_eq!((plan.launches[0].fingerprint.as_str(), plan.launches[0].settled_before), ("b", None));
    assert_eq!(plan.status.partitions[0].period, Some(Period::Closed));
}

#[test]
fn open_refresh_recomputes_an_open_aggregation_at_most_that_often() {
    let mut scenario = Scenario::new().partition(TODAY, "a", -600);
    scenario.spec.schedule.open_refresh_seconds = Some(3600);
    let mut scenario = scenario.first_launch_committed();
    scenario.partitions[0].fingerprint = "b".into();
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.state, entry.not_before.clone()), (PartitionState::Settling, Some(Time(at(3600)))));
    let mut scenario = scenario.next(&plan);
    scenario.now = at(3600);
    assert_eq!(launched(&scenario.plan()), vec![(TODAY, 1)]);
}

#[test]
fn an_sql_change_to_an_aggregation_waits_for_the_open_day_to_close() {
    let mut scenario = appending().growing(TODAY, &[-600]).first_launch_committed();
    scenario.mode = Mode::full("the SQL aggregates rows (GROUP BY or an aggregate function)");
    scenario.spec_hash = "spec-2".into();
    scenario.generation = 2;
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    assert_eq!(plan.status.partitions[0].state, PartitionState::Open);
    assert_eq!(plan.status.mode, Some(ProcessingMode::Full));
    assert!(plan.status.mode_reason.as_deref().unwrap().contains("aggregates"));
    assert!(plan.happenings.contains(&Happening::Outdated { partition: day(TODAY).to_string(), cause: Outdated::Spec }));
}

#[test]
fn a_fresh_partition_settles_for_the_grace_period() {
    let mut scenario = Scenario::new().partition(24, "c", -30);
    scenario.spec.schedule.grace_period_seconds = 120;
    scenario.spec.schedule.poll_interval_seconds = 600;
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    assert_eq!(states(&plan), vec![("day=24".into(), PartitionState::Settling, 0)]);
    assert_eq!(plan.requeue_after, Duration::from_secs(90));
    scenario.previous = plan.status;
    scenario.now = at(90);
    assert_eq!(launched(&scenario.plan()), vec![(24, 1)]);
}
