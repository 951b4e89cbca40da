//! Compaction of closed partitions: an append-mode partition of a Delta sink is committed in one
//! increment per batch of new objects, each adding its own files. Once the partition has closed,
//! its committed output is handed to one more Job, which rewrites the increments into few files
//! in one commit (see [`eventpipe_transformer::commit::compaction`]) and commits it as one run's.

use eventpipe_transformer::commit::compaction;

use crate::crd::{PartitionState, PartitionStatus, Period};

use super::observation::Observation;

/// Whether a partition's committed output is increments due for compaction.
pub(super) fn compacts(entry: &PartitionStatus, observation: &Observation<'_>) -> bool {
    let closed = entry.period == Some(Period::Closed);
    compaction::is_due(&observation.spec.pipeline.sink, observation.mode, closed, entry.increments.unwrap_or(0))
}

/// Makes a succeeded partition whose increments are due for compaction pending, for a Job that
/// compacts them.
pub(super) fn compact_if_due(entry: &mut PartitionStatus, observation: &Observation<'_>) {
    if entry.state == PartitionState::Succeeded && compacts(entry, observation) {
        entry.state = PartitionState::Pending;
        entry.attempts = 0;
        entry.failures = 0;
        entry.message = Some(format!(
            "closed with {} increments: one more Job rewrites them into few files",
            entry.increments.unwrap_or(0)
        ));
    }
}
