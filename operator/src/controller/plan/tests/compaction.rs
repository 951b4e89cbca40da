//! Compaction: a closed append-mode partition of a Delta sink whose output is several increments
//! gets one more Job, which compacts them; an open partition, a Parquet sink or a compacted
//! output gets none.

use eventpipe_transformer::spec::SinkFormat;

use super::*;

fn delta(mut scenario: Scenario) -> Scenario {
    scenario.spec.pipeline.sink.format = SinkFormat::Delta;
    scenario
}

/// The first launch of the scenario's only partition, committed as `increments` runs' output.
fn increments_committed(scenario: Scenario, increments: u32) -> (Scenario, Plan) {
    let plan = scenario.plan();
    let launch = plan.launches[0].clone();
    assert!(!launch.compact, "a partition without committed output is converted, not compacted");
    let scenario = scenario.next(&plan).finish(&launch.job, committed(&launch, increments));
    let plan = scenario.plan();
    (scenario, plan)
}

#[test]
fn a_closed_partition_of_increments_is_compacted_by_one_more_job() {
    let (scenario, plan) = increments_committed(delta(appending()).growing(24, &[-7200, -3600]), 3);
    assert_eq!(launched(&plan), vec![(24, 1)]);
    let compaction = plan.launches[0].clone();
    assert!(compaction.compact);
    assert_eq!((compaction.fingerprint.as_str(), compaction.launch), ("n2", 2));
    assert!(plan.status.partitions[0].message.as_deref().is_some_and(|m| m.contains("closed with 3 increments")));

    let scenario = scenario.next(&plan).finish(&compaction.job, committed(&compaction, 1));
    let after = scenario.plan();
    assert!(after.launches.is_empty(), "a compacted output is one run's: {:?}", after.launches);
    assert_eq!(states(&after), vec![("day=24".into(), PartitionState::Succeeded, 1)]);
    assert_eq!(after.status.partitions[0].increments, Some(1));
}

#[test]
fn an_open_partition_a_parquet_sink_and_a_whole_run_are_not_compacted() {
    let (_, open) = increments_committed(delta(appending()).growing(TODAY, &[-7200, -3600]), 3);
    let (_, parquet) = increments_committed(appending().growing(24, &[-7200, -3600]), 3);
    let (_, whole) = increments_committed(delta(appending()).growing(24, &[-7200, -3600]), 1);
    for plan in [open, parquet, whole] {
        assert!(plan.launches.is_empty(), "{:?}", plan.launches);
        assert_eq!(plan.status.partitions[0].state, PartitionState::Succeeded);
    }
}

#[test]
fn a_failed_compaction_is_retried_as_a_compaction() {
    let (scenario, plan) = increments_committed(delta(appending()).growing(24, &[-7200, -3600]), 3);
    let compaction = plan.launches[0].clone();
    let failed = JobOutcome::Failed("Delta table s3://b/out/: connection reset".into());
    let mut scenario = scenario.next(&plan).finish(&compaction.job, failed);
    scenario.previous = scenario.plan().status;
    scenario.now = at(60);
    let retry = scenario.plan();
    assert_eq!(launched(&retry), vec![(24, 2)]);
    assert!(retry.launches[0].compact);
}
