//! Decisions that no longer hold: new inputs, spec changes and rollbacks, Jobs launched for a decision the status never recorded, states another version wrote.

use super::*;

#[test]
fn a_replaced_object_in_an_append_partition_is_run_again() {
    let mut scenario = appending().growing(TODAY, &[-600]).first_launch_committed();
    // The object was overwritten: same count, another fingerprint. The Job sees that the
    // committed object changed and processes the whole partition.
    scenario.partitions[0].settled.as_mut().unwrap().fingerprint = "replaced".into();
    let plan = scenario.plan();
    assert_eq!(plan.launches.iter().map(|l| l.fingerprint.as_str()).collect::<Vec<_>>(), ["replaced"]);
}

#[test]
fn a_late_file_after_close_processes_the_partition_again() {
    let scenario = Scenario::new().partition(24, "a", -7200).all_done();
    let mut scenario = scenario;
    scenario.partitions[0] = ObservedPartition { fingerprint: "late".into(), ..scenario.partitions[0].clone() };
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(24, 1)]);
    assert!(plan.happenings.contains(&Happening::Outdated { partition: day(24).to_string(), cause: Outdated::Inputs }));
}

#[test]
fn a_spec_change_gives_failed_partitions_new_attempts_under_new_job_names() {
    let mut scenario = Scenario::new().partition(22, "a", -10);
    scenario.spec.execution.max_attempts = 1;
    let first = scenario.plan();
    let mut scenario = scenario.next(&first).finish(&first.launches[0].job, JobOutcome::Failed("boom".into()));
    let failed = scenario.plan();
    assert_eq!(states(&failed), vec![("day=22".into(), PartitionState::Failed, 1)]);
    scenario.previous = failed.status;
    scenario.generation = 2;
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(22, 2)]);
    assert_ne!(plan.launches[0].job, first.launches[0].job);
}

#[test]
fn new_inputs_after_success_are_processed_again() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let mut scenario = scenario.next(&first).finish(&first.launches[0].job, JobOutcome::Succeeded(Some(summary(2))));
    scenario.previous = scenario.plan().status;
    scenario.partitions[0].fingerprint = "a2".into();
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(22, 1)]);
    assert_eq!(plan.launches[0].fingerprint, "a2");
    assert_eq!(plan.happenings[0], Happening::Outdated { partition: day(22).to_string(), cause: Outdated::Inputs });
}

#[test]
fn new_inputs_while_running_wait_for_the_running_job() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let mut scenario = scenario.next(&first);
    scenario.partitions[0].fingerprint = "a2".into();
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    assert_eq!(plan.status.partitions[0].fingerprint, "a");
    let mut scenario = scenario.next(&plan).finish(&first.launches[0].job, JobOutcome::Succeeded(Some(summary(2))));
    let finished = scenario.plan();
    assert!(finished.launches.is_empty() && finished.relist, "the result is newer than the listing: list again first");
    scenario.previous = finished.status;
    let plan = scenario.plan();
    assert_eq!(plan.launches.iter().map(|l| l.fingerprint.as_str()).collect::<Vec<_>>(), vec!["a2"]);
}

#[test]
fn a_data_path_change_reprocesses_the_window_oldest_first_under_the_cap() {
    let mut scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10).partition(24, "c", -10).all_done();
    scenario.generation = 2;
    scenario.spec_hash = "spec-2".into();
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(22, 1), (23, 1)]);
    assert_eq!(plan.launches[0].job, name_with(22, "a", "spec-2", 2), "the partition's second launch");
    assert!(plan.launches.iter().all(|l| l.spec_hash == "spec-2"));
    let outdated: Vec<_> = plan.happenings.iter().filter(|h| matches!(h, Happening::Outdated { cause: Outdated::Spec, .. })).collect();
    assert_eq!(outdated.len(), 3);
    assert_eq!(states(&plan)[2], ("day=24".into(), PartitionState::Pending, 0));
}

#[test]
fn a_change_outside_the_data_path_reprocesses_nothing() {
    let mut scenario = Scenario::new().partition(22, "a", -10).all_done();
    scenario.generation = 2;
    scenario.spec.execution.max_concurrent_jobs = 5;
    let plan = scenario.plan();
    assert!(plan.launches.is_empty() && plan.happenings.is_empty(), "{:?}", plan.happenings);
}

/// S1 → S2 → S1: the Jobs of the first S1 run are still there (finished Jobs live for
/// `ttlSecondsAfterFinished`), but the sink holds S2's output, so S1 must run again.
#[test]
fn rolling_the_spec_back_runs_the_partition_again_instead_of_adopting_the_old_job() {
    let mut scenario = Scenario::new().partition(22, "a", -10).all_done();
    let first_job = scenario.previous.partitions[0].job.clone().unwrap();
    scenario.generation = 2;
    scenario.spec_hash = "spec-2".into();
    let mut scenario = scenario.first_launch_committed();
    assert_eq!((scenario.previous.partitions[0].state, scenario.previous.partitions[0].spec_hash.as_str()), (PartitionState::Succeeded, "spec-2"));

    scenario.generation = 3;
    scenario.spec_hash = SPEC.into();
    let rolled_back = scenario.plan();
    assert_eq!(rolled_back.launches.len(), 1, "S1 runs again: {:?}", states(&rolled_back));
    assert_ne!(rolled_back.launches[0].job, first_job, "a new Job, not the first S1 run's");
    assert_eq!(rolled_back.status.partitions[0].state, PartitionState::Running);
}

/// A wrongly uploaded object is deleted: the fingerprint returns to the first input set, whose
/// Job finished long ago; the sink holds the second set's output, so the first runs again.
#[test]
fn deleting_an_object_again_runs_the_partition_instead_of_adopting_the_old_job() {
    let mut scenario = Scenario::new().partition(22, "a", -10).all_done();
    scenario.partitions[0].fingerprint = "a+wrong".into();
    let mut scenario = scenario.first_launch_committed();
    scenario.partitions[0].fingerprint = "a".into();
    let plan = scenario.plan();
    assert_eq!(plan.launches.iter().map(|l| l.fingerprint.as_str()).collect::<Vec<_>>(), ["a"], "{:?}", states(&plan));
}

/// With one attempt, the first input set fails; an uploaded object makes a second set, which
/// succeeds; deleting the object returns to the first set, which gets a new run rather than its
/// old failure.
#[test]
fn with_one_attempt_returning_to_inputs_whose_job_failed_runs_them_again() {
    let mut scenario = Scenario::new().partition(22, "a", -10);
    scenario.spec.execution.max_attempts = 1;
    let mut scenario = scenario.first_launch_ends(|_| JobOutcome::Failed("boom".into()));
    assert_eq!(scenario.previous.partitions[0].state, PartitionState::Failed);
    scenario.partitions[0].fingerprint = "a+fix".into();
    let mut scenario = scenario.first_launch_committed();
    scenario.partitions[0].fingerprint = "a".into();
    let plan = scenario.plan();
    assert_eq!(launched(&plan).len(), 1, "{:?}", states(&plan));
    assert_eq!(plan.status.partitions[0].state, PartitionState::Running);
}

/// A Job for S2 was created, but the status write that recorded it was lost, and the spec went
/// back to S1: the S2 Job is never adopted; it is stopped, and S1 runs once it is gone, since
/// the S2 Job may have replaced the output.
#[test]
fn a_job_for_a_decision_the_status_never_recorded_is_stopped_and_the_partition_runs_again() {
    let mut scenario = Scenario::new().partition(22, "a", -10).all_done();
    let stray = ObservedJob {
        name: name_with(22, "a", "spec-2", 2),
        partition: day(22).to_string(),
        fingerprint: "a".into(),
        spec_hash: "spec-2".into(),
        attempt: 1,
        launch: 2,
        outcome: JobOutcome::Running,
        stopping: false,
        waiting: None,
        disruptions: Vec::new(),
    };
    scenario.jobs.push(stray.clone());
    let plan = scenario.plan();
    assert_eq!(plan.stops.iter().map(|s| s.job.as_str()).collect::<Vec<_>>(), [stray.name.as_str()]);
    assert!(plan.launches.is_empty(), "nothing runs beside it");
    assert_eq!(plan.status.partitions[0].state, PartitionState::Pending, "the output may be replaced: not claimed");
    let mut scenario = scenario.next(&plan);
    scenario.jobs.iter_mut().find(|j| j.name == stray.name).unwrap().stopping = true;
    let stopping = scenario.plan();
    assert!(stopping.stops.is_empty() && stopping.launches.is_empty(), "asked once; waits until it is gone");
    scenario.jobs.retain(|j| j.name != stray.name);
    let plan = scenario.plan();
    assert_eq!(plan.launches.iter().map(|l| (l.launch, l.spec_hash.as_str())).collect::<Vec<_>>(), [(3, SPEC)]);
}

/// The same, with the S2 Job already finished: what it left in the sink decides.
#[test]
fn a_finished_job_for_a_decision_the_status_never_recorded_is_checked_against_the_manifest() {
    let done = Scenario::new().partition(22, "a", -10).all_done();
    let stray = ObservedJob {
        name: name_with(22, "a", "spec-2", 2),
        partition: day(22).to_string(),
        fingerprint: "a".into(),
        spec_hash: "spec-2".into(),
        attempt: 1,
        launch: 2,
        outcome: JobOutcome::Failed("boom".into()),
        stopping: false,
        waiting: None,
        disruptions: Vec::new(),
    };
    let mut unchanged = Scenario { jobs: [done.jobs.clone(), vec![stray.clone()]].concat(), ..Scenario::new().partition(22, "a", -10) };
    (unchanged.previous, unchanged.sink) = (done.previous.clone(), done.sink.clone());
    let plan = unchanged.plan();
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.state, entry.launch), (PartitionState::Succeeded, 2), "the manifest still commits S1");
    assert!(plan.launches.is_empty());

    let mut replaced = unchanged;
    replaced.sink.insert(day(22).to_string(), Committed::Output(Summary { input_fingerprint: "a".into(), spec_hash: "spec-2".into(), ..summary(4) }));
    let plan = replaced.plan();
    assert_eq!(plan.launches.iter().map(|l| l.launch).collect::<Vec<_>>(), [3], "the S2 run replaced the output: S1 runs again");
}

/// A state written by a newer version of the operator (after a rollback) is checked again.
#[test]
fn an_unknown_state_is_checked_again() {
    let mut scenario = Scenario::new().partition(22, "a", -10).all_done();
    let entry = &mut scenario.previous.partitions[0];
    entry.state = PartitionState::Unknown;
    let launch = entry.launch;
    let plan = scenario.plan();
    assert_eq!(plan.launches.iter().map(|l| l.launch).collect::<Vec<_>>(), [launch + 1], "{:?}", states(&plan));
    assert!(plan.status.partitions.iter().all(|p| p.state != PartitionState::Unknown));
}
