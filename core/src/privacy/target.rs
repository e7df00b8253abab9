//! What an operator asks of a federation, a [`PrivacyTarget`] (ε, δ over the
//! whole training), and its calibration into a DP plan: the coordinator
//! turns the target into a [`DpSgdPlan`] with [`calibrate_plan`]. The
//! expected batch size B, the local steps per round T, the public minimum
//! data size N_min and the number of rounds are public, so the noise
//! multiplier σ follows from the accountant alone, for the largest sampling
//! rate B/N_min, and nothing about any participant's data enters it.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::plan::{DpSgdPlan, OrgDpPlan, TrainingPlan};
use crate::privacy::accountant::calibrate_noise_multiplier;
use crate::units::{Delta, Epsilon};

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
        Epsilon::named("privacy.epsilon", self.epsilon)?;
        Delta::named("privacy.delta", self.delta)?;
        check_positive("privacy.clip_norm", self.clip_norm)?;
        if self.min_records == 0 {
            return Err(CoreError::InvalidPrivacy(
                "privacy.min_records is 0, must be at least 1".to_string(),
            ));
        }
        if let Some(org) = &self.org_level {
            Epsilon::named("privacy.org_level.epsilon", org.epsilon)?;
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
    use crate::privacy::guarantee::{
        composed_epsilon, org_level_mechanism, record_level_mechanism, record_level_mechanism_at,
    };

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
}
