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
//!   publishes; gRPC handlers only register participants and hand update
//!   streams to the engine ([`UploadReceiver`]), which wakes the driver
//!   through a `Notify`.
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
//!
//! - `sessions`: joining, leaving, heartbeats, and the session checks every call passes.
//! - `uploads`: admitting, receiving (the chunk loop, upload slots) and folding updates; declines.
//! - `rounds`: the driver's decisions: opening, evaluating, closing and abandoning rounds.
//! - `publishing`: the next version built from a closed round (a pure function), then published.
//! - `history`: finished rounds, in memory and in the durable history.
//! - `completion`: the end of the federation after its last round.
//! - `revocation`: ending the sessions of revoked members.
//! - `secure`: secure aggregation (SecAgg+): key phases, masked updates, unmasking the sum.
//! - `snapshot`: the status snapshot read by the status endpoints.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use fedshield_core::aggregation::robust::RobustAggregator;
use fedshield_core::privacy::PrivacyReport;
use fedshield_core::{ModelVersion, ParticipantId, RoundId, TrainingPlan};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Span, info, warn};

use crate::config::RoundConfig;
use crate::dropouts::DropoutTracker;
use crate::error::{CoordinatorError, Result};
use crate::metrics::CoordinatorMetrics;
use crate::registry::{ModelRegistry, PublishedModel};
use history::{RoundHistoryWriter, summary_from_record};
use rounds::Step;
use sessions::ConnectedSession;

mod completion;
mod history;
mod publishing;
mod revocation;
mod rounds;
mod secure;
mod sessions;
mod snapshot;
mod uploads;

pub use completion::Completion;
pub use history::{RoundOutcome, RoundSummary};
pub(crate) use publishing::calibrate_on_evaluation_set;
pub use revocation::RevokedMember;
pub use secure::{SecurePhase, SecureRoundSetup, TranscriptEntry, TranscriptRecorder};
pub use sessions::{Announcement, Session, SessionEvent, claimed_participant};
pub use snapshot::{EngineStatus, OpenRoundStatus};
pub use uploads::{
    MaskedPart, MaskedUpdateHeader, ParamEncoding, ReceivedUpdate, ReservedSlot, UpdateHeader,
    UpdatePart, UpdateRequest, UpdateTicket, UploadError, UploadReceiver, UploadTransportError,
};

/// Finished rounds kept for status and for refusing late updates clearly.
const ROUND_HISTORY_LEN: usize = 256;

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
    /// Secure aggregation's state, for a round under a plan with it.
    secure: Option<Arc<secure::SecureRound>>,
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
            secure_aggregation: self
                .secure
                .as_ref()
                .map(|secure| Arc::new(secure.setup.clone())),
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
    Open(Box<OpenRound>),
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
    server_optimizer: Mutex<fedshield_core::aggregation::momentum::ServerMomentum>,
    /// Optional labelled data each new version is scored on for its card.
    evaluation: std::sync::OnceLock<Arc<fedshield_core::model::data::Dataset>>,
    /// δ of the federation's privacy target, for the guarantees on model cards.
    privacy_delta: std::sync::OnceLock<f64>,
    /// The privacy promise and acknowledged weakening model cards record
    /// ([`crate::lineage`]).
    privacy_lineage: std::sync::OnceLock<fedshield_core::privacy::lineage::LineageRecord>,
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
    /// The instrumented coordinator's tap on secure aggregation (tests).
    secure_transcript: std::sync::OnceLock<secure::TranscriptRecorder>,
}

/// Handle to the round engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
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
        let server_optimizer = fedshield_core::aggregation::momentum::ServerMomentum::new(
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
                secure_transcript: std::sync::OnceLock::new(),
            }),
        };
        // The participant gauges are read from the state at each scrape; the
        // weak handle does not keep the engine alive.
        let weak = Arc::downgrade(&engine.inner);
        engine.inner.metrics.count_participants_with(move || {
            weak.upgrade()
                .map(|inner| Engine { inner }.status().participant_states())
        });
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
    pub fn set_privacy_lineage(&self, lineage: fedshield_core::privacy::lineage::LineageRecord) {
        let _ = self.inner.privacy_lineage.set(lineage);
    }

    /// Sets the labelled data every newly published version is scored on;
    /// the metrics go into its model card. Only the first call has effect.
    pub fn set_evaluation_set(&self, evaluation: Arc<fedshield_core::model::data::Dataset>) {
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
}
