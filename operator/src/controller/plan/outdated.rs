//! Which decisions no longer hold: partitions the status does not list (their committed
//! manifest decides), entries whose inputs or spec changed, and Jobs no running entry follows.

use crate::crd::{PartitionState, PartitionStatus};

use super::observation::{Committed, JobOutcome, Observation, ObservedJob, ObservedPartition};
use super::{Effects, Happening, Outdated, Stop, fresh_entry, follow};

/// A partition the status does not list (new, or left out of a long window's status): its
/// committed manifest tells whether it is processed for these inputs and this spec. Until that
/// is read, or when it does not say so, the partition is to process.
pub(super) fn untracked(partition: &str, fingerprint: &str, observation: &Observation<'_>, effects: &mut Effects) -> PartitionStatus {
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
pub(super) fn renew_if_outdated(entry: PartitionStatus, fingerprint: &str, observation: &Observation<'_>, effects: &mut Effects) -> PartitionStatus {
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
pub(super) fn stop_strays(entries: &[(PartitionStatus, Option<&ObservedPartition>)], observation: &Observation<'_>, effects: &mut Effects) {
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
