//! The planner: from what was observed (partitions in S3, the pipeline's Jobs, committed
//! manifests, the last status, requests made through annotations) to what to do (Jobs to launch,
//! the new status, what happened). Pure: no I/O, the time is an input, and every decision is
//! covered by the table tests (`tests.rs`) and the model-based test (`tests/model.rs`).
//!
//! It runs as observe → plan → act: when the plan needs a partition's manifest the observation
//! lacks ([`Plan::unread_manifests`]), the reconcile reads it and plans again before acting on
//! anything. Every launch of a partition gets the next launch number; the status records it
//! before the Job exists, and only that launch's Job (or, after a lost status, a later one for
//! the same inputs and spec) decides the partition's state (see `follow.rs`).
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

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use eventpipe_transformer::layout::PartitionKey;
use eventpipe_transformer::mode::Mode;
use eventpipe_transformer::task::{Summary, shorten};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{EventPipelineSpec, EventPipelineStatus, PartitionCounts, PartitionState, PartitionStatus, Period};
use crate::period;

use super::conditions::{self, Health};

mod follow;
mod launch;
pub mod status;

use follow::follow_jobs;
use launch::{Reprocess, launch, reprocess_request};
use status::{oldest_uncommitted, requeue_after, summarize};

/// Longest message kept on a partition.
const MESSAGE_LIMIT: usize = 1024;

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
    /// Its partition's launch number it was created under (see `PartitionStatus::launch`).
    pub launch: u32,
    /// Whether and how it finished.
    pub outcome: JobOutcome,
    /// Whether its deletion was asked for (its pods are still stopping).
    pub stopping: bool,
    /// While it runs: whether its newest pod has not started yet.
    pub waiting: Option<Waiting>,
    /// While it runs: its pods that were disrupted (evicted, drained, preempted) and are still
    /// there, oldest first, each with why.
    pub disruptions: Vec<String>,
}

/// A running Job whose newest pod has not started.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    /// Since when: the newest pod's creation, or the Job's while it has no pod.
    pub since: Timestamp,
    /// Why, when that is more than an ordinary start: `ErrImagePull: …`, `Unschedulable: …`.
    pub problem: Option<String>,
    /// The pod, once one was created.
    pub pod: Option<String>,
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

/// What a partition's `_manifest.json` commits, as read for this reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum Committed {
    /// The manifest commits this output.
    Output(Summary),
    /// There is no manifest.
    Nothing,
    /// The manifest could not be read (the sink is unreachable, or the spec invalid), and why.
    Unreadable(String),
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
    /// Whether the pipeline is being deleted (it has a `deletionTimestamp`).
    pub deleting: bool,
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
    /// The manifests of the partitions a first plan asked for ([`Plan::unread_manifests`]).
    pub committed: &'a HashMap<String, Committed>,
    /// Requests made through annotations.
    pub requests: Requests<'a>,
    /// Why the spec or the source could not be used in this reconcile, if so: the partitions are
    /// not looked at, but their Jobs are followed.
    pub unavailable: Option<Unavailable<'a>>,
}

/// Why a reconcile cannot look at partitions, for the `Degraded` condition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Unavailable<'a> {
    /// A CamelCase reason: `InvalidSpec` or `SourceUnavailable`.
    pub reason: &'static str,
    /// What is wrong.
    pub message: &'a str,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Jobs to create.
    pub launches: Vec<Launch>,
    /// Jobs to delete: launched for a decision that no longer holds, or failed by the operator.
    pub stops: Vec<Stop>,
    /// The status to write (only when it differs from the previous one).
    pub status: EventPipelineStatus,
    /// Every partition's entry; the status lists at most [`status::MAX_LISTED`] of them.
    pub entries: Vec<PartitionStatus>,
    /// Partitions that could not be launched because the status tracks as many as it can.
    pub held: u32,
    /// When the oldest object whose rows are not committed yet was written, for the lag metric.
    pub oldest_uncommitted: Option<Timestamp>,
    /// What happened, for Events, metrics and logs.
    pub happenings: Vec<Happening>,
    /// When to look again, at the latest.
    pub requeue_after: Duration,
    /// Whether the next reconcile must list the source again: a Job committed other inputs than
    /// the listing showed (an object landed while it ran).
    pub relist: bool,
    /// Partitions whose manifest this plan needs and the observation lacks: the reconcile reads
    /// them and plans again before acting on anything.
    pub unread_manifests: Vec<String>,
}

/// A Job to delete, with its pods.
#[derive(Clone, Debug, PartialEq)]
pub struct Stop {
    /// The Job's name.
    pub job: String,
    /// Its partition.
    pub partition: String,
    /// Why it is stopped.
    pub reason: String,
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
    /// The partition's launch number (see `PartitionStatus::launch`).
    pub launch: u32,
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
    /// A Job is deleted.
    Stopped { partition: String, job: String, reason: String },
    /// A Job's pod has not started, for a reason beyond an ordinary start.
    NotStarting { partition: String, job: String, problem: String },
}

/// What planning the partitions produces besides their entries.
#[derive(Default)]
struct Effects {
    happenings: Vec<Happening>,
    stops: Vec<Stop>,
    unread: BTreeSet<String>,
}

/// Plans one reconcile.
pub fn plan(observation: &Observation<'_>) -> Plan {
    if let Some(unavailable) = observation.unavailable {
        return plan_unavailable(observation, unavailable);
    }
    let Observation { now, spec, previous, .. } = *observation;
    let spec_changed = previous.observed_generation.is_some() && previous.observed_generation != observation.generation;
    let retry_requested = observation.requests.retry.filter(|value| previous.last_retry_request.as_deref() != Some(*value));
    let mut previous_entries: HashMap<&str, &PartitionStatus> =
        previous.partitions.iter().map(|entry| (entry.partition.as_str(), entry)).collect();
    let mut effects = Effects::default();
    let mut entries = Vec::with_capacity(observation.partitions.len());
    let mut retried = 0;
    let mut relist = false;
    for partition in observation.partitions {
        let key = partition.key.to_string();
        let fingerprint = target_fingerprint(partition, observation.mode);
        let mut entry = match previous_entries.remove(key.as_str()) {
            Some(entry) => readable(entry),
            None => untracked(&key, fingerprint, observation, &mut effects),
        };
        let was_running = entry.state == PartitionState::Running;
        if !was_running {
            entry = renew_if_outdated(entry, fingerprint, observation, &mut effects);
        }
        let mut entry = follow_jobs(entry, observation, &mut effects);
        // A result recorded just now is newer than the listing it would be compared with.
        let just_finished = was_running && entry.state != PartitionState::Running;
        relist |= just_finished && entry.state == PartitionState::Succeeded && entry.fingerprint != fingerprint;
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
        effects.happenings.push(Happening::RetryRequested { partitions: retried });
    }
    // Partitions no longer observed (out of the window, or deleted) are kept only while a Job
    // still works on them.
    let mut gone: Vec<_> = previous_entries.into_values().map(readable).collect();
    gone.sort_by(|a, b| a.partition.cmp(&b.partition));
    for entry in gone {
        let entry = follow_jobs(entry, observation, &mut effects);
        if entry.state == PartitionState::Running {
            entries.push((entry, None));
        }
    }
    entries.sort_by(|a, b| a.0.partition.cmp(&b.0.partition));

    if !effects.unread.is_empty() {
        return Plan::reading(effects.unread, observation);
    }
    stop_strays(&entries, observation, &mut effects);
    let mut happenings = effects.happenings;
    let reprocess = reprocess_request(&mut entries, observation, &mut happenings);
    let (launches, held) = launch(&mut entries, observation, reprocess, &mut happenings);
    let entries: Vec<PartitionStatus> = entries.into_iter().map(|(entry, _)| entry).collect();
    let mut status = summarize(&entries, PartitionCounts::default(), held, &happenings, observation);
    // A request is recorded while its annotation stays; removing the annotation forgets it, so
    // that the same value asks again.
    status.last_retry_request = observation.requests.retry.map(str::to_string);
    let reprocess_waits = matches!(reprocess, Reprocess::Waiting(_)) && !launches.iter().any(|launch| launch.force);
    status.last_reprocess_request = if reprocess_waits {
        previous.last_reprocess_request.clone()
    } else {
        observation.requests.reprocess.map(str::to_string)
    };
    let requeue_after = if relist { Duration::from_secs(1) } else { requeue_after(&entries, observation) };
    Plan {
        launches,
        stops: effects.stops,
        status,
        oldest_uncommitted: oldest_uncommitted(&entries, observation.partitions),
        entries,
        held,
        happenings,
        requeue_after,
        relist,
        unread_manifests: Vec::new(),
    }
}

impl Plan {
    /// A plan that only asks for manifests: nothing is done before they are read.
    fn reading(unread: BTreeSet<String>, observation: &Observation<'_>) -> Self {
        Plan {
            launches: Vec::new(),
            stops: Vec::new(),
            status: observation.previous.clone(),
            entries: observation.previous.partitions.clone(),
            held: 0,
            oldest_uncommitted: None,
            happenings: Vec::new(),
            requeue_after: Duration::ZERO,
            relist: false,
            unread_manifests: unread.into_iter().collect(),
        }
    }
}

/// A partition the status does not list (new, or left out of a long window's status): its
/// committed manifest tells whether it is processed for these inputs and this spec. Until that
/// is read, or when it does not say so, the partition is to process.
fn untracked(partition: &str, fingerprint: &str, observation: &Observation<'_>, effects: &mut Effects) -> PartitionStatus {
    let mut entry = fresh_entry(partition, fingerprint, observation.spec_hash);
    match observation.committed.get(partition) {
        None => {
            effects.unread.insert(partition.to_string());
        }
        Some(Committed::Output(committed)) if committed.input_fingerprint == fingerprint && committed.spec_hash == observation.spec_hash => {
            entry.state = PartitionState::Succeeded;
            follow::take_counts(&mut entry, committed);
            entry.message = Some("the partition's committed manifest holds these inputs and this spec".into());
        }
        Some(_) => {}
    }
    entry
}

/// An entry whose inputs or spec changed since it was decided starts afresh for the current ones,
/// keeping what the partition's history needs (its launch number, its committed output).
fn renew_if_outdated(entry: PartitionStatus, fingerprint: &str, observation: &Observation<'_>, effects: &mut Effects) -> PartitionStatus {
    let cause = if entry.spec_hash != observation.spec_hash {
        Outdated::Spec
    } else if entry.fingerprint != fingerprint {
        Outdated::Inputs
    } else {
        return entry;
    };
    // In append mode new objects are the partition growing, not a change.
    let grows = observation.mode.is_append() && cause == Outdated::Inputs;
    if entry.state == PartitionState::Succeeded && !grows {
        effects.happenings.push(Happening::Outdated { partition: entry.partition.clone(), cause });
    }
    PartitionStatus {
        launch: entry.launch,
        committed_at: entry.committed_at,
        increments: entry.increments,
        ..fresh_entry(&entry.partition, fingerprint, observation.spec_hash)
    }
}

/// Asks to stop every Job that still runs but is not the Job of a running entry: launched for a
/// decision that no longer holds, it could replace the output the status records.
fn stop_strays(entries: &[(PartitionStatus, Option<&ObservedPartition>)], observation: &Observation<'_>, effects: &mut Effects) {
    let followed = |job: &ObservedJob| {
        entries.iter().any(|(entry, _)| entry.state == PartitionState::Running && entry.job.as_deref() == Some(job.name.as_str()))
    };
    let stopped = |job: &ObservedJob| effects.stops.iter().any(|stop| stop.job == job.name);
    let strays: Vec<&ObservedJob> =
        observation.jobs.iter().filter(|job| job.outcome == JobOutcome::Running && !job.stopping && !followed(job) && !stopped(job)).collect();
    for job in strays {
        let reason = format!("launched for inputs or a spec that {} no longer processes", job.partition);
        effects.happenings.push(Happening::Stopped { partition: job.partition.clone(), job: job.name.clone(), reason: reason.clone() });
        effects.stops.push(Stop { job: job.name.clone(), partition: job.partition.clone(), reason });
    }
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

/// Plans a reconcile that cannot look at partitions (invalid spec, unreachable source): the
/// partitions stay as they were, except that their Jobs are followed and their results recorded;
/// nothing is launched, requests wait, and the conditions say what is wrong. The status keeps
/// the generation its partitions were planned for, so that a spec change still gives failed
/// partitions new attempts once the pipeline can be planned again.
fn plan_unavailable(observation: &Observation<'_>, unavailable: Unavailable<'_>) -> Plan {
    let previous = observation.previous;
    let mut effects = Effects::default();
    let entries: Vec<(PartitionStatus, Option<&ObservedPartition>)> =
        previous.partitions.iter().map(|entry| (follow_jobs(readable(entry), observation, &mut effects), None)).collect();
    if !effects.unread.is_empty() {
        return Plan::reading(effects.unread, observation);
    }
    stop_strays(&entries, observation, &mut effects);
    let entries: Vec<PartitionStatus> = entries.into_iter().map(|(entry, _)| entry).collect();
    // Partitions the status does not list are not looked at: they stay as they were counted.
    let mut status = summarize(&entries, status::unlisted(previous), 0, &effects.happenings, observation);
    let message = limited(unavailable.message);
    status.conditions = conditions::conditions(
        &previous.conditions,
        &Health::Degraded { reason: unavailable.reason, message: &message },
        observation.generation,
        observation.now,
    );
    let status = EventPipelineStatus {
        observed_generation: previous.observed_generation,
        mode: previous.mode,
        mode_reason: previous.mode_reason.clone(),
        last_retry_request: previous.last_retry_request.clone(),
        last_reprocess_request: previous.last_reprocess_request.clone(),
        ..status
    };
    Plan {
        launches: Vec::new(),
        stops: effects.stops,
        status,
        requeue_after: requeue_after(&entries, observation),
        entries,
        held: 0,
        oldest_uncommitted: None,
        happenings: effects.happenings,
        relist: false,
        unread_manifests: Vec::new(),
    }
}

/// A message cut to the length kept in the status.
fn limited(message: impl Into<String>) -> String {
    let mut message = message.into();
    shorten(&mut message, MESSAGE_LIMIT);
    message
}

/// The plan after the API server refused to create some of its Jobs (quota, admission webhook,
/// RBAC): those partitions wait again as before the launch, their launch is not reported, and
/// `Degraded` says why.
pub fn launch_refused(mut plan: Plan, observation: &Observation<'_>, refused: &[(String, String)]) -> Plan {
    for (job, message) in refused {
        let Some(entry) = plan.entries.iter_mut().find(|entry| entry.job.as_deref() == Some(job.as_str())) else {
            continue;
        };
        let before = observation.previous.partitions.iter().find(|p| p.partition == entry.partition);
        entry.attempts = entry.attempts.saturating_sub(1);
        entry.launch = before.map_or(0, |p| p.launch);
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
    plan.status = summarize(&plan.entries, PartitionCounts::default(), plan.held, &plan.happenings, observation);
    (plan.status.last_retry_request, plan.status.last_reprocess_request) = requests;
    if let Some((job, message)) = refused.first() {
        let message = limited(format!("creating Job {job} failed: {message}"));
        plan.status.conditions = conditions::conditions(
            &observation.previous.conditions,
            &Health::Degraded { reason: "JobCreateFailed", message: &message },
            observation.generation,
            observation.now,
        );
    }
    plan
}

/// The status to write before the plan's Jobs are created. While the API server refused the last
/// launches, `Degraded` stays `JobCreateFailed` until a Job is created: the next try's status
/// never says, for the moment its creates take, that nothing is wrong.
pub fn before_launches(plan: &Plan, previous: &EventPipelineStatus) -> EventPipelineStatus {
    let mut status = plan.status.clone();
    let refused_before = previous.conditions.iter().find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "JobCreateFailed");
    if let Some(refused_before) = refused_before.filter(|_| !plan.launches.is_empty()) {
        for condition in status.conditions.iter_mut().filter(|c| c.type_ == "Degraded") {
            *condition = refused_before.clone();
        }
    }
    status
}

/// An entry as this version can plan it: one whose state another version wrote and this one does
/// not know starts afresh, keeping its launch number and what it committed.
fn readable(entry: &PartitionStatus) -> PartitionStatus {
    if entry.state != PartitionState::Unknown {
        return entry.clone();
    }
    PartitionStatus {
        launch: entry.launch,
        committed_at: entry.committed_at.clone(),
        increments: entry.increments,
        message: Some("its state was written by another version of the operator; checked again".into()),
        ..fresh_entry(&entry.partition, &entry.fingerprint, &entry.spec_hash)
    }
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

#[cfg(test)]
mod tests;
