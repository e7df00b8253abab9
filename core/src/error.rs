//! The error type of fedshield-core.

use std::path::PathBuf;

/// Errors of fedshield-core. Messages are lowercase and name the offending value.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("invalid model spec: {0}")]
    InvalidSpec(String),
    #[error("training stopped on request after {steps_done} steps")]
    Cancelled { steps_done: u64 },
    #[error("parameter count mismatch: expected {expected} parameters, got {actual}")]
    ParamCountMismatch { expected: u64, actual: u64 },
    #[error("encoded parameters have {num_bytes} bytes, which is not a multiple of 4")]
    MisalignedChunk { num_bytes: usize },
    #[error("parameter {index} is not finite ({value})")]
    NonFiniteParam { index: u64, value: f32 },
    #[error("update weight must be positive and finite, got {0}")]
    InvalidWeight(f64),
    #[error("cannot aggregate zero updates")]
    EmptyAggregate,
    /// An update that would carry a parameter of the next model out of the
    /// float32 range on its own (base + delta overflows): no rule that keeps
    /// its result between the updates' values can make it finite.
    #[error(
        "update would make parameter {index} of the next model non-finite: base plus delta overflows float32"
    )]
    OverflowingUpdate { index: u64 },
    /// An aggregate (or the server optimizer's step on it) with a parameter
    /// that is not finite; the coordinator publishes nothing and abandons the round.
    #[error("aggregated parameter {index} is not finite ({stage})")]
    NonFiniteAggregate { index: u64, stage: &'static str },
    #[error("invalid aggregation rule: {0}")]
    InvalidAggregation(String),
    /// A round closed with fewer updates than its robust rule needs; the
    /// coordinator abandons the round rather than publish an unprotected aggregate.
    #[error("aggregation rule {rule} needs at least {required} updates, got {actual}")]
    TooFewUpdates {
        rule: String,
        required: usize,
        actual: usize,
    },
    #[error("invalid training plan: {0}")]
    InvalidPlan(String),
    #[error("dataset is empty")]
    EmptyDataset,
    #[error("dataset has {actual} features per row, the model expects {expected}")]
    FeatureDimMismatch { expected: usize, actual: usize },
    #[error("invalid privacy parameters: {0}")]
    InvalidPrivacy(String),
    /// The local data is smaller than the DP plan's public minimum data size.
    /// The message names the public minimum only, never the local count: it
    /// is the reason a participant declines with.
    #[error(
        "the local training data is below the plan's public minimum of {min_records} records; declining the round"
    )]
    BelowMinimumRecords { min_records: u64 },
    #[error("training failed: {0}")]
    Training(String),
    #[error("failed to read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed model file {path}: {reason}")]
    MalformedModelFile { path: PathBuf, reason: String },
    #[error("model file {path} has sha256 {actual}, expected {expected}")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// A model file that cannot be read at all (its cause is the source).
    #[error("failed to read model {path}")]
    ReadModelFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file that is not a fedshield model (safetensors with the spec's metadata).
    #[error("model {path} is not a fedshield model: {reason}")]
    NotAModel { path: PathBuf, reason: String },
    /// A score that is NaN: no threshold can be calibrated on it.
    #[error("cannot calibrate alert thresholds: benign score {index} is NaN")]
    NanScore { index: usize },
}

/// Result with [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Returns an error and its sources as one line ("transport error: tls
/// handshake failed: ..."), since the outermost message alone often says
/// nothing useful.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
