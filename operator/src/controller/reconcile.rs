//! One reconcile: read the pipeline, observe (spec check, partitions in S3, its Jobs and their
//! pods, the manifests the plan asks for), plan (a pure function) and act (create and stop Jobs,
//! write the status when it changed, publish Events).

use std::sync::Arc;
use std::time::Instant;

use eventpipe_transformer::commit::fingerprint::spec_hash;
use eventpipe_transformer::query::mode::Mode;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::crd::{EventPipeline, EventPipelineStatus, PartitionState};
use crate::metrics::{ReconcileResult, ResultLabels};

use super::observe::{self, Blocked};
use super::plan::{self, Observation, Requests, Unavailable};
use super::act::About;
use super::{Context, Error, REPROCESS_ANNOTATION, RETRY_ANNOTATION, act, conditions, decode, labels_of, listing};

/// Reconciles the pipeline a watch event or a requeue names.
pub(super) async fn reconcile(watched: Arc<PartialObjectMeta<EventPipeline>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_watched(&watched, &ctx).await;
    ctx.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok((_, outcome)) => outcome.clone(),
        Err(_) => ReconcileResult::Error,
    };
    tracing::debug!(namespace = watched.namespace(), pipeline = watched.name_any(), ?outcome, seconds = started.elapsed().as_secs_f64(), "reconciled");
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: outcome }).inc();
    result.map(|(action, _)| action)
}

async fn reconcile_watched(watched: &PartialObjectMeta<EventPipeline>, ctx: &Context) -> Result<(Action, ReconcileResult), Error> {
    let namespace = watched.namespace().unwrap_or_default();
    let name = watched.name_any();
    // The watch cache can lag behind this operator's own last status write; planning from that
    // older status would record a finished Job twice. One read gives the current status. It is
    // read as JSON and decoded here, so that a pipeline this version cannot read stops only itself.
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.pipeline_resource);
    let Some(object) = api.get_opt(&name).await? else {
        ctx.forget(watched.uid().as_deref(), &namespace, &name);
        return Ok((Action::await_change(), ReconcileResult::Ok));
    };
    let uid = object.uid().unwrap_or_default();
    if let Some(replaced) = ctx.caches.note_owner(&namespace, &name, &uid) {
        ctx.forget_retries(&replaced);
    }
    match decode::pipeline(&object) {
        Ok(decoded) => {
            if let Some(problem) = &decoded.unreadable_status {
                let note = format!("{problem}; the status is rebuilt from the pipeline's Jobs and its sink");
                tracing::warn!(namespace, pipeline = name, note, "this version cannot read the pipeline's status");
                act::publish(ctx, &decoded.pipeline.object_ref(&()), EventType::Warning, "StatusUnreadable", About::Pipeline, note).await;
            }
            let (action, planned) = reconcile_pipeline(&decoded.pipeline, ctx).await?;
            Ok((action, if planned { ReconcileResult::Ok } else { ReconcileResult::Degraded }))
        }
        Err(problem) => {
            tracing::warn!(namespace, pipeline = name, problem, "this version cannot read the pipeline");
            act::report_unreadable(ctx, &object, &problem).await?;
            Ok((Action::await_change(), ReconcileResult::Unreadable))
        }
    }
}

/// Reconciles one pipeline; the flag tells whether it could be planned and acted on (false:
/// degraded). Events and metrics follow the status write, so a reconcile whose write failed
/// reports nothing and the next one reports it once.
async fn reconcile_pipeline(pipeline: &EventPipeline, ctx: &Context) -> Result<(Action, bool), Error> {
    let now = Timestamp::now();
    let previous = pipeline.status.clone().unwrap_or_default();
    let name = pipeline.name_any();
    let uid = pipeline.uid().unwrap_or_default();
    let spec_hash = spec_hash(&pipeline.spec.data_path());
    let annotation = |key: &str| pipeline.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str);
    let (jobs, vacuums) = observe::jobs(&ctx.client, &ctx.stores, pipeline, &previous).await?;
    let checked = observe::check_spec(&ctx.caches, &ctx.job_policy, &ctx.s3_allowances, pipeline).await;
    let announced = match &checked {
        Ok((checked, _)) => {
            ctx.notifications.ensure(&ctx.client, &ctx.caches, pipeline, checked).await;
            ctx.notifications.take(&uid)
        }
        Err(_) => Default::default(),
    };
    let listed = match &checked {
        Ok((checked, _)) => listing::partitions(&ctx.client, &ctx.caches, pipeline, checked, now, &announced.keys).await,
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
    let kept_manifests = ctx.caches.kept_manifests(&uid, &previous);
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
        vacuums: &vacuums,
        committed: &kept_manifests,
        requests: Requests { retry: annotation(RETRY_ANNOTATION), reprocess: annotation(REPROCESS_ANNOTATION) },
        unavailable,
    };
    let mut plan = plan::plan(&first);
    // The plan names the manifests it needs; with them read, it is made again.
    let sink = checked.as_ref().ok().map(|(checked, _)| checked);
    let read = observe::manifests(&ctx.client, &ctx.caches, pipeline, sink, &plan.unread_manifests).await;
    ctx.caches.keep_manifests(&uid, &previous, &read);
    let mut committed = kept_manifests.clone();
    committed.extend(read);
    let observation = Observation { committed: &committed, ..first };
    if !plan.unread_manifests.is_empty() {
        plan = plan::plan(&observation);
    }
    // The status records each launch before its Job exists: a Job is never running while the
    // status still claims the output it may replace. A restart in between finds the launch's
    // Job missing, and the partition's manifest decides.
    notification_condition(ctx, &mut plan.status, &previous, pipeline, now);
    let written = plan::before_launches(&plan, &previous);
    act::write_status(ctx, pipeline, &written).await?;
    let refused = act::launch(ctx, pipeline, &plan.launches).await;
    if !refused.is_empty() {
        plan = plan::launch_refused(plan, &observation, &refused);
    }
    if let Some(job) = &plan.vacuum
        && let Err(refusal) = act::launch_vacuum(ctx, pipeline, job).await
    {
        plan::vacuum_refused(&mut plan, &refusal);
    }
    // Again: a refused launch summarized the status anew.
    notification_condition(ctx, &mut plan.status, &previous, pipeline, now);
    act::write_status_over(ctx, pipeline, &written, &plan.status).await?;
    // The partitions they announced are recorded: the messages can go.
    ctx.notifications.acknowledge(&uid, announced);
    act::stop(ctx, pipeline, &plan.stops).await?;
    act::report(ctx, pipeline, &plan.happenings).await;
    if let Some(unavailable) = unavailable {
        if degraded_reason(&previous) != degraded_reason(&plan.status) {
            let note = unavailable.message.to_string();
            act::publish(ctx, &pipeline.object_ref(&()), EventType::Warning, unavailable.reason, About::Pipeline, note).await;
        }
        return Ok((Action::requeue(ctx.next_retry(&uid)), false));
    }
    let lag = plan.oldest_uncommitted.map_or(0, |oldest| now.duration_since(oldest).as_secs().max(0));
    ctx.metrics.lag_seconds.get_or_create(&labels_of(pipeline)).set(lag);
    if plan.relist {
        ctx.caches.listings.forget(&uid);
    } else {
        let unfinished = plan.entries.iter().filter(|entry| entry.state != PartitionState::Succeeded).map(|entry| entry.partition.clone()).collect();
        ctx.caches.listings.note_unfinished(&uid, &unfinished);
    }
    if !refused.is_empty() {
        return Ok((Action::requeue(ctx.next_retry(&uid)), false));
    }
    ctx.succeeded(&uid);
    Ok((Action::requeue(plan.requeue_after), true))
}

/// Puts the `Notifications` condition on the status, for a pipeline with notifications.
fn notification_condition(ctx: &Context, status: &mut EventPipelineStatus, previous: &EventPipelineStatus, pipeline: &EventPipeline, now: Timestamp) {
    if let Some(health) = ctx.notifications.health(&pipeline.uid().unwrap_or_default()) {
        conditions::set_notifications(&mut status.conditions, &previous.conditions, &health, pipeline.metadata.generation, now);
    }
}

/// The reason and message of a status's `Degraded` condition.
fn degraded_reason(status: &EventPipelineStatus) -> Option<(&String, &String)> {
    status.conditions.iter().find(|c| c.type_ == "Degraded").map(|c| (&c.reason, &c.message))
}
