//! Privacy guarantees as they travel between participants, the coordinator
//! and model cards, and the calibration of a federation's DP plan from the
//! (ε, δ) an operator asks for.
//!
//! Who computes what:
//! - The coordinator turns the operator's target (ε, δ over the whole
//!   training) into a [`DpSgdPlan`] with [`calibrate_plan`]: the expected
//!   batch size B, the local steps per round T, the public minimum data size
//!   N_min and the number of rounds are public, so the noise multiplier σ
//!   follows from the accountant alone, for the largest sampling rate
//!   B/N_min, and nothing about any participant's data enters it.
//! - Each participant samples with its own rate q = B/N (N: its rows, at
//!   least N_min), keeps its own ledger (the source of truth) accounting
//!   with that q, composes every run it took part in, and reports its
//!   cumulative guarantee with each update as a [`PrivacyReport`]. A larger
//!   N means a smaller q and a smaller ε than the promise.
//! - Each model card carries a [`ModelPrivacy`]: for every participant whose
//!   data shaped the model, its last reported guarantee and the guarantee the
//!   plans imply for the rounds it contributed to; the model's guarantee is
//!   the worst of them, and it holds only while every round in the model's
//!   history had DP (see [`crate::lineage`] for restarts that change the
//!   privacy settings).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::accountant::{
    Conversion, RdpAccountant, SubsampledGaussian, calibrate_noise_multiplier,
};
use crate::dp::{DpSgdPlan, OrgDpPlan};
use crate::error::{CoreError, Result};
use crate::lineage::{PrivacyPromise, PrivacyWeakening};
use crate::plan::TrainingPlan;

/// Name of the record-level mechanism, as model cards state it.
pub const DP_SGD_MECHANISM: &str =
    "dp-sgd: poisson-subsampled gaussian, per-example L2 clipping, rdp accounting";

/// Name of the organization-level mechanism, as model cards state it.
pub const ORG_DP_MECHANISM: &str =
    "update-level gaussian: whole update L2 clipping, rdp accounting";

/// Largest δ accepted anywhere: δ must be far below 1/N to mean anything.
pub const MAX_DELTA: f64 = 0.01;

/// What an operator asks of a federation: the (ε, δ) each participant's
/// records get over the whole training, and the DP-SGD knobs that are not
/// privacy parameters themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyTarget {
    /// ε of record-level DP over all rounds.
    pub epsilon: f64,
    /// δ of record-level DP over all rounds.
    pub delta: f64,
    /// C: per-example gradient L2 bound.
    pub clip_norm: f64,
    /// N_min: the public minimum number of records a participant trains on.
    /// The promise holds for every participant with at least this many
    /// (whose sampling rate B/N is at most B/N_min); smaller ones decline.
    pub min_records: u64,
    /// Organization-level DP on top, if wanted.
    #[serde(default)]
    pub org_level: Option<OrgPrivacyTarget>,
}

/// Organization-level DP target: the whole update of an organization is the
/// unit of privacy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgPrivacyTarget {
    /// ε of organization-level DP over all rounds (δ as the record-level target).
    pub epsilon: f64,
    /// S: bound on the L2 norm of a whole update.
    pub clip_norm: f64,
}

impl PrivacyTarget {
    /// Checks every value, naming the one that is wrong.
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`].
    pub fn validate(&self) -> Result<()> {
        check_epsilon("privacy.epsilon", self.epsilon)?;
        check_delta("privacy.delta", self.delta)?;
        check_positive("privacy.clip_norm", self.clip_norm)?;
        if self.min_records == 0 {
            return Err(CoreError::InvalidPrivacy(
                "privacy.min_records is 0, must be at least 1".to_string(),
            ));
        }
        if let Some(org) = &self.org_level {
            check_epsilon("privacy.org_level.epsilon", org.epsilon)?;
            check_positive("privacy.org_level.clip_norm", org.clip_norm)?;
        }
        Ok(())
    }
}

/// Returns `plan` with its DP settings calibrated so that `num_rounds` rounds
/// meet `target` for every participant with at least `target.min_records`
/// records: the expected batch size B is `plan.batch_size`, the local steps
/// per round are `⌈local_epochs · N_min / B⌉` (`local_epochs` passes over
/// the minimum data size, capped by `max_local_steps` when set), and σ is
/// the smallest noise multiplier whose composition over all those steps at
/// the largest sampling rate q_max = B/N_min stays within the target ε at δ
/// (tight RDP conversion). A participant with more records samples with a
/// smaller q and spends less. The organization-level σ is calibrated the
/// same way for one full-participation Gaussian release per round.
///
/// # Errors
/// [`CoreError::InvalidPrivacy`] for a bad target, a minimum data size
/// below the batch size, no rounds, or a target no σ can meet.
pub fn calibrate_plan(
    plan: &TrainingPlan,
    target: &PrivacyTarget,
    num_rounds: u64,
) -> Result<TrainingPlan> {
    target.validate()?;
    if num_rounds == 0 {
        return Err(CoreError::InvalidPrivacy(
            "the number of rounds must be known and positive to calibrate noise (set round.max_rounds)"
                .to_string(),
        ));
    }
    let expected_batch_size = plan.batch_size;
    if expected_batch_size == 0 || target.min_records < u64::from(expected_batch_size) {
        return Err(CoreError::InvalidPrivacy(format!(
            "privacy.min_records is {}, must be at least the expected batch size B = {} (the plan's batch_size), so that every sampling rate B/N is at most 1",
            target.min_records, expected_batch_size
        )));
    }
    let max_sampling_rate = f64::from(expected_batch_size) / target.min_records as f64;
    let epochs_in_steps = (f64::from(plan.local_epochs) / max_sampling_rate).ceil();
    let mut steps_per_round = epochs_in_steps.min(f64::from(u32::MAX)) as u32;
    if plan.max_local_steps > 0 {
        steps_per_round = steps_per_round.min(plan.max_local_steps);
    }
    let steps_per_round = steps_per_round.max(1);
    let total_steps = u64::from(steps_per_round) * num_rounds;
    let noise_multiplier =
        calibrate_noise_multiplier(max_sampling_rate, total_steps, target.epsilon, target.delta)?;
    let dp_sgd = DpSgdPlan::new(
        expected_batch_size,
        target.min_records,
        noise_multiplier,
        target.clip_norm,
        steps_per_round,
    );
    let org_dp = match &target.org_level {
        Some(org) => {
            let org_noise = calibrate_noise_multiplier(1.0, num_rounds, org.epsilon, target.delta)?;
            Some(OrgDpPlan::new(org.clip_norm, org_noise))
        }
        None => None,
    };
    let mut calibrated = plan.clone();
    calibrated.dp_sgd = Some(dp_sgd);
    calibrated.org_dp = org_dp;
    Ok(calibrated)
}

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

/// A participant's statement, sent with each update, of everything its
/// ledger holds after this round: the cumulative guarantee of its records
/// (and of the organization as a whole, with organization-level DP).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyReport {
    /// Record-level ε over every round the participant ever trained for.
    pub epsilon: f64,
    /// The δ the participant accounts with.
    pub delta: f64,
    /// Organization-level ε, when the plan has organization-level DP.
    #[serde(default)]
    pub org_epsilon: Option<f64>,
    /// Rounds recorded in the participant's ledger, this one included.
    pub num_rounds: u64,
}

impl PrivacyReport {
    /// Checks a report that came over the network.
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "reported epsilon is {}, must be finite and non-negative",
                self.epsilon
            )));
        }
        check_delta("reported delta", self.delta)?;
        if let Some(org_epsilon) = self.org_epsilon
            && !(org_epsilon.is_finite() && org_epsilon >= 0.0)
        {
            return Err(CoreError::InvalidPrivacy(format!(
                "reported org_epsilon is {org_epsilon}, must be finite and non-negative"
            )));
        }
        if self.num_rounds == 0 {
            return Err(CoreError::InvalidPrivacy(
                "reported num_rounds is 0, a report comes with at least one recorded round"
                    .to_string(),
            ));
        }
        Ok(())
    }
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
            org_dp: plan.org_dp.clone(),
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
        next.org_mechanism = org_level_throughout.then(|| ORG_DP_MECHANISM.to_string());
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

fn check_epsilon(name: &str, epsilon: f64) -> Result<()> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(CoreError::InvalidPrivacy(format!(
            "{name} is {epsilon}, must be finite and positive"
        )));
    }
    Ok(())
}

fn check_delta(name: &str, delta: f64) -> Result<()> {
    if !(delta > 0.0 && delta <= MAX_DELTA) {
        return Err(CoreError::InvalidPrivacy(format!(
            "{name} is {delta}, must be in (0, {MAX_DELTA}]"
        )));
    }
    Ok(())
}

fn check_positive(name: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        return Err(CoreError::InvalidPrivacy(format!(
            "{name} is {value}, must be finite and positive"
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Returns a record-level target of `epsilon` at δ = 1e-5.
    pub(crate) fn target(epsilon: f64) -> PrivacyTarget {
        PrivacyTarget {
            epsilon,
            delta: 1e-5,
            clip_norm: 1.0,
            // With the default batch size B = 64: q_max = 0.01.
            min_records: 6400,
            org_level: None,
        }
    }

    #[test]
    fn calibrated_plan_meets_its_target_over_all_rounds_and_not_much_below() {
        let plan = TrainingPlan::new().with_local_epochs(2);
        let calibrated = calibrate_plan(&plan, &target(3.0), 10).unwrap();
        let dp = calibrated.dp_sgd.clone().unwrap();
        assert_eq!(dp.steps_per_round, 200);
        let epsilon = composed_epsilon(&[record_level_mechanism(&dp, 10)], 1e-5).unwrap();
        assert!(epsilon <= 3.0 && epsilon > 2.9, "epsilon {epsilon}");
        // Less privacy wanted, less noise.
        let looser = calibrate_plan(&plan, &target(8.0), 10).unwrap();
        assert!(looser.dp_sgd.unwrap().noise_multiplier < dp.noise_multiplier);
    }

    #[test]
    fn the_plan_carries_b_t_and_the_minimum_and_larger_participants_spend_less() {
        let plan = TrainingPlan::new().with_local_epochs(2).with_batch_size(32);
        let calibrated = calibrate_plan(&plan, &target(3.0), 10).unwrap();
        let dp = calibrated.dp_sgd.clone().unwrap();
        assert_eq!(dp.expected_batch_size, 32);
        assert_eq!(dp.min_records, 6400);
        // Two passes over the minimum data size: 2 · 6400 / 32.
        assert_eq!(dp.steps_per_round, 400);
        assert_eq!(dp.max_sampling_rate(), 0.005);
        let promised = composed_epsilon(&[record_level_mechanism(&dp, 10)], 1e-5).unwrap();
        assert!(promised <= 3.0 && promised > 2.9, "epsilon {promised}");
        let spent_at = |num_records: u64| {
            let sampling_rate = dp.sampling_rate_for(num_records).unwrap();
            composed_epsilon(&[record_level_mechanism_at(&dp, sampling_rate, 10)], 1e-5).unwrap()
        };
        assert_eq!(spent_at(6400), promised);
        let larger = spent_at(8 * 6400);
        assert!(larger < 0.5 * promised, "8× the minimum spends {larger}");
        assert!(dp.sampling_rate_for(6399).is_err());
    }

    #[test]
    fn a_minimum_data_size_below_the_batch_size_is_refused() {
        let plan = TrainingPlan::new().with_batch_size(64);
        let mut small = target(3.0);
        small.min_records = 63;
        let error = calibrate_plan(&plan, &small, 5).unwrap_err();
        assert!(
            error.to_string().contains("privacy.min_records is 63"),
            "{error}"
        );
        small.min_records = 0;
        let error = calibrate_plan(&plan, &small, 5).unwrap_err();
        assert!(error.to_string().contains("privacy.min_records"), "{error}");
        small.min_records = 64;
        let full = calibrate_plan(&plan, &small, 5).unwrap().dp_sgd.unwrap();
        assert_eq!(full.max_sampling_rate(), 1.0);
    }

    #[test]
    fn max_local_steps_caps_the_steps_per_round() {
        let plan = TrainingPlan::new()
            .with_local_epochs(2)
            .with_max_local_steps(50);
        let calibrated = calibrate_plan(&plan, &target(3.0), 4).unwrap();
        assert_eq!(calibrated.dp_sgd.unwrap().steps_per_round, 50);
    }

    #[test]
    fn calibration_needs_a_known_number_of_rounds_and_a_sane_target() {
        let plan = TrainingPlan::new();
        let error = calibrate_plan(&plan, &target(3.0), 0).unwrap_err();
        assert!(error.to_string().contains("max_rounds"), "{error}");
        let error = calibrate_plan(&plan, &target(-1.0), 5).unwrap_err();
        assert!(error.to_string().contains("privacy.epsilon"), "{error}");
        let mut bad_delta = target(1.0);
        bad_delta.delta = 0.5;
        let error = calibrate_plan(&plan, &bad_delta, 5).unwrap_err();
        assert!(error.to_string().contains("privacy.delta"), "{error}");
    }

    #[test]
    fn organization_level_noise_is_calibrated_per_round() {
        let mut with_org = target(3.0);
        with_org.org_level = Some(OrgPrivacyTarget {
            epsilon: 5.0,
            clip_norm: 2.0,
        });
        let calibrated = calibrate_plan(&TrainingPlan::new(), &with_org, 10).unwrap();
        let org = calibrated.org_dp.unwrap();
        assert_eq!(org.clip_norm, 2.0);
        let epsilon = composed_epsilon(&[org_level_mechanism(&org, 10)], 1e-5).unwrap();
        assert!(epsilon <= 5.0 && epsilon > 4.9, "org epsilon {epsilon}");
    }

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

    #[test]
    fn reports_from_the_network_are_checked() {
        let good = PrivacyReport {
            epsilon: 1.0,
            delta: 1e-5,
            org_epsilon: Some(2.0),
            num_rounds: 3,
        };
        assert!(good.validate().is_ok());
        for bad in [
            PrivacyReport {
                epsilon: f64::NAN,
                ..good
            },
            PrivacyReport { delta: 0.0, ..good },
            PrivacyReport {
                org_epsilon: Some(-1.0),
                ..good
            },
            PrivacyReport {
                num_rounds: 0,
                ..good
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
