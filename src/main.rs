//! The `fedshield` binary: parses flags and dispatches to the library.

use std::io::IsTerminal;

use anyhow::Result;
use clap::FromArgMatches;
use fedshield::cli::{Cli, Command, LogFormat};
use fedshield::{certs, checks, commands, config, demo, exit, offline};
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    keep_freed_heap_memory();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run());
    // What is still running was given its grace period already (a training
    // step, a connection a stopped peer holds open): do not wait for it.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            ExitCode::from(exit::code_of(&error))
        }
    }
}

/// How long the runtime waits for its remaining tasks after `run` returned.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest free memory at the top of a heap that glibc's allocator keeps
/// instead of giving it back to the system (its default is 128 KiB).
///
/// Coordinators and participants allocate and free buffers of tens to
/// hundreds of KiB per model chunk (TLS records, HTTP/2 frames, gRPC
/// encode and decode buffers) on several threads; with the default, freed
/// memory was given back and faulted in again, fresh, moments later. In a
/// `fedshield bench rounds` run of 2 participants × 10M parameters (7
/// rounds) the machine took 154k page faults with the default and 84k with
/// this (`perf stat -a`); rounds of 8 and 32 × 10M and 32 × 1M got 4–8% faster, the
/// coordinator's peak memory 3–7 MiB lower at up to 1M parameters, the
/// participants' within 2 MiB of before (docs/BENCHMARKS.md). What a
/// process keeps is memory it had in use, so its peak does not grow.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HEAP_TRIM_THRESHOLD_BYTES: libc::c_int = 256 * 1024 * 1024;

/// Sets [`HEAP_TRIM_THRESHOLD_BYTES`]: before any other thread starts, as
/// the allocator's settings are process-wide.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_heap_memory() {
    // SAFETY: `mallopt` only changes allocator parameters, takes plain
    // integers and is called before any thread exists.
    let accepted = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD_BYTES) };
    debug_assert_eq!(accepted, 1, "glibc accepts M_TRIM_THRESHOLD");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_heap_memory() {}

async fn run() -> Result<()> {
    let parsed = config::parse_or_exit();
    let cli = match Cli::from_arg_matches(&parsed.matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    // The same checks before a start and for --print-config: what it prints, the
    // role starts with.
    checks::check(&cli.command, &parsed)?;
    if let Some(effective) = config::print_config_requested(&parsed.matches) {
        print!("{effective}");
        return Ok(());
    }
    let default_level = match cli.command {
        Command::Demo(_) | Command::Bench(_) | Command::Schema(_) => "warn",
        _ => "info",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_logs());
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
        Command::Schema(args) => fedshield::schema::run(args),
    }
}

/// Returns whether log lines get ANSI colours: only when stderr is a terminal, so
/// files, pipes and log collectors get plain text, and never when `NO_COLOR` is set
/// to anything but "" (<https://no-color.org>).
fn colour_logs() -> bool {
    logs_in_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// Returns whether logs to a terminal (or not) get colours, given `NO_COLOR`.
fn logs_in_colour(to_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    let colour_refused = no_color.is_some_and(|value| !value.is_empty());
    to_terminal && !colour_refused
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::logs_in_colour;

    #[test]
    fn only_a_terminal_without_no_color_gets_colours() {
        assert!(logs_in_colour(true, None));
        assert!(logs_in_colour(true, Some(OsStr::new(""))));
        assert!(!logs_in_colour(true, Some(OsStr::new("1"))));
        assert!(!logs_in_colour(false, None));
        assert!(!logs_in_colour(false, Some(OsStr::new(""))));
    }
}
