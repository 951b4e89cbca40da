//! What is launched: the oldest partitions while Job slots are free, nothing while suspended or deleted, and requests through annotations.

use super::*;

#[test]
fn first_run_launches_the_oldest_partitions_up_to_the_concurrency_cap() {
    let scenario = Scenario::new().partition(24, "c", -10).partition(22, "a", -10).partition(23, "b", -10);
    let mut scenario = scenario;
    scenario.partitions.sort_by_key(|p| p.key);
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(22, 1), (23, 1)]);
    assert_eq!(
        states(&plan),
        vec![
            ("day=22".into(), PartitionState::Running, 1),
            ("day=23".into(), PartitionState::Running, 1),
            ("day=24".into(), PartitionState::Pending, 0)
        ]
    );
    assert_eq!((plan.status.pending_partitions, plan.status.running_jobs), (1, 2));
    assert_eq!(condition(&plan, "Ready"), ("False", "Processing"));
    assert_eq!(condition(&plan, "Progressing"), ("True", "Processing"));
    assert_eq!(condition(&plan, "Degraded"), ("False", "AsExpected"));
    assert_eq!(plan.launches[0].job, name(22, "a", 1));
}

#[test]
fn a_finished_job_frees_its_slot_for_the_next_partition_and_records_the_summary() {
    let scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10).partition(24, "c", -10);
    let first = scenario.plan();
    let scenario = scenario.next(&first);
    let job = first.launches[0].job.clone();
    let scenario = scenario.finish(&job, JobOutcome::Succeeded(Some(summary(10))));
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(24, 1)]);
    let done = &plan.status.partitions[0];
    assert_eq!((done.state, done.rows_read, done.rows_written, done.seconds), (PartitionState::Succeeded, Some(10), Some(5), Some(1.235)));
    assert_eq!(plan.status.last_completed_partition.as_deref(), Some("year=2026/month=11/day=22"));
    assert!(matches!(&plan.happenings[0], Happening::Succeeded { job: j, .. } if *j == job));
}

#[test]
fn suspend_launches_nothing_but_still_records_results() {
    let scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10);
    let first = Scenario { spec: EventPipelineSpec { execution: ExecutionSpec { max_concurrent_jobs: 1, ..Scenario::new().spec.execution }, ..Scenario::new().spec }, ..scenario };
    let plan = first.plan();
    let mut scenario = first.next(&plan).finish(&plan.launches[0].job, JobOutcome::Succeeded(None));
    scenario.spec.suspend = true;
    let suspended = scenario.plan();
    assert!(suspended.launches.is_empty());
    assert_eq!(
        states(&suspended),
        vec![("day=22".into(), PartitionState::Succeeded, 1), ("day=23".into(), PartitionState::Pending, 0)]
    );
    assert_eq!(condition(&suspended, "Ready"), ("False", "Suspended"));
    assert_eq!(suspended.status.partitions[0].message.as_deref(), Some(&*format!("Job {} succeeded without reporting a summary", plan.launches[0].job)));
}

#[test]
fn a_retry_request_gives_failed_partitions_new_attempts_once() {
    let mut scenario = Scenario::new().partition(22, "a", -10);
    scenario.spec.execution.max_attempts = 1;
    let mut scenario = scenario.first_launch_ends(|_| JobOutcome::Failed("boom".into()));
    scenario.retry = Some("1".into());
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(22, 2)]);
    assert!(plan.happenings.contains(&Happening::RetryRequested { partitions: 1 }));
    assert_eq!(plan.status.last_retry_request.as_deref(), Some("1"));
    let mut scenario = scenario.next(&plan).finish(&plan.launches[0].job, JobOutcome::Failed("boom again".into()));
    let failed = scenario.plan();
    assert_eq!(states(&failed), vec![("day=22".into(), PartitionState::Failed, 2)], "the same value is acted on once");
    scenario.previous = failed.status;
    assert!(scenario.plan().launches.is_empty());
}

#[test]
fn a_reprocess_request_processes_one_committed_partition_again_with_force() {
    let mut scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10).all_done();
    scenario.reprocess = Some(day(23).to_string());
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(23, 2)]);
    assert!(plan.launches[0].force);
    assert_eq!(plan.status.last_reprocess_request.as_deref(), Some("year=2026/month=11/day=23"));
    let refused = vec![(plan.launches[0].job.clone(), "denied by an admission webhook".to_string())];
    let kept = launch_refused(plan.clone(), &scenario.observation(), &refused);
    assert_eq!(kept.status.last_reprocess_request, None, "a refused reprocess is still requested");
    let scenario = scenario.next(&plan);
    assert!(scenario.plan().launches.is_empty(), "handled once");

    let mut unknown = Scenario::new().partition(22, "a", -10).all_done();
    unknown.reprocess = Some("year=2020/month=01/day=01".into());
    let ignored = unknown.plan();
    assert_eq!(condition(&ignored, "Ready"), ("True", "UpToDate"));
    assert!(ignored.launches.is_empty());
    assert!(matches!(&ignored.happenings[0], Happening::RequestIgnored { message } if message.contains("year=2020")));
}

/// `kubectl annotate evp NAME eventpipe.dev/reprocess-` and then the same value again: a second
/// request for the same partition.
#[test]
fn a_reprocess_request_for_the_same_partition_works_again_after_the_annotation_was_removed() {
    let mut scenario = Scenario::new().partition(22, "a", -10).all_done();
    scenario.reprocess = Some(day(22).to_string());
    let first = scenario.plan();
    let launch = first.launches[0].clone();
    assert!(launch.force);
    let mut scenario = scenario.next(&first).finish(&launch.job, committed(&launch, 1));
    scenario.previous = scenario.plan().status;
    scenario.reprocess = None;
    scenario.previous = scenario.plan().status;
    scenario.reprocess = Some(day(22).to_string());
    let again = scenario.plan();
    assert_eq!(again.launches.iter().map(|l| l.force).collect::<Vec<_>>(), [true], "{:?}", again.happenings);
}

/// A pipeline with a `deletionTimestamp` (a finalizer, or foreground deletion, keeps it a while)
/// creates no Job: its Jobs would be owned by an object on its way out.
#[test]
fn a_pipeline_being_deleted_launches_nothing() {
    let mut scenario = Scenario::new().partition(22, "a", -10);
    scenario.deleting = true;
    let plan = scenario.plan();
    assert!(plan.launches.is_empty(), "{:?}", plan.launches);
}
