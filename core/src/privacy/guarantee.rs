//! The guarantee a model states. Each model card carries a [`ModelPrivacy`]:
//! for every participant whose data shaped the model, its last reported
//! guarantee and the guarantee the plans imply for the rounds it
//! contributed to; the model's guarantee is the worst of them, and it holds
//! only while every round in the model's history had DP (see
//! [`crate::privacy::lineage`] for restarts that change the privacy
//! settings). Also the accountant's mechanisms that a plan's rounds amount
//! to, and the ε of their composition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::plan::{DpSgdPlan, OrgDpPlan, TrainingPlan};
use crate::privacy::accountant::{Conversion, RdpAccountant, SubsampledGaussian};
use crate::privacy::lineage::{PrivacyPromise, PrivacyWeakening};
use crate::privacy::report::PrivacyReport;

/// Name of the record-level mechanism, as model cards state it.
pub const DP_SGD_MECHANISM: &str =
    "dp-sgd: poisson-subsampled gaussian, per-example L2 clipping, rdp accounting";

/// Name of the organization-level mechanism, as model cards state it.
pub const ORG_DP_MECHANISM: &str =
    "update-level gaussian: whole update L2 clipping, rdp accounting";

/// Returns the record-level mechanism of `rounds` rounds of `dp` in the
/// worst case the plan allows: a participant with the minimum data size,
/// sampling at q_max = B/N_min. This is what the plan promises and what
/// model cards state.
pub fn record_level_mechanism(dp: &DpSgdPlan, rounds: u64) -> SubsampledGaussian {
    record_level_mechanism_at(dp, dp.max_sampling_rate(), rounds)
}

/// Returns the record-level mechanism of `rounds` rounds of `dp` for a
/// participant sampling at its own rate `sampling_rate` (q = B/N, see
/// [`DpSgdPlan::sampling_rate_for`]): what its ledger records.
pub fn record_level_mechanism_at(
    dp: &DpSgdPlan,
    sampling_rate: f64,
    rounds: u64,
) -> SubsampledGaussian {
    SubsampledGaussian {
        sampling_rate,
        noise_multiplier: dp.noise_multiplier,
        num_steps: u64::from(dp.steps_per_round).saturating_mul(rounds),
    }
}

/// Returns the organization-level mechanism of `rounds` rounds of `org`: one
/// Gaussian release of the clipped update per round, every round counted as
/// if the organization took part (no credit for being sampled).
pub fn org_level_mechanism(org: &OrgDpPlan, rounds: u64) -> SubsampledGaussian {
    SubsampledGaussian {
        sampling_rate: 1.0,
        noise_multiplier: org.noise_multiplier,
        num_steps: rounds,
    }
}

/// Returns ε at `delta` of the composition of `mechanisms` (tight conversion).
///
/// # Errors
/// [`CoreError::InvalidPrivacy`] for invalid parameters.
pub fn composed_epsilon(mechanisms: &[SubsampledGaussian], delta: f64) -> Result<f64> {
    let mut accountant = RdpAccountant::new();
    for mechanism in mechanisms {
        if mechanism.num_steps > 0 {
            accountant.compose(mechanism)?;
        }
    }
    Ok(accountant.epsilon(delta, Conversion::Tight)?.epsilon)
}

/// One participant's line in a model card's privacy statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantPrivacy {
    /// The participant's last report (its own ledger's cumulative guarantee).
    pub reported: PrivacyReport,
    /// DP rounds of this federation the participant's updates were averaged into.
    pub num_rounds_contributed: u64,
    /// Record-level ε the coordinator's plans imply for those rounds at the
    /// model's δ, if every contribution followed its round's plan, in the
    /// worst case of each plan's minimum data size (larger participants
    /// spend less).
    pub plan_epsilon: f64,
    /// Organization-level ε the plans imply, when every one of those rounds
    /// had organization-level DP.
    #[serde(default)]
    pub plan_org_epsilon: Option<f64>,
    /// Those rounds per plan, aligned with [`ModelPrivacy::plans`]; sums to
    /// `num_rounds_contributed`. Empty on cards written before plans were
    /// listed, whose rounds all ran under the card's `dp_sgd`.
    #[serde(default)]
    pub rounds_by_plan: Vec<u64>,
}

/// The DP settings a round ran under, as a model card accounts them: two
/// rounds under equal settings compose as one mechanism run twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpRoundPlan {
    /// Record-level DP-SGD.
    pub dp_sgd: DpSgdPlan,
    /// Organization-level DP, if any.
    #[serde(default)]
    pub org_dp: Option<OrgDpPlan>,
}

impl DpRoundPlan {
    /// Returns the DP settings of `plan`, if it has DP.
    pub fn of(plan: &TrainingPlan) -> Option<DpRoundPlan> {
        Some(DpRoundPlan {
            dp_sgd: plan.dp_sgd.clone()?,
            // Distributed DP is accounted as its equivalent Gaussian release.
            org_dp: plan.org_level_equivalent(),
        })
    }
}

/// Whether a model card's ε bounds the whole model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Guarantee {
    /// Every round in the model's history trained with DP: `epsilon` (and
    /// `org_epsilon`, when present) bound the model.
    #[default]
    #[serde(rename = "dp")]
    Dp,
    /// Some round in the model's history trained without DP (an operator
    /// acknowledged it): the model has no DP guarantee at all; `epsilon`
    /// accounts only for its DP rounds.
    #[serde(rename = "none")]
    NoDp,
}

/// The privacy statement of a published model version: every participant
/// whose data went into it (through this version or its ancestors), and the
/// worst guarantee among them, which is the model's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrivacy {
    /// The record-level mechanism.
    pub mechanism: String,
    /// The organization-level mechanism, when every DP round had it.
    #[serde(default)]
    pub org_mechanism: Option<String>,
    /// δ of the plan's accounting.
    pub delta: f64,
    /// The DP-SGD parameters of the latest DP round.
    pub dp_sgd: DpSgdPlan,
    /// Organization-level parameters of the latest DP round, if any.
    #[serde(default)]
    pub org_dp: Option<OrgDpPlan>,
    /// Worst record-level ε over contributors: the larger of each one's
    /// reported and plan-implied ε. It bounds the model only while
    /// `guarantee` is `dp`.
    pub epsilon: f64,
    /// Worst organization-level ε over contributors, when every DP round
    /// had organization-level DP.
    #[serde(default)]
    pub org_epsilon: Option<f64>,
    /// Per participant, by id.
    pub participants: BTreeMap<String, ParticipantPrivacy>,
    /// Whether `epsilon` bounds the model: `none` once a round without DP
    /// went into it. Cards written before this field all say `dp`.
    #[serde(default)]
    pub guarantee: Guarantee,
    /// What the federation promised for its whole lineage, when recorded:
    /// set by the first DP round, replaced only by an acknowledged
    /// weakening (listed in `weakenings`); `None` after one to no DP.
    #[serde(default)]
    pub promise: Option<PrivacyPromise>,
    /// Every distinct DP setting of the rounds in the model's history,
    /// oldest first (participants count their rounds per entry).
    #[serde(default)]
    pub plans: Vec<DpRoundPlan>,
    /// Rounds in the model's history that trained without DP.
    #[serde(default)]
    pub num_rounds_without_dp: u64,
    /// Participants whose updates from rounds without DP went into the
    /// model, with their number of such rounds.
    #[serde(default)]
    pub contributors_without_dp: BTreeMap<String, u64>,
    /// Every weakening of the privacy configuration an operator
    /// acknowledged at a restart, oldest first.
    #[serde(default)]
    pub weakenings: Vec<PrivacyWeakening>,
}

impl ModelPrivacy {
    /// Returns the statement of a model aggregated from `parent` (the base
    /// version's statement, if any) and this round's `reports`, under `plan`'s
    /// DP settings, with the plan-implied guarantees computed at `delta`.
    /// Each participant's plan-implied ε composes its rounds under every
    /// plan it contributed to (a coordinator restarted with other settings
    /// runs another plan). A model whose history has a round without DP
    /// keeps `guarantee: none`.
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] when the plan has no DP settings or the
    /// accountant refuses its parameters.
    pub fn next(
        parent: Option<&ModelPrivacy>,
        plan: &TrainingPlan,
        delta: f64,
        reports: &[(String, PrivacyReport)],
    ) -> Result<ModelPrivacy> {
        let round_plan = DpRoundPlan::of(plan).ok_or_else(|| {
            CoreError::InvalidPrivacy("the training plan has no DP-SGD settings".to_string())
        })?;
        let mut next = match parent {
            Some(parent) => parent.with_plans_listed(),
            None => ModelPrivacy::empty(&round_plan, delta),
        };
        let plan_index = match next.plans.iter().position(|known| *known == round_plan) {
            Some(index) => index,
            None => {
                next.plans.push(round_plan.clone());
                next.plans.len() - 1
            }
        };
        // Lines of other participants keep their figures, unless δ changed.
        let recompute_every_line = next.delta != delta;
        next.delta = delta;
        for (participant, report) in reports {
            let line = next
                .participants
                .entry(participant.clone())
                .or_insert_with(|| ParticipantPrivacy {
                    reported: *report,
                    num_rounds_contributed: 0,
                    plan_epsilon: 0.0,
                    plan_org_epsilon: None,
                    rounds_by_plan: Vec::new(),
                });
            line.reported = *report;
            line.num_rounds_contributed += 1;
            line.rounds_by_plan.resize(next.plans.len(), 0);
            line.rounds_by_plan[plan_index] += 1;
        }
        for (participant, line) in next.participants.iter_mut() {
            let reported_now = reports.iter().any(|(name, _)| name == participant);
            if reported_now || recompute_every_line {
                let implied = plans_guarantee(&next.plans, &line.rounds_by_plan, delta)?;
                line.plan_epsilon = implied.epsilon;
                line.plan_org_epsilon = implied.org_epsilon;
            }
        }
        let org_level_throughout = next.plans.iter().all(|known| known.org_dp.is_some());
        next.mechanism = DP_SGD_MECHANISM.to_string();
        // Distributed DP is accounted as its Gaussian equivalent, and named.
        let org_mechanism_name = match &plan.secure_aggregation {
            Some(secure) if secure.distributed_dp.is_some() => {
                crate::privacy::DISTRIBUTED_DP_MECHANISM
            }
            _ => ORG_DP_MECHANISM,
        };
        next.org_mechanism = org_level_throughout.then(|| org_mechanism_name.to_string());
        next.epsilon = next
            .participants
            .values()
            .map(|line| line.reported.epsilon.max(line.plan_epsilon))
            .fold(0.0, f64::max);
        next.org_epsilon = org_level_throughout.then(|| {
            next.participants
                .values()
                .map(|line| {
                    line.reported
                        .org_epsilon
                        .unwrap_or(0.0)
                        .max(line.plan_org_epsilon.unwrap_or(0.0))
                })
                .fold(0.0, f64::max)
        });
        next.dp_sgd = round_plan.dp_sgd;
        next.org_dp = round_plan.org_dp;
        Ok(next)
    }

    /// Returns the statement of a model aggregated from a model with this
    /// statement in a round without DP, whose updates came from
    /// `contributors`: the DP rounds' accounting stays as it was, the round
    /// is counted, and the model has no DP guarantee from now on.
    pub fn after_round_without_dp(&self, contributors: &[String]) -> ModelPrivacy {
        let mut next = self.with_plans_listed();
        next.guarantee = Guarantee::NoDp;
        next.num_rounds_without_dp += 1;
        for contributor in contributors {
            *next
                .contributors_without_dp
                .entry(contributor.clone())
                .or_insert(0) += 1;
        }
        next
    }

    /// Returns whether `epsilon` bounds the whole model.
    pub fn guarantee_holds(&self) -> bool {
        self.guarantee == Guarantee::Dp
    }

    /// Returns the statement of the first DP round's model, before the
    /// round's participants are added.
    fn empty(round_plan: &DpRoundPlan, delta: f64) -> ModelPrivacy {
        ModelPrivacy {
            mechanism: DP_SGD_MECHANISM.to_string(),
            org_mechanism: None,
            delta,
            dp_sgd: round_plan.dp_sgd.clone(),
            org_dp: round_plan.org_dp.clone(),
            epsilon: 0.0,
            org_epsilon: None,
            participants: BTreeMap::new(),
            guarantee: Guarantee::Dp,
            promise: None,
            plans: Vec::new(),
            num_rounds_without_dp: 0,
            contributors_without_dp: BTreeMap::new(),
            weakenings: Vec::new(),
        }
    }

    /// Returns a copy whose `plans` and participants' `rounds_by_plan` are
    /// filled in: a card written before plans were listed ran every round
    /// under its one `dp_sgd` (and `org_dp`).
    pub fn with_plans_listed(&self) -> ModelPrivacy {
        let mut listed = self.clone();
        if listed.plans.is_empty() {
            listed.plans.push(DpRoundPlan {
                dp_sgd: listed.dp_sgd.clone(),
                org_dp: listed.org_dp.clone(),
            });
        }
        for line in listed.participants.values_mut() {
            if line.rounds_by_plan.is_empty() {
                line.rounds_by_plan.push(line.num_rounds_contributed);
            }
        }
        listed
    }
}

/// Record-level and organization-level ε of some rounds, at `delta`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlansGuarantee {
    /// Record-level ε of all the rounds, at the plans' worst case q_max.
    pub epsilon: f64,
    /// Organization-level ε, when every one of the rounds had it.
    pub org_epsilon: Option<f64>,
}

/// Returns the guarantee of `rounds_by_plan[i]` rounds under each
/// `plans[i]` together (missing counts are 0), at `delta`: the worst case of
/// each plan's minimum data size.
///
/// # Errors
/// [`CoreError::InvalidPrivacy`] if the accountant refuses a plan's parameters.
pub fn plans_guarantee(
    plans: &[DpRoundPlan],
    rounds_by_plan: &[u64],
    delta: f64,
) -> Result<PlansGuarantee> {
    let used: Vec<(&DpRoundPlan, u64)> = plans
        .iter()
        .zip(rounds_by_plan)
        .filter(|(_, rounds)| **rounds > 0)
        .map(|(plan, rounds)| (plan, *rounds))
        .collect();
    let record_level: Vec<SubsampledGaussian> = used
        .iter()
        .map(|(plan, rounds)| record_level_mechanism(&plan.dp_sgd, *rounds))
        .collect();
    let org_level: Option<Vec<SubsampledGaussian>> = used
        .iter()
        .map(|(plan, rounds)| {
            plan.org_dp
                .as_ref()
                .map(|org| org_level_mechanism(org, *rounds))
        })
        .collect();
    Ok(PlansGuarantee {
        epsilon: composed_epsilon(&record_level, delta)?,
        org_epsilon: match org_level {
            Some(mechanisms) => Some(composed_epsilon(&mechanisms, delta)?),
            None => None,
        },
    })
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::target::calibrate_plan;
    use crate::privacy::target::tests::target;

    #[test]
    fn model_privacy_keeps_every_contributor_and_states_the_worst() {
        let plan = calibrate_plan(&TrainingPlan::new(), &target(3.0), 10).unwrap();
        let report = |epsilon: f64, num_rounds: u64| PrivacyReport {
            epsilon,
            delta: 1e-5,
            org_epsilon: None,
            num_rounds,
        };
        let first = ModelPrivacy::next(
            None,
            &plan,
            1e-5,
            &[("a".into(), report(0.5, 1)), ("b".into(), report(0.4, 1))],
        )
        .unwrap();
        assert_eq!(first.participants.len(), 2);
        // b reports far more than the plan implies (it also spent budget
        // elsewhere): the card states b's figure.
        let second =
            ModelPrivacy::next(Some(&first), &plan, 1e-5, &[("b".into(), report(2.5, 7))]).unwrap();
        assert_eq!(second.participants["a"].num_rounds_contributed, 1);
        assert_eq!(second.participants["b"].num_rounds_contributed, 2);
        assert_eq!(second.epsilon, 2.5);
        assert!(second.participants["b"].plan_epsilon > first.participants["b"].plan_epsilon);
        assert!(ModelPrivacy::next(None, &TrainingPlan::new(), 1e-5, &[]).is_err());
    }
}
