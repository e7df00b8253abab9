//! The participant's error type.

use fedshield_core::{CoreError, ModelVersion, RoundId};
use fedshield_proto::download::DownloadError;

/// Errors of a participant. Each names the value that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ParticipantError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot connect to coordinator at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("coordinator refused the call: {0}")]
    Refused(#[from] tonic::Status),
    /// The coordinator refuses this participant itself (PERMISSION_DENIED
    /// on `Join`): not in its registry, revoked, or a certificate that names
    /// another participant. Retrying cannot help.
    #[error("the coordinator refuses participant {participant}: {reason}")]
    Denied { participant: String, reason: String },
    /// The federation's feature schema is not the one the local data was
    /// read with; each line names one difference.
    #[error(
        "the federation's feature schema (sha256 {federation_sha256}) differs from the local one (sha256 {local_sha256}): {}; train with the federation's schema",
        differences.join("; ")
    )]
    SchemaMismatch {
        federation_sha256: String,
        local_sha256: String,
        differences: Vec<String>,
    },
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

impl ParticipantError {
    /// Returns whether the error ends the participant for good: retrying
    /// (reconnecting, or waiting for the next round) cannot change it.
    /// - [`ParticipantError::Denied`]: the coordinator refuses this
    ///   participant, whatever it sends.
    /// - The budget errors: every round of the federation costs what this
    ///   one would, and the ledger only grows, so no later round fits.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ParticipantError::Denied { .. }
                | ParticipantError::BudgetExhausted { .. }
                | ParticipantError::OrgBudgetExhausted { .. }
        )
    }
}

impl From<DownloadError> for ParticipantError {
    fn from(error: DownloadError) -> Self {
        match error {
            DownloadError::Refused(status) => ParticipantError::Refused(status),
            DownloadError::Protocol(reason) => ParticipantError::Protocol(reason),
            DownloadError::ChecksumMismatch {
                version,
                expected,
                actual,
            } => ParticipantError::ChecksumMismatch {
                version,
                expected,
                actual,
            },
            DownloadError::Core(error) => ParticipantError::Core(error),
        }
    }
}

/// Result with [`ParticipantError`].
pub type Result<T, E = ParticipantError> = std::result::Result<T, E>;
