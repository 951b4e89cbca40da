//! `eventpipe convert-to-delta`: turns a pipeline's Parquet sink into a Delta table in place, of
//! exactly the files its manifests commit (see
//! [`eventpipe_transformer::commit::conversion`]). Run it while the pipeline is suspended, then
//! set `sink.format: delta`: no partition is processed again.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use eventpipe_transformer::commit::conversion::convert;
use eventpipe_transformer::store::Retrying;
use eventpipe_transformer::validate;

/// Arguments of `eventpipe convert-to-delta`.
#[derive(Args)]
pub struct ConvertArgs {
    /// The EventPipeline manifest (YAML) whose sink is converted.
    #[arg(short = 'f', long = "filename")]
    manifest: PathBuf,
    /// Convert the Parquet sink at this URL or local directory instead of spec.sink.url.
    #[arg(long)]
    sink: Option<String>,
}

/// Converts the sink and prints a line per partition.
pub async fn run(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let mut pipeline = crate::manifest_file::load(&args.manifest)?.spec.pipeline;
    if let Some(sink) = args.sink {
        pipeline.sink.url = sink;
    }
    let checked = validate::check(&pipeline)?;
    let sink = checked.sink.open(pipeline.s3.as_ref(), Retrying::Patiently).await?;
    let converted = convert(&sink).await?;
    for partition in &converted {
        let done = if partition.already_converted { "in the table already" } else { "committed" };
        println!("{} {} files {done}", partition.partition, partition.files);
    }
    println!("{}: a Delta table of {} partitions; set sink.format: delta", checked.sink.url(), converted.len());
    Ok(ExitCode::SUCCESS)
}
