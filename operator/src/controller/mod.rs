//! The EventPipeline controller. Each reconcile observes (spec check, partitions in S3, the
//! pipeline's Jobs), plans (a pure function) and acts (create and stop Jobs, publish Events,
//! write the status when it changed).

pub mod act;
pub mod allowances;
pub mod conditions;
pub mod decode;
pub mod identity;
pub mod job;
pub mod listing;
pub mod notifications;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod progress;
mod reconcile;
pub mod report;
pub mod s3;
pub mod watch;
pub mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PartialObjectMeta};
use kube::discovery::ApiResource;
use kube::runtime::controller::{self as runtime_controller, Action};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};

use crate::crd::EventPipeline;
use crate::metrics::{Metrics, PipelineLabels};

use observe::Caches;
use watch::Stores;

/// Annotation whose new value gives failed partitions new attempts.
pub const RETRY_ANNOTATION: &str = "eventpipe.dev/retry";
/// Annotation naming a partition (`year=2026/month=11/day=24`) to process again.
pub const REPROCESS_ANNOTATION: &str = "eventpipe.dev/reprocess";

/// First wait after a reconcile that failed or found the pipeline degraded; doubles up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// The wait after the `failures`-th consecutive failure: [`FIRST_RETRY`], doubled per earlier
/// failure, at most [`MAX_RETRY`].
fn retry_delay(failures: u32) -> Duration {
    FIRST_RETRY.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1))).min(MAX_RETRY)
}

/// What the installation decides for every controller: the client, the policy for Jobs, the
/// metrics and the identity Events carry.
#[derive(Clone)]
pub struct Settings {
    /// The Kubernetes client.
    pub client: Client,
    /// What the installation decides for every pipeline's Jobs.
    pub job_policy: policy::JobPolicy,
    /// Whose identity pipelines' S3 requests use.
    pub identity: identity::IdentitySettings,
    /// What each namespace's pipelines may reach in S3.
    pub s3_allowances: allowances::S3Allowances,
    /// The metrics, shared by every controller.
    pub metrics: Arc<Metrics>,
    /// The reporting instance of Events.
    pub instance: Option<String>,
}

/// The APIs one controller watches: one namespace's, or all namespaces'.
pub struct Watched {
    /// EventPipelines, as metadata.
    pub pipelines: Api<PartialObjectMeta<EventPipeline>>,
    /// Jobs.
    pub jobs: Api<Job>,
    /// Pods.
    pub pods: Api<Pod>,
}

/// What every reconcile of one controller shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events on pipelines.
    pub recorder: Recorder,
    /// What the installation decides for every pipeline's Jobs.
    pub job_policy: policy::JobPolicy,
    /// What each namespace's pipelines may reach in S3.
    pub s3_allowances: allowances::S3Allowances,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The Jobs and pods the watches keep.
    pub stores: Stores,
    /// The EventPipeline resource, for reading pipelines as JSON.
    pipeline_resource: ApiResource,
    caches: Caches,
    /// The pipelines' S3 event notification pollers.
    notifications: notifications::Notifications,
    /// Consecutive failed reconciles, by pipeline UID.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    fn new(settings: Settings, stores: Stores, trigger: notifications::Trigger) -> Self {
        let reporter = Reporter { controller: "eventpipe-operator".into(), instance: settings.instance };
        Self {
            notifications: notifications::Notifications::new(trigger, Arc::clone(&settings.metrics)),
            recorder: Recorder::new(settings.client.clone(), reporter),
            client: settings.client,
            caches: Caches::new(s3::Clients::new(identity::Exchanges::new(settings.identity), settings.job_policy.clone())),
            job_policy: settings.job_policy,
            s3_allowances: settings.s3_allowances,
            metrics: settings.metrics,
            stores,
            pipeline_resource: ApiResource::erase::<EventPipeline>(&()),
            failures: Mutex::default(),
        }
    }

    /// The wait before the next try after the latest consecutive failure of this pipeline.
    fn next_retry(&self, uid: &str) -> Duration {
        let mut failures = self.failures.lock().expect("not poisoned");
        let count = failures.entry(uid.to_string()).or_insert(0);
        *count += 1;
        retry_delay(*count)
    }

    fn succeeded(&self, uid: &str) {
        self.failures.lock().expect("not poisoned").remove(uid);
    }

    /// Drops the retry state of a pipeline that no longer exists.
    fn forget_retries(&self, uid: &str) {
        self.failures.lock().expect("not poisoned").remove(uid);
    }

    /// Drops the caches, retry state and metrics of a pipeline that was deleted.
    fn forget(&self, uid: Option<&str>, namespace: &str, name: &str) {
        if let Some(uid) = uid {
            self.caches.forget(uid);
            self.notifications.forget(uid);
            self.forget_retries(uid);
        }
        self.metrics.forget(&PipelineLabels { namespace: namespace.to_string(), pipeline: name.to_string() });
    }
}

fn labels_of(pipeline: &EventPipeline) -> PipelineLabels {
    PipelineLabels { namespace: pipeline.namespace().unwrap_or_default(), pipeline: pipeline.name_any() }
}

/// A reconcile failure: a Kubernetes API call failed. Invalid specs and unreachable sources are
/// not errors; they are reported on the pipeline's conditions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Runs the controller for the pipelines `watched` shows (one namespace or all) until `shutdown`
/// resolves; reconciles in flight finish first. At most `concurrency` pipelines are reconciled at
/// once.
pub async fn run(settings: Settings, watched: Watched, concurrency: u16, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (pipeline_store, pipeline_writer) = reflector::store();
    let pipelines = watcher(watched.pipelines, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(watch::trim_pipeline)
        .reflect(pipeline_writer)
        .applied_objects();
    let (jobs, job_writer) = reflector::store();
    let job_events = watcher(watched.jobs, watch::managed()).default_backoff().modify(watch::trim_job).reflect(job_writer).touched_objects();
    let (pods, pod_writer) = reflector::store();
    let pod_events = watcher(watched.pods, watch::managed()).default_backoff().modify(watch::trim_pod).reflect(pod_writer).touched_objects();
    let (trigger, triggered) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(Context::new(settings, Stores::new(jobs, pods), trigger));
    let forgetting = Arc::clone(&ctx);
    let controller = Controller::for_stream(pipelines, pipeline_store)
        .with_config(runtime_controller::Config::default().concurrency(concurrency))
        .owns_stream(job_events)
        // Notifications name pipelines whose source has new objects.
        .reconcile_on(futures::stream::unfold(triggered, |mut triggered| async move { triggered.recv().await.map(|pipeline| (pipeline, triggered)) }))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                // A deleted pipeline is no longer in the watch cache: what was kept for it goes.
                Err(runtime_controller::Error::ObjectNotFound(deleted)) => {
                    forgetting.forget(deleted.extra.uid.as_deref(), deleted.namespace.as_deref().unwrap_or_default(), &deleted.name);
                }
                Err(runtime_controller::Error::QueueError(error)) => tracing::warn!(%error, "watching pipelines or Jobs failed; retrying"),
                Err(error) => tracing::debug!(%error, "reconcile failed"),
                Ok(_) => {}
            }
            std::future::ready(())
        });
    // Pod events trigger nothing: each reconcile reads the pods of its pipeline's Jobs.
    let pods = pod_events.for_each(|event| {
        if let Err(error) = event {
            tracing::warn!(%error, "watching the Jobs' pods failed; retrying");
        }
        std::future::ready(())
    });
    futures::pin_mut!(controller, pods);
    futures::future::select(controller, pods).await;
}

fn error_policy(pipeline: Arc<PartialObjectMeta<EventPipeline>>, error: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.next_retry(&pipeline.uid().unwrap_or_default());
    tracing::warn!(%error, namespace = pipeline.namespace(), pipeline = pipeline.name_any(), retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}
