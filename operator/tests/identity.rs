//! Several teams on one cluster, against a real identity boundary: SeaweedFS enforcing IAM
//! policies per identity and serving STS `AssumeRoleWithWebIdentity`, trusting the test
//! kube-apiserver's ServiceAccount tokens (signature, issuer, audience) as AWS IAM trusts an EKS
//! cluster's OIDC issuer. Each team namespace has a Job ServiceAccount annotated with its own role,
//! whose policy reaches only that team's buckets. The operator's own static keys reach nothing.
//! Jobs run through the pod runner (the kubelet's stand-in), with the projected token the
//! operator asks for.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use eventpipe::controller::allowances::S3Allowances;
use eventpipe::controller::identity::{IdentityMode, JobWebIdentity};
use eventpipe::controller::job;
use eventpipe::controller::plan::Launch;
use eventpipe::controller::policy::JobPolicy;
use eventpipe::crd::{EventPipeline, PartitionState};
use eventpipe::operator::OperatorArgs;
use eventpipe_testkit::kube_env::KubeEnv;
use eventpipe_testkit::pod_runner::{Image, PodRunner, RunnerConfig};
use eventpipe_testkit::seaweedfs::SeaweedFs;
use eventpipe_transformer::layout::PartitionKey;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{condition, merge, wait_until, wait_until_within};
use tokio::sync::OnceCell;

const ADMIN: (&str, &str) = ("admin-key", "admin-secret");
/// The operator's own keys: an identity with no permission at all.
const OPERATOR_OWN: (&str, &str) = ("operator-key", "operator-secret");
const JOB_ACCOUNT: &str = "eventpipe-jobs";
const TRANSFORMER_IMAGE: &str = "registry.example/eventpipe-transformer:test";
const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// Three team namespaces (`a` and `b` for the end-to-end test, `c` for the refusals, so that the
/// two operators never share a namespace), the operator's namespace, and the S3 server.
struct Teams {
    a: String,
    b: String,
    c: String,
    system: String,
    s3: SeaweedFs,
}

static TEAMS: OnceCell<Teams> = OnceCell::const_new();

fn role_arn(namespace: &str) -> String {
    format!("arn:aws:iam::111122223333:role/{namespace}")
}

impl Teams {
    async fn get() -> Result<&'static Teams> {
        TEAMS.get_or_try_init(Self::set_up).await
    }

    async fn set_up() -> Result<Teams> {
        let env = KubeEnv::get().await?;
        let admin = env.client()?;
        allow_anonymous_issuer_discovery(&admin).await?;
        let (a, b, c, system) =
            (env.namespace("team-a").await?, env.namespace("team-b").await?, env.namespace("team-c").await?, env.namespace("eventpipe-system").await?);
        for namespace in [&a, &b, &c] {
            let account = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(JOB_ACCOUNT.into()),
                    annotations: Some(BTreeMap::from([("eks.amazonaws.com/role-arn".to_string(), role_arn(namespace))])),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            };
            Api::<ServiceAccount>::namespaced(admin.clone(), namespace).create(&PostParams::default(), &account).await?;
            support::bind_chart_rules(&admin, namespace, &system).await?;
        }
        let issuer = format!("https://{}", env.admin_config().cluster_url.authority().context("the API server's address")?);
        let identities = json!({"identities": [
            {"name": "admin", "credentials": [{"accessKey": ADMIN.0, "secretKey": ADMIN.1}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "operator", "credentials": [{"accessKey": OPERATOR_OWN.0, "secretKey": OPERATOR_OWN.1}], "actions": []},
        ]});
        let teams = [&a, &b, &c];
        let iam = json!({
            "sts": {"tokenDuration": "1h", "maxSessionLength": "12h", "issuer": "seaweedfs-sts",
                    "signingKey": "ZXZlbnRwaXBlLXRlc3Qtc3RzLXNpZ25pbmcta2V5LTAxMjM="},
            "providers": [{"name": "kube", "type": "oidc", "enabled": true, "config": {
                "issuer": issuer, "clientIds": ["sts.amazonaws.com"], "jwksUri": format!("{issuer}/openid/v1/jwks"),
                "tlsCaCert": env.ca_cert_path()?.display().to_string(),
            }}],
            "policy": {"defaultEffect": "Deny", "storeType": "memory"},
            "roles": teams.iter().map(|namespace| json!({
                "roleName": namespace, "roleArn": role_arn(namespace), "attachedPolicies": [format!("{namespace}-buckets")],
                "trustPolicy": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"Federated": "kube"}, "Action": ["sts:AssumeRoleWithWebIdentity"],
                    "Condition": {"StringEquals": {"oidc:sub": format!("system:serviceaccount:{namespace}:{JOB_ACCOUNT}")}},
                }]},
            })).collect::<Vec<_>>(),
            "policies": teams.iter().map(|namespace| json!({
                "name": format!("{namespace}-buckets"),
                "document": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"],
                    "Resource": [format!("arn:aws:s3:::{namespace}-*"), format!("arn:aws:s3:::{namespace}-*/*")]}]},
            })).collect::<Vec<_>>(),
        });
        let s3 = SeaweedFs::start(&identities, &iam)?;
        let admin_s3 = s3.client(ADMIN.0, ADMIN.1);
        for namespace in teams {
            for bucket in ["raw", "lake"] {
                admin_s3.create_bucket().bucket(format!("{namespace}-{bucket}")).send().await.with_context(|| format!("creating {namespace}-{bucket}"))?;
            }
            let mut body = support::CSV_HEADER.to_string();
            for i in 0..3 {
                body.push_str(&format!("{i},theme,{namespace},{}\n", 1_764_000_000 + i));
            }
            let key = format!("events/{}/part-0.csv", support::partition(1));
            admin_s3.put_object().bucket(format!("{namespace}-raw")).key(key).body(body.into_bytes().into()).send().await?;
        }
        // SAFETY: set while the first test sets up, before any operator of this binary reads AWS
        // settings; Rust's own environment access is synchronised. The operator's own
        // credentials: an identity the S3 server grants nothing.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", OPERATOR_OWN.0);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", OPERATOR_OWN.1);
            std::env::set_var("AWS_REGION", "us-east-1");
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
        Ok(Teams { a, b, c, system, s3 })
    }

    /// The operator for `namespaces`, acting on S3 as each pipeline, STS at the S3 server.
    async fn start_operator(&self, namespaces: &[&str], allowances: Value) -> Result<tokio::sync::oneshot::Sender<()>> {
        let env = KubeEnv::get().await?;
        let client = env.service_account_client(&self.system, "eventpipe-operator").await?;
        // The operator stops on a refusal at start-up: wait until the API server's authorizer
        // has taken up the Role bindings made a moment ago.
        for namespace in namespaces {
            let pipelines: Api<EventPipeline> = Api::namespaced(client.clone(), namespace);
            wait_until(&format!("the operator's rules to take effect in {namespace}"), || async {
                Ok(pipelines.list(&ListParams::default().limit(1)).await.is_ok())
            })
            .await?;
        }
        let args = OperatorArgs {
            s3_identity: Some(IdentityMode::Pipeline),
            sts_endpoint: Some(self.s3.endpoint().to_string()),
            s3_allowances: S3Allowances::parse(&allowances.to_string()).map_err(anyhow::Error::msg)?,
            allowed_service_accounts: vec![JOB_ACCOUNT.into()],
            ..support::operator_args(namespaces, &self.system)
        };
        let (stop, _task) = support::spawn_operator(client, args);
        Ok(stop)
    }

    /// Applies a pipeline reading `source_bucket` into `sink_bucket`, running as the Job
    /// ServiceAccount; `extra` is merged into its spec.
    async fn apply(&self, namespace: &str, name: &str, source_bucket: &str, sink_bucket: &str, extra: Value) -> Result<()> {
        let mut spec = json!({
            "source": {"url": format!("s3://{source_bucket}/events/"), "schema": [
                {"name": "id", "type": "int64", "nullable": false}, {"name": "name", "type": "string"},
                {"name": "value", "type": "string"}, {"name": "timestamp", "type": "timestamp", "unit": "seconds"}]},
            "sink": {"url": format!("s3://{sink_bucket}/{name}/")},
            "s3": {"endpoint": self.s3.endpoint(), "forcePathStyle": true, "region": "us-east-1"},
            "schedule": {"pollIntervalSeconds": 1, "gracePeriodSeconds": 0, "lookbackDays": 3},
            "execution": {"serviceAccountName": JOB_ACCOUNT, "maxConcurrentJobs": 1, "maxAttempts": 1},
        });
        merge(&mut spec, extra);
        let pipeline = json!({"apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline", "metadata": {"name": name}, "spec": spec});
        pipelines(namespace).await?.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&pipeline)).await?;
        Ok(())
    }
}

async fn pipelines(namespace: &str) -> Result<Api<EventPipeline>> {
    Ok(Api::namespaced(KubeEnv::get().await?.client()?, namespace))
}

async fn status(namespace: &str, name: &str) -> Result<eventpipe::crd::EventPipelineStatus> {
    Ok(pipelines(namespace).await?.get_status(name).await?.status.unwrap_or_default())
}

fn degraded_message(status: &eventpipe::crd::EventPipelineStatus) -> String {
    status.conditions.iter().find(|c| c.type_ == "Degraded").map(|c| c.message.clone()).unwrap_or_default()
}

/// Lets the S3 server read the API server's token signing keys without credentials, as an
/// OIDC provider's keys are public (EKS serves them on the open internet).
async fn allow_anonymous_issuer_discovery(admin: &Client) -> Result<()> {
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta { name: Some("eventpipe-test-issuer-discovery".into()), ..ObjectMeta::default() },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "system:service-account-issuer-discovery".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Group".into(),
            name: "system:unauthenticated".into(),
            ..Subject::default()
        }]),
    };
    match Api::<ClusterRoleBinding>::all(admin.clone()).create(&PostParams::default(), &binding).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The partition of [`support::partition`]`(1)`.
fn yesterday() -> PartitionKey {
    use chrono::Datelike;
    let day = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
    PartitionKey { year: day.year() as u16, month: day.month() as u8, day: day.day() as u8, hour: None }
}

fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>").to_path_buf()
}

/// Each team's pipeline commits with its own role while the operator's own keys reach nothing;
/// team-a's pipeline on team-b's bucket gets `AccessDenied` from its own identity, and a Job run
/// as team-a cannot read team-b's data either.
#[tokio::test]
async fn each_team_reaches_its_own_data_as_itself() -> Result<()> {
    let teams = Teams::get().await?;
    let env = KubeEnv::get().await?;
    let (a, b) = (teams.a.as_str(), teams.b.as_str());
    let transformer = Image { entrypoint: vec![binary_dir().join("eventpipe-transformer").display().to_string()], path: vec![binary_dir()] };
    let _runner = PodRunner::start(
        env,
        RunnerConfig {
            node_name: format!("node-{a}"),
            namespaces: vec![a.to_string(), b.to_string()],
            images: HashMap::from([(TRANSFORMER_IMAGE.to_string(), transformer)]),
            forward_ports: vec![teams.s3.port()],
        },
    )
    .await?;
    // No location allowance: the identity boundary alone decides.
    let _stop = teams.start_operator(&[a, b], json!({"*": {"endpoints": [teams.s3.endpoint()]}})).await?;
    for namespace in [a, b] {
        teams.apply(namespace, "settings", &format!("{namespace}-raw"), &format!("{namespace}-lake"), json!({})).await?;
    }
    teams.apply(a, "foreign", &format!("{b}-raw"), &format!("{a}-lake"), json!({})).await?;

    let partition = support::partition(1);
    for namespace in [a, b] {
        wait_until_within(&format!("{namespace}'s partition to be committed"), JOB_TIMEOUT, || async {
            Ok(support::state_of(&status(namespace, "settings").await?, &partition).map(|(state, _)| state) == Some(PartitionState::Succeeded))
        })
        .await?;
        let written = teams.s3.client(ADMIN.0, ADMIN.1).list_objects_v2().bucket(format!("{namespace}-lake")).prefix(format!("settings/{partition}/")).send().await?;
        assert!(written.contents().iter().any(|o| o.key().unwrap_or_default().ends_with(".parquet")), "{namespace}: {written:?}");
    }

    wait_until(&format!("{a}/foreign to be refused by the S3 server"), || async {
        Ok(condition(&status(a, "foreign").await?, "Degraded") == Some(("True".into(), "SourceUnavailable".into())))
    })
    .await?;
    let message = degraded_message(&status(a, "foreign").await?);
    assert!(message.contains("AccessDenied"), "{message}");
    assert!(!message.contains("<"), "the endpoint's response body stays out of the status: {message}");
    assert!(status(a, "foreign").await?.partitions.is_empty(), "nothing of team-b's shows in team-a's status");

    // A Job as the operator would launch it for team-a, on team-b's data, with team-a's role.
    let foreign = pipelines(a).await?.get("foreign").await?;
    let launch = Launch {
        job: "foreign-direct".into(),
        partition: yesterday(),
        fingerprint: "unknown".into(),
        spec_hash: "unknown".into(),
        attempt: 1,
        launch: 1,
        force: false,
        compact: false,
        settled_before: None,
    };
    let identity = JobWebIdentity { role_arn: role_arn(a), sts_endpoint: Some(teams.s3.endpoint().to_string()), audience: "sts.amazonaws.com" };
    let policy = JobPolicy { image: TRANSFORMER_IMAGE.into(), ..JobPolicy::default() };
    let mut direct = job::build(&foreign, &launch, &policy, Some(&identity));
    // Not the pipeline's: the operator leaves it alone.
    direct.metadata.owner_references = None;
    direct.metadata.labels.as_mut().map(|labels| labels.remove(job::PIPELINE_UID_LABEL));
    let jobs: Api<Job> = Api::namespaced(env.client()?, a);
    jobs.create(&PostParams::default(), &direct).await?;
    wait_until_within("the direct Job to fail", JOB_TIMEOUT, || async {
        Ok(jobs.get("foreign-direct").await?.status.and_then(|s| s.failed).unwrap_or(0) > 0)
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(env.client()?, a);
    let pod = pods.list(&ListParams::default().labels("job-name=foreign-direct")).await?.items.into_iter().next().context("the Job's pod")?;
    let terminated = pod.status.and_then(|s| s.container_statuses).and_then(|c| c.into_iter().next()).and_then(|c| c.state).and_then(|s| s.terminated);
    let said = terminated.and_then(|t| t.message).unwrap_or_default();
    assert!(said.contains("AccessDenied") || said.contains("403"), "the Job's termination message: {said}");

    // The operator's own keys reach nothing, and it never used them.
    let requests = teams.s3.requests()?;
    assert!(!requests.iter().any(|line| line.contains("\"operator\"")), "the operator used its own keys: {requests:?}");
    let own = teams.s3.client(OPERATOR_OWN.0, OPERATOR_OWN.1).list_objects_v2().bucket(format!("{a}-raw")).send().await;
    let denied = own.expect_err("the operator's own keys are denied");
    assert_eq!(denied.raw_response().map(|r| r.status().as_u16()), Some(403), "{denied:?}");
    Ok(())
}

/// A pipeline whose endpoint, location or ServiceAccount its namespace may not use is refused
/// before any request: the S3 server logs none for it and a decoy endpoint sees no connection,
/// while an allowed pipeline next to them launches.
#[tokio::test]
async fn pipelines_outside_their_namespaces_allowances_send_no_request() -> Result<()> {
    let teams = Teams::get().await?;
    let c = teams.c.as_str();
    let decoy = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let decoy_url = format!("http://{}", decoy.local_addr()?);
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        while decoy.accept().await.is_ok() {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    let allowances = json!({c: {
        "sources": [format!("s3://{c}-raw/*")], "sinks": [format!("s3://{c}-lake/*")], "endpoints": [teams.s3.endpoint()],
    }});
    let _stop = teams.start_operator(&[c], allowances).await?;
    let (raw, lake) = (format!("{c}-raw"), format!("{c}-lake"));
    let refused = [
        ("decoy-endpoint", raw.clone(), json!({"s3": {"endpoint": decoy_url}}), "endpoints"),
        ("archive", format!("{c}-archive"), json!({}), "sources"),
        ("rejected-elsewhere", raw.clone(), json!({"badRecords": {"policy": "quarantine", "url": format!("s3://{c}-quarantine/rows/")}}), "rejected"),
        ("other-account", format!("{c}-other"), json!({"execution": {"serviceAccountName": "default"}}), "allowedServiceAccounts"),
    ];
    for (name, source, extra, _) in &refused {
        teams.apply(c, name, source, &lake, extra.clone()).await?;
    }
    teams.apply(c, "allowed", &raw, &lake, json!({})).await?;
    for (name, _, _, chart_value) in &refused {
        wait_until(&format!("{name} to be refused"), || async {
            Ok(condition(&status(c, name).await?, "Degraded") == Some(("True".into(), "InvalidSpec".into())))
        })
        .await?;
        let message = degraded_message(&status(c, name).await?);
        assert!(message.contains(chart_value), "{name}: {message}");
    }
    let jobs: Api<Job> = Api::namespaced(KubeEnv::get().await?.client()?, c);
    wait_until("the allowed pipeline to launch", || async {
        Ok(jobs.list(&ListParams::default().labels("eventpipe.dev/pipeline=allowed")).await?.items.iter().any(|j| j.name_any().starts_with("allowed-")))
    })
    .await?;
    assert_eq!(connections.load(Ordering::Relaxed), 0, "the decoy endpoint was contacted");
    let requests = teams.s3.requests()?;
    for bucket in [format!("{c}-archive"), format!("{c}-quarantine"), format!("{c}-other")] {
        assert!(!requests.iter().any(|line| line.contains(&format!("\"/{bucket}"))), "a request for {bucket}: {requests:?}");
    }
    assert!(requests.iter().any(|line| line.contains(&format!("\"/{raw}"))), "the allowed pipeline listed its source: {requests:?}");
    Ok(())
}
