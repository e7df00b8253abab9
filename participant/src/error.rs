//! The participant's error type.

use fedshield_core::{CoreError, ModelVersion, RoundId};

/// Errors of a participant. Each names the value that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ParticipantError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot connect to coordinator at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("coordinator refused the call: {0}")]
    Refused(#[from] tonic::Status),
    #[error("protocol violation by the coordinator: {0}")]
    Protocol(String),
    #[error("downloaded model version {version} has sha256 {actual}, expected {expected}")]
    ChecksumMismatch {
        version: ModelVersion,
        expected: String,
        actual: String,
    },
    #[error("privacy ledger {path}: {reason}")]
    Ledger {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("stored update {path}: {reason}")]
    StoredUpdate {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(
        "privacy budget exhausted: spent epsilon {spent:.4} of {budget:.4}; this round would bring it to {would_be:.4}"
    )]
    BudgetExhausted {
        spent: f64,
        would_be: f64,
        budget: f64,
    },
    #[error(
        "organization-level privacy budget exhausted: spent epsilon {spent:.4} of {budget:.4}; this round would bring it to {would_be:.4}"
    )]
    OrgBudgetExhausted {
        spent: f64,
        would_be: f64,
        budget: f64,
    },
    #[error(
        "the round's plan has no differential privacy, and this participant has a privacy budget: it only trains with DP"
    )]
    PrivacyRequired,
    #[error("round {0} deadline passed before the update was ready")]
    DeadlinePassed(RoundId),
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// Result with [`ParticipantError`].
pub type Result<T, E = ParticipantError> = std::result::Result<T, E>;
