//! Plans that cannot go ahead: refused Job creations, an invalid spec or an unreachable source.

use super::*;

#[test]
fn a_refused_job_leaves_the_partition_waiting_and_the_pipeline_degraded() {
    let scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10);
    let planned = scenario.plan();
    let refused = vec![(planned.launches[1].job.clone(), "exceeded quota: jobs, requested: count/jobs.batch=1".to_string())];
    assert_eq!(before_launches(&planned, &scenario.previous), planned.status, "nothing refused before: the plan's status");
    let plan = launch_refused(planned, &scenario.observation(), &refused);
    assert_eq!(launched(&plan), vec![(22, 1)]);
    assert_eq!(states(&plan)[1], ("day=23".into(), PartitionState::Pending, 0));
    assert_eq!((plan.status.running_jobs, plan.status.pending_partitions), (1, 1));
    assert_eq!(condition(&plan, "Degraded"), ("True", "JobCreateFailed"));
    assert!(plan.happenings.iter().any(|h| matches!(h, Happening::JobCreateFailed { message, .. } if message.contains("quota"))));
    assert!(!plan.happenings.iter().any(|h| matches!(h, Happening::Launched { partition, .. } if partition.ends_with("23"))));
    let mut again = scenario.next(&plan);
    again.now = at(10);
    let retry = again.plan();
    assert_eq!(launched(&retry), vec![(23, 1)], "the next reconcile tries again under the same name");
    let written_first = before_launches(&retry, &again.previous);
    let degraded = written_first.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "JobCreateFailed"), "until a Job is created");
    assert_eq!(condition(&retry, "Degraded").0, "False", "cleared once the creates succeed");
}

/// A spec change gives failed partitions new attempts; when the reconcile that sees the change
/// cannot list the source, the next one that can must still give them.
#[test]
fn a_spec_changes_retry_survives_a_degraded_reconcile() {
    let mut scenario = Scenario::new().partition(22, "a", -10);
    scenario.spec.execution.max_attempts = 1;
    let mut scenario = scenario.first_launch_ends(|_| JobOutcome::Failed("boom".into()));
    scenario.generation = 2;
    scenario.unavailable = Some("SourceUnavailable");
    let degraded = scenario.plan();
    assert_eq!(condition(&degraded, "Degraded"), ("True", "SourceUnavailable"));
    assert!(degraded.launches.is_empty());
    scenario.previous = degraded.status;
    scenario.unavailable = None;
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(22, 2)], "{:?}", states(&plan));
}

/// The source cannot be listed, but a Job finishes meanwhile: its result is recorded all the
/// same.
#[test]
fn a_job_that_finishes_while_the_source_is_unavailable_is_recorded() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let launch = first.launches[0].clone();
    let mut scenario = scenario.next(&first).finish(&launch.job, committed(&launch, 1));
    scenario.unavailable = Some("SourceUnavailable");
    let plan = scenario.plan();
    assert_eq!(plan.status.partitions[0].state, PartitionState::Succeeded, "{:?}", plan.status.partitions[0]);
    assert_eq!(condition(&plan, "Degraded"), ("True", "SourceUnavailable"));
    assert!(plan.happenings.iter().any(|h| matches!(h, Happening::Succeeded { .. })));
}
