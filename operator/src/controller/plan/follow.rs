//! Following a partition's Jobs: adopting a Job launched for the entry's decision that the status
//! does not know yet, and recording the result of a finished one, with retries and their
//! backoff.
//!
//! Every launch of a partition gets the next launch number, recorded in the entry and carried by
//! the Job. A Job is followed only when it is the entry's own (its name) or carries a higher
//! number than the entry's and was launched for the entry's inputs and spec (created just before
//! a restart lost the status write). Older Jobs, and newer ones for other inputs or another spec,
//! are never adopted, whatever they match: finished Jobs live for `ttlSecondsAfterFinished`, so
//! going back to an earlier spec or input set meets their old results. Success is recorded only
//! from the partition's committed manifest.

use std::time::Duration;

use eventpipe_transformer::task::Summary;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{PartitionState, PartitionStatus};

use super::{Committed, Effects, Happening, JobOutcome, Observation, ObservedJob, Stop, limited};

/// Longest wait between two failed attempts.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a Job may be without a pod before that is reported (the Job controller creates one
/// within seconds unless something refuses it).
const NO_POD_GRACE: SignedDuration = SignedDuration::from_secs(30);

/// Brings an entry up to date with its partition's Jobs.
pub(super) fn follow_jobs(mut entry: PartitionStatus, observation: &Observation<'_>, effects: &mut Effects) -> PartitionStatus {
    let newer = observation
        .jobs
        .iter()
        .filter(|job| job.partition == entry.partition && job.launch > entry.launch)
        .max_by_key(|job| job.launch);
    if let Some(job) = newer {
        entry = follow_newer(entry, job, observation, effects);
    }
    if entry.state != PartitionState::Running {
        return entry;
    }
    let job_name = entry.job.clone().unwrap_or_default();
    match observation.jobs.iter().find(|job| job.name == job_name) {
        Some(job) => match &job.outcome {
            JobOutcome::Running => follow_running(&mut entry, job, observation, effects),
            JobOutcome::Succeeded(report) => match manifest(&entry, observation, effects) {
                None => {}
                Some(Committed::Output(committed)) if committed.spec_hash == entry.spec_hash => {
                    record_success(&mut entry, &job_name, committed, report.clone(), observation.now, effects);
                }
                Some(Committed::Unreadable(error)) => {
                    entry.message = Some(limited(format!("Job {job_name} succeeded; reading the partition's manifest failed, trying again: {error}")));
                }
                Some(other) => {
                    let message = format!("Job {job_name} reported success, but the partition's manifest {}", describe(other));
                    record_failure(&mut entry, &job_name, message, observation, effects);
                }
            },
            JobOutcome::Failed(message) => record_failure(&mut entry, &job_name, message.clone(), observation, effects),
        },
        None => match manifest(&entry, observation, effects) {
            None => {}
            Some(Committed::Output(committed)) if committed.spec_hash == entry.spec_hash => {
                let committed = committed.clone();
                record_success(&mut entry, &job_name, &committed, Some(committed.clone()), observation.now, effects);
                entry.message = Some(format!(
                    "Job {job_name} was gone before its result was recorded (deleted, or removed after ttlSecondsAfterFinished); the result is the partition's committed manifest"
                ));
            }
            Some(Committed::Unreadable(error)) => {
                entry.message = Some(limited(format!(
                    "Job {job_name} is gone before its result was recorded; reading the partition's manifest failed, trying again: {error}"
                )));
            }
            Some(other) => {
                let message = format!("Job {job_name} disappeared before its result was recorded, and the partition's manifest {}", describe(other));
                record_failure(&mut entry, &job_name, message, observation, effects);
            }
        },
    }
    entry
}

/// A running Job whose pods were disrupted `execution.maxDisruptions` times, or whose pod has not
/// started within `execution.startTimeoutSeconds`, fails its attempt and is stopped. A pod that
/// waits for more than an ordinary start says why in the entry's message, with an Event when
/// that is new.
fn follow_running(entry: &mut PartitionStatus, job: &ObservedJob, observation: &Observation<'_>, effects: &mut Effects) {
    let execution = &observation.spec.execution;
    if let Some(last) = job.disruptions.last().filter(|_| job.disruptions.len() >= execution.max_disruptions as usize) {
        let message = format!(
            "Job {} was disrupted {} times, as often as execution.maxDisruptions allows (the last, {last}); \
             a pod whose own memory use gets it evicted needs a larger memory request",
            job.name,
            job.disruptions.len()
        );
        fail_and_stop(entry, job, message, observation, effects);
        return;
    }
    let not_started = not_started_prefix(&job.name);
    let Some(waiting) = &job.waiting else {
        if entry.message.as_deref().is_some_and(|message| message.starts_with(&not_started)) {
            entry.message = None;
        }
        return;
    };
    let waited = observation.now.duration_since(waiting.since);
    let timeout = SignedDuration::from_secs(execution.start_timeout_seconds.into());
    let problem = waiting.problem.clone().or_else(|| {
        (waiting.pod.is_none() && waited >= NO_POD_GRACE).then(|| {
            format!("no pod was created (a ResourceQuota or an admission webhook may refuse it: kubectl describe job {})", job.name)
        })
    });
    if waited >= timeout {
        let why = problem.unwrap_or_else(|| "it was still starting".into());
        let message = format!("{not_started} within execution.startTimeoutSeconds ({} s): {why}", execution.start_timeout_seconds);
        fail_and_stop(entry, job, message, observation, effects);
    } else if let Some(problem) = problem {
        let message = limited(format!("{not_started}: {problem}; the attempt fails after {} s", execution.start_timeout_seconds));
        if entry.message.as_ref() != Some(&message) {
            effects.happenings.push(Happening::NotStarting { partition: entry.partition.clone(), job: job.name.clone(), problem });
        }
        entry.message = Some(message);
    }
}

/// How messages about a Job's pod that has not started begin.
fn not_started_prefix(job: &str) -> String {
    format!("the pod of Job {job} has not started")
}

/// Fails the attempt of a Job that still runs, and stops the Job.
fn fail_and_stop(entry: &mut PartitionStatus, job: &ObservedJob, message: String, observation: &Observation<'_>, effects: &mut Effects) {
    let reason = format!("its attempt failed: {message}");
    record_failure(entry, &job.name, message, observation, effects);
    effects.stops.push(Stop { job: job.name.clone(), partition: entry.partition.clone(), reason });
}

/// A Job launched after the entry's last recorded launch: the status write that would have
/// recorded it was lost. Launched for the entry's inputs and spec, it is the entry's own. Launched
/// for others, it is never adopted; but it may have replaced the partition's output, so a
/// succeeded entry is checked against the manifest (or, while the Job still runs, processed
/// again once it has stopped). Either way its number is the entry's from then on.
fn follow_newer(mut entry: PartitionStatus, job: &ObservedJob, observation: &Observation<'_>, effects: &mut Effects) -> PartitionStatus {
    if job.fingerprint == entry.fingerprint && job.spec_hash == entry.spec_hash {
        entry.launch = job.launch;
        entry.attempts = job.attempt;
        entry.job = Some(job.name.clone());
        entry.state = PartitionState::Running;
        entry.not_before = None;
        return entry;
    }
    if entry.state == PartitionState::Running {
        // The entry's own Job goes on; the other one is stopped.
        return entry;
    }
    if job.outcome == JobOutcome::Running {
        entry.launch = job.launch;
        if entry.state == PartitionState::Succeeded {
            entry.state = PartitionState::Pending;
            entry.message = Some(format!("Job {} was launched for other inputs or another spec and may replace the output; processing again once it has stopped", job.name));
        }
        return entry;
    }
    if entry.state != PartitionState::Succeeded {
        entry.launch = job.launch;
        return entry;
    }
    match manifest(&entry, observation, effects) {
        None | Some(Committed::Unreadable(_)) => {}
        Some(Committed::Output(committed)) if committed.spec_hash == entry.spec_hash && committed.input_fingerprint == entry.fingerprint => {
            entry.launch = job.launch;
        }
        Some(other) => {
            entry.launch = job.launch;
            entry.state = PartitionState::Pending;
            entry.message = Some(format!(
                "Job {} ran for other inputs or another spec after the last recorded result, and the partition's manifest {}; processing again",
                job.name,
                describe(other)
            ));
        }
    }
    entry
}

/// The partition's manifest as observed, or `None` after asking for it to be read.
fn manifest<'a>(entry: &PartitionStatus, observation: &'a Observation<'_>, effects: &mut Effects) -> Option<&'a Committed> {
    let found = observation.committed.get(&entry.partition);
    if found.is_none() {
        effects.unread.insert(entry.partition.clone());
    }
    found
}

/// What a manifest that does not commit the entry's spec holds, for messages.
fn describe(committed: &Committed) -> String {
    match committed {
        Committed::Output(summary) => format!("commits another spec ({})", summary.spec_hash),
        Committed::Nothing => "is missing".to_string(),
        Committed::Unreadable(error) => format!("could not be read: {error}"),
    }
}

/// Records a success as the manifest commits it; the pod's report, when there is one, adds what
/// the run itself did.
fn record_success(entry: &mut PartitionStatus, job_name: &str, committed: &Summary, report: Option<Summary>, now: Timestamp, effects: &mut Effects) {
    entry.state = PartitionState::Succeeded;
    entry.committed_at = Some(Time(now));
    take_counts(entry, committed);
    entry.seconds = report.as_ref().map(|s| (s.seconds * 1000.0).round() / 1000.0);
    entry.message = match &report {
        Some(report) if report.skipped => Some("the committed output already matched these inputs and this spec".into()),
        Some(_) => None,
        None => Some(format!("Job {job_name} succeeded without reporting a summary")),
    };
    effects.happenings.push(Happening::Succeeded { partition: entry.partition.clone(), job: job_name.to_string(), summary: report });
}

/// Takes the fingerprint, increments and row counts of an entry from the manifest that commits
/// its output.
pub(super) fn take_counts(entry: &mut PartitionStatus, committed: &Summary) {
    if committed.increments > 0 {
        entry.increments = Some(committed.increments);
    }
    if !committed.input_fingerprint.is_empty() {
        // The transformer lists the partition itself and commits what it found then.
        entry.fingerprint = committed.input_fingerprint.clone();
    }
    entry.rows_read = Some(committed.rows_read);
    entry.rows_rejected = Some(committed.rows_rejected);
    entry.rows_routed = (committed.rows_routed > 0).then_some(committed.rows_routed);
    entry.rows_written = Some(committed.rows_written);
    entry.bytes_written = Some(committed.bytes_written);
}

fn record_failure(entry: &mut PartitionStatus, job_name: &str, message: String, observation: &Observation<'_>, effects: &mut Effects) {
    let message = limited(message);
    entry.failures += 1;
    let spec = &observation.spec.execution;
    let (partition, job) = (entry.partition.clone(), job_name.to_string());
    if entry.failures >= spec.max_attempts {
        entry.state = PartitionState::Failed;
        entry.not_before = None;
        effects.happenings.push(Happening::GaveUp { partition, job, message: message.clone() });
    } else {
        let retry_at = observation.now + retry_backoff(spec.retry_backoff_seconds, entry.failures);
        entry.state = PartitionState::Retrying;
        entry.not_before = Some(Time(retry_at));
        effects.happenings.push(Happening::AttemptFailed { partition, job, message: message.clone(), retry_at });
    }
    entry.message = Some(message);
}

/// The wait after the `failures`-th failed attempt: the base, doubled per earlier failure, capped.
pub(super) fn retry_backoff(base_seconds: u32, failures: u32) -> SignedDuration {
    let factor = 2u64.saturating_pow(failures.saturating_sub(1));
    let wait = Duration::from_secs(u64::from(base_seconds).saturating_mul(factor)).min(MAX_RETRY_BACKOFF);
    SignedDuration::try_from(wait).expect("an hour fits")
}
