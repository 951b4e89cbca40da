//! The Kubernetes Job's program: runs one task and reports its summary as JSON on stdout and in
//! the pod's termination message, where the operator reads it.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use eventpipe_transformer::task::{Summary, Task};

/// Transform one partition of CSV objects into Parquet.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The task as JSON: a file, or `-` for standard input.
    #[arg(long, env = "EVENTPIPE_TASK_FILE")]
    task: String,
    /// Where to write the JSON outcome for the operator; ignored when the directory is absent.
    #[arg(long, default_value = "/dev/termination-log")]
    termination_log: PathBuf,
}

/// What the operator reads from the termination message: the summary, or the error.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let outcome = match read_task(&args.task) {
        Ok(task) => eventpipe_transformer::run::run(&task).await.map_err(|e| e.to_string()),
        Err(error) => Err(error),
    };
    let (code, outcome) = match outcome {
        Ok(summary) => (ExitCode::SUCCESS, Outcome { summary: Some(summary), error: None }),
        Err(error) => (ExitCode::FAILURE, Outcome { summary: None, error: Some(error) }),
    };
    let json = serde_json::to_string(&outcome).expect("outcomes serialise");
    println!("{json}");
    if let Some(error) = &outcome.error {
        eprintln!("error: {error}");
    }
    if args.termination_log.parent().is_some_and(|dir| dir.is_dir()) {
        // The kubelet keeps at most 4096 bytes of it; the summary is far smaller.
        let _ = std::fs::write(&args.termination_log, &json);
    }
    code
}

fn read_task(source: &str) -> Result<Task, String> {
    let text = if source == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading the task from stdin: {e}"))?;
        text
    } else {
        std::fs::read_to_string(source).map_err(|e| format!("reading the task {source}: {e}"))?
    };
    serde_json::from_str(&text).map_err(|e| format!("the task is not valid: {e}"))
}
