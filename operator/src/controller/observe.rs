//! The observe step: checks the spec, lists the source's partitions inside the schedule's window
//! (once per poll interval), takes the pipeline's Jobs with their pods' reports from the watches'
//! stores, and reads the manifests the planner asks for. Reads only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventpipe_transformer::discovery;
use eventpipe_transformer::fingerprint::fingerprint;
use eventpipe_transformer::manifest;
use eventpipe_transformer::mode::Mode;
use eventpipe_transformer::storage::{Location, Opener, Retrying, Store};
use eventpipe_transformer::validate::{self, CheckedPipeline};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::crd::{EventPipeline, EventPipelineStatus, PartitionState};

use super::job;
use super::plan::{Committed, JobOutcome, ObservedJob, ObservedPartition, Settled};
use super::policy::JobPolicy;
use super::{progress, report};
use super::watch::{Stores, trim_job};
use super::window::{MAX_PARTITIONS, Window};

/// Manifests read at once.
const MANIFEST_READS: usize = 16;

/// Why a pipeline cannot be observed; reported on its conditions, not as a reconcile error.
#[derive(Clone, Debug, PartialEq)]
pub enum Blocked {
    /// The spec is unusable as written.
    InvalidSpec(String),
    /// The source cannot be listed (bucket, endpoint or credentials).
    SourceUnavailable(String),
}

/// What the operator keeps per pipeline (by UID) between reconciles: the spec check and the opened
/// stores (their HTTP clients and credentials are reused) while the generation does not change,
/// the source listing for one poll interval, and a failed listing until its backoff ends, so that
/// Job events and the operator's own status writes never list the source again.
#[derive(Default)]
pub struct Caches {
    checks: Mutex<HashMap<String, (Option<i64>, Result<(CheckedPipeline, Mode), String>)>>,
    stores: Mutex<HashMap<(String, String), (String, Store)>>,
    listings: Mutex<HashMap<String, Listing>>,
    failed_listings: Mutex<HashMap<String, FailedListing>>,
    /// The UID each pipeline name (namespace, name) had at its last reconcile.
    owners: Mutex<HashMap<(String, String), String>>,
}

/// A listing that failed: why, how many times in a row, and until when it is not tried again.
struct FailedListing {
    generation: Option<i64>,
    failures: u32,
    until: Instant,
    blocked: Blocked,
}

/// One listing of a pipeline's source.
struct Listing {
    generation: Option<i64>,
    at: Instant,
    partitions: Vec<ObservedPartition>,
    looked_in: String,
}

impl Caches {
    /// Drops everything kept for a pipeline (it was deleted).
    pub fn forget(&self, uid: &str) {
        self.owners.lock().expect("not poisoned").retain(|_, owner| owner != uid);
        self.checks.lock().expect("not poisoned").remove(uid);
        self.stores.lock().expect("not poisoned").retain(|(owner, _), _| owner != uid);
        self.forget_listing(uid);
    }

    /// Records that a pipeline's name belongs to this UID. When it belonged to another (the
    /// pipeline was deleted and created again between two reconciles, so no reconcile saw it
    /// gone), drops what was kept for that one and returns its UID.
    pub fn note_owner(&self, namespace: &str, name: &str, uid: &str) -> Option<String> {
        let key = (namespace.to_string(), name.to_string());
        let replaced = self.owners.lock().expect("not poisoned").insert(key, uid.to_string()).filter(|earlier| earlier != uid)?;
        self.forget(&replaced);
        Some(replaced)
    }

    /// Makes the next reconcile of a pipeline list its source again.
    pub fn forget_listing(&self, uid: &str) {
        self.listings.lock().expect("not poisoned").remove(uid);
        self.failed_listings.lock().expect("not poisoned").remove(uid);
    }

    /// Keeps a failed listing of this generation of a pipeline until its backoff ends, and returns
    /// that backoff: it doubles with every failure in a row.
    fn listing_failed(&self, uid: &str, generation: Option<i64>, blocked: Blocked) -> Duration {
        let mut failed = self.failed_listings.lock().expect("not poisoned");
        let failures = failed.get(uid).filter(|earlier| earlier.generation == generation).map_or(0, |earlier| earlier.failures) + 1;
        let backoff = super::retry_delay(failures);
        failed.insert(uid.to_string(), FailedListing { generation, failures, until: Instant::now() + backoff, blocked });
        backoff
    }

    /// The failure of the last listing of this generation of a pipeline while its backoff lasts.
    fn kept_failure(&self, uid: &str, generation: Option<i64>) -> Option<Blocked> {
        let failed = self.failed_listings.lock().expect("not poisoned");
        failed.get(uid).filter(|failed| failed.generation == generation && Instant::now() < failed.until).map(|failed| failed.blocked.clone())
    }
}

/// Checks the spec as the transformer will read it, planning the SQL against the declared columns,
/// and against what the installation allows.
pub async fn check_spec(caches: &Caches, policy: &JobPolicy, pipeline: &EventPipeline) -> Result<(CheckedPipeline, Mode), Blocked> {
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
        let mode = validate::check_sql(&spec.pipeline, &checked.layout).await?;
        Ok::<_, eventpipe_transformer::error::Error>((checked, mode))
    }
    .await
    .map_err(|e| e.to_string())
    .and_then(|(checked, mode)| {
        Window::of(&spec.schedule, Timestamp::now())?;
        crate::period::time_zone(&spec.schedule)?;
        policy.admit(&spec.execution)?;
        if !matches!(checked.source, eventpipe_transformer::storage::Location::S3 { .. }) {
            return Err(format!("source.url must be an s3:// URL in a cluster, not {}", spec.pipeline.source.url));
        }
        Ok((checked, mode))
    });
    caches.checks.lock().expect("not poisoned").insert(uid, (generation, result.clone()));
    result.map_err(Blocked::InvalidSpec)
}

/// The partitions in the schedule's window, the newest [`MAX_PARTITIONS`] of them, oldest first,
/// and how many prefixes of the source were listed for them (0 when the listing was kept).
pub struct Listed {
    /// The partitions.
    pub partitions: Vec<ObservedPartition>,
    /// Prefixes listed in S3 (each one LIST request per 1,000 objects).
    pub prefixes_listed: usize,
    /// Where and for which days the source was looked at, for messages.
    pub looked_in: String,
}

/// Lists the partitions in the schedule's window, when the last listing is a poll interval old or
/// the generation changed; otherwise returns the kept listing. A failed listing is not tried
/// again before its backoff ends.
pub async fn partitions(
    client: &Client,
    caches: &Caches,
    pipeline: &EventPipeline,
    checked: &CheckedPipeline,
    now: Timestamp,
) -> Result<Listed, Blocked> {
    let uid = pipeline.uid().unwrap_or_default();
    let generation = pipeline.metadata.generation;
    let poll = Duration::from_secs(pipeline.spec.schedule.poll_interval_seconds.into());
    if let Some(blocked) = caches.kept_failure(&uid, generation) {
        return Err(blocked);
    }
    if let Some(listing) = caches.listings.lock().expect("not poisoned").get(&uid)
        // A requeue after exactly one poll interval must list: allow for timer jitter.
        && listing.generation == generation
        && listing.at.elapsed() < poll.mul_f64(0.9)
    {
        return Ok(Listed { partitions: listing.partitions.clone(), prefixes_listed: 0, looked_in: listing.looked_in.clone() });
    }
    match list_window(client, caches, pipeline, checked, now).await {
        Ok(listed) => {
            let listing = Listing { generation, at: Instant::now(), partitions: listed.partitions.clone(), looked_in: listed.looked_in.clone() };
            caches.listings.lock().expect("not poisoned").insert(uid.clone(), listing);
            caches.failed_listings.lock().expect("not poisoned").remove(&uid);
            Ok(listed)
        }
        Err(blocked) => {
            if matches!(blocked, Blocked::SourceUnavailable(_)) {
                caches.listing_failed(&uid, generation, blocked.clone());
            }
            Err(blocked)
        }
    }
}

/// Lists the source below the window's prefixes and fingerprints each partition.
async fn list_window(client: &Client, caches: &Caches, pipeline: &EventPipeline, checked: &CheckedPipeline, now: Timestamp) -> Result<Listed, Blocked> {
    let source = open_store(client, caches, pipeline, &checked.source).await?;
    let window = Window::of(&pipeline.spec.schedule, now).map_err(Blocked::InvalidSpec)?;
    let prefixes = window.listing_prefixes(&checked.layout);
    let found = discovery::discover_below(&source, &checked.layout, &prefixes)
        .await
        .map_err(|e| Blocked::SourceUnavailable(format!("listing {}: {e}", checked.source.url())))?;
    let grace = i64::from(pipeline.spec.schedule.grace_period_seconds) * 1000;
    let settled_before = Timestamp::from_millisecond(now.as_millisecond() - grace).unwrap_or(now);
    let cutoff = chrono::DateTime::from_timestamp_millis(settled_before.as_millisecond()).unwrap_or_default();
    let timestamp = |at: chrono::DateTime<chrono::Utc>| Timestamp::from_millisecond(at.timestamp_millis()).unwrap_or(now);
    let mut partitions: Vec<ObservedPartition> = found
        .into_iter()
        .filter(|(key, _)| window.contains(key))
        .map(|(key, found)| {
            let mut modified: Vec<Timestamp> = found.modified.iter().copied().map(timestamp).collect();
            modified.sort();
            ObservedPartition {
                key,
                fingerprint: fingerprint(&found.inputs),
                modified,
                settled: found.settled(cutoff).map(|settled| Settled { fingerprint: fingerprint(&settled.inputs), before: settled_before }),
            }
        })
        .collect();
    let excess = partitions.len().saturating_sub(MAX_PARTITIONS);
    partitions.drain(..excess);
    let looked_in = window.describe(&checked.source.url(), &checked.layout);
    Ok(Listed { partitions, prefixes_listed: prefixes.len(), looked_in })
}

/// The manifests of these partitions, as the planner asked for them. A sink that cannot be opened
/// or a manifest that cannot be read is reported as such: the planner waits rather than count an
/// attempt as failed.
pub async fn manifests(
    client: &Client,
    caches: &Caches,
    pipeline: &EventPipeline,
    checked: Option<&CheckedPipeline>,
    partitions: &[String],
) -> HashMap<String, Committed> {
    let all = |committed: Committed| partitions.iter().map(|partition| (partition.clone(), committed.clone())).collect();
    if partitions.is_empty() {
        return HashMap::new();
    }
    let Some(checked) = checked else {
        return all(Committed::Unreadable("the spec is invalid, so the sink is unknown".into()));
    };
    let sink = match open_store(client, caches, pipeline, &checked.sink).await {
        Ok(sink) => sink,
        Err(Blocked::InvalidSpec(error) | Blocked::SourceUnavailable(error)) => {
            tracing::warn!(%error, "opening the sink to read committed manifests failed");
            return all(Committed::Unreadable(error));
        }
    };
    let reads = partitions.iter().cloned().map(|partition| {
        let sink = sink.clone();
        async move {
            let directory = sink.child(&format!("{partition}/"));
            let committed = match manifest::read(&sink, &directory).await {
                Ok(Some(found)) => Committed::Output(found.manifest.summary()),
                Ok(None) => Committed::Nothing,
                Err(error) => {
                    tracing::warn!(%error, partition, "reading a committed manifest failed");
                    Committed::Unreadable(error.to_string())
                }
            };
            (partition, committed)
        }
    });
    futures::stream::iter(reads).buffer_unordered(MANIFEST_READS).collect().await
}

/// A store of the pipeline (source or sink), opened with its credentials Secret or the operator's
/// own identity. Reopened when the generation or the Secret changes.
async fn open_store(client: &Client, caches: &Caches, pipeline: &EventPipeline, location: &Location) -> Result<Store, Blocked> {
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
    let key = (pipeline.uid().unwrap_or_default(), location.url());
    if let Some((cached_version, store)) = caches.stores.lock().expect("not poisoned").get(&key)
        && *cached_version == version
    {
        return Ok(store.clone());
    }
    let mut opener = Opener::new(s3);
    if let Some(secret) = &secret {
        opener = opener.with_credentials(credentials_from(secret)?);
    }
    let store = opener
        // The next poll lists again: a failing listing is reported, not waited out.
        .open(location, Retrying::Briefly)
        .await
        .map_err(|e| Blocked::SourceUnavailable(format!("opening {}: {e}", location.url())))?;
    caches.stores.lock().expect("not poisoned").insert(key, (version, store.clone()));
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

/// The pipeline's Jobs, from the watch's store; finished ones carry what their pods report (see
/// [`report::explain`]). A running entry's Job the store has not seen yet (the watch lags behind
/// this operator's own creates) is read directly, so that it is never taken for gone.
pub async fn jobs(client: &Client, stores: &Stores, pipeline: &EventPipeline, previous: &EventPipelineStatus) -> kube::Result<Vec<ObservedJob>> {
    let uid = pipeline.uid().unwrap_or_default();
    let mut jobs = stores.jobs_of(&uid);
    let unseen: Vec<&str> = previous
        .partitions
        .iter()
        .filter(|entry| entry.state == PartitionState::Running)
        .filter_map(|entry| entry.job.as_deref())
        .filter(|name| !jobs.iter().any(|job| job.metadata.name.as_deref() == Some(*name)))
        .collect();
    if !unseen.is_empty() {
        let api: Api<Job> = Api::namespaced(client.clone(), &pipeline.namespace().unwrap_or_default());
        for name in unseen {
            if let Some(mut job) = api.get_opt(name).await? {
                trim_job(&mut job);
                jobs.push(Arc::new(job));
            }
        }
    }
    let pods = stores.pods_of(&uid);
    let no_pods = Vec::new();
    Ok(jobs
        .iter()
        .filter_map(|job| {
            let mut observed = job::observe(job)?;
            let job_pods = job.metadata.uid.as_ref().and_then(|uid| pods.get(uid)).unwrap_or(&no_pods);
            if observed.outcome == JobOutcome::Running {
                observed.waiting = progress::waiting(job, job_pods);
                observed.disruptions = progress::disruptions(job_pods);
            } else {
                report::explain(&mut observed, job, job_pods);
            }
            Some(observed)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_listing_is_kept_for_a_backoff_that_doubles() {
        let caches = Caches::default();
        let unreachable = Blocked::SourceUnavailable("listing s3://b/events/: connection refused".into());
        assert_eq!(caches.kept_failure("uid", Some(1)), None);
        assert_eq!(caches.listing_failed("uid", Some(1), unreachable.clone()), Duration::from_secs(5));
        assert_eq!(caches.kept_failure("uid", Some(1)), Some(unreachable.clone()), "Job events do not list again");
        assert_eq!(caches.listing_failed("uid", Some(1), unreachable.clone()), Duration::from_secs(10));
        assert_eq!(caches.kept_failure("uid", Some(2)), None, "a new generation lists at once");
        caches.forget_listing("uid");
        assert_eq!(caches.kept_failure("uid", Some(1)), None);
    }

    #[test]
    fn a_pipeline_created_again_under_its_name_drops_what_was_kept_for_the_old_one() {
        let caches = Caches::default();
        let unreachable = Blocked::SourceUnavailable("listing s3://b/events/: connection refused".into());
        assert_eq!(caches.note_owner("data", "settings", "old"), None);
        caches.listing_failed("old", Some(1), unreachable);
        assert_eq!(caches.note_owner("data", "settings", "old"), None, "the same pipeline");
        assert_eq!(caches.note_owner("data", "other", "another"), None);
        assert_eq!(caches.note_owner("data", "settings", "new"), Some("old".to_string()));
        assert_eq!(caches.kept_failure("old", Some(1)), None, "nothing is kept for the old UID");
    }
}
