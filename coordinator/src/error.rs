//! The coordinator's error type and the one table of error kinds, from
//! which both transports take their status codes: gRPC status codes for the
//! `Federation` service, HTTP status codes for the HTTPS endpoint. The
//! refusals of the HTTPS endpoint's credentials (tokens, dashboard
//! sessions) have their kinds here too.

use fedshield_core::{CoreError, ModelVersion, ParticipantId, RoundId};
use tonic::{Code, Status};

use crate::dashboard_sessions::SessionRefusal;
use crate::tokens::TokenRefusal;

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
    #[error("no update header received in time: none within {idle_ms}ms of the upload's start")]
    NoUpdateHeader { idle_ms: u64 },
    /// A task the coordinator ran for a request failed (a bug, or a panic).
    #[error("internal task failed: {0}")]
    TaskFailed(String),
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
    /// A secure-aggregation message the protocol refuses (from a
    /// participant), or a failure to unmask.
    #[error("secure aggregation: {0}")]
    SecureAggregation(String),
    #[error("round {0} does not run secure aggregation")]
    NotSecureRound(RoundId),
    #[error(
        "round {round} runs secure aggregation: updates must be sent masked (SubmitMaskedUpdate), never in the clear"
    )]
    PlainUpdateInSecureRound { round: RoundId },
    #[error("round {round} is in the secure-aggregation phase '{actual}', not '{expected}'")]
    SecurePhase {
        round: RoundId,
        expected: &'static str,
        actual: &'static str,
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

/// What kind of failure an error is, whatever the transport: the one
/// table ([`CoordinatorError::kind`]) both gRPC status codes and HTTP
/// status codes are derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is malformed.
    InvalidArgument,
    /// The caller is not who it must be (no session, no certificate).
    Unauthenticated,
    /// The caller is known and not allowed to do this.
    PermissionDenied,
    /// The request does not fit the coordinator's current state.
    FailedPrecondition,
    /// The request repeats one already done.
    AlreadyExists,
    /// The caller was too slow.
    DeadlineExceeded,
    /// What was asked for does not exist.
    NotFound,
    /// The coordinator failed (storage, a task).
    Internal,
    /// The coordinator is stopping.
    Unavailable,
    /// The request is larger than the coordinator reads.
    PayloadTooLarge,
}

impl ErrorKind {
    /// Returns the gRPC status code of this kind.
    pub fn grpc_code(self) -> Code {
        match self {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::Internal => Code::Internal,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::PayloadTooLarge => Code::OutOfRange,
        }
    }

    /// Returns the HTTP status code of this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::DeadlineExceeded => 408,
            ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition => 409,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }
}

impl CoordinatorError {
    /// The one table from coordinator errors to their kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CoordinatorError::InvalidParticipantId(_)
            | CoordinatorError::MalformedUpdate(_)
            | CoordinatorError::InvalidPrivacyReport(_)
            | CoordinatorError::SecureAggregation(_) => ErrorKind::InvalidArgument,
            CoordinatorError::NotJoined(_)
            | CoordinatorError::BadSessionToken(_)
            | CoordinatorError::NoClientCertificate => ErrorKind::Unauthenticated,
            CoordinatorError::NotSelected { .. }
            | CoordinatorError::AccessDenied(_)
            | CoordinatorError::RevokedDuringRound { .. }
            | CoordinatorError::Impersonation { .. } => ErrorKind::PermissionDenied,
            CoordinatorError::NoOpenRound(_)
            | CoordinatorError::RoundClosed { .. }
            | CoordinatorError::WrongRound { .. }
            | CoordinatorError::WrongBaseVersion { .. }
            | CoordinatorError::PrivacyWeakened { .. }
            | CoordinatorError::NotSecureRound(_)
            | CoordinatorError::PlainUpdateInSecureRound { .. }
            | CoordinatorError::SecurePhase { .. } => ErrorKind::FailedPrecondition,
            CoordinatorError::DuplicateUpdate { .. }
            | CoordinatorError::UploadInProgress { .. } => ErrorKind::AlreadyExists,
            CoordinatorError::UpdateStalled { .. }
            | CoordinatorError::UpdateTooSlow { .. }
            | CoordinatorError::NoUpdateHeader { .. } => ErrorKind::DeadlineExceeded,
            CoordinatorError::UnknownModelVersion(_) => ErrorKind::NotFound,
            CoordinatorError::Store(_)
            | CoordinatorError::Artifact { .. }
            | CoordinatorError::ArtifactStoreConfig(_)
            | CoordinatorError::TaskFailed(_) => ErrorKind::Internal,
            CoordinatorError::ShuttingDown => ErrorKind::Unavailable,
        }
    }
}

impl TokenRefusal {
    /// The table from refused bearer tokens to their kind: a token the
    /// coordinator does not know or that expired does not authenticate, a
    /// revoked one is denied, an unreadable token file is the coordinator's
    /// failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TokenRefusal::Unknown | TokenRefusal::Expired { .. } => ErrorKind::Unauthenticated,
            TokenRefusal::Revoked { .. } => ErrorKind::PermissionDenied,
            TokenRefusal::Unreadable => ErrorKind::Internal,
        }
    }
}

impl SessionRefusal {
    /// The table from refused dashboard sessions to their kind: a session
    /// that does not sign in (unknown, expired, its token no longer valid)
    /// does not authenticate; an unreadable token file or no randomness
    /// for a new session is the coordinator's failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SessionRefusal::TokenRefused(TokenRefusal::Unreadable)
            | SessionRefusal::NoRandomness => ErrorKind::Internal,
            SessionRefusal::Unknown | SessionRefusal::Expired | SessionRefusal::TokenRefused(_) => {
                ErrorKind::Unauthenticated
            }
        }
    }
}

impl From<CoordinatorError> for Status {
    fn from(error: CoordinatorError) -> Status {
        Status::new(error.kind().grpc_code(), error.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind, with the gRPC and HTTP codes a client of either
    /// transport expects for it.
    const KINDS: [(ErrorKind, Code, u16); 10] = [
        (ErrorKind::InvalidArgument, Code::InvalidArgument, 400),
        (ErrorKind::Unauthenticated, Code::Unauthenticated, 401),
        (ErrorKind::PermissionDenied, Code::PermissionDenied, 403),
        (ErrorKind::FailedPrecondition, Code::FailedPrecondition, 409),
        (ErrorKind::AlreadyExists, Code::AlreadyExists, 409),
        (ErrorKind::DeadlineExceeded, Code::DeadlineExceeded, 408),
        (ErrorKind::NotFound, Code::NotFound, 404),
        (ErrorKind::Internal, Code::Internal, 500),
        (ErrorKind::Unavailable, Code::Unavailable, 503),
        (ErrorKind::PayloadTooLarge, Code::OutOfRange, 413),
    ];

    #[test]
    fn each_kind_has_its_grpc_and_http_code() {
        for (kind, grpc, http) in KINDS {
            assert_eq!(kind.grpc_code(), grpc, "{kind:?}");
            assert_eq!(kind.http_status(), http, "{kind:?}");
        }
    }

    #[test]
    fn refused_tokens_and_sessions_have_the_http_status_clients_expect() {
        let revoked = TokenRefusal::Revoked {
            name: "ops".to_string(),
        };
        let expired = TokenRefusal::Expired {
            name: "ops".to_string(),
        };
        let cases = [
            (TokenRefusal::Unknown.kind(), 401),
            (expired.kind(), 401),
            (revoked.kind(), 403),
            (TokenRefusal::Unreadable.kind(), 500),
            (SessionRefusal::Unknown.kind(), 401),
            (SessionRefusal::Expired.kind(), 401),
            (SessionRefusal::TokenRefused(revoked).kind(), 401),
            (
                SessionRefusal::TokenRefused(TokenRefusal::Unreadable).kind(),
                500,
            ),
            (SessionRefusal::NoRandomness.kind(), 500),
        ];
        for (kind, http) in cases {
            assert_eq!(kind.http_status(), http, "{kind:?}");
        }
    }

    #[test]
    fn a_status_carries_the_kind_of_its_error_and_its_message() {
        let cases = [
            (
                CoordinatorError::UnknownModelVersion(ModelVersion(7)),
                Code::NotFound,
            ),
            (
                CoordinatorError::NoUpdateHeader { idle_ms: 300 },
                Code::DeadlineExceeded,
            ),
            (CoordinatorError::ShuttingDown, Code::Unavailable),
            (
                CoordinatorError::TaskFailed("a panic".to_string()),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }
}
