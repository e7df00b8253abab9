//! The coordinator's error type and its mapping to gRPC status codes.

use fedshield_core::{CoreError, ModelVersion, ParticipantId, RoundId};
use tonic::{Code, Status};

/// Errors of the coordinator. Each names the value that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid participant id: {0}")]
    InvalidParticipantId(String),
    #[error("participant {0} has no open session; call Join first")]
    NotJoined(ParticipantId),
    #[error("session token does not match participant {0}'s current session")]
    BadSessionToken(ParticipantId),
    #[error("no round is open; round {0} is not accepting updates")]
    NoOpenRound(RoundId),
    #[error("round {round} is closed ({outcome}); updates are no longer accepted")]
    RoundClosed {
        round: RoundId,
        outcome: &'static str,
    },
    #[error("round {requested} is not the open round {open}")]
    WrongRound { requested: RoundId, open: RoundId },
    #[error("update is based on model version {actual}, round {round} trains version {expected}")]
    WrongBaseVersion {
        round: RoundId,
        expected: ModelVersion,
        actual: ModelVersion,
    },
    #[error("participant {participant} was not selected for round {round}")]
    NotSelected {
        participant: ParticipantId,
        round: RoundId,
    },
    #[error("participant {participant} already submitted an update for round {round}")]
    DuplicateUpdate {
        participant: ParticipantId,
        round: RoundId,
    },
    #[error("participant {participant} is already uploading an update for round {round}")]
    UploadInProgress {
        participant: ParticipantId,
        round: RoundId,
    },
    #[error("malformed update: {0}")]
    MalformedUpdate(String),
    #[error("privacy report refused: {0}")]
    InvalidPrivacyReport(String),
    #[error("update stream for round {round} went idle for more than {idle_ms}ms between chunks")]
    UpdateStalled { round: RoundId, idle_ms: u64 },
    #[error("update for round {round} was still arriving at the round's deadline")]
    UpdateTooSlow { round: RoundId },
    #[error("model version {0} does not exist")]
    UnknownModelVersion(ModelVersion),
    #[error("model store: {0}")]
    Store(#[from] CoreError),
    #[error("artifact store, {location}: {reason}")]
    Artifact { location: String, reason: String },
    #[error("artifact store configuration: {0}")]
    ArtifactStoreConfig(String),
    #[error("coordinator is shutting down")]
    ShuttingDown,
    #[error("no client certificate: this coordinator requires mutual TLS")]
    NoClientCertificate,
    #[error("access denied: {0}")]
    AccessDenied(#[from] crate::participants::AccessDenied),
    #[error("participant {participant} was revoked during round {round}; its update is refused")]
    RevokedDuringRound {
        participant: ParticipantId,
        round: RoundId,
    },
    #[error(
        "the client certificate identifies participant {authenticated}, the request claims {claimed}"
    )]
    Impersonation {
        authenticated: ParticipantId,
        claimed: String,
    },
    /// The privacy settings would weaken what the stored model's cards
    /// promise ([`crate::lineage`]).
    #[error(
        "the stored model (version {version}) was {stored}; these privacy settings would weaken it: {reasons}. \
         Start with settings that keep the stored guarantee, or pass --accept-weaker-privacy to continue with a weaker one, which every model card from then on records"
    )]
    PrivacyWeakened {
        version: u64,
        stored: String,
        reasons: String,
    },
}

impl From<CoordinatorError> for Status {
    /// The one table from coordinator errors to gRPC status codes.
    fn from(error: CoordinatorError) -> Status {
        let code = match &error {
            CoordinatorError::InvalidParticipantId(_)
            | CoordinatorError::MalformedUpdate(_)
            | CoordinatorError::InvalidPrivacyReport(_) => Code::InvalidArgument,
            CoordinatorError::NotJoined(_)
            | CoordinatorError::BadSessionToken(_)
            | CoordinatorError::NoClientCertificate => Code::Unauthenticated,
            CoordinatorError::NotSelected { .. }
            | CoordinatorError::AccessDenied(_)
            | CoordinatorError::RevokedDuringRound { .. }
            | CoordinatorError::Impersonation { .. } => Code::PermissionDenied,
            CoordinatorError::NoOpenRound(_)
            | CoordinatorError::RoundClosed { .. }
            | CoordinatorError::WrongRound { .. }
            | CoordinatorError::WrongBaseVersion { .. }
            | CoordinatorError::PrivacyWeakened { .. } => Code::FailedPrecondition,
            CoordinatorError::DuplicateUpdate { .. }
            | CoordinatorError::UploadInProgress { .. } => Code::AlreadyExists,
            CoordinatorError::UpdateStalled { .. } | CoordinatorError::UpdateTooSlow { .. } => {
                Code::DeadlineExceeded
            }
            CoordinatorError::UnknownModelVersion(_) => Code::NotFound,
            CoordinatorError::Store(_)
            | CoordinatorError::Artifact { .. }
            | CoordinatorError::ArtifactStoreConfig(_) => Code::Internal,
            CoordinatorError::ShuttingDown => Code::Unavailable,
        };
        Status::new(code, error.to_string())
    }
}

/// Result with [`CoordinatorError`].
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

/// Why a running server stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("grpc server failed: {0}")]
    Transport(String),
}
