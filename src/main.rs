//! The `fedshield` binary: parses flags and dispatches to the library.

use anyhow::Result;
use clap::FromArgMatches;
use fedshield::cli::{Cli, Command};
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
        Command::Demo(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Coordinator(args) => commands::coordinator(args).await,
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
    }
}
