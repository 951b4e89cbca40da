//! The Kubernetes Job's program: runs one task (or the vacuum of a Delta sink's table) and
//! reports its summary as JSON on stdout and in the pod's termination message, where the
//! operator reads it. The exit code tells what kind of
//! failure it was (see [`ExitClass`]): the Job's `podFailurePolicy` fails the Job at once when
//! another try cannot help.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use eventpipe_transformer::error::ExitClass;
use eventpipe_transformer::task::{Outcome, Task, VacuumTask};

/// Transform one partition of CSV objects into Parquet.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The task as a JSON file, or `-` for standard input.
    #[arg(long, env = "EVENTPIPE_TASK_FILE", required_unless_present_any = ["task_json", "vacuum_json"], conflicts_with = "task_json")]
    task: Option<String>,
    /// The task as JSON text (how the operator's Jobs pass it).
    #[arg(long, env = "EVENTPIPE_TASK", hide_env_values = true)]
    task_json: Option<String>,
    /// Instead of a task, the vacuum of a Delta sink's table as JSON text (how the operator's
    /// vacuum Jobs pass it).
    #[arg(long, env = "EVENTPIPE_VACUUM", hide_env_values = true, conflicts_with_all = ["task", "task_json"])]
    vacuum_json: Option<String>,
    /// Where to write the JSON outcome for the operator; ignored when the directory is absent.
    #[arg(long, default_value = "/dev/termination-log")]
    termination_log: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let done = match &args.vacuum_json {
        Some(json) => vacuum(json).await,
        None => run(&args).await,
    };
    let (code, outcome) = match done {
        Ok(outcome) => (ExitCode::SUCCESS, outcome),
        Err((class, error)) => (ExitCode::from(class as u8), Outcome { error: Some(error), ..Outcome::default() }),
    };
    println!("{}", serde_json::to_string(&outcome).expect("outcomes serialise"));
    if let Some(error) = &outcome.error {
        eprintln!("error: {error}");
    }
    if args.termination_log.parent().is_some_and(|dir| dir.is_dir()) {
        let _ = std::fs::write(&args.termination_log, outcome.termination_message());
    }
    code
}

/// Runs the task the arguments give.
async fn run(args: &Args) -> Result<Outcome, (ExitClass, String)> {
    let task = match (&args.task, &args.task_json) {
        (_, Some(json)) => parse_task(json),
        (Some(source), None) => read_task(source),
        (None, None) => unreachable!("clap requires one of --task, --task-json and --vacuum-json"),
    }
    .map_err(|error| (ExitClass::BadTask, error))?;
    let summary = eventpipe_transformer::run::run(&task).await.map_err(|e| (e.exit_class(), e.to_string()))?;
    Ok(Outcome { summary: Some(summary), ..Outcome::default() })
}

/// Vacuums the table of the sink the JSON names.
async fn vacuum(json: &str) -> Result<Outcome, (ExitClass, String)> {
    let task: VacuumTask = serde_json::from_str(json).map_err(|e| (ExitClass::BadTask, format!("the vacuum task is not valid: {e}")))?;
    let vacuumed = eventpipe_transformer::commit::vacuum::vacuum(&task.pipeline, None).await.map_err(|e| (e.exit_class(), e.to_string()))?;
    Ok(Outcome { vacuumed: Some(vacuumed), ..Outcome::default() })
}

fn read_task(source: &str) -> Result<Task, String> {
    let text = if source == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading the task from stdin: {e}"))?;
        text
    } else {
        std::fs::read_to_string(source).map_err(|e| format!("reading the task {source}: {e}"))?
    };
    parse_task(&text)
}

fn parse_task(json: &str) -> Result<Task, String> {
    serde_json::from_str(json).map_err(|e| format!("the task is not valid: {e}"))
}
