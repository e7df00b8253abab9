//! Secure aggregation (SecAgg+) of a round, on the coordinator's side: the
//! phases of the protocol around the round's masked updates, the calls that
//! wait for a phase to close, and the sum the coordinator unmasks at the end.
//!
//! Phases, in order (each closed by the driver in [`Engine::evaluate_secure`]):
//! 1. `Advertising`: every selected participant sends its two public keys;
//!    closes when every selected participant still connected has, or after a
//!    quarter of the round's deadline. The roster goes to those that did.
//! 2. `Sharing`: each roster member sends its encrypted Shamir shares, one
//!    per neighbour; closes the same way. Each gets the shares addressed to it.
//! 3. `Masking`: masked updates arrive (with the round's deadline, quorum and
//!    dropouts as for plain updates); each is added to one running sum in
//!    Z_(2^32), the only model-sized memory the round holds.
//! 4. `Unmasking`: the survivors are asked for the self-mask shares of the
//!    survivors and the mask-key shares of those that dropped out after
//!    sharing, never both for one participant; closes when every survivor
//!    still connected answered, or after a quarter of the deadline.
//!
//! Then the round publishes (the sum is unmasked, decoded and averaged in
//! [`SecureRound::unmasked_average`]) or is abandoned with the reason.
//!
//! Locks: the protocol state ([`ServerRound`]) sits behind its own mutex.
//! The driver takes it under the engine's state lock; handlers never take
//! the state lock while holding it.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use fedshield_core::privacy::PrivacyReport;
use fedshield_core::privacy::distributed::SecAggEncoding;
use fedshield_core::secagg::{
    EncryptedShare, PublicKeys, RevealedShare, Roster, RoundSetup, ServerRound, UnmaskRequest,
    graph,
};
use fedshield_core::{ParticipantId, RoundId};
use rand::RngExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::rounds::RoundDecision;
use super::{Engine, OpenRound, RoundState};
use crate::error::{CoordinatorError, Result};

/// Where a secure round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecurePhase {
    Advertising,
    Sharing,
    Masking,
    Unmasking,
    /// The round published or was abandoned.
    Closed,
}

impl SecurePhase {
    fn name(self) -> &'static str {
        match self {
            SecurePhase::Advertising => "advertising keys",
            SecurePhase::Sharing => "sharing keys",
            SecurePhase::Masking => "masked updates",
            SecurePhase::Unmasking => "unmasking",
            SecurePhase::Closed => "closed",
        }
    }
}

/// One message of the secure-aggregation transcript, as the coordinator
/// received it: what a coordinator that keeps everything holds (see
/// [`Engine::record_secure_transcript`]).
#[derive(Debug, Clone)]
pub enum TranscriptEntry {
    Keys {
        round: RoundId,
        participant: ParticipantId,
        keys: PublicKeys,
    },
    Shares {
        round: RoundId,
        participant: ParticipantId,
        shares: Vec<EncryptedShare>,
    },
    MaskedUpdate {
        round: RoundId,
        participant: ParticipantId,
        values: Vec<u32>,
    },
    Revealed {
        round: RoundId,
        participant: ParticipantId,
        shares: Vec<RevealedShare>,
    },
}

/// Receives every [`TranscriptEntry`]; an instrumented coordinator's tap.
pub type TranscriptRecorder = std::sync::Arc<dyn Fn(TranscriptEntry) + Send + Sync>;

/// The public parameters of a secure round, as participants are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureRoundSetup {
    /// Neighbours each participant shares its secrets with.
    pub degree: usize,
    /// Shares needed to reconstruct a secret.
    pub threshold: usize,
    /// Values of a masked update (the parameters padded to a power of two).
    pub vector_len: usize,
    /// Seed of the round's public random rotation.
    pub rotation_seed: [u8; 32],
}

/// The secure-aggregation state of an open round.
pub(super) struct SecureRound {
    pub(super) setup: SecureRoundSetup,
    server: Mutex<Option<ServerRound>>,
    phase: watch::Sender<SecurePhase>,
    roster: OnceLock<Roster>,
    unmask_request: OnceLock<UnmaskRequest>,
    /// How long each of the key phases and the unmasking phase may take.
    phase_timeout: Duration,
    /// When the current phase closes at the latest (key and unmask phases).
    phase_deadline: Mutex<Instant>,
    /// Why the round closed without a sum, for the calls still waiting.
    closed_reason: OnceLock<String>,
}

impl SecureRound {
    /// Returns the state of a new secure round over `selected`.
    pub(super) fn new(
        round_id: RoundId,
        selected: &BTreeSet<ParticipantId>,
        num_params: usize,
        round_deadline: Duration,
        now: Instant,
    ) -> Self {
        let num_selected = selected.len();
        let degree = graph::recommended_degree(num_selected);
        let threshold = graph::recommended_threshold(degree);
        let vector_len = fedshield_core::privacy::distributed::padded_dim(num_params);
        let mut rng = rand::rng();
        let rotation_seed: [u8; 32] = rng.random();
        let graph_seed: [u8; 32] = rng.random();
        let setup = RoundSetup {
            round_id: round_id.0,
            degree,
            threshold,
            vector_len,
        };
        let phase_timeout = round_deadline / 4;
        SecureRound {
            setup: SecureRoundSetup {
                degree,
                threshold,
                vector_len,
                rotation_seed,
            },
            server: Mutex::new(Some(ServerRound::new(setup, selected.clone(), graph_seed))),
            phase: watch::channel(SecurePhase::Advertising).0,
            roster: OnceLock::new(),
            unmask_request: OnceLock::new(),
            phase_timeout,
            phase_deadline: Mutex::new(now + phase_timeout),
            closed_reason: OnceLock::new(),
        }
    }

    fn lock_server(&self) -> MutexGuard<'_, Option<ServerRound>> {
        self.server
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn phase(&self) -> SecurePhase {
        *self.phase.borrow()
    }

    fn set_phase(&self, phase: SecurePhase, now: Instant) {
        *self
            .phase_deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = now + self.phase_timeout;
        self.phase.send_replace(phase);
    }

    fn phase_deadline(&self) -> Instant {
        *self
            .phase_deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the round closed, waking every call still waiting on a phase.
    pub(super) fn close(&self, reason: &str) {
        let _ = self.closed_reason.set(reason.to_string());
        self.phase.send_replace(SecurePhase::Closed);
    }

    /// Waits until the round reaches `phase` (or closes), for at most
    /// `limit`.
    async fn wait_for(&self, round_id: RoundId, phase: SecurePhase, limit: Duration) -> Result<()> {
        let mut receiver = self.phase.subscribe();
        let reached = tokio::time::timeout(limit, receiver.wait_for(|now| *now >= phase)).await;
        match reached {
            Ok(Ok(now)) if *now == SecurePhase::Closed && phase != SecurePhase::Closed => {
                Err(CoordinatorError::RoundClosed {
                    round: round_id,
                    outcome: "closed",
                })
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(CoordinatorError::ShuttingDown),
            Err(_) => Err(CoordinatorError::UpdateTooSlow { round: round_id }),
        }
    }

    /// Returns the survivors' average update: unmasks the sum (taking the
    /// protocol state, so it happens once), decodes it and divides by the
    /// number of survivors. Blocking (ChaCha20 expansion of every mask).
    pub(super) fn unmasked_average(
        &self,
        encoding: &SecAggEncoding,
    ) -> Result<(Vec<f32>, BTreeSet<ParticipantId>)> {
        let server = self.lock_server().take().ok_or_else(|| {
            CoordinatorError::TaskFailed("the secure round was already unmasked".to_string())
        })?;
        let unmasked = server.unmask().map_err(secure_error)?;
        let average = encoding
            .decode_average(&unmasked.sum, unmasked.survivors.len())
            .map_err(CoordinatorError::Store)?;
        Ok((average, unmasked.survivors))
    }
}

impl SecureRound {
    /// Returns the card's account of this round's secure aggregation.
    pub(super) fn summary(
        &self,
        plan: Option<&fedshield_core::plan::SecureAggregationPlan>,
    ) -> fedshield_core::card::SecureAggregationSummary {
        let (num_survivors, num_dropped) = self.unmask_request.get().map_or((0, 0), |request| {
            (request.survivors.len(), request.dropped.len())
        });
        let distributed_dp = plan.and_then(|plan| plan.distributed_dp_statement());
        fedshield_core::card::SecureAggregationSummary {
            secure_aggregation: "yes".to_string(),
            protocol: "SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, CCS 2020): X25519, ChaCha20 masks, Shamir shares over a neighbour graph".to_string(),
            num_survivors,
            num_dropped,
            degree: self.setup.degree,
            threshold: self.setup.threshold,
            distributed_dp,
        }
    }
}

fn secure_error(error: fedshield_core::secagg::SecAggError) -> CoordinatorError {
    CoordinatorError::SecureAggregation(error.to_string())
}

/// What the driver does about a secure round now.
pub(super) enum SecureDecision {
    KeepWaiting(Instant),
    /// A phase closed; look again.
    Continue,
    /// Every share needed is in: publish.
    Publish,
    Abandon(String),
}

impl Engine {
    /// Makes the engine hand every secure-aggregation message it accepts to
    /// `recorder`, as it arrives: the instrumented coordinator of the
    /// tests, which keeps the whole transcript to show what it cannot
    /// learn from it. Only the first call has effect; never used in
    /// production.
    pub fn record_secure_transcript(&self, recorder: TranscriptRecorder) {
        let _ = self.inner.secure_transcript.set(recorder);
    }

    fn record(&self, entry: impl FnOnce() -> TranscriptEntry) {
        if let Some(recorder) = self.inner.secure_transcript.get() {
            recorder(entry());
        }
    }

    /// Returns how long until round `round_id`'s deadline (zero if it is
    /// not the open round).
    pub fn round_deadline_left(&self, round_id: RoundId) -> Duration {
        let state = self.lock_state();
        match &state.round {
            RoundState::Open(round) if round.round_id == round_id => {
                round.deadline.saturating_duration_since(Instant::now())
            }
            _ => Duration::ZERO,
        }
    }

    fn secure_round_for(
        &self,
        participant: &ParticipantId,
        session_token: &str,
        round_id: RoundId,
    ) -> Result<std::sync::Arc<SecureRound>> {
        let mut state = self.lock_state();
        state.check_session(participant, session_token)?;
        let round = match &state.round {
            RoundState::Open(round) if round.round_id == round_id => round,
            _ => {
                return Err(match state.closed_outcome(round_id) {
                    Some(outcome) => CoordinatorError::RoundClosed {
                        round: round_id,
                        outcome,
                    },
                    None => CoordinatorError::NoOpenRound(round_id),
                });
            }
        };
        if !round.selected.contains(participant) {
            return Err(CoordinatorError::NotSelected {
                participant: participant.clone(),
                round: round_id,
            });
        }
        round
            .secure
            .clone()
            .ok_or(CoordinatorError::NotSecureRound(round_id))
    }

    fn check_phase(round_id: RoundId, secure: &SecureRound, expected: SecurePhase) -> Result<()> {
        let actual = secure.phase();
        if actual != expected {
            return Err(CoordinatorError::SecurePhase {
                round: round_id,
                expected: expected.name(),
                actual: actual.name(),
            });
        }
        Ok(())
    }

    /// Takes `participant`'s public keys for round `round_id` and returns the
    /// roster once the key phase closes.
    ///
    /// # Errors
    /// The session and selection checks, a key phase already closed, keys
    /// sent twice or reused from another member.
    pub async fn advertise_keys(
        &self,
        participant: &ParticipantId,
        session_token: &str,
        round_id: RoundId,
        keys: PublicKeys,
    ) -> Result<Roster> {
        let secure = self.secure_round_for(participant, session_token, round_id)?;
        {
            let mut server = secure.lock_server();
            Self::check_phase(round_id, &secure, SecurePhase::Advertising)?;
            let server = server
                .as_mut()
                .ok_or(CoordinatorError::NotSecureRound(round_id))?;
            server
                .advertise(participant, keys.clone())
                .map_err(secure_error)?;
        }
        self.record(|| TranscriptEntry::Keys {
            round: round_id,
            participant: participant.clone(),
            keys,
        });
        info!(round = %round_id, participant = %participant, "secure aggregation keys advertised");
        self.inner.changed.notify_one();
        secure
            .wait_for(round_id, SecurePhase::Sharing, secure.phase_timeout * 2)
            .await?;
        let roster = secure
            .roster
            .get()
            .cloned()
            .ok_or(CoordinatorError::RoundClosed {
                round: round_id,
                outcome: "closed",
            })?;
        if !roster.members.contains_key(participant) {
            return Err(CoordinatorError::SecureAggregation(format!(
                "participant {participant} is not on the roster of round {round_id}"
            )));
        }
        Ok(roster)
    }

    /// Takes `participant`'s encrypted shares and returns the shares
    /// addressed to it once the sharing phase closes.
    ///
    /// # Errors
    /// The session and selection checks, the wrong phase, shares that do not
    /// name exactly the caller's neighbours.
    pub async fn share_keys(
        &self,
        participant: &ParticipantId,
        session_token: &str,
        round_id: RoundId,
        shares: Vec<EncryptedShare>,
    ) -> Result<Vec<EncryptedShare>> {
        let secure = self.secure_round_for(participant, session_token, round_id)?;
        {
            let mut server = secure.lock_server();
            Self::check_phase(round_id, &secure, SecurePhase::Sharing)?;
            let server = server
                .as_mut()
                .ok_or(CoordinatorError::NotSecureRound(round_id))?;
            let recorded = self.inner.secure_transcript.get().map(|_| shares.clone());
            server
                .submit_shares(participant, shares)
                .map_err(secure_error)?;
            if let Some(shares) = recorded {
                self.record(|| TranscriptEntry::Shares {
                    round: round_id,
                    participant: participant.clone(),
                    shares,
                });
            }
        }
        info!(round = %round_id, participant = %participant, "secure aggregation shares received");
        self.inner.changed.notify_one();
        secure
            .wait_for(round_id, SecurePhase::Masking, secure.phase_timeout * 2)
            .await?;
        let server = secure.lock_server();
        let server = server.as_ref().ok_or(CoordinatorError::RoundClosed {
            round: round_id,
            outcome: "closed",
        })?;
        server.shares_for(participant).map_err(secure_error)
    }

    /// Checks that `participant` may send a masked update to `round_id` now
    /// and returns the number of values it must have and the round's
    /// deadline.
    ///
    /// # Errors
    /// The session and selection checks, the wrong phase, a second update.
    pub fn begin_masked_update(
        &self,
        participant: &ParticipantId,
        session_token: &str,
        round_id: RoundId,
        base_version: fedshield_core::ModelVersion,
        privacy: Option<&PrivacyReport>,
    ) -> Result<(usize, Instant)> {
        let mut state = self.lock_state();
        let round = state.admit(participant, session_token, round_id, Some(base_version))?;
        let secure = round
            .secure
            .clone()
            .ok_or(CoordinatorError::NotSecureRound(round_id))?;
        Self::check_phase(round_id, &secure, SecurePhase::Masking)?;
        match (&self.inner.plan.dp_sgd, privacy) {
            (Some(_), None) => {
                return Err(CoordinatorError::InvalidPrivacyReport(
                    "the round's plan has differential privacy and the update carries no privacy report"
                        .to_string(),
                ));
            }
            (_, Some(report)) => report
                .validate()
                .map_err(|error| CoordinatorError::InvalidPrivacyReport(error.to_string()))?,
            (None, None) => {}
        }
        round.in_flight.insert(participant.clone());
        Ok((secure.setup.vector_len, round.deadline))
    }

    /// Ends an upload of a masked update that did not arrive whole.
    pub fn abort_masked_update(&self, participant: &ParticipantId, round_id: RoundId) {
        let mut state = self.lock_state();
        if let RoundState::Open(round) = &mut state.round
            && round.round_id == round_id
        {
            round.in_flight.remove(participant);
        }
        drop(state);
        self.inner.changed.notify_one();
    }

    /// Adds a fully received masked update to its round's running sum and
    /// records its sender as a contributor; returns the masked updates
    /// accepted so far. Blocking (one wrapping add over the vector).
    ///
    /// # Errors
    /// The round closed or left the masking phase, or the protocol refuses
    /// the sender (not on the sharing list, a second update).
    pub fn commit_masked_update(
        &self,
        participant: &ParticipantId,
        round_id: RoundId,
        masked: &[u32],
        privacy: Option<PrivacyReport>,
    ) -> Result<usize> {
        let secure = {
            let state = self.lock_state();
            match &state.round {
                RoundState::Open(round) if round.round_id == round_id => round.secure.clone(),
                _ => None,
            }
        };
        let Some(secure) = secure else {
            self.abort_masked_update(participant, round_id);
            return Err(CoordinatorError::RoundClosed {
                round: round_id,
                outcome: "closed",
            });
        };
        let added = {
            let mut server = secure.lock_server();
            match Self::check_phase(round_id, &secure, SecurePhase::Masking) {
                Err(error) => Err(error),
                Ok(()) => match server.as_mut() {
                    Some(server) => server
                        .add_masked_input(participant, masked)
                        .map_err(secure_error),
                    None => Err(CoordinatorError::NotSecureRound(round_id)),
                },
            }
        };
        let mut state = self.lock_state();
        let result = match (&mut state.round, added) {
            (RoundState::Open(round), Ok(())) if round.round_id == round_id => {
                self.record(|| TranscriptEntry::MaskedUpdate {
                    round: round_id,
                    participant: participant.clone(),
                    values: masked.to_vec(),
                });
                round.in_flight.remove(participant);
                round.accepted.push((participant.clone(), 1, privacy));
                self.inner.metrics.update_accepted();
                Ok(round.accepted.len())
            }
            (RoundState::Open(round), Err(error)) if round.round_id == round_id => {
                round.in_flight.remove(participant);
                Err(error)
            }
            (_, Err(error)) => Err(error),
            (_, Ok(())) => Err(CoordinatorError::RoundClosed {
                round: round_id,
                outcome: "closed",
            }),
        };
        drop(state);
        self.inner.changed.notify_one();
        result
    }

    /// Waits for the masking phase to close and returns what the
    /// coordinator asks `participant` to reveal.
    ///
    /// # Errors
    /// The session and selection checks; the round closed first.
    pub async fn await_unmask(
        &self,
        participant: &ParticipantId,
        session_token: &str,
        round_id: RoundId,
        round_deadline_left: Duration,
    ) -> Result<UnmaskRequest> {
        let secure = self.secure_round_for(participant, session_token, round_id)?;
        secure
            .wait_for(
                round_id,
                SecurePhase::Unmasking,
                round_deadline_left + secure.phase_timeout,
            )
            .await?;
        secure
            .unmask_request
            .get()
            .cloned()
            .ok_or(CoordinatorError::RoundClosed {
                round: round_id,
                outcome: "closed",
            })
    }

    /// Takes the shares `participant` reveals for the unmasking.
    ///
    /// # Errors
    /// The session and selection checks, the wrong phase, a share of a kind
    /// the request did not ask for, a second answer.
    pub fn reveal_shares(
        &self,
        participant: &ParticipantId,
        session_token: &str,
        round_id: RoundId,
        shares: Vec<RevealedShare>,
    ) -> Result<()> {
        let secure = self.secure_round_for(participant, session_token, round_id)?;
        {
            let mut server = secure.lock_server();
            Self::check_phase(round_id, &secure, SecurePhase::Unmasking)?;
            let server = server
                .as_mut()
                .ok_or(CoordinatorError::NotSecureRound(round_id))?;
            let recorded = self.inner.secure_transcript.get().map(|_| shares.clone());
            server.reveal(participant, shares).map_err(secure_error)?;
            if let Some(shares) = recorded {
                self.record(|| TranscriptEntry::Revealed {
                    round: round_id,
                    participant: participant.clone(),
                    shares,
                });
            }
        }
        info!(round = %round_id, participant = %participant, "secure aggregation shares revealed");
        self.inner.changed.notify_one();
        Ok(())
    }

    /// Decides about a secure round's phases: closes the key phases when
    /// every member still connected has answered or their time is up; the
    /// masking phase under the plain quorum and deadline rules, counting
    /// only the members whose shares were handed out (it then asks for the
    /// shares, [`Self::close_masking`], instead of publishing); publishes or
    /// abandons after the unmasking. Called by the driver under the state
    /// lock.
    pub(super) fn evaluate_secure(
        &self,
        round: &OpenRound,
        secure: &SecureRound,
        is_connected: &dyn Fn(&ParticipantId) -> bool,
        now: Instant,
    ) -> SecureDecision {
        let phase = secure.phase();
        let deadline = secure.phase_deadline().min(round.deadline);
        let mut server_guard = secure.lock_server();
        let Some(server) = server_guard.as_mut() else {
            return SecureDecision::Abandon("the secure round's state is gone".to_string());
        };
        match phase {
            SecurePhase::Advertising => {
                let advertisers = server.advertisers();
                let num_pending = round
                    .selected
                    .iter()
                    .filter(|participant| !round.declined.contains(*participant))
                    .filter(|participant| is_connected(participant))
                    .filter(|participant| !advertisers.contains(*participant))
                    .count();
                if num_pending > 0 && now < deadline {
                    return SecureDecision::KeepWaiting(deadline);
                }
                match server.close_advertising() {
                    Ok(roster) => {
                        info!(round = %round.round_id, num_members = roster.members.len(), "secure aggregation roster closed");
                        let _ = secure.roster.set(roster);
                        drop(server_guard);
                        secure.set_phase(SecurePhase::Sharing, now);
                        SecureDecision::Continue
                    }
                    Err(error) => SecureDecision::Abandon(format!(
                        "secure aggregation: key advertisement failed: {error}"
                    )),
                }
            }
            SecurePhase::Sharing => {
                let sharers = server.sharers();
                let roster = secure.roster.get();
                let num_pending = roster
                    .map(|roster| {
                        roster
                            .members
                            .keys()
                            .filter(|participant| !round.declined.contains(*participant))
                            .filter(|participant| is_connected(participant))
                            .filter(|participant| !sharers.contains(*participant))
                            .count()
                    })
                    .unwrap_or(0);
                if num_pending > 0 && now < deadline {
                    return SecureDecision::KeepWaiting(deadline);
                }
                match server.close_sharing() {
                    Ok(()) => {
                        info!(round = %round.round_id, num_shared = server.sharers().len(), "secure aggregation key sharing closed");
                        drop(server_guard);
                        secure.set_phase(SecurePhase::Masking, now);
                        SecureDecision::Continue
                    }
                    Err(error) => SecureDecision::Abandon(format!(
                        "secure aggregation: key sharing failed: {error}"
                    )),
                }
            }
            SecurePhase::Masking => {
                // Only the members whose shares were handed out (U2) can
                // still send a masked update: one left out at the key phases
                // must not hold the round until its deadline. Where the plain
                // rules would publish, the shares are asked for instead.
                let sharers = server.sharers();
                drop(server_guard);
                match self.evaluate_round(round, &sharers, is_connected, now) {
                    RoundDecision::Publish => self.close_masking(round, secure, now),
                    RoundDecision::KeepWaiting(deadline) => SecureDecision::KeepWaiting(deadline),
                    RoundDecision::Abandon(reason) => SecureDecision::Abandon(reason),
                }
            }
            SecurePhase::Unmasking => {
                let Some(request) = secure.unmask_request.get() else {
                    return SecureDecision::Abandon("no unmask request was made".to_string());
                };
                let revealers = server.revealers();
                let num_pending = request
                    .survivors
                    .iter()
                    .filter(|participant| is_connected(participant))
                    .filter(|participant| !revealers.contains(*participant))
                    .count();
                let missing = server.missing_for_unmask();
                if num_pending > 0 && now < secure.phase_deadline() {
                    return SecureDecision::KeepWaiting(secure.phase_deadline());
                }
                if missing.is_empty() {
                    return SecureDecision::Publish;
                }
                let missing: Vec<String> = missing.iter().map(ToString::to_string).collect();
                SecureDecision::Abandon(format!(
                    "secure aggregation cannot unmask the sum: fewer than {} of their neighbours revealed shares of {} ({} of {} survivors answered); nothing is published",
                    secure.setup.threshold,
                    missing.join(", "),
                    revealers.len(),
                    request.survivors.len(),
                ))
            }
            SecurePhase::Closed => SecureDecision::Abandon("the secure round closed".to_string()),
        }
    }

    /// Closes the masking phase: the survivors and the dropped participants
    /// are fixed and the unmask request is made. Called by the driver under
    /// the state lock.
    pub(super) fn close_masking(
        &self,
        round: &OpenRound,
        secure: &SecureRound,
        now: Instant,
    ) -> SecureDecision {
        let mut server_guard = secure.lock_server();
        let Some(server) = server_guard.as_mut() else {
            return SecureDecision::Abandon("the secure round's state is gone".to_string());
        };
        match server.close_masking() {
            Ok(request) => {
                info!(
                    round = %round.round_id,
                    num_survivors = request.survivors.len(),
                    num_dropped = request.dropped.len(),
                    "secure aggregation masking closed; asking for shares"
                );
                if !request.dropped.is_empty() {
                    warn!(round = %round.round_id, dropped = ?request.dropped, "participants dropped out after sharing keys; their pairwise masks are removed");
                }
                let _ = secure.unmask_request.set(request);
                drop(server_guard);
                secure.set_phase(SecurePhase::Unmasking, now);
                SecureDecision::Continue
            }
            Err(error) => SecureDecision::Abandon(format!(
                "secure aggregation: closing the masked updates failed: {error}"
            )),
        }
    }
}
