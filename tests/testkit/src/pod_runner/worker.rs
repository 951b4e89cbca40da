//! One pod's life on the node, like the kubelet's pod worker: set up its sandbox (its network and
//! its volumes), start its containers, restart them per `restartPolicy` with a back-off, run
//! their probes, report status after every change, release the network once every container is
//! done for good, and on deletion stop them gracefully, report the final status and delete the
//! pod with grace period 0.

use std::{
    collections::BTreeMap, io, path::PathBuf, process::ExitStatus, sync::Arc, time::Duration,
};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use k8s_openapi::{
    api::core::v1::{Container, Pod, PodCondition},
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use serde_json::json;
use tokio::{sync::mpsc, task::AbortHandle, time::Instant};

use super::{
    ContainerEntry, ContainerKey, PodKey, Shared, cgroup,
    env::{self, Sources},
    netns::NetNs,
    network::PodNetwork,
    probes::{self, Kind},
    process::{self, BindMount, Launch},
    quantity,
    status::{self, ContainerRecord, Observed, State, Terminated},
    termination,
    volumes::{self, Volume},
};

/// News about the pod from the API server.
pub(super) enum Update {
    /// A new version of the pod.
    Pod(Box<Pod>),
    /// The pod no longer exists.
    Gone,
}

/// Starts the worker of a pod bound to this node; it runs until it receives [`Update::Gone`].
pub(super) fn spawn(shared: &Arc<Shared>, pod: Pod) -> mpsc::UnboundedSender<Update> {
    let (updates_tx, updates) = mpsc::unbounded_channel();
    let (probes_tx, probe_results) = mpsc::unbounded_channel();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let init_containers = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten());
    let supported = init_containers.count() == 0;
    if !supported {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        eprintln!(
            "pod-runner: pod {name} has init containers, which are not supported; not starting it"
        );
    }
    let slots = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|spec| Slot {
            record: ContainerRecord::creating(
                &spec.name,
                spec.image.as_deref().unwrap_or_default(),
            ),
            spec: spec.clone(),
            instance: None,
            next_start: supported.then(Instant::now),
            backoff: INITIAL_BACKOFF,
            pending_restart: false,
        })
        .collect();
    let worker = Worker {
        dir: shared.dir.join("pods").join(&uid),
        pods: Api::namespaced(
            shared.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        ),
        uid,
        shared: shared.clone(),
        pod,
        updates,
        probes_tx,
        probe_results,
        exits: FuturesUnordered::new(),
        slots,
        volumes: None,
        network: None,
        sandbox_error: None,
        start_time: Timestamp::now(),
        written: None,
        written_conditions: Vec::new(),
        retry_at: None,
        termination: None,
        deleted: false,
    };
    let task = tokio::spawn(worker.run());
    shared.track(task.abort_handle());
    updates_tx
}

/// The kubelet starts at 10 s and doubles up to 5 min; tests want restarts to be quick.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How soon a failed volume set-up, container config or API write is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// The kubelet gives every container at least this long to stop.
const MIN_GRACE_SECONDS: i64 = 2;
const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

type Exit = (usize, i32, io::Result<ExitStatus>);

struct Worker {
    shared: Arc<Shared>,
    pod: Pod,
    uid: String,
    pods: Api<Pod>,
    /// This pod's volumes and termination-message files on the host.
    dir: PathBuf,
    updates: mpsc::UnboundedReceiver<Update>,
    probes_tx: mpsc::UnboundedSender<ProbeResult>,
    probe_results: mpsc::UnboundedReceiver<ProbeResult>,
    /// One future per running container process, resolving when it exits.
    exits: FuturesUnordered<BoxFuture<'static, Exit>>,
    slots: Vec<Slot>,
    volumes: Option<BTreeMap<String, Volume>>,
    /// Also registered in [`Shared::networks`] while the worker has it.
    network: Option<Arc<PodNetwork>>,
    /// Why setting up the sandbox failed last, to log each reason once.
    sandbox_error: Option<String>,
    start_time: Timestamp,
    /// The status last written (as JSON), to write only changes.
    written: Option<serde_json::Value>,
    written_conditions: Vec<PodCondition>,
    /// When something that failed is tried again.
    retry_at: Option<Instant>,
    /// Set once the pod has a deletion timestamp: when its grace period started.
    termination: Option<Instant>,
    /// The final delete was sent.
    deleted: bool,
}

/// One container of the pod.
struct Slot {
    spec: Container,
    record: ContainerRecord,
    instance: Option<Instance>,
    /// When to (re)start the container; `None`: not now.
    next_start: Option<Instant>,
    backoff: Duration,
    /// The next start is a restart (counts in `restartCount`).
    pending_restart: bool,
}

/// A running container process. Dropping it kills what is left of it and removes its cgroup.
struct Instance {
    run: i32,
    pid: u32,
    started_at: Timestamp,
    container_id: String,
    files: Files,
    /// For the probes started later (after a startup probe succeeds).
    env: Vec<(String, String)>,
    cgroup: Option<cgroup::Group>,
    probes: Vec<AbortHandle>,
    /// A stop was requested (liveness failure): SIGKILL at this time.
    kill_at: Option<Instant>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Like a PID namespace ending with its init process: nothing of the container survives.
        process::kill_group(self.pid);
        for probe in &self.probes {
            probe.abort();
        }
        if let Some(group) = &self.cgroup {
            group.remove();
        }
    }
}

/// What a container instance is started from.
struct Prepared {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<BindMount>,
}

/// The host files of a container instance.
struct Files {
    /// Its stdout and stderr.
    log: PathBuf,
    /// Mounted at its `terminationMessagePath`.
    message: PathBuf,
}

struct ProbeResult {
    slot: usize,
    run: i32,
    kind: Kind,
    healthy: bool,
}

impl Worker {
    async fn run(mut self) {
        loop {
            self.sync().await;
            let wake = self.next_wakeup();
            tokio::select! {
                update = self.updates.recv() => match update {
                    Some(Update::Pod(pod)) => self.pod = *pod,
                    Some(Update::Gone) | None => break,
                },
                Some((slot, run, status)) = self.exits.next(), if !self.exits.is_empty() => {
                    self.exited(slot, run, status);
                }
                Some(result) = self.probe_results.recv() => self.probed(result),
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        // The pod is gone: stop everything (dropping the instances kills them).
        for index in 0..self.slots.len() {
            if self.slots[index].instance.take().is_some() {
                self.forget_process(index);
            }
        }
        self.release_network();
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            eprintln!("pod-runner: removing {}: {e}", self.dir.display());
        }
    }

    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or_default()
    }

    fn restart_policy(&self) -> &str {
        let spec = self.pod.spec.as_ref();
        spec.and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    fn running(&self) -> bool {
        self.slots.iter().any(|s| s.instance.is_some())
    }

    /// Every container has terminated and will not be restarted.
    fn finished(&self) -> bool {
        self.slots
            .iter()
            .all(|s| matches!(s.record.state, State::Terminated(_)))
    }

    fn sandbox_ready(&self) -> bool {
        self.volumes.is_some() && self.network.is_some()
    }

    fn pod_key(&self) -> PodKey {
        PodKey {
            namespace: self.namespace().to_string(),
            pod: self.name().to_string(),
        }
    }

    /// Brings the node's side of the pod in line with the pod and reports the result.
    async fn sync(&mut self) {
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
        }
        if self.pod.metadata.deletion_timestamp.is_some() {
            self.terminate(now);
        } else {
            if self.volumes.is_none() {
                self.prepare_volumes().await;
            }
            if self.network.is_none() && !self.finished() {
                self.prepare_network().await;
            }
            if self.sandbox_ready() {
                for index in 0..self.slots.len() {
                    let slot = &self.slots[index];
                    if slot.instance.is_none() && slot.next_start.is_some_and(|at| at <= now) {
                        self.start(index).await;
                    }
                }
            }
            self.enforce_kills(now);
        }
        if self.finished() {
            // The kubelet stops the sandbox of a pod that has nothing left to run.
            self.release_network();
        }
        if !self.deleted {
            self.write_status().await;
        }
        if self.termination.is_some() && !self.running() && !self.deleted {
            self.delete().await;
        }
    }

    /// The next time something is due. Only future times count: what was due is done, or (a
    /// kill) awaits the process's exit, which wakes the worker anyway.
    fn next_wakeup(&self) -> Instant {
        let now = Instant::now();
        let mut times: Vec<Instant> = self.retry_at.into_iter().collect();
        if let Some(started) = self.termination {
            if self.running() {
                times.push(started + self.grace_period());
            }
        } else {
            for slot in &self.slots {
                match &slot.instance {
                    Some(instance) => times.extend(instance.kill_at),
                    None => times.extend(slot.next_start),
                }
            }
        }
        times
            .into_iter()
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + Duration::from_secs(3600))
    }

    async fn prepare_volumes(&mut self) {
        let context = volumes::Context {
            client: &self.shared.client,
            ca_pem: &self.shared.ca_pem,
            dir: &self.dir.join("volumes"),
        };
        match volumes::prepare(&context, &self.pod).await {
            Ok(volumes) => self.volumes = Some(volumes),
            Err(e) => self.sandbox_failed(e),
        }
    }

    /// The pod's own network namespace, with the runner's forwarded ports; the host's network
    /// for a `hostNetwork` pod.
    async fn prepare_network(&mut self) {
        let spec = self.pod.spec.as_ref();
        let network = if spec.and_then(|s| s.host_network) == Some(true) {
            Ok(PodNetwork::host())
        } else {
            PodNetwork::isolated(&self.shared.forward_ports).await
        };
        match network {
            Ok(network) => {
                let network = Arc::new(network);
                self.shared
                    .networks()
                    .insert(self.pod_key(), network.clone());
                self.network = Some(network);
            }
            Err(e) => self.sandbox_failed(format!("setting up the pod's network: {e}")),
        }
    }

    /// Closes the forwards into the pod's network; its namespace goes with its last process.
    fn release_network(&mut self) {
        let Some(network) = self.network.take() else {
            return;
        };
        let key = self.pod_key();
        let mut networks = self.shared.networks();
        // A new pod of the same name may have registered its own network already.
        if networks.get(&key).is_some_and(|n| Arc::ptr_eq(n, &network)) {
            networks.remove(&key);
        }
    }

    /// Setting up the sandbox failed: log the reason (once while it stays the same) and retry.
    fn sandbox_failed(&mut self, error: String) {
        if self.sandbox_error.as_ref() != Some(&error) {
            eprintln!(
                "pod-runner: pod {}/{}: {error}",
                self.namespace(),
                self.name()
            );
        }
        self.sandbox_error = Some(error);
        self.retry_at = Some(Instant::now() + RETRY);
    }

    /// Starts a container, or records why it cannot start.
    async fn start(&mut self, index: usize) {
        self.slots[index].next_start = None;
        let prepared = match self.prepare(index).await {
            Ok(prepared) => prepared,
            Err((reason, message)) => {
                self.wait(index, reason, message);
                // The image table never changes; Secrets and ConfigMaps may appear.
                if reason != "ErrImagePull" {
                    self.slots[index].next_start = Some(Instant::now() + RETRY);
                }
                return;
            }
        };
        let spec = self.slots[index].spec.clone();
        let slot = &mut self.slots[index];
        if slot.pending_restart {
            slot.pending_restart = false;
            slot.record.restart_count += 1;
        }
        let run = slot.record.restart_count;
        let container_id = format!("pod-runner://{}-{}-{run}", self.uid, spec.name);
        slot.record.container_id = Some(container_id.clone());
        let files = Files {
            log: (self
                .shared
                .dir
                .join("logs")
                .join(self.namespace())
                .join(self.name()))
            .join(format!("{}-{run}.log", spec.name)),
            message: (self.dir.join("containers"))
                .join(format!("{}-{run}.termination-log", spec.name)),
        };
        let launched = self.launch(&spec, run, &prepared, &files);
        let started_at = Timestamp::now();
        let key = self.container_key(&spec.name);
        let (child, cgroup) = match launched {
            Ok(launched) => launched,
            Err(e) => {
                let entry = ContainerEntry {
                    pid: None,
                    log: files.log,
                };
                self.shared.containers().insert(key, entry);
                let terminated = Terminated {
                    exit_code: 128,
                    reason: "StartError".into(),
                    message: Some(start_error(&prepared.argv, &e)),
                    started_at: None,
                    finished_at: started_at,
                    container_id: Some(container_id),
                };
                self.ended(index, terminated);
                return;
            }
        };
        let pid = child.id().unwrap_or_default();
        let mut child = child;
        self.exits
            .push(async move { (index, run, child.wait().await) }.boxed());
        let entry = ContainerEntry {
            pid: Some(pid),
            log: files.log.clone(),
        };
        self.shared.containers().insert(key, entry);
        let slot = &mut self.slots[index];
        slot.record.state = State::Running { started_at };
        slot.record.started = spec.startup_probe.is_none();
        slot.record.ready = slot.record.started && spec.readiness_probe.is_none();
        slot.instance = Some(Instance {
            run,
            pid,
            started_at,
            container_id,
            files,
            env: prepared.env,
            cgroup,
            probes: Vec::new(),
            kill_at: None,
        });
        let first = if spec.startup_probe.is_some() {
            vec![Kind::Startup]
        } else {
            vec![Kind::Readiness, Kind::Liveness]
        };
        self.start_probes(index, &first);
    }

    /// What the container is started from: its image, environment, command and mounts. An
    /// error is the reason and message the container waits with.
    async fn prepare(&mut self, index: usize) -> Result<Prepared, (&'static str, String)> {
        let spec = &self.slots[index].spec;
        let image_name = spec.image.clone().unwrap_or_default();
        let Some(image) = self.shared.images.get(&image_name) else {
            let message = format!(
                "Failed to pull image {image_name:?}: image {image_name:?} is not in the pod \
                 runner's image table"
            );
            return Err(("ErrImagePull", message));
        };
        self.slots[index].record.image_id = format!("pod-runner://{image_name}");
        let spec = &self.slots[index].spec;
        let config_error = |message| ("CreateContainerConfigError", message);
        let mut sources = Sources::new(self.shared.client.clone(), self.namespace());
        let service_env = &self.shared.service_env;
        let kube_env = env::container_env(&mut sources, &self.pod, spec, service_env)
            .await
            .map_err(config_error)?;
        let mounts = self.mounts(spec).map_err(config_error)?;
        // The kubelet expands `$(VAR)` in command and args with the variables it defines.
        let expand = |s: &String| env::expand(s, |name| kube_env.get(name).cloned());
        let command = match spec.command.as_deref() {
            Some(command) if !command.is_empty() => command,
            _ => image.entrypoint.as_slice(),
        };
        let args = spec.args.iter().flatten();
        let argv = command.iter().chain(args).map(expand).collect();
        let env = process_env(&image.path, self.pod.metadata.name.as_deref(), kube_env);
        Ok(Prepared { argv, env, mounts })
    }

    /// Creates the cgroup and the termination-message file and spawns the process.
    fn launch(
        &self,
        spec: &Container,
        run: i32,
        prepared: &Prepared,
        files: &Files,
    ) -> io::Result<(tokio::process::Child, Option<cgroup::Group>)> {
        for file in [&files.log, &files.message] {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
        }
        std::fs::write(&files.message, "")?;
        let target = spec
            .termination_message_path
            .as_deref()
            .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH);
        let mut mounts = prepared.mounts.clone();
        mounts.push(BindMount {
            source: files.message.clone(),
            target: target.into(),
            read_only: false,
        });
        let limit = spec
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| quantity::parse_bytes(&q.0));
        let cgroup = match &self.shared.cgroups {
            Some(parent) => {
                Some(parent.child(&format!("{}-{}-{run}", self.uid, spec.name), limit)?)
            }
            None => None,
        };
        let launch = Launch {
            argv: &prepared.argv,
            env: &prepared.env,
            working_dir: spec.working_dir.as_deref().unwrap_or("/"),
            mounts: &mounts,
            log: &files.log,
            cgroup_procs: cgroup.as_ref().map(cgroup::Group::procs_file).transpose()?,
            netns: (self.network.as_ref())
                .and_then(|n| n.netns())
                .map(NetNs::fd),
        };
        match process::spawn(launch) {
            Ok(child) => Ok((child, cgroup)),
            Err(e) => {
                if let Some(group) = cgroup {
                    group.remove();
                }
                Err(e)
            }
        }
    }

    /// The container's bind mounts: its `volumeMounts`, each at its `mountPath`.
    fn mounts(&self, spec: &Container) -> Result<Vec<BindMount>, String> {
        let volumes = self.volumes.as_ref().ok_or("volumes are not set up")?;
        let mut mounts = Vec::new();
        for mount in spec.volume_mounts.iter().flatten() {
            let volume = volumes.get(&mount.name).ok_or_else(|| {
                format!(
                    "cannot find volume {:?} to mount into container {:?}",
                    mount.name, spec.name
                )
            })?;
            let mut source = volume.path.clone();
            if let Some(sub_path) = mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
                source = source.join(sub_path);
                // Like the kubelet, create a missing subPath as a directory.
                if !source.exists() {
                    std::fs::create_dir_all(&source).map_err(|e| e.to_string())?;
                }
            }
            mounts.push(BindMount {
                source,
                target: PathBuf::from(&mount.mount_path),
                read_only: volume.read_only || mount.read_only == Some(true),
            });
        }
        Ok(mounts)
    }

    fn start_probes(&mut self, index: usize, kinds: &[Kind]) {
        let slot = &mut self.slots[index];
        let (Some(instance), Some(network)) = (slot.instance.as_mut(), &self.network) else {
            return;
        };
        for &kind in kinds {
            let probe = match kind {
                Kind::Startup => &slot.spec.startup_probe,
                Kind::Readiness => &slot.spec.readiness_probe,
                Kind::Liveness => &slot.spec.liveness_probe,
            };
            let Some(probe) = probe.clone() else { continue };
            let target = probes::Target {
                pid: instance.pid,
                ports: slot.spec.ports.clone().unwrap_or_default(),
                env: instance.env.clone(),
                network: network.clone(),
            };
            let (tx, run) = (self.probes_tx.clone(), instance.run);
            let report = move |healthy| {
                let result = ProbeResult {
                    slot: index,
                    run,
                    kind,
                    healthy,
                };
                tx.send(result).is_ok()
            };
            let task = tokio::spawn(probes::run(kind, probe, target, report));
            instance.probes.push(task.abort_handle());
        }
    }

    fn probed(&mut self, result: ProbeResult) {
        let slot = &mut self.slots[result.slot];
        if slot.instance.as_ref().is_none_or(|i| i.run != result.run) {
            return;
        }
        match (result.kind, result.healthy) {
            (Kind::Startup, true) => {
                slot.record.started = true;
                slot.record.ready = slot.spec.readiness_probe.is_none();
                self.start_probes(result.slot, &[Kind::Readiness, Kind::Liveness]);
            }
            (Kind::Readiness, ready) => slot.record.ready = ready && slot.record.started,
            (Kind::Startup | Kind::Liveness, false) => {
                // The kubelet kills the container and restarts it per restartPolicy.
                let probe = match result.kind {
                    Kind::Startup => slot.spec.startup_probe.as_ref(),
                    _ => slot.spec.liveness_probe.as_ref(),
                };
                let grace = probe
                    .and_then(|p| p.termination_grace_period_seconds)
                    .unwrap_or_else(|| pod_grace_seconds(&self.pod));
                if let Some(instance) = slot.instance.as_mut() {
                    process::signal(instance.pid, libc::SIGTERM);
                    let grace = Duration::from_secs(grace.max(MIN_GRACE_SECONDS) as u64);
                    instance.kill_at = Some(Instant::now() + grace);
                }
            }
            (Kind::Liveness, true) => {}
        }
    }

    fn enforce_kills(&mut self, now: Instant) {
        for instance in self.slots.iter().filter_map(|s| s.instance.as_ref()) {
            if instance.kill_at.is_some_and(|at| at <= now) {
                process::kill_group(instance.pid);
            }
        }
    }

    /// A container process exited.
    fn exited(&mut self, index: usize, run: i32, status: io::Result<ExitStatus>) {
        let slot = &mut self.slots[index];
        if slot.instance.as_ref().is_none_or(|i| i.run != run) {
            return;
        }
        let Some(instance) = slot.instance.take() else {
            return;
        };
        let exit_code = match status {
            Ok(status) => process::exit_code(status),
            Err(e) => {
                eprintln!("pod-runner: waiting for container {}: {e}", slot.spec.name);
                137
            }
        };
        let reason = if instance
            .cgroup
            .as_ref()
            .is_some_and(cgroup::Group::oom_killed)
        {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let fallback =
            slot.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        let terminated = Terminated {
            exit_code,
            reason: reason.into(),
            message: termination::message(
                &instance.files.message,
                fallback,
                exit_code,
                &instance.files.log,
            ),
            started_at: Some(instance.started_at),
            finished_at: Timestamp::now(),
            container_id: Some(instance.container_id.clone()),
        };
        drop(instance);
        self.forget_process(index);
        self.ended(index, terminated);
    }

    /// The container's process is gone: [`super::PodRunner::kill`] must not signal its PID.
    fn forget_process(&self, index: usize) {
        let key = self.container_key(&self.slots[index].spec.name);
        if let Some(entry) = self.shared.containers().get_mut(&key) {
            entry.pid = None;
        }
    }

    /// A container instance ended (or could not start): restart it per `restartPolicy`, after a
    /// back-off, or leave it terminated.
    fn ended(&mut self, index: usize, terminated: Terminated) {
        let restart = self.termination.is_none()
            && match self.restart_policy() {
                "Always" => true,
                "OnFailure" => terminated.exit_code != 0,
                _ => false,
            };
        let pod = format!("{}_{}({})", self.name(), self.namespace(), self.uid);
        let slot = &mut self.slots[index];
        slot.record.ready = false;
        slot.record.started = false;
        if !restart {
            slot.record.state = State::Terminated(terminated);
            return;
        }
        let delay = slot.backoff;
        slot.backoff = (delay * 2).min(MAX_BACKOFF);
        slot.pending_restart = true;
        slot.next_start = Some(Instant::now() + delay);
        slot.record.last_termination = Some(terminated);
        slot.record.state = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some(format!(
                "back-off {}s restarting failed container={} pod={pod}",
                delay.as_secs(),
                slot.spec.name
            )),
        };
    }

    /// The container waits: `reason` is why.
    fn wait(&mut self, index: usize, reason: &str, message: String) {
        self.slots[index].record.state = State::Waiting {
            reason: reason.into(),
            message: Some(message),
        };
    }

    /// Graceful deletion: SIGTERM to every container's process, SIGKILL to what is left when the
    /// grace period ends; nothing restarts any more.
    fn terminate(&mut self, now: Instant) {
        let started = *self.termination.get_or_insert_with(|| {
            for slot in &mut self.slots {
                slot.next_start = None;
                if let Some(instance) = &mut slot.instance {
                    process::signal(instance.pid, libc::SIGTERM);
                    // A liveness failure must not restart anything now.
                    for probe in instance.probes.drain(..) {
                        probe.abort();
                    }
                }
            }
            now
        });
        if now >= started + self.grace_period() {
            for instance in self.slots.iter().filter_map(|s| s.instance.as_ref()) {
                process::kill_group(instance.pid);
            }
        }
    }

    /// The grace period of a deletion; a shorter one in a later update wins.
    fn grace_period(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or_else(|| pod_grace_seconds(&self.pod));
        Duration::from_secs(seconds.max(MIN_GRACE_SECONDS) as u64)
    }

    async fn write_status(&mut self) {
        let records: Vec<ContainerRecord> = self.slots.iter().map(|s| s.record.clone()).collect();
        let api_status = self.pod.status.as_ref();
        let previous_conditions = if self.written_conditions.is_empty() {
            api_status
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default()
        } else {
            self.written_conditions.clone()
        };
        let status = status::pod_status(&Observed {
            restart_policy: self.restart_policy(),
            containers: &records,
            terminal: self.termination.is_some() && !self.running(),
            sandbox_ready: self.sandbox_ready(),
            current_phase: api_status.and_then(|s| s.phase.as_deref()),
            previous_conditions: &previous_conditions,
            start_time: self.start_time,
            now: Timestamp::now(),
        });
        let value = match serde_json::to_value(&status) {
            Ok(value) => value,
            Err(e) => {
                eprintln!("pod-runner: serializing a pod status: {e}");
                return;
            }
        };
        if self.written.as_ref() == Some(&value) {
            return;
        }
        // The UID makes the API server refuse the patch if the name now belongs to a new pod.
        let patch = json!({ "metadata": { "uid": self.uid }, "status": value });
        let name = self.name().to_string();
        match self
            .pods
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                self.written = Some(value);
                self.written_conditions = status.conditions.unwrap_or_default();
            }
            Err(e) => {
                eprintln!(
                    "pod-runner: writing the status of pod {}/{name}: {e}",
                    self.namespace()
                );
                self.retry_at = Some(Instant::now() + RETRY);
            }
        }
    }

    /// Deletes the terminated pod for good, as the kubelet's status manager does once the
    /// final status is written.
    async fn delete(&mut self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = self.name().to_string();
        match self.pods.delete(&name, &params).await {
            Ok(_) => self.deleted = true,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => self.deleted = true,
            Err(e) => {
                eprintln!("pod-runner: deleting pod {}/{name}: {e}", self.namespace());
                self.retry_at = Some(Instant::now() + RETRY);
            }
        }
    }

    fn container_key(&self, container: &str) -> ContainerKey {
        ContainerKey {
            namespace: self.namespace().to_string(),
            pod: self.name().to_string(),
            container: container.to_string(),
        }
    }
}

fn pod_grace_seconds(pod: &Pod) -> i64 {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
}

/// The process environment: the "image's" variables (`PATH` with the image's directories first,
/// `HOME`, `HOSTNAME`), overridden by the variables the kubelet defines.
fn process_env(
    image_path: &[PathBuf],
    pod_name: Option<&str>,
    kube_env: BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let host_path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let path = std::env::join_paths(
        image_path
            .iter()
            .cloned()
            .chain(std::env::split_paths(&host_path)),
    )
    .map(|p| p.to_string_lossy().into_owned())
    .unwrap_or_default();
    let mut env: BTreeMap<String, String> = [
        ("PATH".to_string(), path),
        ("HOME".to_string(), "/root".to_string()),
        (
            "HOSTNAME".to_string(),
            pod_name.unwrap_or_default().to_string(),
        ),
    ]
    .into();
    env.extend(kube_env);
    env.into_iter().collect()
}

/// The message containerd gives a container whose process could not be started.
fn start_error(argv: &[String], error: &io::Error) -> String {
    let program = argv.first().map(String::as_str).unwrap_or_default();
    let cause = match error.raw_os_error() {
        Some(libc::ENOENT) if !program.contains('/') => {
            "executable file not found in $PATH".to_string()
        }
        _ => error.to_string(),
    };
    format!(
        "failed to create containerd task: failed to create shim task: OCI runtime create failed: \
         runc create failed: unable to start container process: error during container init: \
         exec: {program:?}: {cause}"
    )
}
