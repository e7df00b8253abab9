//! How a participant's run ends: stopped on request, or the federation
//! complete; a permanent refusal ends it with an error instead
//! ([`crate::ParticipantError::is_permanent`]).

use fedshield_core::ModelVersion;
use fedshield_proto::v1 as pb;

use crate::error::ParticipantError;

/// How [`crate::Participant::run`] ended without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The shutdown token was cancelled (a signal).
    Stopped,
    /// The coordinator announced that the federation is complete.
    FederationComplete(FederationEnd),
}

/// What the coordinator said when the federation completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationEnd {
    /// The model version the federation ended with.
    pub final_version: ModelVersion,
    /// sha256 (hex) of that version's parameters.
    pub final_sha256: String,
    /// Rounds published over the federation's whole history.
    pub num_rounds_completed: u64,
}

impl From<pb::FederationComplete> for FederationEnd {
    fn from(message: pb::FederationComplete) -> Self {
        FederationEnd {
            final_version: ModelVersion(message.final_model_version),
            final_sha256: message.final_model_sha256,
            num_rounds_completed: message.num_rounds_completed,
        }
    }
}

/// Returns the error for a status that ended or refused the `Join` stream:
/// PERMISSION_DENIED is the coordinator refusing this participant itself
/// (permanent); anything else may pass.
pub(crate) fn join_refusal(participant: &str, status: tonic::Status) -> ParticipantError {
    if status.code() == tonic::Code::PermissionDenied {
        ParticipantError::Denied {
            participant: participant.to_string(),
            reason: status.message().to_string(),
        }
    } else {
        ParticipantError::Refused(status)
    }
}
