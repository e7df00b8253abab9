//! Noise calibration: the smallest noise multiplier σ that keeps a run
//! within a target ε at δ.

use crate::error::{CoreError, Result};
use crate::privacy::accountant::{SubsampledGaussian, epsilon};
#[cfg(doc)]
use crate::units::MAX_DELTA;
use crate::units::{Delta, Epsilon, SamplingRate};

/// Calibration never looks below this noise multiplier.
pub(super) const MIN_CALIBRATED_NOISE_MULTIPLIER: f64 = 1e-3;

/// Calibration fails if this noise multiplier does not reach the target.
const MAX_CALIBRATED_NOISE_MULTIPLIER: f64 = 1e4;

/// Calibration stops when its bracket is this narrow, relatively.
const CALIBRATION_RELATIVE_TOLERANCE: f64 = 1e-4;
/// Returns the smallest noise multiplier σ such that `num_steps` steps at
/// `sampling_rate` give ε ≤ `target_epsilon` at `delta` with the tight
/// conversion (as [`epsilon`] computes it).
///
/// Bisects `ln σ` over [1e-3, 1e4] until the bracket is narrower than 1e-4
/// relatively, and returns its upper end, which always meets the target: the
/// result is never below the true smallest σ and at most 1e-4 above it. When
/// even σ = 1e-3 meets the target (`num_steps` or `sampling_rate` is 0, say),
/// returns 1e-3.
///
/// # Errors
/// [`CoreError::InvalidPrivacy`] if `target_epsilon` is not finite and
/// positive, `sampling_rate` is not in [0, 1], `delta` is not in (0, [`MAX_DELTA`]], or no
/// σ ≤ 1e4 reaches the target.
pub fn calibrate_noise_multiplier(
    sampling_rate: f64,
    num_steps: u64,
    target_epsilon: f64,
    delta: f64,
) -> Result<f64> {
    Epsilon::named("target_epsilon", target_epsilon)?;
    SamplingRate::new(sampling_rate)?;
    Delta::new(delta)?;
    let epsilon_at = |noise_multiplier: f64| {
        let mechanism = SubsampledGaussian {
            sampling_rate,
            noise_multiplier,
            num_steps,
        };
        epsilon(&mechanism, delta)
    };

    // Invariant: ε(sigma_high) ≤ target < ε(sigma_low).
    let mut sigma_high = MAX_CALIBRATED_NOISE_MULTIPLIER;
    if epsilon_at(sigma_high)? > target_epsilon {
        return Err(CoreError::InvalidPrivacy(format!(
            "target_epsilon is {target_epsilon}, which no noise_multiplier up to \
             {MAX_CALIBRATED_NOISE_MULTIPLIER} reaches (sampling_rate {sampling_rate}, \
             num_steps {num_steps}, delta {delta})"
        )));
    }
    let mut sigma_low = MIN_CALIBRATED_NOISE_MULTIPLIER;
    if epsilon_at(sigma_low)? <= target_epsilon {
        return Ok(sigma_low);
    }
    while sigma_high > sigma_low * (1.0 + CALIBRATION_RELATIVE_TOLERANCE) {
        let sigma_mid = (0.5 * (sigma_low.ln() + sigma_high.ln())).exp();
        if !(sigma_mid > sigma_low && sigma_mid < sigma_high) {
            // The bracket is as narrow as floating point allows.
            break;
        }
        if epsilon_at(sigma_mid)? <= target_epsilon {
            sigma_high = sigma_mid;
        } else {
            sigma_low = sigma_mid;
        }
    }
    Ok(sigma_high)
}
