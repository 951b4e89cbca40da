//! Proof that the operator's tests talk to a real kube-apiserver: the CRD from `crds/` is accepted
//! and served, custom resources go through schema validation, the status subresource and
//! server-side apply behave as in a cluster, watches deliver events, and RBAC is enforced for
//! ServiceAccount tokens.
//!
//! Needs `scripts/testenv.sh install` (see `eventpipe_testkit::kube_env`).
//! The custom resource is handled as a `DynamicObject` so that these tests do not depend on the
//! typed `EventPipeline` struct.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use eventpipe_testkit::kube_env::KubeEnv;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client,
    api::{
        ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
        WatchParams,
    },
};
use serde_json::{Value, json};

const CRD_NAME: &str = "eventpipelines.eventpipe.dev";

fn pipeline_resource() -> ApiResource {
    ApiResource {
        group: "eventpipe.dev".into(),
        version: "v1alpha1".into(),
        api_version: "eventpipe.dev/v1alpha1".into(),
        kind: "EventPipeline".into(),
        plural: "eventpipelines".into(),
    }
}

/// A spec the CRD accepts. Keep it in step with the CRD's required fields.
fn valid_spec() -> Value {
    json!({
        "source": { "url": "s3://raw/user-events/" },
        "sink": { "url": "s3://curated/user-events/" },
        "badRecords": { "policy": "skip" },
    })
}

fn pipeline(name: &str, spec: Value, labels: &[(&str, &str)]) -> DynamicObject {
    let mut object = DynamicObject::new(name, &pipeline_resource()).data(json!({ "spec": spec }));
    object.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    object
}

/// The shared control plane, an admin client and a fresh namespace with its pipeline API.
async fn setup(prefix: &str) -> Result<(&'static KubeEnv, Client, String, Api<DynamicObject>)> {
    let env = KubeEnv::get().await?;
    let client = env.client()?;
    let ns = env.namespace(prefix).await?;
    let api = Api::namespaced_with(client.clone(), &ns, &pipeline_resource());
    Ok((env, client, ns, api))
}

fn api_error_code(result: &kube::Result<impl std::fmt::Debug>) -> Option<u16> {
    match result {
        Err(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn crd_from_crds_dir_is_structural_and_established() -> Result<()> {
    let env = KubeEnv::get().await?;
    assert!(
        env.crds().iter().any(|n| n == CRD_NAME),
        "installed CRDs: {:?}",
        env.crds()
    );
    let crd = Api::<CustomResourceDefinition>::all(env.client()?)
        .get(CRD_NAME)
        .await?;
    let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
    let is_true = |t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    assert!(is_true("Established"), "conditions: {conditions:?}");
    assert!(is_true("NamesAccepted"), "conditions: {conditions:?}");
    assert!(
        !is_true("NonStructuralSchema"),
        "the apiserver reports a non-structural schema: {conditions:?}"
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    assert!(
        crd.spec
            .names
            .short_names
            .unwrap_or_default()
            .contains(&"evp".to_string())
    );
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == "v1alpha1")
        .context("no v1alpha1")?;
    assert!(version.served && version.storage);
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    Ok(())
}

#[tokio::test]
async fn create_and_list_with_label_selector() -> Result<()> {
    let (_, _, _, api) = setup("list").await?;
    let pp = PostParams::default();
    api.create(&pp, &pipeline("alpha", valid_spec(), &[("team", "a")]))
        .await?;
    api.create(&pp, &pipeline("beta", valid_spec(), &[("team", "b")]))
        .await?;
    api.create(&pp, &pipeline("gamma", valid_spec(), &[("team", "a")]))
        .await?;

    let team_a = api.list(&ListParams::default().labels("team=a")).await?;
    let mut names: Vec<_> = team_a
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["alpha", "gamma"]);
    assert_eq!(api.list(&ListParams::default()).await?.items.len(), 3);
    assert!(
        api.list(&ListParams::default().labels("team=c"))
            .await?
            .items
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn watch_delivers_changes() -> Result<()> {
    let (_, _, _, api) = setup("watch").await?;
    let created = api
        .create(
            &PostParams::default(),
            &pipeline("watched", valid_spec(), &[]),
        )
        .await?;
    let rv = created
        .metadata
        .resource_version
        .clone()
        .context("no resourceVersion")?;

    let mut stream = api
        .watch(
            &WatchParams::default()
                .fields("metadata.name=watched")
                .timeout(60),
            &rv,
        )
        .await?
        .boxed();
    let patch = json!({ "metadata": { "labels": { "changed": "yes" } } });
    api.patch("watched", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;

    let event = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
        .await
        .context("no watch event within 30 s")??
        .context("the watch ended without an event")?;
    match event {
        WatchEvent::Modified(object) => {
            assert_eq!(object.metadata.name.as_deref(), Some("watched"));
            assert_eq!(
                object
                    .metadata
                    .labels
                    .unwrap_or_default()
                    .get("changed")
                    .map(String::as_str),
                Some("yes")
            );
        }
        other => bail!("expected a Modified event, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn status_is_server_side_applied_without_touching_spec() -> Result<()> {
    let (_, _, _, api) = setup("status").await?;
    let created = api
        .create(
            &PostParams::default(),
            &pipeline("with-status", valid_spec(), &[]),
        )
        .await?;
    let generation = created.metadata.generation;
    // As stored, i.e. with the schema's defaults filled in.
    let spec_before = created.data["spec"].clone();

    // The status subresource ignores everything but status, even a spec in the same request.
    let status_patch = json!({
        "apiVersion": "eventpipe.dev/v1alpha1",
        "kind": "EventPipeline",
        "metadata": { "name": "with-status" },
        "spec": { "source": { "url": "s3://elsewhere/" }, "sink": { "url": "s3://elsewhere/" } },
        "status": {
            "observedGeneration": generation,
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "Idle",
                "message": "nothing to do",
                "lastTransitionTime": "2026-11-24T00:00:00Z",
            }],
        },
    });
    let params = PatchParams::apply("eventpipe-test-status").force();
    api.patch_status("with-status", &params, &Patch::Apply(&status_patch))
        .await?;

    let got = api.get("with-status").await?;
    assert_eq!(
        got.data["spec"], spec_before,
        "spec changed through /status"
    );
    assert_eq!(
        got.data["spec"]["source"]["url"],
        valid_spec()["source"]["url"]
    );
    assert_eq!(got.data["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(got.data["status"]["observedGeneration"], json!(generation));
    assert_eq!(
        got.metadata.generation, generation,
        "a status write bumped the generation"
    );
    let managers: Vec<_> = got
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["eventpipe-test-status"]);
    Ok(())
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_422() -> Result<()> {
    let (_, _, _, api) = setup("invalid").await?;
    let pp = PostParams::default();

    let mut bad_enum = valid_spec();
    bad_enum["badRecords"]["policy"] = json!("explode");
    let result = api.create(&pp, &pipeline("bad-enum", bad_enum, &[])).await;
    assert_eq!(api_error_code(&result), Some(422), "{result:?}");
    let Err(kube::Error::Api(status)) = result else {
        unreachable!()
    };
    assert_eq!(status.reason, "Invalid");
    assert!(
        status.message.contains("spec.badRecords.policy"),
        "{}",
        status.message
    );
    assert!(status.message.contains("explode"), "{}", status.message);

    let mut no_sink = valid_spec();
    no_sink
        .as_object_mut()
        .context("spec is an object")?
        .remove("sink");
    let result = api.create(&pp, &pipeline("no-sink", no_sink, &[])).await;
    assert_eq!(api_error_code(&result), Some(422), "{result:?}");
    let Err(kube::Error::Api(status)) = result else {
        unreachable!()
    };
    assert!(status.message.contains("spec.sink"), "{}", status.message);
    assert!(
        status.message.contains("Required value"),
        "{}",
        status.message
    );

    assert!(api.list(&ListParams::default()).await?.items.is_empty());
    Ok(())
}

#[tokio::test]
async fn service_account_without_role_binding_is_forbidden() -> Result<()> {
    let (env, client, ns, _) = setup("rbac").await?;
    let as_sa = env.service_account_client(&ns, "reader").await?;
    let sa_api: Api<DynamicObject> = Api::namespaced_with(as_sa, &ns, &pipeline_resource());

    let result = sa_api.list(&ListParams::default()).await;
    assert_eq!(api_error_code(&result), Some(403), "{result:?}");
    let Err(kube::Error::Api(status)) = result else {
        unreachable!()
    };
    assert_eq!(status.reason, "Forbidden");
    assert!(
        status
            .message
            .contains(&format!("system:serviceaccount:{ns}:reader")),
        "{}",
        status.message
    );

    // Positive control: the same token works once RBAC allows it.
    let role = Role {
        metadata: ObjectMeta {
            name: Some("read-pipelines".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["eventpipe.dev".into()]),
            resources: Some(vec!["eventpipelines".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("read-pipelines".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "read-pipelines".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client, &ns)
        .create(&PostParams::default(), &binding)
        .await?;
    // The authorizer's cache catches up within milliseconds; allow a few seconds.
    let mut last = None;
    for _ in 0..50 {
        match sa_api.list(&ListParams::default()).await {
            Ok(list) => {
                assert!(list.items.is_empty());
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("still not allowed after the RoleBinding: {last:?}")
}
