//! The test world shared by the operator's integration tests: a namespace on the real
//! kube-apiserver (with the real kube-controller-manager), a bucket on the real S3 server, the
//! operator's ServiceAccount bound to exactly the chart's RBAC rules
//! (`charts/eventpipe/files/rbac/`), and helpers to apply pipelines, upload CSV files and wait.
//! Nothing here writes a Job's or a Pod's status.

#![allow(dead_code, reason = "each test binary uses a different part of the fixtures")]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use eventpipe::crd::{EventPipeline, EventPipelineStatus, PartitionState};
use eventpipe::controller::allowances::S3Allowances;
use eventpipe::operator::{OperatorArgs, Shutdown};
use eventpipe_testkit::kube_env::KubeEnv;
use eventpipe_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use futures::FutureExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

pub const CSV_HEADER: &str = "id,name,value,timestamp\n";

/// Sends the operator's log (`RUST_LOG`, default `eventpipe=info`) to the test's captured
/// output, which is shown when the test fails.
fn log_to_test_output() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "eventpipe=info".into());
    let _already_set = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// One test's world: a namespace, a bucket, the operator's ServiceAccount and its client.
pub struct World {
    pub namespace: String,
    pub bucket: String,
    pub admin: Client,
    pub operator: Client,
    pub writes: Arc<AtomicUsize>,
    pub reads: Arc<AtomicUsize>,
}

impl World {
    pub async fn new(name: &str) -> Result<Self> {
        log_to_test_output();
        let env = KubeEnv::get().await?;
        let s3 = S3Server::get()?;
        let namespace = env.namespace(name).await?;
        let bucket = s3.bucket(name).await?;
        let admin = env.client()?;
        bind_chart_rules(&admin, &namespace, &namespace).await?;
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
    pub fn start_operator(&self) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<ExitCode>, u16) {
        self.start_replica("test-operator", false)
    }

    /// Starts the operator with pipelines allowed to use these endpoints besides the S3 server's.
    pub fn start_operator_allowing(&self, endpoints: &[&str]) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<ExitCode>, u16) {
        let mut allowed = vec![S3Server::get().expect("the test S3 server").endpoint()];
        allowed.extend_from_slice(endpoints);
        let s3_allowances = S3Allowances::parse(&json!({"*": {"endpoints": allowed}}).to_string()).expect("allowances parse");
        let args = OperatorArgs { s3_allowances, ..operator_args(&[&self.namespace], &self.namespace) };
        let port = args.listen.port();
        let (stop, task) = spawn_operator(self.operator.clone(), args);
        let task = tokio::spawn(async move { task.await.expect("the operator task").expect("the operator runs") });
        (stop, task, port)
    }

    /// Starts one operator replica, optionally taking part in leader election; the task ends with
    /// the process's exit code.
    pub fn start_replica(&self, identity: &str, leader_election: bool) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<ExitCode>, u16) {
        let args = OperatorArgs { leader_election, identity: Some(identity.into()), ..operator_args(&[&self.namespace], &self.namespace) };
        let port = args.listen.port();
        let (stop, task) = spawn_operator(self.operator.clone(), args);
        let task = tokio::spawn(async move { task.await.expect("the operator task").expect("the operator runs") });
        (stop, task, port)
    }

    pub async fn upload(&self, partition: &str, file: &str, rows: usize) -> Result<()> {
        let mut body = CSV_HEADER.to_string();
        for i in 0..rows {
            body.push_str(&format!("{i},theme,dark,{}\n", 1_764_000_000 + i));
        }
        S3Server::get()?.put(&self.bucket, &format!("events/{partition}/{file}"), body.into_bytes()).await
    }

    pub async fn apply_pipeline(&self, name: &str, extra: serde_json::Value) -> Result<()> {
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

    pub fn pipelines(&self) -> Api<EventPipeline> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    pub async fn status(&self, name: &str) -> Result<EventPipelineStatus> {
        Ok(self.pipelines().get(name).await?.status.unwrap_or_default())
    }

    pub async fn job_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.jobs().list(&ListParams::default()).await?.items.iter().map(|j| j.name_any()).collect();
        names.sort();
        Ok(names)
    }

    /// Waits until the namespace has `count` Jobs and returns their names, sorted.
    pub async fn wait_for_jobs(&self, count: usize) -> Result<Vec<String>> {
        wait_until(&format!("{count} Jobs"), || async { Ok(self.job_names().await?.len() == count) }).await?;
        self.job_names().await
    }

    pub async fn event_reasons(&self) -> Result<Vec<String>> {
        Ok(self.events().await?.into_iter().filter_map(|e| e.reason).collect())
    }

    /// The Events of the namespace.
    pub async fn events(&self) -> Result<Vec<Event>> {
        let events: Api<Event> = Api::namespaced(self.admin.clone(), &self.namespace);
        Ok(events.list(&ListParams::default()).await?.items)
    }
}

impl World {
    /// A client of the operator's ServiceAccount that reaches the API server at `url` (a relay).
    pub async fn operator_client_at(&self, url: &str) -> Result<Client> {
        let env = KubeEnv::get().await?;
        let mut config = env.admin_config();
        config.cluster_url = url.parse()?;
        config.auth_info = kube::config::AuthInfo {
            token: Some(env.service_account_token(&self.namespace, "eventpipe-operator").await?.into()),
            ..Default::default()
        };
        config.default_namespace = self.namespace.clone();
        Ok(Client::try_from(config)?)
    }
}

/// A ClusterRole with the rules the chart grants a namespaced installation (the operator's, acting as
/// each pipeline, and leader election's), bound in `namespace` to ServiceAccount
/// eventpipe-operator of `operator_namespace`.
pub async fn bind_chart_rules(admin: &Client, namespace: &str, operator_namespace: &str) -> Result<()> {
    let rbac = eventpipe_testkit::kube_env::workspace_root().join("charts/eventpipe/files/rbac");
    // What a namespaced installation grants: it acts on S3 as each pipeline.
    let mut rules = Vec::new();
    for file in ["operator.yaml", "pipeline-identity.yaml", "leader-election.yaml"] {
        let file_rules: Vec<PolicyRule> = serde_yaml::from_str(&std::fs::read_to_string(rbac.join(file))?)?;
        rules.extend(file_rules);
    }
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
            namespace: Some(operator_namespace.into()),
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

/// The operator's options for a test: watching `namespaces`, its Lease in `lease_namespace`, its
/// HTTP server on a free port, pipelines of any namespace allowed to use the test S3 server.
pub fn operator_args(namespaces: &[&str], lease_namespace: &str) -> OperatorArgs {
    let endpoint = S3Server::get().expect("the test S3 server").endpoint();
    OperatorArgs {
        transformer_image: "registry.example/eventpipe-transformer:test".into(),
        allowed_images: Vec::new(),
        allowed_service_accounts: Vec::new(),
        job_defaults: Default::default(),
        s3_identity: None,
        sts_endpoint: None,
        pod_identity_cluster: None,
        s3_allowances: S3Allowances::parse(&json!({"*": {"endpoints": [endpoint]}}).to_string()).expect("allowances parse"),
        namespaces: namespaces.iter().map(|namespace| namespace.to_string()).collect(),
        listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        leader_election: false,
        lease_name: "eventpipe-operator".into(),
        lease_namespace: lease_namespace.into(),
        identity: Some("test-operator".into()),
        lease_duration_seconds: 15,
        max_concurrent_reconciles: 4,
    }
}

/// Runs the operator in this process as `client`; it stops when the returned sender is dropped.
pub fn spawn_operator(client: Client, args: OperatorArgs) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<ExitCode>>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown: Shutdown = async move {
        let _ = stopped.await;
    }
    .boxed()
    .shared();
    (stop, tokio::spawn(eventpipe::operator::serve_and_run(client, args, shutdown)))
}

/// Relays connections from 127.0.0.1:`port` to the test API server until aborted.
pub async fn relay_to_api_server(port: u16) -> Result<tokio::task::JoinHandle<()>> {
    let url = KubeEnv::get().await?.admin_config().cluster_url;
    let target = url.authority().context("the API server's address")?.to_string();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    Ok(tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

/// Waits up to 30 s for `check` to hold.
pub async fn wait_until<F, Fut>(what: &str, check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    wait_until_within(what, Duration::from_secs(30), check).await
}

/// Waits up to `timeout` for `check` to hold.
pub async fn wait_until_within<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GETs a path from the operator's HTTP server and returns the body of a 200 answer.
pub async fn http_get(port: u16, path: &str) -> Result<String> {
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

/// `year=YYYY/month=MM/day=DD` of `days_ago` days before today (UTC).
pub fn partition(days_ago: i64) -> String {
    let day = chrono::Utc::now().date_naive() - chrono::Duration::days(days_ago);
    day.format("year=%Y/month=%m/day=%d").to_string()
}

pub fn state_of(status: &EventPipelineStatus, partition: &str) -> Option<(PartitionState, u32)> {
    status.partitions.iter().find(|p| p.partition == partition).map(|p| (p.state, p.attempts))
}

pub fn condition(status: &EventPipelineStatus, kind: &str) -> Option<(String, String)> {
    status.conditions.iter().find(|c| c.type_ == kind).map(|c| (c.status.clone(), c.reason.clone()))
}

/// Runs the chart's Helm (installed by `scripts/helm.sh`) against the test control plane.
pub fn helm(args: &[&str]) -> Result<()> {
    helm_output(args).map(drop)
}

/// Runs Helm as [`helm`] does and returns what it printed.
pub fn helm_output(args: &[&str]) -> Result<String> {
    let root = eventpipe_testkit::kube_env::workspace_root();
    let binary = std::process::Command::new("bash").arg(root.join("scripts/helm.sh")).output()?;
    anyhow::ensure!(binary.status.success(), "scripts/helm.sh: {}", String::from_utf8_lossy(&binary.stderr));
    let helm = String::from_utf8(binary.stdout)?.trim().to_string();
    let kubeconfig = eventpipe_testkit::kube_env::KubeEnv::get_blocking()?.kubeconfig_path().to_path_buf();
    let output = std::process::Command::new(helm).args(args).arg("--kubeconfig").arg(kubeconfig).current_dir(&root).output()?;
    anyhow::ensure!(output.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?)
}
