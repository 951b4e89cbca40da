//! The pod runner against the real control plane: pods are bound, run and reported on by the
//! runner alone; no test writes Pod or Job status.
//!
//! Needs `scripts/testenv.sh install` (see `eventpipe_testkit::kube_env`).

use std::{
    collections::HashMap,
    net::TcpListener,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use eventpipe_testkit::{
    kube_env::KubeEnv,
    pod_runner::{Image, PodRunner, RunnerConfig},
};
use futures::StreamExt;
use k8s_openapi::api::{
    batch::v1::Job,
    coordination::v1::Lease,
    core::v1::{
        ConfigMap, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Node, Pod,
        PodCondition, Secret,
    },
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
    runtime::watcher,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A test's namespace, with a runner playing the node for it.
struct Setup {
    client: Client,
    ns: String,
    pods: Api<Pod>,
    runner: PodRunner,
}

async fn setup(prefix: &str) -> Result<Setup> {
    setup_forwarding(prefix, Vec::new()).await
}

/// Like [`setup`], with these host ports forwarded into the pods' networks.
async fn setup_forwarding(prefix: &str, forward_ports: Vec<u16>) -> Result<Setup> {
    let env = KubeEnv::get().await?;
    let client = env.client()?;
    let ns = env.namespace(prefix).await?;
    let busybox = Image {
        entrypoint: vec!["/bin/sh".into()],
        path: vec![],
    };
    let runner = PodRunner::start(
        env,
        RunnerConfig {
            node_name: format!("node-{ns}"),
            namespaces: vec![ns.clone()],
            images: HashMap::from([("busybox".to_string(), busybox)]),
            forward_ports,
        },
    )
    .await?;
    Ok(Setup {
        pods: Api::namespaced(client.clone(), &ns),
        client,
        ns,
        runner,
    })
}

impl Setup {
    /// Creates a pod from its spec.
    async fn create(&self, name: &str, spec: Value) -> Result<Pod> {
        let pod: Pod =
            serde_json::from_value(json!({ "metadata": { "name": name }, "spec": spec }))?;
        Ok(self.pods.create(&PostParams::default(), &pod).await?)
    }

    /// Polls the pod until `done` holds; on time-out, fails with its last status and logs.
    async fn wait(&self, name: &str, what: &str, done: impl Fn(&Pod) -> bool) -> Result<Pod> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let pod = self.pods.get_opt(name).await?;
            if let Some(pod) = pod.as_ref().filter(|p| done(p)) {
                return Ok(pod.clone());
            }
            if Instant::now() >= deadline {
                let containers = pod
                    .iter()
                    .flat_map(|p| p.spec.iter().flat_map(|s| &s.containers));
                let logs: Vec<_> = containers
                    .filter_map(|c| {
                        let log = self.runner.logs(&self.ns, name, &c.name)?;
                        Some(format!("{}: {log}", c.name))
                    })
                    .collect();
                let status = pod.and_then(|p| p.status);
                bail!(
                    "timed out waiting for pod {name} to {what}; status: {}\nlogs: {logs:?}",
                    serde_json::to_string_pretty(&status)?
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_phase(&self, name: &str, phase: &str) -> Result<Pod> {
        self.wait(name, &format!("reach phase {phase}"), |p| {
            phase_of(p) == Some(phase)
        })
        .await
    }
}

fn phase_of(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn container<'a>(pod: &'a Pod, name: &str) -> Result<&'a ContainerStatus> {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    statuses
        .into_iter()
        .flatten()
        .find(|c| c.name == name)
        .with_context(|| format!("no status for container {name}"))
}

fn terminated<'a>(pod: &'a Pod, name: &str) -> Result<&'a ContainerStateTerminated> {
    let status = container(pod, name)?;
    status
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .with_context(|| format!("container {name} is not terminated: {:?}", status.state))
}

fn waiting_state(pod: &Pod, name: &str) -> Result<ContainerStateWaiting> {
    let state = container(pod, name)?.state.as_ref();
    state
        .and_then(|s| s.waiting.clone())
        .context("the container is not waiting")
}

fn waiting_reason(pod: &Pod, name: &str) -> Option<String> {
    let state = container(pod, name).ok()?.state.as_ref()?;
    state.waiting.as_ref()?.reason.clone()
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == type_)
}

fn sh(script: &str) -> Value {
    json!(["/bin/sh", "-c", script])
}

#[tokio::test]
async fn a_pod_runs_to_completion_with_its_termination_messages() -> Result<()> {
    let t = setup("pod-runner-complete").await?;
    t.create(
        "hello",
        json!({
            "restartPolicy": "Never",
            "containers": [
                { "name": "main", "image": "busybox",
                  "command": sh("echo to-the-log; printf 'all done' > /dev/termination-log") },
                { "name": "custom", "image": "busybox",
                  "terminationMessagePath": "/var/run/eventpipe/result",
                  "command": sh("printf '{\"rows\": 3}' > /var/run/eventpipe/result") },
            ],
        }),
    )
    .await?;
    let pod = t.wait_phase("hello", "Succeeded").await?;

    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(t.runner.node_name()));
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    let main = terminated(&pod, "main")?;
    assert_eq!(
        (main.exit_code, main.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert_eq!(main.message.as_deref(), Some("all done"));
    assert!(main.started_at.is_some() && main.finished_at.is_some());
    assert_eq!(
        terminated(&pod, "custom")?.message.as_deref(),
        Some("{\"rows\": 3}")
    );
    let main_status = container(&pod, "main")?;
    assert!(main_status.container_id.is_some());
    assert_eq!((main_status.ready, main_status.restart_count), (false, 0));
    assert_eq!(condition(&pod, "PodScheduled").unwrap().status, "True");
    let ready = condition(&pod, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("PodCompleted"))
    );
    assert_eq!(
        t.runner.logs(&t.ns, "hello", "main").as_deref(),
        Some("to-the-log\n")
    );
    Ok(())
}

#[tokio::test]
async fn environment_from_secrets_config_maps_and_the_downward_api() -> Result<()> {
    let t = setup("pod-runner-env").await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "creds" },
        "stringData": { "password": "hunter2", "user": "alice" },
    }))?;
    Api::<Secret>::namespaced(t.client.clone(), &t.ns)
        .create(&PostParams::default(), &secret)
        .await?;
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "settings" }, "data": { "greeting": "hello" },
    }))?;
    Api::<ConfigMap>::namespaced(t.client.clone(), &t.ns)
        .create(&PostParams::default(), &config)
        .await?;
    let field = |path: &str| json!({ "fieldRef": { "fieldPath": path } });
    let script = r#"printf '%s\n' "$0" "$PASSWORD" "$GREETING" "$COMPOSED" "$POD_NAMESPACE" \
        "$POD_UID" "$NODE" "$SA" "$IP" "$S_user" "$KUBERNETES_SERVICE_HOST" "$(pwd)" \
        > /dev/termination-log"#;
    let created = t
        .create(
            "env",
            json!({
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main", "image": "busybox", "workingDir": "/tmp",
                    "command": ["/bin/sh", "-c", script, "$(POD_NAME)"],
                    "envFrom": [
                        { "secretRef": { "name": "creds" }, "prefix": "S_" },
                        { "configMapRef": { "name": "absent", "optional": true } },
                    ],
                    "env": [
                        { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "password" } } },
                        { "name": "GREETING", "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "greeting" } } },
                        { "name": "POD_NAME", "valueFrom": field("metadata.name") },
                        { "name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace") },
                        { "name": "POD_UID", "valueFrom": field("metadata.uid") },
                        { "name": "NODE", "valueFrom": field("spec.nodeName") },
                        { "name": "SA", "valueFrom": field("spec.serviceAccountName") },
                        { "name": "IP", "valueFrom": field("status.podIP") },
                        { "name": "COMPOSED", "value": "$(GREETING)-$(POD_NAME)-$$(NOT)" },
                    ],
                }],
            }),
        )
        .await?;
    let pod = t.wait_phase("env", "Succeeded").await?;
    let message = terminated(&pod, "main")?
        .message
        .clone()
        .unwrap_or_default();
    let uid = created.metadata.uid.unwrap();
    let node = t.runner.node_name();
    let expected = [
        "env",
        "hunter2",
        "hello",
        "hello-env-$(NOT)",
        &t.ns,
        &uid,
        node,
        "default",
        "127.0.0.1",
        "alice",
        "127.0.0.1",
        "/tmp",
    ];
    assert_eq!(message.lines().collect::<Vec<_>>(), expected);
    Ok(())
}

#[tokio::test]
async fn a_missing_secret_is_a_config_error_until_it_exists() -> Result<()> {
    let t = setup("pod-runner-config-error").await?;
    t.create(
        "waits",
        json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": "busybox",
                "command": sh("printf %s \"$TOKEN\" > /dev/termination-log"),
                "env": [{ "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": "later", "key": "token" } } }],
            }],
        }),
    )
    .await?;
    let pod = t
        .wait("waits", "wait for its Secret", |p| {
            waiting_reason(p, "main").as_deref() == Some("CreateContainerConfigError")
        })
        .await?;
    assert_eq!(phase_of(&pod), Some("Pending"));
    let waiting = waiting_state(&pod, "main")?;
    assert_eq!(
        waiting.message.as_deref(),
        Some("secret \"later\" not found")
    );

    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "later" }, "stringData": { "token": "s3cr3t" },
    }))?;
    Api::<Secret>::namespaced(t.client.clone(), &t.ns)
        .create(&PostParams::default(), &secret)
        .await?;
    let pod = t.wait_phase("waits", "Succeeded").await?;
    assert_eq!(terminated(&pod, "main")?.message.as_deref(), Some("s3cr3t"));
    Ok(())
}

#[tokio::test]
async fn an_empty_dir_is_shared_by_a_pods_containers_and_private_to_the_pod() -> Result<()> {
    let t = setup("pod-runner-empty-dir").await?;
    let scratch = json!([{ "name": "scratch", "emptyDir": { "sizeLimit": "1Gi" } }]);
    let mount = json!([{ "name": "scratch", "mountPath": "/scratch" }]);
    t.create(
        "sharing",
        json!({
            "restartPolicy": "Never",
            "volumes": scratch,
            "containers": [
                { "name": "writer", "image": "busybox", "volumeMounts": mount,
                  "command": sh("echo from-sharing > /scratch/note") },
                { "name": "reader", "image": "busybox", "volumeMounts": mount,
                  "command": sh("until [ -f /scratch/note ]; do sleep 0.1; done; \
                                 cat /scratch/note > /dev/termination-log") },
            ],
        }),
    )
    .await?;
    let pod = t.wait_phase("sharing", "Succeeded").await?;
    assert_eq!(
        terminated(&pod, "reader")?.message.as_deref(),
        Some("from-sharing\n")
    );

    t.create(
        "other",
        json!({
            "restartPolicy": "Never",
            "volumes": scratch,
            "containers": [{ "name": "main", "image": "busybox", "volumeMounts": mount,
                             "command": sh("ls -A /scratch | wc -l > /dev/termination-log") }],
        }),
    )
    .await?;
    let pod = t.wait_phase("other", "Succeeded").await?;
    let entries = terminated(&pod, "main")?
        .message
        .clone()
        .unwrap_or_default();
    assert_eq!(
        entries.trim(),
        "0",
        "another pod's emptyDir is a fresh directory"
    );
    assert!(
        !Path::new("/scratch/note").exists(),
        "the volume is mounted only inside the pod's mount namespace"
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_container_fails_the_pod_with_its_log_as_message() -> Result<()> {
    let t = setup("pod-runner-error").await?;
    t.create(
        "broken",
        json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": "busybox",
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "command": sh("echo 'something broke' >&2; exit 3"),
            }],
        }),
    )
    .await?;
    let pod = t.wait_phase("broken", "Failed").await?;
    let main = terminated(&pod, "main")?;
    assert_eq!((main.exit_code, main.reason.as_deref()), (3, Some("Error")));
    assert_eq!(main.message.as_deref(), Some("something broke\n"));
    let ready = condition(&pod, "Ready").unwrap();
    assert_eq!(ready.reason.as_deref(), Some("PodFailed"));
    Ok(())
}

#[tokio::test]
async fn an_unknown_image_cannot_be_pulled_and_the_pod_can_still_be_deleted() -> Result<()> {
    let t = setup("pod-runner-image").await?;
    t.create(
        "nowhere",
        json!({
            "containers": [{ "name": "main", "image": "registry.example/absent:1.0" }],
        }),
    )
    .await?;
    let pod = t
        .wait("nowhere", "fail to pull", |p| {
            waiting_reason(p, "main").as_deref() == Some("ErrImagePull")
        })
        .await?;
    assert_eq!(phase_of(&pod), Some("Pending"));
    let waiting = waiting_state(&pod, "main")?;
    assert!(
        waiting
            .message
            .unwrap()
            .contains("registry.example/absent:1.0")
    );

    t.pods.delete("nowhere", &DeleteParams::default()).await?;
    wait_gone(&t.pods, "nowhere").await
}

async fn wait_gone(pods: &Api<Pod>, name: &str) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while pods.get_opt(name).await?.is_some() {
        ensure!(Instant::now() < deadline, "pod {name} was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn exceeding_the_memory_limit_is_an_oom_kill() -> Result<()> {
    assert!(
        PodRunner::memory_cgroups_supported(),
        "memory cgroups are needed for this test (root, cgroup v1 or a delegated v2 memory controller)"
    );
    let t = setup("pod-runner-oom").await?;
    let limited = |megabytes: u32| {
        json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": "busybox",
                "resources": { "limits": { "memory": "64Mi" } },
                "command": sh(&format!(
                    "exec python3 -c 'b = bytearray({megabytes} * 1024 * 1024); print(len(b))'"
                )),
            }],
        })
    };
    t.create("greedy", limited(300)).await?;
    t.create("modest", limited(16)).await?;
    let pod = t.wait_phase("greedy", "Failed").await?;
    let main = terminated(&pod, "main")?;
    assert_eq!(
        (main.exit_code, main.reason.as_deref()),
        (137, Some("OOMKilled"))
    );
    let pod = t.wait_phase("modest", "Succeeded").await?;
    assert_eq!(
        terminated(&pod, "main")?.reason.as_deref(),
        Some("Completed")
    );
    Ok(())
}

#[tokio::test]
async fn a_process_that_cannot_start_is_a_start_error() -> Result<()> {
    let t = setup("pod-runner-start-error").await?;
    t.create(
        "unstartable",
        json!({
            "restartPolicy": "Never",
            "containers": [
                { "name": "big-env", "image": "busybox", "command": sh("true"),
                  "env": [{ "name": "HUGE", "value": "x".repeat(200 * 1024) }] },
                { "name": "no-binary", "image": "busybox", "command": ["no-such-program"] },
            ],
        }),
    )
    .await?;
    let pod = t.wait_phase("unstartable", "Failed").await?;
    for (name, cause) in [
        ("big-env", "argument list too long"),
        ("no-binary", "executable file not found in $PATH"),
    ] {
        let state = terminated(&pod, name)?;
        assert_eq!(
            (state.exit_code, state.reason.as_deref()),
            (128, Some("StartError"))
        );
        let message = state.message.clone().unwrap_or_default();
        let found = message.to_lowercase().contains(&cause.to_lowercase());
        assert!(found, "{name}: {message}");
    }
    Ok(())
}

#[tokio::test]
async fn an_evicted_pod_keeps_its_disruption_condition_and_goes_away() -> Result<()> {
    let t = setup("pod-runner-evict").await?;
    t.create(
        "evictee",
        json!({
            "terminationGracePeriodSeconds": 5,
            "containers": [{ "name": "main", "image": "busybox", "command": sh("exec sleep 3600") }],
        }),
    )
    .await?;
    t.wait_phase("evictee", "Running").await?;

    let config = watcher::Config::default().fields("metadata.name=evictee");
    let mut events = watcher(t.pods.clone(), config).boxed();
    t.runner.evict(&t.ns, "evictee").await?;
    let mut last = None;
    let deleted = tokio::time::timeout(TIMEOUT, async {
        while let Some(event) = events.next().await {
            match event? {
                watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => last = Some(pod),
                watcher::Event::Delete(pod) => return Ok::<_, anyhow::Error>(pod),
                _ => {}
            }
        }
        bail!("the watch ended")
    })
    .await
    .with_context(|| format!("the evicted pod was not deleted; last seen: {last:?}"))??;

    assert_eq!(phase_of(&deleted), Some("Failed"));
    let disruption = condition(&deleted, "DisruptionTarget").context("DisruptionTarget")?;
    assert_eq!(disruption.status, "True");
    assert_eq!(disruption.reason.as_deref(), Some("EvictionByEvictionAPI"));
    let main = terminated(&deleted, "main")?;
    assert_eq!(
        (main.exit_code, main.reason.as_deref()),
        (143, Some("Error")),
        "SIGTERM"
    );
    assert!(t.pods.get_opt("evictee").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn restart_policy_always_restarts_with_back_off() -> Result<()> {
    let t = setup("pod-runner-restart").await?;
    t.create(
        "crashy",
        json!({
            "restartPolicy": "Always",
            "containers": [{ "name": "main", "image": "busybox", "command": sh("exit 1") }],
        }),
    )
    .await?;
    let pod = t
        .wait("crashy", "restart twice", |p| {
            container(p, "main").is_ok_and(|c| c.restart_count >= 2)
        })
        .await?;
    assert_eq!(phase_of(&pod), Some("Running"));
    let main = container(&pod, "main")?;
    let last = main
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .context("lastState")?;
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    Ok(())
}

#[tokio::test]
async fn kill_is_a_crash() -> Result<()> {
    let t = setup("pod-runner-kill").await?;
    t.create(
        "victim",
        json!({
            "restartPolicy": "Never",
            "containers": [{ "name": "main", "image": "busybox",
                             "command": sh("sleep 3600 & wait") }],
        }),
    )
    .await?;
    t.wait_phase("victim", "Running").await?;
    t.runner.kill(&t.ns, "victim", "main").await?;
    let pod = t.wait_phase("victim", "Failed").await?;
    let main = terminated(&pod, "main")?;
    assert_eq!(
        (main.exit_code, main.reason.as_deref()),
        (137, Some("Error"))
    );
    Ok(())
}

#[tokio::test]
async fn the_projected_token_authenticates_as_the_pod() -> Result<()> {
    let t = setup("pod-runner-token").await?;
    let script = r#"set -e
        dir=/var/run/secrets/kubernetes.io/serviceaccount
        [ "$(cat $dir/namespace)" = "$NS" ]
        curl -sS --fail --cacert $dir/ca.crt -H "Authorization: Bearer $(cat $dir/token)" \
          -H 'Content-Type: application/json' -X POST \
          -d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' \
          "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/apis/authentication.k8s.io/v1/selfsubjectreviews" \
          > /dev/termination-log"#;
    t.create(
        "whoami",
        json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": "busybox", "command": sh(script),
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "env": [{ "name": "NS", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } }],
            }],
        }),
    )
    .await?;
    let pod = t.wait_phase("whoami", "Succeeded").await?;
    let review: Value =
        serde_json::from_str(terminated(&pod, "main")?.message.as_deref().unwrap_or("{}"))?;
    let user = &review["status"]["userInfo"];
    assert_eq!(
        user["username"],
        format!("system:serviceaccount:{}:default", t.ns)
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["whoami"])
    );
    Ok(())
}

#[tokio::test]
async fn probes_set_readiness_and_restart_unhealthy_containers() -> Result<()> {
    let t = setup("pod-runner-probes").await?;
    let (web_port, closed_port) = (free_host_port()?, free_host_port()?);
    t.create(
        "probed",
        json!({
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                { "name": "web", "image": "busybox",
                  "command": sh(&format!("exec python3 -m http.server {web_port} --bind 127.0.0.1")),
                  "ports": [{ "name": "http", "containerPort": web_port }],
                  "readinessProbe": { "httpGet": { "path": "/", "port": "http" }, "periodSeconds": 1 } },
                { "name": "unhealthy", "image": "busybox", "command": sh("exec sleep 3600"),
                  "livenessProbe": { "tcpSocket": { "port": closed_port },
                                     "periodSeconds": 1, "failureThreshold": 2 } },
            ],
        }),
    )
    .await?;
    let pod = t
        .wait(
            "probed",
            "have a ready web server and a restarted unhealthy container",
            |p| {
                container(p, "web").is_ok_and(|c| c.ready)
                    && container(p, "unhealthy").is_ok_and(|c| c.restart_count >= 1)
            },
        )
        .await?;
    let unhealthy = container(&pod, "unhealthy")?;
    let last = unhealthy
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|l| l.exit_code), Some(143), "stopped with SIGTERM");
    Ok(())
}

#[tokio::test]
async fn a_node_that_is_not_ready_gets_no_pods() -> Result<()> {
    let t = setup("pod-runner-node").await?;
    let nodes = Api::<Node>::all(t.client.clone());
    let ready_status = |node: &Node| {
        let conditions = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status)
    };
    let node = nodes.get(t.runner.node_name()).await?;
    assert_eq!(ready_status(&node).as_deref(), Some("True"));
    let capacity = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.clone())
        .unwrap_or_default();
    assert_eq!(capacity.get("memory").map(|q| q.0.as_str()), Some("8Gi"));
    Api::<Lease>::namespaced(t.client.clone(), "kube-node-lease")
        .get(t.runner.node_name())
        .await
        .context("the node's Lease")?;

    t.runner.set_node_ready(false).await?;
    let node = nodes.get(t.runner.node_name()).await?;
    assert_eq!(ready_status(&node).as_deref(), Some("Unknown"));
    t.create(
        "later",
        json!({
            "restartPolicy": "Never",
            "containers": [{ "name": "main", "image": "busybox", "command": sh("true") }],
        }),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pod = t.pods.get("later").await?;
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name,
        None,
        "not bound to a node that is not Ready"
    );

    t.runner.set_node_ready(true).await?;
    t.wait_phase("later", "Succeeded").await?;
    Ok(())
}

/// The real Job controller creates the pod, the runner runs it, the Job completes; an eviction
/// ignored by the Job's `podFailurePolicy` does not count as a failure.
#[tokio::test]
async fn a_job_completes_even_if_its_first_pod_is_evicted() -> Result<()> {
    let t = setup("pod-runner-job").await?;
    let jobs = Api::<Job>::namespaced(t.client.clone(), &t.ns);
    let job: Job = serde_json::from_value(json!({
        "metadata": { "name": "work" },
        "spec": {
            "backoffLimit": 0,
            "podFailurePolicy": { "rules": [{
                "action": "Ignore",
                "onPodConditions": [{ "type": "DisruptionTarget" }],
            }]},
            "template": { "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 2,
                "containers": [{ "name": "main", "image": "busybox",
                                 "command": sh("sleep 4; echo done > /dev/termination-log") }],
            }},
        },
    }))?;
    jobs.create(&PostParams::default(), &job).await?;

    let first = wait_for_job_pod(&t, |p| phase_of(p) == Some("Running")).await?;
    let first_name = first.metadata.name.clone().unwrap();
    t.runner.evict(&t.ns, &first_name).await?;

    let deadline = Instant::now() + TIMEOUT;
    let job = loop {
        let job = jobs.get("work").await?;
        let conditions = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if let Some(c) = conditions
            .iter()
            .find(|c| c.status == "True" && matches!(c.type_.as_str(), "Complete" | "Failed"))
        {
            ensure!(c.type_ == "Complete", "the Job failed: {c:?}");
            break job;
        }
        ensure!(
            Instant::now() < deadline,
            "the Job did not finish: {:?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = job.status.unwrap();
    assert_eq!(status.succeeded, Some(1));
    assert_eq!(
        status.failed.unwrap_or(0),
        0,
        "the eviction is not a failure"
    );
    let done = wait_for_job_pod(&t, |p| phase_of(p) == Some("Succeeded")).await?;
    assert_ne!(
        done.metadata.name,
        Some(first_name),
        "a new pod replaced the evicted one"
    );
    assert_eq!(
        terminated(&done, "main")?.message.as_deref(),
        Some("done\n")
    );
    Ok(())
}

async fn wait_for_job_pod(t: &Setup, done: impl Fn(&Pod) -> bool) -> Result<Pod> {
    let deadline = Instant::now() + TIMEOUT;
    let of_job = ListParams::default().labels("job-name=work");
    loop {
        if let Some(pod) = t.pods.list(&of_job).await?.items.into_iter().find(&done) {
            return Ok(pod);
        }
        ensure!(
            Instant::now() < deadline,
            "no pod of the Job reached the expected state"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Serves one HTTP answer with `body` on the host's 127.0.0.1 (for as long as the test's runtime
/// lives) and returns the port.
async fn serve_once_on_the_host(body: &'static str) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0];
            if stream.read(&mut byte).await? == 0 {
                break;
            }
            request.push(byte[0]);
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    });
    Ok(port)
}

fn free_host_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Each pod has a network of its own: two pods of one kind listen on the same port, as two
/// replicas of a Deployment do, and the containers of a pod share their pod's network (an exec
/// probe in one reaches the server of the other).
#[tokio::test]
async fn pods_listening_on_the_same_port_each_have_their_own_network() -> Result<()> {
    let t = setup("pod-runner-netns").await?;
    let web = json!({
        "volumes": [{ "name": "site", "emptyDir": {} }],
        "containers": [
            { "name": "web", "image": "busybox",
              "volumeMounts": [{ "name": "site", "mountPath": "/srv" }],
              "command": sh("echo \"$HOSTNAME\" > /srv/name; cd /srv; exec python3 -m http.server 8080"),
              "ports": [{ "name": "http", "containerPort": 8080 }],
              "readinessProbe": { "httpGet": { "path": "/name", "port": "http" }, "periodSeconds": 1 } },
            { "name": "sidecar", "image": "busybox", "command": sh("exec sleep 3600"),
              "readinessProbe": { "exec": { "command": ["curl", "-sf", "http://127.0.0.1:8080/name"] },
                                  "periodSeconds": 1 } },
        ],
    });
    for name in ["web-a", "web-b"] {
        t.create(name, web.clone()).await?;
    }
    for name in ["web-a", "web-b"] {
        let pod = t
            .wait(name, "become Ready", |p| {
                condition(p, "Ready").is_some_and(|c| c.status == "True")
            })
            .await?;
        assert_eq!(container(&pod, "web")?.restart_count, 0, "no port clash");
        let (status, body) = t.runner.http_get(&t.ns, name, 8080, "/name").await?;
        assert_eq!((status, body.as_str()), (200, format!("{name}\n").as_str()));
        let (status, _) = t.runner.http_get(&t.ns, name, 8080, "/absent").await?;
        assert_eq!(status, 404);
    }
    let refused = t.runner.http_get(&t.ns, "web-a", 8081, "/").await;
    assert!(refused.is_err(), "nothing listens on 8081 in the pod");
    Ok(())
}

/// A pod reaches the host's 127.0.0.1 only on the forwarded ports (the API server's is tested by
/// `the_projected_token_authenticates_as_the_pod`); the forwards end with the pod.
#[tokio::test]
async fn a_pod_reaches_forwarded_host_ports_and_no_others() -> Result<()> {
    let forwarded = serve_once_on_the_host("hello from the host").await?;
    let not_forwarded = serve_once_on_the_host("unreachable").await?;
    let t = setup_forwarding("pod-runner-forward", vec![forwarded]).await?;
    let script = format!(
        "forwarded=$(curl -sS --max-time 10 http://127.0.0.1:{forwarded}/)
         curl -sS --max-time 5 -o /dev/null http://127.0.0.1:{not_forwarded}/ 2>/dev/null
         printf '%s\\n%s\\n' \"$forwarded\" \"$?\" > /dev/termination-log"
    );
    t.create(
        "client",
        json!({
            "restartPolicy": "Never",
            "containers": [{ "name": "main", "image": "busybox", "command": sh(&script) }],
        }),
    )
    .await?;
    let pod = t.wait_phase("client", "Succeeded").await?;
    let message = terminated(&pod, "main")?
        .message
        .clone()
        .unwrap_or_default();
    assert_eq!(
        message.lines().collect::<Vec<_>>(),
        ["hello from the host", "7"],
        "curl's exit code 7: failed to connect"
    );
    let released = t.runner.http_get(&t.ns, "client", forwarded, "/").await;
    assert!(released.is_err(), "a finished pod's network is released");
    Ok(())
}

/// `hostNetwork: true` pods share the host's network, as before: every port of the host's
/// 127.0.0.1 is theirs to reach, and their servers listen on the host.
#[tokio::test]
async fn a_host_network_pod_shares_the_hosts_network() -> Result<()> {
    let t = setup("pod-runner-host-network").await?;
    let host_server = serve_once_on_the_host("hello from the host").await?;
    let port = free_host_port()?;
    let script = format!(
        "curl -sS --max-time 10 http://127.0.0.1:{host_server}/ > /www/from-host
         exec python3 -m http.server {port} --bind 127.0.0.1 --directory /www"
    );
    t.create(
        "hosted",
        json!({
            "hostNetwork": true,
            "volumes": [{ "name": "www", "emptyDir": {} }],
            "containers": [{
                "name": "main", "image": "busybox", "command": sh(&script),
                "volumeMounts": [{ "name": "www", "mountPath": "/www" }],
                "readinessProbe": { "tcpSocket": { "port": port }, "periodSeconds": 1 },
            }],
        }),
    )
    .await?;
    t.wait("hosted", "become Ready", |p| {
        condition(p, "Ready").is_some_and(|c| c.status == "True")
    })
    .await?;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .context("the pod's server listens on the host")?;
    stream.write_all(b"GET /from-host HTTP/1.0\r\n\r\n").await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    assert!(
        response.ends_with("\r\n\r\nhello from the host"),
        "{response}"
    );
    let (status, body) = t
        .runner
        .http_get(&t.ns, "hosted", port, "/from-host")
        .await?;
    assert_eq!((status, body.as_str()), (200, "hello from the host"));
    Ok(())
}
