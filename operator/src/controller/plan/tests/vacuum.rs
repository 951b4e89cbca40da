//! The vacuum of a Delta sink's table: one Job once the table holds output, the next a day after
//! it started (an hour after a failed one), none while one runs, for a Parquet sink or while
//! suspended; its outcome is recorded from its Job.

use eventpipe_transformer::commit::vacuum::Vacuumed;
use eventpipe_transformer::spec::SinkFormat;

use crate::crd::{VacuumState, VacuumStatus};

use super::*;

/// A pipeline whose one partition has committed, its status carried over, with a Delta sink
/// from the next reconcile on (so that no vacuum was planned yet).
fn committed_delta() -> Scenario {
    let mut scenario = Scenario::new().partition(24, "a", -10).first_launch_committed();
    scenario.spec.pipeline.sink.format = SinkFormat::Delta;
    scenario
}

fn vacuum_job(scenario: &mut Scenario, plan: &Plan, outcome: JobOutcome, vacuumed: Option<Vacuumed>) {
    scenario.previous = plan.status.clone();
    scenario.vacuums = vec![ObservedVacuum { name: plan.vacuum.clone().expect("a vacuum was launched"), outcome, vacuumed }];
}

#[test]
fn the_first_vacuum_follows_the_first_commit() {
    let mut scenario = Scenario::new().partition(24, "a", -10);
    scenario.spec.pipeline.sink.format = SinkFormat::Delta;
    let plan = scenario.plan();
    assert_eq!(plan.vacuum, None, "no table yet, nothing to vacuum");
    let launch = plan.launches[0].clone();
    let scenario = scenario.next(&plan).finish(&launch.job, committed(&launch, 1));
    assert!(scenario.plan().vacuum.is_some(), "vacuumed once the table holds output");
}

#[test]
fn a_table_with_output_is_vacuumed_once_a_day() {
    let mut scenario = committed_delta();
    let plan = scenario.plan();
    assert_eq!(plan.vacuum.as_deref(), Some("settings-vacuum-202611281600"));
    let started = plan.status.vacuum.clone().unwrap();
    assert_eq!((started.state, started.started_at.0), (VacuumState::Running, at(0)));

    vacuum_job(&mut scenario, &plan, JobOutcome::Running, None);
    scenario.now = at(600);
    let running = scenario.plan();
    assert_eq!((running.vacuum.as_ref(), running.status.vacuum.as_ref().map(|v| v.state)), (None, Some(VacuumState::Running)));

    let vacuumed = Vacuumed { files_deleted: 7, log_files_deleted: 2, version: Some(9) };
    vacuum_job(&mut scenario, &plan, JobOutcome::Succeeded(None), Some(vacuumed));
    let done = scenario.plan();
    let recorded = done.status.vacuum.clone().unwrap();
    assert_eq!((recorded.state, recorded.files_deleted, recorded.log_files_deleted), (VacuumState::Succeeded, Some(7), Some(2)));
    assert_eq!(done.vacuum, None);

    scenario.previous = done.status;
    scenario.now = at(24 * 3600 - 1);
    assert_eq!(scenario.plan().vacuum, None, "not before a day has passed");
    scenario.now = at(24 * 3600);
    assert!(scenario.plan().vacuum.is_some(), "a day after the last one started");
}

#[test]
fn a_failed_or_vanished_vacuum_is_tried_again_after_an_hour() {
    let mut scenario = committed_delta();
    let plan = scenario.plan();
    vacuum_job(&mut scenario, &plan, JobOutcome::Failed("Delta table s3://b/out/: AccessDenied".into()), None);
    let failed = scenario.plan();
    let recorded = failed.status.vacuum.clone().unwrap();
    assert_eq!((recorded.state, recorded.message.as_deref()), (VacuumState::Failed, Some("Delta table s3://b/out/: AccessDenied")));
    scenario.previous = failed.status;
    scenario.now = at(3599);
    assert_eq!(scenario.plan().vacuum, None);
    scenario.now = at(3600);
    assert!(scenario.plan().vacuum.is_some());

    let mut vanished = committed_delta();
    vanished.previous.vacuum = Some(VacuumStatus::started("settings-vacuum-202611281550".into(), at(-600)));
    let plan = vanished.plan();
    assert!(plan.status.vacuum.as_ref().unwrap().message.as_deref().is_some_and(|m| m.contains("is gone")), "{:?}", plan.status.vacuum);
    assert_eq!(plan.vacuum, None);
    vanished.now = at(3000);
    assert!(vanished.plan().vacuum.is_some(), "its hour has passed: the next one starts");
}

#[test]
fn parquet_sinks_and_suspended_pipelines_are_not_vacuumed() {
    let parquet = Scenario::new().partition(24, "a", -10).first_launch_committed();
    assert_eq!(parquet.plan().vacuum, None);
    let mut suspended = committed_delta();
    suspended.spec.suspend = true;
    assert_eq!(suspended.plan().vacuum, None);
}

#[test]
fn a_refused_vacuum_job_is_recorded_as_failed() {
    let scenario = committed_delta();
    let mut plan = scenario.plan();
    vacuum_refused(&mut plan, "exceeded quota: jobs");
    let recorded = plan.status.vacuum.clone().unwrap();
    assert_eq!(recorded.state, VacuumState::Failed);
    assert!(recorded.message.unwrap().ends_with("failed: exceeded quota: jobs"));
    assert_eq!(plan.vacuum, None);
}
