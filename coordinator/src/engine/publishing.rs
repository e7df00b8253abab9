//! Publishing a closed round: its aggregate checked, stepped by the server
//! optimizer, evaluated and stored as the next model version with its card,
//! then announced, and the round recorded in the history.

use super::*;

impl Engine {
    /// Closes the open round, publishes its aggregate as the next version.
    pub(super) async fn publish(&self) {
        let Some((round, fed_avg)) = self.close_open_round() else {
            return;
        };
        let span = round.span.clone();
        self.publish_closed(round, fed_avg).instrument(span).await;
    }

    /// Publishes the aggregate of a closed round (inside the round's span).
    async fn publish_closed(&self, round: OpenRound, fed_avg: Option<RobustAggregator>) {
        let Some(fed_avg) = fed_avg else {
            self.finish_abandoned(round, "aggregate was already closed".to_string());
            return;
        };
        let registry = self.inner.registry.clone();
        let plan = self.inner.plan.clone();
        let base = round.base.clone();
        let contributors: Vec<ParticipantId> = round
            .accepted
            .iter()
            .map(|(participant, _, _)| participant.clone())
            .collect();
        let num_examples: u64 = round.accepted.iter().map(|(_, count, _)| count).sum();
        let round_id = round.round_id;
        let contributor_names: Vec<String> = contributors
            .iter()
            .map(|participant| participant.to_string())
            .collect();
        let evaluation = self.inner.evaluation.get().cloned();
        let privacy_reports: Vec<(String, PrivacyReport)> = round
            .accepted
            .iter()
            .filter_map(|(participant, _, report)| {
                report.map(|report| (participant.to_string(), report))
            })
            .collect();
        let privacy_delta = self.inner.privacy_delta.get().copied();
        let privacy_lineage = self
            .inner
            .privacy_lineage
            .get()
            .cloned()
            .unwrap_or_default();
        let rule = self.inner.config.aggregation.clone();
        let engine = self.clone();
        let aggregation_started = Instant::now();
        let span = Span::current();
        let built = tokio::task::spawn_blocking(move || -> Result<PublishedModel> {
            let _entered = span.entered();
            let outcome = fed_avg.finish(&base.weights.params)?;
            let rejected: Vec<String> = outcome
                .rejected
                .iter()
                .filter_map(|&index| contributor_names.get(index).cloned())
                .collect();
            let aggregation = AggregationSummary {
                rule: rule.to_string(),
                num_updates: outcome.num_updates,
                num_clipped: outcome.num_clipped,
                rejected,
            };
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
            engine
                .inner
                .server_optimizer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .apply(&base.weights.params, &mut params)?;
            // Never publish a non-finite parameter, whatever produced it.
            check_finite_aggregate(&params, "next model")?;
            let weights = ModelWeights::new(base.weights.spec.clone(), params)?;
            let metrics = match &evaluation {
                Some(evaluation) => Some(fedshield_core::metrics::evaluate_model(
                    &weights, evaluation, None,
                )?),
                None => None,
            };
            // A round without DP on a DP model keeps its privacy section.
            let privacy = privacy_lineage.next_model_privacy(
                base.card.privacy.as_ref(),
                &plan,
                privacy_delta,
                &contributor_names,
                &privacy_reports,
            )?;
            let version = base.version.next();
            let card = ModelCard {
                version: version.0,
                parent: Some(base.version.0),
                // Filled in by `store_new`, which hashes the weights while
                // it writes them.
                sha256: String::new(),
                num_params: weights.params.len() as u64,
                spec: weights.spec.clone(),
                round_id: Some(round_id.0),
                contributors: contributor_names,
                num_examples,
                plan,
                created_unix_ms: unix_ms(SystemTime::now()),
                feature_schema: base.card.feature_schema.clone(),
                feature_schema_sha256: base.card.feature_schema_sha256.clone(),
                metrics,
                privacy,
                aggregation: Some(aggregation),
            };
            let model = PublishedModel {
                version,
                weights,
                card,
            };
            Ok(model)
        })
        .await;
        let built = match built {
            Ok(Ok(model)) => Ok(registry.store_new(model).await),
            other => other,
        };
        let model = match built {
            Ok(Ok(model)) => Arc::new(model),
            Ok(Err(CoordinatorError::Store(error @ CoreError::NonFiniteAggregate { .. }))) => {
                warn!(
                    round = %round_id,
                    error = %error,
                    num_updates = round.accepted.len(),
                    "aggregate is not finite; round abandoned, nothing published"
                );
                self.finish_abandoned(round, format!("aggregate not published: {error}"));
                return;
            }
            Ok(Err(error)) => {
                warn!(round = %round_id, error = %error, "publishing failed; round abandoned");
                self.finish_abandoned(round, format!("publishing failed: {error}"));
                return;
            }
            Err(error) => {
                warn!(round = %round_id, error = %error, "publishing task failed; round abandoned");
                self.finish_abandoned(round, format!("publishing task failed: {error}"));
                return;
            }
        };
        let aggregation_duration = aggregation_started.elapsed();
        let duration = round.opened_at.elapsed();
        round
            .span
            .record("version", tracing::field::display(model.version));
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
