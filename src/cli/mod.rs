//! Command-line flags (clap): the top-level command here, each command
//! family's flags in its own file.
//!
//! - `coordinator`: `fedshield coordinator`, its listener limits among them.
//! - `tokens`: `coordinator tokens create|list|revoke` and `coordinator issue-token`.
//! - `participant`: `fedshield participant` and `participant budget`.
//! - `privacy`: `fedshield privacy`, a federation's DP and a participant's budget.
//! - `model`: model and training plan flags shared by several commands.
//! - `offline`: `fedshield synth`, `train` and `evaluate`.
//! - `demo`: `fedshield demo`.
//! - `certs`: `fedshield certs`.
//! - `detect`: `fedshield detect`.
//! - `bench`: `fedshield bench`.
//! - `schema`: `fedshield schema draft`.
//! - `parsers`: value parsers: existing files, ε, δ, clipping norms.

mod bench;
mod certs;
mod coordinator;
mod demo;
mod detect;
mod model;
mod offline;
mod parsers;
mod participant;
mod privacy;
mod schema;
mod tokens;

use clap::{Parser, Subcommand};

pub use bench::{
    BenchArgs, BenchCommand, BenchCoordinatorNodeArgs, BenchParticipantNodeArgs, BenchRoundsArgs,
};
pub use certs::{CertsArgs, CertsCaArgs, CertsCommand, CertsParticipantArgs, CertsServerArgs};
pub use coordinator::{CoordinatorArgs, ListenerArgs};
pub use demo::DemoArgs;
pub use detect::{DetectArgs, EventFormat};
pub use model::{ModelArgs, ModelKind};
pub use offline::{DataArgs, EvaluateArgs, SynthArgs, SynthFormat, TrainArgs};
pub use participant::{ParticipantArgs, ParticipantBudgetArgs, ParticipantCommand};
pub use privacy::{BudgetArgs, DpArgs, EpsilonArgs, PrivacyArgs, PrivacyCommand, SigmaArgs};
pub use schema::{DraftFormat, SchemaArgs, SchemaCommand, SchemaDraftArgs};
pub use tokens::{
    CoordinatorCommand, IssueTokenArgs, TokenCreateArgs, TokenFileArgs, TokenLifetimeArgs,
    TokenRevokeArgs, TokensArgs, TokensCommand,
};

/// fedshield: train a shared threat-detection model on private security
/// telemetry, with federated learning over gRPC.
#[derive(Debug, Parser)]
#[command(name = "fedshield", version, about)]
pub struct Cli {
    /// Log format: human-readable text, or one JSON object per line (for log
    /// collectors). Levels come from RUST_LOG (e.g. `info`, `fedshield_coordinator=debug`).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "FEDSHIELD_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator: accept participants, run rounds, publish models (or `coordinator tokens create|list|revoke`).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Coordinator(Box<CoordinatorArgs>),
    /// Run a participant: train locally, send model updates (or `participant budget`: its privacy spend).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Participant(ParticipantArgs),
    /// Run a whole federation on 127.0.0.1 with synthetic telemetry.
    Demo(DemoArgs),
    /// Write synthetic network-flow telemetry (CSV or JSONL) and its schema.
    Synth(SynthArgs),
    /// Train a model centrally on one dataset (the non-federated baseline).
    Train(TrainArgs),
    /// Evaluate a model on a labelled dataset.
    Evaluate(EvaluateArgs),
    /// Plan differential privacy: ε of a DP-SGD run, or the noise a target ε needs.
    Privacy(PrivacyArgs),
    /// Create TLS certificates: a CA, the coordinator's server certificate, participants' client certificates.
    Certs(CertsArgs),
    /// Score live events (CSV, JSON lines such as eve.json, or Zeek logs) with a published model: one JSON verdict per event on stdout.
    Detect(DetectArgs),
    /// Benchmarks of whole federations on 127.0.0.1 (`bench rounds`: round overhead at scale).
    Bench(BenchArgs),
    /// Telemetry schemas (`schema draft`: a starting schema for a Zeek, JSON-lines or csv file).
    Schema(SchemaArgs),
}
