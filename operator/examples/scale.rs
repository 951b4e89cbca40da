//! Measures the operator at scale against the test control plane and S3 server: N pipelines over
//! one source of D day partitions. Prints the operator's RSS when idle and with every pipeline
//! reconciled, how long it took until every pipeline had launched a Job for every partition and
//! recorded it, when the Job controller had created every pod, and then, over R seconds at rest,
//! the Kubernetes API requests on the operator's resources and the S3 listings per pipeline per
//! hour.
//!
//! `cargo run --example scale -p eventpipe -- [PIPELINES] [DAYS] [REST_SECONDS]` (defaults 200, 30
//! and 120), after `scripts/testenv.sh install` and `scripts/s3-server.sh install`; `--release`
//! for the figures in the README.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use eventpipe::crd::EventPipeline;
use eventpipe_testkit::kube_env::KubeEnv;
use eventpipe_testkit::s3::S3Server;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let pipelines: usize = args.next().transpose()?.unwrap_or(200);
    let days: usize = args.next().transpose()?.unwrap_or(30);
    let rest_seconds: usize = args.next().transpose()?.unwrap_or(120);
    let env = KubeEnv::get().await?;
    let s3 = S3Server::get()?;
    let namespace = env.namespace("scale").await?;
    let bucket = s3.bucket("scale").await?;
    let today = chrono::Utc::now().date_naive();
    // Closed days only (yesterday and before): the pipelines declare no schema, so their
    // transform is processed whole, and today's open partition would wait for its close.
    for day in 1..=days {
        let date = today - chrono::Duration::days(day as i64);
        let key = format!("events/{}/a.csv", date.format("year=%Y/month=%m/day=%d"));
        s3.put(&bucket, &key, b"id,name,value,timestamp\n1,a,b,1\n".to_vec()).await?;
    }

    // Examples live in target/<profile>/examples/, next to the binaries' directory.
    let exe = std::env::current_exe()?;
    let binary = exe.parent().and_then(|d| d.parent()).context("target directory")?.join("eventpipe");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let listen = format!("127.0.0.1:{port}");
    let mut operator = tokio::process::Command::new(&binary)
        .args(["operator", "--transformer-image", "example/transformer:scale", "--listen", &listen])
        .args(["--namespace", &namespace])
        // The pipelines name no Secret: the operator lists with its own keys (from the environment).
        .args(["--s3-identity", "operator"])
        .args(["--s3-allowances", &serde_json::json!({"*": {"endpoints": [s3.endpoint()]}}).to_string()])
        .env("KUBECONFIG", env.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} (`cargo build --bin eventpipe` first)", binary.display()))?;
    let pid = operator.id().context("operator pid")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("operator RSS idle: {} MiB", rss_mib(pid)?);

    let api: Api<EventPipeline> = Api::namespaced(env.client()?, &namespace);
    let started = Instant::now();
    for index in 0..pipelines {
        let pipeline: EventPipeline = serde_json::from_value(serde_json::json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
            "metadata": {"name": format!("p{index:03}")},
            "spec": {
                "source": {"url": format!("s3://{bucket}/events/")},
                "sink": {"url": format!("s3://{bucket}/out/p{index:03}/")},
                "s3": {"endpoint": s3.endpoint(), "forcePathStyle": true, "region": "us-east-1"},
                "schedule": {"pollIntervalSeconds": POLL_SECONDS, "gracePeriodSeconds": 0, "lookbackDays": days + 1},
                // Nothing runs the pods here: they must not fail at the start timeout while measured.
                "execution": {"maxConcurrentJobs": days, "startTimeoutSeconds": 86400}
            }
        }))?;
        api.create(&PostParams::default(), &pipeline).await?;
    }
    println!("created {pipelines} pipelines in {:.1} s", started.elapsed().as_secs_f64());
    loop {
        let listed = api.list(&ListParams::default()).await?;
        let done = listed.items.iter().filter(|p| p.status.as_ref().is_some_and(|s| s.running_jobs as usize == days)).count();
        if done == pipelines {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!("only {done} of {pipelines} pipelines reconciled after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{pipelines} pipelines x {days} partitions: every Job launched and recorded after {elapsed:.1} s ({:.1} ms per pipeline)",
        elapsed * 1000.0 / pipelines as f64
    );
    println!("operator RSS with {pipelines} pipelines and {} Jobs: {} MiB", pipelines * days, rss_mib(pid)?);

    // The Job controller creates the pods at its own pace; at rest means once it is done.
    let client = env.client()?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    while pods.list_metadata(&ListParams::default()).await?.items.len() < pipelines * days {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!("every Job's pod created by the Job controller after {:.1} s", started.elapsed().as_secs_f64());
    println!("operator RSS with {} Jobs and their pods: {} MiB", pipelines * days, rss_mib(pid)?);

    let before = (api_requests(&client).await?, source_listings(port).await?);
    tokio::time::sleep(Duration::from_secs(rest_seconds as u64)).await;
    let after = (api_requests(&client).await?, source_listings(port).await?);
    let per_pipeline_hour = |count: f64| count / pipelines as f64 * 3600.0 / rest_seconds as f64;
    println!(
        "at rest ({POLL_SECONDS} s polls, {days}-day window), per pipeline per hour: {:.0} API requests, {:.0} S3 listings",
        per_pipeline_hour((after.0 - before.0) as f64),
        per_pipeline_hour((after.1 - before.1) as f64)
    );
    println!("operator RSS after {rest_seconds} s at rest: {} MiB", rss_mib(pid)?);
    operator.kill().await?;
    Ok(())
}

/// The poll interval of the measured pipelines (the CRD's default).
const POLL_SECONDS: u64 = 60;

/// Requests the API server counted (watches aside) of the kinds the operator makes: on pipelines
/// and Secrets, on Jobs (not the Job controller's status updates), pod reads, and events.k8s.io
/// Events (the controllers' own core Events and pod writes left out).
async fn api_requests(client: &kube::Client) -> Result<u64> {
    let text = client.request_text(http::Request::get("/metrics").body(Vec::new())?).await?;
    let operators = |line: &str| {
        let has = |label: &str| line.contains(label);
        (has("resource=\"eventpipelines\"") || has("resource=\"secrets\""))
            || (has("resource=\"jobs\"") && !has("subresource=\"status\""))
            || (has("resource=\"pods\"") && (has("verb=\"LIST\"") || has("verb=\"GET\"")))
            || (has("resource=\"events\"") && has("group=\"events.k8s.io\""))
    };
    Ok(text
        .lines()
        .filter(|line| line.starts_with("apiserver_request_total{") && !line.contains("verb=\"WATCH\""))
        .filter(|line| operators(line))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// The operator's count of source prefixes listed in S3, all pipelines.
async fn source_listings(port: u16) -> Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .lines()
        .filter(|line| line.starts_with("eventpipe_source_listings_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

fn rss_mib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    Ok(kib / 1024)
}
