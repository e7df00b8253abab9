//! Newtypes for identifiers that must not be mixed up.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies one federated round. Round ids increase by one for every round
/// opened, abandoned rounds included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoundId(pub u64);

/// A published model version; 0 is the initial model, each completed round
/// publishes the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelVersion(pub u64);

impl ModelVersion {
    /// Returns the version a completed round publishes on top of this one.
    pub fn next(self) -> ModelVersion {
        ModelVersion(self.0 + 1)
    }
}

/// A participant's identity: the name of the organization it trains for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ParticipantId(String);

impl ParticipantId {
    /// Longest accepted participant id, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Returns a participant id after checking it is 1..=128 characters of
    /// `[A-Za-z0-9._-]`, so it is safe in logs, file names and metric labels.
    ///
    /// # Errors
    /// Returns a description of what is wrong with the id.
    pub fn new(id: impl Into<String>) -> Result<Self, String> {
        let id = id.into();
        if id.is_empty() {
            return Err("participant id is empty".to_string());
        }
        if id.len() > Self::MAX_LEN {
            return Err(format!(
                "participant id is {} bytes long, at most {} are allowed",
                id.len(),
                Self::MAX_LEN
            ));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "participant id {id:?} contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
            ));
        }
        Ok(ParticipantId(id))
    }

    /// Returns the id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoundId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

impl fmt::Display for ModelVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids_with_unsafe_characters_are_rejected() {
        assert!(ParticipantId::new("acme-soc_1.eu").is_ok());
        assert!(ParticipantId::new("").is_err());
        assert!(ParticipantId::new("a/b").is_err());
        assert!(ParticipantId::new("a b").is_err());
        assert!(ParticipantId::new("x".repeat(129)).is_err());
    }
}
