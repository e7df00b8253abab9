//! One announced round: checks the schema and the plan, re-sends a stored
//! update for a retried round, or gets the base model (cache or download),
//! records the privacy spend, trains (DP-SGD, organization-level DP) on a
//! blocking thread and hands the update to [`super::upload`].

use std::ops::ControlFlow;

use fedshield_core::model::training::{
    LocalTrainingOutcome, num_training_rows, train_local_observed,
};
use fedshield_core::plan_fingerprint::PlanFingerprint;
use fedshield_core::privacy::dp_sgd::train_local_dp_observed;
use fedshield_core::privacy::noise::os_seeded_rng;
use fedshield_core::privacy::org_dp::privatize_update;
use fedshield_core::{ModelVersion, RoundId, TrainingPlan};
use fedshield_proto::download::{download_model, download_model_into};
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use rand::RngExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{Span, debug, info, instrument, warn};

use super::privacy::UpdateOrigin;
use super::upload::{ReadyUpdate, SubmitTarget};
use super::{Participant, ParticipantEvent, Workload};
use crate::error::{ParticipantError, Result};
use crate::pending::StoredUpdateHeader;
use crate::progress::{DownloadProgressBar, Progress};

impl Participant {
    /// Takes part in one round: downloads the base model, trains, and
    /// submits the update; or, for a retried round on a base version and
    /// plan it already computed an update for, re-sends that privatized
    /// update without training and without a new privacy spend.
    #[instrument(skip_all, fields(participant = %self.config.participant_id, round = announcement.round_id, version = announcement.base_model_version))]
    pub(super) async fn take_part(
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
        let secure_setup = announcement.secure_aggregation.clone();
        if plan.secure_aggregation.is_some() != secure_setup.is_some() {
            return Err(ParticipantError::Protocol(
                "the announcement's secure aggregation parameters and its plan disagree".into(),
            ));
        }
        let has_distributed_dp = plan
            .secure_aggregation
            .as_ref()
            .is_some_and(|secure| secure.distributed_dp.is_some());
        if matches!(self.workload, Workload::BenchmarkNoOp { .. })
            && (plan.dp_sgd.is_some() || plan.org_dp.is_some() || has_distributed_dp)
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
        // Under secure aggregation every attempt is masked and noised
        // afresh, and its spend recorded afresh: nothing is re-sent.
        let reusable = match self.workload {
            Workload::Train(_) if secure_setup.is_some() => None,
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
        // The key phases run before training, so that the coordinator's
        // roster closes while participants train.
        let secure_session = match &secure_setup {
            Some(setup) => Some(self.secure_key_phases(client, &target, setup).await?),
            None => None,
        };
        let base = match &self.workload {
            Workload::BenchmarkNoOp { .. } => {
                let weights = download_model_into(
                    client,
                    base_version,
                    &base_sha256,
                    self.take_spare_buffer(),
                    &mut DownloadProgressBar::default(),
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
                    let weights = download_model(
                        client,
                        base_version,
                        &base_sha256,
                        &mut DownloadProgressBar::default(),
                    )
                    .await?;
                    self.metrics
                        .downloaded(weights.params.len() * std::mem::size_of::<f32>());
                    self.cache.put(base_version, &weights)?;
                    weights
                }
            },
        };
        let data = match &self.workload {
            Workload::Train(data) => {
                crate::schema_check::check_labels_for_model(&self.config, &base.spec)?;
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
        // the ledger entry that paid for it. Under secure aggregation a
        // retried round encodes and noises afresh and nothing is re-sent,
        // so nothing is kept.
        let keeps_update = secure_setup.is_none();
        let stored_header = recorded
            .as_ref()
            .filter(|_| keeps_update)
            .map(|(entry, _)| StoredUpdateHeader {
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
        match (secure_session, &plan.secure_aggregation) {
            (Some(session), Some(secure_plan)) => {
                self.submit_secure(client, target, ready, session, secure_plan)
                    .await
            }
            _ => self.submit_ready(client, target, ready).await,
        }
    }
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
