//! What the controller watches, and what it keeps of it. Pipelines are watched as metadata only,
//! so that one object this version cannot decode never stops the watch (each reconcile reads its
//! pipeline whole). The operator's Jobs and their pods go into reflector stores, trimmed of what
//! the planner never reads (the task in each container's environment, managed fields, pod specs):
//! reconciles read them from there instead of listing them.

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

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
}

impl Stores {
    /// Waits until the Job watch has listed what exists (at once when it has).
    pub async fn jobs_ready(&self) {
        // The store's writer lives as long as the controller that reconciles.
        let _ = self.jobs.wait_until_ready().await;
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

/// Drops what the planner never reads from a Job: managed fields and the containers' environment
/// (the task, the largest part). The memory limit stays: failure reports name it.
pub fn trim_job(job: &mut Job) {
    job.metadata.managed_fields = None;
    let containers = job.spec.as_mut().and_then(|spec| spec.template.spec.as_mut()).map(|pod| pod.containers.iter_mut());
    for container in containers.into_iter().flatten() {
        container.env = None;
    }
}

/// Keeps of a pod what reports and start checks read: its labels, creation time and status.
pub fn trim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.metadata.owner_references = None;
    pod.spec = None;
}
