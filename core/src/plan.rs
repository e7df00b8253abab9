//! The training plan of a round: how participants train locally, chosen by
//! the coordinator, sent in every round announcement and saved with each
//! model version, and its differential-privacy settings (DP-SGD and
//! organization-level DP). Plans only describe; `training` and
//! `privacy::dp_sgd` carry them out.

use burn::config::Config;

use crate::error::{CoreError, Result};
use crate::units::NoiseMultiplier;

/// Largest accepted number of DP-SGD steps per round.
pub const MAX_DP_STEPS_PER_ROUND: u32 = 1_000_000;

/// Largest [`TrainingPlan::trim_fraction`]: trimming more than half of each
/// batch would learn from a minority of the data.
pub const MAX_TRIM_FRACTION: f32 = 0.5;

/// How a participant trains locally in one round; chosen by the coordinator,
/// sent in the round announcement, and saved with each model version.
#[derive(Config, Debug, PartialEq)]
pub struct TrainingPlan {
    /// Passes over the local data.
    #[config(default = 1)]
    pub local_epochs: u32,
    /// Examples per gradient step.
    #[config(default = 64)]
    pub batch_size: u32,
    /// Learning rate of local SGD.
    #[config(default = 0.1)]
    pub learning_rate: f32,
    /// Upper bound on local gradient steps; 0 means no bound.
    #[config(default = 0)]
    pub max_local_steps: u32,
    /// L2 penalty on the parameters (weight decay) of local SGD; 0 turns it off.
    #[config(default = 0.0)]
    pub weight_decay: f32,
    /// Autoencoders only: the fraction of each batch, those with the highest
    /// reconstruction error, left out of its step, so that a few attacks
    /// hidden in unlabelled "normal" traffic do not teach the model what
    /// normal looks like. 0 turns it off; at most 0.5. Under DP-SGD every
    /// example is then clipped to C/2, so that one record (which can also
    /// change which other record is trimmed) still moves the batch's sum
    /// by at most C and the privacy analysis is unchanged.
    #[config(default = 0.0)]
    pub trim_fraction: f32,
    /// Record-level differential privacy (DP-SGD); `None` trains without it.
    pub dp_sgd: Option<DpSgdPlan>,
    /// Organization-level differential privacy of the whole update, on top.
    pub org_dp: Option<OrgDpPlan>,
    /// Secure aggregation (SecAgg+): updates are clipped, quantized and sent
    /// masked, so the coordinator learns only their sum; with distributed
    /// discrete Gaussian noise for an organization-level guarantee that holds
    /// against the coordinator too.
    pub secure_aggregation: Option<SecureAggregationPlan>,
}

impl TrainingPlan {
    /// Checks the plan's values.
    ///
    /// # Errors
    /// [`CoreError::InvalidPlan`] naming the field that is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.local_epochs == 0 || self.local_epochs > 1000 {
            return Err(CoreError::InvalidPlan(format!(
                "local_epochs is {}, must be in 1..=1000",
                self.local_epochs
            )));
        }
        if self.batch_size == 0 || self.batch_size > 65536 {
            return Err(CoreError::InvalidPlan(format!(
                "batch_size is {}, must be in 1..=65536",
                self.batch_size
            )));
        }
        if !(self.learning_rate.is_finite()
            && self.learning_rate > 0.0
            && self.learning_rate <= 10.0)
        {
            return Err(CoreError::InvalidPlan(format!(
                "learning_rate is {}, must be in (0, 10]",
                self.learning_rate
            )));
        }
        if !(self.weight_decay.is_finite() && (0.0..=1.0).contains(&self.weight_decay)) {
            return Err(CoreError::InvalidPlan(format!(
                "weight_decay is {}, must be in [0, 1]",
                self.weight_decay
            )));
        }
        if !(self.trim_fraction.is_finite()
            && (0.0..=MAX_TRIM_FRACTION).contains(&self.trim_fraction))
        {
            return Err(CoreError::InvalidPlan(format!(
                "trim_fraction is {}, must be in [0, {MAX_TRIM_FRACTION}]",
                self.trim_fraction
            )));
        }
        if let Some(dp_sgd) = &self.dp_sgd {
            dp_sgd.validate()?;
        }
        if let Some(org_dp) = &self.org_dp {
            org_dp.validate()?;
        }
        if let Some(secure) = &self.secure_aggregation {
            secure.validate()?;
            if self.org_dp.is_some() {
                return Err(CoreError::InvalidPlan(
                    "org_dp and secure_aggregation are exclusive: under secure aggregation organization-level DP is distributed (secure_aggregation.distributed_dp)"
                        .to_string(),
                ));
            }
        }
        Ok(())
    }
}

/// DP-SGD settings of one round, chosen by the coordinator and sent in the
/// plan. Everything here is public and the same for every participant, so
/// that nothing that leaves a node (the noise scale of its update, the
/// steps it takes, how long a round takes) depends on its data size: each
/// participant derives its own sampling rate `q = B/N` from its `N` rows
/// with [`DpSgdPlan::sampling_rate_for`] and accounts with it.
#[derive(Config, Debug, PartialEq)]
pub struct DpSgdPlan {
    /// B: the expected number of examples in each step's Poisson sample. A
    /// participant with N rows includes each row with probability B/N, and
    /// divides the noised sum of clipped gradients by B.
    pub expected_batch_size: u32,
    /// N_min: the public minimum number of rows a participant trains on.
    /// The noise is calibrated for the largest sampling rate B/N_min; a
    /// participant with fewer rows declines the round.
    pub min_records: u64,
    /// σ: the Gaussian noise added to the sum of clipped per-example
    /// gradients has standard deviation σ·C.
    pub noise_multiplier: f64,
    /// C: every per-example gradient (all parameters together) is clipped to
    /// this L2 norm.
    pub clip_norm: f64,
    /// T: local DP-SGD steps per round, whatever the data size.
    pub steps_per_round: u32,
}

impl DpSgdPlan {
    /// Checks the plan's values: `expected_batch_size` at least 1,
    /// `min_records` at least `expected_batch_size` (so that every sampling
    /// rate B/N is at most 1), `noise_multiplier` finite and positive,
    /// `clip_norm` finite and positive, `steps_per_round` in
    /// `1..=`[`MAX_DP_STEPS_PER_ROUND`].
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] naming the field that is wrong and its value.
    pub fn validate(&self) -> Result<()> {
        self.validate_allowing_zero_noise()?;
        if self.noise_multiplier <= 0.0 {
            return Err(CoreError::InvalidPrivacy(format!(
                "noise_multiplier is {}, must be positive: without noise there is no privacy",
                self.noise_multiplier
            )));
        }
        Ok(())
    }

    /// Returns the largest sampling rate the plan allows, B/N_min: the one
    /// its noise is calibrated for, and the worst case its guarantee states.
    pub fn max_sampling_rate(&self) -> f64 {
        f64::from(self.expected_batch_size) / self.min_records as f64
    }

    /// Returns the sampling rate q = B/N of a participant training on
    /// `num_records` rows.
    ///
    /// # Errors
    /// [`CoreError::BelowMinimumRecords`] if `num_records` is below the
    /// plan's public minimum; the error names the minimum, never
    /// `num_records`, since it may travel to the coordinator as the reason
    /// for declining.
    pub fn sampling_rate_for(&self, num_records: u64) -> Result<f64> {
        if num_records < self.min_records || num_records == 0 {
            return Err(CoreError::BelowMinimumRecords {
                min_records: self.min_records,
            });
        }
        Ok(f64::from(self.expected_batch_size) / num_records as f64)
    }

    /// Checks everything [`Self::validate`] does except that σ may be 0, which
    /// only tests use (to compare DP-SGD's gradients with plain SGD's).
    pub(crate) fn validate_allowing_zero_noise(&self) -> Result<()> {
        if self.expected_batch_size == 0 {
            return Err(CoreError::InvalidPrivacy(
                "expected_batch_size is 0, must be at least 1".to_string(),
            ));
        }
        if self.min_records < u64::from(self.expected_batch_size) {
            return Err(CoreError::InvalidPrivacy(format!(
                "min_records is {}, must be at least expected_batch_size ({}) so that the sampling rate B/N is at most 1",
                self.min_records, self.expected_batch_size
            )));
        }
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "noise_multiplier is {}, must be finite and positive",
                self.noise_multiplier
            )));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "clip_norm is {}, must be finite and positive",
                self.clip_norm
            )));
        }
        if !(self.noise_multiplier * self.clip_norm).is_finite() {
            return Err(CoreError::InvalidPrivacy(format!(
                "noise_multiplier × clip_norm is {} × {}, which overflows",
                self.noise_multiplier, self.clip_norm
            )));
        }
        if self.steps_per_round == 0 || self.steps_per_round > MAX_DP_STEPS_PER_ROUND {
            return Err(CoreError::InvalidPrivacy(format!(
                "steps_per_round is {}, must be in 1..={MAX_DP_STEPS_PER_ROUND}",
                self.steps_per_round
            )));
        }
        Ok(())
    }
}

/// Organization-level DP settings (DP-FedAvg): the whole update of a
/// participant is clipped to `clip_norm` and gets Gaussian noise of standard
/// deviation `noise_multiplier · clip_norm` per coordinate.
#[derive(Config, Debug, PartialEq)]
pub struct OrgDpPlan {
    /// S: the L2 norm every update is clipped to.
    pub clip_norm: f64,
    /// σ: the noise per coordinate has standard deviation σ·S.
    pub noise_multiplier: f64,
}

impl OrgDpPlan {
    /// Checks the plan's values: `clip_norm` and `noise_multiplier` finite
    /// and positive.
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] naming the field that is wrong and its value.
    pub fn validate(&self) -> Result<()> {
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "clip_norm is {}, must be finite and positive",
                self.clip_norm
            )));
        }
        NoiseMultiplier::new(self.noise_multiplier)?;
        if !(self.noise_multiplier * self.clip_norm).is_finite() {
            return Err(CoreError::InvalidPrivacy(format!(
                "noise_multiplier × clip_norm is {} × {}, which overflows",
                self.noise_multiplier, self.clip_norm
            )));
        }
        Ok(())
    }
}

/// The L2 bound of a whole update under secure aggregation without
/// organization-level DP: generous, since the 32-bit sum has room for it.
pub const DEFAULT_SECURE_AGGREGATION_CLIP_NORM: f64 = 100.0;

/// Largest [`SecureAggregationPlan::max_participants`]: Shamir shares over
/// GF(2^8) have at most 255 evaluation points per neighbourhood, and the
/// complete graph of a small round is one neighbourhood.
pub const MAX_SECURE_AGGREGATION_PARTICIPANTS: u32 = 255;

/// How updates are encoded for secure aggregation (Kairouz, Liu, Steinke,
/// ICML 2021, <https://arxiv.org/abs/2102.06387>): each participant clips
/// its update to L2 norm `clip_norm`, rotates it with the round's public
/// randomized Hadamard transform, multiplies by `scale`, rounds
/// stochastically to integers, adds its share of the noise and sums in
/// Z_(2^32) under SecAgg+ masks.
#[derive(Config, Debug, PartialEq)]
pub struct SecureAggregationPlan {
    /// S: the L2 norm every update is clipped to, by its own participant
    /// (the coordinator cannot see single updates to bound them).
    pub clip_norm: f64,
    /// γ: integer units per unit of a parameter. Chosen with
    /// `max_participants` so that the sum cannot wrap.
    pub scale: f64,
    /// The most participants a round selects under this plan.
    pub max_participants: u32,
    /// Distributed discrete Gaussian noise; `None`: secure aggregation alone.
    pub distributed_dp: Option<DistributedDpPlan>,
}

impl SecureAggregationPlan {
    /// Checks the plan's values.
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] naming the field that is wrong and its value.
    pub fn validate(&self) -> Result<()> {
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "secure_aggregation.clip_norm is {}, must be finite and positive",
                self.clip_norm
            )));
        }
        if !(self.scale.is_finite() && self.scale >= 1.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "secure_aggregation.scale is {}, must be finite and at least 1",
                self.scale
            )));
        }
        if !(2..=MAX_SECURE_AGGREGATION_PARTICIPANTS).contains(&self.max_participants) {
            return Err(CoreError::InvalidPrivacy(format!(
                "secure_aggregation.max_participants is {}, must be in 2..={MAX_SECURE_AGGREGATION_PARTICIPANTS}",
                self.max_participants
            )));
        }
        if let Some(distributed) = &self.distributed_dp {
            distributed.validate(self.max_participants)?;
        }
        Ok(())
    }
}

/// Distributed DP under secure aggregation: each participant adds discrete
/// Gaussian noise of variance `noise_variance` (integer units) per
/// coordinate, so that a published sum of at least `min_participants`
/// updates carries variance `min_participants · noise_variance`.
#[derive(Config, Debug, PartialEq)]
pub struct DistributedDpPlan {
    /// σ² of each participant's discrete Gaussian noise, in integer units.
    pub noise_variance: f64,
    /// n_min: the fewest updates a published sum has (the round's quorum).
    pub min_participants: u32,
    /// β of conditional stochastic rounding: a rounding whose L2 norm
    /// exceeds the bound of Kairouz et al. is drawn again.
    pub rounding_beta: f64,
    /// d: the dimension of the rotated vectors (the model's parameter count
    /// padded to a power of two); the guarantee depends on it, and a
    /// participant checks it against the model it downloads.
    pub padded_dim: u64,
}

impl DistributedDpPlan {
    fn validate(&self, max_participants: u32) -> Result<()> {
        if !(self.noise_variance.is_finite() && self.noise_variance >= 1.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "secure_aggregation.distributed_dp.noise_variance is {}, must be finite and at least 1",
                self.noise_variance
            )));
        }
        if self.min_participants == 0 || self.min_participants > max_participants {
            return Err(CoreError::InvalidPrivacy(format!(
                "secure_aggregation.distributed_dp.min_participants is {}, must be in 1..={max_participants}",
                self.min_participants
            )));
        }
        if self.padded_dim == 0 || !self.padded_dim.is_power_of_two() {
            return Err(CoreError::InvalidPrivacy(format!(
                "secure_aggregation.distributed_dp.padded_dim is {}, must be a power of two",
                self.padded_dim
            )));
        }
        if !(self.rounding_beta > 0.0 && self.rounding_beta < 1.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "secure_aggregation.distributed_dp.rounding_beta is {}, must be in (0, 1)",
                self.rounding_beta
            )));
        }
        Ok(())
    }
}
