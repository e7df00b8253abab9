//! The round engine: who is connected, which round is open, which updates
//! arrived, and when a round publishes or is abandoned.
//!
//! Concurrency model:
//! - `EngineState` sits behind a `std::sync::Mutex` held only for short,
//!   non-async critical sections (never across `.await`).
//! - Each open round owns its aggregate behind a second mutex. Folding an
//!   update (milliseconds for large models) holds only that mutex, on a
//!   blocking thread. Lock order is always aggregate, then state.
//! - Writes of the open-round record are ordered by a third mutex, taken
//!   under the state lock (a retry's record, written before its
//!   announcement) or alone (a first round's record, written on a blocking
//!   thread after its announcement); it is never held while taking another.
//! - One driver task ([`Engine::run`]) opens rounds, watches deadlines and
//!   publishes; gRPC handlers only register participants and submit updates,
//!   and wake the driver through a `Notify`.
//! - Finished rounds are appended to the durable history by one writer
//!   thread, fed in round order by the driver through a channel, after the
//!   round's version is announced: the announcement waits only for the
//!   version's own durability, not for the history's fsync. [`Engine::run`]
//!   waits for the queued records before it returns, so a graceful shutdown
//!   keeps them; after a crash the registry rebuilds the records of announced
//!   versions from their cards (`ModelRegistry::recover_round_history`).
//!
//! Round life cycle: `Waiting` (not enough participants) → `Open` (announced
//! to a random sample; updates fold into a streaming FedAvg) → completed (the
//! aggregate is published as the next version) or abandoned (quorum missed;
//! nothing is published and the same base version is retried).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fedshield_core::clock::unix_ms;

use fedshield_core::aggregate::{check_applies_finitely, check_finite_aggregate};
use fedshield_core::privacy::PrivacyReport;
use fedshield_core::robust::RobustAggregator;
use fedshield_core::weights::ModelWeights;
use fedshield_core::{CoreError, ModelVersion, ParticipantId, RoundId, TrainingPlan};
use rand::seq::SliceRandom;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, info, info_span, warn};

use crate::config::RoundConfig;
use crate::dropouts::{DropoutRecord, DropoutTracker};
use crate::error::{CoordinatorError, Result};
use crate::metrics::CoordinatorMetrics;
use crate::registry::{
    AggregationSummary, ModelCard, ModelRegistry, OpenRoundRecord, PublishedModel, RoundRecord,
};
use crate::weighting::UpdateWeight;
use history::{RoundHistoryWriter, push_history, summary_from_record};

mod completion;
mod history;
mod publishing;
mod revocation;
pub use completion::Completion;
pub use revocation::RevokedMember;

/// Finished rounds kept for status and for refusing late updates clearly.
const ROUND_HISTORY_LEN: usize = 256;

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

/// Outcome of a finished round, kept in the history.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundSummary {
    pub round_id: RoundId,
    pub base_version: ModelVersion,
    pub outcome: RoundOutcome,
    pub contributors: Vec<ParticipantId>,
    pub duration: Duration,
    pub reason: String,
}

/// How a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundOutcome {
    Completed { published: ModelVersion },
    Abandoned,
}

impl RoundSummary {
    /// The version the round published; `None` if it was abandoned.
    pub fn published(&self) -> Option<ModelVersion> {
        match self.outcome {
            RoundOutcome::Completed { published } => Some(published),
            RoundOutcome::Abandoned => None,
        }
    }

    /// The contributors' ids as text, in acceptance order.
    pub fn contributor_names(&self) -> Vec<String> {
        self.contributors.iter().map(ToString::to_string).collect()
    }

    /// How long the round was open, in whole milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.duration.as_millis() as u64
    }
}

impl RoundOutcome {
    /// Returns "completed" or "abandoned".
    pub fn name(self) -> &'static str {
        match self {
            RoundOutcome::Completed { .. } => "completed",
            RoundOutcome::Abandoned => "abandoned",
        }
    }
}

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

/// A connected participant.
struct ConnectedSession {
    session_id: u64,
    token: String,
    events: mpsc::Sender<SessionEvent>,
    /// When the participant last called (join, update, decline), for status.
    last_contact_unix_ms: u64,
}

/// The aggregate of an open round; `None` once the round closed, so a fold
/// that loses the race with closing is refused instead of lost.
type SharedAggregate = Arc<Mutex<Option<RobustAggregator>>>;

/// An open round.
struct OpenRound {
    round_id: RoundId,
    base: Arc<PublishedModel>,
    selected: BTreeSet<ParticipantId>,
    /// Participants whose update has been folded in, with their example
    /// counts and privacy reports.
    accepted: Vec<(ParticipantId, u64, Option<PrivacyReport>)>,
    /// Participants whose update stream is being received.
    in_flight: BTreeSet<ParticipantId>,
    /// Participants that said they will not submit.
    declined: BTreeSet<ParticipantId>,
    aggregate: SharedAggregate,
    quorum: usize,
    deadline: Instant,
    deadline_unix_ms: u64,
    attempt: u32,
    opened_at: Instant,
    /// The round's span: every event of the round's life (opening,
    /// aggregation, publishing or abandoning) is logged inside it, with the
    /// round id, the base version and, once published, the new version.
    span: Span,
}

impl OpenRound {
    fn has_accepted(&self, participant: &ParticipantId) -> bool {
        self.accepted
            .iter()
            .any(|(accepted, _, _)| accepted == participant)
    }

    fn announcement(&self, plan: &TrainingPlan, num_upload_slots: usize) -> Announcement {
        Announcement {
            round_id: self.round_id,
            base_version: self.base.version,
            base_sha256: self.base.card.sha256.clone(),
            plan: plan.clone(),
            deadline_unix_ms: self.deadline_unix_ms,
            feature_schema_sha256: self.base.card.feature_schema_sha256.clone(),
            reserve_upload_slot: self.selected.len() > num_upload_slots,
        }
    }
}

/// The round state machine.
enum RoundState {
    /// No round open. `retry_after` delays the next open after an abandon;
    /// `attempt` counts tries on the current base version.
    Waiting {
        retry_after: Option<Instant>,
        attempt: u32,
    },
    Open(OpenRound),
}

/// All mutable engine state.
struct EngineState {
    sessions: HashMap<ParticipantId, ConnectedSession>,
    next_session_id: u64,
    current: Arc<PublishedModel>,
    round: RoundState,
    next_round_id: u64,
    history: VecDeque<RoundSummary>,
    num_rounds_completed: u64,
    num_rounds_abandoned: u64,
    /// Members whose session a revocation ended (until they join again).
    revoked: revocation::RevokedMembers,
    /// Who left rounds without delivering, and who sits out rounds for it.
    dropouts: DropoutTracker,
    /// Participants selected for the open round whose session ended while
    /// it was open before they delivered; those still without an update or
    /// a decline when the round closes dropped out ([`crate::dropouts`]).
    /// Emptied when a round closes.
    left_open_round_before_delivering: BTreeSet<ParticipantId>,
    /// Set once the federation has published all its rounds
    /// ([`completion`]); no round opens after it.
    completion: Option<Completion>,
}

impl EngineState {
    /// Checks that `participant` has a live session whose token is `token`.
    /// Checks that `participant` has a live session whose token is `token`,
    /// and notes the contact.
    fn check_session(&mut self, participant: &ParticipantId, token: &str) -> Result<()> {
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

    /// Returns how round `round_id` ended, if it is in the history.
    fn closed_outcome(&self, round_id: RoundId) -> Option<&'static str> {
        self.history
            .iter()
            .find(|summary| summary.round_id == round_id)
            .map(|summary| summary.outcome.name())
    }

    /// Returns the open round if `participant` (with this session) may
    /// submit an update to round `round_id` now: the round is open, on
    /// `base_version` when one is given, the participant was selected and
    /// has neither contributed nor an upload in progress.
    fn admit(
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

struct EngineInner {
    config: RoundConfig,
    plan: TrainingPlan,
    registry: ModelRegistry,
    state: Mutex<EngineState>,
    /// Wakes the driver when participants come and go or updates arrive.
    changed: Notify,
    /// Bounds updates being received at once (each buffers one model).
    upload_permits: Arc<Semaphore>,
    upload_permits_total: usize,
    /// Recycled model-sized buffers (received updates, the previous
    /// version's parameters), so that neither an update nor a round's sum
    /// pays for a fresh model-sized allocation (and its page faults).
    receive_buffers: Mutex<Vec<Vec<f32>>>,
    published: watch::Sender<Arc<PublishedModel>>,
    /// FedAvgM state (velocity); in memory only, so a restart resumes with
    /// zero velocity.
    server_optimizer: Mutex<fedshield_core::aggregate::ServerMomentum>,
    /// Optional labelled data each new version is scored on for its card.
    evaluation: std::sync::OnceLock<Arc<fedshield_core::data::Dataset>>,
    /// δ of the federation's privacy target, for the guarantees on model cards.
    privacy_delta: std::sync::OnceLock<f64>,
    /// The privacy promise and acknowledged weakening model cards record
    /// ([`crate::lineage`]).
    privacy_lineage: std::sync::OnceLock<fedshield_core::lineage::LineageRecord>,
    /// Prometheus metrics of rounds, updates and downloads.
    metrics: CoordinatorMetrics,
    /// Id of the last open round whose record was written; the lock also
    /// orders the writes.
    last_open_round_recorded: Mutex<u64>,
    /// Appends finished rounds to the durable history, in order, off the
    /// driver's path.
    round_history: RoundHistoryWriter,
    /// Cancelled once the federation is complete ([`completion`]).
    completed: CancellationToken,
}

/// Handle to the round engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
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

/// Returns a fresh random token (128 bits, hex): session and upload-slot tokens.
pub(crate) fn new_session_token() -> String {
    use rand::RngExt;
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

impl Engine {
    /// Returns an engine whose current model is `initial` (already stored in
    /// `registry`), with the next round id `next_round_id`.
    pub fn new(
        config: RoundConfig,
        plan: TrainingPlan,
        registry: ModelRegistry,
        initial: Arc<PublishedModel>,
        max_concurrent_uploads: usize,
    ) -> Self {
        let (published, _) = watch::channel(initial.clone());
        let mut next_round_id = initial.card.round_id.map_or(1, |round| round + 1);
        // A round that was open when the coordinator stopped (or crashed) on
        // this very version is re-opened under its id; its participants
        // reconnect and are announced it again.
        match registry.open_round_record() {
            Ok(Some(record)) if record.base_version == initial.version.0 => {
                info!(
                    round = record.round_id,
                    base_version = record.base_version,
                    "re-opening the interrupted round"
                );
                next_round_id = next_round_id.max(record.round_id);
            }
            Ok(_) => {}
            Err(error) => {
                warn!(error = %error, "the open round record is unreadable; starting a new round")
            }
        }
        let (history, num_rounds_completed, num_rounds_abandoned) = match registry
            .round_history(ROUND_HISTORY_LEN)
        {
            Ok((records, completed, abandoned)) => (
                records.iter().map(summary_from_record).collect(),
                completed,
                abandoned,
            ),
            Err(error) => {
                warn!(error = %error, "the round history is unreadable; starting with an empty one");
                (VecDeque::new(), 0, 0)
            }
        };
        let metrics = CoordinatorMetrics::new();
        metrics.set_current_model(&initial.card);
        let server_optimizer = fedshield_core::aggregate::ServerMomentum::new(
            config.server_momentum,
            config.server_learning_rate,
        );
        let round_history = RoundHistoryWriter::start(registry.clone());
        let engine = Engine {
            inner: Arc::new(EngineInner {
                config,
                plan,
                registry,
                state: Mutex::new(EngineState {
                    sessions: HashMap::new(),
                    next_session_id: 1,
                    current: initial,
                    round: RoundState::Waiting {
                        retry_after: None,
                        attempt: 1,
                    },
                    next_round_id,
                    history,
                    num_rounds_completed,
                    num_rounds_abandoned,
                    revoked: revocation::RevokedMembers::new(),
                    dropouts: DropoutTracker::new(),
                    left_open_round_before_delivering: BTreeSet::new(),
                    completion: None,
                }),
                changed: Notify::new(),
                upload_permits: Arc::new(Semaphore::new(max_concurrent_uploads.max(1))),
                upload_permits_total: max_concurrent_uploads.max(1),
                receive_buffers: Mutex::new(Vec::new()),
                evaluation: std::sync::OnceLock::new(),
                privacy_delta: std::sync::OnceLock::new(),
                privacy_lineage: std::sync::OnceLock::new(),
                server_optimizer: Mutex::new(server_optimizer),
                published,
                metrics,
                last_open_round_recorded: Mutex::new(0),
                round_history,
                completed: CancellationToken::new(),
            }),
        };
        // The participant gauges are read from the state at each scrape; the
        // weak handle does not keep the engine alive.
        let weak = Arc::downgrade(&engine.inner);
        engine
            .inner
            .metrics
            .count_participants_with(move || weak.upgrade().map(|inner| Engine { inner }.status()));
        engine
    }

    /// Returns the coordinator's metrics, which the engine and the
    /// transports update.
    pub fn metrics(&self) -> &CoordinatorMetrics {
        &self.inner.metrics
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, EngineState> {
        // A panic while holding the lock is a bug; the state is still the
        // last consistent one, so keep serving rather than cascade.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the δ at which model cards state the plan's guarantees; only
    /// the first call has effect.
    pub fn set_privacy_delta(&self, delta: f64) {
        let _ = self.inner.privacy_delta.set(delta);
    }

    /// Sets the privacy promise and acknowledged weakening that model cards
    /// record ([`crate::lineage`]); only the first call has effect.
    pub fn set_privacy_lineage(&self, lineage: fedshield_core::lineage::LineageRecord) {
        let _ = self.inner.privacy_lineage.set(lineage);
    }

    /// Sets the labelled data every newly published version is scored on;
    /// the metrics go into its model card. Only the first call has effect.
    pub fn set_evaluation_set(&self, evaluation: Arc<fedshield_core::data::Dataset>) {
        let _ = self.inner.evaluation.set(evaluation);
    }

    /// Returns a receiver that sees every newly published model version.
    pub fn subscribe_published(&self) -> watch::Receiver<Arc<PublishedModel>> {
        self.inner.published.subscribe()
    }

    /// Returns the latest published model.
    pub fn current_model(&self) -> Arc<PublishedModel> {
        self.lock_state().current.clone()
    }

    /// Returns a published model version: the current one from memory, older
    /// ones from the registry.
    ///
    /// # Errors
    /// [`CoordinatorError::UnknownModelVersion`] or a store error.
    pub async fn model(&self, version: ModelVersion) -> Result<Arc<PublishedModel>> {
        let current = self.current_model();
        if current.version == version {
            return Ok(current);
        }
        if version > current.version {
            return Err(CoordinatorError::UnknownModelVersion(version));
        }
        Ok(Arc::new(self.inner.registry.load(version).await?))
    }

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

    /// Drives rounds until `shutdown` is cancelled: opens a round when enough
    /// participants are connected, closes it at quorum or deadline, publishes
    /// or abandons it, and starts the next one. A publication under way when
    /// `shutdown` is cancelled finishes first, and the finished rounds still
    /// queued for the durable history are appended before this returns.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let wake_at = match self.step().await {
                Step::Continue => continue,
                Step::WaitUntil(deadline) => deadline,
                Step::WaitForChange => None,
            };
            let changed = self.inner.changed.notified();
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = changed => {}
                () = async {
                    match wake_at {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
        self.inner.round_history.flush().await;
        info!("round engine stopped");
    }

    /// Takes one decision. Returns when the driver should look again.
    async fn step(&self) -> Step {
        let now = Instant::now();
        let decision = {
            let mut guard = self.lock_state();
            let state = &mut *guard;
            if let RoundState::Waiting {
                retry_after,
                attempt,
            } = &state.round
            {
                let (retry_after, attempt) = (*retry_after, *attempt);
                if self.complete_if_done(state) {
                    return Step::WaitForChange;
                }
                if let Some(retry_at) = retry_after
                    && now < retry_at
                {
                    return Step::WaitUntil(Some(retry_at));
                }
                if state.sessions.len() < self.inner.config.min_participants {
                    return Step::WaitForChange;
                }
                self.open_round(state, now, attempt);
                return Step::Continue;
            }
            let RoundState::Open(round) = &state.round else {
                unreachable!("the waiting state returned above");
            };
            self.evaluate_round(round, &state.sessions, now)
        };
        match decision {
            RoundDecision::KeepWaiting(deadline) => Step::WaitUntil(Some(deadline)),
            RoundDecision::Publish => {
                self.publish().await;
                Step::Continue
            }
            RoundDecision::Abandon(reason) => {
                self.abandon(reason);
                Step::Continue
            }
        }
    }

    /// Decides what to do with the open round now.
    fn evaluate_round(
        &self,
        round: &OpenRound,
        sessions: &HashMap<ParticipantId, ConnectedSession>,
        now: Instant,
    ) -> RoundDecision {
        let num_accepted = round.accepted.len();
        // Selected participants that may still deliver: connected or mid-upload.
        let num_pending = round
            .selected
            .iter()
            .filter(|participant| !round.has_accepted(participant))
            .filter(|participant| !round.declined.contains(*participant))
            .filter(|participant| {
                sessions.contains_key(*participant) || round.in_flight.contains(*participant)
            })
            .count();
        // A revocation can shrink the selection below the quorum: then the
        // quorum rule below decides, not this shortcut.
        if num_accepted == round.selected.len() && num_accepted >= round.quorum {
            return RoundDecision::Publish;
        }
        if num_pending == 0 && num_accepted >= round.quorum {
            return RoundDecision::Publish;
        }
        if num_accepted + num_pending < round.quorum {
            return RoundDecision::Abandon(format!(
                "quorum of {} is out of reach: {num_accepted} accepted, {num_pending} still able to submit",
                round.quorum
            ));
        }
        if now >= round.deadline {
            if num_accepted >= round.quorum {
                return RoundDecision::Publish;
            }
            return RoundDecision::Abandon(format!(
                "deadline passed with {num_accepted} of {} required updates",
                round.quorum
            ));
        }
        RoundDecision::KeepWaiting(round.deadline)
    }

    fn open_round(&self, state: &mut EngineState, now: Instant, attempt: u32) {
        let config = &self.inner.config;
        let mut candidates: Vec<ParticipantId> = state.sessions.keys().cloned().collect();
        candidates.sort();
        candidates.shuffle(&mut rand::rng());
        let num_selected = config.participants_per_round.resolve(candidates.len());
        // Participants that left earlier rounds sit some out (crate::dropouts).
        let selected: BTreeSet<ParticipantId> = state
            .dropouts
            .select(candidates, num_selected, config.quorum)
            .into_iter()
            .collect();
        self.inner
            .metrics
            .set_participants_sitting_out(state.dropouts.num_sitting_out());
        let quorum = config.quorum.min(selected.len()).max(1);
        let round_id = RoundId(state.next_round_id);
        state.next_round_id += 1;
        let deadline_unix_ms = unix_ms(SystemTime::now() + config.round_deadline);
        let base = state.current.clone();
        let span = info_span!(
            "round",
            round = %round_id,
            base_version = %base.version,
            version = tracing::field::Empty,
            attempt,
        );
        let _entered = span.clone().entered();
        let rule = &self.inner.config.aggregation;
        let sum_buffer = if RobustAggregator::is_streaming(rule) {
            self.take_receive_buffer()
        } else {
            Vec::new()
        };
        let round = OpenRound {
            round_id,
            aggregate: Arc::new(Mutex::new(Some(
                RobustAggregator::with_buffer(rule, base.weights.params.len(), sum_buffer)
                    .expect("the aggregation rule was validated with the configuration"),
            ))),
            base,
            selected,
            accepted: Vec::new(),
            in_flight: BTreeSet::new(),
            declined: BTreeSet::new(),
            quorum,
            deadline: now + config.round_deadline,
            deadline_unix_ms,
            attempt,
            opened_at: now,
            span,
        };
        let record = OpenRoundRecord {
            round_id: round_id.0,
            base_version: round.base.version.0,
            opened_unix_ms: unix_ms(SystemTime::now()),
        };
        // A restart numbers the first round on a version one past the round
        // that published it (`Engine::new`), so the record of such a round
        // repeats what the stored version already says: it is written after
        // the announcements, in the background, instead of holding them back
        // for its fsyncs. A retry's id cannot be derived that way, so its
        // record is durable before anyone is told of the round.
        let id_derivable_from_base = round
            .base
            .card
            .round_id
            .map_or(1, |published_by| published_by + 1)
            == round_id.0;
        if !id_derivable_from_base {
            self.write_open_round_record(&record);
        }
        let announcement = round.announcement(&self.inner.plan, self.inner.upload_permits_total);
        for participant in &round.selected {
            if let Some(session) = state.sessions.get(participant)
                && session
                    .events
                    .try_send(SessionEvent::Announcement(announcement.clone()))
                    .is_err()
            {
                warn!(round = %round_id, participant = %participant, "announcement could not be queued");
            }
        }
        info!(
            round = %round_id,
            base_version = %round.base.version,
            num_selected = round.selected.len(),
            quorum,
            attempt,
            "round opened"
        );
        state.round = RoundState::Open(round);
        self.inner.metrics.round_opened();
        if id_derivable_from_base {
            let engine = self.clone();
            let span = Span::current();
            tokio::task::spawn_blocking(move || {
                span.in_scope(|| engine.write_open_round_record(&record));
            });
        }
    }

    /// Writes the open round's record, unless the record of a later round
    /// is already written (a background write may finish after the round it
    /// describes closed and the next one opened).
    fn write_open_round_record(&self, record: &OpenRoundRecord) {
        let mut last_recorded = self
            .inner
            .last_open_round_recorded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *last_recorded > record.round_id {
            return;
        }
        match self.inner.registry.record_open_round(record) {
            Ok(()) => *last_recorded = record.round_id,
            Err(error) => {
                warn!(round = record.round_id, error = %error, "open round not recorded; a restart would open a new round instead")
            }
        }
    }

    /// Takes the open round out of the state machine and closes its
    /// aggregate to further folds; returns `None` if no round is open. The
    /// aggregate is `None` if it was already closed.
    fn close_open_round(&self) -> Option<(OpenRound, Option<RobustAggregator>)> {
        let aggregate = {
            let state = self.lock_state();
            match &state.round {
                RoundState::Open(round) => round.aggregate.clone(),
                RoundState::Waiting { .. } => return None,
            }
        };
        // Aggregate, then state: the documented lock order. Taking the
        // aggregate closes it to further folds; folds that finished before
        // are already recorded as accepted.
        let fed_avg = aggregate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let mut state = self.lock_state();
        let previous = std::mem::replace(
            &mut state.round,
            RoundState::Waiting {
                retry_after: None,
                attempt: 1,
            },
        );
        match previous {
            RoundState::Open(round) => {
                self.record_dropouts(&mut state, &round);
                Some((round, fed_avg))
            }
            RoundState::Waiting { .. } => None,
        }
    }

    /// Notes, as `round` closes, who dropped out of it (left without an
    /// update or a decline) and who contributed ([`crate::dropouts`]).
    fn record_dropouts(&self, state: &mut EngineState, round: &OpenRound) {
        for (participant, _, _) in &round.accepted {
            state.dropouts.record_contribution(participant);
        }
        let left_before_delivering = std::mem::take(&mut state.left_open_round_before_delivering);
        for participant in &left_before_delivering {
            if round.has_accepted(participant) || round.declined.contains(participant) {
                continue;
            }
            let record = state.dropouts.record_dropout(participant);
            self.inner.metrics.round_dropout();
            warn!(
                round = %round.round_id,
                participant = %participant,
                num_dropouts = record.num_dropouts,
                strikes = record.strikes,
                sit_out_rounds = record.sit_out_rounds_left,
                "participant left a round it was selected for without an update or a decline"
            );
        }
        self.inner
            .metrics
            .set_participants_sitting_out(state.dropouts.num_sitting_out());
    }

    /// Abandons the open round: nothing is published, the same base version
    /// is retried after the configured delay.
    fn abandon(&self, reason: String) {
        if let Some((round, _discarded)) = self.close_open_round() {
            self.finish_abandoned(round, reason);
        }
    }

    fn finish_abandoned(&self, round: OpenRound, reason: String) {
        let _entered = round.span.clone().entered();
        warn!(round = %round.round_id, base_version = %round.base.version, attempt = round.attempt, reason = %reason, "round abandoned");
        let mut state = self.lock_state();
        state.num_rounds_abandoned += 1;
        state.round = RoundState::Waiting {
            retry_after: Some(Instant::now() + self.inner.config.retry_delay),
            attempt: round.attempt + 1,
        };
        let summary = RoundSummary {
            round_id: round.round_id,
            base_version: round.base.version,
            outcome: RoundOutcome::Abandoned,
            contributors: round
                .accepted
                .iter()
                .map(|(participant, _, _)| participant.clone())
                .collect(),
            duration: round.opened_at.elapsed(),
            reason,
        };
        push_history(&mut state.history, summary.clone());
        self.inner.metrics.round_abandoned(summary.duration);
        drop(state);
        self.record_round(&summary);
    }

    /// Queues a finished round for the durable history, behind the rounds
    /// that finished before it (a failure is logged: the published versions
    /// themselves are already safe).
    fn record_round(&self, summary: &RoundSummary) {
        let record = RoundRecord {
            round_id: summary.round_id.0,
            base_version: summary.base_version.0,
            published: summary.published().map(|version| version.0),
            contributors: summary.contributor_names(),
            duration_ms: summary.duration_ms(),
            reason: summary.reason.clone(),
            finished_unix_ms: unix_ms(SystemTime::now()),
        };
        self.inner.round_history.append(record);
    }
}

enum Step {
    /// Look again immediately.
    Continue,
    /// Sleep until the instant (or a change).
    WaitUntil(Option<Instant>),
    /// Sleep until something changes.
    WaitForChange,
}

enum RoundDecision {
    KeepWaiting(Instant),
    Publish,
    Abandon(String),
}
