//! The `fedshield` binary: parses flags and dispatches to the library.

use anyhow::Result;
use clap::FromArgMatches;
use fedshield::cli::{Cli, Command, LogFormat};
use fedshield::{certs, commands, config, demo, offline};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<()> {
    let matches = config::parse_or_exit();
    if let Some(effective) = config::print_config_requested(&matches) {
        print!("{effective}");
        return Ok(());
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let default_level = match cli.command {
        Command::Demo(_) | Command::Bench(_) => "warn",
        _ => "info",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // One object per line, with the fields of the current span (round,
        // model version, participant) and the names of the spans around it.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .flatten_event(true)
            .init(),
    }
    match cli.command {
        Command::Coordinator(args) => commands::coordinator(*args).await,
        Command::Participant(args) => commands::participant(args).await,
        Command::Demo(args) => demo::run(args).await.map(|_| ()),
        Command::Synth(args) => offline::synth(args),
        Command::Train(args) => tokio::task::spawn_blocking(move || offline::train(args)).await?,
        Command::Privacy(args) => commands::privacy(args),
        Command::Evaluate(args) => {
            tokio::task::spawn_blocking(move || offline::evaluate(args)).await?
        }
        Command::Certs(args) => certs::run(args),
        Command::Detect(args) => fedshield::detect::run(args).await,
        Command::Bench(args) => fedshield::bench::run(args).await,
    }
}
