//! Measures the operator at scale against the test control plane and S3 server: N pipelines over
//! one source of D day partitions. Prints the operator's RSS when idle and with every pipeline
//! reconciled, and how long it took until every pipeline had launched a Job for every partition.
//!
//! `cargo run --example scale -p eventpipe -- [PIPELINES] [DAYS]` (defaults 200 and 30), after
//! `scripts/testenv.sh install` and `scripts/s3-server.sh install`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use eventpipe::crd::EventPipeline;
use eventpipe_testkit::kube_env::KubeEnv;
use eventpipe_testkit::s3::S3Server;
use kube::api::{Api, ListParams, PostParams};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let pipelines: usize = args.next().transpose()?.unwrap_or(200);
    let days: usize = args.next().transpose()?.unwrap_or(30);
    let env = KubeEnv::get().await?;
    let s3 = S3Server::get()?;
    let namespace = env.namespace("scale").await?;
    let bucket = s3.bucket("scale").await?;
    let today = chrono::Utc::now().date_naive();
    for day in 0..days {
        let date = today - chrono::Duration::days(day as i64);
        let key = format!("events/{}/a.csv", date.format("year=%Y/month=%m/day=%d"));
        s3.put(&bucket, &key, b"id,name,value,timestamp\n1,a,b,1\n".to_vec()).await?;
    }

    // Examples live in target/<profile>/examples/, next to the binaries' directory.
    let exe = std::env::current_exe()?;
    let binary = exe.parent().and_then(|d| d.parent()).context("target directory")?.join("eventpipe");
    let mut operator = tokio::process::Command::new(&binary)
        .args(["operator", "--transformer-image", "example/transformer:scale", "--listen", "127.0.0.1:0"])
        .args(["--namespace", &namespace])
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
                "schedule": {"pollIntervalSeconds": 60, "gracePeriodSeconds": 0, "lookbackDays": days},
                "execution": {"maxConcurrentJobs": days}
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
    operator.kill().await?;
    Ok(())
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
