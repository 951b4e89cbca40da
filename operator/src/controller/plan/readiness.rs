//! When a partition may run: the fingerprint its output should have, and what a waiting
//! partition waits for (an object to settle, the partition to close, the next refresh).

use eventpipe_transformer::query::mode::Mode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{PartitionState, PartitionStatus};

use super::observation::{Observation, ObservedPartition};

/// The fingerprint a partition's output should have: in append mode that of its settled
/// objects (all of them while none has settled yet), in full mode that of all its objects.
pub(super) fn target_fingerprint<'a>(partition: &'a ObservedPartition, mode: &Mode) -> &'a str {
    match &partition.settled {
        Some(settled) if mode.is_append() => &settled.fingerprint,
        _ => &partition.fingerprint,
    }
}

/// Whether a partition that waits may run now, or what it waits for and until when: in append
/// mode for an object to settle; in full mode for the partition to close (or, with
/// `openRefreshSeconds`, for the next refresh) and for its newest object to settle.
pub(super) fn readiness(
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
