//! The runner's Node: registered like a kubelet registers itself, kept alive with a Lease in
//! `kube-node-lease`, and its Ready condition, which a test can turn off to play a dead node.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::sync::watch;

use super::env::POD_IP;

const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_DURATION_SECONDS: i32 = 40;
/// The kubelet renews its Lease every quarter of its duration.
const RENEW_INTERVAL: Duration = Duration::from_secs(10);

/// Creates the Node (or takes over an existing one of that name) and marks it Ready.
pub(super) async fn register(client: &Client, name: &str) -> Result<Node> {
    let version = client
        .apiserver_version()
        .await
        .context("reading the API server's version")?;
    let capacity: std::collections::BTreeMap<String, Quantity> = [
        ("cpu", "2"),
        ("memory", "8Gi"),
        ("pods", "110"),
        ("ephemeral-storage", "100Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
    .collect();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", name),
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", arch),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..Default::default()
        },
        status: Some(NodeStatus {
            capacity: Some(capacity.clone()),
            allocatable: Some(capacity),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: POD_IP.into(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
            ]),
            node_info: Some(NodeSystemInfo {
                architecture: arch.into(),
                operating_system: "linux".into(),
                kubelet_version: version.git_version.clone(),
                kube_proxy_version: version.git_version,
                container_runtime_version: "pod-runner://0.1.0".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let nodes = Api::<Node>::all(client.clone());
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(e).with_context(|| format!("registering node {name}")),
    }
    set_ready(client, name, true).await
}

/// Writes the Node's conditions: Ready as a running kubelet reports it, or Unknown as the node
/// lifecycle controller reports a node whose kubelet stopped posting status.
pub(super) async fn set_ready(client: &Client, name: &str, ready: bool) -> Result<Node> {
    let now = Time(Timestamp::now());
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    let ready_condition = if ready {
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        )
    } else {
        let lost = "Kubelet stopped posting node status.";
        condition("Ready", "Unknown", "NodeStatusUnknown", lost)
    };
    let conditions = vec![
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "no memory pressure",
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "no disk pressure",
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "no PID pressure",
        ),
        ready_condition,
    ];
    let patch = json!({ "status": { "conditions": conditions } });
    Api::<Node>::all(client.clone())
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .with_context(|| format!("updating the conditions of node {name}"))
}

/// Renews the node's Lease every 10 s while `ready` is true, like the kubelet's heartbeat.
pub(super) async fn heartbeat(client: Client, node: Node, mut ready: watch::Receiver<bool>) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let leases = Api::<Lease>::namespaced(client, LEASE_NAMESPACE);
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.clone(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    };
    loop {
        if *ready.borrow_and_update() {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.clone()),
                    lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                    renew_time: Some(MicroTime(Timestamp::now())),
                    ..Default::default()
                }),
            };
            let params = PatchParams::apply("pod-runner").force();
            if let Err(e) = leases.patch(&name, &params, &Patch::Apply(&lease)).await {
                eprintln!("pod-runner: renewing the Lease of node {name}: {e}");
            }
        }
        // Wake up for the next renewal, or at once when readiness changes; end with the runner.
        if let Ok(Err(_)) = tokio::time::timeout(RENEW_INTERVAL, ready.changed()).await {
            return;
        }
    }
}
