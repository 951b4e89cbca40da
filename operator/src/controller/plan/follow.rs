//! Following a partition's Jobs: adopting a Job the status does not know yet, and recording the
//! result of a finished one, with retries and their backoff.

use std::time::Duration;

use eventpipe_transformer::task::{Summary, shorten};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{PartitionState, PartitionStatus};

use super::{Happening, JobOutcome, MESSAGE_LIMIT, Observation};

/// Longest wait between two failed attempts.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(3600);

/// Brings an entry up to date with its Jobs: adopts a Job the status does not know yet (launched
/// just before a restart), and records the result of a finished one.
pub(super) fn follow_jobs(mut entry: PartitionStatus, observation: &Observation<'_>, happenings: &mut Vec<Happening>) -> PartitionStatus {
    let newest = observation
        .jobs
        .iter()
        .filter(|job| job.partition == entry.partition && job.fingerprint == entry.fingerprint && job.spec_hash == entry.spec_hash)
        .max_by_key(|job| job.attempt);
    if let Some(job) = newest {
        let unknown = entry.job.as_deref() != Some(job.name.as_str());
        if unknown && job.attempt > entry.attempts {
            entry.attempts = job.attempt;
            entry.job = Some(job.name.clone());
            entry.state = PartitionState::Running;
            entry.not_before = None;
        }
    }
    if entry.state != PartitionState::Running {
        return entry;
    }
    let job_name = entry.job.clone().unwrap_or_default();
    let outcome = match observation.jobs.iter().find(|job| job.name == job_name) {
        Some(job) => job.outcome.clone(),
        None => match observation.committed.get(&entry.partition).filter(|c| c.spec_hash == entry.spec_hash) {
            Some(committed) => {
                record_success(&mut entry, &job_name, Some(committed.clone()), observation.now, happenings);
                entry.message = Some(format!(
                    "Job {job_name} was gone before its result was recorded (deleted, or removed after ttlSecondsAfterFinished); the result is the partition's committed manifest"
                ));
                return entry;
            }
            None => JobOutcome::Failed(format!(
                "Job {job_name} disappeared before its result was recorded, and the partition's manifest does not commit this spec"
            )),
        },
    };
    match outcome {
        JobOutcome::Running => {}
        JobOutcome::Succeeded(summary) => record_success(&mut entry, &job_name, summary, observation.now, happenings),
        JobOutcome::Failed(message) => record_failure(&mut entry, &job_name, message, observation, happenings),
    }
    entry
}

fn record_success(entry: &mut PartitionStatus, job_name: &str, summary: Option<Summary>, now: Timestamp, happenings: &mut Vec<Happening>) {
    entry.state = PartitionState::Succeeded;
    entry.committed_at = Some(Time(now));
    if let Some(increments) = summary.as_ref().map(|s| s.increments).filter(|n| *n > 0) {
        entry.increments = Some(increments);
    }
    if let Some(committed) = summary.as_ref().map(|s| &s.input_fingerprint).filter(|f| !f.is_empty()) {
        // The transformer lists the partition itself and commits what it found then.
        entry.fingerprint = committed.clone();
    }
    entry.rows_read = summary.as_ref().map(|s| s.rows_read);
    entry.rows_rejected = summary.as_ref().map(|s| s.rows_rejected);
    entry.rows_written = summary.as_ref().map(|s| s.rows_written);
    entry.bytes_written = summary.as_ref().map(|s| s.bytes_written);
    entry.seconds = summary.as_ref().map(|s| (s.seconds * 1000.0).round() / 1000.0);
    entry.message = match &summary {
        Some(summary) if summary.skipped => Some("the committed output already matched these inputs and this spec".into()),
        Some(_) => None,
        None => Some(format!("Job {job_name} succeeded without reporting a summary")),
    };
    happenings.push(Happening::Succeeded { partition: entry.partition.clone(), job: job_name.to_string(), summary });
}

fn record_failure(
    entry: &mut PartitionStatus,
    job_name: &str,
    mut message: String,
    observation: &Observation<'_>,
    happenings: &mut Vec<Happening>,
) {
    shorten(&mut message, MESSAGE_LIMIT);
    entry.failures += 1;
    let spec = &observation.spec.execution;
    let (partition, job) = (entry.partition.clone(), job_name.to_string());
    if entry.failures >= spec.max_attempts {
        entry.state = PartitionState::Failed;
        entry.not_before = None;
        happenings.push(Happening::GaveUp { partition, job, message: message.clone() });
    } else {
        let retry_at = observation.now + retry_backoff(spec.retry_backoff_seconds, entry.failures);
        entry.state = PartitionState::Retrying;
        entry.not_before = Some(Time(retry_at));
        happenings.push(Happening::AttemptFailed { partition, job, message: message.clone(), retry_at });
    }
    entry.message = Some(message);
}

/// The wait after the `failures`-th failed attempt: the base, doubled per earlier failure, capped.
pub(super) fn retry_backoff(base_seconds: u32, failures: u32) -> SignedDuration {
    let factor = 2u64.saturating_pow(failures.saturating_sub(1));
    let wait = Duration::from_secs(u64::from(base_seconds).saturating_mul(factor)).min(MAX_RETRY_BACKOFF);
    SignedDuration::try_from(wait).expect("an hour fits")
}
