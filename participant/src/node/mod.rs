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

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use fedshield_core::clock::unix_ms_now;

use fedshield_core::codec::{ChunkAssembler, DEFAULT_CHUNK_PARAMS, shared_chunks};
use fedshield_core::data::Dataset;
use fedshield_core::dp::{os_seeded_rng, privatize_update, train_local_dp_observed};
use fedshield_core::model::ModelSpec;
use fedshield_core::plan_fingerprint::PlanFingerprint;
use fedshield_core::privacy::PrivacyReport;
use fedshield_core::training::{LocalTrainingOutcome, num_training_rows, train_local_observed};
use fedshield_core::weights::{ModelWeights, ParamsSha256};
use fedshield_core::{ModelVersion, ParticipantId, RoundId, TrainingPlan};
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use rand::RngExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::{Span, debug, error, info, instrument, warn};

use crate::backoff::Backoff;
use crate::cache::ModelCache;
use crate::config::ParticipantConfig;
use crate::ending::{FederationEnd, RunEnd, join_refusal};
use crate::error::{ParticipantError, Result};
use crate::ledger::{DEFAULT_DELTA, LedgerEntry, PrivacyLedger, PrivacySpend};
use crate::metrics::ParticipantMetrics;
use crate::pending::{StoredUpdate, StoredUpdateFile, StoredUpdateHeader};
use crate::progress::Progress;

/// Environment variable that makes the process abort right after a ledger
/// entry is durable and before training: the crash tests use it to prove
/// the ledger never under-counts. Never set it in production.
pub const CRASH_AFTER_LEDGER_WRITE_ENV: &str = "FEDSHIELD_TEST_CRASH_AFTER_LEDGER_WRITE";

/// Largest gRPC message accepted from the coordinator.
const MAX_MESSAGE_BYTES: usize = fedshield_core::codec::MAX_CHUNK_BYTES + 64 * 1024;

/// How one connection to the coordinator ended without error.
enum SessionEnd {
    /// The shutdown token was cancelled.
    Stopped,
    /// The coordinator announced that the federation is complete.
    FederationComplete(FederationEnd),
}

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

/// Where and when an update goes: the round it is for, as announced.
struct SubmitTarget {
    round_id: RoundId,
    base_version: ModelVersion,
    deadline_unix_ms: u64,
    /// Whether to reserve an upload slot before uploading.
    reserve_slot_first: bool,
    session_token: String,
}

/// An update ready to be sent, trained now or stored by an earlier attempt.
struct ReadyUpdate {
    delta: Vec<f32>,
    num_steps: u64,
    mean_loss: f32,
    /// The FedAvg weight declared (1 under DP: data sizes stay private).
    num_samples: u64,
    privacy: Option<PrivacyReport>,
    update_sha256: Option<String>,
    resent: bool,
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

    /// Declines `round_id` because the participant is stopping; waits at
    /// most two seconds for the coordinator.
    async fn decline_on_shutdown(
        &self,
        client: &mut FederationClient<Channel>,
        round_id: RoundId,
        session_token: String,
    ) {
        let decline = pb::DeclineRoundRequest {
            round_id: round_id.0,
            participant_id: self.config.participant_id.to_string(),
            session_token,
            reason: "participant shutting down".to_string(),
        };
        match tokio::time::timeout(Duration::from_secs(2), client.decline_round(decline)).await {
            Ok(Ok(_)) => info!(round = %round_id, "shutting down: round abandoned and declined"),
            _ => info!(round = %round_id, "shutting down: round abandoned"),
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

    async fn connect(&self) -> Result<FederationClient<Channel>> {
        let connect_error = |reason: String| ParticipantError::Connect {
            url: self.config.coordinator_url.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(self.config.coordinator_url.clone())
            .map_err(|error| connect_error(error.to_string()))?;
        if let Some(tls) = &self.config.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|error| connect_error(format!("tls configuration: {error}")))?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .max_frame_size(Some(fedshield_proto::HTTP2_MAX_FRAME_BYTES))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .initial_stream_window_size(Some(8 * 1024 * 1024))
            .initial_connection_window_size(Some(32 * 1024 * 1024));
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| connect_error(error_chain(&error)))?;
        Ok(FederationClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// One connection: join, then handle events until the stream ends.
    /// Returns `Ok` only on shutdown or when the federation is complete.
    async fn session(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<SessionEnd> {
        let mut client = self.connect().await?;
        let participant = self.config.participant_id.as_str();
        let mut stream = client
            .join(pb::JoinRequest {
                participant_id: participant.to_string(),
                client_version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .await
            .map_err(|status| join_refusal(participant, status))?
            .into_inner();
        let mut session_token = None;
        let mut silence_limit = Duration::from_secs(30);
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return Ok(SessionEnd::Stopped),
                message = tokio::time::timeout(silence_limit, stream.message()) => message,
            };
            let event = match message {
                Err(_) => {
                    return Err(ParticipantError::Protocol(format!(
                        "no message from the coordinator for {}s",
                        silence_limit.as_secs_f32()
                    )));
                }
                Ok(Err(status)) => return Err(join_refusal(participant, status)),
                Ok(Ok(None)) => {
                    return Err(ParticipantError::Protocol(
                        "coordinator ended the join stream".into(),
                    ));
                }
                Ok(Ok(Some(event))) => event.event,
            };
            match event {
                Some(pb::coordinator_event::Event::Welcome(welcome)) => {
                    session_token = Some(welcome.session_token);
                    silence_limit =
                        Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(1)))
                            * self.config.missed_heartbeats;
                    backoff.reset();
                    info!(
                        participant = %self.config.participant_id,
                        current_version = welcome.current_model_version,
                        "joined coordinator"
                    );
                    self.report(ParticipantEvent::Joined);
                }
                Some(pb::coordinator_event::Event::Heartbeat(_)) => {}
                Some(pb::coordinator_event::Event::Complete(complete)) => {
                    if self.linger_after_completion {
                        shutdown.cancelled().await;
                    }
                    return Ok(SessionEnd::FederationComplete(complete.into()));
                }
                Some(pb::coordinator_event::Event::RoundAnnouncement(announcement)) => {
                    let Some(token) = session_token.clone() else {
                        return Err(ParticipantError::Protocol(
                            "announcement before welcome".into(),
                        ));
                    };
                    let round_id = RoundId(announcement.round_id);
                    // Training runs while the join stream is not read; the
                    // coordinator's heartbeats wait in the transport buffers.
                    let outcome = tokio::select! {
                        () = shutdown.cancelled() => {
                            // Abandon the round cleanly: the ledger entry is
                            // already durable, and the coordinator is told
                            // not to wait for this participant.
                            self.decline_on_shutdown(&mut client, round_id, token).await;
                            return Ok(SessionEnd::Stopped);
                        }
                        outcome = self.take_part(&mut client, announcement, token.clone(), shutdown) => outcome,
                    };
                    match outcome {
                        Ok(event) => {
                            self.metrics.round_trained();
                            self.report(event);
                        }
                        Err(error) => {
                            self.metrics.round_declined();
                            warn!(participant = %self.config.participant_id, round = %round_id, error = %error, "round failed");
                            // Tell the coordinator, so the round does not wait for us;
                            // if the update itself was refused there is nothing to add.
                            if !matches!(error, ParticipantError::Refused(_)) {
                                let decline = pb::DeclineRoundRequest {
                                    round_id: round_id.0,
                                    participant_id: self.config.participant_id.to_string(),
                                    session_token: token,
                                    reason: error.to_string(),
                                };
                                if let Err(status) = client.decline_round(decline).await {
                                    debug!(code = ?status.code(), "decline not recorded");
                                }
                            }
                            let reason = error.to_string();
                            self.report(match error {
                                ParticipantError::BudgetExhausted { .. }
                                | ParticipantError::OrgBudgetExhausted { .. } => {
                                    ParticipantEvent::BudgetExhausted { round_id, reason }
                                }
                                _ => ParticipantEvent::RoundFailed { round_id, reason },
                            });
                            // Declined and reported; the run ends with it.
                            if error.is_permanent() {
                                return Err(error);
                            }
                        }
                    }
                }
                None => {
                    return Err(ParticipantError::Protocol(
                        "empty event on the join stream".into(),
                    ));
                }
            }
        }
    }

    /// Takes part in one round: downloads the base model, trains, and
    /// submits the update; or, for a retried round on a base version and
    /// plan it already computed an update for, re-sends that privatized
    /// update without training and without a new privacy spend.
    #[instrument(skip_all, fields(participant = %self.config.participant_id, round = announcement.round_id, version = announcement.base_model_version))]
    async fn take_part(
        &self,
        client: &mut FederationClient<Channel>,
        announcement: pb::RoundAnnouncement,
        session_token: String,
        shutdown: &CancellationToken,
    ) -> Result<ParticipantEvent> {
        let round_id = RoundId(announcement.round_id);
        let base_version = ModelVersion(announcement.base_model_version);
        crate::schema_check::check_round_schema(
            client,
            &self.config,
            &announcement.feature_schema_sha256,
            base_version,
        )
        .await?;
        let plan_message = announcement.plan.ok_or_else(|| {
            ParticipantError::Protocol("announcement has no training plan".into())
        })?;
        let plan = TrainingPlan::from(plan_message);
        plan.validate()?;
        if matches!(self.workload, Workload::BenchmarkNoOp { .. })
            && (plan.dp_sgd.is_some() || plan.org_dp.is_some())
        {
            return Err(ParticipantError::Config(
                "a benchmark participant has no data to train with differential privacy".into(),
            ));
        }
        let target = SubmitTarget {
            round_id,
            base_version,
            deadline_unix_ms: announcement.deadline_unix_ms,
            reserve_slot_first: announcement.reserve_upload_slot,
            session_token,
        };
        let base_sha256 = announcement.base_model_sha256;
        let plan_sha256 = PlanFingerprint::of(&plan);
        // Benchmark participants never store updates (they refuse DP).
        let reusable = match self.workload {
            Workload::Train(_) => {
                self.reusable_update(
                    base_version,
                    &base_sha256,
                    &plan_sha256,
                    plan.dp_sgd.is_some(),
                )
                .await?
            }
            Workload::BenchmarkNoOp { .. } => None,
        };
        if let Some((stored, privacy)) = reusable {
            // A DP output already paid for: re-sending it is post-processing.
            info!(
                update_sha256 = %stored.header.update_sha256,
                ledger_round = stored.header.ledger_round_id,
                num_params = stored.delta.len(),
                "retried round on the same base version and plan: re-sending the stored privatized update without a new privacy spend"
            );
            self.metrics.update_resent();
            let ready = ReadyUpdate {
                delta: stored.delta,
                num_steps: stored.header.num_steps,
                mean_loss: stored.header.mean_loss.unwrap_or(f32::NAN),
                num_samples: 1,
                privacy: Some(privacy),
                update_sha256: Some(stored.header.update_sha256),
                resent: true,
            };
            return self.submit_ready(client, target, ready).await;
        }
        // Refuse early, before downloading anything, if the budget is spent
        // or the data is below the plan's minimum. The model's kind is not
        // known yet: all local rows stand in for the rows it trains on (an
        // autoencoder trains on fewer, and is checked again below).
        let num_local_records = match &self.workload {
            Workload::Train(data) => data.len() as u64,
            Workload::BenchmarkNoOp { .. } => 0,
        };
        self.check_privacy(
            round_id,
            base_version,
            UpdateOrigin {
                base_sha256: &base_sha256,
                plan_sha256: &plan_sha256,
            },
            &plan,
            num_local_records,
        )?;
        let base = match &self.workload {
            Workload::BenchmarkNoOp { .. } => {
                let weights = download_model_into(
                    client,
                    base_version,
                    &base_sha256,
                    self.take_spare_buffer(),
                )
                .await?;
                self.metrics
                    .downloaded(weights.params.len() * std::mem::size_of::<f32>());
                weights
            }
            Workload::Train(_) => match self.cache.get(base_version, &base_sha256) {
                Some(weights) => {
                    debug!("base model found in cache");
                    weights
                }
                None => {
                    let weights = download_model(client, base_version, &base_sha256).await?;
                    self.metrics
                        .downloaded(weights.params.len() * std::mem::size_of::<f32>());
                    self.cache.put(base_version, &weights)?;
                    weights
                }
            },
        };
        let data = match &self.workload {
            Workload::Train(data) => {
                if base.spec.input_dim as usize != data.num_features() {
                    return Err(ParticipantError::Config(format!(
                        "model expects {} features, local data has {}",
                        base.spec.input_dim,
                        data.num_features()
                    )));
                }
                Some(data.clone())
            }
            Workload::BenchmarkNoOp { .. } => None,
        };
        // N of the sampling rate q = B/N: the rows this model trains on.
        let num_training_records = data.as_ref().map_or(num_local_records, |data| {
            num_training_rows(&base.spec, data) as u64
        });
        // The spend is durable from here on, before anything derived from
        // the data exists.
        let recorded = self.record_privacy(
            round_id,
            base_version,
            UpdateOrigin {
                base_sha256: &base_sha256,
                plan_sha256: &plan_sha256,
            },
            &plan,
            num_training_records,
        )?;
        // Where the privatized update is kept for a retried round, linked to
        // the ledger entry that paid for it.
        let stored_header = recorded.as_ref().map(|(entry, _)| StoredUpdateHeader {
            base_model_version: base_version.0,
            base_model_sha256: base_sha256.clone(),
            plan_sha256: plan_sha256.clone(),
            ledger_round_id: entry.round_id,
            ledger_recorded_unix_ms: entry.recorded_unix_ms,
            num_steps: 0,
            mean_loss: None,
            num_params: 0,
            update_sha256: String::new(),
        });
        let privacy = recorded.map(|(_, report)| report);
        let stored_update = self.stored_update.clone();
        let training_started = std::time::Instant::now();
        let training_plan = plan.clone();
        let increment = match self.workload {
            Workload::BenchmarkNoOp { increment } => increment,
            Workload::Train(_) => 0.0,
        };
        let progress = Progress::training(format!("round {round_id}"));
        let shuffle_seed = self.config.shuffle_seed;
        let span = Span::current();
        let shutdown = shutdown.clone();
        let (outcome, delta, update_sha256) = tokio::task::spawn_blocking(move || -> Result<_> {
            let _entered = span.enter();
            let Some(data) = data else {
                let (outcome, delta) = benchmark_step(base.params, increment);
                return Ok((outcome, delta, None));
            };
            // Between steps, a shutdown stops training: the spend is
            // already recorded, and nothing derived from the data leaves.
            let observer = |step| {
                progress.step(step);
                if shutdown.is_cancelled() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            };
            let outcome = match &training_plan.dp_sgd {
                Some(dp_sgd) => {
                    let mut rng = os_seeded_rng()?;
                    train_local_dp_observed(
                        &base,
                        &data,
                        &training_plan,
                        dp_sgd,
                        &mut rng,
                        &observer,
                    )?
                }
                None => {
                    // Shuffling seed from the OS-seeded thread RNG: local
                    // training order is not predictable from outside
                    // (unless a test fixed it).
                    let seed: u64 = match shuffle_seed {
                        Some(seed) => seed ^ round_id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        None => rand::rng().random(),
                    };
                    train_local_observed(&base, &data, &training_plan, seed, &observer)?
                }
            };
            progress.finish();
            let mut delta = outcome.delta_from(&base.params);
            // The trained parameters are not needed any more.
            let outcome = LocalTrainingOutcome {
                params: Vec::new(),
                ..outcome
            };
            if let Some(org_dp) = &training_plan.org_dp {
                let mut rng = os_seeded_rng()?;
                privatize_update(&mut delta, org_dp, &mut rng)?;
            }
            // Kept durably before it leaves, so that a retried round (or
            // this one, if the deadline passes first) re-sends it instead
            // of training and spending again.
            let update_sha256 = stored_header.and_then(|header| {
                let header = StoredUpdateHeader {
                    num_steps: outcome.num_steps,
                    mean_loss: Some(outcome.mean_loss).filter(|loss| loss.is_finite()),
                    ..header
                };
                match stored_update.save(header, &delta) {
                    Ok(update_sha256) => Some(update_sha256),
                    Err(error) => {
                        warn!(error = %error, "privatized update not stored: a retried round would train and spend again");
                        None
                    }
                }
            });
            Ok((outcome, delta, update_sha256))
        })
        .await
        .map_err(|error| ParticipantError::Protocol(format!("training task failed: {error}")))??;
        self.metrics.trained_for(training_started.elapsed());
        if outcome.num_non_finite_examples > 0 {
            // A count for the operator, in local logs only: it is derived from
            // raw data, so it never goes into anything sent.
            info!(
                num_examples = outcome.num_non_finite_examples,
                "examples with a non-finite loss or gradient contributed nothing to training"
            );
        }
        // Under DP the size of the local data is not disclosed: every update
        // weighs the same.
        let num_samples = match &self.workload {
            _ if plan.dp_sgd.is_some() => 1,
            Workload::Train(data) => data.len() as u64,
            Workload::BenchmarkNoOp { .. } => 1,
        };
        let ready = ReadyUpdate {
            delta,
            num_steps: outcome.num_steps,
            mean_loss: outcome.mean_loss,
            num_samples,
            privacy,
            update_sha256,
            resent: false,
        };
        self.submit_ready(client, target, ready).await
    }

    /// Returns the stored privatized update and the ledger's current report
    /// if the round is on the base version (number and sha256) and plan the
    /// update was computed for, with DP, and the ledger holds the entry that
    /// paid for it. A stored update that does not fit is removed: the base
    /// version has moved on or the plan changed, and it can never be asked
    /// for again.
    ///
    /// # Errors
    /// The accountant's error for the ledger's report.
    async fn reusable_update(
        &self,
        base_version: ModelVersion,
        base_sha256: &str,
        plan_sha256: &PlanFingerprint,
        plan_has_dp: bool,
    ) -> Result<Option<(StoredUpdate, PrivacyReport)>> {
        let ledger = self.ledger.clone();
        let stored_update = self.stored_update.clone();
        let accounting_delta = self
            .config
            .privacy_budget
            .map_or(DEFAULT_DELTA, |budget| budget.delta);
        let base_sha256 = base_sha256.to_string();
        let plan_sha256 = plan_sha256.clone();
        let span = Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            find_reusable_update(
                &ledger,
                &stored_update,
                accounting_delta,
                base_version,
                &base_sha256,
                &plan_sha256,
                plan_has_dp,
            )
        })
        .await
        .map_err(|error| {
            ParticipantError::Protocol(format!("stored update task failed: {error}"))
        })?
    }

    /// Sends a ready update for the round `target` describes, if its
    /// deadline has not passed.
    async fn submit_ready(
        &self,
        client: &mut FederationClient<Channel>,
        target: SubmitTarget,
        ready: ReadyUpdate,
    ) -> Result<ParticipantEvent> {
        let SubmitTarget {
            round_id,
            base_version,
            deadline_unix_ms,
            reserve_slot_first,
            session_token,
        } = target;
        if unix_ms_now() > deadline_unix_ms {
            return Err(ParticipantError::DeadlinePassed(round_id));
        }
        let mut delta = ready.delta;
        if let Some(tamper) = &self.tamper {
            tamper(&mut delta);
        }
        let upload_slot = if reserve_slot_first {
            reserve_upload_slot(
                client,
                round_id,
                &self.config.participant_id,
                &session_token,
            )
            .await?
        } else {
            String::new()
        };
        let header = pb::UpdateHeader {
            round_id: round_id.0,
            base_model_version: base_version.0,
            participant_id: self.config.participant_id.to_string(),
            session_token,
            upload_slot,
            num_samples: ready.num_samples,
            encoding: pb::UpdateEncoding::F32Le as i32,
            num_params: delta.len() as u64,
            privacy: ready.privacy.as_ref().map(pb::PrivacyReport::from),
        };
        let delta = Arc::new(delta);
        let num_update_bytes = delta.len() * std::mem::size_of::<f32>();
        let response = submit_shared_update(client, header, delta.clone()).await?;
        self.metrics.uploaded(num_update_bytes);
        // Once the coordinator answered, the transport has normally dropped
        // its views of the update: keep the memory for the next download
        // (benchmark mode), or let it go if a view is still alive.
        if let Ok(buffer) = Arc::try_unwrap(delta) {
            self.recycle_buffer(buffer);
        }
        info!(
            num_steps = ready.num_steps,
            mean_loss = ready.mean_loss,
            num_accepted = response.num_updates_accepted,
            resent = ready.resent,
            "update submitted"
        );
        Ok(ParticipantEvent::Contributed {
            round_id,
            base_version,
            num_steps: ready.num_steps,
            mean_loss: ready.mean_loss,
            resent: ready.resent,
            update_sha256: ready.update_sha256,
        })
    }
}

impl Participant {
    fn take_spare_buffer(&self) -> Vec<f32> {
        std::mem::take(
            &mut *self
                .spare_buffer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    fn recycle_buffer(&self, mut buffer: Vec<f32>) {
        if matches!(self.workload, Workload::BenchmarkNoOp { .. }) {
            buffer.clear();
            *self
                .spare_buffer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = buffer;
        }
    }

    /// Returns the ledger entry this round would add, or `None` without DP.
    /// `num_training_records` is the N of the sampling rate q = B/N the
    /// entry accounts with.
    ///
    /// # Errors
    /// [`ParticipantError::PrivacyRequired`] for a round without DP when a
    /// budget is set; [`fedshield_core::CoreError::BelowMinimumRecords`] when
    /// N is below the plan's public minimum; the budget errors when the
    /// round would exceed it.
    fn check_privacy(
        &self,
        round_id: RoundId,
        base_version: ModelVersion,
        origin: UpdateOrigin<'_>,
        plan: &TrainingPlan,
        num_training_records: u64,
    ) -> Result<Option<(LedgerEntry, PrivacySpend)>> {
        let ledger = self
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.privacy_entry(
            &ledger,
            round_id,
            base_version,
            origin,
            plan,
            num_training_records,
        )
    }

    fn privacy_entry(
        &self,
        ledger: &PrivacyLedger,
        round_id: RoundId,
        base_version: ModelVersion,
        origin: UpdateOrigin<'_>,
        plan: &TrainingPlan,
        num_training_records: u64,
    ) -> Result<Option<(LedgerEntry, PrivacySpend)>> {
        let budget = self.config.privacy_budget;
        let Some(dp_sgd) = &plan.dp_sgd else {
            return match budget {
                Some(_) => Err(ParticipantError::PrivacyRequired),
                None => Ok(None),
            };
        };
        let delta = budget.map_or(DEFAULT_DELTA, |budget| budget.delta);
        // Below the plan's public minimum, decline: the reason names the
        // minimum only, not N.
        let sampling_rate = dp_sgd.sampling_rate_for(num_training_records)?;
        let entry = LedgerEntry::for_round(
            round_id,
            base_version,
            dp_sgd,
            sampling_rate,
            plan.org_dp.as_ref(),
        )
        .with_origin(origin.base_sha256, origin.plan_sha256.clone());
        let after = ledger.spent_with(&entry, delta)?;
        if let Some(budget) = budget {
            let spent = ledger.spent(delta)?;
            if after.epsilon > budget.epsilon {
                return Err(ParticipantError::BudgetExhausted {
                    spent: spent.epsilon,
                    would_be: after.epsilon,
                    budget: budget.epsilon,
                });
            }
            if let (Some(org_budget), Some(org_after)) = (budget.org_epsilon, after.org_epsilon)
                && org_after > org_budget
            {
                return Err(ParticipantError::OrgBudgetExhausted {
                    spent: spent.org_epsilon.unwrap_or(0.0),
                    would_be: org_after,
                    budget: org_budget,
                });
            }
        }
        Ok(Some((entry, after)))
    }

    /// Checks the round against the budget again and records its spend
    /// durably; returns the recorded entry and the report to send with the
    /// update.
    fn record_privacy(
        &self,
        round_id: RoundId,
        base_version: ModelVersion,
        origin: UpdateOrigin<'_>,
        plan: &TrainingPlan,
        num_training_records: u64,
    ) -> Result<Option<(LedgerEntry, PrivacyReport)>> {
        // One lock for the check and the write: nothing can spend in between.
        let mut ledger = self
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((entry, spend)) = self.privacy_entry(
            &ledger,
            round_id,
            base_version,
            origin,
            plan,
            num_training_records,
        )?
        else {
            return Ok(None);
        };
        ledger.record(entry.clone())?;
        drop(ledger);
        self.metrics.set_privacy_spent(spend.epsilon);
        // The report states the plans' worst case, not the spend at this
        // participant's own q, which would disclose its data size.
        let report = spend.report();
        info!(
            epsilon = spend.epsilon,
            reported_epsilon = report.epsilon,
            delta = report.delta,
            num_rounds = report.num_rounds,
            "privacy spend recorded"
        );
        if std::env::var_os(CRASH_AFTER_LEDGER_WRITE_ENV).is_some() {
            warn!("{CRASH_AFTER_LEDGER_WRITE_ENV} is set: aborting after the ledger write");
            std::process::abort();
        }
        Ok(Some((entry, report)))
    }
}

/// Where an update comes from: the base model's parameters and the plan it
/// was trained under, which key a stored update for a retried round.
#[derive(Clone, Copy)]
struct UpdateOrigin<'a> {
    /// The sha256 of the base model's parameters.
    base_sha256: &'a str,
    /// The fingerprint of the round's training plan.
    plan_sha256: &'a PlanFingerprint,
}

/// Returns the stored update and the ledger's current report at
/// `accounting_delta` if the stored update was computed from
/// `base_version` (parameters of sha256 `base_sha256`) under the plan
/// `plan_sha256`, with DP, and `ledger` holds the entry that paid for it.
/// A stored update that is unreadable, for another base or plan, or
/// without its ledger entry is removed (then the round trains and spends
/// normally, which is always safe). Blocking.
///
/// # Errors
/// The accountant's error for the ledger's report.
fn find_reusable_update(
    ledger: &std::sync::Mutex<PrivacyLedger>,
    stored_update: &StoredUpdateFile,
    accounting_delta: f64,
    base_version: ModelVersion,
    base_sha256: &str,
    plan_sha256: &PlanFingerprint,
    plan_has_dp: bool,
) -> Result<Option<(StoredUpdate, PrivacyReport)>> {
    let remove = |why: &str| {
        if let Err(error) = stored_update.remove() {
            warn!(error = %error, "stored update could not be removed");
        } else {
            info!(reason = why, "stored update removed");
        }
    };
    let header = match stored_update.header() {
        Ok(None) => return Ok(None),
        Ok(Some(header)) => header,
        Err(error) => {
            warn!(error = %error, "stored update unreadable");
            remove("unreadable");
            return Ok(None);
        }
    };
    if !plan_has_dp || !header.is_for(base_version.0, base_sha256, plan_sha256) {
        debug!(
            stored_base_version = header.base_model_version,
            base_version = %base_version,
            "the stored update is for another base version or plan"
        );
        remove("the base version moved on or the plan changed");
        return Ok(None);
    }
    let ledger = ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let paid_for = ledger
        .find(header.ledger_round_id, header.ledger_recorded_unix_ms)
        .is_some_and(|entry| {
            entry.base_model_version == base_version.0
                && entry.base_model_sha256.as_deref() == Some(base_sha256)
                && entry.plan_sha256.as_ref() == Some(plan_sha256)
        });
    if !paid_for {
        drop(ledger);
        warn!(
            ledger_round = header.ledger_round_id,
            "the stored update names no matching privacy ledger entry; training instead"
        );
        remove("no matching ledger entry");
        return Ok(None);
    }
    let report = ledger.spent(accounting_delta)?.report();
    drop(ledger);
    match stored_update.load() {
        Ok(stored) => Ok(stored.map(|stored| (stored, report))),
        Err(error) => {
            warn!(error = %error, "stored update unreadable");
            remove("unreadable");
            Ok(None)
        }
    }
}

/// Downloads one model version and checks it against `expected_sha256` and
/// its own header.
///
/// # Errors
/// A refused call, a malformed stream, or [`ParticipantError::ChecksumMismatch`].
pub async fn download_model(
    client: &mut FederationClient<Channel>,
    version: ModelVersion,
    expected_sha256: &str,
) -> Result<ModelWeights> {
    download_model_into(client, version, expected_sha256, Vec::new()).await
}

/// [`download_model`] into `buffer`'s memory (its contents are dropped).
/// The sha256 is computed from the chunks as they arrive, in the same pass
/// as decoding and validation.
///
/// # Errors
/// As [`download_model`].
pub async fn download_model_into(
    client: &mut FederationClient<Channel>,
    version: ModelVersion,
    expected_sha256: &str,
    buffer: Vec<f32>,
) -> Result<ModelWeights> {
    let mut stream = client
        .download_model(pb::DownloadModelRequest {
            model_version: version.0,
            preferred_chunk_params: DEFAULT_CHUNK_PARAMS as u32,
        })
        .await?
        .into_inner();
    let header = match stream.message().await?.and_then(|chunk| chunk.payload) {
        Some(pb::model_chunk::Payload::Header(header)) => header,
        _ => {
            return Err(ParticipantError::Protocol(
                "model download did not start with a header".into(),
            ));
        }
    };
    if header.model_version != version.0 {
        return Err(ParticipantError::Protocol(format!(
            "asked for model version {version}, got {}",
            header.model_version
        )));
    }
    let spec_message = header
        .spec
        .ok_or_else(|| ParticipantError::Protocol("model header has no spec".into()))?;
    let spec = ModelSpec::from(spec_message);
    spec.validate()?;
    if header.num_params != spec.num_params() as u64 {
        return Err(ParticipantError::Protocol(format!(
            "model header declares {} parameters, its spec has {}",
            header.num_params,
            spec.num_params()
        )));
    }
    let mut assembler = ChunkAssembler::with_buffer(buffer, spec.num_params());
    let mut hasher = ParamsSha256::new();
    let total_bytes = header.num_params * 4;
    let progress = Progress::download(format!("model v{version}"), total_bytes);
    let mut num_bytes = 0u64;
    while let Some(chunk) = stream.message().await? {
        match chunk.payload {
            Some(pb::model_chunk::Payload::Data(data)) => {
                hasher.update(&data);
                assembler.push(&data)?;
                num_bytes += data.len() as u64;
                progress.advance(data.len() as u64, num_bytes, total_bytes);
            }
            _ => {
                return Err(ParticipantError::Protocol(
                    "unexpected message in model download".into(),
                ));
            }
        }
    }
    let params = assembler.finish()?;
    let actual = hasher.finish();
    if actual != expected_sha256 || actual != header.sha256 {
        return Err(ParticipantError::ChecksumMismatch {
            version,
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    debug!(version = %version, num_params = params.len(), "model downloaded");
    Ok(ModelWeights::new(spec, params)?)
}

/// Streams an update: the header, then the delta in chunks. The chunks are
/// views into `delta` made as the transport asks for them, so sending holds
/// no second copy of the update.
///
/// # Errors
/// The coordinator's refusal.
pub async fn submit_update(
    client: &mut FederationClient<Channel>,
    header: pb::UpdateHeader,
    delta: Vec<f32>,
) -> Result<pb::SubmitUpdateResponse> {
    submit_shared_update(client, header, Arc::new(delta)).await
}

/// Waits for one of the coordinator's upload slots and returns its token,
/// for the header of the upload that follows at once. A coordinator that
/// does not offer slots (`UNIMPLEMENTED`) gets uploads without one: they
/// then wait for a slot inside `SubmitUpdate`.
///
/// # Errors
/// The coordinator's refusal (as it would refuse the update: session,
/// round, selection, deadline).
pub async fn reserve_upload_slot(
    client: &mut FederationClient<Channel>,
    round_id: RoundId,
    participant_id: &ParticipantId,
    session_token: &str,
) -> Result<String> {
    let reserved = client
        .reserve_upload_slot(pb::ReserveUploadSlotRequest {
            round_id: round_id.0,
            participant_id: participant_id.to_string(),
            session_token: session_token.to_string(),
        })
        .await;
    match reserved {
        Ok(slot) => Ok(slot.into_inner().slot_token),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            debug!("the coordinator offers no upload slots; uploading without one");
            Ok(String::new())
        }
        Err(status) => Err(status.into()),
    }
}

/// [`submit_update`] of an update the caller keeps a handle to.
async fn submit_shared_update(
    client: &mut FederationClient<Channel>,
    header: pb::UpdateHeader,
    delta: Arc<Vec<f32>>,
) -> Result<pb::SubmitUpdateResponse> {
    let header_message = pb::UpdateChunk {
        payload: Some(pb::update_chunk::Payload::Header(header)),
    };
    let chunks =
        shared_chunks(delta, |delta| delta, DEFAULT_CHUNK_PARAMS).map(|data| pb::UpdateChunk {
            payload: Some(pb::update_chunk::Payload::Data(data)),
        });
    let messages = futures::stream::iter(std::iter::once(header_message).chain(chunks));
    Ok(client.submit_update(messages).await?.into_inner())
}

/// The benchmark's no-op local step: returns the outcome "trained model =
/// base + increment" and its delta to the base, computed in the base's
/// memory (the base is not needed afterwards).
fn benchmark_step(base: Vec<f32>, increment: f32) -> (LocalTrainingOutcome, Vec<f32>) {
    let mut delta = base;
    for value in &mut delta {
        *value = (*value + increment) - *value;
    }
    let outcome = LocalTrainingOutcome {
        params: Vec::new(),
        num_steps: 0,
        mean_loss: 0.0,
        num_non_finite_examples: 0,
    };
    (outcome, delta)
}

/// Returns an error and its sources as one line ("transport error: tls
/// handshake failed: ..."), since the outermost message alone often says
/// nothing useful.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
