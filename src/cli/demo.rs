//! Flags of `fedshield demo`.

use std::path::PathBuf;

use clap::Args;

use super::model::ModelArgs;
use super::privacy::DpArgs;

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
    #[command(flatten)]
    pub dp: DpArgs,
}
