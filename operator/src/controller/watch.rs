//! What the controller watches, and what it keeps of it. Pipelines are watched as metadata only,
//! so that one object this version cannot decode never stops the watch (each reconcile reads its
//! pipeline whole). The operator's Jobs and their pods go into reflector stores, trimmed of what
//! the planner never reads (their specs, managed fields, other labels): reconciles read them
//! from there instead of listing them, and 6,000 Jobs with their pods fit in a few tens of MiB.

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use crate::crd::EventPipeline;

use super::job::{CONTROLLER_UID_LABEL, MANAGED_BY, PIPELINE_UID_LABEL};

/// Watches only what the operator made.
pub fn managed() -> watcher::Config {
    watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1))
}

/// The Jobs and pods of every pipeline, as the watches last saw them.
#[derive(Clone)]
pub struct Stores {
    /// The operator's Jobs, trimmed by [`trim_job`].
    pub jobs: Store<Job>,
    /// Their pods, trimmed by [`trim_pod`].
    pub pods: Store<Pod>,
    /// Turns true once the Job watch has listed what exists.
    jobs_listed: tokio::sync::watch::Receiver<bool>,
}

impl Stores {
    /// The stores the watches fill. A store's readiness wakes only the last of the tasks that
    /// wait for it (kube-runtime keeps one waker), so one task waits and tells every reconcile.
    pub fn new(jobs: Store<Job>, pods: Store<Pod>) -> Self {
        let (listed, jobs_listed) = tokio::sync::watch::channel(false);
        let waiting = jobs.clone();
        tokio::spawn(async move {
            // Its writer gone, the store never fills: reconciles go on with what it holds.
            let _ = waiting.wait_until_ready().await;
            listed.send_replace(true);
        });
        Self { jobs, pods, jobs_listed }
    }

    /// Waits until the Job watch has listed what exists (at once when it has).
    pub async fn jobs_ready(&self) {
        let _ = self.jobs_listed.clone().wait_for(|listed| *listed).await;
    }

    /// Whether the pod watch has listed what exists. Until it has (or when it cannot, for want of
    /// permissions), a running Job's pods are unknown, not missing.
    pub fn pods_known(&self) -> bool {
        self.pods.wait_until_ready().now_or_never().is_some()
    }

    /// The Jobs of a pipeline.
    pub fn jobs_of(&self, pipeline_uid: &str) -> Vec<Arc<Job>> {
        self.jobs.state_filter(|job| of_pipeline(job.labels(), pipeline_uid))
    }

    /// The pods of a pipeline's Jobs, by the UID of their Job.
    pub fn pods_of(&self, pipeline_uid: &str) -> HashMap<String, Vec<Arc<Pod>>> {
        let mut by_job: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for pod in self.pods.state_filter(|pod| of_pipeline(pod.labels(), pipeline_uid)) {
            if let Some(job) = pod.labels().get(CONTROLLER_UID_LABEL) {
                by_job.entry(job.clone()).or_default().push(pod.clone());
            }
        }
        by_job
    }
}

fn of_pipeline(labels: &std::collections::BTreeMap<String, String>, pipeline_uid: &str) -> bool {
    labels.get(PIPELINE_UID_LABEL).is_some_and(|uid| uid == pipeline_uid)
}

/// Keeps of a Job what the planner and the reports read: its name, UID, owner, creation and
/// deletion times, the labels and annotations the operator gave it, and its status.
pub fn trim_job(job: &mut Job) {
    let metadata = &mut job.metadata;
    metadata.managed_fields = None;
    metadata.finalizers = None;
    if let Some(labels) = metadata.labels.as_mut() {
        labels.retain(|key, _| key.starts_with(OPERATOR_KEYS));
    }
    job.spec = None;
}

/// Keeps of a pod what reports and start checks read: its name, creation time, the labels that
/// tie it to its pipeline and its Job, and its status.
pub fn trim_pod(pod: &mut Pod) {
    let metadata = &mut pod.metadata;
    metadata.managed_fields = None;
    metadata.annotations = None;
    metadata.owner_references = None;
    metadata.finalizers = None;
    if let Some(labels) = metadata.labels.as_mut() {
        labels.retain(|key, _| key == PIPELINE_UID_LABEL || key == CONTROLLER_UID_LABEL);
    }
    pod.spec = None;
}

/// Drops a pipeline's managed fields: they list every field of its status, and nothing reads them.
pub fn trim_pipeline(pipeline: &mut PartialObjectMeta<EventPipeline>) {
    pipeline.metadata.managed_fields = None;
}

/// The prefix of the labels and annotations the operator sets.
const OPERATOR_KEYS: &str = "eventpipe.dev/";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::runtime::reflector;

    use super::*;

    /// Reconciles that start before the Job watch has listed all wait, and all go on once it has.
    #[tokio::test]
    async fn every_reconcile_waiting_for_the_job_listing_goes_on() {
        let (jobs, mut writer) = reflector::store::<Job>();
        let (pods, _pod_writer) = reflector::store::<Pod>();
        let stores = Stores::new(jobs, pods);
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let stores = stores.clone();
                tokio::spawn(async move { stores.jobs_ready().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(waiting.iter().all(|task| !task.is_finished()), "nothing is listed yet");
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for task in waiting {
            tokio::time::timeout(Duration::from_secs(5), task).await.expect("every waiting reconcile goes on").unwrap();
        }
    }
}
