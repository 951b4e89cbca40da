//! Choosing what to launch: the oldest runnable partitions while Job slots are free, a requested
//! reprocess first.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{PartitionState, PartitionStatus};

use super::naming::{job_name, version};
use super::status::{MAX_LISTED, tracked};
use super::compaction::compacts;
use super::{Happening, JobOutcome, Launch, Observation, ObservedJob, ObservedPartition, Outdated};

/// Where a reprocess request stands in this reconcile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Reprocess {
    /// No new request.
    None,
    /// The partition at this index is named: it is launched first, or, while no Job slot is free
    /// or its own Job still runs, the request is kept for a later reconcile.
    Waiting(usize),
    /// Carried out or refused; the request is recorded as handled.
    Handled,
}

/// Marks the partition a new `eventpipe.dev/reprocess` request names for processing.
pub(super) fn reprocess_request(
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

/// Launches the oldest runnable partitions while Job slots are free, unless suspended or being
/// deleted; a requested reprocess goes first. Returns the launches and how many runnable
/// partitions were held back because the status already tracks as many running, retrying and
/// failed partitions as it lists.
pub(super) fn launch(
    entries: &mut [(PartitionStatus, Option<&ObservedPartition>)],
    observation: &Observation<'_>,
    reprocess: Reprocess,
    happenings: &mut Vec<Happening>,
) -> (Vec<Launch>, u32) {
    if observation.spec.suspend || observation.deleting {
        return (Vec::new(), 0);
    }
    // A partition with a Job still running, its own or one being stopped, launches nothing; Jobs
    // being stopped take their slots until they are gone.
    let active: Vec<&ObservedJob> = observation.jobs.iter().filter(|job| job.outcome == JobOutcome::Running).collect();
    let busy: HashSet<&str> = active.iter().map(|job| job.partition.as_str()).collect();
    let followed: HashSet<&str> =
        entries.iter().filter(|(entry, _)| entry.state == PartitionState::Running).filter_map(|(entry, _)| entry.job.as_deref()).collect();
    let stopping = active.iter().filter(|job| !followed.contains(job.name.as_str())).count();
    let mut free = (observation.spec.execution.max_concurrent_jobs as usize).saturating_sub(followed.len() + stopping);
    let mut room = MAX_LISTED.saturating_sub(entries.iter().filter(|(entry, _)| tracked(entry)).count());
    let mut held = 0;
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
        if !due || busy.contains(entry.partition.as_str()) {
            continue;
        }
        let newly_tracked = !tracked(entry);
        if newly_tracked && room == 0 {
            held += 1;
            continue;
        }
        room -= usize::from(newly_tracked);
        entry.attempts += 1;
        let launched_before = observation.jobs.iter().filter(|job| job.partition == entry.partition).map(|job| job.launch);
        entry.launch = launched_before.fold(entry.launch, u32::max) + 1;
        let version = version(observation.uid, &entry.fingerprint, &entry.spec_hash);
        let job = job_name(observation.pipeline, &partition.key, &version, entry.launch);
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
            launch: entry.launch,
            force: Some(index) == forced,
            compact: Some(index) != forced && compacts(entry, observation),
            settled_before,
        });
        free -= 1;
    }
    (launches, held)
}
