//! The status of a plan: counts of every partition by state, the entries the status lists (at
//! most [`MAX_LISTED`], however long the window), the newest completed and oldest unprocessed
//! partitions, the conditions, and when to look again.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{EventPipelineStatus, PartitionCounts, PartitionState, PartitionStatus, ProcessingMode};

use super::super::conditions::{self, Health};
use super::{Happening, Observation, ObservedPartition};

/// At most this many partitions are listed in the status, which keeps it far below what the API
/// server stores for one object; `partitionCounts` counts them all.
pub const MAX_LISTED: usize = 400;

/// Whether an entry holds what only the status remembers (a Job to follow, failures counted), so
/// that it is always listed; the others can be derived again from the listing and the manifests.
pub(super) fn tracked(entry: &PartitionStatus) -> bool {
    matches!(entry.state, PartitionState::Running | PartitionState::Retrying | PartitionState::Failed)
}

/// The status for these entries (every partition's, besides those counted in `unlisted`):
/// counts, the entries it lists, the newest completed and oldest unprocessed partitions, and the
/// conditions. `held` partitions could not be launched because the status tracks as many as it
/// can.
pub(super) fn summarize(
    entries: &[PartitionStatus],
    unlisted: PartitionCounts,
    held: u32,
    happenings: &[Happening],
    observation: &Observation<'_>,
) -> EventPipelineStatus {
    let previous = observation.previous;
    let counts = count(entries, unlisted);
    let pending = counts.settling + counts.pending + counts.retrying;
    let failed: Vec<&PartitionStatus> = entries.iter().filter(|p| p.state == PartitionState::Failed).collect();
    // Partitions that just succeeded count even when they left the window.
    let just_succeeded = happenings.iter().filter_map(|happening| match happening {
        Happening::Succeeded { partition, .. } => Some(partition),
        _ => None,
    });
    let last_completed_partition = entries
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
            held,
        }
    } else if held > 0 {
        Health::Held { held, tracked: MAX_LISTED }
    } else if observation.spec.suspend && pending > 0 {
        Health::Suspended { pending }
    } else if pending + counts.running > 0 {
        Health::Processing { pending, running: counts.running }
    } else if entries.is_empty() {
        Health::NoPartitions { looked_in: observation.looked_in }
    } else {
        let open = counts.open as usize;
        Health::UpToDate { processed: entries.len() - open, open, newest: last_completed_partition.as_deref() }
    };
    EventPipelineStatus {
        observed_generation: observation.generation,
        conditions: conditions::conditions(&previous.conditions, &health, observation.generation, observation.now),
        last_completed_partition,
        pending_partitions: pending,
        running_jobs: counts.running,
        failed_partitions: counts.failed,
        oldest_unprocessed_partition: entries.iter().filter(|p| p.state != PartitionState::Succeeded).map(|p| p.partition.clone()).min(),
        partition_counts: counts,
        partitions: listed(entries),
        mode: Some(if observation.mode.is_append() { ProcessingMode::Append } else { ProcessingMode::Full }),
        mode_reason: Some(observation.mode.to_string()),
        last_retry_request: None,
        last_reprocess_request: None,
        vacuum: previous.vacuum.clone(),
    }
}

/// The partitions `previous` counted but did not list: a reconcile that cannot look at partitions
/// leaves them as they were.
pub(super) fn unlisted(previous: &EventPipelineStatus) -> PartitionCounts {
    let (all, listed) = (&previous.partition_counts, count(&previous.partitions, PartitionCounts::default()));
    PartitionCounts {
        settling: all.settling.saturating_sub(listed.settling),
        open: all.open.saturating_sub(listed.open),
        pending: all.pending.saturating_sub(listed.pending),
        running: all.running.saturating_sub(listed.running),
        retrying: all.retrying.saturating_sub(listed.retrying),
        succeeded: all.succeeded.saturating_sub(listed.succeeded),
        failed: all.failed.saturating_sub(listed.failed),
    }
}

/// The entries by state, added to `counts`.
fn count(entries: &[PartitionStatus], mut counts: PartitionCounts) -> PartitionCounts {
    for entry in entries {
        let count = match entry.state {
            PartitionState::Settling => &mut counts.settling,
            PartitionState::Open => &mut counts.open,
            PartitionState::Pending | PartitionState::Unknown => &mut counts.pending,
            PartitionState::Running => &mut counts.running,
            PartitionState::Retrying => &mut counts.retrying,
            PartitionState::Succeeded => &mut counts.succeeded,
            PartitionState::Failed => &mut counts.failed,
        };
        *count += 1;
    }
    counts
}

/// The entries the status lists, oldest first: every tracked one, then the oldest still to
/// process, then the newest processed, up to [`MAX_LISTED`].
fn listed(entries: &[PartitionStatus]) -> Vec<PartitionStatus> {
    if entries.len() <= MAX_LISTED {
        return entries.to_vec();
    }
    let to_process = entries.iter().filter(|entry| !tracked(entry) && entry.state != PartitionState::Succeeded);
    let processed = entries.iter().rev().filter(|entry| entry.state == PartitionState::Succeeded);
    let mut listed: Vec<PartitionStatus> =
        entries.iter().filter(|entry| tracked(entry)).chain(to_process).chain(processed).take(MAX_LISTED).cloned().collect();
    listed.sort_by(|a, b| a.partition.cmp(&b.partition));
    listed
}

/// The next poll, or earlier when a retry, the end of a grace period or a partition's close is
/// due before it; in append mode also when the next object settles.
pub(super) fn requeue_after(entries: &[PartitionStatus], observation: &Observation<'_>) -> Duration {
    let poll = observation.spec.listing_interval();
    let grace = SignedDuration::from_secs(observation.spec.schedule.grace_period_seconds.into());
    let settles = observation.partitions.iter().filter(|_| observation.mode.is_append()).filter_map(|partition| {
        partition.oldest_after(partition.settled.as_ref().map(|settled| settled.before)).map(|oldest| oldest + grace)
    });
    entries
        .iter()
        .filter(|p| matches!(p.state, PartitionState::Retrying | PartitionState::Settling | PartitionState::Open))
        .filter_map(|p| p.not_before.as_ref().map(|at| at.0))
        .chain(settles)
        .map(|at| Duration::try_from(at.duration_since(observation.now)).unwrap_or(Duration::ZERO))
        .map(|wait| wait.max(Duration::from_secs(1)))
        .fold(poll, Duration::min)
}

/// When the oldest object whose rows are not committed yet was written — one that arrived after
/// the cut-off of its partition's last committed run, or any object of a partition never
/// committed — for the lag metric.
pub(super) fn oldest_uncommitted(entries: &[PartitionStatus], partitions: &[ObservedPartition]) -> Option<Timestamp> {
    let by_partition: HashMap<&str, &PartitionStatus> = entries.iter().map(|entry| (entry.partition.as_str(), entry)).collect();
    partitions
        .iter()
        .filter_map(|partition| {
            let entry = by_partition.get(partition.key.to_string().as_str())?;
            if entry.state == PartitionState::Succeeded && entry.fingerprint == partition.fingerprint {
                return None;
            }
            partition.oldest_after(entry.committed_at.as_ref().map(|at| entry.settled_before.as_ref().unwrap_or(at).0))
        })
        .min()
}
