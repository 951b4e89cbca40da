//! The planner: from what was observed (partitions in S3, the pipeline's Jobs, committed
//! manifests, the last status, requests made through annotations) to what to do (Jobs to launch,
//! the new status, what happened). Pure: no I/O, the time is an input, and every decision is
//! covered by the table tests below.
//!
//! A partition's output is a function of its inputs (the input fingerprint) and of the data-path
//! spec (the spec hash); a committed partition whose fingerprint or spec hash no longer matches is
//! processed again.
//!
//! When is decided by the transform's mode (see [`eventpipe_transformer::mode`]). In append mode
//! a partition's objects count once they are older than the grace period, and each Job converts
//! those its committed output lacks. In full mode a partition is processed when it closes (see
//! [`crate::period`]) and its newest object has settled; while it is open, only every
//! `schedule.openRefreshSeconds` if that is set.

use std::collections::HashMap;
use std::time::Duration;

use eventpipe_transformer::layout::PartitionKey;
use eventpipe_transformer::mode::Mode;
use eventpipe_transformer::task::{Summary, shorten};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{EventPipelineSpec, EventPipelineStatus, PartitionState, PartitionStatus, Period, ProcessingMode};
use crate::period;

use super::conditions::{self, Health};
use super::job::{job_name, version};

/// Longest message kept on a partition.
const MESSAGE_LIMIT: usize = 1024;
/// Longest wait between two failed attempts.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(3600);

/// A partition found under the source, inside the schedule's window.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedPartition {
    /// The partition.
    pub key: PartitionKey,
    /// Fingerprint of its input objects.
    pub fingerprint: String,
    /// When each of its objects was written, oldest first; a partition has at least one.
    pub modified: Vec<Timestamp>,
    /// Its objects that were older than the grace period when the source was listed, if any.
    pub settled: Option<Settled>,
}

impl ObservedPartition {
    /// When its newest object was written.
    pub fn newest(&self) -> Option<Timestamp> {
        self.modified.last().copied()
    }

    /// When its oldest object written after `cutoff` (or at all, without one) was written.
    pub fn oldest_after(&self, cutoff: Option<Timestamp>) -> Option<Timestamp> {
        self.modified.iter().find(|modified| cutoff.is_none_or(|cutoff| **modified > cutoff)).copied()
    }
}

/// The objects of a partition older than the grace period at a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    /// Their fingerprint.
    pub fingerprint: String,
    /// They were last modified at or before this time (the listing's time minus the grace period).
    pub before: Timestamp,
}

/// A Job of this pipeline, as its labels, annotations and status describe it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedJob {
    /// The Job's name.
    pub name: String,
    /// The partition it processes, as `PartitionKey` displays it.
    pub partition: String,
    /// The input fingerprint the operator saw when it launched the Job.
    pub fingerprint: String,
    /// The data-path spec hash it runs with.
    pub spec_hash: String,
    /// Its attempt number for this partition version, from 1.
    pub attempt: u32,
    /// Whether and how it finished.
    pub outcome: JobOutcome,
}

/// Whether and how a Job finished.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    /// Not finished.
    Running,
    /// Finished successfully; the summary is `None` when its pod reported none.
    Succeeded(Option<Summary>),
    /// Failed, with the reason (the transformer's error, or why Kubernetes stopped the Job).
    Failed(String),
}

/// Requests made on the pipeline through annotations; each value is acted on once.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Requests<'a> {
    /// `eventpipe.dev/retry`: a new value gives failed partitions new attempts.
    pub retry: Option<&'a str>,
    /// `eventpipe.dev/reprocess`: a partition (`year=2026/month=11/day=24`) to process again
    /// even though its output is committed.
    pub reprocess: Option<&'a str>,
}

/// Everything the planner decides from.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    /// The current time.
    pub now: Timestamp,
    /// The pipeline's name (Job names derive from it).
    pub pipeline: &'a str,
    /// The pipeline's UID (Job names derive from it, so a pipeline created again under the same
    /// name never meets its predecessor's Jobs).
    pub uid: &'a str,
    /// The pipeline's `metadata.generation`.
    pub generation: Option<i64>,
    /// The pipeline's spec.
    pub spec: &'a EventPipelineSpec,
    /// The hash of the spec's data path.
    pub spec_hash: &'a str,
    /// How the transform processes partitions.
    pub mode: &'a Mode,
    /// The status as last written.
    pub previous: &'a EventPipelineStatus,
    /// The partitions in the schedule's window, oldest first.
    pub partitions: &'a [ObservedPartition],
    /// Where the partitions were looked for, for the message when there are none.
    pub looked_in: &'a str,
    /// The pipeline's Jobs.
    pub jobs: &'a [ObservedJob],
    /// The committed output of partitions whose running Job is gone (see [`missing_jobs`]), as
    /// their manifests describe it.
    pub committed: &'a HashMap<String, Summary>,
    /// Requests made through annotations.
    pub requests: Requests<'a>,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Jobs to create.
    pub launches: Vec<Launch>,
    /// The status to write (only when it differs from the previous one).
    pub status: EventPipelineStatus,
    /// What happened, for Events, metrics and logs.
    pub happenings: Vec<Happening>,
    /// When to look again, at the latest.
    pub requeue_after: Duration,
    /// Whether the next reconcile must list the source again: a Job committed other inputs than
    /// the listing showed (an object landed while it ran).
    pub relist: bool,
}

/// A Job to create.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The Job's name.
    pub job: String,
    /// The partition.
    pub partition: PartitionKey,
    /// The input fingerprint the operator saw.
    pub fingerprint: String,
    /// The data-path spec hash.
    pub spec_hash: String,
    /// The attempt number for this partition version, from 1.
    pub attempt: u32,
    /// Process the partition even if its committed output matches (a reprocess request).
    pub force: bool,
    /// Take only the objects last modified up to this time (append mode).
    pub settled_before: Option<Timestamp>,
}

/// Why a processed partition is processed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outdated {
    /// Its input objects changed.
    Inputs,
    /// The data-path spec changed.
    Spec,
    /// `eventpipe.dev/reprocess` named it.
    Requested,
}

/// Something worth an Event.
#[derive(Clone, Debug, PartialEq)]
pub enum Happening {
    /// A Job was launched.
    Launched { partition: String, job: String, attempt: u32 },
    /// A partition's output was committed: by its Job, or found in its manifest after its Job
    /// was gone.
    Succeeded { partition: String, job: String, summary: Option<Summary> },
    /// A Job failed and the partition will be tried again.
    AttemptFailed { partition: String, job: String, message: String, retry_at: Timestamp },
    /// A Job failed and no attempts are left.
    GaveUp { partition: String, job: String, message: String },
    /// A processed partition will be processed again.
    Outdated { partition: String, cause: Outdated },
    /// `eventpipe.dev/retry` gave failed partitions new attempts.
    RetryRequested { partitions: usize },
    /// A request through an annotation could not be carried out.
    RequestIgnored { message: String },
    /// The API server refused to create a Job.
    JobCreateFailed { partition: String, job: String, message: String },
}

/// Plans one reconcile of a pipeline whose spec is valid and whose source could be listed.
pub fn plan(observation: &Observation<'_>) -> Plan {
    let Observation { now, spec, previous, .. } = *observation;
    let spec_changed = previous.observed_generation.is_some() && previous.observed_generation != observation.generation;
    let retry_requested = observation.requests.retry.filter(|value| previous.last_retry_request.as_deref() != Some(*value));
    let mut previous_entries: HashMap<&str, &PartitionStatus> =
        previous.partitions.iter().map(|entry| (entry.partition.as_str(), entry)).collect();
    let mut happenings = Vec::new();
    let mut entries = Vec::with_capacity(observation.partitions.len());
    let mut retried = 0;
    let mut relist = false;
    for partition in observation.partitions {
        let key = partition.key.to_string();
        let fingerprint = target_fingerprint(partition, observation.mode);
        let entry = match previous_entries.remove(key.as_str()) {
            Some(entry) => entry.clone(),
            None => fresh_entry(&key, fingerprint, observation.spec_hash),
        };
        let was_running = entry.state == PartitionState::Running;
        let mut entry = follow_jobs(entry, observation, &mut happenings);
        // A result recorded just now is newer than the listing it would be compared with.
        let just_finished = was_running && entry.state != PartitionState::Running;
        relist |= just_finished && entry.state == PartitionState::Succeeded && entry.fingerprint != fingerprint;
        if !just_finished && entry.state != PartitionState::Running {
            let cause = if entry.spec_hash != observation.spec_hash {
                Some(Outdated::Spec)
            } else if entry.fingerprint != fingerprint {
                Some(Outdated::Inputs)
            } else {
                None
            };
            if let Some(cause) = cause {
                // In append mode new objects are the partition growing, not a change.
                let grows = observation.mode.is_append() && cause == Outdated::Inputs;
                if entry.state == PartitionState::Succeeded && !grows {
                    happenings.push(Happening::Outdated { partition: key.clone(), cause });
                }
                let committed = (entry.committed_at.clone(), entry.increments);
                entry = fresh_entry(&key, fingerprint, observation.spec_hash);
                (entry.committed_at, entry.increments) = committed;
                entry = follow_jobs(entry, observation, &mut happenings);
            }
        }
        if entry.state == PartitionState::Failed && (spec_changed || retry_requested.is_some()) {
            entry.state = PartitionState::Pending;
            entry.failures = 0;
            entry.message = Some(if spec_changed { "the spec changed; trying again" } else { "a retry was requested" }.into());
            retried += 1;
        }
        // A valid spec has a valid time zone; a partition whose close cannot be computed counts as closed.
        let closes_at = period::closes_at(&partition.key, &spec.schedule).unwrap_or(now);
        entry.period = Some(if now < closes_at { Period::Open } else { Period::Closed });
        if matches!(entry.state, PartitionState::Pending | PartitionState::Settling | PartitionState::Open) {
            (entry.state, entry.not_before) = readiness(partition, &entry, observation, closes_at);
        }
        entries.push((entry, Some(partition)));
    }
    if retry_requested.is_some() {
        happenings.push(Happening::RetryRequested { partitions: retried });
    }
    // Partitions no longer observed (out of the window, or deleted) are kept only while a Job
    // still works on them.
    let mut gone: Vec<_> = previous_entries.into_values().cloned().collect();
    gone.sort_by(|a, b| a.partition.cmp(&b.partition));
    for entry in gone {
        let entry = follow_jobs(entry, observation, &mut happenings);
        if entry.state == PartitionState::Running {
            entries.push((entry, None));
        }
    }
    entries.sort_by(|a, b| a.0.partition.cmp(&b.0.partition));

    let reprocess = reprocess_request(&mut entries, observation, &mut happenings);
    let launches = launch(&mut entries, observation, reprocess, &mut happenings);
    let mut status = summarize(entries.into_iter().map(|(entry, _)| entry).collect(), &happenings, observation);
    status.last_retry_request = observation.requests.retry.map(str::to_string).or_else(|| previous.last_retry_request.clone());
    let reprocess_waits = matches!(reprocess, Reprocess::Waiting(_)) && !launches.iter().any(|launch| launch.force);
    status.last_reprocess_request = if reprocess_waits {
        previous.last_reprocess_request.clone()
    } else {
        observation.requests.reprocess.map(str::to_string).or_else(|| previous.last_reprocess_request.clone())
    };
    let requeue_after = if relist { Duration::from_secs(1) } else { requeue_after(&status, observation) };
    Plan { launches, status, happenings, requeue_after, relist }
}

/// The fingerprint a partition's output should have: in append mode that of its settled
/// objects (all of them while none has settled yet), in full mode that of all its objects.
fn target_fingerprint<'a>(partition: &'a ObservedPartition, mode: &Mode) -> &'a str {
    match &partition.settled {
        Some(settled) if mode.is_append() => &settled.fingerprint,
        _ => &partition.fingerprint,
    }
}

/// Whether a partition that waits may run now, or what it waits for and until when: in append
/// mode for an object to settle; in full mode for the partition to close (or, with
/// `openRefreshSeconds`, for the next refresh) and for its newest object to settle.
fn readiness(
    partition: &ObservedPartition,
    entry: &PartitionStatus,
    observation: &Observation<'_>,
    closes_at: Timestamp,
) -> (PartitionState, Option<Time>) {
    let (now, schedule) = (observation.now, &observation.spec.schedule);
    let grace = SignedDuration::from_secs(schedule.grace_period_seconds.into());
    let newest_settles = partition.newest().map_or(now, |newest| newest + grace);
    let ready_at = if observation.mode.is_append() {
        match &partition.settled {
            Some(_) => now,
            None => partition.oldest_after(None).map_or(now, |oldest| oldest + grace),
        }
    } else if now < closes_at {
        let Some(refresh) = schedule.open_refresh_seconds else {
            return (PartitionState::Open, Some(Time(closes_at)));
        };
        let refresh_due = entry.committed_at.as_ref().map_or(now, |at| at.0 + SignedDuration::from_secs(refresh.into()));
        newest_settles.max(refresh_due)
    } else {
        newest_settles
    };
    if now < ready_at { (PartitionState::Settling, Some(Time(ready_at))) } else { (PartitionState::Pending, None) }
}

/// Where a reprocess request stands in this reconcile.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reprocess {
    /// No new request.
    None,
    /// The partition at this index is named: it is launched first, or, while no Job slot is free
    /// or its own Job still runs, the request is kept for a later reconcile.
    Waiting(usize),
    /// Carried out or refused; the request is recorded as handled.
    Handled,
}

/// Marks the partition a new `eventpipe.dev/reprocess` request names for processing.
fn reprocess_request(
    entries: &mut [(PartitionStatus, Option<&ObservedPartition>)],
    observation: &Observation<'_>,
    happenings: &mut Vec<Happening>,
) -> Reprocess {
    let Some(requested) = observation.requests.reprocess else { return Reprocess::None };
    if observation.previous.last_reprocess_request.as_deref() == Some(requested) {
        return Reprocess::None;
    }
    let found = entries.iter().position(|(entry, partition)| partition.is_some() && entry.partition == requested);
    let Some(index) = found else {
        happenings.push(Happening::RequestIgnored {
            message: format!("eventpipe.dev/reprocess names {requested:?}, which is not a partition in the schedule's window"),
        });
        return Reprocess::Handled;
    };
    let entry = &mut entries[index].0;
    if entry.state != PartitionState::Running {
        if entry.state == PartitionState::Succeeded {
            happenings.push(Happening::Outdated { partition: entry.partition.clone(), cause: Outdated::Requested });
        }
        entry.state = PartitionState::Pending;
        entry.failures = 0;
        entry.not_before = None;
    }
    Reprocess::Waiting(index)
}

/// Plans a reconcile that cannot look at partitions (invalid spec, unreachable source): the
/// partitions stay as they were and the conditions say what is wrong.
pub fn plan_degraded(observation: &Observation<'_>, reason: &'static str, message: &str) -> EventPipelineStatus {
    let previous = observation.previous;
    let mut message = message.to_string();
    shorten(&mut message, MESSAGE_LIMIT);
    EventPipelineStatus {
        observed_generation: observation.generation,
        conditions: conditions::conditions(
            &previous.conditions,
            &Health::Degraded { reason, message: &message },
            observation.generation,
            observation.now,
        ),
        ..previous.clone()
    }
}

/// The plan after the API server refused to create some of its Jobs (quota, admission webhook,
/// RBAC): those partitions wait again as before the launch, their launch is not reported, and
/// `Degraded` says why.
pub fn launch_refused(mut plan: Plan, observation: &Observation<'_>, refused: &[(String, String)]) -> Plan {
    for (job, message) in refused {
        let Some(entry) = plan.status.partitions.iter_mut().find(|entry| entry.job.as_deref() == Some(job.as_str())) else {
            continue;
        };
        let before = observation.previous.partitions.iter().find(|p| p.partition == entry.partition);
        entry.attempts = entry.attempts.saturating_sub(1);
        entry.job = before.and_then(|p| p.job.clone());
        entry.state = PartitionState::Pending;
        entry.message = Some(format!("creating Job {job} failed: {message}"));
        plan.happenings.retain(|h| !matches!(h, Happening::Launched { job: launched, .. } if launched == job));
        plan.happenings.push(Happening::JobCreateFailed { partition: entry.partition.clone(), job: job.clone(), message: message.clone() });
    }
    let is_refused = |launch: &Launch| refused.iter().any(|(job, _)| *job == launch.job);
    // A refused reprocess stays requested, so the next try carries it out.
    if plan.launches.iter().any(|launch| launch.force && is_refused(launch)) {
        plan.status.last_reprocess_request = observation.previous.last_reprocess_request.clone();
    }
    plan.launches.retain(|launch| !is_refused(launch));
    let requests = (plan.status.last_retry_request.take(), plan.status.last_reprocess_request.take());
    plan.status = summarize(std::mem::take(&mut plan.status.partitions), &plan.happenings, observation);
    (plan.status.last_retry_request, plan.status.last_reprocess_request) = requests;
    if let Some((job, message)) = refused.first() {
        let mut message = format!("creating Job {job} failed: {message}");
        shorten(&mut message, MESSAGE_LIMIT);
        plan.status.conditions = conditions::conditions(
            &observation.previous.conditions,
            &Health::Degraded { reason: "JobCreateFailed", message: &message },
            observation.generation,
            observation.now,
        );
    }
    plan
}

/// Whether the planner needs a finished Job's report (its pod's termination message): true when
/// the status has not recorded that Job's result yet.
pub fn needs_report(previous: &EventPipelineStatus, job: &ObservedJob) -> bool {
    if job.outcome == JobOutcome::Running {
        return false;
    }
    match previous.partitions.iter().find(|entry| entry.partition == job.partition) {
        None => true,
        Some(entry) => {
            entry.fingerprint == job.fingerprint
                && entry.spec_hash == job.spec_hash
                && (job.attempt > entry.attempts
                    || (entry.state == PartitionState::Running && entry.job.as_deref() == Some(job.name.as_str())))
        }
    }
}

/// The partitions whose running Job is gone: their committed manifest tells whether the Job
/// committed before it went (the TTL controller, a person, or an operator down for longer than
/// the TTL).
pub fn missing_jobs(previous: &EventPipelineStatus, jobs: &[ObservedJob]) -> Vec<String> {
    previous
        .partitions
        .iter()
        .filter(|entry| entry.state == PartitionState::Running)
        .filter(|entry| !jobs.iter().any(|job| entry.job.as_deref() == Some(job.name.as_str())))
        .map(|entry| entry.partition.clone())
        .collect()
}

/// A partition seen for the first time, or whose inputs or spec changed.
fn fresh_entry(partition: &str, fingerprint: &str, spec_hash: &str) -> PartitionStatus {
    PartitionStatus {
        partition: partition.to_string(),
        fingerprint: fingerprint.to_string(),
        spec_hash: spec_hash.to_string(),
        state: PartitionState::Pending,
        ..PartitionStatus::default()
    }
}

/// Brings an entry up to date with its Jobs: adopts a Job the status does not know yet (launched
/// just before a restart), and records the result of a finished one.
fn follow_jobs(mut entry: PartitionStatus, observation: &Observation<'_>, happenings: &mut Vec<Happening>) -> PartitionStatus {
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
fn retry_backoff(base_seconds: u32, failures: u32) -> SignedDuration {
    let factor = 2u64.saturating_pow(failures.saturating_sub(1));
    let wait = Duration::from_secs(u64::from(base_seconds).saturating_mul(factor)).min(MAX_RETRY_BACKOFF);
    SignedDuration::try_from(wait).expect("an hour fits")
}

/// Launches the oldest runnable partitions while Job slots are free, unless suspended; a
/// requested reprocess goes first.
fn launch(
    entries: &mut [(PartitionStatus, Option<&ObservedPartition>)],
    observation: &Observation<'_>,
    reprocess: Reprocess,
    happenings: &mut Vec<Happening>,
) -> Vec<Launch> {
    if observation.spec.suspend {
        return Vec::new();
    }
    let running = entries.iter().filter(|(entry, _)| entry.state == PartitionState::Running).count();
    let mut free = (observation.spec.execution.max_concurrent_jobs as usize).saturating_sub(running);
    let forced = match reprocess {
        Reprocess::Waiting(index) => Some(index),
        _ => None,
    };
    let order = forced.into_iter().chain((0..entries.len()).filter(|index| Some(*index) != forced));
    let mut launches = Vec::new();
    for index in order {
        if free == 0 {
            break;
        }
        let (entry, partition) = &mut entries[index];
        let Some(partition) = partition else { continue };
        let due = match entry.state {
            PartitionState::Pending => true,
            PartitionState::Retrying => entry.not_before.as_ref().is_none_or(|at| at.0 <= observation.now),
            _ => false,
        };
        if !due {
            continue;
        }
        entry.attempts += 1;
        let version = version(observation.uid, &entry.fingerprint, &entry.spec_hash);
        let job = job_name(observation.pipeline, &partition.key, &version, entry.attempts);
        let settled_before = partition.settled.as_ref().filter(|_| observation.mode.is_append()).map(|settled| settled.before);
        entry.job = Some(job.clone());
        entry.state = PartitionState::Running;
        entry.not_before = None;
        entry.settled_before = settled_before.map(Time);
        happenings.push(Happening::Launched { partition: entry.partition.clone(), job: job.clone(), attempt: entry.attempts });
        launches.push(Launch {
            job,
            partition: partition.key,
            fingerprint: entry.fingerprint.clone(),
            spec_hash: entry.spec_hash.clone(),
            attempt: entry.attempts,
            force: Some(index) == forced,
            settled_before,
        });
        free -= 1;
    }
    launches
}

/// The status for these entries: counts, the newest completed partition and the conditions.
fn summarize(partitions: Vec<PartitionStatus>, happenings: &[Happening], observation: &Observation<'_>) -> EventPipelineStatus {
    let previous = observation.previous;
    let count = |states: &[PartitionState]| partitions.iter().filter(|p| states.contains(&p.state)).count() as u32;
    let pending = count(&[PartitionState::Settling, PartitionState::Pending, PartitionState::Retrying]);
    let running = count(&[PartitionState::Running]);
    let failed: Vec<&PartitionStatus> = partitions.iter().filter(|p| p.state == PartitionState::Failed).collect();
    // Partitions that just succeeded count even when they left the window.
    let just_succeeded = happenings.iter().filter_map(|happening| match happening {
        Happening::Succeeded { partition, .. } => Some(partition),
        _ => None,
    });
    let last_completed_partition = partitions
        .iter()
        .filter(|p| p.state == PartitionState::Succeeded)
        .map(|p| &p.partition)
        .chain(just_succeeded)
        .chain(previous.last_completed_partition.as_ref())
        .max()
        .cloned();
    let health = if let Some(first) = failed.first() {
        Health::PartitionsFailed {
            count: failed.len(),
            first: &first.partition,
            message: first.message.as_deref().unwrap_or("no message"),
        }
    } else if observation.spec.suspend && pending > 0 {
        Health::Suspended { pending }
    } else if pending + running > 0 {
        Health::Processing { pending, running }
    } else if partitions.is_empty() {
        Health::NoPartitions { looked_in: observation.looked_in }
    } else {
        let open = count(&[PartitionState::Open]) as usize;
        Health::UpToDate { processed: partitions.len() - open, open, newest: last_completed_partition.as_deref() }
    };
    EventPipelineStatus {
        observed_generation: observation.generation,
        conditions: conditions::conditions(&previous.conditions, &health, observation.generation, observation.now),
        last_completed_partition,
        pending_partitions: pending,
        running_jobs: running,
        failed_partitions: failed.len() as u32,
        partitions,
        mode: Some(if observation.mode.is_append() { ProcessingMode::Append } else { ProcessingMode::Full }),
        mode_reason: Some(observation.mode.to_string()),
        last_retry_request: None,
        last_reprocess_request: None,
    }
}

/// The next poll, or earlier when a retry, the end of a grace period or a partition's close is
/// due before it; in append mode also when the next object settles.
fn requeue_after(status: &EventPipelineStatus, observation: &Observation<'_>) -> Duration {
    let poll = Duration::from_secs(observation.spec.schedule.poll_interval_seconds.into());
    let grace = SignedDuration::from_secs(observation.spec.schedule.grace_period_seconds.into());
    let settles = observation.partitions.iter().filter(|_| observation.mode.is_append()).filter_map(|partition| {
        partition.oldest_after(partition.settled.as_ref().map(|settled| settled.before)).map(|oldest| oldest + grace)
    });
    status
        .partitions
        .iter()
        .filter(|p| matches!(p.state, PartitionState::Retrying | PartitionState::Settling | PartitionState::Open))
        .filter_map(|p| p.not_before.as_ref().map(|at| at.0))
        .chain(settles)
        .map(|at| Duration::try_from(at.duration_since(observation.now)).unwrap_or(Duration::ZERO))
        .map(|wait| wait.max(Duration::from_secs(1)))
        .fold(poll, Duration::min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ExecutionSpec, ScheduleSpec};

    /// 2026-11-28T16:00:00Z: the partitions of the 24th and before are closed.
    const NOW: i64 = 1_795_881_600;
    const UID: &str = "0b6c1f4e-0000-4000-8000-000000000001";
    const SPEC: &str = "spec-1";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(NOW + seconds).unwrap()
    }

    fn day(day: u8) -> PartitionKey {
        PartitionKey { year: 2026, month: 11, day, hour: None }
    }

    /// The Job name of an attempt at a day's partition with these inputs and the spec `spec_hash`.
    fn name_with(day_of_month: u8, fingerprint: &str, spec_hash: &str, attempt: u32) -> String {
        job_name("settings", &day(day_of_month), &version(UID, fingerprint, spec_hash), attempt)
    }

    fn name(day_of_month: u8, fingerprint: &str, attempt: u32) -> String {
        name_with(day_of_month, fingerprint, SPEC, attempt)
    }

    /// A pipeline spec with no grace period, 2 Job slots and 3 attempts 30 s apart.
    struct Scenario {
        spec: EventPipelineSpec,
        spec_hash: String,
        generation: i64,
        previous: EventPipelineStatus,
        partitions: Vec<ObservedPartition>,
        jobs: Vec<ObservedJob>,
        committed: HashMap<String, Summary>,
        retry: Option<String>,
        reprocess: Option<String>,
        now: Timestamp,
        mode: Mode,
    }

    impl Scenario {
        fn new() -> Self {
            let spec = EventPipelineSpec {
                schedule: ScheduleSpec { grace_period_seconds: 0, poll_interval_seconds: 60, ..ScheduleSpec::default() },
                execution: ExecutionSpec { max_concurrent_jobs: 2, max_attempts: 3, retry_backoff_seconds: 30, ..ExecutionSpec::default() },
                ..EventPipelineSpec::default()
            };
            Self {
                spec,
                spec_hash: SPEC.into(),
                generation: 1,
                previous: EventPipelineStatus::default(),
                partitions: Vec::new(),
                jobs: Vec::new(),
                committed: HashMap::new(),
                retry: None,
                reprocess: None,
                now: at(0),
                mode: Mode::full("the SQL aggregates rows"),
            }
        }

        fn partition(mut self, day_of_month: u8, fingerprint: &str, landed: i64) -> Self {
            let partition = ObservedPartition {
                key: day(day_of_month),
                fingerprint: fingerprint.into(),
                modified: vec![at(landed)],
                settled: None,
            };
            self.partitions.push(partition);
            self
        }

        /// The partition of a day whose objects landed at these times (seconds from `NOW`), as
        /// listed now: its fingerprint is `n<count>` for its first `count` objects, and those
        /// older than the grace period are the settled ones.
        fn growing(mut self, day_of_month: u8, landed: &[i64]) -> Self {
            let grace = i64::from(self.spec.schedule.grace_period_seconds);
            let before = self.now - SignedDuration::from_secs(grace);
            let settled = landed.iter().filter(|at_| at(**at_) <= before).count();
            let partition = ObservedPartition {
                key: day(day_of_month),
                fingerprint: format!("n{}", landed.len()),
                modified: landed.iter().map(|at_| at(*at_)).collect(),
                settled: (settled > 0).then(|| Settled { fingerprint: format!("n{settled}"), before }),
            };
            self.partitions.retain(|p| p.key != partition.key);
            self.partitions.push(partition);
            self
        }

        fn job(mut self, day_of_month: u8, fingerprint: &str, attempt: u32, outcome: JobOutcome) -> Self {
            let spec_hash = self.spec_hash.clone();
            self.jobs.push(ObservedJob {
                name: name_with(day_of_month, fingerprint, &spec_hash, attempt),
                partition: day(day_of_month).to_string(),
                fingerprint: fingerprint.into(),
                spec_hash,
                attempt,
                outcome,
            });
            self
        }

        fn observation(&self) -> Observation<'_> {
            Observation {
                now: self.now,
                pipeline: "settings",
                uid: UID,
                generation: Some(self.generation),
                spec: &self.spec,
                spec_hash: &self.spec_hash,
                mode: &self.mode,
                previous: &self.previous,
                partitions: &self.partitions,
                looked_in: "s3://b/events/ from 2026-11-18 to 2026-11-24",
                jobs: &self.jobs,
                committed: &self.committed,
                requests: Requests { retry: self.retry.as_deref(), reprocess: self.reprocess.as_deref() },
            }
        }

        fn plan(&self) -> Plan {
            plan(&self.observation())
        }

        /// Carries the plan's status into the next reconcile, with the launched Jobs running.
        fn next(mut self, plan: &Plan) -> Self {
            self.previous = plan.status.clone();
            for launch in &plan.launches {
                self.jobs.push(ObservedJob {
                    name: launch.job.clone(),
                    partition: launch.partition.to_string(),
                    fingerprint: launch.fingerprint.clone(),
                    spec_hash: launch.spec_hash.clone(),
                    attempt: launch.attempt,
                    outcome: JobOutcome::Running,
                });
            }
            self
        }

        fn finish(mut self, job: &str, outcome: JobOutcome) -> Self {
            self.jobs.iter_mut().find(|j| j.name == job).expect("job exists").outcome = outcome;
            self
        }

        /// Every partition processed once, successfully, and recorded.
        fn all_done(mut self) -> Self {
            for _ in 0..self.partitions.len() {
                let plan = self.plan();
                let launches = plan.launches.clone();
                self = self.next(&plan);
                for launch in &launches {
                    self = self.finish(&launch.job, JobOutcome::Succeeded(Some(summary(4))));
                }
            }
            let done = self.plan();
            assert!(done.status.partitions.iter().all(|p| p.state == PartitionState::Succeeded), "{:?}", states(&done));
            self.previous = done.status;
            self
        }
    }

    fn states(plan: &Plan) -> Vec<(String, PartitionState, u32)> {
        plan.status.partitions.iter().map(|p| (p.partition[19..].to_string(), p.state, p.attempts)).collect()
    }

    fn launched(plan: &Plan) -> Vec<(u8, u32)> {
        plan.launches.iter().map(|l| (l.partition.day, l.attempt)).collect()
    }

    fn condition<'a>(plan: &'a Plan, kind: &str) -> (&'a str, &'a str) {
        let c = plan.status.conditions.iter().find(|c| c.type_ == kind).expect("condition present");
        (c.status.as_str(), c.reason.as_str())
    }

    fn summary(rows: u64) -> Summary {
        Summary { rows_read: rows, rows_written: rows / 2, bytes_written: 100, seconds: 1.23456, spec_hash: SPEC.into(), ..Summary::default() }
    }

    /// The summary of a Job that committed what it was launched for, its output made of
    /// `increments` runs.
    fn committed(launch: &Launch, increments: u32) -> JobOutcome {
        JobOutcome::Succeeded(Some(Summary { input_fingerprint: launch.fingerprint.clone(), increments, ..summary(4) }))
    }

    /// Today's partition (the 28th), open until 2026-11-29T00:00:00Z plus the grace period.
    const TODAY: u8 = 28;

    fn appending() -> Scenario {
        let mut scenario = Scenario::new();
        scenario.mode = Mode::Append;
        scenario.spec.schedule.grace_period_seconds = 120;
        scenario.spec.schedule.poll_interval_seconds = 600;
        scenario
    }

    #[test]
    fn a_firehose_day_in_append_mode_converts_each_object_once_it_settles() {
        let scenario = appending().growing(TODAY, &[-600, -30]);
        let plan = scenario.plan();
        assert_eq!(plan.launches.len(), 1);
        let first = plan.launches[0].clone();
        assert_eq!((first.fingerprint.as_str(), first.settled_before), ("n1", Some(at(-120))), "only the settled object");
        let entry = &plan.status.partitions[0];
        assert_eq!((entry.period, plan.status.mode), (Some(Period::Open), Some(ProcessingMode::Append)));

        let scenario = scenario.next(&plan).finish(&first.job, committed(&first, 1));
        let plan = scenario.plan();
        assert!(plan.launches.is_empty(), "the second object has not settled");
        assert_eq!(states(&plan), vec![("day=28".into(), PartitionState::Succeeded, 1)]);
        assert_eq!(plan.requeue_after, Duration::from_secs(90), "looked at again when it settles");

        let mut scenario = scenario.next(&plan);
        scenario.now = at(90);
        let scenario = scenario.growing(TODAY, &[-600, -30, 80]);
        let plan = scenario.plan();
        let second = plan.launches[0].clone();
        assert_eq!((second.fingerprint.as_str(), second.settled_before, second.force), ("n2", Some(at(-30)), false));
        assert!(!plan.happenings.iter().any(|h| matches!(h, Happening::Outdated { .. })), "growing is not a change");
        let plan = scenario.next(&plan).finish(&second.job, committed(&second, 2)).plan();
        let entry = &plan.status.partitions[0];
        assert_eq!((entry.state, entry.increments, entry.fingerprint.as_str()), (PartitionState::Succeeded, Some(2), "n2"));
    }

    #[test]
    fn a_replaced_object_in_an_append_partition_is_run_again() {
        let scenario = appending().growing(TODAY, &[-600]);
        let plan = scenario.plan();
        let launch = plan.launches[0].clone();
        let mut scenario = scenario.next(&plan).finish(&launch.job, committed(&launch, 1));
        scenario.previous = scenario.plan().status;
        // The object was overwritten: same count, another fingerprint. The Job sees that the
        // committed object changed and processes the whole partition.
        scenario.partitions[0].settled.as_mut().unwrap().fingerprint = "replaced".into();
        let plan = scenario.plan();
        assert_eq!(plan.launches.iter().map(|l| l.fingerprint.as_str()).collect::<Vec<_>>(), ["replaced"]);
    }

    #[test]
    fn an_aggregation_runs_once_when_its_day_closes() {
        let mut scenario = Scenario::new().partition(TODAY, "a", -600);
        scenario.spec.schedule.grace_period_seconds = 120;
        scenario.spec.schedule.poll_interval_seconds = 3600 * 24;
        let plan = scenario.plan();
        assert!(plan.launches.is_empty());
        let entry = &plan.status.partitions[0];
        let closes = Timestamp::from_second(NOW + 8 * 3600 + 120).unwrap();
        assert_eq!((entry.state, entry.period, entry.not_before.clone()), (PartitionState::Open, Some(Period::Open), Some(Time(closes))));
        assert_eq!(condition(&plan, "Ready").0, "True", "waiting for the day to end is not pending work");
        assert_eq!(plan.requeue_after, Duration::from_secs(8 * 3600 + 120), "looked at again when it closes");

        // More objects while open change nothing but the fingerprint.
        let mut scenario = scenario.next(&plan);
        scenario.partitions[0].fingerprint = "b".into();
        let plan = scenario.plan();
        assert!(plan.launches.is_empty());
        assert_eq!(plan.status.partitions[0].state, PartitionState::Open);

        let mut scenario = scenario.next(&plan);
        scenario.now = closes;
        let plan = scenario.plan();
        assert_eq!(launched(&plan), vec![(TODAY, 1)]);
        assert_eq!((plan.launches[0].fingerprint.as_str(), plan.launches[0].settled_before), ("b", None));
        assert_eq!(plan.status.partitions[0].period, Some(Period::Closed));
    }

    #[test]
    fn open_refresh_recomputes_an_open_aggregation_at_most_that_often() {
        let mut scenario = Scenario::new().partition(TODAY, "a", -600);
        scenario.spec.schedule.open_refresh_seconds = Some(3600);
        let plan = scenario.plan();
        let launch = plan.launches[0].clone();
        let mut scenario = scenario.next(&plan).finish(&launch.job, committed(&launch, 1));
        scenario.previous = scenario.plan().status;
        scenario.partitions[0].fingerprint = "b".into();
        let plan = scenario.plan();
        assert!(plan.launches.is_empty());
        let entry = &plan.status.partitions[0];
        assert_eq!((entry.state, entry.not_before.clone()), (PartitionState::Settling, Some(Time(at(3600)))));
        let mut scenario = scenario.next(&plan);
        scenario.now = at(3600);
        assert_eq!(launched(&scenario.plan()), vec![(TODAY, 1)]);
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
    fn an_sql_change_to_an_aggregation_waits_for_the_open_day_to_close() {
        let scenario = appending().growing(TODAY, &[-600]);
        let plan = scenario.plan();
        let launch = plan.launches[0].clone();
        let mut scenario = scenario.next(&plan).finish(&launch.job, committed(&launch, 1));
        scenario.previous = scenario.plan().status;
        scenario.mode = Mode::full("the SQL aggregates rows (GROUP BY or an aggregate function)");
        scenario.spec_hash = "spec-2".into();
        scenario.generation = 2;
        let plan = scenario.plan();
        assert!(plan.launches.is_empty());
        assert_eq!(plan.status.partitions[0].state, PartitionState::Open);
        assert_eq!(plan.status.mode, Some(ProcessingMode::Full));
        assert!(plan.status.mode_reason.as_deref().unwrap().contains("aggregates"));
        assert!(plan.happenings.contains(&Happening::Outdated { partition: day(TODAY).to_string(), cause: Outdated::Spec }));
    }

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
    fn a_fresh_partition_settles_for_the_grace_period() {
        let mut scenario = Scenario::new().partition(24, "c", -30);
        scenario.spec.schedule.grace_period_seconds = 120;
        scenario.spec.schedule.poll_interval_seconds = 600;
        let plan = scenario.plan();
        assert!(plan.launches.is_empty());
        assert_eq!(states(&plan), vec![("day=24".into(), PartitionState::Settling, 0)]);
        assert_eq!(plan.requeue_after, Duration::from_secs(90));
        scenario.previous = plan.status;
        scenario.now = at(90);
        assert_eq!(launched(&scenario.plan()), vec![(24, 1)]);
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

    #[test]
    fn only_unrecorded_results_need_the_pods_report() {
        let scenario = Scenario::new().partition(22, "a", -10);
        let first = scenario.plan();
        let scenario = scenario.next(&first).finish(&first.launches[0].job, JobOutcome::Succeeded(None));
        assert!(needs_report(&scenario.previous, &scenario.jobs[0]), "running in the status, finished now");
        let recorded = scenario.plan().status;
        assert!(!needs_report(&recorded, &scenario.jobs[0]), "already recorded");
        assert!(needs_report(&EventPipelineStatus::default(), &scenario.jobs[0]), "status lost");
        let mut running = scenario.jobs[0].clone();
        running.outcome = JobOutcome::Running;
        assert!(!needs_report(&scenario.previous, &running));
    }

    #[test]
    fn backoff_doubles_and_is_capped_at_an_hour() {
        let waits: Vec<i64> = (1..=9).map(|failures| retry_backoff(30, failures).as_secs()).collect();
        assert_eq!(waits, vec![30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }

    #[test]
    fn a_data_path_change_reprocesses_the_window_oldest_first_under_the_cap() {
        let mut scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10).partition(24, "c", -10).all_done();
        scenario.generation = 2;
        scenario.spec_hash = "spec-2".into();
        let plan = scenario.plan();
        assert_eq!(launched(&plan), vec![(22, 1), (23, 1)]);
        assert_eq!(plan.launches[0].job, name_with(22, "a", "spec-2", 1));
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

    #[test]
    fn a_job_gone_before_its_result_was_recorded_is_read_from_the_manifest() {
        let scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10);
        let first = scenario.plan();
        let mut scenario = scenario;
        scenario.previous = first.status.clone();
        scenario.committed.insert(day(22).to_string(), Summary { input_fingerprint: "a".into(), ..summary(6) });
        scenario.committed.insert(day(23).to_string(), Summary { input_fingerprint: "b".into(), spec_hash: "old".into(), ..summary(6) });
        let plan = scenario.plan();
        let done = &plan.status.partitions[0];
        assert_eq!((done.state, done.rows_read, done.failures), (PartitionState::Succeeded, Some(6), 0));
        assert!(done.message.as_deref().unwrap().contains("committed manifest"), "{:?}", done.message);
        let lost = &plan.status.partitions[1];
        assert_eq!((lost.state, lost.failures), (PartitionState::Retrying, 1), "a manifest of another spec does not count");
        assert_eq!(missing_jobs(&first.status, &[]), vec![day(22).to_string(), day(23).to_string()]);
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

    #[test]
    fn a_retry_request_gives_failed_partitions_new_attempts_once() {
        let mut scenario = Scenario::new().partition(22, "a", -10);
        scenario.spec.execution.max_attempts = 1;
        let first = scenario.plan();
        let mut scenario = scenario.next(&first).finish(&first.launches[0].job, JobOutcome::Failed("boom".into()));
        scenario.previous = scenario.plan().status;
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

    #[test]
    fn a_refused_job_leaves_the_partition_waiting_and_the_pipeline_degraded() {
        let scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10);
        let planned = scenario.plan();
        let refused = vec![(planned.launches[1].job.clone(), "exceeded quota: jobs, requested: count/jobs.batch=1".to_string())];
        let plan = launch_refused(planned, &scenario.observation(), &refused);
        assert_eq!(launched(&plan), vec![(22, 1)]);
        assert_eq!(states(&plan)[1], ("day=23".into(), PartitionState::Pending, 0));
        assert_eq!((plan.status.running_jobs, plan.status.pending_partitions), (1, 1));
        assert_eq!(condition(&plan, "Degraded"), ("True", "JobCreateFailed"));
        assert!(plan.happenings.iter().any(|h| matches!(h, Happening::JobCreateFailed { message, .. } if message.contains("quota"))));
        assert!(!plan.happenings.iter().any(|h| matches!(h, Happening::Launched { partition, .. } if partition.ends_with("23"))));
        let mut again = scenario.next(&plan);
        again.now = at(10);
        assert_eq!(launched(&again.plan()), vec![(23, 1)], "the next reconcile tries again under the same name");
    }
}
