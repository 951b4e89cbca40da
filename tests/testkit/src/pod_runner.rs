//! A pod runner for integration tests: the stand-in for kube-scheduler's bind, the kubelet and the
//! container runtime — and for nothing else — so that real Jobs run on the real control plane of
//! [`crate::kube_env`]. Everything above the node (Job, garbage-collector, … controllers, the
//! Eviction API, admission) stays real; only the runner writes pod status, as the kubelet does.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::collections::HashMap;
//! use eventpipe_testkit::{kube_env::KubeEnv, pod_runner::{Image, PodRunner, RunnerConfig}};
//! let env = KubeEnv::get().await?;
//! let ns = env.namespace("jobs").await?;
//! let busybox = Image { entrypoint: vec!["/bin/sh".into()], path: vec![] };
//! let runner = PodRunner::start(env, RunnerConfig {
//!     node_name: "node-jobs".into(),
//!     namespaces: vec![ns.clone()],
//!     images: HashMap::from([("busybox".to_string(), busybox)]),
//!     forward_ports: vec![9000], // e.g. the test's S3 server on the host's 127.0.0.1:9000
//! }).await?;
//! // ... create Jobs or Pods in `ns`; the runner binds and runs their pods ...
//! let (status, body) = runner.http_get(&ns, "some-pod", 8080, "/metrics").await?;
//! # drop(runner); Ok(()) }
//! ```
//!
//! # What a container is here
//! A local process, started from the image table ([`Image`]) with the pod's `command`/`args`
//! (`$(VAR)` expanded), `env`/`envFrom` (Secrets, ConfigMaps, downward API fields) and
//! `workingDir`, in a mount namespace of its own where each volume (`emptyDir`, `hostPath`,
//! `secret`, `configMap`, `downwardAPI`, `projected` with the bound ServiceAccount token) and the
//! termination-message file are bind-mounted at the paths the pod spec gives. Mount points
//! missing on the host are created there, empty. A memory limit becomes a memory cgroup, so
//! exceeding it is a real OOM kill.
//!
//! # A pod's network
//! Each pod has a network namespace of its own, shared by its containers like a pod sandbox's,
//! where only `lo` (127.0.0.1) is up: two replicas listen on the same port without clashing, and
//! a container reaches the other containers of its pod at 127.0.0.1. `hostNetwork: true` pods
//! keep the host's network. Outside itself a pod reaches only the host's 127.0.0.1 on the
//! forwarded ports — the API server's (for `KUBERNETES_SERVICE_HOST=127.0.0.1` and
//! `KUBERNETES_SERVICE_PORT`) and [`RunnerConfig::forward_ports`] (a test's S3 server): the
//! runner listens on `127.0.0.1:P` inside the pod's namespace and relays each connection to the
//! host's `127.0.0.1:P`. Probes connect from inside the pod's namespace, and so does
//! [`PodRunner::http_get`], the way for a test to reach a pod's server. `status.podIP` (and
//! `hostIP`) stays 127.0.0.1: the pod's address inside its namespace, which the host and other
//! pods cannot connect to. The namespace and its forwards are released once every container has
//! terminated for good (`PodReadyToStartContainers` turns `False`, as when the kubelet stops a
//! sandbox) or the pod is gone.
//!
//! # What is not done
//! Init and ephemeral containers, lifecycle hooks, `grpc` and HTTPS probes, `resourceFieldRef`,
//! `subPathExpr`, `securityContext` (everything runs as root, with a writable root file system),
//! CPU limits, image pulls (an image is in the table or it is `ErrImagePull`),
//! `emptyDir.sizeLimit` (not enforced), token rotation (tokens last one hour), the per-pod
//! 12 KiB budget for termination messages, and Events. No pod IPs that the host or other pods
//! can reach, Services, cluster DNS, NetworkPolicy or `hostPort`; a container cannot listen on a
//! forwarded port (the runner does, in its pod's namespace). Resource requests, taints and
//! tolerations play no part in binding; `nodeSelector` does.
//!
//! # Nothing is left behind
//! Dropping the [`PodRunner`] kills every container process group it started, closes its port
//! forwards, removes its memory cgroups and its state directory. Each process also carries a
//! parent-death signal (SIGKILL when the thread that started it ends: a thread of the test's
//! tokio runtime), so the containers die with the test even if the test binary is killed; the
//! cgroups and directory such a killed binary leaves are removed by the next runner that starts.
//! Network namespaces are never mounted anywhere: descriptors, sockets and processes hold them,
//! so the kernel frees them with those, killed binary or not.
//!
//! # Timing
//! Restarts back off 1 s, doubling up to 10 s (the kubelet: 10 s up to 5 min); a container
//! waiting on a missing Secret or ConfigMap, or a failed status write, is retried every second.

mod cgroup;
mod dispatch;
mod env;
mod forward;
mod http;
mod netns;
mod network;
mod node;
mod probes;
mod process;
mod quantity;
mod status;
mod termination;
mod volumes;
mod worker;

use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::{ByteString, api::core::v1::Pod};
use kube::{Api, Client, api::EvictParams};
use tokio::{sync::watch, task::AbortHandle};

use crate::kube_env::KubeEnv;

use self::network::PodNetwork;

/// What a [`PodRunner`] does.
#[derive(Clone, Debug, Default)]
pub struct RunnerConfig {
    /// The Node to register and run pods on; unique per test.
    pub node_name: String,
    /// Only pods in these namespaces are bound to the Node and run.
    pub namespaces: Vec<String>,
    /// Image reference (exactly as in the pod spec) → the local program it stands for.
    pub images: HashMap<String, Image>,
    /// Ports of the host's 127.0.0.1 that pods reach at 127.0.0.1 in their own network, e.g. a
    /// test's S3 server. The API server's port is always forwarded.
    pub forward_ports: Vec<u16>,
}

/// A stand-in for a container image.
#[derive(Clone, Debug, Default)]
pub struct Image {
    /// The image's ENTRYPOINT: the program run when the container has no `command`.
    pub entrypoint: Vec<String>,
    /// Directories put in front of `PATH`, so that e.g. `command: ["eventpipe-transformer"]`
    /// finds a locally built binary.
    pub path: Vec<PathBuf>,
}

/// A running pod runner. Dropping it stops it: every container process it started is killed.
pub struct PodRunner {
    shared: Arc<Shared>,
}

/// State shared by the runner's tasks.
struct Shared {
    client: Client,
    node_name: String,
    node_labels: BTreeMap<String, String>,
    images: HashMap<String, Image>,
    /// The variables of the `kubernetes` Service every container gets.
    service_env: Vec<(String, String)>,
    /// Host ports forwarded into every pod's network, the API server's among them.
    forward_ports: Vec<u16>,
    /// The cluster's CA certificate, PEM.
    ca_pem: String,
    /// Pod volumes, termination-message files and container logs.
    dir: PathBuf,
    /// The runner's memory cgroup, parent of every container's; `None` where unsupported.
    cgroups: Option<cgroup::Group>,
    /// Whether the Node is Ready (heartbeats and binding happen only then).
    ready: watch::Sender<bool>,
    containers: Mutex<HashMap<ContainerKey, ContainerEntry>>,
    /// The network of each pod that has one, for [`PodRunner::http_get`].
    networks: Mutex<HashMap<PodKey, Arc<PodNetwork>>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// A pod, by names.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct PodKey {
    namespace: String,
    pod: String,
}

/// A container of a pod, by names.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ContainerKey {
    namespace: String,
    pod: String,
    container: String,
}

/// The latest instance of a container.
struct ContainerEntry {
    /// Its process (and process group), while it runs.
    pid: Option<u32>,
    log: PathBuf,
}

impl Shared {
    fn containers(&self) -> MutexGuard<'_, HashMap<ContainerKey, ContainerEntry>> {
        lock(&self.containers)
    }

    fn networks(&self) -> MutexGuard<'_, HashMap<PodKey, Arc<PodNetwork>>> {
        lock(&self.networks)
    }

    /// Keeps a task to abort when the runner stops.
    fn track(&self, task: AbortHandle) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

/// Locks a mutex; a panic that poisoned it leaves the data consistent enough for the runner.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PodRunner {
    /// Registers the Node and starts binding and running the pods of `config.namespaces` in the
    /// background, on the caller's tokio runtime.
    pub async fn start(env: &KubeEnv, config: RunnerConfig) -> Result<PodRunner> {
        let client = env.client()?;
        let admin = env.admin_config();
        let api_port = admin
            .cluster_url
            .port_u16()
            .context("the API server URL has no port")?;
        let port = api_port.to_string();
        let mut forward_ports = config.forward_ports;
        forward_ports.push(api_port);
        forward_ports.sort_unstable();
        forward_ports.dedup();
        let ca = admin
            .root_cert
            .as_ref()
            .and_then(|certs| certs.first())
            .context("the admin kubeconfig has no CA certificate")?;
        let node_name = config.node_name;
        remove_stale_directories();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}{node_name}-", leftover_prefix()))
            .tempdir()
            .context("creating the pod runner's directory")?
            .keep();
        let cgroups = if cgroup::supported() {
            let name = format!("{}{node_name}", leftover_prefix());
            cgroup::Group::create_below_own(&name).context("creating the runner's memory cgroup")?
        } else {
            None
        };
        let node = node::register(&client, &node_name).await?;
        let shared = Arc::new(Shared {
            client: client.clone(),
            node_labels: node.metadata.labels.clone().unwrap_or_default(),
            node_name,
            images: config.images,
            service_env: vec![
                ("KUBERNETES_SERVICE_HOST".into(), env::POD_IP.into()),
                ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
                ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone()),
                (
                    "KUBERNETES_PORT".into(),
                    format!("tcp://{}:{port}", env::POD_IP),
                ),
            ],
            forward_ports,
            ca_pem: pem_certificate(ca)?,
            dir,
            cgroups,
            ready: watch::channel(true).0,
            containers: Mutex::new(HashMap::new()),
            networks: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let runner = PodRunner { shared };
        let shared = &runner.shared;
        let heartbeat = node::heartbeat(client, node, shared.ready.subscribe());
        shared.track(tokio::spawn(heartbeat).abort_handle());
        for namespace in &config.namespaces {
            let dispatch = dispatch::run(shared.clone(), namespace.clone());
            shared.track(tokio::spawn(dispatch).abort_handle());
        }
        Ok(runner)
    }

    /// The Node's name.
    pub fn node_name(&self) -> &str {
        &self.shared.node_name
    }

    /// Evicts a pod through the Eviction API, as `kubectl drain` does: the API server checks
    /// PodDisruptionBudgets, adds the `DisruptionTarget` condition and deletes the pod
    /// gracefully; the runner then stops its containers and reports the final status.
    pub async fn evict(&self, namespace: &str, pod: &str) -> Result<()> {
        Api::<Pod>::namespaced(self.shared.client.clone(), namespace)
            .evict(pod, &EvictParams::default())
            .await
            .with_context(|| format!("evicting pod {namespace}/{pod}"))?;
        Ok(())
    }

    /// SIGKILLs a running container's processes now, like a crash or a node dying mid-write;
    /// it is reported as terminated with exit code 137 and restarted per `restartPolicy`.
    pub async fn kill(&self, namespace: &str, pod: &str, container: &str) -> Result<()> {
        let key = ContainerKey {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
        };
        let pid = self
            .shared
            .containers()
            .get(&key)
            .and_then(|entry| entry.pid);
        let pid = pid.ok_or_else(|| {
            anyhow!("container {container} of pod {namespace}/{pod} is not running here")
        })?;
        process::kill_group(pid);
        Ok(())
    }

    /// Sets the Node's Ready condition. `false` plays a node that stopped responding: Ready
    /// becomes Unknown, heartbeats stop and no more pods are bound to it (its running pods keep
    /// running). `true` restores it.
    pub async fn set_node_ready(&self, ready: bool) -> Result<()> {
        self.shared.ready.send_replace(ready);
        node::set_ready(&self.shared.client, &self.shared.node_name, ready).await?;
        Ok(())
    }

    /// Whether containers get memory limits (and OOM kills) on this machine: the runner must be
    /// able to create memory cgroups below its own. Without that, limits are ignored.
    pub fn memory_cgroups_supported() -> bool {
        cgroup::supported()
    }

    /// An HTTP GET of `path` on `port` of a running pod, connecting from inside the pod's network
    /// (pods have no address of their own that the host could reach): the status code and the
    /// body. E.g. a test reads an operator pod's `/metrics`.
    pub async fn http_get(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
        path: &str,
    ) -> Result<(u16, String)> {
        let key = PodKey {
            namespace: namespace.into(),
            pod: pod.into(),
        };
        let network = self.shared.networks().get(&key).cloned();
        let network = network.ok_or_else(|| {
            anyhow!("pod {namespace}/{pod} has no network on this runner (not running here)")
        })?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = (network.connect(address).await)
            .with_context(|| format!("connecting to port {port} of pod {namespace}/{pod}"))?;
        let response = http::get(stream, &address.to_string(), path, &[])
            .await
            .with_context(|| format!("GET {path} on port {port} of pod {namespace}/{pod}"))?;
        Ok((response.status, response.body))
    }

    /// The stdout and stderr of the latest instance of a container, for debugging a test.
    pub fn logs(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        let key = ContainerKey {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
        };
        let log = self.shared.containers().get(&key)?.log.clone();
        let bytes = std::fs::read(log).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl Drop for PodRunner {
    fn drop(&mut self) {
        let shared = &self.shared;
        for task in lock(&shared.tasks).drain(..) {
            task.abort();
        }
        // Closes the forwards now rather than when the aborted workers are dropped.
        shared.networks().clear();
        for entry in shared.containers().values() {
            if let Some(pid) = entry.pid {
                process::kill_group(pid);
            }
        }
        // Also catches processes that left their process group.
        if let Some(group) = &shared.cgroups {
            group.remove();
        }
        if let Err(e) = std::fs::remove_dir_all(&shared.dir) {
            eprintln!("pod-runner: removing {}: {e}", shared.dir.display());
        }
    }
}

/// How the names of a runner's directory and cgroup start: with the PID of the process that
/// owns them, so that a later runner can remove what a killed process left behind.
fn leftover_prefix() -> String {
    format!("pod-runner-{}-", std::process::id())
}

/// Whether `name` was made by [`leftover_prefix`] in a process that no longer exists.
fn leftover_of_dead_process(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("pod-runner-") else {
        return false;
    };
    let pid = rest.split('-').next().unwrap_or_default();
    pid.parse::<u32>()
        .is_ok_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes the state directories of runners whose process was killed.
fn remove_stale_directories() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if leftover_of_dead_process(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// PEM text of a DER certificate. `ByteString` serializes as base64, which is PEM's body.
fn pem_certificate(der: &[u8]) -> Result<String> {
    let base64 = serde_json::to_value(ByteString(der.to_vec()))?;
    let base64 = base64
        .as_str()
        .context("a ByteString serializes as a string")?;
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in base64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line)?);
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    Ok(pem)
}
