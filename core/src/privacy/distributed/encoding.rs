//! A participant's update as a vector over `Z_(2^32)` for secure
//! aggregation, and the coordinator's decoding of the modular sum (Kairouz,
//! Liu, Steinke 2021, Algorithm 1 and §4).
//!
//! Encoding: clip to L2 norm `S`, pad with zeros to `d` (a power of two),
//! rotate ([`super::rotation`]), multiply by the scale `γ`, round each
//! coordinate stochastically to an integer (re-rounding the whole vector
//! until its norm is below [`SecAggEncoding::l2_sensitivity`]: conditional
//! rounding), add discrete Gaussian noise, reduce mod 2^32.
//!
//! Decoding: lift each coordinate of the sum to `(−2^31, 2^31]` (values
//! ≥ 2^31 are negative), divide by `γ`, unrotate, truncate to the parameter
//! count and divide by the number of vectors summed.
//!
//! # Quantization error
//! Rounding moves each coordinate by less than 1 (integer units), so an
//! encoded vector is within `√d` of `γ·R·x` in L2, and a sum of `n` vectors
//! within `n·√d`. The inverse rotation is orthogonal and truncation only
//! drops coordinates, so without noise the decoded average is within `√d/γ`
//! of the true average of the clipped updates: deterministically, whatever
//! the rounding draws. Unconditional stochastic rounding is unbiased with
//! variance ≤ 1/4 per coordinate, so the expected squared L2 error of the
//! average is ≤ `d/(4γ²n)`, an RMS error ≤ `√d/(2γ√n)`; conditioning on the
//! norm bound biases it slightly towards 0, by at most what the rare
//! rejected roundings (probability ≤ β each) carry.

use rand::{CryptoRng, Rng, RngExt};

use super::discrete_gaussian::DiscreteGaussian;
use super::rotation;
use crate::error::{CoreError, Result};

/// An encoding gives up after this many rounding attempts in a row exceed
/// the norm bound (each does with probability ≤ β).
pub const MAX_ROUNDING_ATTEMPTS: u32 = 1_000;

/// The modular sum may wrap for a coordinate with probability at most
/// 2^−`WRAP_PROBABILITY_LOG2` (see [`choose_scale`]).
pub const WRAP_PROBABILITY_LOG2: i32 = 40;

/// Rounded coordinates must stay below this magnitude before noise.
const MAX_ROUNDED_MAGNITUDE: f64 = (1u64 << 62) as f64;

/// How a round's participants encode their updates; every participant and
/// the coordinator must hold the same one.
#[derive(Debug, Clone, PartialEq)]
pub struct SecAggEncoding {
    /// Number of model parameters `p` in an update.
    pub num_params: usize,
    /// L2 clipping norm `S` of an update, in parameter units; finite, positive.
    pub clip_norm: f64,
    /// Scale `γ`: integer units per parameter unit; finite, positive.
    pub scale: f64,
    /// Seed of the rotation's signs, shared by the round.
    pub rotation_seed: [u8; 32],
    /// Each participant's discrete Gaussian noise, in integer units (its σ²
    /// is `γ²` times the variance in parameter units); `None` adds none.
    pub noise: Option<DiscreteGaussian>,
    /// β of conditional rounding, in [0, 1): 0 rounds once, unconditionally.
    pub rounding_beta: f64,
}

/// One participant's encoded update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedUpdate {
    /// The update mod 2^32, [`SecAggEncoding::padded_dim`] values.
    pub values: Vec<u32>,
    /// Whether the update was scaled down to the clipping norm.
    pub clipped: bool,
    /// Rounding attempts rejected for exceeding the norm bound.
    pub num_rounding_retries: u32,
}

impl SecAggEncoding {
    /// Returns the encoding a round under `plan` uses for a model of
    /// `num_params` parameters with the round's public `rotation_seed`: the
    /// plan's clip norm and scale, and its distributed noise, if any.
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] if the plan's noise variance cannot be
    /// sampled or its dimension is not the model's.
    pub fn for_plan(
        plan: &crate::plan::SecureAggregationPlan,
        num_params: usize,
        rotation_seed: [u8; 32],
    ) -> Result<Self> {
        let (noise, rounding_beta) = match &plan.distributed_dp {
            Some(distributed) => {
                let padded = rotation::padded_dim(num_params) as u64;
                if distributed.padded_dim != padded {
                    return Err(CoreError::InvalidPrivacy(format!(
                        "the plan's distributed DP is for dimension {}, a model of {num_params} parameters has {padded}",
                        distributed.padded_dim
                    )));
                }
                (
                    Some(DiscreteGaussian::from_variance(distributed.noise_variance)?),
                    distributed.rounding_beta,
                )
            }
            None => (None, 0.0),
        };
        let encoding = SecAggEncoding {
            num_params,
            clip_norm: plan.clip_norm,
            scale: plan.scale,
            rotation_seed,
            noise,
            rounding_beta,
        };
        encoding.validate()?;
        Ok(encoding)
    }

    /// Returns the encoded dimension `d`: the parameter count padded to a
    /// power of two.
    pub fn padded_dim(&self) -> usize {
        rotation::padded_dim(self.num_params)
    }

    fn validate(&self) -> Result<()> {
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "clip_norm is {}, must be finite and positive",
                self.clip_norm
            )));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "scale is {}, must be finite and positive",
                self.scale
            )));
        }
        if !(0.0..1.0).contains(&self.rounding_beta) {
            return Err(CoreError::InvalidPrivacy(format!(
                "rounding_beta is {}, must be in [0, 1)",
                self.rounding_beta
            )));
        }
        Ok(())
    }

    /// Returns the L2 sensitivity of one encoded update in integer units:
    /// the norm bound of a scaled, rounded vector (Kairouz, Liu, Steinke
    /// 2021, Theorem 1 / Proposition 22, as their `rounded_l2_norm_bound`):
    /// `min(γS + √d, sqrt(γ²S² + d/4 + sqrt(2 ln(1/β))·(γS + √d/2)))`, the
    /// second only for β > 0. Conditional rounding enforces it.
    pub fn l2_sensitivity(&self) -> f64 {
        let scaled_norm = self.scale * self.clip_norm;
        let dim = self.padded_dim() as f64;
        let deterministic_bound = scaled_norm + dim.sqrt();
        if self.rounding_beta <= 0.0 {
            return deterministic_bound;
        }
        let squared = scaled_norm * scaled_norm
            + 0.25 * dim
            + (2.0 * (1.0 / self.rounding_beta).ln()).sqrt() * (scaled_norm + 0.5 * dim.sqrt());
        deterministic_bound.min(squared.sqrt())
    }

    /// Returns the L1 sensitivity in integer units: `Δ₂ · min(√d, Δ₂)`
    /// (`‖x‖₁ ≤ √d‖x‖₂`, and `‖x‖₁ ≤ ‖x‖₂²` for integer vectors).
    pub fn l1_sensitivity(&self) -> f64 {
        let l2 = self.l2_sensitivity();
        l2 * (self.padded_dim() as f64).sqrt().min(l2)
    }

    /// Encodes `delta` (see the module doc).
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] if the encoding is invalid, `delta` does
    /// not hold `num_params` finite values, or no rounding met the norm bound
    /// in [`MAX_ROUNDING_ATTEMPTS`] attempts.
    pub fn encode<R: Rng + CryptoRng + ?Sized>(
        &self,
        delta: &[f32],
        rng: &mut R,
    ) -> Result<EncodedUpdate> {
        self.validate()?;
        if delta.len() != self.num_params {
            return Err(CoreError::InvalidPrivacy(format!(
                "update has {} values, the encoding expects num_params {}",
                delta.len(),
                self.num_params
            )));
        }
        if let Some(index) = delta.iter().position(|value| !value.is_finite()) {
            return Err(CoreError::InvalidPrivacy(format!(
                "update value at index {index} is not finite"
            )));
        }
        let dim = self.padded_dim();
        let mut rotated = vec![0.0f64; dim];
        for (slot, value) in rotated.iter_mut().zip(delta) {
            *slot = f64::from(*value);
        }
        let norm = rotated
            .iter()
            .map(|value| value * value)
            .sum::<f64>()
            .sqrt();
        let clipped = norm > self.clip_norm;
        let clip_factor = if clipped { self.clip_norm / norm } else { 1.0 };
        rotation::rotate(&mut rotated, &self.rotation_seed);
        for value in &mut rotated {
            *value *= clip_factor * self.scale;
        }
        if rotated
            .iter()
            .any(|value| value.abs() >= MAX_ROUNDED_MAGNITUDE)
        {
            return Err(CoreError::InvalidPrivacy(format!(
                "scale {} times clip_norm {} does not fit 62-bit integers",
                self.scale, self.clip_norm
            )));
        }

        let norm_bound = self.l2_sensitivity();
        let mut rounded = vec![0i64; dim];
        let mut num_rounding_retries = 0;
        loop {
            let mut squared_norm = 0.0;
            for (slot, value) in rounded.iter_mut().zip(&rotated) {
                let floor = value.floor();
                let up = rng.random::<f64>() < value - floor;
                let integer = if up { floor + 1.0 } else { floor };
                squared_norm += integer * integer;
                // Exact: |integer| < 2^62.
                *slot = integer as i64;
            }
            if self.rounding_beta <= 0.0 || squared_norm.sqrt() <= norm_bound {
                break;
            }
            num_rounding_retries += 1;
            if num_rounding_retries >= MAX_ROUNDING_ATTEMPTS {
                return Err(CoreError::InvalidPrivacy(format!(
                    "no stochastic rounding met the norm bound {norm_bound} in \
                     {MAX_ROUNDING_ATTEMPTS} attempts (rounding_beta {})",
                    self.rounding_beta
                )));
            }
        }
        if let Some(noise) = &self.noise {
            noise.add_to(&mut rounded, rng);
        }
        // Two's complement truncation: the value mod 2^32.
        let values = rounded.iter().map(|value| *value as u32).collect();
        Ok(EncodedUpdate {
            values,
            clipped,
            num_rounding_retries,
        })
    }

    /// Decodes the modular sum of `num_summed` encoded updates into their
    /// average, in parameter units (see the module doc).
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] if the encoding is invalid, `sum` does
    /// not hold [`Self::padded_dim`] values or `num_summed` is 0.
    pub fn decode_average(&self, sum: &[u32], num_summed: usize) -> Result<Vec<f32>> {
        self.validate()?;
        let dim = self.padded_dim();
        if sum.len() != dim {
            return Err(CoreError::InvalidPrivacy(format!(
                "sum has {} values, the encoding expects padded_dim {dim}",
                sum.len()
            )));
        }
        if num_summed == 0 {
            return Err(CoreError::InvalidPrivacy(
                "num_summed is 0, must be at least 1".to_string(),
            ));
        }
        // Centered lift: reinterpreting as i32 maps [2^31, 2^32) to negatives.
        let mut values: Vec<f64> = sum
            .iter()
            .map(|value| f64::from(*value as i32) / self.scale)
            .collect();
        rotation::unrotate(&mut values, &self.rotation_seed);
        let divisor = num_summed as f64;
        Ok(values
            .iter()
            .take(self.num_params)
            .map(|value| (value / divisor) as f32)
            .collect())
    }
}

/// Returns the largest power of two `γ` such that the modular sum of
/// `max_participants` encoded updates wraps in no coordinate with probability
/// more than 2^−40.
///
/// Per coordinate, a rotated, scaled, rounded update is at most `γS + 1` in
/// magnitude: that worst case spends the whole clipping norm on the one
/// coordinate, so it assumes nothing of the data. Only the noise is treated
/// probabilistically: the sum of the participants' discrete Gaussians is
/// subgaussian with variance proxy `(γ·σ_total)²` (CKS20 Corollary 9; sums of
/// independent subgaussians add their proxies), so a coordinate exceeds
/// `τ·γ·σ_total` with probability ≤ `2·exp(−τ²/2)`; τ = `sqrt(2 ln(2d·2^40))`
/// makes the union over the `d` coordinates ≤ 2^−40. The condition is
/// `K·(γS + 1) + τ·γ·σ_total ≤ 2^31 − 1`, which the centered lift decodes
/// without ambiguity. `total_noise_stddev` is the standard deviation of the
/// summed noise in parameter units (√K times one participant's).
///
/// # Errors
/// [`CoreError::InvalidPrivacy`] if an argument is not finite and
/// non-negative (`clip_norm` positive), `max_participants` or `padded_dim` is
/// 0, or no positive scale avoids wrapping.
pub fn choose_scale(
    clip_norm: f64,
    max_participants: usize,
    total_noise_stddev: f64,
    padded_dim: usize,
) -> Result<f64> {
    if !(clip_norm.is_finite() && clip_norm > 0.0) {
        return Err(CoreError::InvalidPrivacy(format!(
            "clip_norm is {clip_norm}, must be finite and positive"
        )));
    }
    if !(total_noise_stddev.is_finite() && total_noise_stddev >= 0.0) {
        return Err(CoreError::InvalidPrivacy(format!(
            "total_noise_stddev is {total_noise_stddev}, must be finite and non-negative"
        )));
    }
    if max_participants == 0 || padded_dim == 0 {
        return Err(CoreError::InvalidPrivacy(format!(
            "max_participants is {max_participants} and padded_dim {padded_dim}, both must be positive"
        )));
    }
    let num_participants = max_participants as f64;
    let tail_multiple = wrap_tail_multiple(padded_dim);
    let headroom = f64::from(i32::MAX) - num_participants;
    let per_unit_scale = num_participants * clip_norm + tail_multiple * total_noise_stddev;
    let max_scale = headroom / per_unit_scale;
    if !(max_scale.is_finite() && max_scale > 0.0) {
        return Err(CoreError::InvalidPrivacy(format!(
            "no scale keeps {max_participants} updates of clip_norm {clip_norm} with \
             total_noise_stddev {total_noise_stddev} inside 32 bits"
        )));
    }
    let mut scale = 2f64.powi(max_scale.log2().floor() as i32);
    if scale > max_scale {
        // log2 rounded up just below a power of two.
        scale /= 2.0;
    }
    Ok(scale)
}

/// Returns τ with `2d·exp(−τ²/2) = 2^−40`: the noise tail multiple of
/// [`choose_scale`].
pub fn wrap_tail_multiple(padded_dim: usize) -> f64 {
    let log_inverse_probability =
        (2.0 * padded_dim as f64).ln() + f64::from(WRAP_PROBABILITY_LOG2) * std::f64::consts::LN_2;
    (2.0 * log_inverse_probability).sqrt()
}
