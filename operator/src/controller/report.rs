//! Why a finished Job ended, from what its pods say. The transformer's own report (its
//! termination message) comes first; when a pod left none — killed for memory, evicted, never
//! started — the container's and the pod's state say why, newest pod first, followed by the Job's
//! own reason (`DeadlineExceeded`, `BackoffLimitExceeded`, `PodFailurePolicy`). Pure: the observe
//! step lists the pods.

use std::sync::Arc;

use eventpipe_transformer::task::Outcome;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerState, Pod};

use super::job::{CONTAINER, MEMORY_LIMIT_ANNOTATION};
use super::plan::JobOutcome;

/// Replaces a finished Job's outcome with what its pods report: the summary of a success, or the
/// best explanation of a failure. Returns the transformer's report, when there is one.
pub fn explain(outcome: &mut JobOutcome, job: &Job, pods: &[Arc<Pod>]) -> Option<Outcome> {
    let mut newest_first: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
    newest_first.sort_by_key(|pod| std::cmp::Reverse(pod.metadata.creation_timestamp.clone().map(|t| t.0)));
    let pod = newest_first.first()?;
    let state = transformer_state(pod);
    let report = state
        .and_then(|state| state.terminated.as_ref())
        .and_then(|terminated| terminated.message.as_deref())
        .and_then(|message| serde_json::from_str::<Outcome>(message).ok());
    match outcome {
        JobOutcome::Running => {}
        JobOutcome::Succeeded(summary) => {
            if let Some(reported) = report.as_ref().and_then(|report| report.summary.clone()) {
                *summary = Some(reported);
            }
        }
        JobOutcome::Failed(kubernetes_reason) => {
            *kubernetes_reason = match report.as_ref().and_then(|report| report.error.clone()) {
                Some(error) => error,
                None => match pod_detail(pod, state, memory_limit(job).as_deref()) {
                    Some(detail) => format!("{detail}; {kubernetes_reason}"),
                    None => kubernetes_reason.clone(),
                },
            };
        }
    }
    report
}

/// The transformer container's state in a pod.
fn transformer_state(pod: &Pod) -> Option<&ContainerState> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find(|status| status.name == CONTAINER)?.state.as_ref()
}

/// What a pod without a report says about its end.
fn pod_detail(pod: &Pod, state: Option<&ContainerState>, memory_limit: Option<&str>) -> Option<String> {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    if let Some(terminated) = state.and_then(|state| state.terminated.as_ref()) {
        let reason = terminated.reason.as_deref().unwrap_or("Error");
        if reason == "OOMKilled" {
            let limit = memory_limit.map_or_else(|| "its memory limit".to_string(), |limit| format!("its memory limit of {limit}"));
            return Some(format!(
                "OOMKilled: the transformer in pod {name} used more than {limit}; raise execution.resources.limits.memory, \
                 or make partitions smaller with {{hour}} in source.layout"
            ));
        }
        let mut detail = format!("pod {name}: container {CONTAINER} terminated with {reason} (exit code {})", terminated.exit_code);
        if let Some(message) = terminated.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
            detail.push_str(": ");
            detail.push_str(message);
        }
        return Some(detail);
    }
    let status = pod.status.as_ref()?;
    if let Some(reason) = &status.reason {
        return Some(format!("pod {name} {reason}: {}", status.message.as_deref().unwrap_or("no message")));
    }
    let waiting = state.and_then(|state| state.waiting.as_ref())?;
    Some(format!(
        "pod {name}: container {CONTAINER} never started: {} {}",
        waiting.reason.as_deref().unwrap_or("Waiting"),
        waiting.message.as_deref().unwrap_or("")
    )
    .trim_end()
    .to_string())
}

/// The transformer container's memory limit, as the Job's annotation records it.
fn memory_limit(job: &Job) -> Option<String> {
    job.metadata.annotations.as_ref()?.get(MEMORY_LIMIT_ANNOTATION).cloned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::controller::plan::ObservedJob;

    /// A pod of the Job, created `age` seconds after the epoch, in the given container state.
    struct PodBuilder {
        pod: Pod,
    }

    impl PodBuilder {
        fn new(name: &str, created: i64) -> Self {
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                    ..ObjectMeta::default()
                },
                status: Some(PodStatus::default()),
                ..Pod::default()
            };
            Self { pod }
        }

        fn state(mut self, state: ContainerState) -> Self {
            let status = ContainerStatus { name: CONTAINER.into(), state: Some(state), ..ContainerStatus::default() };
            self.pod.status.as_mut().unwrap().container_statuses = Some(vec![status]);
            self
        }

        fn terminated(self, reason: &str, exit_code: i32, message: &str) -> Self {
            self.state(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    reason: Some(reason.into()),
                    exit_code,
                    message: (!message.is_empty()).then(|| message.into()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            })
        }

        fn evicted(mut self) -> Self {
            let status = self.pod.status.as_mut().unwrap();
            status.reason = Some("Evicted".into());
            status.message = Some("The node was low on resource: memory.".into());
            self
        }

        fn build(self) -> Arc<Pod> {
            Arc::new(self.pod)
        }
    }

    fn job_with_limit(limit: &str) -> Job {
        let annotations = BTreeMap::from([(MEMORY_LIMIT_ANNOTATION.to_string(), limit.to_string())]);
        Job { metadata: ObjectMeta { annotations: Some(annotations), ..ObjectMeta::default() }, ..Job::default() }
    }

    fn failed(reason: &str) -> ObservedJob {
        ObservedJob {
            name: "settings-20261124-ab-1".into(),
            partition: "year=2026/month=11/day=24".into(),
            fingerprint: "f".into(),
            spec_hash: "s".into(),
            attempt: 1,
            launch: 1,
            outcome: JobOutcome::Failed(reason.into()),
            stopping: false,
            waiting: None,
            disruptions: Vec::new(),
        }
    }

    fn explained(mut job: ObservedJob, pods: &[Arc<Pod>]) -> JobOutcome {
        explain(&mut job.outcome, &job_with_limit("256Mi"), pods);
        job.outcome
    }

    #[test]
    fn the_transformers_report_wins_and_only_the_newest_pod_counts() {
        let old = PodBuilder::new("old", 10).terminated("Error", 1, r#"{"error":"an older attempt's error"}"#).build();
        let new = PodBuilder::new("new", 20).terminated("Error", 2, r#"{"error":"bad record in s3://b/a.csv line 3"}"#).build();
        let outcome = explained(failed("Job failed (PodFailurePolicy)"), &[new, old]);
        assert_eq!(outcome, JobOutcome::Failed("bad record in s3://b/a.csv line 3".into()));
    }

    #[test]
    fn an_oom_kill_names_the_limit_and_what_to_change() {
        let pod = PodBuilder::new("p", 1).terminated("OOMKilled", 137, "").build();
        let JobOutcome::Failed(message) = explained(failed("Job failed (BackoffLimitExceeded)"), &[pod]) else { panic!() };
        assert!(message.starts_with("OOMKilled: the transformer in pod p used more than its memory limit of 256Mi"), "{message}");
        assert!(message.contains("execution.resources.limits.memory") && message.contains("{hour}"), "{message}");
        assert!(message.ends_with("; Job failed (BackoffLimitExceeded)"), "{message}");
    }

    #[test]
    fn without_a_report_the_container_pod_and_job_say_why() {
        let start_error = PodBuilder::new("p", 1).terminated("StartError", 128, "exec: argument list too long").build();
        let JobOutcome::Failed(message) = explained(failed("Job failed (BackoffLimitExceeded)"), &[start_error]) else { panic!() };
        assert_eq!(message, "pod p: container transformer terminated with StartError (exit code 128): exec: argument list too long; Job failed (BackoffLimitExceeded)");

        let evicted = PodBuilder::new("p", 1).evicted().build();
        let JobOutcome::Failed(message) = explained(failed("Job failed (BackoffLimitExceeded)"), &[evicted]) else { panic!() };
        assert!(message.starts_with("pod p Evicted: The node was low on resource: memory."), "{message}");

        let waiting = PodBuilder::new("p", 1)
            .state(ContainerState {
                waiting: Some(ContainerStateWaiting { reason: Some("ErrImagePull".into()), message: Some("no such image".into()) }),
                ..ContainerState::default()
            })
            .build();
        let JobOutcome::Failed(message) = explained(failed("Job failed (DeadlineExceeded) Job was active longer than specified deadline"), &[waiting]) else { panic!() };
        assert_eq!(message, "pod p: container transformer never started: ErrImagePull no such image; Job failed (DeadlineExceeded) Job was active longer than specified deadline");

        assert_eq!(explained(failed("Job failed (DeadlineExceeded)"), &[]), JobOutcome::Failed("Job failed (DeadlineExceeded)".into()));
    }

    #[test]
    fn a_success_carries_the_reported_summary() {
        let summary = r#"{"summary":{"partition":"p","runId":"r","inputFingerprint":"f","rowsRead":3,"rowsRejected":0,"rowsWritten":3,"bytesWritten":9,"files":[],"spilledBytes":0,"skipped":false,"seconds":0.5}}"#;
        let pod = PodBuilder::new("p", 1).terminated("Completed", 0, summary).build();
        let mut job = failed("");
        job.outcome = JobOutcome::Succeeded(None);
        assert!(matches!(explained(job.clone(), &[pod]), JobOutcome::Succeeded(Some(ref s)) if s.rows_read == 3));
        let unreadable = PodBuilder::new("p", 1).terminated("Completed", 0, "not json").build();
        assert_eq!(explained(job, &[unreadable]), JobOutcome::Succeeded(None));
    }
}
