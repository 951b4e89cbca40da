//! The operator against the real kube-apiserver and the real S3 server. The operator runs in
//! process with a ServiceAccount token bound to exactly the chart's RBAC rules
//! (`charts/eventpipe/files/rbac/operator.yaml`); the test plays the Job controller and the
//! kubelet, which the test control plane does not run, by writing Job and Pod status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use eventpipe::crd::{EventPipeline, EventPipelineStatus, PartitionState};
use eventpipe::operator::{OperatorArgs, Shutdown};
use eventpipe_testkit::kube_env::KubeEnv;
use eventpipe_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use eventpipe_transformer::task::{Outcome, Summary, Task};
use futures::FutureExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const CSV_HEADER: &str = "id,name,value,timestamp\n";

/// One test's world: a namespace, a bucket, the operator's ServiceAccount and its client.
struct World {
    namespace: String,
    bucket: String,
    admin: Client,
    operator: Client,
    writes: Arc<AtomicUsize>,
    reads: Arc<AtomicUsize>,
}

impl World {
    async fn new(name: &str) -> Result<Self> {
        let env = KubeEnv::get().await?;
        let s3 = S3Server::get()?;
        let namespace = env.namespace(name).await?;
        let bucket = s3.bucket(name).await?;
        let admin = env.client()?;
        bind_chart_rules(&admin, &namespace).await?;
        let token = env.service_account_token(&namespace, "eventpipe-operator").await?;
        let (operator, reads, writes) = counting_client(env, &namespace, token)?;
        let secret = Secret {
            metadata: ObjectMeta { name: Some("s3-credentials".into()), ..ObjectMeta::default() },
            string_data: Some(BTreeMap::from([
                ("AWS_ACCESS_KEY_ID".to_string(), ACCESS_KEY.to_string()),
                ("AWS_SECRET_ACCESS_KEY".to_string(), SECRET_KEY.to_string()),
            ])),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(admin.clone(), &namespace).create(&PostParams::default(), &secret).await?;
        Ok(Self { namespace, bucket, admin, operator, writes, reads })
    }

    /// Starts the operator for this namespace; it stops when the returned sender is dropped.
    fn start_operator(&self) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>, u16) {
        self.start_replica("test-operator", false)
    }

    /// Starts one operator replica, optionally taking part in leader election.
    fn start_replica(&self, identity: &str, leader_election: bool) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>, u16) {
        let port = free_port();
        let args = OperatorArgs {
            transformer_image: "registry.example/eventpipe-transformer:test".into(),
            namespace: Some(self.namespace.clone()),
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            leader_election,
            lease_name: "eventpipe-operator".into(),
            lease_namespace: self.namespace.clone(),
            identity: Some(identity.into()),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown: Shutdown = async move {
            let _ = stopped.await;
        }
        .boxed()
        .shared();
        let client = self.operator.clone();
        let task = tokio::spawn(async move {
            eventpipe::operator::serve_and_run(client, args, shutdown).await.expect("the operator runs");
        });
        (stop, task, port)
    }

    async fn upload(&self, partition: &str, file: &str, rows: usize) -> Result<()> {
        let mut body = CSV_HEADER.to_string();
        for i in 0..rows {
            body.push_str(&format!("{i},theme,dark,{}\n", 1_764_000_000 + i));
        }
        S3Server::get()?.put(&self.bucket, &format!("events/{partition}/{file}"), body.into_bytes()).await
    }

    async fn apply_pipeline(&self, name: &str, extra: serde_json::Value) -> Result<()> {
        let s3 = S3Server::get()?;
        let mut spec = json!({
            "source": {
                "url": format!("s3://{}/events/", self.bucket),
                "schema": [
                    {"name": "id", "type": "int64", "nullable": false},
                    {"name": "name", "type": "string"},
                    {"name": "value", "type": "string"},
                    {"name": "timestamp", "type": "timestamp", "unit": "seconds"}
                ]
            },
            "sink": {"url": format!("s3://{}/out/", self.bucket)},
            "s3": {
                "endpoint": s3.endpoint(),
                "forcePathStyle": true,
                "region": "us-east-1",
                "credentialsSecretRef": {"name": "s3-credentials"}
            },
            "schedule": {"pollIntervalSeconds": 1, "gracePeriodSeconds": 0, "lookbackDays": 7},
            "execution": {"maxConcurrentJobs": 1, "maxAttempts": 2, "retryBackoffSeconds": 1}
        });
        merge(&mut spec, extra);
        let pipeline = json!({
            "apiVersion": "eventpipe.dev/v1alpha1",
            "kind": "EventPipeline",
            "metadata": {"name": name},
            "spec": spec
        });
        self.pipelines()
            .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&pipeline))
            .await
            .context("applying the pipeline")?;
        Ok(())
    }

    fn pipelines(&self) -> Api<EventPipeline> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    async fn status(&self, name: &str) -> Result<EventPipelineStatus> {
        Ok(self.pipelines().get(name).await?.status.unwrap_or_default())
    }

    async fn job_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.jobs().list(&ListParams::default()).await?.items.iter().map(|j| j.name_any()).collect();
        names.sort();
        Ok(names)
    }

    /// Waits until the namespace has `count` Jobs and returns their names, sorted.
    async fn wait_for_jobs(&self, count: usize) -> Result<Vec<String>> {
        wait_until(&format!("{count} Jobs"), || async { Ok(self.job_names().await?.len() == count) }).await?;
        self.job_names().await
    }

    /// Plays the Job controller and the kubelet: a pod for the Job whose transformer container
    /// ended with this report, then the Job's final status.
    async fn finish_job(&self, job: &str, outcome: &Outcome) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), &self.namespace);
        let template = self.jobs().get(job).await?.spec.context("job spec")?.template;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{job}-pod"), "labels": template.metadata.and_then(|m| m.labels)},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "transformer", "image": "registry.example/eventpipe-transformer:test"}]}
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        let succeeded = outcome.summary.is_some();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let pod_status = json!({"status": {
            "phase": if succeeded { "Succeeded" } else { "Failed" },
            "containerStatuses": [{
                "name": "transformer", "image": "registry.example/eventpipe-transformer:test", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": if succeeded { 0 } else { 1 }, "message": outcome.termination_message(),
                                         "startedAt": now, "finishedAt": now}}
            }]
        }});
        pods.patch_status(&format!("{job}-pod"), &PatchParams::default(), &Patch::Merge(&pod_status)).await?;
        let conditions = if succeeded {
            json!([
                {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": now, "lastTransitionTime": now},
                {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
            ])
        } else {
            json!([
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now}
            ])
        };
        let mut job_status = json!({"status": {"startTime": now, "conditions": conditions,
            "succeeded": if succeeded { 1 } else { 0 }, "failed": if succeeded { 0 } else { 1 }}});
        if succeeded {
            job_status["status"]["completionTime"] = json!(now);
        }
        self.jobs()
            .patch_status(job, &PatchParams::default(), &Patch::Merge(&job_status))
            .await
            .with_context(|| format!("finishing Job {job}"))?;
        Ok(())
    }

    async fn event_reasons(&self) -> Result<Vec<String>> {
        let events: Api<Event> = Api::namespaced(self.admin.clone(), &self.namespace);
        Ok(events.list(&ListParams::default()).await?.items.into_iter().filter_map(|e| e.reason).collect())
    }
}

/// A ClusterRole with the chart's rules (the operator's and leader election's), bound in
/// `namespace` to ServiceAccount eventpipe-operator.
async fn bind_chart_rules(admin: &Client, namespace: &str) -> Result<()> {
    let rbac = eventpipe_testkit::kube_env::workspace_root().join("charts/eventpipe/files/rbac");
    let mut rules: Vec<PolicyRule> = serde_yaml::from_str(&std::fs::read_to_string(rbac.join("operator.yaml"))?)?;
    let lease_rules: Vec<PolicyRule> = serde_yaml::from_str(&std::fs::read_to_string(rbac.join("leader-election.yaml"))?)?;
    rules.extend(lease_rules);
    let role_name = format!("eventpipe-operator-{namespace}");
    let role = ClusterRole {
        metadata: ObjectMeta { name: Some(role_name.clone()), ..ObjectMeta::default() },
        rules: Some(rules),
        ..ClusterRole::default()
    };
    Api::<ClusterRole>::all(admin.clone()).create(&PostParams::default(), &role).await?;
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some("eventpipe-operator".into()), ..ObjectMeta::default() },
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "ClusterRole".into(), name: role_name },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "eventpipe-operator".into(),
            namespace: Some(namespace.into()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), namespace).create(&PostParams::default(), &binding).await?;
    Ok(())
}

/// A client authenticated with `token` that counts the requests it sends: reads (GET) and writes.
fn counting_client(env: &KubeEnv, namespace: &str, token: String) -> Result<(Client, Arc<AtomicUsize>, Arc<AtomicUsize>)> {
    let mut config = env.admin_config();
    config.auth_info = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() };
    config.default_namespace = namespace.to_string();
    let (reads, writes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, w) = (Arc::clone(&reads), Arc::clone(&writes));
    let counter = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        let watch = request.uri().query().is_some_and(|q| q.contains("watch=true"));
        match *request.method() {
            http::Method::GET if !watch => r.fetch_add(1, Ordering::Relaxed),
            http::Method::GET => 0,
            _ => w.fetch_add(1, Ordering::Relaxed),
        };
        request
    });
    let client = kube::client::ClientBuilder::try_from(config)?.with_layer(&counter).build();
    Ok((client, reads, writes))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `year=YYYY/month=MM/day=DD` of `days_ago` days before today (UTC).
fn partition(days_ago: i64) -> String {
    let day = chrono::Utc::now().date_naive() - chrono::Duration::days(days_ago);
    day.format("year=%Y/month=%m/day=%d").to_string()
}

fn summary(rows: u64) -> Outcome {
    Outcome {
        summary: Some(Summary { rows_read: rows, rows_written: rows, bytes_written: 2048, seconds: 0.5, ..Summary::default() }),
        error: None,
    }
}

fn state_of(status: &EventPipelineStatus, partition: &str) -> Option<(PartitionState, u32)> {
    status.partitions.iter().find(|p| p.partition == partition).map(|p| (p.state, p.attempts))
}

fn condition(status: &EventPipelineStatus, kind: &str) -> Option<(String, String)> {
    status.conditions.iter().find(|c| c.type_ == kind).map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn partitions_become_jobs_results_become_status_and_restarts_launch_no_duplicates() -> Result<()> {
    let world = World::new("lifecycle").await?;
    let (older, newer) = (partition(2), partition(1));
    world.upload(&older, "a.csv", 3).await?;
    world.upload(&newer, "a.csv", 5).await?;
    let (stop, operator, port) = world.start_operator();
    let landed = Instant::now();
    world.apply_pipeline("settings", json!({})).await?;

    // One Job at a time (maxConcurrentJobs 1), the oldest partition first.
    let jobs = world.wait_for_jobs(1).await?;
    eprintln!("apply to first Job: {:?}", landed.elapsed());
    let first = world.jobs().get(&jobs[0]).await?;
    let compact: String = older.chars().filter(char::is_ascii_digit).collect();
    assert!(jobs[0].starts_with(&format!("settings-{compact}-")), "{jobs:?}");
    assert!(jobs[0].ends_with("-1"));
    let owner = &first.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("EventPipeline", "settings"));
    let pod = first.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("registry.example/eventpipe-transformer:test"));
    assert_eq!(container.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "s3-credentials");
    assert_eq!(container.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    let task = container.env.as_ref().unwrap().iter().find(|e| e.name == "EVENTPIPE_TASK").unwrap();
    let task: Task = serde_json::from_str(task.value.as_deref().unwrap())?;
    assert_eq!(task.partition.to_string(), older);
    assert_eq!(task.inputs.iter().map(|i| i.path.as_str()).collect::<Vec<_>>(), vec![format!("{older}/a.csv")]);

    wait_until("status showing the running Job", || async {
        let status = world.status("settings").await?;
        Ok(status.running_jobs == 1 && status.pending_partitions == 1)
    })
    .await?;
    let status = world.status("settings").await?;
    assert_eq!(condition(&status, "Progressing"), Some(("True".into(), "Processing".into())));

    // The first succeeds; the second partition gets its Job, which fails twice and is given up.
    let first_name = jobs[0].clone();
    world.finish_job(&first_name, &summary(3)).await?;
    let jobs = world.wait_for_jobs(2).await?;
    let second = jobs.into_iter().find(|j| *j != first_name).unwrap();
    let failure = Outcome { summary: None, error: Some("s3://x/a.csv, line 2, field id: cannot parse \"x\" as int64".into()) };
    world.finish_job(&second, &failure).await?;
    let jobs = world.wait_for_jobs(3).await?;
    let retry = jobs.iter().find(|j| j.ends_with("-2")).context("a second attempt")?.clone();
    world.finish_job(&retry, &failure).await?;
    wait_until("the partition marked failed", || async {
        Ok(world.status("settings").await?.failed_partitions == 1)
    })
    .await?;
    let status = world.status("settings").await?;
    assert_eq!(state_of(&status, &older), Some((PartitionState::Succeeded, 1)));
    assert_eq!(state_of(&status, &newer), Some((PartitionState::Failed, 2)));
    let done = status.partitions.iter().find(|p| p.partition == older).unwrap();
    assert_eq!((done.rows_read, done.rows_written, done.bytes_written), (Some(3), Some(3), Some(2048)));
    let failed = status.partitions.iter().find(|p| p.partition == newer).unwrap();
    assert!(failed.message.as_deref().unwrap().contains("line 2, field id"), "{failed:?}");
    assert_eq!(condition(&status, "Degraded"), Some(("True".into(), "PartitionsFailed".into())));
    assert_eq!(condition(&status, "Ready"), Some(("False".into(), "PartitionsFailed".into())));
    assert_eq!(status.last_completed_partition.as_deref(), Some(older.as_str()));
    let reasons = world.event_reasons().await?;
    for reason in ["Launched", "Succeeded", "AttemptFailed", "PartitionFailed"] {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} event in {reasons:?}");
    }

    // Quiet: polls read but write nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (reads_before, writes_before) = (world.reads.load(Ordering::Relaxed), world.writes.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (reads, writes) = (world.reads.load(Ordering::Relaxed) - reads_before, world.writes.load(Ordering::Relaxed) - writes_before);
    eprintln!("quiet 4 s at 1 s polls: {reads} reads, {writes} writes");
    assert!(reads > 0, "the operator kept polling");
    assert_eq!(writes, 0, "a reconcile with nothing new writes nothing");

    let metrics = reqwest_text(port, "/metrics").await?;
    assert!(metrics.contains("eventpipe_partitions_processed_total{namespace="), "{metrics}");
    assert!(metrics.contains("eventpipe_rows_total{") && metrics.contains("kind=\"Read\"} 3"), "{metrics}");
    assert_eq!(reqwest_text(port, "/readyz").await?, "ok");

    // Restart: no duplicate Job, status unchanged.
    drop(stop);
    operator.await?;
    let before = world.job_names().await?;
    let status_before = world.status("settings").await?;
    let (stop, operator, _) = world.start_operator();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(world.job_names().await?, before, "a restarted operator launches nothing new");
    assert_eq!(world.status("settings").await?, status_before);

    // Late data: a new object changes the succeeded partition's fingerprint: processed again.
    let late = Instant::now();
    world.upload(&older, "b.csv", 2).await?;
    let jobs = world.wait_for_jobs(4).await?;
    eprintln!("late object to its Job: {:?}", late.elapsed());
    let new_job = jobs.iter().find(|j| !before.contains(j)).unwrap();
    let task = world.jobs().get(new_job).await?.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
    let task: Task = serde_json::from_str(task.iter().find(|e| e.name == "EVENTPIPE_TASK").unwrap().value.as_deref().unwrap())?;
    assert_eq!(task.inputs.len(), 2);
    assert!(world.event_reasons().await?.iter().any(|r| r == "InputsChanged"));
    drop(stop);
    operator.await?;
    Ok(())
}

#[tokio::test]
async fn a_bad_spec_degrades_the_pipeline_launches_nothing_and_recovers_when_fixed() -> Result<()> {
    let world = World::new("badspec").await?;
    world.upload(&partition(1), "a.csv", 2).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("broken", json!({"transform": {"sql": "SELECT nope FROM events"}})).await?;
    wait_until("Degraded", || async {
        Ok(condition(&world.status("broken").await?, "Degraded").is_some_and(|(s, _)| s == "True"))
    })
    .await?;
    let status = world.status("broken").await?;
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "InvalidSpec");
    assert!(degraded.message.contains("nope"), "{}", degraded.message);
    assert!(world.job_names().await?.is_empty());

    world.apply_pipeline("broken", json!({"transform": {"sql": "SELECT id, value FROM events"}})).await?;
    world.wait_for_jobs(1).await?;
    wait_until("Degraded cleared", || async {
        Ok(condition(&world.status("broken").await?, "Degraded").is_some_and(|(s, _)| s == "False"))
    })
    .await?;

    // An unreachable bucket is reported, not crashed on.
    world
        .apply_pipeline("nobucket", json!({"source": {"url": "s3://no-such-bucket-for-eventpipe/events/"}}))
        .await?;
    wait_until("SourceUnavailable", || async {
        Ok(condition(&world.status("nobucket").await?, "Degraded") == Some(("True".into(), "SourceUnavailable".into())))
    })
    .await?;
    drop(stop);
    operator.await?;
    Ok(())
}

#[tokio::test]
async fn suspend_stops_launches() -> Result<()> {
    let world = World::new("suspend").await?;
    world.upload(&partition(1), "a.csv", 2).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("paused", json!({"suspend": true})).await?;
    wait_until("Suspended", || async {
        Ok(condition(&world.status("paused").await?, "Ready") == Some(("False".into(), "Suspended".into())))
    })
    .await?;
    assert!(world.job_names().await?.is_empty());
    world.apply_pipeline("paused", json!({"suspend": false})).await?;
    world.wait_for_jobs(1).await?;
    drop(stop);
    operator.await?;
    Ok(())
}

#[tokio::test]
async fn of_two_replicas_only_the_lease_holder_launches_and_the_other_takes_over() -> Result<()> {
    let world = World::new("leader").await?;
    world.upload(&partition(1), "a.csv", 2).await?;
    let (stop_a, replica_a, _) = world.start_replica("replica-a", true);
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(world.admin.clone(), &world.namespace);
    let holder = || async {
        let lease = leases.get_opt("eventpipe-operator").await?;
        Ok::<_, anyhow::Error>(lease.and_then(|l| l.spec?.holder_identity))
    };
    wait_until("replica-a to lead", || async { Ok(holder().await?.as_deref() == Some("replica-a")) }).await?;
    let (stop_b, replica_b, port_b) = world.start_replica("replica-b", true);
    world.apply_pipeline("first", json!({})).await?;
    world.wait_for_jobs(1).await?;
    assert_eq!(holder().await?.as_deref(), Some("replica-a"));
    assert_eq!(reqwest_text(port_b, "/readyz").await?, "ok", "a standby is ready: it serves probes");
    let standby_metrics = reqwest_text(port_b, "/metrics").await?;
    assert!(!standby_metrics.contains("eventpipe_jobs_launched_total{"), "the standby launched nothing: {standby_metrics}");

    drop(stop_a);
    replica_a.await?;
    wait_until("replica-b to lead", || async { Ok(holder().await?.as_deref() == Some("replica-b")) }).await?;
    world.apply_pipeline("second", json!({"sink": {"url": format!("s3://{}/out2/", world.bucket)}})).await?;
    world.wait_for_jobs(2).await?;
    drop(stop_b);
    replica_b.await?;
    Ok(())
}

/// GETs a path from the operator's HTTP server.
async fn reqwest_text(port: u16, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").context("an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{path}: {head}");
    }
    Ok(body.to_string())
}
