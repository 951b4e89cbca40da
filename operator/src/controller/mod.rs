//! The EventPipeline controller. Each reconcile observes (spec check, partitions in S3, the
//! pipeline's Jobs), plans (a pure function) and acts (create Jobs, publish Events, write the
//! status when it changed).

pub mod act;
pub mod conditions;
pub mod job;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod report;
pub mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventpipe_transformer::fingerprint::spec_hash;
use eventpipe_transformer::mode::Mode;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{self as runtime_controller, Action};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};

use crate::crd::{EventPipeline, PartitionState};
use crate::metrics::{Metrics, PipelineLabels, ReconcileResult, ResultLabels};

use observe::{Blocked, Caches};
use plan::{Observation, Plan, Requests, Unavailable};

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

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events on pipelines.
    pub recorder: Recorder,
    /// What the installation decides for every pipeline's Jobs.
    pub job_policy: policy::JobPolicy,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    caches: Caches,
    failures: Mutex<HashMap<ObjectRef<EventPipeline>, u32>>,
}

impl Context {
    /// A context for a controller whose Events name `instance` as the reporting instance.
    pub fn new(client: Client, job_policy: policy::JobPolicy, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: "eventpipe-operator".into(), instance };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            job_policy,
            metrics,
            caches: Caches::default(),
            failures: Mutex::default(),
        }
    }

    /// The wait before the next try after the latest consecutive failure of this pipeline.
    fn next_retry(&self, pipeline: &EventPipeline) -> Duration {
        let mut failures = self.failures.lock().expect("not poisoned");
        let count = failures.entry(ObjectRef::from(pipeline)).or_insert(0);
        *count += 1;
        retry_delay(*count)
    }

    fn succeeded(&self, pipeline: &EventPipeline) {
        self.failures.lock().expect("not poisoned").remove(&ObjectRef::from(pipeline));
    }

    /// Drops the caches, retry state and metrics of a pipeline that was deleted (or replaced by
    /// a new one of the same name).
    fn forget(&self, pipeline: &ObjectRef<EventPipeline>) {
        if let Some(uid) = &pipeline.extra.uid {
            self.caches.forget(uid);
        }
        self.failures.lock().expect("not poisoned").remove(pipeline);
        let labels = PipelineLabels { namespace: pipeline.namespace.clone().unwrap_or_default(), pipeline: pipeline.name.clone() };
        self.metrics.forget(&labels);
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

/// Runs the controller for pipelines visible through `pipelines` (one namespace or all) until
/// `shutdown` resolves; reconciles in flight finish first. At most `concurrency` pipelines are
/// reconciled at once.
pub async fn run(
    ctx: Arc<Context>,
    pipelines: Api<EventPipeline>,
    jobs: Api<Job>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let managed_jobs = watcher::Config::default().labels(&format!("{}={}", job::MANAGED_BY.0, job::MANAGED_BY.1));
    let forgetting = Arc::clone(&ctx);
    Controller::new(pipelines, watcher::Config::default().any_semantic())
        .with_config(runtime_controller::Config::default().concurrency(concurrency))
        .owns(jobs, managed_jobs)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                // A deleted pipeline is no longer in the watch cache: what was kept for it goes.
                Err(runtime_controller::Error::ObjectNotFound(deleted)) => {
                    let mut pipeline = ObjectRef::<EventPipeline>::new(&deleted.name);
                    pipeline.namespace = deleted.namespace.clone();
                    pipeline.extra = deleted.extra.clone();
                    forgetting.forget(&pipeline);
                }
                Err(error) => tracing::debug!(%error, "reconcile failed"),
                Ok(_) => {}
            }
            std::future::ready(())
        })
        .await;
}

async fn reconcile(cached: Arc<EventPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    // The watch cache can lag behind this operator's own last status write; planning from that
    // older status would record a finished Job twice. One read gives the current status.
    let api: Api<EventPipeline> = Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let result = match api.get_opt(&cached.name_any()).await {
        Ok(Some(pipeline)) => {
            if pipeline.uid() != cached.uid() {
                ctx.forget(&ObjectRef::from(cached.as_ref()));
            }
            reconcile_pipeline(&pipeline, &ctx).await
        }
        Ok(None) => {
            ctx.forget(&ObjectRef::from(cached.as_ref()));
            return Ok(Action::await_change());
        }
        Err(error) => Err(error.into()),
    };
    ctx.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok((_, true)) => ReconcileResult::Ok,
        Ok((_, false)) => ReconcileResult::Degraded,
        Err(_) => ReconcileResult::Error,
    };
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: outcome }).inc();
    result.map(|(action, _)| action)
}

/// Reconciles one pipeline; the flag tells whether it could be planned and acted on (false:
/// degraded). Events and metrics follow the status write, so a reconcile whose write failed
/// reports nothing and the next one reports it once.
async fn reconcile_pipeline(pipeline: &EventPipeline, ctx: &Context) -> Result<(Action, bool), Error> {
    let now = Timestamp::now();
    let previous = pipeline.status.clone().unwrap_or_default();
    let name = pipeline.name_any();
    let uid = pipeline.uid().unwrap_or_default();
    let spec_hash = spec_hash(&pipeline.spec.pipeline);
    let annotation = |key: &str| pipeline.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str);
    let jobs = observe::jobs(&ctx.client, pipeline, &previous).await?;
    let checked = observe::check_spec(&ctx.caches, &ctx.job_policy, pipeline).await;
    let listed = match &checked {
        Ok((checked, _)) => observe::partitions(&ctx.client, &ctx.caches, pipeline, checked, now).await,
        Err(blocked) => Err(blocked.clone()),
    };
    let unavailable = listed.as_ref().err().map(|blocked| match blocked {
        Blocked::InvalidSpec(message) => Unavailable { reason: "InvalidSpec", message },
        Blocked::SourceUnavailable(message) => Unavailable { reason: "SourceUnavailable", message },
    });
    let listed = listed.as_ref().ok();
    if let Some(listed) = listed {
        ctx.metrics.source_listings.get_or_create(&labels_of(pipeline)).inc_by(listed.prefixes_listed as u64);
    }
    // Until the spec is checked the mode is unknown; a degraded status keeps the last one.
    let unchecked = Mode::full("the spec has not been checked yet");
    let no_manifests = HashMap::new();
    let first = Observation {
        now,
        pipeline: &name,
        uid: &uid,
        generation: pipeline.metadata.generation,
        deleting: pipeline.metadata.deletion_timestamp.is_some(),
        spec: &pipeline.spec,
        spec_hash: &spec_hash,
        mode: checked.as_ref().map_or(&unchecked, |(_, mode)| mode),
        previous: &previous,
        partitions: listed.map_or(&[], |listed| &listed.partitions),
        looked_in: listed.map_or("", |listed| &listed.looked_in),
        jobs: &jobs,
        committed: &no_manifests,
        requests: Requests { retry: annotation(RETRY_ANNOTATION), reprocess: annotation(REPROCESS_ANNOTATION) },
        unavailable,
    };
    let mut plan = plan::plan(&first);
    // The plan names the manifests it needs; with them read, it is made again.
    let sink = checked.as_ref().ok().map(|(checked, _)| checked);
    let committed = observe::manifests(&ctx.client, &ctx.caches, pipeline, sink, &plan.unread_manifests).await;
    let observation = Observation { committed: &committed, ..first };
    if !plan.unread_manifests.is_empty() {
        plan = plan::plan(&observation);
    }
    let refused = act::launch(ctx, pipeline, &plan.launches).await;
    if !refused.is_empty() {
        plan = plan::launch_refused(plan, &observation, &refused);
    }
    act::write_status(ctx, pipeline, &plan.status).await?;
    act::stop(ctx, pipeline, &plan.stops).await?;
    act::report(ctx, pipeline, &plan.happenings).await;
    if let Some(unavailable) = unavailable {
        if degraded_reason(&previous) != degraded_reason(&plan.status) {
            act::publish(ctx, pipeline, EventType::Warning, unavailable.reason, unavailable.message.to_string()).await;
        }
        return Ok((Action::requeue(ctx.next_retry(pipeline)), false));
    }
    record_lag(ctx, pipeline, &plan, observation.partitions, now);
    if plan.relist {
        ctx.caches.forget_listing(&uid);
    }
    if !refused.is_empty() {
        return Ok((Action::requeue(ctx.next_retry(pipeline)), false));
    }
    ctx.succeeded(pipeline);
    Ok((Action::requeue(plan.requeue_after), true))
}

/// The reason and message of a status's `Degraded` condition.
fn degraded_reason(status: &crate::crd::EventPipelineStatus) -> Option<(&String, &String)> {
    status.conditions.iter().find(|c| c.type_ == "Degraded").map(|c| (&c.reason, &c.message))
}

/// Sets the lag gauge: the age of the oldest object whose rows are not committed yet — one that
/// arrived after the cut-off of its partition's last committed run, or any object of a partition
/// never committed.
fn record_lag(ctx: &Context, pipeline: &EventPipeline, plan: &Plan, partitions: &[plan::ObservedPartition], now: Timestamp) {
    let oldest_uncommitted = partitions.iter().filter_map(|partition| {
        let entry = plan.status.partitions.iter().find(|p| p.partition == partition.key.to_string())?;
        if entry.state == PartitionState::Succeeded && entry.fingerprint == partition.fingerprint {
            return None;
        }
        partition.oldest_after(entry.committed_at.as_ref().map(|at| entry.settled_before.as_ref().unwrap_or(at).0))
    });
    let lag = oldest_uncommitted.min().map_or(0, |oldest| now.duration_since(oldest).as_secs().max(0));
    ctx.metrics.lag_seconds.get_or_create(&labels_of(pipeline)).set(lag);
}

fn error_policy(pipeline: Arc<EventPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.next_retry(&pipeline);
    tracing::warn!(%error, namespace = pipeline.namespace(), pipeline = pipeline.name_any(), retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}
