//! Flags of `fedshield synth`, `train` and `evaluate`.

use std::path::PathBuf;

use clap::Args;

use super::model::ModelArgs;

/// Output format of `fedshield synth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output file (the schema is written next to it as <stem>.schema.toml unless --schema-out is given).
    #[arg(long)]
    pub out: PathBuf,
    /// File format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: SynthFormat,
    /// Organization profile (0, 1, 2, ...): each sees different benign traffic and attack mix.
    #[arg(long, default_value_t = 0)]
    pub org: usize,
    /// Mix every benign profile and attack family evenly (for held-out test sets) instead of one organization's.
    #[arg(long, conflicts_with = "org")]
    pub balanced: bool,
    /// Number of flow records.
    #[arg(long, default_value_t = 10_000)]
    pub records: usize,
    /// Seed; the same seed gives the same records.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write the schema.
    #[arg(long)]
    pub schema_out: Option<PathBuf>,
}

/// A labelled dataset on disk and the schema to read it with.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Telemetry file: CSV, JSON lines (Zeek JSON, Suricata eve) or a Zeek TSV log, as the schema says.
    #[arg(long)]
    pub data: PathBuf,
    /// Schema (TOML) describing the file's columns.
    #[arg(long)]
    pub schema: PathBuf,
    /// Read at most this many rows.
    #[arg(long)]
    pub max_rows: Option<usize>,
    /// Suricata eve.json whose alerts label the flows of --data (and --test-data) by
    /// Community ID, as the schema's [alert_labels] table says; read locally only.
    #[arg(long)]
    pub labels_from: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Labelled test file (same schema); without it a random --test-fraction of --data is held out.
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Fraction of --data held out for testing when --test-data is absent.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Passes over the training data.
    #[arg(long, default_value_t = 10)]
    pub epochs: u32,
    /// Where to write the trained model (safetensors).
    #[arg(long, default_value = "fedshield-data/centralized.safetensors")]
    pub out: PathBuf,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Model file (safetensors, as published by the coordinator or written by `fedshield train`).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Score threshold (classifier scores are log-odds of attack); defaults to 0 (P = 0.5) for classifiers, and for autoencoders to the
    /// model's stored threshold or else the one that flags --target-fpr of this data's benign rows.
    #[arg(long)]
    pub threshold: Option<f64>,
    /// False-positive rate autoencoder thresholds are calibrated to.
    #[arg(long, default_value_t = 0.01)]
    pub target_fpr: f64,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    pub json: bool,
}
