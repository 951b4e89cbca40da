//! `eventpipe`: the EventPipeline operator and its local runner.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use eventpipe::{athena, convert, crd, local, operator};

/// eventpipe turns date partitions of CSV files into query-ready Parquet.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or as JSON objects; `RUST_LOG` sets the filter.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once, at start-up")]
enum Command {
    /// Run a pipeline manifest on this machine: every partition under the source, no cluster.
    Run(local::RunArgs),
    /// Print the EventPipeline CustomResourceDefinition as YAML.
    Crd,
    /// Print the Athena CREATE EXTERNAL TABLE statement for a pipeline's output.
    AthenaDdl(athena::AthenaDdlArgs),
    /// Turn a pipeline's Parquet sink into a Delta table of the files its manifests commit.
    ConvertToDelta(convert::ConvertArgs),
    /// Run the operator: watch EventPipelines and launch a transformer Job per partition.
    Operator(operator::OperatorArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Operator(_) => "info,aws_config=error",
        _ => "warn,aws_config=error",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    // kube's TLS uses ring; the AWS crates would pick aws-lc-rs, and rustls refuses to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outcome = match cli.command {
        Command::Run(args) => local::run(args).await,
        Command::Crd => print_crd(),
        Command::AthenaDdl(args) => athena::print(args).await,
        Command::ConvertToDelta(args) => convert::run(args).await,
        Command::Operator(args) => operator::run(args).await,
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_crd() -> anyhow::Result<ExitCode> {
    print!("{}", crd::crd_yaml()?);
    Ok(ExitCode::SUCCESS)
}
