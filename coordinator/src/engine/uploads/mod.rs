//! Updates, from header to aggregate: admitting an update to the open
//! round ([`UpdateTicket`]), receiving its chunks, holding upload slots,
//! folding it into the round's aggregate, and participants declining a
//! round.
//!
//! - [`receive`]: the chunk loop of one upload, its timeouts and upload permit.
//! - [`masked`]: the chunk loop of one masked update of a secure round.
//! - [`slots`]: upload slots reserved ahead of an upload.

use std::sync::Arc;

use fedshield_core::aggregation::fedavg::check_applies_finitely;
use fedshield_core::privacy::PrivacyReport;
use fedshield_core::{ModelVersion, ParticipantId, RoundId};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Engine, RoundState, SharedAggregate};
use crate::error::{CoordinatorError, Result};
use crate::registry::PublishedModel;
use crate::weighting::UpdateWeight;

mod masked;
mod receive;
mod slots;

pub use masked::{MaskedPart, MaskedUpdateHeader};

pub use receive::{
    ParamEncoding, ReceivedUpdate, ReservedSlot, UpdateHeader, UpdatePart, UploadError,
    UploadReceiver, UploadTransportError,
};

/// What an update header declares, as the engine needs it.
#[derive(Debug, Clone)]
pub struct UpdateRequest {
    pub round_id: RoundId,
    pub base_version: ModelVersion,
    pub participant: ParticipantId,
    pub session_token: String,
    pub num_samples: u64,
    pub num_params: u64,
    /// The participant's privacy guarantee; required when the plan has DP.
    pub privacy: Option<PrivacyReport>,
}

/// Proof that an update was admitted to a round and is being received.
/// Dropping it without [`Engine::commit_update`] (client went away, bad
/// chunk, timeout) frees the participant's slot so it may retry.
pub struct UpdateTicket {
    engine: Engine,
    round_id: RoundId,
    participant: ParticipantId,
    num_samples: u64,
    /// The update's weight in the aggregate: `num_samples`, capped.
    weight: UpdateWeight,
    /// The round's base model: an update that would carry a parameter out
    /// of the float32 range on its own is refused before it is folded.
    base: Arc<PublishedModel>,
    privacy: Option<PrivacyReport>,
    num_params: usize,
    /// The round's deadline: an update still arriving then is refused.
    deadline: Instant,
    aggregate: SharedAggregate,
    committed: bool,
}

impl UpdateTicket {
    /// Returns the number of parameters the update must have.
    pub fn num_params(&self) -> usize {
        self.num_params
    }

    /// Returns the round the update is for.
    pub fn round_id(&self) -> RoundId {
        self.round_id
    }

    /// Returns the deadline of the update's round.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Drop for UpdateTicket {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let mut state = self.engine.lock_state();
        if let RoundState::Open(round) = &mut state.round
            && round.round_id == self.round_id
        {
            round.in_flight.remove(&self.participant);
        }
        drop(state);
        self.engine.inner.changed.notify_one();
    }
}

impl Engine {
    /// Checks that `participant` may submit to round `round_id` now (as
    /// [`Self::begin_update`] would, short of the header's own fields), and
    /// returns the round's deadline: what an upload slot is reserved for.
    ///
    /// # Errors
    /// As [`Self::begin_update`]'s session, round and selection checks.
    pub fn check_may_upload(
        &self,
        participant: &ParticipantId,
        session_token: &str,
        round_id: RoundId,
    ) -> Result<Instant> {
        let mut state = self.lock_state();
        let round = state.admit(participant, session_token, round_id, None)?;
        Ok(round.deadline)
    }

    /// Returns the semaphore bounding concurrent update receptions.
    pub fn upload_permits(&self) -> Arc<Semaphore> {
        self.inner.upload_permits.clone()
    }

    /// Admits an update header to the open round, before any data is read.
    ///
    /// # Errors
    /// A specific [`CoordinatorError`] for each reason an update is refused;
    /// nothing changes on error.
    pub fn begin_update(&self, request: UpdateRequest) -> Result<UpdateTicket> {
        let mut state = self.lock_state();
        let round = state.admit(
            &request.participant,
            &request.session_token,
            request.round_id,
            Some(request.base_version),
        )?;
        if round.secure.is_some() {
            return Err(CoordinatorError::PlainUpdateInSecureRound {
                round: round.round_id,
            });
        }
        let num_params = round.base.weights.params.len();
        if request.num_params != num_params as u64 {
            return Err(CoordinatorError::MalformedUpdate(format!(
                "header declares {} parameters, model version {} has {num_params}",
                request.num_params, round.base.version
            )));
        }
        match (&self.inner.plan.dp_sgd, &request.privacy) {
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
        // After the privacy report: a DP update must declare exactly 1.
        let weight = self
            .inner
            .config
            .weighting
            .weight_of(request.num_samples, self.inner.plan.dp_sgd.is_some())?;
        round.in_flight.insert(request.participant.clone());
        Ok(UpdateTicket {
            engine: self.clone(),
            round_id: round.round_id,
            participant: request.participant,
            num_samples: request.num_samples,
            weight,
            base: round.base.clone(),
            privacy: request.privacy,
            num_params,
            deadline: round.deadline,
            aggregate: round.aggregate.clone(),
            committed: false,
        })
    }

    /// Records that a sampled participant will not submit for a round, so the
    /// round can close (or be abandoned) without waiting for its deadline.
    ///
    /// # Errors
    /// The same session, round and selection checks as [`Self::begin_update`].
    pub fn decline(
        &self,
        participant: &ParticipantId,
        session_token: &str,
        round_id: RoundId,
        reason: &str,
    ) -> Result<()> {
        let mut state = self.lock_state();
        state.check_session(participant, session_token)?;
        let round = match &mut state.round {
            RoundState::Open(round) if round.round_id == round_id => round,
            _ => return Err(CoordinatorError::NoOpenRound(round_id)),
        };
        if !round.selected.contains(participant) {
            return Err(CoordinatorError::NotSelected {
                participant: participant.clone(),
                round: round_id,
            });
        }
        if round.has_accepted(participant) {
            return Err(CoordinatorError::DuplicateUpdate {
                participant: participant.clone(),
                round: round_id,
            });
        }
        round.declined.insert(participant.clone());
        drop(state);
        let reason = fedshield_core::untrusted_text::escape_bounded(
            reason,
            fedshield_core::untrusted_text::MAX_FREE_TEXT_CHARS,
        );
        warn!(round = %round_id, participant = %participant, reason = %reason, "participant declined the round");
        self.inner.changed.notify_one();
        Ok(())
    }

    /// Folds a fully received and validated update into its round's aggregate
    /// and returns the number of updates accepted in the round so far.
    ///
    /// # Errors
    /// [`CoordinatorError::RoundClosed`] if the round closed while the update
    /// was in transit; the update is then discarded.
    pub async fn commit_update(&self, mut ticket: UpdateTicket, delta: Vec<f32>) -> Result<usize> {
        let engine = self.clone();
        let aggregate = ticket.aggregate.clone();
        let round_id = ticket.round_id;
        let participant = ticket.participant.clone();
        let num_samples = ticket.num_samples;
        let weight = ticket.weight;
        let base = ticket.base.clone();
        let privacy = ticket.privacy;
        // Fold and record under the aggregate lock (then the state lock, the
        // documented order): a round that closes takes the aggregate under the
        // same lock, so an update is either both folded and listed as a
        // contributor, or neither.
        let committed = tokio::task::spawn_blocking(move || -> Result<usize> {
            let (result, spare_buffer) = engine.fold_and_record(
                &aggregate,
                &base.weights.params,
                delta,
                round_id,
                participant,
                num_samples,
                weight,
                privacy,
            );
            // Streaming rules hand the buffer back; buffering rules keep it
            // until the round closes.
            if let Some(buffer) = spare_buffer {
                engine.recycle_receive_buffer(buffer);
            }
            result
        })
        .await
        .map_err(|error| CoordinatorError::TaskFailed(format!("folding an update: {error}")))?;
        let num_accepted = committed?;
        ticket.committed = true;
        match privacy {
            Some(report) => info!(
                round = %ticket.round_id,
                participant = %ticket.participant,
                num_accepted,
                reported_epsilon = report.epsilon,
                reported_delta = report.delta,
                reported_org_epsilon = ?report.org_epsilon,
                "update accepted"
            ),
            None => {
                info!(round = %ticket.round_id, participant = %ticket.participant, num_accepted, "update accepted")
            }
        }
        self.inner.changed.notify_one();
        Ok(num_accepted)
    }

    /// Returns an empty buffer for receiving an update, reusing the memory of
    /// an earlier update when one is pooled.
    pub fn take_receive_buffer(&self) -> Vec<f32> {
        self.inner
            .receive_buffers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Returns a model-sized buffer to the pool: at most one per concurrent
    /// upload plus one for the next round's sum, the memory the coordinator
    /// needs at once besides its current model.
    pub fn recycle_receive_buffer(&self, mut buffer: Vec<f32>) {
        buffer.clear();
        let mut pool = self
            .inner
            .receive_buffers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if pool.len() < self.inner.upload_permits_total + 1 {
            pool.push(buffer);
        }
    }

    /// Folds `delta` with its weight into `aggregate` and records the
    /// participant as a contributor (with its declared example count), or
    /// refuses if the round has closed or if `delta` would carry a parameter
    /// of `base` out of the float32 range on its own. Blocking.
    #[allow(clippy::too_many_arguments)]
    fn fold_and_record(
        &self,
        aggregate: &SharedAggregate,
        base: &[f32],
        delta: Vec<f32>,
        round_id: RoundId,
        participant: ParticipantId,
        num_samples: u64,
        weight: UpdateWeight,
        privacy: Option<PrivacyReport>,
    ) -> (Result<usize>, Option<Vec<f32>>) {
        // Every rule keeps each coordinate between the deltas' values, so an
        // aggregate of updates that each pass this check is finite.
        if let Err(error) = check_applies_finitely(base, &delta) {
            return (
                Err(CoordinatorError::MalformedUpdate(error.to_string())),
                Some(delta),
            );
        }
        let mut guard = aggregate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(aggregator) = guard.as_mut() else {
            let outcome = self
                .lock_state()
                .closed_outcome(round_id)
                .unwrap_or("closed");
            return (
                Err(CoordinatorError::RoundClosed {
                    round: round_id,
                    outcome,
                }),
                Some(delta),
            );
        };
        // A revocation takes the member out of the round under this
        // aggregate lock: its update is refused, not folded.
        if let Err(error) = self
            .lock_state()
            .check_still_selected(&participant, round_id)
        {
            return (Err(error), Some(delta));
        }
        let spare_buffer = match aggregator.add(delta, weight.as_f64()) {
            Ok(spare_buffer) => spare_buffer,
            Err(error) => {
                return (
                    Err(CoordinatorError::MalformedUpdate(error.to_string())),
                    None,
                );
            }
        };
        let mut state = self.lock_state();
        let result = match &mut state.round {
            RoundState::Open(round) if round.round_id == round_id => {
                round.in_flight.remove(&participant);
                round.accepted.push((participant, num_samples, privacy));
                self.inner.metrics.update_accepted();
                Ok(round.accepted.len())
            }
            // Unreachable while the aggregate is open; kept total.
            _ => Err(CoordinatorError::RoundClosed {
                round: round_id,
                outcome: "closed",
            }),
        };
        (result, spare_buffer)
    }
}
