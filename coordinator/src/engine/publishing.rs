//! Publishing a closed round: its aggregate finished and stepped by the
//! server optimizer, the next version built from it ([`build_next_version`],
//! a pure function of its inputs), stored, then announced, and the round
//! recorded in the history. A round whose version cannot be built or stored
//! is abandoned instead.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fedshield_core::aggregation::fedavg::check_finite_aggregate;
use fedshield_core::aggregation::robust::{AggregateOutcome, RobustAggregator};
use fedshield_core::card::{AggregationSummary, ModelCard};
use fedshield_core::clock::unix_ms;
use fedshield_core::model::calibration::{ThresholdCalibration, calibrate_model};
use fedshield_core::model::data::Dataset;
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::privacy::PrivacyReport;
use fedshield_core::privacy::lineage::LineageRecord;
use fedshield_core::{CoreError, ParticipantId, RoundId, TrainingPlan};
use tokio::time::Instant;
use tracing::{Instrument, Span, info, warn};

use super::history::push_history;
use super::{Engine, OpenRound, RoundOutcome, RoundSummary};
use crate::error::{CoordinatorError, Result};
use crate::registry::PublishedModel;

/// Everything the next version is made of, gathered from the closed round,
/// the plan and the federation's privacy settings.
pub(super) struct NextVersionInputs {
    /// The version the round trained.
    pub base: Arc<PublishedModel>,
    /// The aggregate's parameters, after the server optimizer's step.
    pub params: Vec<f32>,
    pub round_id: RoundId,
    /// The contributors' ids, in acceptance order.
    pub contributors: Vec<String>,
    /// Examples the contributors declared, summed.
    pub num_examples: u64,
    pub plan: TrainingPlan,
    pub aggregation: AggregationSummary,
    /// Labelled data the version is scored on for its card, if configured.
    pub evaluation: Option<Arc<Dataset>>,
    /// The contributors' privacy reports, by contributor id.
    pub privacy_reports: Vec<(String, PrivacyReport)>,
    /// δ of the federation's privacy target, if it has one.
    pub privacy_delta: Option<f64>,
    /// The privacy promise and acknowledged weakening the card records.
    pub privacy_lineage: LineageRecord,
    /// When the version is created, in unix milliseconds.
    pub created_unix_ms: u64,
}

/// Returns the version that follows `inputs.base`: its weights (refused if
/// any parameter is not finite), its evaluation metrics and privacy
/// guarantee, and its card. Writes nothing; the card's `sha256` is left
/// empty for the store to fill in as it hashes the weights.
///
/// # Errors
/// [`CoreError::NonFiniteAggregate`], or an evaluation or privacy error.
pub(super) fn build_next_version(inputs: NextVersionInputs) -> Result<PublishedModel> {
    let NextVersionInputs {
        base,
        params,
        round_id,
        contributors,
        num_examples,
        plan,
        aggregation,
        evaluation,
        privacy_reports,
        privacy_delta,
        privacy_lineage,
        created_unix_ms,
    } = inputs;
    // Never publish a non-finite parameter, whatever produced it.
    check_finite_aggregate(&params, "next model")?;
    let weights = ModelWeights::new(base.weights.spec.clone(), params)?;
    let metrics = match &evaluation {
        Some(evaluation) => Some(fedshield_core::model::metrics::evaluate_model(
            &weights, evaluation, None,
        )?),
        None => None,
    };
    let calibration = match &evaluation {
        Some(evaluation) => calibrate_on_evaluation_set(&weights, evaluation, base.version.next())?,
        None => None,
    };
    // A round without DP on a DP model keeps its privacy section.
    let privacy = privacy_lineage.next_model_privacy(
        base.card.privacy.as_ref(),
        &plan,
        privacy_delta,
        &contributors,
        &privacy_reports,
    )?;
    let version = base.version.next();
    let card = ModelCard {
        version: version.0,
        parent: Some(base.version.0),
        // Filled in by `store_new`, which hashes the weights while it
        // writes them.
        sha256: String::new(),
        num_params: weights.params.len() as u64,
        spec: weights.spec.clone(),
        round_id: Some(round_id.0),
        contributors,
        num_examples,
        plan,
        created_unix_ms,
        feature_schema: base.card.feature_schema.clone(),
        feature_schema_sha256: base.card.feature_schema_sha256.clone(),
        metrics,
        privacy,
        aggregation: Some(aggregation),
        calibration,
    };
    Ok(PublishedModel {
        version,
        weights,
        card,
    })
}

/// Where the thresholds of a coordinator's cards are calibrated.
pub(crate) const EVALUATION_SET_SOURCE: &str = "coordinator evaluation set";

/// Returns the alert thresholds of `weights` calibrated on the benign rows
/// (class 0) of the evaluation set, for every model kind (see
/// [`fedshield_core::model::calibration`]). An evaluation set without benign
/// rows, or with a NaN score, gives none, and says so in the log: the
/// version is published without calibration rather than not at all.
///
/// # Errors
/// If the model cannot score the evaluation set (feature count mismatch).
pub(crate) fn calibrate_on_evaluation_set(
    weights: &ModelWeights,
    evaluation: &Dataset,
    version: fedshield_core::ModelVersion,
) -> std::result::Result<Option<ThresholdCalibration>, CoreError> {
    match calibrate_model(weights, evaluation, EVALUATION_SET_SOURCE) {
        Ok(Some(calibration)) => Ok(Some(calibration)),
        Ok(None) => {
            warn!(
                version = %version,
                num_examples = evaluation.len(),
                "the evaluation set has no benign rows; the card gets no alert threshold calibration"
            );
            Ok(None)
        }
        Err(error @ CoreError::NanScore { .. }) => {
            warn!(version = %version, error = %error, "the card gets no alert threshold calibration");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Returns the card's account of the aggregation: the rule, how many
/// updates it combined and clipped, and the contributors (by id, from
/// `contributors` in acceptance order) whose updates it rejected.
fn aggregation_summary(
    rule: String,
    outcome: &AggregateOutcome,
    contributors: &[String],
) -> AggregationSummary {
    AggregationSummary {
        rule,
        num_updates: outcome.num_updates,
        num_clipped: outcome.num_clipped,
        rejected: outcome
            .rejected
            .iter()
            .filter_map(|&index| contributors.get(index).cloned())
            .collect(),
        secure_aggregation: None,
    }
}

/// Why a closed round published nothing.
enum PublishFailure {
    /// Building or storing the version failed.
    Build(CoordinatorError),
    /// The blocking task that built it failed (a panic).
    Task(tokio::task::JoinError),
}

impl Engine {
    /// Closes the open round, publishes its aggregate as the next version.
    pub(super) async fn publish(&self) {
        let Some((round, fed_avg)) = self.close_open_round() else {
            return;
        };
        let span = round.span.clone();
        self.publish_closed(round, fed_avg).instrument(span).await;
    }

    /// Publishes the aggregate of a closed round (inside the round's span),
    /// or abandons the round if no version can be made of it.
    async fn publish_closed(&self, round: OpenRound, fed_avg: Option<RobustAggregator>) {
        if let Some(secure) = round.secure.clone() {
            let aggregation_started = Instant::now();
            let engine = self.clone();
            let num_params = round.base.weights.params.len();
            let span = Span::current();
            let unmasked = tokio::task::spawn_blocking(move || {
                let _entered = span.entered();
                engine.secure_aggregate(&secure, num_params)
            })
            .await;
            let fed_avg = match unmasked {
                Ok(Ok(fed_avg)) => fed_avg,
                Ok(Err(error)) => {
                    warn!(round = %round.round_id, error = %error, "secure aggregation could not unmask the sum; round abandoned");
                    self.finish_abandoned(
                        round,
                        format!("secure aggregation could not unmask the sum: {error}"),
                    );
                    return;
                }
                Err(error) => {
                    self.abandon_unpublished(round, PublishFailure::Task(error));
                    return;
                }
            };
            let built = self.build_and_store(&round, fed_avg).await;
            if let Some(secure) = &round.secure {
                secure.close("published");
            }
            match built {
                Ok(model) => {
                    self.announce_published(round, Arc::new(model), aggregation_started.elapsed());
                }
                Err(failure) => self.abandon_unpublished(round, failure),
            }
            return;
        }
        let Some(fed_avg) = fed_avg else {
            self.finish_abandoned(round, "aggregate was already closed".to_string());
            return;
        };
        let aggregation_started = Instant::now();
        match self.build_and_store(&round, fed_avg).await {
            Ok(model) => {
                self.announce_published(round, Arc::new(model), aggregation_started.elapsed());
            }
            Err(failure) => self.abandon_unpublished(round, failure),
        }
    }

    /// Finishes the round's aggregate and builds the next version from it on
    /// a blocking thread, then stores it; returns it once it is durable.
    async fn build_and_store(
        &self,
        round: &OpenRound,
        fed_avg: RobustAggregator,
    ) -> std::result::Result<PublishedModel, PublishFailure> {
        let contributors: Vec<String> = round
            .accepted
            .iter()
            .map(|(participant, _, _)| participant.to_string())
            .collect();
        let privacy_reports: Vec<(String, PrivacyReport)> = round
            .accepted
            .iter()
            .filter_map(|(participant, _, report)| {
                report.map(|report| (participant.to_string(), report))
            })
            .collect();
        let secure_summary = round
            .secure
            .as_ref()
            .map(|secure| secure.summary(self.inner.plan.secure_aggregation.as_ref()));
        let base = round.base.clone();
        let round_id = round.round_id;
        let num_examples: u64 = round.accepted.iter().map(|(_, count, _)| count).sum();
        let engine = self.clone();
        let span = Span::current();
        let built = tokio::task::spawn_blocking(move || -> Result<PublishedModel> {
            let _entered = span.entered();
            let (params, mut aggregation) =
                engine.finish_aggregate(fed_avg, &base, round_id, &contributors)?;
            aggregation.secure_aggregation = secure_summary;
            build_next_version(NextVersionInputs {
                base,
                params,
                round_id,
                contributors,
                num_examples,
                plan: engine.inner.plan.clone(),
                aggregation,
                evaluation: engine.inner.evaluation.get().cloned(),
                privacy_reports,
                privacy_delta: engine.inner.privacy_delta.get().copied(),
                privacy_lineage: engine
                    .inner
                    .privacy_lineage
                    .get()
                    .cloned()
                    .unwrap_or_default(),
                created_unix_ms: unix_ms(SystemTime::now()),
            })
        })
        .await
        .map_err(PublishFailure::Task)?
        .map_err(PublishFailure::Build)?;
        self.inner
            .registry
            .store_new(built)
            .await
            .map_err(PublishFailure::Build)
    }

    /// Unmasks a closed secure round's sum and returns it, averaged over
    /// the survivors, as a FedAvg aggregate of one update (the server
    /// optimizer then steps on it as on any aggregate). Blocking.
    fn secure_aggregate(
        &self,
        secure: &super::secure::SecureRound,
        num_params: usize,
    ) -> Result<RobustAggregator> {
        let plan = self.inner.plan.secure_aggregation.as_ref().ok_or_else(|| {
            CoordinatorError::TaskFailed("a secure round without a secure plan".to_string())
        })?;
        let encoding = fedshield_core::privacy::distributed::SecAggEncoding::for_plan(
            plan,
            num_params,
            secure.setup.rotation_seed,
        )
        .map_err(CoordinatorError::Store)?;
        let unmasking_started = std::time::Instant::now();
        let (average, survivors) = secure.unmasked_average(&encoding)?;
        info!(
            num_survivors = survivors.len(),
            duration_ms = unmasking_started.elapsed().as_millis() as u64,
            "secure aggregation unmasked the sum of the survivors' updates"
        );
        let mut aggregator = RobustAggregator::new(
            &fedshield_core::aggregation::robust::AggregationRule::FedAvg,
            num_params,
        )?;
        aggregator.add(average, 1.0)?;
        Ok(aggregator)
    }

    /// Finishes a closed round's aggregate over `base` and takes the server
    /// optimizer's step; returns the parameters and the aggregation's
    /// account. Blocking.
    fn finish_aggregate(
        &self,
        fed_avg: RobustAggregator,
        base: &PublishedModel,
        round_id: RoundId,
        contributors: &[String],
    ) -> Result<(Vec<f32>, AggregationSummary)> {
        let outcome = fed_avg.finish(&base.weights.params)?;
        let aggregation = aggregation_summary(
            self.inner.config.aggregation.to_string(),
            &outcome,
            contributors,
        );
        if aggregation.num_clipped > 0 || !aggregation.rejected.is_empty() {
            info!(
                round = %round_id,
                rule = %aggregation.rule,
                num_clipped = aggregation.num_clipped,
                rejected = ?aggregation.rejected,
                "robust aggregation limited some updates"
            );
        }
        let mut params = outcome.params;
        self.inner
            .server_optimizer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .apply(&base.weights.params, &mut params)?;
        Ok((params, aggregation))
    }

    /// Abandons a closed round whose version could not be built or stored.
    fn abandon_unpublished(&self, round: OpenRound, failure: PublishFailure) {
        let round_id = round.round_id;
        let reason = match failure {
            PublishFailure::Build(CoordinatorError::Store(
                error @ CoreError::NonFiniteAggregate { .. },
            )) => {
                warn!(
                    round = %round_id,
                    error = %error,
                    num_updates = round.accepted.len(),
                    "aggregate is not finite; round abandoned, nothing published"
                );
                format!("aggregate not published: {error}")
            }
            PublishFailure::Build(error) => {
                warn!(round = %round_id, error = %error, "publishing failed; round abandoned");
                format!("publishing failed: {error}")
            }
            PublishFailure::Task(error) => {
                warn!(round = %round_id, error = %error, "publishing task failed; round abandoned");
                format!("publishing task failed: {error}")
            }
        };
        self.finish_abandoned(round, reason);
    }

    /// Makes the stored `model` the current version: updates the state and
    /// the metrics, announces it, queues the round's history record, and
    /// recycles the previous version's memory.
    fn announce_published(
        &self,
        round: OpenRound,
        model: Arc<PublishedModel>,
        aggregation_duration: Duration,
    ) {
        let round_id = round.round_id;
        let duration = round.opened_at.elapsed();
        round
            .span
            .record("version", tracing::field::display(model.version));
        let contributors: Vec<ParticipantId> = round
            .accepted
            .iter()
            .map(|(participant, _, _)| participant.clone())
            .collect();
        let summary = RoundSummary {
            round_id,
            base_version: round.base.version,
            outcome: RoundOutcome::Completed {
                published: model.version,
            },
            contributors,
            duration,
            reason: format!(
                "{} of {} selected participants contributed",
                round.accepted.len(),
                round.selected.len()
            ),
        };
        let previous = {
            let mut state = self.lock_state();
            let previous = std::mem::replace(&mut state.current, model.clone());
            state.num_rounds_completed += 1;
            push_history(&mut state.history, summary.clone());
            // Under the state lock, so that the metrics never lag the
            // version that status readers see.
            self.inner
                .metrics
                .round_completed(duration, aggregation_duration);
            self.inner.metrics.set_current_model(&model.card);
            previous
        };
        info!(
            round = %round_id,
            version = %model.version,
            num_contributors = round.accepted.len(),
            duration_ms = duration.as_millis() as u64,
            sha256 = %model.card.sha256,
            "round completed, model published"
        );
        // The version is durable (`store_new` returned): announce it, then
        // queue the round's history record, which is not needed for that.
        let replaced = self.inner.published.send_replace(model);
        self.record_round(&summary);
        drop((replaced, round));
        // The previous version's parameters, unless a download still holds
        // them, become the memory of a later round's sum or received update.
        if let Ok(previous) = Arc::try_unwrap(previous) {
            self.recycle_receive_buffer(previous.weights.params);
        }
    }
}
