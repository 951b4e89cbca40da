//! The operator's control loop against the real kube-apiserver, kube-controller-manager and S3
//! server, in process, with the chart's RBAC: spec problems and refusals are reported on the
//! pipeline, suspend holds launches, leader election picks one replica, and a quiet pipeline
//! costs no writes. Nothing here runs a pod; `lifecycle.rs` runs the Jobs end to end.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::json;
use support::{World, condition, http_get, partition, wait_until};

#[tokio::test]
async fn a_refused_job_degrades_the_pipeline_and_is_retried() -> Result<()> {
    let world = World::new("refused").await?;
    world.upload(&partition(1), "a.csv", 2).await?;
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-jobs"},
        "spec": {"hard": {"count/jobs.batch": "0"}}
    }))?;
    let quotas: Api<ResourceQuota> = Api::namespaced(world.admin.clone(), &world.namespace);
    quotas.create(&PostParams::default(), &quota).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("capped", json!({})).await?;
    // Each try records its launch before creating the Job (the partition shows Running for
    // that moment, `Degraded` stays JobCreateFailed); between tries it waits, Pending.
    wait_until("JobCreateFailed with the partition waiting", || async {
        let status = world.status("capped").await?;
        let refused = condition(&status, "Degraded") == Some(("True".into(), "JobCreateFailed".into()));
        Ok(refused && (status.running_jobs, status.pending_partitions) == (0, 1))
    })
    .await?;
    let status = world.status("capped").await?;
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert!(degraded.message.contains("quota"), "{}", degraded.message);
    assert!(world.event_reasons().await?.iter().any(|r| r == "JobCreateFailed"));
    assert!(world.job_names().await?.is_empty());

    quotas.delete("no-jobs", &Default::default()).await?;
    world.wait_for_jobs(1).await?;
    wait_until("Degraded cleared", || async {
        Ok(condition(&world.status("capped").await?, "Degraded").is_some_and(|(s, _)| s == "False"))
    })
    .await?;
    drop(stop);
    operator.await?;
    Ok(())
}

/// At rest (nothing new in S3, Jobs running), a reconcile reads the pipeline once per poll and
/// never writes: the Jobs come from the watch, the S3 credentials Secret is read again only every
/// few minutes.
#[tokio::test]
async fn a_quiet_pipeline_writes_nothing() -> Result<()> {
    let world = World::new("quiet").await?;
    world.upload(&partition(1), "a.csv", 2).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("quiet", json!({"schedule": {"pollIntervalSeconds": 1}})).await?;
    world.wait_for_jobs(1).await?;
    wait_until("the status to record the running Job", || async { Ok(world.status("quiet").await?.running_jobs == 1) }).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (reads, writes) = (world.reads.load(Ordering::Relaxed), world.writes.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (reads, writes) = (world.reads.load(Ordering::Relaxed) - reads, world.writes.load(Ordering::Relaxed) - writes);
    eprintln!("at rest over 6 s with 1 s polls: {reads} API reads, {writes} writes");
    assert_eq!(writes, 0);
    assert!((3..=8).contains(&reads), "{reads} reads: one per poll");
    drop(stop);
    operator.await?;
    Ok(())
}

#[tokio::test]
async fn a_bad_spec_degrades_the_pipeline_launches_nothing_and_recovers_when_fixed() -> Result<()> {
    let world = World::new("badspec").await?;
    world.upload(&partition(1), "a.csv", 2).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("broken", json!({"transform": {"sql": "SELECT nope FROM events"}})).await?;
    wait_until("Degraded", || async {
        Ok(condition(&world.status("broken").await?, "Degraded").is_some_and(|(s, _)| s == "True"))
    })
    .await?;
    let status = world.status("broken").await?;
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "InvalidSpec");
    assert!(degraded.message.contains("nope"), "{}", degraded.message);
    assert!(world.job_names().await?.is_empty());

    world.apply_pipeline("broken", json!({"transform": {"sql": "SELECT id, value FROM events"}})).await?;
    world.wait_for_jobs(1).await?;
    wait_until("Degraded cleared", || async {
        Ok(condition(&world.status("broken").await?, "Degraded").is_some_and(|(s, _)| s == "False"))
    })
    .await?;

    // An unreachable bucket is reported, not crashed on.
    world
        .apply_pipeline("nobucket", json!({"source": {"url": "s3://no-such-bucket-for-eventpipe/events/"}}))
        .await?;
    wait_until("SourceUnavailable", || async {
        Ok(condition(&world.status("nobucket").await?, "Degraded") == Some(("True".into(), "SourceUnavailable".into())))
    })
    .await?;
    drop(stop);
    operator.await?;
    Ok(())
}

/// An installation that allows one registry and one service account refuses a pipeline naming
/// others, as a spec error that names the chart value; what it allows, with its `jobDefaults`
/// filling the rest, becomes the Job.
#[tokio::test]
async fn images_and_service_accounts_outside_the_installations_lists_are_refused() -> Result<()> {
    let world = World::new("allowed").await?;
    world.upload(&partition(1), "a.csv", 2).await?;
    let args = eventpipe::operator::OperatorArgs {
        allowed_images: vec!["registry.example.com/data/".into()],
        allowed_service_accounts: vec!["eventpipe-jobs".into()],
        job_defaults: serde_json::from_value(json!({"serviceAccountName": "eventpipe-jobs", "priorityClassName": "batch"}))?,
        ..support::operator_args(&[&world.namespace], &world.namespace)
    };
    let (stop, operator) = support::spawn_operator(world.operator.clone(), args);
    let refused = [
        ("foreign-image", json!({"execution": {"image": "docker.io/someone/miner:1"}}), "allowedImages"),
        ("foreign-account", json!({"execution": {"serviceAccountName": "default"}}), "allowedServiceAccounts"),
    ];
    for (name, execution, chart_value) in &refused {
        world.apply_pipeline(name, execution.clone()).await?;
        wait_until(&format!("{name} to be refused"), || async {
            Ok(condition(&world.status(name).await?, "Degraded") == Some(("True".into(), "InvalidSpec".into())))
        })
        .await?;
        let status = world.status(name).await?;
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert!(degraded.message.contains(chart_value), "{}", degraded.message);
    }
    world.apply_pipeline("allowed", json!({"execution": {"image": "registry.example.com/data/transformer:2"}})).await?;
    let jobs = world.wait_for_jobs(1).await?;
    let pod = world.jobs().get(&jobs[0]).await?.spec.context("a Job spec")?.template.spec.context("a pod spec")?;
    assert_eq!(pod.service_account_name.as_deref(), Some("eventpipe-jobs"));
    assert_eq!(pod.priority_class_name.as_deref(), Some("batch"));
    assert_eq!(pod.containers[0].image.as_deref(), Some("registry.example.com/data/transformer:2"));
    drop(stop);
    operator.await??;
    Ok(())
}

/// A pipeline deleted (its Jobs orphaned, so they stay) and created again under the same name
/// starts afresh: its Jobs get new names, and the old ones never count as its own.
#[tokio::test]
async fn the_same_name_again_is_a_new_pipeline() -> Result<()> {
    let world = World::new("samename").await?;
    world.upload(&partition(1), "a.csv", 2).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("reborn", json!({})).await?;
    let first = world.wait_for_jobs(1).await?;
    let orphan = DeleteParams { propagation_policy: Some(PropagationPolicy::Orphan), ..DeleteParams::default() };
    world.pipelines().delete("reborn", &orphan).await?;
    wait_until("the pipeline to be gone", || async { Ok(world.pipelines().get_opt("reborn").await?.is_none()) }).await?;
    world.apply_pipeline("reborn", json!({})).await?;
    let both = world.wait_for_jobs(2).await?;
    assert!(both.iter().any(|name| !first.contains(name)), "{both:?}");
    wait_until("the new pipeline's Job to run", || async { Ok(world.status("reborn").await?.running_jobs == 1) }).await?;
    let status = world.status("reborn").await?;
    assert_eq!((status.partitions[0].attempts, status.partitions[0].failures), (1, 0));
    assert!(!world.event_reasons().await?.iter().any(|r| r == "AttemptFailed"), "no spurious failure");
    drop(stop);
    operator.await?;
    Ok(())
}

/// A reconcile still writing the status of a pipeline that was deleted meanwhile must not write
/// it onto a new pipeline of the same name: that one would take over its predecessor's Job.
#[tokio::test]
async fn a_status_planned_for_a_deleted_pipeline_never_lands_on_its_successor() -> Result<()> {
    let world = World::new("successor").await?;
    world.apply_pipeline("reborn", json!({"suspend": true})).await?;
    let predecessor = world.pipelines().get("reborn").await?;
    world.pipelines().delete("reborn", &DeleteParams::default()).await?;
    wait_until("the pipeline to be gone", || async { Ok(world.pipelines().get_opt("reborn").await?.is_none()) }).await?;
    world.apply_pipeline("reborn", json!({"suspend": true})).await?;
    let planned = eventpipe::crd::EventPipelineStatus { mode_reason: Some("planned for the predecessor".into()), ..Default::default() };
    let refused = eventpipe::controller::act::apply_status(&world.operator, &predecessor, &planned).await;
    assert!(refused.is_err(), "the write for the deleted pipeline was accepted");
    let successor = world.pipelines().get("reborn").await?;
    assert_ne!(successor.metadata.uid, predecessor.metadata.uid);
    assert_eq!(successor.status.and_then(|status| status.mode_reason), None, "the successor's status is its own");
    let own = eventpipe::controller::act::apply_status(&world.operator, &world.pipelines().get("reborn").await?, &planned).await;
    assert!(own.is_ok(), "{own:?}");
    Ok(())
}

/// A pipeline this version cannot read gets its conditions written and keeps the rest of its
/// status, for the version that can read it; the write lands on that pipeline only.
#[tokio::test]
async fn conditions_of_an_unreadable_pipeline_keep_its_status_and_land_on_it_only() -> Result<()> {
    let world = World::new("conditions").await?;
    let dynamic: Api<kube::api::DynamicObject> =
        Api::namespaced_with(world.admin.clone(), &world.namespace, &kube::discovery::ApiResource::erase::<eventpipe::crd::EventPipeline>(&()));
    let unreadable = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: "Degraded".into(),
        status: "True".into(),
        reason: "Unreadable".into(),
        message: "this version of the operator cannot read the pipeline".into(),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
        observed_generation: None,
    };
    let later_status = json!({"status": {"partitions": [{"partition": partition(1), "fingerprint": "f", "specHash": "s", "state": "Quarantined"}]}});
    for (name, status) in [("with-status", Some(later_status)), ("without-status", None)] {
        world.apply_pipeline(name, json!({"suspend": true})).await?;
        if let Some(status) = &status {
            dynamic.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await?;
        }
        eventpipe::controller::act::set_conditions(&world.operator, &dynamic.get(name).await?, std::slice::from_ref(&unreadable)).await?;
        let written = &dynamic.get(name).await?.data["status"];
        assert_eq!(written["conditions"][0]["reason"], "Unreadable", "{name}: {written}");
        if status.is_some() {
            let kept = &written["partitions"][0];
            assert_eq!((&kept["state"], &kept["fingerprint"]), (&json!("Quarantined"), &json!("f")), "{name}: the rest of the status stays");
        }
    }
    let predecessor = dynamic.get("without-status").await?;
    world.pipelines().delete("without-status", &DeleteParams::default()).await?;
    wait_until("the pipeline to be gone", || async { Ok(world.pipelines().get_opt("without-status").await?.is_none()) }).await?;
    world.apply_pipeline("without-status", json!({"suspend": true})).await?;
    let refused = eventpipe::controller::act::set_conditions(&world.operator, &predecessor, std::slice::from_ref(&unreadable)).await;
    assert!(refused.is_err(), "the conditions for the deleted pipeline were written");
    assert!(dynamic.get("without-status").await?.data["status"]["conditions"].is_null(), "the successor's status is its own");
    Ok(())
}

#[tokio::test]
async fn suspend_stops_launches() -> Result<()> {
    let world = World::new("suspend").await?;
    world.upload(&partition(1), "a.csv", 2).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("paused", json!({"suspend": true})).await?;
    wait_until("Suspended", || async {
        Ok(condition(&world.status("paused").await?, "Ready") == Some(("False".into(), "Suspended".into())))
    })
    .await?;
    assert!(world.job_names().await?.is_empty());
    world.apply_pipeline("paused", json!({"suspend": false})).await?;
    world.wait_for_jobs(1).await?;
    drop(stop);
    operator.await?;
    Ok(())
}

#[tokio::test]
async fn of_two_replicas_only_the_lease_holder_launches_and_the_other_takes_over() -> Result<()> {
    let world = World::new("leader").await?;
    world.upload(&partition(1), "a.csv", 2).await?;
    let (stop_a, replica_a, _) = world.start_replica("replica-a", true);
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(world.admin.clone(), &world.namespace);
    let holder = || async {
        let lease = leases.get_opt("eventpipe-operator").await?;
        Ok::<_, anyhow::Error>(lease.and_then(|l| l.spec?.holder_identity))
    };
    wait_until("replica-a to lead", || async { Ok(holder().await?.as_deref() == Some("replica-a")) }).await?;
    let (stop_b, replica_b, port_b) = world.start_replica("replica-b", true);
    world.apply_pipeline("first", json!({})).await?;
    world.wait_for_jobs(1).await?;
    assert_eq!(holder().await?.as_deref(), Some("replica-a"));
    assert_eq!(http_get(port_b, "/readyz").await?, "ok", "a standby is ready: it serves probes");
    let standby_metrics = http_get(port_b, "/metrics").await?;
    assert!(!standby_metrics.contains("eventpipe_jobs_launched_total{"), "the standby launched nothing: {standby_metrics}");

    drop(stop_a);
    replica_a.await?;
    wait_until("replica-b to lead", || async { Ok(holder().await?.as_deref() == Some("replica-b")) }).await?;
    world.apply_pipeline("second", json!({"sink": {"url": format!("s3://{}/out2/", world.bucket)}})).await?;
    world.wait_for_jobs(2).await?;
    drop(stop_b);
    replica_b.await?;
    Ok(())
}

/// A status written by another version of the operator: one holds a partition state this
/// version does not know, the other a count too large for it. Neither stops the pipelines next to
/// them: the unknown state is checked again, the unreadable status is rebuilt from the Jobs and
/// the sink, and the operator says so in a warning Event.
#[tokio::test]
async fn a_status_this_version_cannot_read_stops_no_pipeline() -> Result<()> {
    let world = World::new("unreadable").await?;
    world.upload(&partition(1), "a.csv", 2).await?;
    let statuses: Api<kube::api::DynamicObject> =
        Api::namespaced_with(world.admin.clone(), &world.namespace, &kube::discovery::ApiResource::erase::<eventpipe::crd::EventPipeline>(&()));
    let entry = |extra: serde_json::Value| {
        let mut entry = json!({"partition": partition(1), "fingerprint": "f", "specHash": "s", "state": "Succeeded"});
        support::merge(&mut entry, extra);
        json!({"status": {"partitions": [entry]}})
    };
    for (name, status) in [("newer", entry(json!({"state": "Quarantined"}))), ("garbled", entry(json!({"attempts": 99_999_999_999u64})))] {
        world.apply_pipeline(name, json!({"suspend": true})).await?;
        statuses.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    }
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("healthy", json!({})).await?;
    world.wait_for_jobs(1).await?;
    for name in ["newer", "garbled"] {
        let rewritten = wait_until(&format!("{name}'s status to be rewritten"), || async {
            let status = &statuses.get(name).await?.data["status"];
            Ok(status["partitions"][0]["state"] == "Pending" && status["partitions"][0]["attempts"] == 0)
        })
        .await;
        if rewritten.is_err() {
            let status = statuses.get(name).await?.data["status"].to_string();
            rewritten.with_context(|| format!("{name}'s status: {status}"))?;
        }
    }
    let events = world.events().await?;
    let unreadable = events.iter().find(|e| e.reason.as_deref() == Some("StatusUnreadable")).context("a StatusUnreadable Event")?;
    assert_eq!(unreadable.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("garbled"));
    assert!(unreadable.note.as_deref().unwrap_or_default().contains("attempts"), "{:?}", unreadable.note);
    drop(stop);
    operator.await?;
    Ok(())
}

/// The API server does not answer when the operator starts (a control-plane upgrade, a network
/// not ready yet): the operator keeps trying, not ready, instead of exiting, and works once the
/// API server answers.
#[tokio::test]
async fn the_operator_waits_for_an_api_server_that_does_not_answer_yet() -> Result<()> {
    let world = World::new("unreachable").await?;
    world.upload(&partition(1), "a.csv", 2).await?;
    world.apply_pipeline("patient", json!({})).await?;
    let relay_port = support::free_port();
    let client = world.operator_client_at(&format!("https://127.0.0.1:{relay_port}")).await?;
    let args = support::operator_args(&[&world.namespace], &world.namespace);
    let port = args.listen.port();
    let (stop, operator) = support::spawn_operator(client, args);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!operator.is_finished(), "the operator keeps trying");
    assert_eq!(http_get(port, "/healthz").await?, "ok");
    assert!(http_get(port, "/readyz").await.is_err(), "not ready while the API server does not answer");
    assert!(world.job_names().await?.is_empty());

    let relay = support::relay_to_api_server(relay_port).await?;
    world.wait_for_jobs(1).await?;
    assert_eq!(http_get(port, "/readyz").await?, "ok");
    drop(stop);
    operator.await??;
    relay.abort();
    Ok(())
}

/// A backfill launches a Job per partition within seconds: each gets an Event of its own that
/// names its partition and Job, not one Event counting them all under the first one's text.
#[tokio::test]
async fn each_launch_has_an_event_naming_its_partition() -> Result<()> {
    let world = World::new("events").await?;
    let days: Vec<String> = (1..=3).map(partition).collect();
    for day in &days {
        world.upload(day, "a.csv", 2).await?;
    }
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("backfill", json!({"execution": {"maxConcurrentJobs": 3}})).await?;
    let jobs = world.wait_for_jobs(3).await?;
    wait_until("an Event per launch", || async {
        Ok(world.events().await?.iter().filter(|e| e.reason.as_deref() == Some("Launched")).count() == 3)
    })
    .await?;
    let launched: Vec<_> = world.events().await?.into_iter().filter(|e| e.reason.as_deref() == Some("Launched")).collect();
    for day in &days {
        let event = launched.iter().find(|e| e.note.as_deref().is_some_and(|note| note.contains(day.as_str()))).context(format!("the Event of {day}"))?;
        let job = event.related.as_ref().and_then(|related| related.name.clone()).context("the Job it is about")?;
        assert!(jobs.contains(&job) && event.note.as_deref().unwrap_or_default().contains(&job), "{event:?}");
        assert!(event.series.is_none(), "one Event per launch: {event:?}");
    }
    drop(stop);
    operator.await?;
    Ok(())
}

/// An hourly layout over a month: 744 partitions, more than the status lists. Every one is
/// processed, the oldest first; the status counts them all and names the oldest not processed
/// yet, and lists no more than it can hold.
#[tokio::test]
async fn a_window_longer_than_the_status_is_processed_oldest_first() -> Result<()> {
    let world = World::new("hourly").await?;
    let hours: Vec<String> = (1..=31).flat_map(|days_ago| (0..24).map(move |hour| format!("{}/hour={hour:02}", partition(days_ago)))).collect();
    futures::stream::iter(hours.iter().map(|hour| world.upload(hour, "a.csv", 1))).buffer_unordered(16).try_collect::<Vec<()>>().await?;
    let (stop, operator, _) = world.start_operator();
    let hourly = json!({
        "source": {"layout": "year={year}/month={month}/day={day}/hour={hour}/"},
        "schedule": {"lookbackDays": 32},
        "execution": {"maxConcurrentJobs": 1}
    });
    world.apply_pipeline("hourly", hourly).await?;
    let oldest = format!("{}/hour=00", partition(31));
    let job = world.wait_for_jobs(1).await?.remove(0);
    let annotations = world.jobs().get(&job).await?.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("eventpipe.dev/partition"), Some(&oldest), "the oldest partition goes first");
    wait_until("the status to count every partition", || async {
        let status = world.status("hourly").await?;
        Ok(status.partition_counts.pending + status.partition_counts.running == 744)
    })
    .await?;
    let status = world.status("hourly").await?;
    assert_eq!(status.oldest_unprocessed_partition.as_deref(), Some(oldest.as_str()));
    assert!(status.partitions.len() <= 400, "{} entries", status.partitions.len());
    assert_eq!(condition(&status, "Ready"), Some(("False".into(), "Processing".into())));
    drop(stop);
    operator.await?;
    Ok(())
}

/// Spark writes `day=4` where the layout says `day={day}`: objects under `day=04/` and `day=4/`
/// are one partition, with one Job and one status entry whose fingerprint covers both, however
/// often the source is listed again.
#[tokio::test]
async fn a_partition_in_both_spellings_is_one_partition() -> Result<()> {
    use chrono::Datelike;
    let world = World::new("spellings").await?;
    let days_ago = (1..=31).find(|days| (chrono::Utc::now().date_naive() - chrono::Duration::days(*days)).day() < 10).context("a day below 10")?;
    let padded = partition(days_ago);
    let unpadded = padded.replace("/day=0", "/day=");
    world.upload(&padded, "a.csv", 2).await?;
    world.upload(&unpadded, "b.csv", 3).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("spelled", json!({"schedule": {"lookbackDays": 32}})).await?;
    let jobs = world.wait_for_jobs(1).await?;
    // Listed again every poll (1 s): a second reading of the partition would change its inputs.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(world.job_names().await?, jobs, "one Job, launched once");
    let status = world.status("spelled").await?;
    let entries: Vec<_> = status.partitions.iter().map(|p| (p.partition.as_str(), p.fingerprint.as_str())).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].0, padded);
    assert!(!world.event_reasons().await?.iter().any(|reason| reason == "InputsChanged"));
    drop(stop);
    operator.await?;
    Ok(())
}
