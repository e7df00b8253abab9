//! Roles of registry members and the one table of what each role may call.
//!
//! A certificate holder in the participant registry is either a
//! **participant** (an organization that trains: it joins rounds and submits
//! updates) or a **detector** (it only downloads published models and reads
//! the coordinator's status). The role is set per registry entry
//! (`role = "detector"`; participant by default) and checked on every gRPC
//! call and every HTTPS route that a client certificate reaches, against
//! [`Operation::allowed_roles`]. Bearer tokens are operator credentials and
//! are not subject to roles.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a registry member is allowed to be.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An organization that trains: joins rounds, submits updates, and
    /// downloads models.
    #[default]
    Participant,
    /// A scoring node: downloads published models and reads the status,
    /// never takes part in rounds.
    Detector,
}

impl Role {
    /// Returns the role's name as written in the registry file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Participant => "participant",
            Role::Detector => "detector",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Roles that may train.
const TRAINING_ROLES: &[Role] = &[Role::Participant];

/// Roles that may read published models and the status.
const READING_ROLES: &[Role] = &[Role::Participant, Role::Detector];

/// Every gRPC call and HTTPS route a client certificate can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// gRPC `Join`: the session that rounds are announced on.
    Join,
    /// gRPC `SubmitUpdate`.
    SubmitUpdate,
    /// gRPC `ReserveUploadSlot`.
    ReserveUploadSlot,
    /// gRPC `DeclineRound`.
    DeclineRound,
    /// gRPC `DownloadModel`.
    DownloadModel,
    /// gRPC `GetStatus`.
    GetStatus,
    /// HTTPS `GET /v1/models/latest` and `GET /v1/models/{version}`.
    HttpsModelWeights,
    /// HTTPS `GET /v1/models/{version}/card`.
    HttpsModelCard,
    /// HTTPS `GET /v1/status`.
    HttpsStatus,
    /// HTTPS `GET /metrics`.
    HttpsMetrics,
    /// HTTPS `GET /dashboard`.
    HttpsDashboard,
}

impl Operation {
    /// Returns the roles allowed to perform this operation: the one table
    /// of role permissions.
    pub fn allowed_roles(self) -> &'static [Role] {
        match self {
            Operation::Join
            | Operation::SubmitUpdate
            | Operation::ReserveUploadSlot
            | Operation::DeclineRound => TRAINING_ROLES,
            Operation::DownloadModel
            | Operation::GetStatus
            | Operation::HttpsModelWeights
            | Operation::HttpsModelCard
            | Operation::HttpsStatus
            | Operation::HttpsMetrics
            | Operation::HttpsDashboard => READING_ROLES,
        }
    }

    /// Returns whether `role` may perform this operation.
    pub fn allows(self, role: Role) -> bool {
        self.allowed_roles().contains(&role)
    }

    /// Returns the operation's name, as logged and shown in refusals.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Join => "join",
            Operation::SubmitUpdate => "submit_update",
            Operation::ReserveUploadSlot => "reserve_upload_slot",
            Operation::DeclineRound => "decline_round",
            Operation::DownloadModel => "download_model",
            Operation::GetStatus => "get_status",
            Operation::HttpsModelWeights => "https model weights",
            Operation::HttpsModelCard => "https model card",
            Operation::HttpsStatus => "https status",
            Operation::HttpsMetrics => "https metrics",
            Operation::HttpsDashboard => "https dashboard",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectors_may_read_but_never_train() {
        for operation in [
            Operation::Join,
            Operation::SubmitUpdate,
            Operation::ReserveUploadSlot,
            Operation::DeclineRound,
        ] {
            assert!(operation.allows(Role::Participant), "{operation}");
            assert!(!operation.allows(Role::Detector), "{operation}");
        }
        for operation in [
            Operation::DownloadModel,
            Operation::GetStatus,
            Operation::HttpsModelWeights,
            Operation::HttpsModelCard,
            Operation::HttpsStatus,
            Operation::HttpsMetrics,
            Operation::HttpsDashboard,
        ] {
            assert!(operation.allows(Role::Participant), "{operation}");
            assert!(operation.allows(Role::Detector), "{operation}");
        }
    }

    #[test]
    fn roles_are_written_in_lowercase_and_default_to_participant() {
        assert_eq!(Role::default(), Role::Participant);
        assert_eq!(Role::Detector.to_string(), "detector");
    }
}
