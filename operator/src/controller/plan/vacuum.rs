//! The vacuum of a Delta sink's table: one Job per pipeline at most daily (an hour after a failed
//! one), once the table holds committed output, never while suspended or deleted. It deletes the
//! files no version within `sink.delta.retentionHours` lists (see
//! [`eventpipe_transformer::commit::vacuum`]). Its state is the status's `vacuum`.

use eventpipe_transformer::spec::SinkFormat;
use k8s_openapi::jiff::SignedDuration;

use crate::crd::{PartitionStatus, VacuumState, VacuumStatus};

use super::naming::vacuum_job_name;
use super::{JobOutcome, Observation, Plan, limited};

/// From one vacuum's start to the next.
const INTERVAL: SignedDuration = SignedDuration::from_hours(24);
/// From a failed vacuum's start to the next try.
const RETRY_INTERVAL: SignedDuration = SignedDuration::from_hours(1);

/// The vacuum's state, and the name of a vacuum Job to launch now, if one is due.
pub(super) fn vacuum(observation: &Observation<'_>, entries: &[PartitionStatus]) -> (Option<VacuumStatus>, Option<String>) {
    let latest = observation.previous.vacuum.clone().map(|latest| follow(latest, observation));
    let spec = observation.spec;
    let idle = spec.pipeline.sink.format != SinkFormat::Delta || spec.suspend || observation.deleting;
    let committed = entries.iter().any(|entry| entry.committed_at.is_some());
    if idle || !committed {
        return (latest, None);
    }
    let due = match &latest {
        None => true,
        Some(latest) => match latest.state {
            VacuumState::Running => false,
            VacuumState::Succeeded => observation.now >= latest.started_at.0 + INTERVAL,
            VacuumState::Failed | VacuumState::Unknown => observation.now >= latest.started_at.0 + RETRY_INTERVAL,
        },
    };
    if !due {
        return (latest, None);
    }
    let job = vacuum_job_name(observation.pipeline, observation.now);
    (Some(VacuumStatus::started(job.clone(), observation.now)), Some(job))
}

/// A running vacuum's state from its Job: finished as it reports, or failed when the Job is gone.
fn follow(mut latest: VacuumStatus, observation: &Observation<'_>) -> VacuumStatus {
    if latest.state != VacuumState::Running {
        return latest;
    }
    match observation.vacuums.iter().find(|job| job.name == latest.job) {
        Some(job) => match &job.outcome {
            JobOutcome::Running => {}
            JobOutcome::Succeeded(_) => {
                latest.state = VacuumState::Succeeded;
                latest.files_deleted = job.vacuumed.as_ref().map(|vacuumed| vacuumed.files_deleted);
                latest.log_files_deleted = job.vacuumed.as_ref().map(|vacuumed| vacuumed.log_files_deleted);
            }
            JobOutcome::Failed(message) => {
                latest.state = VacuumState::Failed;
                latest.message = Some(limited(message.as_str()));
            }
        },
        None => {
            latest.state = VacuumState::Failed;
            latest.message = Some(format!("Job {} is gone; it was deleted before its outcome was seen", latest.job));
        }
    }
    latest
}

/// The plan after the API server refused to create its vacuum Job: the vacuum failed, and is
/// tried again after the retry interval.
pub fn vacuum_refused(plan: &mut Plan, refusal: &str) {
    if let Some(vacuum) = plan.status.vacuum.as_mut().filter(|vacuum| Some(&vacuum.job) == plan.vacuum.as_ref()) {
        vacuum.state = VacuumState::Failed;
        vacuum.message = Some(limited(format!("creating Job {} failed: {refusal}", vacuum.job)));
    }
    plan.vacuum = None;
}
