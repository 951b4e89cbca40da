//! `eventpipe run`: a pipeline manifest run on this machine. It discovers the partitions under the
//! source and runs the transformer in-process for each, oldest first — the same code a Job runs,
//! minus Kubernetes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use eventpipe_transformer::task::{EngineSettings, Summary, Task};
use eventpipe_transformer::commit::compaction;
use eventpipe_transformer::commit::fingerprint::fingerprint;
use eventpipe_transformer::store::Retrying;
use eventpipe_transformer::{store::discovery, run, validate};
use serde::Serialize;

/// Arguments of `eventpipe run`.
#[derive(Args)]
pub struct RunArgs {
    /// The EventPipeline manifest (YAML).
    #[arg(short = 'f', long = "filename")]
    manifest: PathBuf,
    /// Read partitions from this URL or local directory instead of spec.source.url.
    #[arg(long)]
    source: Option<String>,
    /// Write Parquet to this URL or local directory instead of spec.sink.url.
    #[arg(long)]
    sink: Option<String>,
    /// Write quarantined rows to this URL or local directory instead of spec.badRecords.url.
    /// When only --sink is given, quarantined rows go next to it (`<sink>-rejected`).
    #[arg(long)]
    rejected: Option<String>,
    /// Summary format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// Process partitions even when their committed output matches the inputs and the spec.
    #[arg(long)]
    force: bool,
    /// Process whole partitions, not increments, even when the transform appends.
    #[arg(long)]
    full: bool,
    /// Judge open and closed partitions as at this time (RFC 3339), e.g. to replay a day; now
    /// when absent.
    #[arg(long)]
    now: Option<k8s_openapi::jiff::Timestamp>,
    /// Parallel partitions of each query and output files per partition (default: one writer per
    /// CPU; queries over whole partitions in 8 partitions per writer).
    #[arg(long)]
    target_partitions: Option<usize>,
    /// Memory each query may hold before spilling to disk, in MiB.
    #[arg(long)]
    memory_limit_mib: Option<u64>,
    /// Seconds each partition's conversion may take; past it the partition fails and nothing of
    /// it is committed.
    #[arg(long)]
    timeout: Option<u64>,
}

/// How the summary is printed.
#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// One line per partition.
    Table,
    /// `{"partitions": [...]}`.
    Json,
}

/// The outcome of one partition.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PartitionOutcome {
    partition: String,
    #[serde(flatten)]
    summary: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Why the partition was left for later: it is open and the transform needs all of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting: Option<String>,
    /// The partition's output after its increments were compacted (a closed partition of a
    /// Delta sink in append mode), as the operator does once a partition closes.
    #[serde(skip_serializing_if = "Option::is_none")]
    compacted: Option<Summary>,
}

/// Runs the manifest; the exit code is non-zero when any partition failed.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = crate::manifest_file::load(&args.manifest)?.spec;
    let lateness = spec.lateness();
    let (mut pipeline, schedule) = (spec.data_path(), spec.schedule);
    if let Some(source) = args.source {
        pipeline.source.url = source;
    }
    if let Some(sink) = args.sink {
        pipeline.sink.url = sink;
        pipeline.bad_records.url = None;
    }
    if let Some(rejected) = args.rejected {
        pipeline.bad_records.url = Some(rejected);
    }
    let checked = validate::check(&pipeline)?;
    let mode = validate::check_sql(&pipeline, &checked.layout).await?;
    let now = args.now.unwrap_or_else(k8s_openapi::jiff::Timestamp::now);
    crate::period::time_zone(&schedule).map_err(anyhow::Error::msg)?;
    let source = checked.source.open(pipeline.s3.as_ref(), Retrying::Patiently).await?;
    let mut partitions = discovery::discover(&source, &checked.layout)
        .await
        .with_context(|| format!("listing {}", checked.source.url()))?;
    if let Some(event_time) = &checked.event_time {
        partitions = event_time.compose(&partitions);
    }
    if partitions.is_empty() {
        eprintln!(
            "no partitions under {} match the layout {:?}",
            checked.source.url(),
            checked.layout.template()
        );
    }
    let engine = EngineSettings {
        target_partitions: args.target_partitions,
        memory_limit_mib: args.memory_limit_mib,
        scratch_dir: None,
        timeout_seconds: args.timeout,
    };
    let mut outcomes = Vec::new();
    for (partition, discovered) in partitions {
        let closes_at = crate::period::closes_at(&partition, &schedule, lateness).map_err(anyhow::Error::msg)?;
        if !mode.is_append() && !args.full && !args.force && now < closes_at {
            let waiting = format!("open until {closes_at}; the transform needs the whole partition ({mode})");
            outcomes.push(PartitionOutcome { partition: partition.to_string(), summary: None, error: None, waiting: Some(waiting), compacted: None });
            continue;
        }
        let task = Task {
            partition,
            expected_fingerprint: Some(fingerprint(&discovered.inputs)),
            pipeline: pipeline.clone(),
            engine: engine.clone(),
            force: args.force,
            full: args.full,
            compact: false,
            settled_before: None,
        };
        let result = run::run(&task).await;
        let due = |summary: &Summary| compaction::is_due(&pipeline.sink, &mode, now >= closes_at, summary.increments);
        let compaction = match &result {
            Ok(summary) if due(summary) => Some(run::run(&Task { compact: true, ..task }).await),
            _ => None,
        };
        let error = result.as_ref().err().or(compaction.as_ref().and_then(|c| c.as_ref().err()));
        outcomes.push(PartitionOutcome {
            partition: partition.to_string(),
            error: error.map(ToString::to_string),
            summary: result.as_ref().ok().cloned(),
            waiting: None,
            compacted: compaction.and_then(Result::ok),
        });
    }
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::json!({ "partitions": outcomes })),
        OutputFormat::Table => print_table(&outcomes),
    }
    let failed = outcomes.iter().any(|o| o.error.is_some());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn print_table(outcomes: &[PartitionOutcome]) {
    println!(
        "{:<28} {:>12} {:>10} {:>12} {:>14} {:>8} {:>8}",
        "PARTITION", "ROWS READ", "REJECTED", "WRITTEN", "BYTES", "SKIPPED", "SECONDS"
    );
    for outcome in outcomes {
        match (&outcome.summary, &outcome.error, &outcome.waiting) {
            (_, Some(error), _) => println!("{:<28} FAILED: {error}", outcome.partition),
            (Some(s), None, _) => println!(
                "{:<28} {:>12} {:>10} {:>12} {:>14} {:>8} {:>8.2}",
                outcome.partition, s.rows_read, s.rows_rejected, s.rows_written, s.bytes_written, s.skipped, s.seconds
            ),
            (None, None, Some(waiting)) => println!("{:<28} WAITING: {waiting}", outcome.partition),
            (None, None, None) => unreachable!("an outcome has a summary, an error or a reason to wait"),
        }
    }
}
