//! The act step: creates the planned Jobs, publishes Events, counts metrics and writes the status
//! when it changed. Nothing else is written.

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{EventPipeline, EventPipelineStatus};
use crate::metrics::{PipelineLabels, RowKind, RowLabels};

use super::Context;
use super::conditions::{self, Health};
use super::identity::JobWebIdentity;
use super::job;
use super::observe::Blocked;
use super::plan::{Happening, Launch, Outdated, Stop};

/// The field manager of the operator's status writes.
pub const FIELD_MANAGER: &str = "eventpipe-operator";
/// Job creations or Events one reconcile sends at once: a backfill's launches do not wait for
/// each other's round trips.
const REQUESTS_AT_ONCE: usize = 8;

/// Creates one Job per launch and returns those the API server refused (quota, admission
/// webhook, RBAC), with its message. A Job that already exists was launched before (by this
/// replica before a restart, or by another one): its name is derived from the partition's launch
/// number in the status.
pub async fn launch(ctx: &Context, pipeline: &EventPipeline, launches: &[Launch]) -> Vec<(String, String)> {
    if launches.is_empty() {
        return Vec::new();
    }
    let web_identity = match job_identity(ctx, pipeline).await {
        Ok(identity) => identity,
        Err(error) => return launches.iter().map(|launch| (launch.job.clone(), error.clone())).collect(),
    };
    let web_identity = web_identity.as_ref();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &pipeline.namespace().unwrap_or_default());
    // Collected first: a lazy map of borrowing futures trips the compiler's Send check.
    let creates: Vec<_> = launches.iter().map(|launch| {
        let api = &api;
        async move { create(api, &job::build(pipeline, launch, &ctx.job_policy, web_identity)).await.err().map(|error| (launch.job.clone(), error)) }
    }).collect();
    futures::stream::iter(creates).buffer_unordered(REQUESTS_AT_ONCE).filter_map(std::future::ready).collect().await
}

/// Creates the vacuum Job `name`; the error is the API server's refusal.
pub async fn launch_vacuum(ctx: &Context, pipeline: &EventPipeline, name: &str) -> Result<(), String> {
    let web_identity = job_identity(ctx, pipeline).await?;
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &pipeline.namespace().unwrap_or_default());
    create(&api, &job::build_vacuum(pipeline, name, &ctx.job_policy, web_identity.as_ref())).await
}

/// The identity the pipeline's Jobs run with: the one the operator listed with.
async fn job_identity(ctx: &Context, pipeline: &EventPipeline) -> Result<Option<JobWebIdentity>, String> {
    match ctx.caches.s3.identity(&ctx.client, pipeline).await {
        Ok(identity) => Ok(identity.for_jobs(ctx.caches.s3.exchanges().settings())),
        Err(Blocked::InvalidSpec(error) | Blocked::SourceUnavailable(error)) => Err(error),
    }
}

/// Creates a Job. One that exists already was created before under its deterministic name.
async fn create(api: &Api<Job>, job: &Job) -> Result<(), String> {
    match api.create(&PostParams::default(), job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            tracing::info!(job = job.metadata.name, "job exists already");
            Ok(())
        }
        Err(kube::Error::Api(status)) => Err(format!("{} ({})", status.message, status.reason)),
        Err(error) => Err(error.to_string()),
    }
}

/// Deletes the Jobs the plan stops, with their pods (foreground deletion: the Job stays, with a
/// deletion timestamp, until its pods are gone, so that the partition launches nothing before).
pub async fn stop(ctx: &Context, pipeline: &EventPipeline, stops: &[Stop]) -> kube::Result<()> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &pipeline.namespace().unwrap_or_default());
    for stop in stops {
        match api.delete(&stop.job, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Writes the status (see [`apply_status`]) when it differs from what the pipeline carries.
pub async fn write_status(ctx: &Context, pipeline: &EventPipeline, status: &EventPipelineStatus) -> kube::Result<()> {
    match &pipeline.status {
        Some(carried) => write_status_over(ctx, pipeline, carried, status).await,
        None => apply_status(&ctx.client, pipeline, status).await,
    }
}

/// Writes the status when it differs from `written`, the one the pipeline carries now.
pub async fn write_status_over(ctx: &Context, pipeline: &EventPipeline, written: &EventPipelineStatus, status: &EventPipelineStatus) -> kube::Result<()> {
    if written == status {
        return Ok(());
    }
    apply_status(&ctx.client, pipeline, status).await
}

/// Writes `status` onto `pipeline` — onto that very object: a JSON patch whose first step tests
/// the pipeline's UID, so that a status planned for a pipeline deleted meanwhile is refused
/// instead of landing on a new pipeline of the same name (server-side apply checks no UID).
pub async fn apply_status(client: &kube::Client, pipeline: &EventPipeline, status: &EventPipelineStatus) -> kube::Result<()> {
    let api: Api<EventPipeline> = Api::namespaced(client.clone(), &pipeline.namespace().unwrap_or_default());
    let patch = set_on_object(pipeline.uid(), "/status", serde_json::to_value(status).map_err(kube::Error::SerdeError)?)?;
    api.patch_status(&pipeline.name_any(), &status_params(), &patch).await.map(|_| ())
}

/// A JSON patch that sets `path` to `value` on the object with this UID, and on no other.
fn set_on_object(uid: Option<String>, path: &str, value: serde_json::Value) -> kube::Result<Patch<()>> {
    let steps = serde_json::json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "add", "path": path, "value": value},
    ]);
    Ok(Patch::Json(serde_json::from_value(steps).map_err(kube::Error::SerdeError)?))
}

fn status_params() -> PatchParams {
    PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() }
}

/// Publishes an Event per happening and counts it; called once the status that records them is
/// written. A failed Event is logged, not retried: the status holds the same facts.
pub async fn report(ctx: &Context, pipeline: &EventPipeline, happenings: &[Happening]) {
    let labels = PipelineLabels { namespace: pipeline.namespace().unwrap_or_default(), pipeline: pipeline.name_any() };
    let regarding = pipeline.object_ref(&());
    let events: Vec<_> = happenings
        .iter()
        .map(|happening| {
            count(ctx, &labels, happening);
            let (type_, reason, about, note) = describe(happening);
            tracing::info!(namespace = labels.namespace, pipeline = labels.pipeline, reason, note);
            publish(ctx, &regarding, type_, reason, about, note)
        })
        .collect();
    futures::stream::iter(events).buffer_unordered(REQUESTS_AT_ONCE).collect::<()>().await;
}

/// What an Event is about besides its pipeline. Kubernetes' event recorder merges Events with the
/// same type, reason, action and related object into one series that keeps the first one's note;
/// so each partition gets an action of its own, and each Job is the related object of its Events.
#[derive(Clone, Copy, Debug)]
pub enum About<'a> {
    /// The pipeline as a whole.
    Pipeline,
    /// One partition.
    Partition(&'a str),
    /// One Job of a partition.
    Job {
        /// The partition.
        partition: &'a str,
        /// The Job's name.
        name: &'a str,
    },
}

/// Publishes one Event about a pipeline.
pub async fn publish(ctx: &Context, pipeline: &ObjectReference, type_: EventType, reason: &str, about: About<'_>, mut note: String) {
    eventpipe_transformer::task::shorten(&mut note, 1024);
    let (mut action, secondary) = match about {
        // Notes of the pipeline's own Events differ by what went wrong: one series per note.
        About::Pipeline => (format!("{reason} {}", short_digest(&note)), None),
        About::Partition(partition) => (format!("{reason} {partition}"), None),
        About::Job { partition, name } => {
            let job = ObjectReference {
                api_version: Some("batch/v1".into()),
                kind: Some("Job".into()),
                name: Some(name.to_string()),
                namespace: pipeline.namespace.clone(),
                ..ObjectReference::default()
            };
            (format!("{reason} {partition}"), Some(job))
        }
    };
    eventpipe_transformer::task::shorten(&mut action, ACTION_LIMIT);
    let event = Event { type_, reason: reason.to_string(), note: Some(note), action, secondary };
    if let Err(error) = ctx.recorder.publish(&event, pipeline).await {
        tracing::warn!(%error, pipeline = pipeline.name, "publishing an event failed");
    }
}

/// Longest `action` the Events API accepts.
const ACTION_LIMIT: usize = 128;

/// Eight hex digits of a text's SHA-256.
fn short_digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..4].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Reports a pipeline this version cannot read: `Degraded` with reason `Unreadable` naming the
/// field (written only when the conditions change, so that the write does not trigger another
/// reconcile that writes again), and a warning Event when it is new.
pub async fn report_unreadable(ctx: &Context, object: &DynamicObject, problem: &str) -> kube::Result<()> {
    let previous: Vec<Condition> = serde_json::from_value(object.data["status"]["conditions"].clone()).unwrap_or_default();
    let message = format!("this version of the operator cannot read the pipeline: {problem}");
    let health = Health::Degraded { reason: "Unreadable", message: &message };
    let conditions = conditions::conditions(&previous, &health, object.metadata.generation, Timestamp::now());
    if conditions == previous {
        return Ok(());
    }
    set_conditions(&ctx.client, object, &conditions).await?;
    publish(ctx, &object.object_ref(&ctx.pipeline_resource), EventType::Warning, "Unreadable", About::Pipeline, message).await;
    Ok(())
}

/// Writes `conditions` onto the status of `object`, a pipeline this version may not be able to
/// read, keeping the rest of its status for the version that can; onto that very object, as
/// [`apply_status`] does.
pub async fn set_conditions(client: &kube::Client, object: &DynamicObject, conditions: &[Condition]) -> kube::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &object.namespace().unwrap_or_default(), &ApiResource::erase::<EventPipeline>(&()));
    let conditions = serde_json::to_value(conditions).map_err(kube::Error::SerdeError)?;
    let patch = match object.data.get("status").filter(|status| status.is_object()) {
        Some(_) => set_on_object(object.uid(), "/status/conditions", conditions)?,
        None => set_on_object(object.uid(), "/status", serde_json::json!({"conditions": conditions}))?,
    };
    api.patch_status(&object.name_any(), &status_params(), &patch).await.map(|_| ())
}

fn count(ctx: &Context, labels: &PipelineLabels, happening: &Happening) {
    let metrics = &ctx.metrics;
    match happening {
        Happening::Launched { .. } => {
            metrics.jobs_launched.get_or_create(labels).inc();
        }
        Happening::Succeeded { summary, .. } => {
            metrics.partitions_processed.get_or_create(labels).inc();
            if let Some(summary) = summary {
                for kind in RowKind::ALL {
                    let rows = kind.of(&summary.by_run);
                    let row_labels = RowLabels { namespace: labels.namespace.clone(), pipeline: labels.pipeline.clone(), kind };
                    metrics.rows.get_or_create(&row_labels).inc_by(rows);
                }
            }
        }
        Happening::AttemptFailed { .. } => {
            metrics.attempts_failed.get_or_create(labels).inc();
        }
        Happening::GaveUp { .. } => {
            metrics.attempts_failed.get_or_create(labels).inc();
            metrics.partitions_failed.get_or_create(labels).inc();
        }
        Happening::Outdated { .. }
        | Happening::RetryRequested { .. }
        | Happening::RequestIgnored { .. }
        | Happening::JobCreateFailed { .. }
        | Happening::Stopped { .. }
        | Happening::NotStarting { .. } => {}
    }
}

/// The Event of a happening: type, reason, what it is about, and note.
fn describe(happening: &Happening) -> (EventType, &'static str, About<'_>, String) {
    match happening {
        Happening::Launched { partition, job, attempt } => {
            (EventType::Normal, "Launched", About::Job { partition, name: job }, format!("Job {job} processes {partition} (attempt {attempt})"))
        }
        Happening::Succeeded { partition, job, summary: Some(s) } => (
            EventType::Normal,
            "Succeeded",
            About::Job { partition, name: job },
            format!(
                "{partition} committed by Job {job}: {} rows read, {} rejected,{} {} written, {} bytes in {:.1} s{}",
                s.rows_read,
                s.rows_rejected,
                if s.rows_routed > 0 { format!(" {} routed to other days,", s.rows_routed) } else { String::new() },
                s.rows_written,
                s.bytes_written,
                s.seconds,
                if s.skipped { " (output already matched the inputs)" } else { "" }
            ),
        ),
        Happening::Succeeded { partition, job, summary: None } => {
            (EventType::Normal, "Succeeded", About::Job { partition, name: job }, format!("{partition} committed by Job {job} (no summary reported)"))
        }
        Happening::AttemptFailed { partition, job, message, retry_at } => (
            EventType::Warning,
            "AttemptFailed",
            About::Job { partition, name: job },
            format!("Job {job} for {partition} failed: {message}; retrying after {retry_at}"),
        ),
        Happening::GaveUp { partition, job, message } => (
            EventType::Warning,
            "PartitionFailed",
            About::Job { partition, name: job },
            format!("{partition} failed every attempt; the last, Job {job}: {message}"),
        ),
        Happening::Outdated { partition, cause: Outdated::Inputs } => (
            EventType::Normal,
            "InputsChanged",
            About::Partition(partition),
            format!("the inputs of {partition} changed since it was processed; processing it again"),
        ),
        Happening::Outdated { partition, cause: Outdated::Spec } => (
            EventType::Normal,
            "SpecChanged",
            About::Partition(partition),
            format!("the data-path spec changed since {partition} was processed; processing it again"),
        ),
        Happening::Outdated { partition, cause: Outdated::Requested } => (
            EventType::Normal,
            "ReprocessRequested",
            About::Partition(partition),
            format!("{partition} is processed again, as eventpipe.dev/reprocess asks"),
        ),
        Happening::RetryRequested { partitions } => (
            EventType::Normal,
            "RetryRequested",
            About::Pipeline,
            format!("eventpipe.dev/retry changed: {partitions} failed partitions get new attempts"),
        ),
        Happening::RequestIgnored { message } => (EventType::Warning, "RequestIgnored", About::Pipeline, message.clone()),
        Happening::JobCreateFailed { partition, job, message } => (
            EventType::Warning,
            "JobCreateFailed",
            About::Job { partition, name: job },
            format!("creating Job {job} for {partition} failed: {message}; retrying with backoff"),
        ),
        Happening::Stopped { partition, job, reason } => {
            (EventType::Normal, "JobStopped", About::Job { partition, name: job }, format!("Job {job} of {partition} is deleted: {reason}"))
        }
        Happening::NotStarting { partition, job, problem } => (
            EventType::Warning,
            "PodNotStarting",
            About::Job { partition, name: job },
            format!("the pod of Job {job} for {partition} has not started: {problem}"),
        ),
    }
}
