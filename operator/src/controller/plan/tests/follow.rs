//! Following Jobs: successes and failures recorded, backoff, adoption after a restart, Jobs gone, and pods that do not start or keep being evicted.

use super::*;

#[test]
fn a_failed_attempt_is_retried_with_exponential_backoff_and_then_given_up() {
    let mut scenario = Scenario::new().partition(22, "a", -10);
    let mut plan = scenario.plan();
    let mut retry_waits = Vec::new();
    for attempt in 1..=3 {
        assert_eq!(launched(&plan), vec![(22, attempt)], "attempt {attempt}");
        let job = plan.launches[0].job.clone();
        scenario = scenario.next(&plan).finish(&job, JobOutcome::Failed(format!("bad row {attempt}")));
        plan = scenario.plan();
        if attempt < 3 {
            assert_eq!(states(&plan), vec![("day=22".into(), PartitionState::Retrying, attempt)]);
            assert!(plan.launches.is_empty(), "no relaunch before the backoff");
            retry_waits.push(plan.requeue_after.as_secs());
            let due = plan.status.partitions[0].not_before.clone().unwrap().0;
            scenario.previous = plan.status.clone();
            scenario.now = due;
            plan = scenario.plan();
        }
    }
    assert_eq!(retry_waits, vec![30, 60]);
    assert_eq!(states(&plan), vec![("day=22".into(), PartitionState::Failed, 3)]);
    assert_eq!(plan.status.partitions[0].message.as_deref(), Some("bad row 3"));
    assert!(matches!(&plan.happenings[0], Happening::GaveUp { message, .. } if message == "bad row 3"));
    assert_eq!(plan.status.failed_partitions, 1);
    assert_eq!(condition(&plan, "Degraded"), ("True", "PartitionsFailed"));
    assert_eq!(condition(&plan, "Ready"), ("False", "PartitionsFailed"));
    scenario.previous = plan.status.clone();
    assert!(scenario.plan().launches.is_empty(), "a failed partition stays failed");
}

#[test]
fn after_a_restart_existing_jobs_are_adopted_not_launched_again() {
    // The status was lost (or never written) but the Jobs exist.
    let scenario = Scenario::new()
        .partition(22, "a", -10)
        .partition(23, "b", -10)
        .job(22, "a", 1, JobOutcome::Succeeded(Some(summary(8))))
        .job(23, "b", 2, JobOutcome::Running);
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    assert_eq!(
        states(&plan),
        vec![("day=22".into(), PartitionState::Succeeded, 1), ("day=23".into(), PartitionState::Running, 2)]
    );
}

#[test]
fn a_job_that_disappears_counts_as_a_failed_attempt() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let mut scenario = scenario;
    scenario.previous = first.status.clone();
    let plan = scenario.plan();
    assert_eq!(states(&plan), vec![("day=22".into(), PartitionState::Retrying, 1)]);
    assert!(plan.status.partitions[0].message.as_deref().unwrap().contains("disappeared"));
}

#[test]
fn backoff_doubles_and_is_capped_at_an_hour() {
    let waits: Vec<i64> = (1..=9).map(|failures| retry_backoff(30, failures).as_secs()).collect();
    assert_eq!(waits, vec![30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
}

#[test]
fn a_job_gone_before_its_result_was_recorded_is_read_from_the_manifest() {
    let scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10);
    let first = scenario.plan();
    let mut scenario = scenario;
    scenario.previous = first.status.clone();
    scenario.sink.insert(day(22).to_string(), Committed::Output(Summary { input_fingerprint: "a".into(), ..summary(6) }));
    scenario.sink.insert(day(23).to_string(), Committed::Output(Summary { input_fingerprint: "b".into(), spec_hash: "old".into(), ..summary(6) }));
    let plan = scenario.plan();
    let done = &plan.status.partitions[0];
    assert_eq!((done.state, done.rows_read, done.failures), (PartitionState::Succeeded, Some(6), 0));
    assert!(done.message.as_deref().unwrap().contains("committed manifest"), "{:?}", done.message);
    let lost = &plan.status.partitions[1];
    assert_eq!((lost.state, lost.failures), (PartitionState::Retrying, 1), "a manifest of another spec does not count");
}

#[test]
fn the_committed_fingerprint_is_recorded_and_the_listing_refreshed() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    // An object landed after the listing; the transformer committed what it listed itself.
    let committed = Summary { input_fingerprint: "a2".into(), ..summary(6) };
    let mut scenario = scenario.next(&first).finish(&first.launches[0].job, JobOutcome::Succeeded(Some(committed)));
    let plan = scenario.plan();
    assert!(plan.launches.is_empty(), "the old listing must not relaunch the partition");
    assert_eq!((plan.status.partitions[0].fingerprint.as_str(), plan.relist), ("a2", true));
    assert_eq!(plan.requeue_after, Duration::from_secs(1));
    scenario.previous = plan.status;
    scenario.partitions[0].fingerprint = "a2".into();
    let relisted = scenario.plan();
    assert!(relisted.launches.is_empty() && relisted.happenings.is_empty() && !relisted.relist);
}

/// A Job reports success, but the partition's manifest commits another spec (another writer, a
/// restored bucket): the status must not claim the output.
#[test]
fn a_reported_success_the_manifest_does_not_commit_is_not_recorded() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let launch = first.launches[0].clone();
    let mut scenario = scenario.next(&first).finish(&launch.job, committed(&launch, 1));
    scenario.sink.insert(day(22).to_string(), Committed::Output(Summary { input_fingerprint: "a".into(), spec_hash: "another-spec".into(), ..summary(4) }));
    let plan = scenario.plan();
    assert_ne!(plan.status.partitions[0].state, PartitionState::Succeeded, "{:?}", plan.status.partitions[0]);
}

/// The sink cannot be read while a Job's result is recovered from its manifest: that says
/// nothing about the attempt, which is neither failed nor succeeded until the manifest is read.
#[test]
fn a_sink_read_error_while_a_job_is_gone_is_not_a_failed_attempt() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let mut scenario = scenario;
    scenario.previous = first.status.clone();
    scenario.sink.insert(day(22).to_string(), Committed::Unreadable("connection refused".into()));
    let plan = scenario.plan();
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.state, entry.failures), (PartitionState::Running, 0), "{entry:?}");
    assert!(entry.message.as_deref().unwrap().contains("connection refused"), "{:?}", entry.message);
    assert!(plan.launches.is_empty());
    scenario.previous = plan.status;
    scenario.sink.insert(day(22).to_string(), Committed::Output(Summary { input_fingerprint: "a".into(), ..summary(6) }));
    assert_eq!(scenario.plan().status.partitions[0].state, PartitionState::Succeeded, "read once the sink answers");
}

/// The running Job of day 22, launched at `NOW`, its pod in this state now.
fn launched_and(waiting: Option<Waiting>, disruptions: &[&str]) -> Scenario {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let mut scenario = scenario.next(&first);
    scenario.jobs[0].waiting = waiting;
    scenario.jobs[0].disruptions = disruptions.iter().map(|d| d.to_string()).collect();
    scenario
}

/// An image that cannot be pulled: said within a poll (message and Event, once), and the attempt
/// fails at the start timeout with that reason, its Job stopped.
#[test]
fn a_pod_that_cannot_pull_its_image_is_reported_and_fails_the_attempt_at_the_start_timeout() {
    let pulling = Waiting { since: at(0), problem: Some("ErrImagePull: no such image".into()), pod: Some("p".into()) };
    let mut scenario = launched_and(Some(pulling), &[]);
    scenario.now = at(5);
    let plan = scenario.plan();
    let entry = &plan.status.partitions[0];
    assert_eq!(entry.state, PartitionState::Running);
    assert!(entry.message.as_deref().unwrap().contains("ErrImagePull: no such image"), "{:?}", entry.message);
    assert!(matches!(&plan.happenings[..], [Happening::NotStarting { problem, .. }] if problem.starts_with("ErrImagePull")), "{:?}", plan.happenings);
    scenario.previous = plan.status;
    scenario.now = at(60);
    assert!(scenario.plan().happenings.is_empty(), "said once");

    scenario.now = at(300);
    let plan = scenario.plan();
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.state, entry.failures), (PartitionState::Retrying, 1));
    let message = entry.message.as_deref().unwrap();
    assert!(message.contains("startTimeoutSeconds (300 s)") && message.contains("ErrImagePull: no such image"), "{message}");
    assert_eq!(plan.stops.iter().map(|s| s.job.as_str()).collect::<Vec<_>>(), [scenario.jobs[0].name.as_str()]);
}

/// A Job without any pod (a pods quota, an admission webhook): said after a short grace.
#[test]
fn a_job_without_a_pod_is_reported_after_a_grace() {
    let mut scenario = launched_and(Some(Waiting { since: at(0), problem: None, pod: None }), &[]);
    scenario.now = at(10);
    assert!(scenario.plan().happenings.is_empty(), "a pod within seconds is ordinary");
    scenario.now = at(40);
    let plan = scenario.plan();
    assert!(plan.status.partitions[0].message.as_deref().unwrap().contains("no pod was created"), "{:?}", plan.status.partitions[0].message);
}

/// Once the pod starts, the message about its waiting goes.
#[test]
fn a_pod_that_starts_clears_the_waiting_message() {
    let pulling = Waiting { since: at(0), problem: Some("ImagePullBackOff".into()), pod: Some("p".into()) };
    let mut scenario = launched_and(Some(pulling), &[]);
    scenario.now = at(5);
    scenario.previous = scenario.plan().status;
    scenario.jobs[0].waiting = None;
    assert_eq!(scenario.plan().status.partitions[0].message, None);
}

/// A pod whose own memory use gets it evicted again and again: the attempt fails after
/// `maxDisruptions` disruptions instead of running until the deadline.
#[test]
fn an_attempt_whose_pods_keep_being_evicted_fails() {
    let evicted = "pod p: The node was low on resource: memory.";
    let scenario = launched_and(None, &[evicted, evicted]);
    assert_eq!(scenario.plan().status.partitions[0].state, PartitionState::Running, "two disruptions are survived");
    let scenario = launched_and(None, &[evicted, evicted, evicted]);
    let plan = scenario.plan();
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.state, entry.failures), (PartitionState::Retrying, 1));
    assert!(entry.message.as_deref().unwrap().contains("disrupted 3 times"), "{:?}", entry.message);
    assert_eq!(plan.stops.len(), 1);
}
