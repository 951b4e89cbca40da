//! What the planner decides from: the partitions in the window, the pipeline's Jobs, committed
//! manifests, requests made through annotations, and why a reconcile cannot look at partitions.

use std::collections::HashMap;

use eventpipe_transformer::commit::vacuum::Vacuumed;
use eventpipe_transformer::layout::PartitionKey;
use eventpipe_transformer::query::mode::Mode;
use eventpipe_transformer::task::Summary;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{EventPipelineSpec, EventPipelineStatus};

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

/// A vacuum Job of the pipeline (see `vacuum.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedVacuum {
    /// The Job's name.
    pub name: String,
    /// Whether and how it finished.
    pub outcome: JobOutcome,
    /// What it reported it did, once it succeeded.
    pub vacuumed: Option<Vacuumed>,
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
    /// The pipeline's partition Jobs.
    pub jobs: &'a [ObservedJob],
    /// The pipeline's vacuum Jobs.
    pub vacuums: &'a [ObservedVacuum],
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
