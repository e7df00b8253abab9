//! The participant node: stays joined to the coordinator, and for every round
//! it is sampled for, downloads the base model (cached, sha256-checked),
//! trains locally and streams back its update.
//!
//! Privacy: when the round's plan has DP, the spend is checked against the
//! budget and recorded in the ledger (fsynced) before training starts; local
//! training is DP-SGD with noise from an OS-seeded CSPRNG; with
//! organization-level DP the whole update is clipped and noised too; the
//! update carries the ledger's cumulative guarantee.
//!
//! Connection handling: any failure (refused connection, dropped stream,
//! silent coordinator) leads to a reconnect with exponential backoff; the
//! coordinator re-announces an open round to a participant that rejoins.
//!
//! - `connection`: the channel to the coordinator and the join stream.
//! - `round`: one announced round: base model, local training, the update.
//! - `privacy`: the round's spend, checked and recorded; re-sent stored updates.
//! - `upload`: sending an update: upload slot, header, chunked stream.

mod connection;
mod privacy;
mod round;
mod secure;
mod upload;

use std::sync::Arc;

use fedshield_core::model::cache::ModelCache;
use fedshield_core::model::data::Dataset;
use fedshield_core::{ModelVersion, RoundId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::ParticipantConfig;
use crate::ending::RunEnd;
use crate::error::{ParticipantError, Result};
use crate::ledger::{DEFAULT_DELTA, PrivacyLedger};
use crate::metrics::ParticipantMetrics;
use crate::pending::StoredUpdateFile;
use connection::SessionEnd;

pub use privacy::CRASH_AFTER_LEDGER_WRITE_ENV;
pub use upload::{reserve_upload_slot, submit_update};

/// Something a participant did, reported to whoever runs it (demo, tests).
#[derive(Debug, Clone, PartialEq)]
pub enum ParticipantEvent {
    /// Joined (or rejoined) the coordinator.
    Joined,
    /// An update for a round was accepted.
    Contributed {
        round_id: RoundId,
        base_version: ModelVersion,
        num_steps: u64,
        mean_loss: f32,
        /// Whether the update was the stored privatized update of an
        /// earlier attempt on the same base version and plan, re-sent
        /// without training and without a new privacy spend.
        resent: bool,
        /// sha256 of the privatized update's little-endian float32 bytes
        /// (before any test tampering), for rounds with DP whose update
        /// was stored for retries.
        update_sha256: Option<String>,
    },
    /// A round was skipped; the reason says why.
    RoundFailed { round_id: RoundId, reason: String },
    /// A round was declined because the privacy budget would be exceeded.
    BudgetExhausted { round_id: RoundId, reason: String },
}

/// What a participant does with a round's base model.
enum Workload {
    /// Trains on its private data: every real participant.
    Train(Arc<Dataset>),
    /// Benchmark mode (`fedshield bench rounds`): no data and no training.
    /// The "trained" model is the base plus `increment` in every parameter,
    /// so the update is `increment` everywhere; rounds with differential
    /// privacy are refused, and models are not cached (every round brings
    /// a new version that is never needed again).
    BenchmarkNoOp { increment: f32 },
}

/// A participant: its configuration and its private training data.
pub struct Participant {
    config: ParticipantConfig,
    workload: Workload,
    cache: ModelCache,
    /// The privacy ledger, locked by this process for its lifetime.
    ledger: Arc<std::sync::Mutex<PrivacyLedger>>,
    /// The privatized update of the last DP run, for retried rounds.
    stored_update: StoredUpdateFile,
    events: Option<mpsc::UnboundedSender<ParticipantEvent>>,
    tamper: Option<UpdateTamper>,
    /// A model-sized buffer kept from the last round (benchmark mode), so a
    /// download does not pay for a fresh allocation and its page faults.
    spare_buffer: std::sync::Mutex<Vec<f32>>,
    metrics: ParticipantMetrics,
    /// Whether to keep the connection open after the federation completes,
    /// until `shutdown` ([`Participant::linger_after_completion`]).
    linger_after_completion: bool,
}

/// A function applied to each update just before it is sent. It exists to
/// play a malicious participant in tests of the coordinator's
/// poisoning-robust aggregation; an honest participant never sets one.
pub type UpdateTamper = Arc<dyn Fn(&mut [f32]) + Send + Sync>;

impl Participant {
    /// Returns a participant that trains on `data`.
    ///
    /// # Errors
    /// [`ParticipantError::Config`] listing every configuration problem, or
    /// if the dataset is empty; [`ParticipantError::Ledger`] if the privacy
    /// ledger cannot be opened.
    pub fn new(config: ParticipantConfig, data: Dataset) -> Result<Self> {
        if data.is_empty() {
            return Err(ParticipantError::Config(
                "the training dataset is empty".to_string(),
            ));
        }
        Self::with_workload(config, Workload::Train(Arc::new(data)))
    }

    /// Returns a participant for the round-overhead benchmark: it goes
    /// through every step of a round (download, local step, upload) with a
    /// no-op local step that adds `increment` to every parameter. It holds
    /// no data and refuses rounds with differential privacy.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn benchmark(config: ParticipantConfig, increment: f32) -> Result<Self> {
        warn!(participant = %config.participant_id, "benchmark participant: no data, no training");
        Self::with_workload(config, Workload::BenchmarkNoOp { increment })
    }

    fn with_workload(config: ParticipantConfig, workload: Workload) -> Result<Self> {
        config
            .validate()
            .map_err(|problems| ParticipantError::Config(problems.join("; ")))?;
        let cache = ModelCache::new(&config.data_dir.join("models"));
        let stored_update = StoredUpdateFile::new(&config.data_dir);
        let ledger = PrivacyLedger::open(&config.data_dir)?;
        let metrics = ParticipantMetrics::new(config.privacy_budget.map(|budget| budget.epsilon));
        let delta = config
            .privacy_budget
            .map_or(DEFAULT_DELTA, |budget| budget.delta);
        metrics.set_privacy_spent(ledger.spent(delta)?.epsilon);
        Ok(Participant {
            config,
            workload,
            cache,
            ledger: Arc::new(std::sync::Mutex::new(ledger)),
            stored_update,
            events: None,
            tamper: None,
            spare_buffer: std::sync::Mutex::new(Vec::new()),
            metrics,
            linger_after_completion: false,
        })
    }

    /// Returns the participant's metrics (a handle to the live values).
    pub fn metrics(&self) -> ParticipantMetrics {
        self.metrics.clone()
    }

    /// Reports what the participant does to `events`.
    pub fn with_events(mut self, events: mpsc::UnboundedSender<ParticipantEvent>) -> Self {
        self.events = Some(events);
        self
    }

    /// Makes this participant malicious: `tamper` rewrites each update
    /// before it is sent (robustness tests of the coordinator only).
    pub fn with_update_tamper(mut self, tamper: UpdateTamper) -> Self {
        warn!(participant = %self.config.participant_id, "this participant tampers with its updates");
        self.tamper = Some(tamper);
        self
    }

    /// Keeps the connection to the coordinator open after the federation
    /// completes, until `shutdown` is cancelled, and only then returns the
    /// completion: `fedshield bench rounds` reads the bytes that crossed
    /// the connections from the kernel once the last round is done, which
    /// needs them still open.
    pub fn linger_after_completion(mut self) -> Self {
        self.linger_after_completion = true;
        self
    }

    fn report(&self, event: ParticipantEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    /// Runs until `shutdown` is cancelled or the coordinator announces that
    /// the federation is complete, reconnecting as needed. Training under
    /// way when `shutdown` is cancelled stops after its current step.
    ///
    /// # Errors
    /// A permanent condition ([`ParticipantError::is_permanent`]): the
    /// coordinator refuses this participant, or its privacy budget cannot
    /// pay for a round of the federation. Everything else is retried.
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunEnd> {
        let mut backoff = Backoff::new(self.config.initial_backoff, self.config.max_backoff);
        while !shutdown.is_cancelled() {
            match self.session(&shutdown, &mut backoff).await {
                Ok(SessionEnd::Stopped) => {}
                Ok(SessionEnd::FederationComplete(end)) => {
                    info!(
                        participant = %self.config.participant_id,
                        num_rounds_completed = end.num_rounds_completed,
                        final_version = %end.final_version,
                        sha256 = %end.final_sha256,
                        "the federation is complete; participant stopped"
                    );
                    return Ok(RunEnd::FederationComplete(end));
                }
                // Stopping anyway: a coordinator going away at the same time is no news.
                Err(_) if shutdown.is_cancelled() => break,
                Err(error) if error.is_permanent() => {
                    error!(
                        participant = %self.config.participant_id,
                        error = %error,
                        "stopping: this cannot change by retrying"
                    );
                    return Err(error);
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    warn!(
                        participant = %self.config.participant_id,
                        error = %error,
                        retry_in_ms = delay.as_millis() as u64,
                        "connection to coordinator lost"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        info!(participant = %self.config.participant_id, "participant stopped");
        Ok(RunEnd::Stopped)
    }
}
