//! The planner: from what was observed (partitions in S3, the pipeline's Jobs, committed
//! manifests, the last status, requests made through annotations) to what to do (Jobs to launch,
//! the new status, what happened). Pure: no I/O, the time is an input, and every decision is
//! covered by the table tests (`tests/`, a file per step, fixtures in `tests.rs`) and the
//! model-based test (`tests/model.rs`).
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
//! When is decided by the transform's mode (see [`eventpipe_transformer::query::mode`]). In append mode
//! a partition's objects count once they are older than the grace period, and each Job converts
//! those its committed output lacks. In full mode a partition is processed when it closes (see
//! [`crate::period`]) and its newest object has settled; while it is open, only every
//! `schedule.openRefreshSeconds` if that is set. Once an append-mode partition of a Delta sink has
//! closed, its increments are compacted by one more Job (see `compaction.rs`). A Delta sink's
//! table is vacuumed by a Job of its own at most daily (see `vacuum.rs`).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use eventpipe_transformer::layout::PartitionKey;
use eventpipe_transformer::task::{Summary, shorten};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{EventPipelineStatus, PartitionCounts, PartitionState, PartitionStatus, Period};
use crate::period;


mod compaction;
mod follow;
mod launch;
pub mod naming;
mod observation;
mod outdated;
mod readiness;
pub mod status;
mod unavailable;
mod vacuum;

pub use observation::{
    Committed, JobOutcome, Observation, ObservedJob, ObservedPartition, ObservedVacuum, Requests, Settled, Unavailable, Waiting,
};
pub use unavailable::{before_launches, launch_refused};
pub use vacuum::vacuum_refused;

use compaction::compact_if_due;
use follow::follow_jobs;
use launch::{Reprocess, launch, reprocess_request};
use outdated::{renew_if_outdated, stop_strays, untracked};
use readiness::{readiness, target_fingerprint};
use status::{oldest_uncommitted, requeue_after, summarize};
use unavailable::{plan_unavailable, readable};
use vacuum::vacuum;

/// Longest message kept on a partition.
const MESSAGE_LIMIT: usize = 1024;

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
    /// The name of a vacuum Job to create (see `vacuum.rs`).
    pub vacuum: Option<String>,
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
    /// Rewrite the partition's committed increments into few files (see `compaction.rs`).
    pub compact: bool,
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
        let closes_at = period::closes_at(&partition.key, &spec.schedule, spec.lateness()).unwrap_or(now);
        entry.period = Some(if now < closes_at { Period::Open } else { Period::Closed });
        compact_if_due(&mut entry, observation);
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
    let vacuum_launch;
    (status.vacuum, vacuum_launch) = vacuum(observation, &entries);
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
        vacuum: vacuum_launch,
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
            vacuum: None,
        }
    }
}

/// A message cut to the length kept in the status.
fn limited(message: impl Into<String>) -> String {
    let mut message = message.into();
    shorten(&mut message, MESSAGE_LIMIT);
    message
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
