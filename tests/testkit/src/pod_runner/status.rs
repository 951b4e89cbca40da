//! The pod status the kubelet would report for what the runner observed: phase (`getPhase`),
//! the kubelet-owned conditions (`status/generate.go`) and container statuses. Pure: no I/O, so
//! every rule is unit-tested here.

use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};

use super::env::POD_IP;

/// A container's current state as the runtime knows it.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Terminated),
}

/// How a container instance ended.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub container_id: Option<String>,
}

impl Terminated {
    /// The kubelet's stand-in for a container that never ran when its pod terminates
    /// (`TerminatePod` in the status manager).
    fn unknown(now: Timestamp) -> Self {
        Terminated {
            exit_code: 137,
            reason: "ContainerStatusUnknown".into(),
            message: Some("The container could not be located when the pod was terminated".into()),
            started_at: None,
            finished_at: now,
            container_id: None,
        }
    }
}

/// What the runner knows about one container of the pod.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ContainerRecord {
    pub name: String,
    pub image: String,
    /// Empty until the image is "pulled".
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: State,
    pub last_termination: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
}

impl ContainerRecord {
    /// A container not started yet (`ContainerCreating`).
    pub(super) fn creating(name: &str, image: &str) -> Self {
        ContainerRecord {
            name: name.into(),
            image: image.into(),
            image_id: String::new(),
            container_id: None,
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last_termination: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }
}

/// Everything the status is computed from.
pub(super) struct Observed<'a> {
    pub restart_policy: &'a str,
    pub containers: &'a [ContainerRecord],
    /// The pod is being deleted and none of its containers runs any more.
    pub terminal: bool,
    /// The pod's "sandbox" (its network and volumes) is set up, and not yet released.
    pub sandbox_ready: bool,
    /// The phase the API server has now; terminal phases are never left.
    pub current_phase: Option<&'a str>,
    /// Conditions last reported, for their `lastTransitionTime`.
    pub previous_conditions: &'a [PodCondition],
    pub start_time: Timestamp,
    pub now: Timestamp,
}

/// The status to write to `pods/status`. Its conditions are only those the kubelet owns; a
/// strategic merge patch keeps the others (e.g. `DisruptionTarget`) untouched.
pub(super) fn pod_status(observed: &Observed<'_>) -> PodStatus {
    let containers: Vec<ContainerRecord> = observed
        .containers
        .iter()
        .map(|c| finalize(c, observed.terminal, observed.now))
        .collect();
    let mut phase = phase(observed.restart_policy, &containers, observed.terminal);
    if let Some(current @ ("Succeeded" | "Failed")) = observed.current_phase {
        phase = if current == "Succeeded" {
            "Succeeded"
        } else {
            "Failed"
        };
    }

    let condition = |type_: &str, status: bool, reason: Option<String>, message: Option<String>| {
        let status = if status { "True" } else { "False" };
        let transition = observed
            .previous_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(observed.now));
        PodCondition {
            type_: type_.into(),
            status: status.into(),
            reason,
            message,
            last_transition_time: Some(transition),
            ..Default::default()
        }
    };

    let unready: Vec<&str> = containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let (ready, ready_reason, ready_message) = match phase {
        "Succeeded" => (false, Some("PodCompleted".to_string()), None),
        "Failed" => (false, Some("PodFailed".to_string()), None),
        _ if unready.is_empty() => (true, None, None),
        _ => (
            false,
            Some("ContainersNotReady".to_string()),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        ),
    };
    let initialized_reason = (phase == "Succeeded").then(|| "PodCompleted".to_string());
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            observed.sandbox_ready && !observed.terminal,
            None,
            None,
        ),
        condition("Initialized", true, initialized_reason, None),
        condition("Ready", ready, ready_reason.clone(), ready_message.clone()),
        condition("ContainersReady", ready, ready_reason, ready_message),
        condition("PodScheduled", true, None, None),
    ];

    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(POD_IP.into()),
        host_ips: Some(vec![HostIP { ip: POD_IP.into() }]),
        pod_ip: Some(POD_IP.into()),
        pod_ips: Some(vec![PodIP { ip: POD_IP.into() }]),
        start_time: Some(Time(observed.start_time)),
        container_statuses: Some(containers.iter().map(container_status).collect()),
        ..Default::default()
    }
}

/// At the end of a pod's life every container that is not terminated is reported as an unknown
/// failure, so a pod is never described as successful by accident.
fn finalize(record: &ContainerRecord, terminal: bool, now: Timestamp) -> ContainerRecord {
    let mut record = record.clone();
    if terminal && !matches!(record.state, State::Terminated(_)) {
        record.state = State::Terminated(Terminated::unknown(now));
        record.ready = false;
        record.started = false;
    }
    record
}

/// `getPhase` of the kubelet, for pods without init containers.
pub(super) fn phase(
    restart_policy: &str,
    containers: &[ContainerRecord],
    terminal: bool,
) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for container in containers {
        match &container.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } if container.last_termination.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == 0 {
        return "Pending";
    }
    if terminal {
        return if stopped == succeeded {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    match restart_policy {
        "Always" => "Running",
        _ if stopped == succeeded => "Succeeded",
        "Never" => "Failed",
        // OnFailure: the failed containers are about to restart.
        _ => "Running",
    }
}

fn container_status(record: &ContainerRecord) -> ContainerStatus {
    ContainerStatus {
        name: record.name.clone(),
        image: record.image.clone(),
        image_id: record.image_id.clone(),
        container_id: record.container_id.clone(),
        ready: record.ready,
        started: Some(record.started),
        restart_count: record.restart_count,
        state: Some(api_state(&record.state)),
        last_state: Some(
            record
                .last_termination
                .as_ref()
                .map(|t| ContainerState {
                    terminated: Some(api_terminated(t)),
                    ..Default::default()
                })
                .unwrap_or_default(),
        ),
        ..Default::default()
    }
}

fn api_state(state: &State) -> ContainerState {
    match state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(api_terminated(t)),
            ..Default::default()
        },
    }
}

fn api_terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(Time),
        finished_at: Some(Time(t.finished_at)),
        container_id: t.container_id.clone(),
        // Like containerd: the signal is folded into the exit code (128 + n), never reported.
        signal: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn running(name: &str) -> ContainerRecord {
        ContainerRecord {
            state: State::Running { started_at: now() },
            image_id: "img".into(),
            ready: true,
            started: true,
            ..ContainerRecord::creating(name, "img")
        }
    }

    fn exited(name: &str, code: i32) -> ContainerRecord {
        ContainerRecord {
            state: State::Terminated(Terminated {
                exit_code: code,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: None,
                started_at: Some(now()),
                finished_at: now(),
                container_id: Some("pod-runner://x".into()),
            }),
            ..ContainerRecord::creating(name, "img")
        }
    }

    fn backing_off(name: &str, code: i32) -> ContainerRecord {
        let State::Terminated(last) = exited(name, code).state else {
            unreachable!()
        };
        ContainerRecord {
            state: State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: None,
            },
            last_termination: Some(last),
            restart_count: 1,
            ..ContainerRecord::creating(name, "img")
        }
    }

    fn observed<'a>(policy: &'a str, containers: &'a [ContainerRecord]) -> Observed<'a> {
        Observed {
            restart_policy: policy,
            containers,
            terminal: false,
            sandbox_ready: true,
            current_phase: None,
            previous_conditions: &[],
            start_time: now(),
            now: now(),
        }
    }

    fn condition<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
        let conditions = status.conditions.as_ref().unwrap();
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn phase_follows_the_restart_policy() {
        let creating = ContainerRecord::creating("a", "img");
        assert_eq!(
            phase("Never", std::slice::from_ref(&creating), false),
            "Pending"
        );
        assert_eq!(
            phase("Never", &[running("a"), exited("b", 1)], false),
            "Running"
        );
        assert_eq!(
            phase("Never", &[exited("a", 0), exited("b", 0)], false),
            "Succeeded"
        );
        assert_eq!(
            phase("Never", &[exited("a", 0), exited("b", 2)], false),
            "Failed"
        );
        assert_eq!(phase("OnFailure", &[exited("a", 0)], false), "Succeeded");
        assert_eq!(phase("OnFailure", &[backing_off("a", 1)], false), "Running");
        assert_eq!(phase("Always", &[exited("a", 0)], false), "Running");
        assert_eq!(phase("Always", &[backing_off("a", 0)], false), "Running");
        // A container that never started keeps the pod Pending, even next to a running one.
        assert_eq!(
            phase("Always", &[running("a"), creating.clone()], false),
            "Pending"
        );
    }

    #[test]
    fn a_terminated_pod_succeeds_only_if_every_container_exited_zero() {
        assert_eq!(phase("Always", &[exited("a", 0)], true), "Succeeded");
        assert_eq!(phase("Always", &[exited("a", 143)], true), "Failed");
        assert_eq!(phase("OnFailure", &[backing_off("a", 1)], true), "Failed");
    }

    #[test]
    fn containers_that_never_ran_become_unknown_failures_at_termination() {
        let containers = [exited("a", 0), ContainerRecord::creating("b", "missing:1")];
        let status = pod_status(&Observed {
            terminal: true,
            ..observed("Never", &containers)
        });
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        let b = &status.container_statuses.as_ref().unwrap()[1];
        let terminated = b.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(terminated.exit_code, 137);
        assert_eq!(terminated.reason.as_deref(), Some("ContainerStatusUnknown"));
        assert_eq!(
            condition(&status, "PodReadyToStartContainers").status,
            "False"
        );
        assert_eq!(
            condition(&status, "Ready").reason.as_deref(),
            Some("PodFailed")
        );
    }

    #[test]
    fn readiness_conditions() {
        let mut unready = running("b");
        unready.ready = false;
        let containers = [running("a"), unready];
        let status = pod_status(&observed("Always", &containers));
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ready = condition(&status, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(condition(&status, "ContainersReady").status, "False");
        assert_eq!(condition(&status, "PodScheduled").status, "True");
        assert_eq!(condition(&status, "Initialized").status, "True");

        let containers = [exited("a", 0)];
        let status = pod_status(&observed("Never", &containers));
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
        assert_eq!(
            condition(&status, "Ready").reason.as_deref(),
            Some("PodCompleted")
        );
        assert_eq!(
            condition(&status, "Initialized").reason.as_deref(),
            Some("PodCompleted")
        );
    }

    #[test]
    fn transition_times_are_kept_while_a_condition_holds() {
        let earlier = Time(Timestamp::from_second(1_700_000_000).unwrap());
        let previous = [
            PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(earlier.clone()),
                ..Default::default()
            },
            PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                last_transition_time: Some(earlier.clone()),
                ..Default::default()
            },
        ];
        let containers = [running("a")];
        let status = pod_status(&Observed {
            previous_conditions: &previous,
            ..observed("Always", &containers)
        });
        assert_eq!(
            condition(&status, "Ready").last_transition_time,
            Some(earlier)
        );
        assert_eq!(
            condition(&status, "PodScheduled").last_transition_time,
            Some(Time(now()))
        );
    }

    #[test]
    fn a_terminal_phase_is_never_left() {
        let containers = [running("a")];
        let status = pod_status(&Observed {
            current_phase: Some("Failed"),
            ..observed("Always", &containers)
        });
        assert_eq!(status.phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn container_statuses_carry_state_and_last_state() {
        let containers = [backing_off("a", 3)];
        let status = pod_status(&observed("Always", &containers));
        let a = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(a.restart_count, 1);
        let waiting = a.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = a.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
        assert_eq!(a.started, Some(false));
    }
}
