//! Command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fedshield_coordinator::ParticipantsPerRound;

/// fedshield: train a shared threat-detection model on private security
/// telemetry, with federated learning over gRPC.
#[derive(Debug, Parser)]
#[command(name = "fedshield", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator: accept participants, run rounds, publish models.
    Coordinator(CoordinatorArgs),
    /// Run a participant: train locally, send model updates.
    Participant(ParticipantArgs),
    /// Run a whole federation on 127.0.0.1 with synthetic telemetry.
    Demo(DemoArgs),
}

/// Model and training plan flags shared by the coordinator and the demo.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Hidden layer widths of the MLP, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,32")]
    pub hidden: Vec<u32>,
    /// Seed of the initial model.
    #[arg(long, default_value_t = 1)]
    pub init_seed: u64,
    /// Local passes over each participant's data per round.
    #[arg(long, default_value_t = 1)]
    pub local_epochs: u32,
    /// Examples per local gradient step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: u32,
    /// Learning rate of local SGD.
    #[arg(long, default_value_t = 0.1)]
    pub learning_rate: f32,
    /// Upper bound on local gradient steps per round (0 = none).
    #[arg(long, default_value_t = 0)]
    pub max_local_steps: u32,
}

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// Address to listen on for gRPC.
    #[arg(long, env = "FEDSHIELD_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Directory for published models.
    #[arg(
        long,
        env = "FEDSHIELD_DATA_DIR",
        default_value = "fedshield-data/coordinator"
    )]
    pub data_dir: PathBuf,
    /// Connected participants needed before a round opens.
    #[arg(long, default_value_t = 2)]
    pub min_participants: usize,
    /// Participants sampled per round: a count (8), a fraction (0.5) or a percentage (50%).
    #[arg(long, default_value = "100%")]
    pub participants_per_round: ParticipantsPerRound,
    /// Accepted updates needed to publish a round.
    #[arg(long, default_value_t = 2)]
    pub quorum: usize,
    /// Seconds from announcement to the round's deadline.
    #[arg(long, default_value_t = 120)]
    pub round_deadline_secs: u64,
    /// Stop after this many completed rounds (default: run until stopped).
    #[arg(long)]
    pub rounds: Option<u64>,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct ParticipantArgs {
    /// The coordinator's gRPC URL.
    #[arg(
        long,
        env = "FEDSHIELD_COORDINATOR",
        default_value = "http://127.0.0.1:7070"
    )]
    pub coordinator: String,
    /// This participant's identity (letters, digits, '.', '_', '-').
    #[arg(long, env = "FEDSHIELD_PARTICIPANT_ID")]
    pub id: String,
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
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of participants (organizations).
    #[arg(long, default_value_t = 4)]
    pub participants: usize,
    /// Rounds to run.
    #[arg(long, default_value_t = 10)]
    pub rounds: u64,
    /// Synthetic flow records per participant.
    #[arg(long, default_value_t = 4000)]
    pub records: usize,
    /// Records in the held-out evaluation set.
    #[arg(long, default_value_t = 6000)]
    pub held_out_records: usize,
    /// Directory the coordinator writes model versions to.
    #[arg(long, default_value = "fedshield-data/demo")]
    pub data_dir: PathBuf,
    /// Seed of the synthetic telemetry.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[command(flatten)]
    pub model: ModelArgs,
}
