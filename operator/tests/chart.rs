//! The rendered chart on the test control plane. The CRD: a release adopts the CRD an earlier
//! install applied from `crds/`, `helm upgrade` with a changed CRD serves the new field, and `helm
//! uninstall` keeps the CRD and the pipelines. RBAC: a release watching two namespaces works there
//! and nowhere else. Its own test binary, so its own control plane: the CRD it changes is no other
//! test's.

mod support;

use anyhow::{Context, Result};
use eventpipe::crd::EventPipeline;
use eventpipe_testkit::kube_env::{KubeEnv, workspace_root};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::Resource;
use serde_json::json;
use eventpipe::controller::allowances::S3Allowances;
use eventpipe::controller::identity::IdentityMode;
use eventpipe::operator::OperatorArgs;
use serde::Deserialize;
use support::{World, helm, helm_output, operator_args, spawn_operator, wait_until};

const CRD: &str = "eventpipelines.eventpipe.dev";

#[tokio::test]
async fn helm_upgrade_upgrades_the_crd_and_uninstall_keeps_it() -> Result<()> {
    let env = KubeEnv::get().await?;
    let admin = env.client()?;
    let namespace = env.namespace("chart").await?;
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());

    // The control plane applied crds/ as an install that predates the templated CRD did; the
    // README's two commands hand it to the release.
    let adopt = json!({"metadata": {
        "labels": {"app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"meta.helm.sh/release-name": "eventpipe", "meta.helm.sh/release-namespace": namespace},
    }});
    crds.patch(CRD, &PatchParams::default(), &Patch::Merge(&adopt)).await?;
    helm(&["install", "eventpipe", "charts/eventpipe", "--namespace", &namespace, "--set", "replicaCount=0"])?;

    let pipelines: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &namespace, &ApiResource::erase::<EventPipeline>(&()));
    let mut pipeline: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(workspace_root().join("examples/cluster/user-settings-localstack.yaml"))?)?;
    pipeline["spec"]["upgradeProbe"] = json!("kept");
    let apply = PatchParams::apply("test").force();
    let refused = pipelines.patch("user-settings", &apply, &Patch::Apply(&pipeline)).await.unwrap_err().to_string();
    assert!(refused.contains(".spec.upgradeProbe: field not declared in schema"), "{refused}");

    // The first upgrade takes the fields over from the field manager that applied crds/ (the
    // README's one-time `--force-conflicts`); later upgrades need nothing.
    let upgraded = chart_with_new_field()?;
    let upgraded = upgraded.path().to_str().context("UTF-8 path")?;
    helm(&["upgrade", "eventpipe", upgraded, "--namespace", &namespace, "--set", "replicaCount=0", "--force-conflicts"])?;
    wait_until("the upgraded CRD to serve spec.upgradeProbe", || async {
        let stored = pipelines.patch("user-settings", &apply, &Patch::Apply(&pipeline)).await?;
        Ok(stored.data["spec"]["upgradeProbe"] == "kept")
    })
    .await?;
    helm(&["upgrade", "eventpipe", "charts/eventpipe", "--namespace", &namespace, "--set", "replicaCount=0"])?;
    let schema = serde_json::to_value(crds.get(CRD).await?.spec.versions[0].schema.clone())?;
    assert!(
        schema["openAPIV3Schema"]["properties"]["spec"]["properties"].get("upgradeProbe").is_none(),
        "an upgrade without --force-conflicts changed the CRD back"
    );

    helm(&["uninstall", "eventpipe", "--namespace", &namespace])?;
    let crd = crds.get(CRD).await?;
    assert!(crd.meta().deletion_timestamp.is_none(), "the CRD is kept");
    assert!(pipelines.get("user-settings").await.is_ok(), "and so are the pipelines");
    Ok(())
}

/// A copy of the chart whose CRD declares one more optional field, `spec.upgradeProbe`.
fn chart_with_new_field() -> Result<tempfile::TempDir> {
    let copy = tempfile::tempdir()?;
    let status = std::process::Command::new("cp").arg("-r").arg(workspace_root().join("charts/eventpipe/.")).arg(copy.path()).status()?;
    anyhow::ensure!(status.success(), "copying the chart failed");
    let file = copy.path().join("files/crds/eventpipe.dev_eventpipelines.yaml");
    let mut crd: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(&file)?)?;
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    spec["upgradeProbe"] = json!({"type": "string", "description": "A field added by an upgrade."});
    std::fs::write(&file, serde_yaml::to_string(&crd)?)?;
    Ok(copy)
}

/// A release watching two namespaces: the operator, as the chart's ServiceAccount with only the
/// rendered Roles, reconciles pipelines in both and is refused everything in a third.
#[tokio::test]
async fn a_release_works_in_its_watched_namespaces_and_is_forbidden_elsewhere() -> Result<()> {
    let env = KubeEnv::get().await?;
    let (team_a, team_b, other) = (World::new("team-a").await?, World::new("team-b").await?, World::new("other").await?);
    let release = env.namespace("eventpipe-system").await?;
    // The CRD belongs to the other test's release here, as it would to a platform team's.
    let values = format!("watchNamespaces={{{},{}}},replicaCount=0,crds.enabled=false", team_a.namespace, team_b.namespace);
    helm(&["install", "eventpipe", "charts/eventpipe", "--namespace", &release, "--set", &values])?;
    let operator = env.service_account_client(&release, "eventpipe").await?;

    let (stop, running) = spawn_operator(operator.clone(), operator_args(&[&team_a.namespace, &team_b.namespace], &release));
    for world in [&team_a, &team_b] {
        world.apply_pipeline("settings", json!({})).await?;
        wait_until(&format!("a status in {}", world.namespace), || async {
            let status = world.status("settings").await?;
            Ok(support::condition(&status, "Ready").is_some_and(|(_, reason)| reason == "NoPartitions"))
        })
        .await?;
    }
    drop(stop);
    assert!(running.await?.is_ok());

    let forbidden = |result: kube::Result<_>| matches!(result, Err(kube::Error::Api(status)) if status.code == 403);
    let elsewhere = &other.namespace;
    assert!(forbidden(Api::<EventPipeline>::namespaced(operator.clone(), elsewhere).list(&Default::default()).await.map(drop)));
    assert!(forbidden(Api::<EventPipeline>::all(operator.clone()).list(&Default::default()).await.map(drop)));
    assert!(forbidden(Api::<Job>::namespaced(operator.clone(), elsewhere).list(&Default::default()).await.map(drop)));
    assert!(forbidden(Api::<Secret>::namespaced(operator.clone(), elsewhere).get("s3-credentials").await.map(drop)));
    let (_stop, refused) = spawn_operator(operator, operator_args(&[elsewhere], &release));
    let error = format!("{:#}", refused.await?.expect_err("an operator told to watch the third namespace does not start"));
    assert!(error.contains(&format!("in namespace {elsewhere}")) && error.contains("forbidden"), "{error}");
    helm(&["uninstall", "eventpipe", "--namespace", &release])?;
    Ok(())
}

/// The operator accepts the arguments the chart renders with every value set: the chart and the
/// operator's flags agree, `jobDefaults` included.
#[test]
fn the_operator_parses_the_arguments_the_chart_renders() -> Result<()> {
    use clap::{Args, FromArgMatches};
    let rendered = helm_output(&["template", "eventpipe", "charts/eventpipe", "-f", "tests/chart/values-full.yaml"])?;
    let deployment = serde_yaml::Deserializer::from_str(&rendered)
        .map(serde_json::Value::deserialize)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|object| object["kind"] == "Deployment")
        .context("a Deployment")?;
    let flags: Vec<String> = serde_json::from_value(deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone())?;
    assert_eq!(flags[0], "operator");
    // `--log-format` is the binary's own flag, before any subcommand's.
    let operator_flags = flags.iter().filter(|flag| !flag.starts_with("--log-format="));
    let command = OperatorArgs::augment_args(clap::Command::new("operator"));
    let args = OperatorArgs::from_arg_matches(&command.try_get_matches_from(operator_flags)?)?;
    assert_eq!(args.namespaces, ["data"]);
    assert_eq!(args.allowed_images, ["registry.example.com/data/"]);
    assert_eq!(args.allowed_service_accounts, ["eventpipe-jobs"]);
    let defaults = args.job_defaults.defaults;
    assert_eq!((defaults.priority_class_name.as_deref(), defaults.service_account_name.as_deref()), (Some("batch-low"), Some("eventpipe-jobs")));
    assert_eq!(defaults.container_resources().limits.context("limits")?["memory"].0, "4Gi");
    let enforced = args.job_defaults.enforced;
    assert_eq!((enforced.node_selector["pool"].as_str(), enforced.tolerations.len()), ("batch", 1));
    assert_eq!(enforced.pipelines_may_add.node_selector_keys.as_deref(), Some(&["topology.kubernetes.io/zone".to_string()][..]));
    assert_eq!(args.s3_identity, Some(IdentityMode::Pipeline));
    assert_eq!((args.sts_endpoint.as_deref(), args.pod_identity_cluster.as_deref()), (Some("https://sts.eu-west-1.amazonaws.com"), Some("data-platform")));
    assert_eq!(args.s3_allowances, S3Allowances::parse(r#"{"data": {"sources": ["s3://data-raw/*"], "sinks": ["s3://data-lake/*"], "rejected": ["s3://data-lake/*"]}}"#).unwrap());
    Ok(())
}
