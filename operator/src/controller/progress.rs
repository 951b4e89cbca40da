//! How far a running Job has come, from its pods: whether its newest pod has started (and if not,
//! since when it waits and why: an image that cannot be pulled, no node that fits, no pod created
//! at all), and which of its pods were disrupted (evicted, drained, preempted). Pure: the observe
//! step takes the pods from the watch's store.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::job::CONTAINER;
use super::plan::Waiting;

/// Container waiting reasons that are part of an ordinary start, not a problem.
const STARTING: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// Whether a running Job's newest pod has not started yet, since when and why; `None` once it
/// has started.
pub fn waiting(job: &Job, pods: &[Arc<Pod>]) -> Option<Waiting> {
    let Some(pod) = pods.iter().max_by_key(|pod| pod.metadata.creation_timestamp.clone().map(|t| t.0)) else {
        let since = job.metadata.creation_timestamp.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
        return Some(Waiting { since, problem: None, pod: None });
    };
    if started(pod) {
        return None;
    }
    let since = pod.metadata.creation_timestamp.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    Some(Waiting { since, problem: problem(pod), pod: pod.metadata.name.clone() })
}

/// The reasons of the Job's pods that were disrupted and are still there (a node-pressure
/// eviction leaves its pod behind, failed, with the `DisruptionTarget` condition), oldest first.
pub fn disruptions(pods: &[Arc<Pod>]) -> Vec<String> {
    let mut disrupted: Vec<(Option<Timestamp>, String)> = pods
        .iter()
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            let condition = status.conditions.as_ref()?.iter().find(|c| c.type_ == "DisruptionTarget" && c.status == "True")?;
            let why = status.message.clone().or_else(|| condition.message.clone()).or_else(|| condition.reason.clone());
            let name = pod.metadata.name.as_deref().unwrap_or("?");
            Some((pod.metadata.creation_timestamp.clone().map(|t| t.0), format!("pod {name}: {}", why.unwrap_or_else(|| "disrupted".into()))))
        })
        .collect();
    disrupted.sort();
    disrupted.into_iter().map(|(_, why)| why).collect()
}

/// Whether the transformer container ever ran in this pod.
fn started(pod: &Pod) -> bool {
    let Some(statuses) = pod.status.as_ref().and_then(|status| status.container_statuses.as_ref()) else { return false };
    statuses.iter().filter(|status| status.name == CONTAINER).any(|status| {
        let ran = |state: Option<&k8s_openapi::api::core::v1::ContainerState>| state.is_some_and(|s| s.running.is_some() || s.terminated.is_some());
        status.restart_count > 0 || ran(status.state.as_ref()) || ran(status.last_state.as_ref())
    })
}

/// Why a pod that has not started waits, when that is more than an ordinary start: no node fits
/// it, or its container cannot be created (an image that cannot be pulled, a missing Secret).
fn problem(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let unschedulable = status.conditions.iter().flatten().find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(condition) = unschedulable {
        let reason = condition.reason.as_deref().unwrap_or("Unschedulable");
        return Some(format!("{reason}: {}", condition.message.as_deref().unwrap_or("no node fits the pod")).trim_end_matches(": ").to_string());
    }
    let waiting = status.container_statuses.iter().flatten().filter(|s| s.name == CONTAINER).find_map(|s| s.state.as_ref()?.waiting.as_ref())?;
    let reason = waiting.reason.as_deref().filter(|reason| !STARTING.contains(reason))?;
    Some(match waiting.message.as_deref().filter(|message| !message.is_empty()) {
        Some(message) => format!("{reason}: {message}"),
        None => reason.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn pod(name: &str, created: i64, status: PodStatus) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..ObjectMeta::default()
            },
            status: Some(status),
            ..Pod::default()
        })
    }

    fn container(state: ContainerState) -> PodStatus {
        PodStatus {
            container_statuses: Some(vec![ContainerStatus { name: CONTAINER.into(), state: Some(state), ..ContainerStatus::default() }]),
            ..PodStatus::default()
        }
    }

    fn waiting_for(reason: &str, message: &str) -> PodStatus {
        container(ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message: Some(message.into()) }),
            ..ContainerState::default()
        })
    }

    fn job(created: i64) -> Job {
        Job { metadata: ObjectMeta { creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())), ..ObjectMeta::default() }, ..Job::default() }
    }

    #[test]
    fn a_pod_that_cannot_pull_its_image_waits_with_the_reason() {
        let pulling = pod("p", 20, waiting_for("ErrImagePull", "pull access denied for registry.example/x"));
        let found = waiting(&job(10), &[pulling]).unwrap();
        assert_eq!(found.since, Timestamp::from_second(20).unwrap(), "counted from the pod's creation");
        assert_eq!(found.problem.as_deref(), Some("ErrImagePull: pull access denied for registry.example/x"));
        assert_eq!(found.pod.as_deref(), Some("p"));
    }

    #[test]
    fn an_ordinary_start_waits_without_a_problem_and_a_started_pod_does_not_wait() {
        let creating = pod("p", 20, waiting_for("ContainerCreating", ""));
        assert_eq!(waiting(&job(10), &[creating]).unwrap().problem, None);
        let running = pod("p", 20, container(ContainerState { running: Some(ContainerStateRunning::default()), ..ContainerState::default() }));
        assert_eq!(waiting(&job(10), std::slice::from_ref(&running)), None);
        let replacement = pod("q", 30, waiting_for("ContainerCreating", ""));
        assert_eq!(waiting(&job(10), &[running, replacement]).unwrap().since, Timestamp::from_second(30).unwrap(), "the newest pod counts");
    }

    #[test]
    fn an_unschedulable_pod_and_a_job_without_pods_wait() {
        let unschedulable = PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.".into()),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        };
        let found = waiting(&job(10), &[pod("p", 20, unschedulable)]).unwrap();
        assert!(found.problem.unwrap().starts_with("Unschedulable: 0/3 nodes are available"));
        let none = waiting(&job(10), &[]).unwrap();
        assert_eq!((none.since, none.problem, none.pod), (Timestamp::from_second(10).unwrap(), None, None));
    }

    #[test]
    fn disrupted_pods_are_listed_oldest_first() {
        let evicted = |name: &str, created: i64| {
            pod(name, created, PodStatus {
                phase: Some("Failed".into()),
                message: Some("The node was low on resource: memory.".into()),
                conditions: Some(vec![PodCondition {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                    reason: Some("TerminationByKubelet".into()),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            })
        };
        let running = pod("c", 30, container(ContainerState { running: Some(ContainerStateRunning::default()), ..ContainerState::default() }));
        assert_eq!(
            disruptions(&[evicted("b", 20), running, evicted("a", 10)]),
            ["pod a: The node was low on resource: memory.", "pod b: The node was low on resource: memory."]
        );
    }
}
