//! Participant sessions: joining and leaving, heartbeats, and the checks
//! each call passes (the caller is who it claims, its session is live, and
//! it may submit to the round it names).
//!
//! Not to be confused with the HTTPS endpoint's dashboard sessions
//! ([`crate::dashboard_sessions`]).

use std::time::SystemTime;

use fedshield_core::clock::unix_ms;
use fedshield_core::{ModelVersion, ParticipantId, RoundId, TrainingPlan};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Completion, Engine, EngineState, OpenRound, RoundState};
use crate::error::{CoordinatorError, Result};

/// Events queued per session before announcements start being dropped.
const SESSION_QUEUE_LEN: usize = 64;

/// A message for one participant's `Join` stream.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// Train and submit for this round.
    Announcement(Announcement),
    /// Liveness signal carrying the current model version.
    Heartbeat { current_version: ModelVersion },
    /// The federation is complete; the last event of the session.
    Complete(Completion),
}

/// What a sampled participant is told.
#[derive(Debug, Clone)]
pub struct Announcement {
    pub round_id: RoundId,
    pub base_version: ModelVersion,
    pub base_sha256: String,
    pub plan: TrainingPlan,
    pub deadline_unix_ms: u64,
    /// sha256 of the federation's feature schema, if one is configured.
    pub feature_schema_sha256: Option<String>,
    /// Whether participants should reserve an upload slot before they
    /// upload: when more were selected than there are slots, so that some
    /// uploads would otherwise wait with data buffered.
    pub reserve_upload_slot: bool,
    /// The round's secure-aggregation parameters, if it runs SecAgg+.
    pub secure_aggregation: Option<std::sync::Arc<super::SecureRoundSetup>>,
}

/// A participant's registration, returned by [`Engine::join`].
pub struct Session {
    pub participant: ParticipantId,
    /// Distinguishes this session from earlier ones of the same participant.
    pub session_id: u64,
    /// Secret that every update header of this session must carry.
    pub token: String,
    pub events: mpsc::Receiver<SessionEvent>,
}

/// A connected participant.
pub(super) struct ConnectedSession {
    pub(super) session_id: u64,
    pub(super) token: String,
    pub(super) events: mpsc::Sender<SessionEvent>,
    /// When the participant last called (join, update, decline), for status.
    pub(super) last_contact_unix_ms: u64,
}

/// Returns a fresh random token (128 bits, hex): session and upload-slot tokens.
pub(crate) fn new_session_token() -> String {
    use rand::RngExt;
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// Returns the participant id a request claims, once checked to be the
/// authenticated one (`None` without TLS) and a valid id. An impersonation
/// is logged with the `call` it was tried on.
///
/// # Errors
/// [`CoordinatorError::Impersonation`] or
/// [`CoordinatorError::InvalidParticipantId`].
pub fn claimed_participant(
    authenticated: Option<&ParticipantId>,
    claimed: String,
    call: &'static str,
) -> Result<ParticipantId> {
    if let Some(authenticated) = authenticated
        && authenticated.as_str() != claimed
    {
        let loggable_claimed = fedshield_core::untrusted_text::loggable_participant_id(&claimed);
        warn!(
            call,
            subject = %authenticated,
            claimed = %loggable_claimed,
            reason = "impersonation",
            "call refused"
        );
        return Err(CoordinatorError::Impersonation {
            authenticated: authenticated.clone(),
            claimed: loggable_claimed,
        });
    }
    ParticipantId::new(claimed).map_err(CoordinatorError::InvalidParticipantId)
}

impl EngineState {
    /// Checks that `participant` has a live session whose token is `token`,
    /// and notes the contact.
    pub(super) fn check_session(&mut self, participant: &ParticipantId, token: &str) -> Result<()> {
        match self.sessions.get_mut(participant) {
            None => Err(CoordinatorError::NotJoined(participant.clone())),
            Some(session) if session.token != token => {
                Err(CoordinatorError::BadSessionToken(participant.clone()))
            }
            Some(session) => {
                session.last_contact_unix_ms = unix_ms(SystemTime::now());
                Ok(())
            }
        }
    }

    /// Returns the open round if `participant` (with this session) may
    /// submit an update to round `round_id` now: the round is open, on
    /// `base_version` when one is given, the participant was selected and
    /// has neither contributed nor an upload in progress.
    pub(super) fn admit(
        &mut self,
        participant: &ParticipantId,
        session_token: &str,
        round_id: RoundId,
        base_version: Option<ModelVersion>,
    ) -> Result<&mut OpenRound> {
        self.check_session(participant, session_token)?;
        let open_round_id = match &self.round {
            RoundState::Open(round) => Some(round.round_id),
            RoundState::Waiting { .. } => None,
        };
        if open_round_id != Some(round_id) {
            return Err(match (self.closed_outcome(round_id), open_round_id) {
                (Some(outcome), _) => CoordinatorError::RoundClosed {
                    round: round_id,
                    outcome,
                },
                (None, Some(open)) => CoordinatorError::WrongRound {
                    requested: round_id,
                    open,
                },
                (None, None) => CoordinatorError::NoOpenRound(round_id),
            });
        }
        let RoundState::Open(round) = &mut self.round else {
            return Err(CoordinatorError::NoOpenRound(round_id));
        };
        if let Some(base_version) = base_version
            && base_version != round.base.version
        {
            return Err(CoordinatorError::WrongBaseVersion {
                round: round.round_id,
                expected: round.base.version,
                actual: base_version,
            });
        }
        if !round.selected.contains(participant) {
            return Err(CoordinatorError::NotSelected {
                participant: participant.clone(),
                round: round.round_id,
            });
        }
        if round.has_accepted(participant) {
            return Err(CoordinatorError::DuplicateUpdate {
                participant: participant.clone(),
                round: round.round_id,
            });
        }
        if round.in_flight.contains(participant) {
            return Err(CoordinatorError::UploadInProgress {
                participant: participant.clone(),
                round: round.round_id,
            });
        }
        Ok(round)
    }
}

impl Engine {
    /// Registers a participant. A second `join` of the same participant
    /// replaces its earlier session (whose stream then ends). If the
    /// participant was sampled for the open round and has not submitted yet,
    /// the new session is re-announced the round at once.
    pub fn join(&self, participant: ParticipantId) -> Session {
        let (sender, receiver) = mpsc::channel(SESSION_QUEUE_LEN);
        let token = new_session_token();
        let mut state = self.lock_state();
        let session_id = state.next_session_id;
        state.next_session_id += 1;
        state.revoked.remove(&participant);
        if let RoundState::Open(round) = &state.round
            && round.selected.contains(&participant)
            && !round.has_accepted(&participant)
        {
            let _ = sender.try_send(SessionEvent::Announcement(
                round.announcement(&self.inner.plan, self.inner.upload_permits_total),
            ));
        }
        if let Some(completion) = &state.completion {
            let _ = sender.try_send(SessionEvent::Complete(completion.clone()));
        }
        let replaced = state.sessions.insert(
            participant.clone(),
            ConnectedSession {
                session_id,
                token: token.clone(),
                events: sender,
                last_contact_unix_ms: unix_ms(SystemTime::now()),
            },
        );
        let num_connected = state.sessions.len();
        drop(state);
        self.inner.metrics.set_connected_participants(num_connected);
        info!(participant = %participant, session_id, num_connected, reconnect = replaced.is_some(), "participant joined");
        self.inner.changed.notify_one();
        Session {
            participant,
            session_id,
            token,
            events: receiver,
        }
    }

    /// Unregisters a participant's session, unless a newer session replaced it.
    pub fn leave(&self, participant: &ParticipantId, session_id: u64) {
        let mut state = self.lock_state();
        let is_current = state
            .sessions
            .get(participant)
            .is_some_and(|session| session.session_id == session_id);
        if is_current {
            state.sessions.remove(participant);
            if let RoundState::Open(round) = &state.round
                && round.selected.contains(participant)
                && !round.has_accepted(participant)
                && !round.declined.contains(participant)
            {
                state
                    .left_open_round_before_delivering
                    .insert(participant.clone());
            }
            let num_connected = state.sessions.len();
            drop(state);
            self.inner.metrics.set_connected_participants(num_connected);
            info!(participant = %participant, session_id, num_connected, "participant left");
            self.inner.changed.notify_one();
        }
    }

    /// Returns whether `session_id` is still the participant's live session.
    pub fn is_session_current(&self, participant: &ParticipantId, session_id: u64) -> bool {
        self.lock_state()
            .sessions
            .get(participant)
            .is_some_and(|session| session.session_id == session_id)
    }

    /// Sends a heartbeat to every connected session.
    pub fn send_heartbeats(&self) {
        let state = self.lock_state();
        let current_version = state.current.version;
        for session in state.sessions.values() {
            let _ = session
                .events
                .try_send(SessionEvent::Heartbeat { current_version });
        }
    }
}
