//! The status snapshot: what the status endpoints (gRPC `GetStatus`, the
//! HTTPS status API, the metrics' participant gauges) read of the engine.

use std::sync::Arc;

use fedshield_core::{ModelVersion, ParticipantId, RoundId};

use super::{Engine, RevokedMember, RoundState, RoundSummary};
use crate::dropouts::DropoutRecord;
use crate::metrics::ParticipantStates;
use crate::registry::PublishedModel;

/// A snapshot for status endpoints.
#[derive(Debug, Clone)]
pub struct EngineStatus {
    pub current: Arc<PublishedModel>,
    pub connected: Vec<ParticipantId>,
    /// When each connected participant last called the coordinator (join,
    /// update, decline), in unix milliseconds; same order as `connected`.
    pub last_contact_unix_ms: Vec<u64>,
    pub open_round: Option<OpenRoundStatus>,
    pub num_rounds_completed: u64,
    pub num_rounds_abandoned: u64,
    pub recent_rounds: Vec<RoundSummary>,
    /// Members whose session a revocation ended, oldest first.
    pub revoked: Vec<RevokedMember>,
    /// Every participant that ever left a round it was selected for without
    /// an update or a decline, by id ([`crate::dropouts`]).
    pub dropouts: Vec<(ParticipantId, DropoutRecord)>,
}

/// The open round, for status endpoints.
#[derive(Debug, Clone)]
pub struct OpenRoundStatus {
    pub round_id: RoundId,
    pub base_version: ModelVersion,
    pub selected: Vec<ParticipantId>,
    pub accepted: Vec<ParticipantId>,
    /// Selected participants that said they will not submit.
    pub declined: Vec<ParticipantId>,
    /// Selected participants whose update is being received.
    pub uploading: Vec<ParticipantId>,
    pub quorum: usize,
    pub deadline_unix_ms: u64,
    pub attempt: u32,
}

impl Engine {
    /// Returns a status snapshot.
    pub fn status(&self) -> EngineStatus {
        let state = self.lock_state();
        let mut connected: Vec<ParticipantId> = state.sessions.keys().cloned().collect();
        connected.sort();
        let last_contact_unix_ms = connected
            .iter()
            .map(|participant| {
                state
                    .sessions
                    .get(participant)
                    .map_or(0, |session| session.last_contact_unix_ms)
            })
            .collect();
        let open_round = match &state.round {
            RoundState::Open(round) => Some(OpenRoundStatus {
                round_id: round.round_id,
                base_version: round.base.version,
                selected: round.selected.iter().cloned().collect(),
                accepted: round
                    .accepted
                    .iter()
                    .map(|(participant, _, _)| participant.clone())
                    .collect(),
                declined: round.declined.iter().cloned().collect(),
                uploading: round.in_flight.iter().cloned().collect(),
                quorum: round.quorum,
                deadline_unix_ms: round.deadline_unix_ms,
                attempt: round.attempt,
            }),
            RoundState::Waiting { .. } => None,
        };
        EngineStatus {
            current: state.current.clone(),
            connected,
            last_contact_unix_ms,
            open_round,
            num_rounds_completed: state.num_rounds_completed,
            num_rounds_abandoned: state.num_rounds_abandoned,
            recent_rounds: state.history.iter().cloned().collect(),
            revoked: state.revoked_members(),
            dropouts: state.dropouts.records(),
        }
    }
}

impl EngineStatus {
    /// Returns how many participants are in each state of the metrics'
    /// participant gauges.
    pub fn participant_states(&self) -> ParticipantStates {
        let mut states = ParticipantStates {
            connected: self.connected.len(),
            sitting_out: self
                .dropouts
                .iter()
                .filter(|(_, record)| record.is_sitting_out())
                .count(),
            revoked: self.revoked.len(),
            ..ParticipantStates::default()
        };
        let Some(round) = &self.open_round else {
            return states;
        };
        states.selected = round.selected.len();
        for participant in &round.selected {
            let state = if round.accepted.contains(participant) {
                &mut states.submitted
            } else if round.declined.contains(participant) {
                &mut states.declined
            } else if round.uploading.contains(participant) {
                &mut states.uploading
            } else if self.connected.contains(participant) {
                &mut states.training
            } else {
                &mut states.left_round
            };
            *state += 1;
        }
        states
    }
}
