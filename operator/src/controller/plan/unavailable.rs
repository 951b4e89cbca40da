//! Plans that cannot go ahead as planned: a reconcile that cannot look at partitions (invalid
//! spec, unreachable source), Jobs the API server refused to create, and the status written
//! before the next launches while the last ones were refused.

use crate::crd::{EventPipelineStatus, PartitionCounts, PartitionState, PartitionStatus};

use super::super::conditions::{self, Health};
use super::follow::follow_jobs;
use super::observation::{Observation, ObservedPartition, Unavailable};
use super::outdated::stop_strays;
use super::status::{self, requeue_after, summarize};
use super::{Effects, Happening, Launch, Plan, fresh_entry, limited};

/// Plans a reconcile that cannot look at partitions (invalid spec, unreachable source): the
/// partitions stay as they were, except that their Jobs are followed and their results recorded;
/// nothing is launched, requests wait, and the conditions say what is wrong. The status keeps
/// the generation its partitions were planned for, so that a spec change still gives failed
/// partitions new attempts once the pipeline can be planned again.
pub(super) fn plan_unavailable(observation: &Observation<'_>, unavailable: Unavailable<'_>) -> Plan {
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
        vacuum: None,
    }
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
    let kept = (plan.status.last_retry_request.take(), plan.status.last_reprocess_request.take(), plan.status.vacuum.take());
    plan.status = summarize(&plan.entries, PartitionCounts::default(), plan.held, &plan.happenings, observation);
    (plan.status.last_retry_request, plan.status.last_reprocess_request, plan.status.vacuum) = kept;
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
pub(super) fn readable(entry: &PartitionStatus) -> PartitionStatus {
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
