//! Measures freshness on the real Job lifecycle: the time from an object written into today's
//! partition to its rows being committed, with S3 event notifications off (the window listed every
//! `pollIntervalSeconds`, the default 60 s) and on (the object announced on an SQS queue, the
//! default `settleSeconds` of 5 s), for a conversion in append mode with no grace period. The
//! objects are written one after another, each once the previous one is committed; without
//! notifications, at times spread evenly over the poll interval. Prints p50, p95 and the maximum
//! of each.
//!
//! `cargo build --bins --examples && target/debug/examples/freshness [OBJECTS]` (default 8 per
//! mode), after `scripts/testenv.sh install`, `scripts/s3-server.sh install` and
//! `scripts/sqs-server.sh install`. The operator runs as its own process, the Jobs' pods run
//! under the test pod runner (see `tests/testkit`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use eventpipe::crd::{EventPipeline, PartitionState};
use eventpipe_testkit::kube_env::KubeEnv;
use eventpipe_testkit::pod_runner::{Image, PodRunner, RunnerConfig};
use eventpipe_testkit::s3::S3Server;
use eventpipe_testkit::sqs::SqsServer;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

const IMAGE: &str = "example/transformer:freshness";

/// `schedule.pollIntervalSeconds`: the default, as a pipeline without notifications lists.
const POLL_INTERVAL: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> Result<()> {
    let objects: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(8);
    let env = KubeEnv::get().await?;
    let s3 = S3Server::get()?;
    let sqs = SqsServer::get()?;
    let namespace = env.namespace("freshness").await?;
    let bucket = s3.bucket("freshness").await?;
    let queue = sqs.queue("freshness", 30).await?;
    let client = env.client()?;
    let credentials = serde_json::from_value::<Secret>(serde_json::json!({
        "metadata": {"name": "s3-credentials"},
        "stringData": {"AWS_ACCESS_KEY_ID": "eventpipe", "AWS_SECRET_ACCESS_KEY": "eventpipe-secret"}
    }))?;
    Api::<Secret>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &credentials).await?;

    // Examples live in target/<profile>/examples/, next to the binaries' directory.
    let exe = std::env::current_exe()?;
    let binaries = exe.parent().and_then(|d| d.parent()).context("target directory")?.to_path_buf();
    let s3_port = s3.endpoint().rsplit(':').next().context("the S3 server's port")?.parse()?;
    let image = Image { entrypoint: vec![binaries.join("eventpipe-transformer").display().to_string()], path: vec![binaries.clone()] };
    let runner = RunnerConfig { node_name: format!("node-{namespace}"), namespaces: vec![namespace.clone()], images: HashMap::from([(IMAGE.to_string(), image)]), forward_ports: vec![s3_port] };
    let _runner = PodRunner::start(env, runner).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut operator = tokio::process::Command::new(binaries.join("eventpipe"))
        .args(["operator", "--transformer-image", IMAGE, "--listen", &format!("127.0.0.1:{port}"), "--namespace", &namespace])
        .args(["--s3-allowances", &serde_json::json!({"*": {"endpoints": [s3.endpoint(), sqs.endpoint()]}}).to_string()])
        .env("KUBECONFIG", env.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} (`cargo build --bins` first)", binaries.join("eventpipe").display()))?;

    let pipelines: Api<EventPipeline> = Api::namespaced(client, &namespace);
    let today = chrono::Utc::now().date_naive().format("year=%Y/month=%m/day=%d").to_string();
    for (mode, notifications) in [("off", None), ("on", Some(queue.as_str()))] {
        let name = format!("notifications-{mode}");
        let source = format!("events-{mode}");
        s3.put(&bucket, &format!("{source}/{today}/first.csv"), row(0)).await?;
        let mut spec = serde_json::json!({
            "source": {"url": format!("s3://{bucket}/{source}/"), "schema": [
                {"name": "id", "type": "int64", "nullable": false}, {"name": "name", "type": "string"},
                {"name": "value", "type": "string"}, {"name": "timestamp", "type": "timestamp", "unit": "seconds"}]},
            "sink": {"url": format!("s3://{bucket}/out-{mode}/")},
            "s3": {"endpoint": s3.endpoint(), "forcePathStyle": true, "region": "us-east-1", "credentialsSecretRef": {"name": "s3-credentials"}},
            "schedule": {"gracePeriodSeconds": 0, "lookbackDays": 2, "pollIntervalSeconds": POLL_INTERVAL.as_secs()},
        });
        if let Some(queue) = notifications {
            spec["source"]["notifications"] = serde_json::json!({"sqsQueueUrl": queue});
        }
        let pipeline: EventPipeline = serde_json::from_value(serde_json::json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline", "metadata": {"name": name}, "spec": spec
        }))?;
        pipelines.create(&PostParams::default(), &pipeline).await?;
        committed(&pipelines, &name, &today, 1).await?;
        let mut seconds = Vec::with_capacity(objects);
        for index in 1..=objects {
            if notifications.is_none() {
                // Each object is written just after the previous commit, which follows a listing:
                // without a pause every object would wait a whole poll interval. The pauses
                // spread the writes evenly over the interval.
                tokio::time::sleep(POLL_INTERVAL.mul_f64((index - 1) as f64 / objects as f64)).await;
            }
            let key = format!("{source}/{today}/object-{index}.csv");
            let written = Instant::now();
            s3.put(&bucket, &key, row(index)).await?;
            if notifications.is_some() {
                sqs.notify_created(&queue, &bucket, &key).await?;
            }
            committed(&pipelines, &name, &today, index as u64 + 1).await?;
            seconds.push(written.elapsed().as_secs_f64());
        }
        seconds.sort_by(f64::total_cmp);
        let at = |quantile: f64| seconds[((seconds.len() as f64 * quantile).ceil() as usize).clamp(1, seconds.len()) - 1];
        println!(
            "notifications {mode}: object written -> committed over {objects} objects: p50 {:.1} s, p95 {:.1} s, max {:.1} s",
            at(0.5),
            at(0.95),
            seconds[seconds.len() - 1]
        );
    }
    operator.kill().await?;
    Ok(())
}

/// One CSV row with a header.
fn row(id: usize) -> Vec<u8> {
    format!("id,name,value,timestamp\n{id},theme,dark,1764000000\n").into_bytes()
}

/// Waits until the pipeline's partition is committed with `rows` rows read.
async fn committed(pipelines: &Api<EventPipeline>, name: &str, partition: &str, rows: u64) -> Result<()> {
    let started = Instant::now();
    loop {
        let status = pipelines.get(name).await?.status.unwrap_or_default();
        let entry = status.partitions.iter().find(|entry| entry.partition == partition);
        if entry.is_some_and(|entry| entry.state == PartitionState::Succeeded && entry.rows_read == Some(rows)) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("{name}: {partition} not committed with {rows} rows after 5 minutes: {entry:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
