//! The secure-aggregation part of a plan: the scale that keeps the 32-bit
//! sum from wrapping, and, with an organization-level target, the variance
//! of each participant's discrete Gaussian noise (Kairouz, Liu, Steinke,
//! ICML 2021), calibrated so that the sum of the fewest updates a round
//! publishes meets the target over all rounds.
//!
//! The distributed discrete Gaussian of one round is ρ-zCDP, whose Rényi DP
//! curve α·ρ is exactly that of a Gaussian release with noise multiplier
//! 1/√(2ρ). [`TrainingPlan::org_level_equivalent`] gives that equivalent,
//! so ledgers, reports, budgets and model cards compose it with the
//! accountant they already use, and name the mechanism beside it.

use crate::error::{CoreError, Result};
use crate::plan::{DistributedDpPlan, OrgDpPlan, SecureAggregationPlan, TrainingPlan};
use crate::privacy::accountant::{calibrate_ddg_variance, calibrate_noise_multiplier, ddg_rho};
use crate::privacy::distributed::{SecAggEncoding, choose_scale, padded_dim};

/// β of conditional stochastic rounding, as in Kairouz et al.'s
/// experiments: e^(-1/2).
pub const DEFAULT_ROUNDING_BETA: f64 = 0.606_530_659_712_633_4;

/// Returns (Δ₂, Δ₁) of one encoded update in integer units: the norm bound
/// conditional rounding enforces at `scale`, `clip_norm`, dimension `dim`
/// and `rounding_beta` ([`SecAggEncoding::l2_sensitivity`]).
fn sensitivities(scale: f64, clip_norm: f64, dim: usize, rounding_beta: f64) -> (f64, f64) {
    let encoding = SecAggEncoding {
        num_params: dim,
        clip_norm,
        scale,
        rotation_seed: [0; 32],
        noise: None,
        rounding_beta,
    };
    (encoding.l2_sensitivity(), encoding.l1_sensitivity())
}

/// Names the organization-level mechanism of a plan with distributed DP in
/// ledgers and model cards.
pub const DISTRIBUTED_DP_MECHANISM: &str = "distributed discrete Gaussian under SecAgg+ (Kairouz, Liu, Steinke, ICML 2021), as ρ-zCDP per round";

/// What a coordinator asks of secure aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureAggregationRequest {
    /// S without organization-level DP.
    pub clip_norm: f64,
    /// (ε, S, δ) of the organization-level target, if any.
    pub org_target: Option<(f64, f64, f64)>,
    /// Rounds the target covers.
    pub num_rounds: u64,
    /// The most participants a round selects.
    pub max_participants: u32,
    /// n_min: the fewest updates a round publishes (the quorum).
    pub min_participants: u32,
    /// The model's parameter count.
    pub num_params: usize,
}

/// Returns `plan` with secure aggregation: the organization-level DP of
/// `plan` (one Gaussian release per participant) replaced by distributed
/// discrete Gaussian noise when the request has an organization-level
/// target.
///
/// # Errors
/// [`CoreError::InvalidPrivacy`] for a target no noise can meet, no rounds
/// to calibrate over, or bad bounds.
pub fn secure_aggregation_plan(
    mut plan: TrainingPlan,
    request: SecureAggregationRequest,
) -> Result<TrainingPlan> {
    let dim = padded_dim(request.num_params);
    let max_participants = request.max_participants.max(2);
    let min_participants = request.min_participants.clamp(1, max_participants);
    let secure = match request.org_target {
        None => {
            let scale = choose_scale(request.clip_norm, max_participants as usize, 0.0, dim)?;
            SecureAggregationPlan::new(request.clip_norm, scale, max_participants)
        }
        Some((epsilon, clip_norm, delta)) => {
            if request.num_rounds == 0 {
                return Err(CoreError::InvalidPrivacy(
                    "the number of rounds must be known and positive to calibrate distributed noise (set round.max_rounds)"
                        .to_string(),
                ));
            }
            // A first guess of the noise in the sum, in parameter units:
            // the continuous Gaussian's, with room to spare; the scale is
            // chosen for it and checked against the calibrated noise below.
            let gaussian_multiplier =
                calibrate_noise_multiplier(1.0, request.num_rounds, epsilon, delta)?;
            let mut noise_stddev_guess = 2.0
                * gaussian_multiplier
                * clip_norm
                * (f64::from(max_participants) / f64::from(min_participants)).sqrt();
            let mut calibrated = None;
            for _ in 0..8 {
                let scale = choose_scale(
                    clip_norm,
                    max_participants as usize,
                    noise_stddev_guess,
                    dim,
                )?;
                let (l2, l1) = sensitivities(scale, clip_norm, dim, DEFAULT_ROUNDING_BETA);
                let variance = calibrate_ddg_variance(
                    epsilon,
                    delta,
                    request.num_rounds,
                    u64::from(min_participants),
                    dim,
                    l2,
                    l1,
                )?;
                // Noise of a sum of every selected participant, in
                // parameter units: what the scale must leave room for.
                let noise_stddev = (f64::from(max_participants) * variance).sqrt() / scale;
                if noise_stddev <= noise_stddev_guess {
                    calibrated = Some((scale, variance));
                    break;
                }
                noise_stddev_guess = noise_stddev * 1.5;
            }
            let (scale, variance) = calibrated.ok_or_else(|| {
                CoreError::InvalidPrivacy(format!(
                    "no scale keeps the 32-bit sum of {max_participants} noised updates from wrapping at organization-level ε = {epsilon}"
                ))
            })?;
            SecureAggregationPlan::new(clip_norm, scale, max_participants).with_distributed_dp(
                Some(DistributedDpPlan::new(
                    variance,
                    min_participants,
                    DEFAULT_ROUNDING_BETA,
                    dim as u64,
                )),
            )
        }
    };
    secure.validate()?;
    plan.org_dp = None;
    plan.secure_aggregation = Some(secure);
    Ok(plan)
}

impl SecureAggregationPlan {
    /// Returns ρ of one round's distributed discrete Gaussian (zCDP of the
    /// sum of `min_participants` noised updates whose one update changes by
    /// at most the conditional-rounding bound), or `None` without it.
    pub fn rho_per_round(&self) -> Option<f64> {
        let distributed = self.distributed_dp.as_ref()?;
        let dim = distributed.padded_dim as usize;
        let (l2, l1) = sensitivities(self.scale, self.clip_norm, dim, distributed.rounding_beta);
        Some(ddg_rho(
            l2,
            l1,
            distributed.noise_variance,
            u64::from(distributed.min_participants),
            dim,
        ))
    }
}

impl SecureAggregationPlan {
    /// Returns the statement of the plan's distributed DP, as ledgers and
    /// model cards record it (mechanism, noise, scale, clip norm, the
    /// fewest updates it is planned for, dimension, ρ per round), or `None`
    /// without it.
    pub fn distributed_dp_statement(&self) -> Option<String> {
        let distributed = self.distributed_dp.as_ref()?;
        Some(format!(
            "{DISTRIBUTED_DP_MECHANISM}: each participant adds discrete Gaussian noise of variance {} (integer units, scale {}) after clipping to L2 norm {}; planned for sums of at least {} updates of dimension {}; rho = {} per round, which the organization-level guarantee composes",
            distributed.noise_variance,
            self.scale,
            self.clip_norm,
            distributed.min_participants,
            distributed.padded_dim,
            self.rho_per_round().unwrap_or(f64::INFINITY),
        ))
    }
}

impl TrainingPlan {
    /// Returns the organization-level Gaussian release this plan's rounds
    /// are accounted as: `org_dp` itself, or for distributed DP the
    /// Gaussian with the same Rényi curve (noise multiplier 1/√(2ρ), ρ of
    /// one round; see the module documentation). `None` without
    /// organization-level DP.
    pub fn org_level_equivalent(&self) -> Option<OrgDpPlan> {
        if let Some(org) = &self.org_dp {
            return Some(org.clone());
        }
        let secure = self.secure_aggregation.as_ref()?;
        let rho = secure.rho_per_round()?;
        if !(rho.is_finite() && rho > 0.0) {
            // An unbounded loss: accounted as almost no noise at all.
            return Some(OrgDpPlan::new(secure.clip_norm, f64::MIN_POSITIVE.sqrt()));
        }
        Some(OrgDpPlan::new(secure.clip_norm, 1.0 / (2.0 * rho).sqrt()))
    }
}
