//! The error type of the secure-aggregation protocol, with one variant per
//! case the network layer maps to its own status code.

use std::fmt;

use crate::ParticipantId;

use super::ShareKind;

/// The phases of a SecAgg+ round, in order. A participant's round is in the
/// phase whose message it sends next; the coordinator's in the phase whose
/// messages it collects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Public keys are advertised (round 0 of Bonawitz et al.).
    Advertising,
    /// Encrypted shares of the secrets are sent to the neighbours (round 1).
    Sharing,
    /// Masked inputs are sent (round 2).
    Masking,
    /// Shares are revealed so the coordinator can remove the masks (round 4).
    Unmasking,
    /// The round is over for this side.
    Finished,
}

impl fmt::Display for Phase {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Phase::Advertising => "advertising",
            Phase::Sharing => "sharing",
            Phase::Masking => "masking",
            Phase::Unmasking => "unmasking",
            Phase::Finished => "finished",
        };
        formatter.write_str(name)
    }
}

/// Errors of the SecAgg+ protocol. Messages are lowercase and name the
/// participant or value that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum SecAggError {
    /// A participant that is not part of the round (not selected, not in the
    /// roster, or not in the set a phase is restricted to).
    #[error("participant {participant} is not part of this round's {set}")]
    UnknownParticipant {
        participant: ParticipantId,
        set: &'static str,
    },
    /// A participant sent the message of a phase a second time.
    #[error("participant {participant} already sent its message of the {phase} phase")]
    Duplicate {
        phase: Phase,
        participant: ParticipantId,
    },
    /// A call that belongs to another phase of the round.
    #[error("the round is in the {actual} phase; this step needs the {expected} phase")]
    WrongPhase { expected: Phase, actual: Phase },
    /// A message whose content is not what the protocol allows.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Too few participants are left for the protocol to go on.
    #[error("{stage}: {num_survivors} participants remain, at least {threshold} are needed")]
    TooFewSurvivors {
        stage: &'static str,
        num_survivors: usize,
        threshold: usize,
    },
    /// An unmask request asks for both the self-mask and the mask key share
    /// of the same participant: answering would unmask its input.
    #[error("unmask request names {owner} both as survivor and as dropped")]
    BothShareKindsRequested { owner: ParticipantId },
    /// An encrypted share that does not decrypt under the pairwise key
    /// (tampered, misaddressed or from another round).
    #[error("the encrypted share from {from} does not decrypt")]
    Decryption { from: ParticipantId },
    /// A secret that cannot be reconstructed from the shares at hand.
    #[error("reconstruction failed: {0}")]
    Reconstruction(String),
    /// Too few revealed shares to reconstruct a participant's secret.
    #[error(
        "only {num_shares} {kind} shares of {owner} were revealed, {threshold} are needed to reconstruct it"
    )]
    TooFewShares {
        owner: ParticipantId,
        kind: ShareKind,
        num_shares: usize,
        threshold: usize,
    },
    /// A revealed share of the other kind than the unmask request asked for
    /// its owner.
    #[error(
        "a {actual} share of {owner} was revealed, the unmask request asked for its {expected} share"
    )]
    WrongShareKind {
        owner: ParticipantId,
        expected: ShareKind,
        actual: ShareKind,
    },
    /// A reconstructed mask key that does not match the public key its owner
    /// advertised.
    #[error("the reconstructed mask key of {owner} does not match its advertised public key")]
    KeyMismatch { owner: ParticipantId },
    /// A public key of small order (the Diffie-Hellman result would be all
    /// zeros, known to anyone).
    #[error("the public key of {participant} has small order")]
    LowOrderKey { participant: ParticipantId },
    /// Round parameters that cannot work (threshold above the degree, ...).
    #[error("invalid round setup: {0}")]
    InvalidSetup(String),
}

/// Results of the secure-aggregation protocol.
pub type Result<T> = std::result::Result<T, SecAggError>;
