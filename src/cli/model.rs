//! Model and training plan flags, shared by the coordinator, the demo and `train`.

use clap::Args;

/// Which detection model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// MLP classifier, attack vs benign.
    Classifier,
    /// MLP classifier over benign and the schema's attack classes.
    Multiclass,
    /// Autoencoder trained on benign traffic; scores are reconstruction errors.
    Autoencoder,
}

/// Model and training plan flags shared by the coordinator and the demo.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Which model to train.
    #[arg(long, value_enum, default_value = "classifier")]
    pub model_kind: ModelKind,
    /// Hidden layer widths, comma-separated (for the autoencoder: the encoder, ending in the bottleneck).
    #[arg(long, value_delimiter = ',', default_value = "64,32")]
    pub hidden: Vec<u32>,
    /// Seed of the initial model.
    #[arg(long, default_value_t = 1)]
    pub init_seed: u64,
    /// Local passes over each participant's data per round.
    #[arg(long, default_value_t = 1)]
    pub local_epochs: u32,
    /// Examples per local gradient step (under DP: the expected batch size B of each Poisson sample).
    #[arg(long, default_value_t = 64)]
    pub batch_size: u32,
    /// Learning rate of local SGD.
    #[arg(long, default_value_t = 0.1)]
    pub learning_rate: f32,
    /// Upper bound on local gradient steps per round (0 = none).
    #[arg(long, default_value_t = 0)]
    pub max_local_steps: u32,
    /// L2 penalty (weight decay) of local SGD (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Autoencoder only: leave the highest-error fraction of each batch out of its step (0 = none, at most 0.5),
    /// so that a few attacks hidden in unlabelled traffic do not teach the model.
    #[arg(long, default_value_t = 0.0)]
    pub trim_fraction: f32,
}
