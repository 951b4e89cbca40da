//! The observe step: checks the spec, lists the source's partitions inside the schedule's window
//! and reads the pipeline's Jobs, with the reports of the finished ones. Reads only.

use std::collections::HashMap;
use std::sync::Mutex;

use eventpipe_transformer::discovery;
use eventpipe_transformer::fingerprint::fingerprint;
use eventpipe_transformer::storage::{Opener, Store};
use eventpipe_transformer::validate::{self, CheckedPipeline};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::crd::{EventPipeline, EventPipelineStatus};

use super::job::{self, CONTAINER, JOB_LABEL, PIPELINE_UID_LABEL};
use super::plan::{ObservedJob, ObservedPartition, needs_report};
use super::window::{MAX_PARTITIONS, Window};

/// Why a pipeline cannot be observed; reported on its conditions, not as a reconcile error.
#[derive(Clone, Debug, PartialEq)]
pub enum Blocked {
    /// The spec is unusable as written.
    InvalidSpec(String),
    /// The source cannot be listed (bucket, endpoint or credentials).
    SourceUnavailable(String),
}

/// Results that stay valid while a pipeline's generation does not change: the spec check, and the
/// opened source (its HTTP client and credentials are reused across polls).
#[derive(Default)]
pub struct Caches {
    checks: Mutex<HashMap<String, (Option<i64>, Result<CheckedPipeline, String>)>>,
    sources: Mutex<HashMap<String, (String, Store)>>,
}

/// Checks the spec as the transformer will read it, planning the SQL against the declared columns.
pub async fn check_spec(caches: &Caches, pipeline: &EventPipeline) -> Result<CheckedPipeline, Blocked> {
    let uid = pipeline.uid().unwrap_or_default();
    let generation = pipeline.metadata.generation;
    if let Some((checked_generation, result)) = caches.checks.lock().expect("not poisoned").get(&uid)
        && *checked_generation == generation
    {
        return result.clone().map_err(Blocked::InvalidSpec);
    }
    let spec = &pipeline.spec;
    let result = async {
        let checked = validate::check(&spec.pipeline)?;
        validate::check_sql(&spec.pipeline, &checked.layout).await?;
        Ok::<_, eventpipe_transformer::error::Error>(checked)
    }
    .await
    .map_err(|e| e.to_string())
    .and_then(|checked| {
        Window::of(&spec.schedule, Timestamp::now())?;
        if !matches!(checked.source, eventpipe_transformer::storage::Location::S3 { .. }) {
            return Err(format!("source.url must be an s3:// URL in a cluster, not {}", spec.pipeline.source.url));
        }
        Ok(checked)
    });
    caches.checks.lock().expect("not poisoned").insert(uid, (generation, result.clone()));
    result.map_err(Blocked::InvalidSpec)
}

/// Lists the partitions in the schedule's window, the newest [`MAX_PARTITIONS`] of them, oldest
/// first.
pub async fn partitions(
    client: &Client,
    caches: &Caches,
    pipeline: &EventPipeline,
    checked: &CheckedPipeline,
    now: Timestamp,
) -> Result<Vec<ObservedPartition>, Blocked> {
    let source = open_source(client, caches, pipeline, checked).await?;
    let window = Window::of(&pipeline.spec.schedule, now).map_err(Blocked::InvalidSpec)?;
    let prefixes = window.listing_prefixes(&checked.layout);
    let found = discovery::discover_below(&source, &checked.layout, &prefixes)
        .await
        .map_err(|e| Blocked::SourceUnavailable(format!("listing {}: {e}", checked.source.url())))?;
    let mut partitions: Vec<ObservedPartition> = found
        .into_iter()
        .filter(|(key, _)| window.contains(key))
        .map(|(key, found)| ObservedPartition {
            key,
            fingerprint: fingerprint(&found.inputs),
            inputs: found.inputs,
            last_modified: Timestamp::from_millisecond(found.last_modified.timestamp_millis()).unwrap_or(now),
        })
        .collect();
    let excess = partitions.len().saturating_sub(MAX_PARTITIONS);
    partitions.drain(..excess);
    Ok(partitions)
}

/// The source store, opened with the pipeline's credentials Secret or the operator's own identity.
/// Reopened when the generation or the Secret changes.
async fn open_source(
    client: &Client,
    caches: &Caches,
    pipeline: &EventPipeline,
    checked: &CheckedPipeline,
) -> Result<Store, Blocked> {
    let s3 = pipeline.spec.pipeline.s3.as_ref();
    let secret = match s3.and_then(|s3| s3.credentials_secret_ref.as_ref()) {
        Some(reference) => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &pipeline.namespace().unwrap_or_default());
            let secret = secrets.get(&reference.name).await.map_err(|e| {
                Blocked::SourceUnavailable(format!("reading Secret {} (s3.credentialsSecretRef): {e}", reference.name))
            })?;
            Some(secret)
        }
        None => None,
    };
    let version = format!(
        "{:?}/{:?}",
        pipeline.metadata.generation,
        secret.as_ref().and_then(|s| s.metadata.resource_version.clone())
    );
    let uid = pipeline.uid().unwrap_or_default();
    if let Some((cached_version, store)) = caches.sources.lock().expect("not poisoned").get(&uid)
        && *cached_version == version
    {
        return Ok(store.clone());
    }
    let mut opener = Opener::new(s3);
    if let Some(secret) = &secret {
        opener = opener.with_credentials(credentials_from(secret)?);
    }
    let store = opener
        .open(&checked.source)
        .await
        .map_err(|e| Blocked::SourceUnavailable(format!("opening {}: {e}", checked.source.url())))?;
    caches.sources.lock().expect("not poisoned").insert(uid, (version, store.clone()));
    Ok(store)
}

/// Static AWS credentials from a Secret's `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
/// optional `AWS_SESSION_TOKEN`.
fn credentials_from(secret: &Secret) -> Result<aws_credential_types::Credentials, Blocked> {
    let data = secret.data.clone().unwrap_or_default();
    let value = |key: &str| data.get(key).map(|bytes| String::from_utf8_lossy(&bytes.0).trim().to_string());
    let required = |key: &str| {
        value(key).filter(|v| !v.is_empty()).ok_or_else(|| {
            Blocked::InvalidSpec(format!("Secret {} (s3.credentialsSecretRef) has no key {key}", secret.name_any()))
        })
    };
    Ok(aws_credential_types::Credentials::new(
        required("AWS_ACCESS_KEY_ID")?,
        required("AWS_SECRET_ACCESS_KEY")?,
        value("AWS_SESSION_TOKEN"),
        None,
        "eventpipe-secret",
    ))
}

/// The pipeline's Jobs; finished ones the status has not recorded yet carry their pod's report.
pub async fn jobs(client: &Client, pipeline: &EventPipeline, previous: &EventPipelineStatus) -> kube::Result<Vec<ObservedJob>> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let selector = format!("{PIPELINE_UID_LABEL}={}", pipeline.uid().unwrap_or_default());
    let listed = api.list(&ListParams::default().labels(&selector)).await?;
    let mut jobs: Vec<ObservedJob> = listed.items.iter().filter_map(job::observe).collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    for job in jobs.iter_mut().filter(|job| needs_report(previous, job)) {
        let listed = pods.list(&ListParams::default().labels(&format!("{JOB_LABEL}={}", job.name))).await?;
        if let Some(message) = newest_termination_message(&listed.items) {
            job::attach_report(job, &message);
        }
    }
    Ok(jobs)
}

/// The termination message of the transformer container in the most recently started pod.
fn newest_termination_message(pods: &[Pod]) -> Option<String> {
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by_key(|pod| pod.metadata.creation_timestamp.clone().map(|t| t.0));
    pods.iter().rev().find_map(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        let container = statuses.iter().find(|status| status.name == CONTAINER)?;
        container.state.as_ref()?.terminated.as_ref()?.message.clone()
    })
}
