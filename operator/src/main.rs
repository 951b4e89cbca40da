//! `eventpipe`: the EventPipeline operator and its local runner.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod athena;
mod crd;
mod local;
mod manifest_file;

/// eventpipe turns date partitions of CSV files into query-ready Parquet.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline manifest on this machine: every partition under the source, no cluster.
    Run(local::RunArgs),
    /// Print the EventPipeline CustomResourceDefinition as YAML.
    Crd,
    /// Print the Athena CREATE EXTERNAL TABLE statement for a pipeline's output.
    AthenaDdl(athena::AthenaDdlArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,aws_config=error".into()),
        )
        .init();
    let outcome = match cli.command {
        Command::Run(args) => local::run(args).await,
        Command::Crd => print_crd(),
        Command::AthenaDdl(args) => athena::print(args).await,
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
