//! End to end on the real Job lifecycle: the operator, the real kube-apiserver and
//! kube-controller-manager (Job, TTL, garbage-collector controllers), the S3 server, and the pod
//! runner of `tests/testkit`, which binds pods to a Node and runs their containers as local
//! processes — the built `eventpipe-transformer` and `eventpipe` binaries. No test writes a Job's
//! or a Pod's status: the Job controller and the pod runner (as the kubelet) do.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use eventpipe::crd::{PartitionState, PartitionStatus, Period, ProcessingMode, VacuumState};
use eventpipe_testkit::kube_env::KubeEnv;
use eventpipe_testkit::pod_runner::{Image, PodRunner, RunnerConfig};
use eventpipe_testkit::s3::S3Server;
use eventpipe_testkit::sqs::SqsServer;
use eventpipe_transformer::commit::manifest::Manifest;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use serde_json::json;
use support::{World, helm, partition, wait_until_within};

/// The transformer image the in-process operator gives its Jobs.
const TRANSFORMER_IMAGE: &str = "registry.example/eventpipe-transformer:test";
/// How long a Job of a small partition may take, from launch to recorded result.
const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// The directory holding the workspace's built binaries (the test runs from `target/<profile>/deps`).
fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>").to_path_buf()
}

/// An image whose entrypoint is one of the workspace's binaries.
fn local_image(binary: &str) -> Image {
    Image { entrypoint: vec![binary_dir().join(binary).display().to_string()], path: vec![binary_dir()] }
}

/// A world with a pod runner for its namespace that runs the transformer image.
async fn world_with_runner(name: &str) -> Result<(World, PodRunner)> {
    let world = World::new(name).await?;
    let images = HashMap::from([(TRANSFORMER_IMAGE.to_string(), local_image("eventpipe-transformer"))]);
    let runner = start_runner(&world, images).await?;
    Ok((world, runner))
}

async fn start_runner(world: &World, images: HashMap<String, Image>) -> Result<PodRunner> {
    // Pods have networks of their own: the S3 server on the host's 127.0.0.1 is forwarded into them.
    let s3_port = S3Server::get()?.endpoint().rsplit(':').next().context("the S3 server's port")?.parse()?;
    let config = RunnerConfig { node_name: format!("node-{}", world.namespace), namespaces: vec![world.namespace.clone()], images, forward_ports: vec![s3_port] };
    PodRunner::start(KubeEnv::get().await?, config).await
}

/// Uploads `rows` rows of user events into `partition` as `file`: a partition big enough that its
/// Job runs for seconds.
async fn upload_big(world: &World, partition: &str, file: &str, rows: usize) -> Result<()> {
    let mut body = String::with_capacity(rows * 40 + 32);
    body.push_str(support::CSV_HEADER);
    for i in 0..rows {
        body.push_str(&format!("{},setting-{},value-{},{}\n", i % 50_000, i % 37, i, 1_764_000_000 + i));
    }
    S3Server::get()?.put(&world.bucket, &format!("events/{partition}/{file}"), body.into_bytes()).await
}

/// The committed manifest of a partition in the sink.
async fn manifest(world: &World, partition: &str) -> Result<Manifest> {
    let bytes = S3Server::get()?.read(&world.bucket, &format!("out/{partition}/_manifest.json")).await?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The names of the objects in a partition's sink directory.
async fn sink_files(world: &World, partition: &str) -> Result<Vec<String>> {
    let prefix = format!("out/{partition}/");
    let keys = S3Server::get()?.keys(&world.bucket, &prefix).await?;
    Ok(keys.into_iter().map(|key| key.trim_start_matches(&prefix).to_string()).collect())
}

/// Waits until the pipeline's partition entry satisfies `wanted` and returns it.
async fn wait_for_entry(
    world: &World,
    pipeline: &str,
    partition: &str,
    what: &str,
    timeout: Duration,
    wanted: impl Fn(&PartitionStatus) -> bool,
) -> Result<PartitionStatus> {
    let entry = || async {
        let status = world.status(pipeline).await?;
        Ok::<_, anyhow::Error>(status.partitions.into_iter().find(|p| p.partition == partition))
    };
    wait_until_within(&format!("{partition} {what}"), timeout, || async { Ok(entry().await?.as_ref().is_some_and(&wanted)) }).await?;
    entry().await?.context("the partition entry")
}

/// Waits until the pipeline's partition reaches `state` and returns its entry.
async fn wait_for_state(world: &World, pipeline: &str, partition: &str, state: PartitionState, timeout: Duration) -> Result<PartitionStatus> {
    wait_for_entry(world, pipeline, partition, &format!("{state:?}"), timeout, |p| p.state == state).await
}

/// Waits until the partition is committed with `rows` rows read and returns its entry.
async fn wait_until_committed(world: &World, pipeline: &str, partition: &str, rows: u64) -> Result<PartitionStatus> {
    let what = format!("committed with {rows} rows");
    wait_for_entry(world, pipeline, partition, &what, JOB_TIMEOUT * 2, |p| p.state == PartitionState::Succeeded && p.rows_read == Some(rows))
        .await
}

/// The operator's `eventpipe_rows_total` line for rows of `kind`.
async fn rows_counted(port: u16, kind: &str) -> Result<Option<String>> {
    let metrics = support::http_get(port, "/metrics").await?;
    Ok(metrics.lines().find(|line| line.starts_with("eventpipe_rows_total{") && line.contains(&format!("kind=\"{kind}\""))).map(str::to_string))
}

/// The pods of the namespace, newest first.
async fn pods(world: &World) -> Result<Vec<Pod>> {
    let mut pods = Api::<Pod>::namespaced(world.admin.clone(), &world.namespace).list(&ListParams::default()).await?.items;
    pods.sort_by_key(|pod| std::cmp::Reverse(pod.metadata.creation_timestamp.clone().map(|t| t.0)));
    Ok(pods)
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// Waits for a running transformer pod and returns its name.
async fn wait_for_running_pod(world: &World) -> Result<String> {
    let running = || async {
        Ok::<_, anyhow::Error>(pods(world).await?.iter().find(|pod| phase(pod) == Some("Running")).map(|pod| pod.name_any()))
    };
    wait_until_within("a running pod", JOB_TIMEOUT, || async { Ok(running().await?.is_some()) }).await?;
    running().await?.context("a running pod")
}

/// The chart as a platform team installs it: `helm install` into the test control plane, the
/// operator running as the chart's Deployment pod with its projected token, the example pipeline
/// (pointed at the test's S3 server), a CSV upload, and the Parquet read back.
#[tokio::test]
async fn helm_install_runs_the_example() -> Result<()> {
    let world = World::new("helm").await?;
    let _runner = install_chart(&world, 1).await?;

    let day = partition(1);
    let sample = workspace_file("examples/data/year=2026/month=11/day=24");
    let mut rows = Vec::new();
    for file in ["events-0.csv", "events-1.csv"] {
        let body = std::fs::read(sample.join(file))?;
        rows.extend(String::from_utf8(body.clone())?.lines().skip(1).map(str::to_string));
        S3Server::get()?.put(&world.bucket, &format!("raw/{day}/{file}"), body).await?;
    }
    let mut pipeline: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(workspace_file("examples/cluster/user-settings-localstack.yaml"))?)?;
    let bucket = &world.bucket;
    support::merge(
        &mut pipeline,
        json!({"spec": {
            "source": {"url": format!("s3://{bucket}/raw/")},
            "sink": {"url": format!("s3://{bucket}/out/")},
            "badRecords": {"url": format!("s3://{bucket}/rejected/")},
            "s3": {"endpoint": S3Server::get()?.endpoint()},
            "schedule": {"pollIntervalSeconds": 2, "gracePeriodSeconds": 0}
        }}),
    );
    world.pipelines().patch("user-settings", &PatchParams::apply("test").force(), &Patch::Apply(&pipeline)).await?;

    wait_until_within("the pipeline to be Ready", JOB_TIMEOUT, || async {
        Ok(support::condition(&world.status("user-settings").await?, "Ready").is_some_and(|(status, _)| status == "True"))
    })
    .await?;
    let status = world.status("user-settings").await?;
    assert_eq!(status.last_completed_partition.as_deref(), Some(day.as_str()));
    let users: std::collections::BTreeSet<&str> = rows.iter().filter_map(|row| row.split(',').next()).collect();
    let entry = status.partitions.iter().find(|p| p.partition == day).context("the partition")?;
    assert_eq!((entry.rows_read, entry.rows_rejected, entry.rows_written), (Some(rows.len() as u64), Some(0), Some(users.len() as u64)));

    // The newest value of one user's setting, as the Spark job computed it.
    let fields = |row: &String| row.split(',').map(str::to_string).collect::<Vec<_>>();
    let first = fields(&rows[0]);
    let (user, setting) = (first[0].clone(), first[1].clone());
    let newest = rows
        .iter()
        .map(fields)
        .filter(|f| f[0] == user && f[1] == setting)
        .max_by_key(|f| f[3].parse::<i64>().unwrap_or_default())
        .map(|f| f[2].clone())
        .context("the first row's user and setting")?;
    let sql = format!("SELECT count(*), max(CASE WHEN id = {user} THEN map_extract(settings, '{setting}')[1] END) FROM out");
    assert_eq!(query_output(&world, &day, &sql).await?, vec![format!("{}|{newest}", users.len())]);
    helm(&["uninstall", "eventpipe", "--namespace", &world.namespace])?;
    Ok(())
}

/// Installs the chart into the world's namespace (watching only it) with `replicas` operator
/// replicas, runs its pods, and waits until the Deployment is available.
async fn install_chart(world: &World, replicas: u32) -> Result<PodRunner> {
    let images = HashMap::from([
        ("eventpipe:test".to_string(), local_image("eventpipe")),
        ("eventpipe-transformer:test".to_string(), local_image("eventpipe-transformer")),
    ]);
    let runner = start_runner(world, images).await?;
    let values = format!(
        "watchNamespaces={{{}}},replicaCount={replicas},image.tag=test,transformerImage.tag=test,logFormat=text,crds.enabled=false",
        world.namespace
    );
    // The pipelines name the test S3 server as their endpoint, which the installation must allow.
    let allowances = format!("s3Allowances={}", json!({"*": {"endpoints": [S3Server::get()?.endpoint()]}}));
    helm(&["install", "eventpipe", "charts/eventpipe", "--namespace", &world.namespace, "--set", &values, "--set-json", &allowances])?;
    let deployments: Api<Deployment> = Api::namespaced(world.admin.clone(), &world.namespace);
    wait_until_within("the operator Deployment to be available", JOB_TIMEOUT, || async {
        let status = deployments.get("eventpipe").await?.status.unwrap_or_default();
        Ok(status.available_replicas == Some(replicas as i32))
    })
    .await?;
    Ok(runner)
}

fn workspace_file(path: &str) -> PathBuf {
    eventpipe_testkit::kube_env::workspace_root().join(path)
}

/// Runs `sql` over a partition's committed Parquet files (table `out`), one `a|b|…` line per row.
async fn query_output(world: &World, partition: &str, sql: &str) -> Result<Vec<String>> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let dir = tempfile::tempdir()?;
    for file in manifest(world, partition).await?.files {
        let bytes = S3Server::get()?.read(&world.bucket, &format!("out/{partition}/{}", file.name)).await?;
        std::fs::write(dir.path().join(&file.name), bytes)?;
    }
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_parquet("out", dir.path().to_str().context("a UTF-8 path")?, Default::default()).await?;
    let mut lines = Vec::new();
    for batch in ctx.sql(sql).await?.collect().await? {
        let formatters = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            lines.push(formatters.iter().map(|f| f.value(row).to_string()).collect::<Vec<_>>().join("|"));
        }
    }
    Ok(lines)
}

/// An aggregation over a closed day: a late file processes the whole partition again.
#[tokio::test]
async fn late_file_reprocesses() -> Result<()> {
    let (world, _runner) = world_with_runner("late").await?;
    let day = partition(1);
    world.upload(&day, "a.csv", 3).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("settings", json!({"transform": {"sql": "SELECT id, count(*) AS changes FROM events GROUP BY id"}})).await?;
    let first = wait_for_state(&world, "settings", &day, PartitionState::Succeeded, JOB_TIMEOUT).await?;
    assert_eq!((first.rows_read, first.rows_written, first.period), (Some(3), Some(3), Some(Period::Closed)));

    world.upload(&day, "b.csv", 2).await?;
    wait_until_committed(&world, "settings", &day, 5).await?;
    let committed = manifest(&world, &day).await?;
    assert_eq!((committed.inputs.len(), committed.rows_written, committed.increments), (2, 3, 1));
    assert_eq!(world.job_names().await?.len(), 2, "one Job per input version");
    assert!(world.event_reasons().await?.iter().any(|r| r == "InputsChanged"));
    assert_eq!(world.status("settings").await?.mode, Some(ProcessingMode::Full));
    drop(stop);
    operator.await?;
    Ok(())
}

/// Event time on the real Job lifecycle: yesterday's last event, filed under today's directory,
/// is committed in yesterday's output (its object arrived within the lateness of a day) and
/// counted as routed in today's; each day holds exactly its own events.
#[tokio::test]
async fn event_time_days_take_their_rows_from_the_directories_they_were_filed_in() -> Result<()> {
    let (world, _runner) = world_with_runner("event-time").await?;
    let (yesterday, today) = (partition(1), partition(0));
    let midnight = chrono::Utc::now().date_naive().and_hms_opt(0, 0, 0).context("midnight")?.and_utc().timestamp();
    let object = |rows: &[(i64, i64)]| {
        let body: String = rows.iter().map(|(id, at)| format!("{id},theme,dark,{at}\n")).collect();
        format!("id,name,value,timestamp\n{body}").into_bytes()
    };
    let s3 = S3Server::get()?;
    s3.put(&world.bucket, &format!("events/{yesterday}/a.csv"), object(&[(1, midnight - 43_200), (2, midnight - 3_600)])).await?;
    s3.put(&world.bucket, &format!("events/{today}/b.csv"), object(&[(3, midnight - 30), (4, midnight + 30)])).await?;
    let (stop, operator, port) = world.start_operator();
    world.apply_pipeline("by-event-day", json!({"source": {"eventTime": {"column": "timestamp", "lateness": "1d"}}})).await?;
    let committed = wait_until_committed(&world, "by-event-day", &yesterday, 4).await?;
    assert_eq!((committed.rows_written, committed.rows_routed, committed.rows_rejected, committed.period), (Some(3), Some(1), Some(0), Some(Period::Open)));
    let committed = wait_until_committed(&world, "by-event-day", &today, 4).await?;
    assert_eq!((committed.rows_written, committed.rows_routed), (Some(1), Some(3)), "today reads yesterday's directory for clocks ahead");
    assert_eq!(query_output(&world, &yesterday, "SELECT id FROM out ORDER BY id").await?, ["1", "2", "3"]);
    assert_eq!(query_output(&world, &today, "SELECT id FROM out").await?, ["4"]);
    let manifest = manifest(&world, &yesterday).await?;
    assert_eq!(manifest.inputs.iter().map(|input| input.path.as_str()).collect::<Vec<_>>(), [format!("{yesterday}/a.csv"), format!("{today}/b.csv")]);
    let routed = rows_counted(port, "Routed").await?;
    assert!(routed.as_deref().is_some_and(|line| line.ends_with(" 4")), "1 row routed by yesterday's run, 3 by today's: {routed:?}");
    drop(stop);
    operator.await?;
    Ok(())
}

/// A Delta sink on the real Job lifecycle: the first run creates the table, a late file's run
/// replaces the partition's files in one commit, and the status says what the table holds.
#[tokio::test]
async fn a_delta_sink_commits_each_run_to_the_table() -> Result<()> {
    let (world, _runner) = world_with_runner("delta").await?;
    let day = partition(1);
    world.upload(&day, "a.csv", 3).await?;
    let (stop, operator, _) = world.start_operator();
    let sql = "SELECT id, count(*) AS changes FROM events GROUP BY id";
    world.apply_pipeline("settings", json!({"sink": {"format": "delta"}, "transform": {"sql": sql}})).await?;
    let first = wait_for_state(&world, "settings", &day, PartitionState::Succeeded, JOB_TIMEOUT).await?;
    assert_eq!((first.rows_read, first.rows_written), (Some(3), Some(3)));
    world.upload(&day, "b.csv", 2).await?;
    wait_until_committed(&world, "settings", &day, 5).await?;
    let s3 = S3Server::get()?;
    let log = s3.keys(&world.bucket, "out/_delta_log/").await?;
    let commits: Vec<&String> = log.iter().filter(|key| key.ends_with(".json")).collect();
    assert_eq!(commits.len(), 3, "the table's creation and one commit per run: {log:?}");
    let last = String::from_utf8(s3.read(&world.bucket, commits[2]).await?)?;
    assert!(last.contains("\"remove\"") && last.contains("\"add\""), "the second run replaces the first one's files: {last}");
    assert!(s3.keys(&world.bucket, &format!("out/{day}/_manifest.json")).await?.is_empty(), "the table is the commit point");
    // Once the table held output, a Job of its own vacuumed it (nothing was old enough to go).
    support::wait_until_within("the vacuum to succeed", JOB_TIMEOUT, || async {
        Ok(world.status("settings").await?.vacuum.is_some_and(|vacuum| vacuum.state == VacuumState::Succeeded))
    })
    .await?;
    let vacuum = world.status("settings").await?.vacuum.unwrap();
    assert_eq!((vacuum.files_deleted, vacuum.job.starts_with("settings-vacuum-")), (Some(0), true), "{vacuum:?}");
    assert!(world.job_names().await?.contains(&vacuum.job));
    assert!(s3.keys(&world.bucket, "out/_delta_log/_last_checkpoint").await?.len() == 1, "the vacuum checkpoints the table");
    drop(stop);
    operator.await?;
    Ok(())
}

/// S3 event notifications through a real SQS-compatible server: with the window listed only
/// every 10 minutes, an announced object is committed within seconds, the message is deleted once
/// recorded, the same notification again launches nothing, and a message about another bucket is
/// ignored. A second pipeline on the same source, listing every 2 s, catches an object whose
/// notification was lost.
#[tokio::test]
async fn notifications_launch_at_once_and_the_listing_catches_lost_ones() -> Result<()> {
    let (world, _runner) = world_with_runner("notify").await?;
    let sqs = SqsServer::get()?;
    let (announced_queue, lost_queue) = (sqs.queue("announced", 5).await?, sqs.queue("lost", 5).await?);
    let day = partition(1);
    world.upload(&day, "a.csv", 3).await?;
    let (stop, operator, port) = world.start_operator_allowing(&[sqs.endpoint()]);
    let notifications = |queue: &str, every: u32| json!({"sqsQueueUrl": queue, "settleSeconds": 1, "listIntervalSeconds": every});
    world.apply_pipeline("announced", json!({"source": {"notifications": notifications(&announced_queue, 600)}})).await?;
    let lost_sink = format!("s3://{}/out-lost/", world.bucket);
    world.apply_pipeline("lost", json!({"source": {"notifications": notifications(&lost_queue, 2)}, "sink": {"url": lost_sink}})).await?;
    wait_until_committed(&world, "announced", &day, 3).await?;
    wait_until_committed(&world, "lost", &day, 3).await?;

    world.upload(&day, "b.csv", 2).await?;
    sqs.notify_created(&announced_queue, &world.bucket, &format!("events/{day}/b.csv")).await?;
    sqs.notify_created(&announced_queue, "another-bucket", &format!("events/{day}/b.csv")).await?;
    // Within the wait, far shorter than the 10-minute listing interval: the notification did it.
    wait_until_committed(&world, "announced", &day, 5).await?;
    // The other pipeline heard of nothing and finds the object by listing.
    wait_until_committed(&world, "lost", &day, 5).await?;
    wait_until_within("the notifications deleted", JOB_TIMEOUT, || async { Ok(sqs.messages(&announced_queue).await? == 0) }).await?;
    let jobs = world.job_names().await?;

    sqs.notify_created(&announced_queue, &world.bucket, &format!("events/{day}/b.csv")).await?;
    wait_until_within("the duplicate deleted", JOB_TIMEOUT, || async { Ok(sqs.messages(&announced_queue).await? == 0) }).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(world.job_names().await?, jobs, "a duplicate notification launches nothing");
    let status = world.status("announced").await?;
    let condition = status.conditions.iter().find(|c| c.type_ == "Notifications").with_context(|| format!("a Notifications condition in {:?}", status.conditions))?;
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "Receiving"), "{condition:?}");
    assert!(condition.message.contains("last message at"), "{}", condition.message);
    let metrics = support::http_get(port, "/metrics").await?;
    let count = |outcome: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with("eventpipe_notifications_total{") && line.contains("pipeline=\"announced\"") && line.contains(&format!("outcome=\"{outcome}\"")))
            .and_then(|line| line.rsplit(' ').next())
            .map(str::to_string)
    };
    assert_eq!((count("Partition").as_deref(), count("Ignored").as_deref()), (Some("2"), Some("1")), "{metrics}");
    drop(stop);
    operator.await?;
    Ok(())
}

/// A conversion of today's partition, still open: each new object is converted on its own and
/// added to the committed output; the first object is never read again.
#[tokio::test]
async fn two_increments_commit_into_an_open_partition() -> Result<()> {
    let (world, _runner) = world_with_runner("append").await?;
    let day = partition(0);
    world.upload(&day, "firehose-1.csv", 3).await?;
    let (stop, operator, port) = world.start_operator();
    world.apply_pipeline("events", json!({})).await?;
    let first = wait_until_committed(&world, "events", &day, 3).await?;
    assert_eq!((first.increments, first.period), (Some(1), Some(Period::Open)));
    assert_eq!(world.status("events").await?.mode, Some(ProcessingMode::Append));

    world.upload(&day, "firehose-2.csv", 2).await?;
    let second = wait_until_committed(&world, "events", &day, 5).await?;
    assert_eq!((second.increments, second.rows_written), (Some(2), Some(5)));
    let committed = manifest(&world, &day).await?;
    assert_eq!((committed.inputs.len(), committed.files.len(), committed.increments), (2, 2, 2));
    let files = sink_files(&world, &day).await?;
    assert_eq!(files.len(), 3, "both increments' files and the manifest: {files:?}");
    assert_eq!(world.job_names().await?.len(), 2, "one Job per increment");
    assert!(!world.event_reasons().await?.iter().any(|r| r == "InputsChanged"), "growing is not a change");
    let rows_read = rows_counted(port, "Read").await?;
    assert!(rows_read.as_deref().is_some_and(|line| line.ends_with(" 5")), "each row was read once: {rows_read:?}");
    drop(stop);
    operator.await?;
    Ok(())
}

#[tokio::test]
async fn bad_rows_fail_after_max_attempts() -> Result<()> {
    let (world, _runner) = world_with_runner("badrows").await?;
    let day = partition(1);
    let body = format!("{}1,theme,dark,1764000000\nnot-a-number,theme,light,1764000001\n", support::CSV_HEADER);
    S3Server::get()?.put(&world.bucket, &format!("events/{day}/bad.csv"), body.into_bytes()).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("strict", json!({"badRecords": {"policy": "fail"}})).await?;
    let failed = wait_for_state(&world, "strict", &day, PartitionState::Failed, JOB_TIMEOUT).await?;
    let message = failed.message.unwrap_or_default();
    assert!(message.contains(&format!("{day}/bad.csv")) && message.contains("line 3"), "{message}");
    assert_eq!((failed.attempts, failed.failures), (2, 2));
    // The data error failed each Job at once through the podFailurePolicy.
    for job in world.jobs().list(&ListParams::default()).await?.items {
        let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(conditions.iter().any(|c| c.type_ == "Failed" && c.reason.as_deref() == Some("PodFailurePolicy")), "{conditions:?}");
    }
    drop(stop);
    operator.await?;
    Ok(())
}

#[tokio::test]
async fn oom_is_reported_as_oom() -> Result<()> {
    if !PodRunner::memory_cgroups_supported() {
        bail!("this machine offers no memory cgroup to enforce container limits");
    }
    let (world, _runner) = world_with_runner("oom").await?;
    let day = partition(1);
    // Rows with 2 KiB values: one batch of them alone is larger than the limit, however the
    // output is encoded.
    let value = "v".repeat(2048);
    let rows: String = (0..20_000).map(|i| format!("{i},setting-{},{value},{}\n", i % 37, 1_764_000_000 + i)).collect();
    S3Server::get()?.put(&world.bucket, &format!("events/{day}/a.csv"), format!("{}{rows}", support::CSV_HEADER).into_bytes()).await?;
    let (stop, operator, _) = world.start_operator();
    let resources = json!({"limits": {"memory": "24Mi"}, "requests": {"memory": "24Mi"}});
    world.apply_pipeline("small", json!({"execution": {"maxAttempts": 1, "resources": resources}})).await?;
    let failed = wait_for_state(&world, "small", &day, PartitionState::Failed, JOB_TIMEOUT).await?;
    let message = failed.message.unwrap_or_default();
    assert!(message.starts_with("OOMKilled") && message.contains("24Mi"), "{message}");
    let pod = pods(&world).await?.into_iter().next().context("the OOM-killed pod")?;
    let terminated = pod.status.and_then(|s| s.container_statuses).and_then(|c| c.into_iter().next()).and_then(|c| c.state?.terminated);
    assert_eq!(terminated.map(|t| (t.reason, t.exit_code)), Some((Some("OOMKilled".into()), 137)));
    drop(stop);
    operator.await?;
    Ok(())
}

#[tokio::test]
async fn eviction_does_not_use_an_attempt() -> Result<()> {
    let (world, runner) = world_with_runner("evict").await?;
    let day = partition(1);
    upload_big(&world, &day, "a.csv", 600_000).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("drained", json!({"execution": {"maxAttempts": 1}})).await?;
    let evicted = wait_for_running_pod(&world).await?;
    runner.evict(&world.namespace, &evicted).await?;
    let done = wait_for_state(&world, "drained", &day, PartitionState::Succeeded, JOB_TIMEOUT * 2).await?;
    assert_eq!((done.attempts, done.failures, done.rows_read), (1, 0, Some(600_000)));
    let jobs = world.jobs().list(&ListParams::default()).await?.items;
    assert_eq!(jobs.len(), 1, "the same Job carried on");
    let status = jobs[0].status.clone().unwrap_or_default();
    assert_eq!((status.succeeded, status.failed.unwrap_or(0)), (Some(1), 0), "an eviction is not a failure");
    let finished: Vec<String> = pods(&world).await?.iter().filter(|p| phase(p) == Some("Succeeded")).map(|p| p.name_any()).collect();
    assert!(!finished.contains(&evicted) && finished.len() == 1, "a new pod finished the work: {finished:?}");
    drop(stop);
    operator.await?;
    Ok(())
}

/// A pod killed mid-run (a node lost while it converts an increment of a committed partition):
/// the attempt fails, the retry commits, and the partition shows exactly the committed files — the
/// first version's and the increment's, none of the killed run's.
#[tokio::test]
async fn kill_mid_write_leaves_one_committed_set() -> Result<()> {
    let (world, runner) = world_with_runner("killed").await?;
    let day = partition(1);
    world.upload(&day, "a.csv", 3).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("crashy", json!({})).await?;
    wait_for_state(&world, "crashy", &day, PartitionState::Succeeded, JOB_TIMEOUT).await?;
    let first_version = manifest(&world, &day).await?;

    upload_big(&world, &day, "b.csv", 600_000).await?;
    let pod = wait_for_running_pod(&world).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    runner.kill(&world.namespace, &pod, "transformer").await?;
    let done = wait_until_committed(&world, "crashy", &day, 600_003).await?;
    assert_eq!((done.attempts, done.failures), (2, 1), "the killed attempt failed, the next committed");
    let committed = manifest(&world, &day).await?;
    let mut listed: Vec<String> = committed.files.iter().map(|f| f.name.clone()).collect();
    listed.push("_manifest.json".into());
    listed.sort();
    assert_eq!(sink_files(&world, &day).await?, listed, "only the committed files are visible");
    assert!(first_version.files.iter().all(|old| listed.contains(&old.name)), "the increment adds to the first version");
    assert_eq!((committed.rows_read, committed.inputs.len(), committed.increments), (600_003, 2, 2));
    drop(stop);
    operator.await?;
    Ok(())
}

/// A finished Job removed by the TTL controller while the operator was away: its result is read
/// from the partition's committed manifest.
#[tokio::test]
async fn ttl_deleted_job_still_records_success() -> Result<()> {
    let (world, _runner) = world_with_runner("ttl").await?;
    let day = partition(1);
    world.upload(&day, "a.csv", 4).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("shortlived", json!({"execution": {"ttlSecondsAfterFinished": 60}})).await?;
    let job = world.wait_for_jobs(1).await?.remove(0);
    wait_for_state(&world, "shortlived", &day, PartitionState::Running, JOB_TIMEOUT).await?;
    drop(stop);
    operator.await?;
    wait_until_within("the TTL controller to delete the Job", Duration::from_secs(150), || async {
        Ok(world.jobs().get_opt(&job).await?.is_none())
    })
    .await?;
    let (stop, operator, _) = world.start_operator();
    let done = wait_for_state(&world, "shortlived", &day, PartitionState::Succeeded, JOB_TIMEOUT).await?;
    assert_eq!((done.rows_read, done.failures), (Some(4), 0));
    assert!(done.message.unwrap_or_default().contains("committed manifest"));
    assert!(world.job_names().await?.is_empty(), "nothing was launched again");
    drop(stop);
    operator.await?;
    Ok(())
}

/// Firehose writes an object every minute: a day of 3,000 objects with long generated names.
#[tokio::test]
async fn firehose_sized_partition() -> Result<()> {
    let (world, _runner) = world_with_runner("firehose").await?;
    let day = partition(1);
    let s3 = S3Server::get()?;
    let uploads = futures::stream::iter(0..3000).map(|i| {
        let key = format!(
            "events/{day}/user-events-delivery-stream-1-2026-11-27-{:02}-{:02}-{:02}-4f9c8d2e-1b7a-4c3d-9e8f-{i:012}.csv",
            i / 3600,
            i / 60 % 60,
            i % 60
        );
        let body = format!("{}{i},theme,dark,{}\n{i},lang,en,{}\n", support::CSV_HEADER, 1_764_000_000 + i, 1_764_000_001 + i);
        let bucket = world.bucket.clone();
        async move { s3.put(&bucket, &key, body.into_bytes()).await }
    });
    uploads.buffer_unordered(16).try_collect::<Vec<()>>().await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("firehose", json!({"execution": {"activeDeadlineSeconds": 600}})).await?;
    let done = wait_for_state(&world, "firehose", &day, PartitionState::Succeeded, Duration::from_secs(400)).await?;
    assert_eq!((done.rows_read, done.rows_written), (Some(6000), Some(6000)));
    assert_eq!(manifest(&world, &day).await?.inputs.len(), 3000);
    drop(stop);
    operator.await?;
    Ok(())
}

/// A Firehose day by event time on the real Job controller: 1,440 objects under yesterday's
/// directory and 60 under today's, each of those with a row of yesterday's last minute. The
/// operator composes both days from 1,500 objects with the run's own function: one Job per day,
/// no inputs changed between plan and run, every row kept once.
#[tokio::test]
async fn a_firehose_day_by_event_time_takes_its_last_minute_from_the_next_directory() -> Result<()> {
    let (world, _runner) = world_with_runner("firehose-event-time").await?;
    let (yesterday, today) = (partition(1), partition(0));
    let midnight = chrono::Utc::now().date_naive().and_hms_opt(0, 0, 0).context("midnight")?.and_utc().timestamp();
    let s3 = S3Server::get()?;
    let objects = (0..1500i64).map(|i| match i {
        0..1440 => (format!("events/{yesterday}/delivery-{i:04}.csv"), format!("{i},theme,dark,{}\n", midnight - 86_400 + i * 60)),
        _ => (format!("events/{today}/delivery-{i:04}.csv"), format!("{i},theme,dark,{}\n{},theme,light,{}\n", midnight - 1, i + 10_000, midnight + i)),
    });
    let uploads = futures::stream::iter(objects).map(|(key, rows)| {
        let bucket = world.bucket.clone();
        async move { s3.put(&bucket, &key, format!("{}{rows}", support::CSV_HEADER).into_bytes()).await }
    });
    uploads.buffer_unordered(16).try_collect::<Vec<()>>().await?;
    let (stop, operator, _) = world.start_operator();
    let spec = json!({"source": {"eventTime": {"column": "timestamp", "lateness": "1d"}}, "execution": {"activeDeadlineSeconds": 600}});
    world.apply_pipeline("firehose-by-event-day", spec).await?;
    let day = wait_until_committed(&world, "firehose-by-event-day", &yesterday, 1560).await?;
    assert_eq!((day.rows_written, day.rows_routed, day.rows_rejected), (Some(1500), Some(60), Some(0)));
    let next = wait_until_committed(&world, "firehose-by-event-day", &today, 1560).await?;
    assert_eq!((next.rows_written, next.rows_routed), (Some(60), Some(1500)));
    assert_eq!(manifest(&world, &yesterday).await?.inputs.len(), 1500);
    assert_eq!(world.job_names().await?.len(), 2, "one Job per day");
    assert!(!world.event_reasons().await?.iter().any(|reason| reason == "InputsChanged"), "the operator planned what the run read");
    drop(stop);
    operator.await?;
    Ok(())
}

#[tokio::test]
async fn operator_restart_mid_job_no_duplicate() -> Result<()> {
    let (world, _runner) = world_with_runner("restart").await?;
    let day = partition(1);
    upload_big(&world, &day, "a.csv", 300_000).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("steady", json!({})).await?;
    wait_for_running_pod(&world).await?;
    drop(stop);
    operator.await?;
    let (stop, operator, _) = world.start_operator();
    let done = wait_for_state(&world, "steady", &day, PartitionState::Succeeded, JOB_TIMEOUT * 2).await?;
    assert_eq!((done.attempts, done.rows_read), (1, Some(300_000)));
    assert_eq!(world.job_names().await?.len(), 1, "the restarted operator adopted the running Job");
    drop(stop);
    operator.await?;
    Ok(())
}

/// Two chart replicas: one leads. When its Lease is taken away, it stops acting and exits with a
/// failure, Kubernetes restarts it as a standby, and a replica leads again — no Job twice.
#[tokio::test]
async fn lease_loss_hands_over() -> Result<()> {
    let world = World::new("lease").await?;
    let _runner = install_chart(&world, 2).await?;
    let leases: Api<Lease> = Api::namespaced(world.admin.clone(), &world.namespace);
    let holder = || async {
        let lease = leases.get_opt("eventpipe").await?;
        Ok::<_, anyhow::Error>(lease.and_then(|l| l.spec?.holder_identity))
    };
    wait_until_within("a replica to lead", JOB_TIMEOUT, || async { Ok(holder().await?.is_some()) }).await?;
    let leader = holder().await?.context("the leader")?;
    let operator_pods: Vec<String> = pods(&world).await?.iter().map(|p| p.name_any()).filter(|n| n.starts_with("eventpipe-")).collect();
    assert!(operator_pods.contains(&leader), "{leader} among {operator_pods:?}");

    world.upload(&partition(1), "a.csv", 2).await?;
    world.apply_pipeline("first", json!({})).await?;
    wait_for_state(&world, "first", &partition(1), PartitionState::Succeeded, JOB_TIMEOUT).await?;

    // Someone else takes the Lease: the leader must stop and exit with a failure.
    let taken = json!({"spec": {"holderIdentity": "intruder", "renewTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}});
    leases.patch("eventpipe", &PatchParams::default(), &Patch::Merge(&taken)).await?;
    let restarted = || async {
        let pod = Api::<Pod>::namespaced(world.admin.clone(), &world.namespace).get(&leader).await?;
        let status = pod.status.and_then(|s| s.container_statuses).and_then(|c| c.into_iter().next());
        Ok::<_, anyhow::Error>(status.filter(|c| c.restart_count >= 1).and_then(|c| c.last_state?.terminated).map(|t| t.exit_code))
    };
    wait_until_within("the old leader to exit and be restarted", Duration::from_secs(60), || async { Ok(restarted().await?.is_some()) }).await?;
    assert_eq!(restarted().await?, Some(1), "losing the Lease is a failure exit");
    wait_until_within("a replica to lead again", Duration::from_secs(90), || async {
        Ok(holder().await?.is_some_and(|h| operator_pods.contains(&h)))
    })
    .await?;
    // Yesterday is listed every poll (an empty day two days back, already listed by the new
    // leader, only every closedRelistSeconds): a late file there is the new leader's work.
    world.upload(&partition(1), "b.csv", 3).await?;
    wait_until_committed(&world, "first", &partition(1), 5).await?;
    assert_eq!(world.job_names().await?.len(), 2, "one Job per input set, none twice");
    helm(&["uninstall", "eventpipe", "--namespace", &world.namespace])?;
    Ok(())
}

#[tokio::test]
async fn deleting_the_pipeline_deletes_jobs_and_pods() -> Result<()> {
    let (world, _runner) = world_with_runner("delete").await?;
    upload_big(&world, &partition(1), "a.csv", 300_000).await?;
    let (stop, operator, port) = world.start_operator();
    world.apply_pipeline("doomed", json!({})).await?;
    wait_for_running_pod(&world).await?;
    let delete = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
    world.pipelines().delete("doomed", &delete).await?;
    wait_until_within("the Jobs and pods to be deleted", JOB_TIMEOUT, || async {
        Ok(world.job_names().await?.is_empty() && pods(&world).await?.is_empty())
    })
    .await?;
    let metrics = support::http_get(port, "/metrics").await?;
    assert!(!metrics.contains("pipeline=\"doomed\""), "a deleted pipeline's series are dropped: {metrics}");
    drop(stop);
    operator.await?;
    Ok(())
}

/// An image the node cannot pull: the partition says so, with an Event, within a poll; the attempt
/// fails at `startTimeoutSeconds` with that reason, not at the deadline, and its Job is deleted.
#[tokio::test]
async fn a_pod_that_cannot_pull_its_image_fails_its_attempt_at_the_start_timeout() -> Result<()> {
    let world = World::new("imagepull").await?;
    // A node that knows no image: every pod waits in ErrImagePull.
    let _runner = start_runner(&world, HashMap::new()).await?;
    let day = partition(1);
    world.upload(&day, "a.csv", 2).await?;
    let (stop, operator, _) = world.start_operator();
    world.apply_pipeline("unpullable", json!({"execution": {"maxAttempts": 1, "startTimeoutSeconds": 20}})).await?;
    let pulling = |p: &PartitionStatus| p.state == PartitionState::Running && p.message.as_deref().is_some_and(|m| m.contains("ErrImagePull"));
    wait_for_entry(&world, "unpullable", &day, "reported as not starting", Duration::from_secs(15), pulling).await?;
    let events = world.events().await?;
    let event = events.iter().find(|e| e.reason.as_deref() == Some("PodNotStarting")).context("a PodNotStarting Event")?;
    assert!(event.note.as_deref().unwrap_or_default().contains("ErrImagePull"), "{event:?}");

    let failed = wait_for_state(&world, "unpullable", &day, PartitionState::Failed, Duration::from_secs(60)).await?;
    let message = failed.message.unwrap_or_default();
    assert!(message.contains("startTimeoutSeconds (20 s)") && message.contains("ErrImagePull"), "{message}");
    wait_until_within("the Job to be deleted", Duration::from_secs(30), || async { Ok(world.job_names().await?.is_empty()) }).await?;
    drop(stop);
    operator.await?;
    Ok(())
}
