//! Flags of `fedshield participant` and `participant budget`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parsers::existing_file;
use super::privacy::BudgetArgs;

#[derive(Debug, Subcommand)]
pub enum ParticipantCommand {
    /// Prints the privacy spent so far (from the ledger in --data-dir) and what is left of the budget.
    Budget(ParticipantBudgetArgs),
}

#[derive(Debug, Args)]
pub struct ParticipantBudgetArgs {
    /// The participant's data directory (holds its privacy ledger).
    #[arg(
        long,
        env = "FEDSHIELD_DATA_DIR",
        default_value = "fedshield-data/participant"
    )]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ParticipantArgs {
    #[command(subcommand)]
    pub command: Option<ParticipantCommand>,
    /// Config file (TOML) of this role's settings: keys are the flags without dashes
    /// (`tls_cert = "..."`); flags and FEDSHIELD_* environment variables override it.
    #[arg(long, value_parser = existing_file)]
    pub config: Option<PathBuf>,
    /// Print the effective settings (as a config file) and exit without starting anything.
    #[arg(long)]
    pub print_config: bool,
    /// The coordinator's gRPC URL.
    #[arg(
        long,
        env = "FEDSHIELD_COORDINATOR",
        default_value = "https://127.0.0.1:7070"
    )]
    pub coordinator: String,
    /// This participant's identity (letters, digits, '.', '_', '-').
    #[arg(long, env = "FEDSHIELD_PARTICIPANT_ID", required = true)]
    pub id: Option<String>,
    /// Directory for the model cache.
    #[arg(
        long,
        env = "FEDSHIELD_DATA_DIR",
        default_value = "fedshield-data/participant"
    )]
    pub data_dir: PathBuf,
    /// Organization profile of the synthetic telemetry to train on (0, 1, 2, ...).
    #[arg(long, default_value_t = 0)]
    pub synthetic_org: usize,
    /// Seed of the synthetic telemetry.
    #[arg(long, default_value_t = 1)]
    pub synthetic_seed: u64,
    /// Number of synthetic flow records.
    #[arg(long, default_value_t = 5000)]
    pub synthetic_records: usize,
    /// Train on this telemetry file (CSV, JSON lines or a Zeek log) instead of synthetic telemetry (needs --schema).
    #[arg(long, value_parser = existing_file, requires = "schema")]
    pub data: Option<PathBuf>,
    /// Schema (TOML) of --data.
    #[arg(long, value_parser = existing_file, requires = "data")]
    pub schema: Option<PathBuf>,
    /// Suricata eve.json whose alerts label the flows of --data by Community ID, as the
    /// schema's [alert_labels] table says. The join runs here; nothing about the alerts
    /// leaves this machine.
    #[arg(long, value_parser = existing_file, requires = "data")]
    pub labels_from: Option<PathBuf>,
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// The CA the coordinator's certificate chains to (PEM).
    #[arg(long, value_parser = existing_file, env = "FEDSHIELD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This participant's client certificate (PEM), from `fedshield certs participant`; its subject must be --id.
    #[arg(long, value_parser = existing_file, env = "FEDSHIELD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This participant's private key (PEM).
    #[arg(long, value_parser = existing_file, env = "FEDSHIELD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The name the coordinator's certificate must carry (default: the host of --coordinator).
    #[arg(long, env = "FEDSHIELD_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Connect in plaintext (an http:// coordinator started with --insecure). For local experiments only.
    #[arg(long, conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    pub insecure: bool,
    /// Serve Prometheus metrics over plain HTTP here (GET /metrics), for a scraper on a private network. No TLS and no authentication: it carries only counts, sizes, durations and the ledger's total epsilon (no keys or telemetry). Default: none.
    #[arg(long, env = "FEDSHIELD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds a graceful stop (SIGINT or SIGTERM) may take (declining an open round, ending
    /// training after its current step); then the participant stops anyway. A second signal
    /// stops it at once.
    #[arg(long, default_value_t = crate::shutdown::DEFAULT_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
}
