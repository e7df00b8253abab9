//! Rényi DP of one run of the Poisson-subsampled Gaussian mechanism:
//! `ε_RDP(α) = ln(A_α) / (α − 1)`, with `A_α` as a finite sum for integer
//! orders and as two converging series of erfc terms for fractional orders
//! (I. Mironov, K. Talwar, L. Zhang, "Rényi Differential Privacy of the
//! Sampled Gaussian Mechanism", 2019, <https://arxiv.org/abs/1908.10530>;
//! TF Privacy's `rdp_accountant.py`).

use std::f64::consts::{LN_2, PI, SQRT_2};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::units::{NoiseMultiplier, SamplingRate};

/// Terms of the fractional-order series are summed until both are below
/// `e^FRACTIONAL_SERIES_LOG_CUTOFF` (TF Privacy's stopping rule).
const FRACTIONAL_SERIES_LOG_CUTOFF: f64 = -30.0;

/// The fractional-order series is cut after this many terms; an order whose
/// series has not converged by then is reported as `+∞`. Only sampling rates
/// near 0.5 with very large σ come near it (q = 0.5, σ = 1e4, α = 1.1 takes
/// about 87,000 terms); elsewhere it takes tens to a few thousand.
const MAX_FRACTIONAL_SERIES_TERMS: u32 = 100_000;

/// Integer orders up to this one use the exact finite sum (`α + 1` terms);
/// larger ones go through the fractional series, which is exact at integers too.
const MAX_FINITE_SUM_ORDER: f64 = 65_536.0;

/// From this argument on, `ln(erfc(x))` uses the asymptotic expansion: `erfc`
/// itself underflows to subnormals just above 26.5.
pub(super) const LOG_ERFC_ASYMPTOTIC_FROM: f64 = 25.0;
/// Parameters of a run of the Poisson-subsampled Gaussian mechanism (DP-SGD).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SubsampledGaussian {
    /// Probability `q` that a record takes part in a step, in `[0, 1]`. 1 is
    /// the plain (non-subsampled) Gaussian mechanism; 0 releases nothing.
    pub sampling_rate: f64,
    /// `σ`: the noise standard deviation divided by the L2 clipping norm;
    /// finite and positive.
    pub noise_multiplier: f64,
    /// Number of steps (compositions) of the run.
    pub num_steps: u64,
}

impl SubsampledGaussian {
    /// Checks that `sampling_rate` is in `[0, 1]` and `noise_multiplier` is
    /// finite and positive.
    ///
    /// # Errors
    /// [`crate::CoreError::InvalidPrivacy`] naming the first bad field and its value.
    pub fn validate(&self) -> Result<()> {
        SamplingRate::new(self.sampling_rate)?;
        NoiseMultiplier::new(self.noise_multiplier)?;
        Ok(())
    }

    /// Returns the RDP of one step at `order`, `+∞` where it overflows.
    ///
    /// Assumes a validated mechanism and `order > 1`.
    pub(super) fn rdp_of_one_step(&self, order: f64) -> f64 {
        let sampling_rate = self.sampling_rate;
        let sigma = self.noise_multiplier;
        if sampling_rate == 0.0 {
            return 0.0;
        }
        if sampling_rate == 1.0 {
            return order / (2.0 * sigma * sigma);
        }
        let log_a = if order.fract() == 0.0 && order <= MAX_FINITE_SUM_ORDER {
            // Exact: `order` is a whole number in (1, 65536].
            log_a_integer(sampling_rate, sigma, order as u64)
        } else {
            log_a_fractional(sampling_rate, sigma, order)
        };
        let rdp = log_a / (order - 1.0);
        if rdp.is_nan() {
            // An overflow (∞ − ∞) inside the sums: report no privacy.
            return f64::INFINITY;
        }
        // A_α ≥ 1, so a negative value is rounding.
        rdp.max(0.0)
    }
}

/// Returns `ln(e^log_x + e^log_y)`.
fn log_add(log_x: f64, log_y: f64) -> f64 {
    if log_x.is_nan() || log_y.is_nan() {
        return f64::NAN;
    }
    let (smaller, larger) = if log_x < log_y {
        (log_x, log_y)
    } else {
        (log_y, log_x)
    };
    if smaller == f64::NEG_INFINITY {
        return larger;
    }
    if larger == f64::INFINITY {
        return f64::INFINITY;
    }
    (smaller - larger).exp().ln_1p() + larger
}

/// Returns `ln(e^log_x − e^log_y)`, NaN if `log_x < log_y` (a negative result,
/// which only rounding could cause).
fn log_sub(log_x: f64, log_y: f64) -> f64 {
    if log_x.is_nan() || log_y.is_nan() || log_x < log_y {
        return f64::NAN;
    }
    if log_y == f64::NEG_INFINITY {
        return log_x;
    }
    if log_x == log_y {
        return f64::NEG_INFINITY;
    }
    if log_x == f64::INFINITY {
        return f64::INFINITY;
    }
    // e^x − e^y = e^x (1 − e^(y − x)); stable for any gap.
    log_x + (-(log_y - log_x).exp_m1()).ln()
}

/// Returns `ln(erfc(x))`, accurate where `erfc(x)` underflows.
///
/// For `x ≥ 25` uses the asymptotic expansion
/// `ln erfc(x) = −x² − ln(x√π) − 1/(2x²) + 5/(8x⁴) − 37/(24x⁶) + 353/(64x⁸) + O(x⁻¹⁰)`
/// (TF Privacy's `_log_erfc`), whose remainder is below 1e-12 there.
pub(super) fn log_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < LOG_ERFC_ASYMPTOTIC_FROM {
        return libm::erfc(x).ln();
    }
    log_erfc_asymptotic(x)
}

/// Returns the asymptotic expansion of `ln(erfc(x))` for large positive `x`.
pub(super) fn log_erfc_asymptotic(x: f64) -> f64 {
    if x == f64::INFINITY {
        return f64::NEG_INFINITY;
    }
    let inverse_square = 1.0 / (x * x);
    let correction = inverse_square
        * (-0.5
            + inverse_square
                * (0.625 + inverse_square * (-37.0 / 24.0 + inverse_square * (353.0 / 64.0))));
    -x * x - x.ln() - 0.5 * PI.ln() + correction
}

/// Returns `(k² − k) / (2σ²)`, the exponent of `e^{(k² − k)/(2σ²)}` in `A_α`,
/// with an exact 0 at `k ∈ {0, 1}` even if `2σ²` underflows.
fn pair_exponent(k: f64, two_sigma_squared: f64) -> f64 {
    let numerator = k * k - k;
    if numerator == 0.0 {
        return 0.0;
    }
    numerator / two_sigma_squared
}

/// Returns `ln(A_α)` for an integer order `α ≥ 2` and `0 < q < 1`:
/// `A_α = Σ_{i=0}^{α} C(α, i) q^i (1 − q)^{α−i} e^{(i² − i)/(2σ²)}`
/// (Mironov, Talwar, Zhang 2019; TF Privacy's `_compute_log_a_int`).
pub(super) fn log_a_integer(sampling_rate: f64, sigma: f64, order: u64) -> f64 {
    let log_q = sampling_rate.ln();
    let log_one_minus_q = (-sampling_rate).ln_1p();
    let two_sigma_squared = 2.0 * sigma * sigma;
    let alpha = order as f64;
    let mut log_a = f64::NEG_INFINITY;
    // ln C(α, i), updated as C(α, i + 1) = C(α, i) (α − i)/(i + 1).
    let mut log_binomial = 0.0;
    for index in 0..=order {
        let i = index as f64;
        let log_term = log_binomial
            + i * log_q
            + (alpha - i) * log_one_minus_q
            + pair_exponent(i, two_sigma_squared);
        log_a = log_add(log_a, log_term);
        log_binomial += ((alpha - i) / (i + 1.0)).ln();
    }
    log_a
}

/// Returns `ln(A_α)` for any order `α > 1` and `0 < q < 1`, `+∞` if it
/// overflows or the series does not converge in
/// [`MAX_FRACTIONAL_SERIES_TERMS`] terms.
///
/// `A_α` is split at `z0 = σ² ln(1/q − 1) + 1/2` into two integrals, each a
/// series over the generalized binomial coefficients `C(α, i)` (negative for
/// some `i > α`) weighted by Gaussian tails `erfc(·)/2` (Mironov, Talwar, Zhang
/// 2019; TF Privacy's `_compute_log_a_frac`). Summation stops after the first
/// term pair below `e^-30`. At integer orders the coefficients vanish past `α`
/// and this equals [`log_a_integer`].
pub(super) fn log_a_fractional(sampling_rate: f64, sigma: f64, order: f64) -> f64 {
    let log_q = sampling_rate.ln();
    let log_one_minus_q = (-sampling_rate).ln_1p();
    let two_sigma_squared = 2.0 * sigma * sigma;
    let erfc_scale = SQRT_2 * sigma;
    let z0 = sigma * sigma * (log_one_minus_q - log_q) + 0.5;
    let log_half = -LN_2;

    let mut log_a0 = f64::NEG_INFINITY;
    let mut log_a1 = f64::NEG_INFINITY;
    // ln |C(α, i)| and its sign, updated as C(α, i + 1) = C(α, i) (α − i)/(i + 1).
    let mut log_abs_binomial = 0.0;
    let mut binomial_is_positive = true;
    for index in 0..MAX_FRACTIONAL_SERIES_TERMS {
        let i = f64::from(index);
        let j = order - i;
        let log_t0 = log_abs_binomial + i * log_q + j * log_one_minus_q;
        let log_t1 = log_abs_binomial + j * log_q + i * log_one_minus_q;
        let log_e0 = log_half + log_erfc((i - z0) / erfc_scale);
        let log_e1 = log_half + log_erfc((z0 - j) / erfc_scale);
        let log_s0 = log_t0 + pair_exponent(i, two_sigma_squared) + log_e0;
        let log_s1 = log_t1 + pair_exponent(j, two_sigma_squared) + log_e1;
        if binomial_is_positive {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        if !(log_a0 < f64::INFINITY && log_a1 < f64::INFINITY) {
            // NaN (an overflow, or rounding made a partial sum negative) or +∞.
            return f64::INFINITY;
        }
        if log_s0.max(log_s1) < FRACTIONAL_SERIES_LOG_CUTOFF {
            return log_add(log_a0, log_a1);
        }
        let binomial_ratio = j / (i + 1.0);
        if binomial_ratio == 0.0 {
            // An integer order: every later coefficient is zero.
            return log_add(log_a0, log_a1);
        }
        if binomial_ratio < 0.0 {
            binomial_is_positive = !binomial_is_positive;
        }
        log_abs_binomial += binomial_ratio.abs().ln();
    }
    f64::INFINITY
}
