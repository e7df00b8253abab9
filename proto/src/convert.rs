//! Every conversion between a wire message and the domain type it carries,
//! in one place: the coordinator and the participant speak in domain types
//! and convert at the edge.

use fedshield_core::ModelSpec;
use fedshield_core::plan::TrainingPlan;
use fedshield_core::plan::{DistributedDpPlan, DpSgdPlan, OrgDpPlan, SecureAggregationPlan};
use fedshield_core::privacy::PrivacyReport;

use crate::v1 as pb;

impl From<&TrainingPlan> for pb::TrainingPlan {
    fn from(plan: &TrainingPlan) -> Self {
        pb::TrainingPlan {
            local_epochs: plan.local_epochs,
            batch_size: plan.batch_size,
            learning_rate: plan.learning_rate,
            max_local_steps: plan.max_local_steps,
            weight_decay: plan.weight_decay,
            trim_fraction: plan.trim_fraction,
            dp_sgd: plan.dp_sgd.as_ref().map(|dp| pb::DpSgdPlan {
                noise_multiplier: dp.noise_multiplier,
                clip_norm: dp.clip_norm,
                steps_per_round: dp.steps_per_round,
                expected_batch_size: dp.expected_batch_size,
                min_records: dp.min_records,
            }),
            org_dp: plan.org_dp.as_ref().map(|org| pb::OrgDpPlan {
                clip_norm: org.clip_norm,
                noise_multiplier: org.noise_multiplier,
            }),
            secure_aggregation: plan.secure_aggregation.as_ref().map(|secure| {
                pb::SecureAggregationPlan {
                    clip_norm: secure.clip_norm,
                    scale: secure.scale,
                    max_participants: secure.max_participants,
                    distributed_dp: secure.distributed_dp.as_ref().map(|distributed| {
                        pb::DistributedDpPlan {
                            noise_variance: distributed.noise_variance,
                            min_participants: distributed.min_participants,
                            rounding_beta: distributed.rounding_beta,
                            padded_dim: distributed.padded_dim,
                        }
                    }),
                }
            }),
        }
    }
}

/// The plan an announcement carries, unchecked: call
/// [`TrainingPlan::validate`] before training with it.
impl From<pb::TrainingPlan> for TrainingPlan {
    fn from(message: pb::TrainingPlan) -> Self {
        TrainingPlan {
            local_epochs: message.local_epochs,
            batch_size: message.batch_size,
            learning_rate: message.learning_rate,
            max_local_steps: message.max_local_steps,
            weight_decay: message.weight_decay,
            trim_fraction: message.trim_fraction,
            dp_sgd: message.dp_sgd.map(|dp| {
                DpSgdPlan::new(
                    dp.expected_batch_size,
                    dp.min_records,
                    dp.noise_multiplier,
                    dp.clip_norm,
                    dp.steps_per_round,
                )
            }),
            org_dp: message
                .org_dp
                .map(|org| OrgDpPlan::new(org.clip_norm, org.noise_multiplier)),
            secure_aggregation: message.secure_aggregation.map(|secure| {
                SecureAggregationPlan::new(secure.clip_norm, secure.scale, secure.max_participants)
                    .with_distributed_dp(secure.distributed_dp.map(|distributed| {
                        DistributedDpPlan::new(
                            distributed.noise_variance,
                            distributed.min_participants,
                            distributed.rounding_beta,
                            distributed.padded_dim,
                        )
                    }))
            }),
        }
    }
}

impl From<&PrivacyReport> for pb::PrivacyReport {
    fn from(report: &PrivacyReport) -> Self {
        pb::PrivacyReport {
            epsilon: report.epsilon,
            delta: report.delta,
            org_epsilon: report.org_epsilon,
            num_rounds: report.num_rounds,
        }
    }
}

/// The report an update header carries, unchecked: the coordinator
/// validates it before it admits the update.
impl From<pb::PrivacyReport> for PrivacyReport {
    fn from(message: pb::PrivacyReport) -> Self {
        PrivacyReport {
            epsilon: message.epsilon,
            delta: message.delta,
            org_epsilon: message.org_epsilon,
            num_rounds: message.num_rounds,
        }
    }
}

impl From<&ModelSpec> for pb::ModelSpec {
    fn from(spec: &ModelSpec) -> Self {
        pb::ModelSpec {
            kind: spec.kind.clone(),
            input_dim: spec.input_dim,
            hidden_dims: spec.hidden_dims.clone(),
            num_classes: spec.num_classes,
        }
    }
}

/// The spec a model header carries, unchecked: call [`ModelSpec::validate`].
impl From<pb::ModelSpec> for ModelSpec {
    fn from(message: pb::ModelSpec) -> Self {
        ModelSpec {
            kind: message.kind,
            input_dim: message.input_dim,
            hidden_dims: message.hidden_dims,
            num_classes: message.num_classes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_with_both_dp_levels_round_trips_through_its_message() {
        let plan = TrainingPlan {
            local_epochs: 3,
            batch_size: 32,
            learning_rate: 0.05,
            max_local_steps: 100,
            weight_decay: 0.001,
            trim_fraction: 0.25,
            dp_sgd: Some(DpSgdPlan::new(64, 4000, 1.1, 1.0, 63)),
            org_dp: Some(OrgDpPlan::new(2.0, 0.7)),
            secure_aggregation: None,
        };
        assert_eq!(TrainingPlan::from(pb::TrainingPlan::from(&plan)), plan);
        let secure = TrainingPlan {
            org_dp: None,
            secure_aggregation: Some(
                SecureAggregationPlan::new(1.5, 65536.0, 32)
                    .with_distributed_dp(Some(DistributedDpPlan::new(4.0e6, 8, 0.6, 1 << 20))),
            ),
            ..plan
        };
        assert_eq!(TrainingPlan::from(pb::TrainingPlan::from(&secure)), secure);
        let plain = TrainingPlan::new();
        assert_eq!(TrainingPlan::from(pb::TrainingPlan::from(&plain)), plain);
    }

    #[test]
    fn reports_and_specs_round_trip_through_their_messages() {
        let report = PrivacyReport {
            epsilon: 2.5,
            delta: 1e-5,
            org_epsilon: Some(7.0),
            num_rounds: 4,
        };
        assert_eq!(
            PrivacyReport::from(pb::PrivacyReport::from(&report)),
            report
        );
        let spec = ModelSpec::mlp(12, vec![16, 8], 3);
        assert_eq!(ModelSpec::from(pb::ModelSpec::from(&spec)), spec);
    }
}
