//! The observe step: checks the spec, lists the source's partitions inside the schedule's window
//! (once per poll interval), takes the pipeline's Jobs with their pods' reports from the watches'
//! stores, and reads the manifests the planner asks for. Reads only.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use eventpipe_transformer::commit::delta::DeltaSink;
use eventpipe_transformer::commit::manifest;
use eventpipe_transformer::query::mode::Mode;
use eventpipe_transformer::spec::SinkFormat;
use eventpipe_transformer::store::Store;
use eventpipe_transformer::validate::{self, CheckedPipeline};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::crd::{EventPipeline, EventPipelineStatus, PartitionState, VacuumState};

use super::allowances::S3Allowances;
use super::job;
use super::listing::Listings;
use super::plan::{Committed, JobOutcome, ObservedJob, ObservedVacuum};
use super::policy::JobPolicy;
use super::s3::Clients;
use super::watch::{Stores, trim_job};
use super::window::Window;
use super::{progress, report};

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

/// A spec check and the generation it was made for.
type SpecCheck = (Option<i64>, Result<(CheckedPipeline, Mode), String>);

/// What the operator keeps per pipeline (by UID) between reconciles: the spec check while the
/// generation does not change, the S3 clients (see [`s3`](super::s3)), the source listing (see
/// [`listing`](super::listing)), and the manifests of partitions the status does not list.
#[derive(Default)]
pub struct Caches {
    checks: Mutex<HashMap<String, SpecCheck>>,
    /// The S3 clients of each pipeline's locations.
    pub s3: Clients,
    /// What was listed of each pipeline's source.
    pub listings: Listings,
    /// Manifests read for partitions the status did not list, by partition; kept while it does
    /// not list them.
    untracked_manifests: Mutex<HashMap<String, HashMap<String, Committed>>>,
    /// The UID each pipeline name (namespace, name) had at its last reconcile.
    owners: Mutex<HashMap<(String, String), String>>,
}

impl Caches {
    /// Caches whose S3 clients are opened by `s3`.
    pub fn new(s3: Clients) -> Self {
        Self { s3, ..Self::default() }
    }

    /// Drops everything kept for a pipeline (it was deleted).
    pub fn forget(&self, uid: &str) {
        self.owners.lock().expect("not poisoned").retain(|_, owner| owner != uid);
        self.checks.lock().expect("not poisoned").remove(uid);
        self.s3.forget(uid);
        self.untracked_manifests.lock().expect("not poisoned").remove(uid);
        self.listings.forget(uid);
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

    /// The manifests kept for partitions `previous` does not list. Those it lists now are
    /// forgotten: their Jobs may commit, so they are read afresh once they leave the status.
    pub fn kept_manifests(&self, uid: &str, previous: &EventPipelineStatus) -> HashMap<String, Committed> {
        let mut all = self.untracked_manifests.lock().expect("not poisoned");
        let Some(kept) = all.get_mut(uid) else { return HashMap::new() };
        let listed: HashSet<&str> = previous.partitions.iter().map(|entry| entry.partition.as_str()).collect();
        kept.retain(|partition, _| !listed.contains(partition.as_str()));
        kept.clone()
    }

    /// Keeps the manifests just read for partitions `previous` does not list (not those that
    /// could not be read).
    pub fn keep_manifests(&self, uid: &str, previous: &EventPipelineStatus, read: &HashMap<String, Committed>) {
        let listed: HashSet<&str> = previous.partitions.iter().map(|entry| entry.partition.as_str()).collect();
        let mut all = self.untracked_manifests.lock().expect("not poisoned");
        let kept = all.entry(uid.to_string()).or_default();
        for (partition, committed) in read {
            if !listed.contains(partition.as_str()) && !matches!(committed, Committed::Unreadable(_)) {
                kept.insert(partition.clone(), committed.clone());
            }
        }
    }
}

/// Checks the spec as the transformer will read it, planning the SQL against the declared columns,
/// and against what the installation allows its Jobs and its namespace's S3 reach. Sends no
/// request: a pipeline refused here never makes the operator reach S3.
pub async fn check_spec(caches: &Caches, policy: &JobPolicy, reach: &S3Allowances, pipeline: &EventPipeline) -> Result<(CheckedPipeline, Mode), Blocked> {
    let uid = pipeline.uid().unwrap_or_default();
    let generation = pipeline.metadata.generation;
    if let Some((checked_generation, result)) = caches.checks.lock().expect("not poisoned").get(&uid)
        && *checked_generation == generation
    {
        return result.clone().map_err(Blocked::InvalidSpec);
    }
    let spec = &pipeline.spec;
    let result = async {
        let data_path = spec.data_path();
        let checked = validate::check(&data_path)?;
        let mode = validate::check_sql(&data_path, &checked.layout).await?;
        Ok::<_, eventpipe_transformer::error::Error>((checked, mode))
    }
    .await
    .map_err(|e| e.to_string())
    .and_then(|(checked, mode)| {
        Window::of(&spec.schedule, Timestamp::now())?;
        crate::period::time_zone(&spec.schedule)?;
        policy.admit(&spec.execution)?;
        spec.check_delta_retention()?;
        if !matches!(checked.source, eventpipe_transformer::store::Location::S3 { .. }) {
            return Err(format!("source.url must be an s3:// URL in a cluster, not {}", spec.pipeline.source.url));
        }
        reach.admit(pipeline, &checked)?;
        Ok((checked, mode))
    });
    caches.checks.lock().expect("not poisoned").insert(uid, (generation, result.clone()));
    result.map_err(Blocked::InvalidSpec)
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
    let sink = match caches.s3.open(client, pipeline, &checked.sink).await {
        Ok(sink) => sink,
        Err(Blocked::InvalidSpec(error) | Blocked::SourceUnavailable(error)) => {
            tracing::warn!(%error, "opening the sink to read committed manifests failed");
            return all(Committed::Unreadable(error));
        }
    };
    if pipeline.spec.pipeline.sink.format == SinkFormat::Delta {
        return delta_manifests(pipeline, &sink, partitions).await;
    }
    let reads = partitions.iter().cloned().map(|partition| {
        let sink = sink.clone();
        async move {
            let directory = sink.child(&format!("{partition}/"));
            let committed = match manifest::read(&sink, &directory).await {
                Ok(Some(found)) => Committed::Output(found.manifest.summary()),
                Ok(None) => Committed::Nothing,
                Err(error) => {
                    tracing::warn!(%error, partition, "reading a committed manifest failed");
                    Committed::Unreadable(super::s3::describe(pipeline, error))
                }
            };
            (partition, committed)
        }
    });
    futures::stream::iter(reads).buffer_unordered(MANIFEST_READS).collect().await
}

/// The committed manifests of these partitions in a Delta sink: one read of the table's log for
/// all of them.
async fn delta_manifests(pipeline: &EventPipeline, sink: &Store, partitions: &[String]) -> HashMap<String, Committed> {
    let read = async { DeltaSink::open(sink).await?.committed_partitions().await }.await;
    match read {
        Ok(mut committed) => partitions
            .iter()
            .map(|partition| {
                let found = committed.remove(partition).map_or(Committed::Nothing, |manifest| Committed::Output(manifest.summary()));
                (partition.clone(), found)
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "reading the Delta table's committed partitions failed");
            let error = super::s3::describe(pipeline, error);
            partitions.iter().map(|partition| (partition.clone(), Committed::Unreadable(error.clone()))).collect()
        }
    }
}

/// The pipeline's partition and vacuum Jobs, from the watch's store; finished ones carry what
/// their pods report (see [`report::explain`]). A running entry's Job (or a running vacuum's) the
/// store has not seen yet (the watch lags behind this operator's own creates) is read directly,
/// so that it is never taken for gone.
pub async fn jobs(
    client: &Client,
    stores: &Stores,
    pipeline: &EventPipeline,
    previous: &EventPipelineStatus,
) -> kube::Result<(Vec<ObservedJob>, Vec<ObservedVacuum>)> {
    let uid = pipeline.uid().unwrap_or_default();
    // Right after a start the store may not hold every Job yet: planning from a partial view
    // could launch beside a Job still running.
    stores.jobs_ready().await;
    let pods_known = stores.pods_known();
    let mut jobs = stores.jobs_of(&uid);
    let unseen: Vec<&str> = previous
        .partitions
        .iter()
        .filter(|entry| entry.state == PartitionState::Running)
        .filter_map(|entry| entry.job.as_deref())
        .chain(previous.vacuum.iter().filter(|vacuum| vacuum.state == VacuumState::Running).map(|vacuum| vacuum.job.as_str()))
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
    let pods_of = |job: &Job| job.metadata.uid.as_ref().and_then(|uid| pods.get(uid)).unwrap_or(&no_pods);
    let partition_jobs = jobs
        .iter()
        .filter_map(|job| {
            let mut observed = job::observe(job)?;
            let job_pods = pods_of(job);
            if observed.outcome == JobOutcome::Running {
                // Pods not listed yet must not pass for pods that never started.
                observed.waiting = progress::waiting(job, job_pods).filter(|_| pods_known);
                observed.disruptions = progress::disruptions(job_pods);
            } else {
                report::explain(&mut observed.outcome, job, job_pods);
            }
            Some(observed)
        })
        .collect();
    let vacuums = jobs
        .iter()
        .filter_map(|job| {
            let mut observed = job::observe_vacuum(job)?;
            if observed.outcome != JobOutcome::Running {
                observed.vacuumed = report::explain(&mut observed.outcome, job, pods_of(job)).and_then(|report| report.vacuumed);
            }
            Some(observed)
        })
        .collect();
    Ok((partition_jobs, vacuums))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_created_again_under_its_name_drops_what_was_kept_for_the_old_one() {
        let caches = Caches::default();
        let unreachable = Blocked::SourceUnavailable("listing s3://b/events/: connection refused".into());
        assert_eq!(caches.note_owner("data", "settings", "old"), None);
        caches.listings.failed("old", Some(1), unreachable);
        assert_eq!(caches.note_owner("data", "settings", "old"), None, "the same pipeline");
        assert_eq!(caches.note_owner("data", "other", "another"), None);
        assert_eq!(caches.note_owner("data", "settings", "new"), Some("old".to_string()));
        assert_eq!(caches.listings.kept_failure("old", Some(1)), None, "nothing is kept for the old UID");
    }
}
