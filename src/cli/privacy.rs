//! Flags of `fedshield privacy` (ε and σ planning), a federation's differential
//! privacy (coordinator, demo) and a participant's privacy budget.

use clap::{Args, Subcommand};

use super::parsers::{clip_norm, delta, epsilon};

#[derive(Debug, Args)]
pub struct PrivacyArgs {
    #[command(subcommand)]
    pub command: PrivacyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Prints ε of DP-SGD with Poisson sampling rate Q, noise multiplier S and T steps, at δ.
    Epsilon(EpsilonArgs),
    /// Prints the smallest noise multiplier σ that keeps T steps at sampling rate Q within (ε, δ).
    Sigma(SigmaArgs),
}

#[derive(Debug, Args)]
pub struct EpsilonArgs {
    /// Poisson sampling rate q (expected batch size / dataset size), in [0, 1].
    #[arg(long)]
    pub q: f64,
    /// Noise multiplier σ (noise standard deviation / clipping norm).
    #[arg(long)]
    pub sigma: f64,
    /// Number of DP-SGD steps.
    #[arg(long)]
    pub steps: u64,
    /// δ.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SigmaArgs {
    /// Poisson sampling rate q, in [0, 1].
    #[arg(long)]
    pub q: f64,
    /// Number of DP-SGD steps.
    #[arg(long)]
    pub steps: u64,
    /// Target ε.
    #[arg(long)]
    pub epsilon: f64,
    /// δ.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Differential privacy of a federation, as its operator sets it.
#[derive(Debug, Clone, Args)]
pub struct DpArgs {
    /// Record-level ε each participant's data gets over all rounds (needs --rounds); enables DP-SGD.
    #[arg(long, value_parser = epsilon, env = "FEDSHIELD_DP_EPSILON")]
    pub dp_epsilon: Option<f64>,
    /// δ of the record-level (and organization-level) guarantee.
    #[arg(long, value_parser = delta, default_value_t = 1e-5, requires = "dp_epsilon")]
    pub dp_delta: f64,
    /// DP-SGD per-example gradient clipping norm C.
    #[arg(long, value_parser = clip_norm, default_value_t = 1.0, requires = "dp_epsilon")]
    pub dp_clip_norm: f64,
    /// DP-SGD public minimum data size N_min: σ is calibrated for the largest sampling rate B/N_min
    /// (B = --batch-size, the expected examples per step), participants with fewer records decline,
    /// and T = ⌈local_epochs · N_min / B⌉ steps per round.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), default_value_t = 4000, requires = "dp_epsilon")]
    pub dp_min_records: u64,
    /// Organization-level ε over all rounds: each whole update is clipped and noised too.
    #[arg(long, value_parser = epsilon, requires = "dp_epsilon")]
    pub org_dp_epsilon: Option<f64>,
    /// Organization-level clipping norm S of a whole update.
    #[arg(long, value_parser = clip_norm, default_value_t = 1.0, requires = "org_dp_epsilon")]
    pub org_dp_clip_norm: f64,
}

/// A participant's privacy budget.
#[derive(Debug, Clone, Args)]
pub struct BudgetArgs {
    /// Record-level ε this participant may spend over its lifetime; with it, rounds without DP are declined.
    #[arg(long, value_parser = epsilon, env = "FEDSHIELD_PRIVACY_EPSILON")]
    pub privacy_epsilon: Option<f64>,
    /// δ the participant accounts with.
    #[arg(long, value_parser = delta, env = "FEDSHIELD_PRIVACY_DELTA", default_value_t = 1e-5)]
    pub privacy_delta: f64,
    /// Organization-level ε this participant may spend.
    #[arg(
        long,
        value_parser = epsilon,
        env = "FEDSHIELD_PRIVACY_ORG_EPSILON",
        requires = "privacy_epsilon"
    )]
    pub privacy_org_epsilon: Option<f64>,
}
