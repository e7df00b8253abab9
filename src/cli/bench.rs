//! Flags of `fedshield bench`: `bench rounds` and the node processes it starts.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Round overhead: a coordinator and K participant processes on 127.0.0.1 move a model of P
    /// float32 parameters through a warm-up round and R timed rounds with a no-op local step.
    Rounds(BenchRoundsArgs),
    /// The coordinator process of `bench rounds` (started by it).
    #[command(hide = true)]
    CoordinatorNode(BenchCoordinatorNodeArgs),
    /// A participant process of `bench rounds` (started by it).
    #[command(hide = true)]
    ParticipantNode(BenchParticipantNodeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BenchRoundsArgs {
    /// Number of participant processes (K).
    #[arg(long, default_value_t = 2)]
    pub participants: usize,
    /// Number of float32 parameters of the model (P).
    #[arg(long, default_value_t = 100_000)]
    pub params: u32,
    /// Timed rounds (R), after one warm-up round.
    #[arg(long, default_value_t = 3)]
    pub rounds: u64,
    /// Mutual TLS between the coordinator and the participants, with a CA made for the run.
    #[arg(long)]
    pub tls: bool,
    /// Secure aggregation (SecAgg+): participants mask their updates, the coordinator unmasks
    /// only the sum.
    #[arg(long)]
    pub secure_aggregation: bool,
    /// Also time moving the same bytes over plain TCP and TLS sockets on 127.0.0.1.
    #[arg(long)]
    pub baseline: bool,
    /// Updates the coordinator receives at once (each holds one model-sized buffer).
    #[arg(long, default_value_t = 2)]
    pub max_concurrent_uploads: usize,
    /// Directory for certificates and the nodes' data (default: a new one under the system temp dir, removed at the end).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BenchCoordinatorNodeArgs {
    /// The run's directory (certificates under pki/, data under coordinator/).
    #[arg(long)]
    pub work_dir: PathBuf,
    #[arg(long)]
    pub participants: usize,
    #[arg(long)]
    pub params: u32,
    /// Rounds to run in all, warm-up included.
    #[arg(long)]
    pub rounds: u64,
    #[arg(long)]
    pub tls: bool,
    #[arg(long)]
    pub secure_aggregation: bool,
    #[arg(long, default_value_t = 2)]
    pub max_concurrent_uploads: usize,
}

#[derive(Debug, Clone, Args)]
pub struct BenchParticipantNodeArgs {
    /// The run's directory (certificates under pki/, data under participant-<id>/).
    #[arg(long)]
    pub work_dir: PathBuf,
    /// The coordinator's URL.
    #[arg(long)]
    pub coordinator: String,
    /// Participant id (its certificate is pki/<id>.pem).
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub tls: bool,
    /// What the no-op local step adds to every parameter.
    #[arg(long, default_value_t = 1e-3)]
    pub increment: f32,
}
