//! Revoked members: ending a session whose certificate the registry no
//! longer allows, taking the member out of the open round, and remembering
//! it for the status.
//!
//! The gRPC layer decides that a member is revoked
//! ([`crate::revocation::RevocationWatch`]); the engine only applies it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use fedshield_core::clock::unix_ms;
use fedshield_core::{ParticipantId, RoundId};
use tracing::{info, warn};

use super::{Engine, EngineState, RoundState};
use crate::error::{CoordinatorError, Result};

/// Most revoked members remembered for the status; the oldest goes first.
const MAX_REVOKED_REMEMBERED: usize = 1024;

/// A member whose live session was ended by a revocation, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedMember {
    pub participant: ParticipantId,
    /// When its session was ended, in unix milliseconds.
    pub revoked_unix_ms: u64,
    /// Why the registry no longer allows it.
    pub reason: String,
}

/// Revoked members by id, kept in the engine state.
pub(super) type RevokedMembers = BTreeMap<ParticipantId, RevokedMember>;

impl EngineState {
    /// Checks that `participant` is still selected for round `round_id`:
    /// false once a revocation took it out of the round.
    pub(super) fn check_still_selected(
        &self,
        participant: &ParticipantId,
        round_id: RoundId,
    ) -> Result<()> {
        match &self.round {
            RoundState::Open(round)
                if round.round_id == round_id && !round.selected.contains(participant) =>
            {
                Err(CoordinatorError::RevokedDuringRound {
                    participant: participant.clone(),
                    round: round_id,
                })
            }
            _ => Ok(()),
        }
    }

    /// Returns the revoked members, oldest revocation first.
    pub(super) fn revoked_members(&self) -> Vec<RevokedMember> {
        let mut revoked: Vec<RevokedMember> = self.revoked.values().cloned().collect();
        revoked.sort_by_key(|member| member.revoked_unix_ms);
        revoked
    }
}

impl Engine {
    /// Ends session `session_id` of `participant` because the registry no
    /// longer allows the certificate that opened it: the member is no
    /// longer connected, leaves the open round's selection unless its
    /// update was already accepted (an update it is still sending is then
    /// refused), and is listed as revoked in the status until it joins
    /// again. The driver then re-evaluates the round: it closes now if every
    /// remaining selected member has reported and the quorum holds, or is
    /// abandoned if the quorum is out of reach. Does nothing if a newer
    /// session replaced this one (that session is checked on its own).
    ///
    /// Takes the open round's aggregate lock, then the state lock (the
    /// documented order), so a fold of this member's update is either
    /// recorded before the member leaves the round or refused after; the
    /// wait is at most one fold.
    pub fn revoke(&self, participant: &ParticipantId, session_id: u64, reason: &str) {
        let aggregate = match &self.lock_state().round {
            RoundState::Open(round) => Some(round.aggregate.clone()),
            RoundState::Waiting { .. } => None,
        };
        let aggregate_guard = aggregate.as_ref().map(|aggregate| {
            aggregate
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        });
        let mut state = self.lock_state();
        let is_current = state
            .sessions
            .get(participant)
            .is_some_and(|session| session.session_id == session_id);
        if !is_current {
            return;
        }
        state.sessions.remove(participant);
        let left_round = match &mut state.round {
            RoundState::Open(round)
                if round.selected.contains(participant) && !round.has_accepted(participant) =>
            {
                round.selected.remove(participant);
                round.in_flight.remove(participant);
                round.declined.remove(participant);
                Some((round.round_id, round.selected.len(), round.quorum))
            }
            _ => None,
        };
        if state.revoked.len() >= MAX_REVOKED_REMEMBERED
            && let Some(oldest) = state
                .revoked
                .values()
                .min_by_key(|member| member.revoked_unix_ms)
                .map(|member| member.participant.clone())
        {
            state.revoked.remove(&oldest);
        }
        state.revoked.insert(
            participant.clone(),
            RevokedMember {
                participant: participant.clone(),
                revoked_unix_ms: unix_ms(SystemTime::now()),
                reason: reason.to_string(),
            },
        );
        let num_connected = state.sessions.len();
        drop(state);
        drop(aggregate_guard);
        self.inner.metrics.set_connected_participants(num_connected);
        match left_round {
            Some((round, num_selected, quorum)) => warn!(
                participant = %participant,
                session_id,
                round = %round,
                num_selected,
                quorum,
                reason = %reason,
                "revoked participant removed from the open round"
            ),
            None => {
                warn!(participant = %participant, session_id, reason = %reason, "revoked participant disconnected")
            }
        }
        info!(participant = %participant, num_connected, "participant left");
        self.inner.changed.notify_one();
    }
}
