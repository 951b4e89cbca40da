//! The status of a plan: counts, the newest completed partition, the conditions, and when to
//! look again.

use std::time::Duration;

use k8s_openapi::jiff::SignedDuration;

use crate::crd::{EventPipelineStatus, PartitionState, PartitionStatus, ProcessingMode};

use super::super::conditions::{self, Health};
use super::{Happening, Observation};

/// The status for these entries: counts, the newest completed partition and the conditions.
pub(super) fn summarize(partitions: Vec<PartitionStatus>, happenings: &[Happening], observation: &Observation<'_>) -> EventPipelineStatus {
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
pub(super) fn requeue_after(status: &EventPipelineStatus, observation: &Observation<'_>) -> Duration {
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

