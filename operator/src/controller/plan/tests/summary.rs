//! The summary: conditions, counts, a window longer than the status can list.

use super::*;

#[test]
fn everything_done_is_ready_and_a_second_identical_reconcile_plans_the_same_status() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let scenario = scenario.next(&first).finish(&first.launches[0].job, JobOutcome::Succeeded(Some(summary(4))));
    let done = scenario.plan();
    assert_eq!(condition(&done, "Ready"), ("True", "UpToDate"));
    assert_eq!(condition(&done, "Progressing"), ("False", "UpToDate"));
    let mut again = scenario;
    again.previous = done.status.clone();
    again.now = at(600);
    let idle = again.plan();
    assert_eq!(idle.status, done.status, "nothing new must change nothing, timestamps included");
    assert!(idle.launches.is_empty() && idle.happenings.is_empty());
    assert_eq!(idle.requeue_after, Duration::from_secs(60));
}

#[test]
fn without_partitions_the_pipeline_is_not_ready_and_says_where_it_looked() {
    let plan = Scenario::new().plan();
    assert_eq!(condition(&plan, "Ready"), ("False", "NoPartitions"));
    assert_eq!(condition(&plan, "Degraded"), ("False", "AsExpected"));
    let ready = plan.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("s3://b/events/ from 2026-11-18 to 2026-11-24"), "{}", ready.message);
}

#[test]
fn partitions_leaving_the_window_are_dropped_once_their_jobs_finish() {
    let scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10);
    let first = scenario.plan();
    let mut scenario = scenario.next(&first);
    scenario.partitions.remove(0);
    let plan = scenario.plan();
    assert_eq!(states(&plan).len(), 2, "day 22 is still running");
    let scenario = scenario.next(&plan).finish(&first.launches[0].job, JobOutcome::Succeeded(Some(summary(1))));
    let plan = scenario.plan();
    assert_eq!(states(&plan), vec![("day=23".into(), PartitionState::Running, 1)]);
    assert_eq!(plan.status.last_completed_partition.as_deref(), Some("year=2026/month=11/day=22"));
}

/// An hourly layout over a month of November: 28 days × 24 hours, more than the status lists.
fn hourly_month() -> Scenario {
    let mut scenario = Scenario::new();
    for day_of_month in 1..=28 {
        for hour in 0..24 {
            let key = PartitionKey { hour: Some(hour), ..day(day_of_month) };
            scenario.partitions.push(ObservedPartition { key, fingerprint: format!("f{day_of_month}-{hour}"), modified: vec![at(-7200)], settled: None });
        }
    }
    scenario.now = at(3 * 86400);
    scenario
}

#[test]
fn a_window_longer_than_the_status_is_counted_in_full_and_processed_oldest_first() {
    let scenario = hourly_month();
    let plan = scenario.plan();
    assert_eq!(plan.launches.iter().map(|l| l.partition.to_string()).collect::<Vec<_>>(), ["year=2026/month=11/day=01/hour=00", "year=2026/month=11/day=01/hour=01"]);
    let status = &plan.status;
    assert_eq!(status.partitions.len(), status::MAX_LISTED);
    assert_eq!((status.partition_counts.pending, status.partition_counts.running), (670, 2));
    assert_eq!(status.oldest_unprocessed_partition.as_deref(), Some("year=2026/month=11/day=01/hour=00"));
    assert_eq!(condition(&plan, "Ready"), ("False", "Processing"));
    assert_eq!(plan.entries.len(), 672);
}

/// Partitions the status no longer lists (the window is longer than it) are found committed in
/// their manifests, not launched again.
#[test]
fn partitions_the_status_does_not_list_are_checked_against_their_manifests() {
    let mut scenario = hourly_month();
    for partition in &scenario.partitions {
        let committed = Summary { input_fingerprint: partition.fingerprint.clone(), ..summary(4) };
        scenario.sink.insert(partition.key.to_string(), Committed::Output(committed));
    }
    let plan = scenario.plan();
    assert!(plan.launches.is_empty(), "{:?}", plan.launches.first());
    assert_eq!(plan.status.partition_counts.succeeded, 672);
    assert_eq!(plan.status.oldest_unprocessed_partition, None);
    assert_eq!(condition(&plan, "Ready"), ("True", "UpToDate"));
    assert_eq!(plan.status.partitions.first().map(|p| p.partition.as_str()), Some("year=2026/month=11/day=12/hour=08"), "the newest 400 are listed");
}

/// When as many partitions as the status lists are failed or retrying, no more are launched
/// (their state could not be kept), and a condition says how many wait.
#[test]
fn partitions_beyond_what_the_status_can_track_wait_and_say_so() {
    let mut scenario = hourly_month();
    let failed = |partition: &ObservedPartition| PartitionStatus {
        partition: partition.key.to_string(),
        fingerprint: partition.fingerprint.clone(),
        spec_hash: SPEC.into(),
        state: PartitionState::Failed,
        attempts: 3,
        failures: 3,
        launch: 3,
        message: Some("bad row".into()),
        ..PartitionStatus::default()
    };
    scenario.previous.partitions = scenario.partitions.iter().take(status::MAX_LISTED).map(failed).collect();
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    assert_eq!(plan.held, 272, "every other partition waits");
    let (ready, reason) = condition(&plan, "Degraded");
    assert_eq!((ready, reason), ("True", "PartitionsFailed"));
    let message = &plan.status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap().message;
    assert!(message.contains("more partitions wait until fewer are failed or retrying"), "{message}");
}
