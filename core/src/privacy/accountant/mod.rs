//! Rényi-DP accounting of the Poisson-subsampled Gaussian mechanism (DP-SGD).
//!
//! Each DP-SGD step samples every record independently with probability `q`
//! (Poisson sampling), sums the clipped per-record gradients and adds Gaussian
//! noise of standard deviation `σ · clip_norm`. Its privacy loss is tracked as a
//! Rényi-DP curve `ε_RDP(α)` over a fixed grid of orders `α > 1`; curves of
//! successive steps and runs add up (composition), and the total converts to an
//! `(ε, δ)` guarantee.
//!
//! The math follows TensorFlow Privacy's `rdp_accountant.py`
//! (<https://github.com/tensorflow/privacy/blob/master/tensorflow_privacy/privacy/analysis/rdp_accountant.py>):
//!
//! - Rényi DP and its composition: I. Mironov, "Rényi Differential Privacy",
//!   CSF 2017, <https://arxiv.org/abs/1702.07476>.
//! - RDP of the sampled Gaussian mechanism, `ε_RDP(α) = ln(A_α) / (α − 1)`, with
//!   `A_α` as a finite sum for integer orders and as two converging series of
//!   erfc terms for fractional orders: I. Mironov, K. Talwar, L. Zhang, "Rényi
//!   Differential Privacy of the Sampled Gaussian Mechanism", 2019,
//!   <https://arxiv.org/abs/1908.10530>.
//! - The tight RDP → `(ε, δ)` conversion: B. Balle, G. Barthe, M. Gaboardi,
//!   J. Hsu, T. Sato, "Hypothesis Testing Interpretations and Renyi Differential
//!   Privacy", AISTATS 2020, <https://arxiv.org/abs/1905.09982>, and C. Canonne,
//!   G. Kamath, T. Steinke, "The Discrete Gaussian for Differential Privacy",
//!   NeurIPS 2020, <https://arxiv.org/abs/2004.00010> (Proposition 12).
//!
//! Every floating-point overflow is resolved towards more privacy loss: an order
//! whose RDP cannot be evaluated is reported as `+∞`, which is a valid (if
//! useless) bound. Like TF Privacy's, the sums carry an absolute rounding error
//! of about 1e-16 in `ln(A_α)`, so a per-step RDP below that reads as 0.

use std::f64::consts::{LN_2, PI, SQRT_2};

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

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
const LOG_ERFC_ASYMPTOTIC_FROM: f64 = 25.0;

/// Calibration never looks below this noise multiplier.
const MIN_CALIBRATED_NOISE_MULTIPLIER: f64 = 1e-3;

/// Calibration fails if this noise multiplier does not reach the target.
const MAX_CALIBRATED_NOISE_MULTIPLIER: f64 = 1e4;

/// Calibration stops when its bracket is this narrow, relatively.
const CALIBRATION_RELATIVE_TOLERANCE: f64 = 1e-4;

/// Returns the default grid of Rényi orders: 1.1, 1.2, …, 10.9 (step 0.1), 11,
/// 12, …, 63, 128, 256, 512, 1024.
///
/// The first range is built as TF Privacy builds it (`1 + x / 10`), so its
/// orders 2, 3, …, 10 are exact integers and use the finite sum.
pub fn default_orders() -> Vec<f64> {
    let fine_orders = (1..100).map(|tenths| 1.0 + f64::from(tenths) / 10.0);
    let integer_orders = (11..64).map(f64::from);
    let large_orders = [128.0, 256.0, 512.0, 1024.0];
    fine_orders
        .chain(integer_orders)
        .chain(large_orders)
        .collect()
}

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
    /// [`CoreError::InvalidPrivacy`] naming the first bad field and its value.
    pub fn validate(&self) -> Result<()> {
        validate_sampling_rate(self.sampling_rate)?;
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier > 0.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "noise_multiplier is {}, must be finite and positive",
                self.noise_multiplier
            )));
        }
        Ok(())
    }

    /// Returns the RDP of one step at `order`, `+∞` where it overflows.
    ///
    /// Assumes a validated mechanism and `order > 1`.
    fn rdp_of_one_step(&self, order: f64) -> f64 {
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

/// How RDP converts to (ε, δ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// `ε = min_α rdp(α) + ln(1/δ)/(α − 1)` (Mironov 2017, Proposition 3; TF
    /// Privacy's classic `get_privacy_spent`).
    Classic,
    /// `ε = min_α rdp(α) + ln(1 − 1/α) − (ln δ + ln α)/(α − 1)` (Balle et al.
    /// 2020, Theorem 21; Canonne, Kamath, Steinke 2020, Proposition 12), with
    /// `ε = 0` where `δ² + expm1(−rdp) ≥ 0` and orders `α ≤ 1.01` skipped, as TF
    /// Privacy's `compute_eps`.
    Tight,
}

/// An (ε, δ) guarantee and the order that achieved it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacySpent {
    /// ε ≥ 0; `+∞` if no order gives a finite bound.
    pub epsilon: f64,
    /// The δ asked for.
    pub delta: f64,
    /// The Rényi order at which the minimum was reached (the first such order
    /// of the grid on ties).
    pub optimal_order: f64,
}

/// Composes mechanisms (adds RDP curves over a fixed grid of orders).
#[derive(Debug, Clone, PartialEq)]
pub struct RdpAccountant {
    /// The Rényi orders, each finite and > 1; never empty.
    orders: Vec<f64>,
    /// The total RDP at each order (same length as `orders`), ≥ 0, maybe `+∞`.
    rdp: Vec<f64>,
}

impl RdpAccountant {
    /// Returns an accountant with nothing spent over [`default_orders`].
    pub fn new() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        RdpAccountant { orders, rdp }
    }

    /// Returns an accountant with nothing spent over `orders`.
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] if `orders` is empty or an order is not
    /// finite and > 1.
    pub fn with_orders(orders: Vec<f64>) -> Result<Self> {
        if orders.is_empty() {
            return Err(CoreError::InvalidPrivacy(
                "orders is empty, must hold at least one order".to_string(),
            ));
        }
        if let Some(bad_order) = orders
            .iter()
            .find(|order| !(order.is_finite() && **order > 1.0))
        {
            return Err(CoreError::InvalidPrivacy(format!(
                "order is {bad_order}, must be finite and greater than 1"
            )));
        }
        let rdp = vec![0.0; orders.len()];
        Ok(RdpAccountant { orders, rdp })
    }

    /// Adds the RDP of `mechanism.num_steps` steps of `mechanism` at every order.
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] if `mechanism` is invalid; the accountant
    /// is unchanged on error.
    pub fn compose(&mut self, mechanism: &SubsampledGaussian) -> Result<()> {
        mechanism.validate()?;
        if mechanism.num_steps == 0 || mechanism.sampling_rate == 0.0 {
            return Ok(());
        }
        let num_steps = mechanism.num_steps as f64;
        for (total, order) in self.rdp.iter_mut().zip(&self.orders) {
            *total += mechanism.rdp_of_one_step(*order) * num_steps;
        }
        Ok(())
    }

    /// Returns the total RDP at each order of [`Self::orders`].
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// Returns the Rényi orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// Returns the smallest ε over the orders such that everything composed so
    /// far is (ε, δ)-DP, with the given conversion.
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] if `delta` is not in (0, 1).
    pub fn epsilon(&self, delta: f64, conversion: Conversion) -> Result<PrivacySpent> {
        validate_delta(delta)?;
        let log_delta = delta.ln();
        let mut best: Option<PrivacySpent> = None;
        for (order, rdp) in self.orders.iter().zip(&self.rdp) {
            let epsilon = match conversion {
                Conversion::Classic => classic_epsilon(*order, *rdp, log_delta),
                Conversion::Tight => tight_epsilon(*order, *rdp, delta, log_delta),
            };
            let improves = best.is_none_or(|spent| epsilon < spent.epsilon);
            if improves {
                best = Some(PrivacySpent {
                    epsilon,
                    delta,
                    optimal_order: *order,
                });
            }
        }
        best.ok_or_else(|| CoreError::InvalidPrivacy("the accountant has no orders".to_string()))
    }
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

/// Returns the ε of one run at `delta`, with the tight conversion over
/// [`default_orders`].
///
/// # Errors
/// [`CoreError::InvalidPrivacy`] if `mechanism` or `delta` is invalid.
pub fn epsilon(mechanism: &SubsampledGaussian, delta: f64) -> Result<f64> {
    validate_delta(delta)?;
    let mut accountant = RdpAccountant::new();
    accountant.compose(mechanism)?;
    let spent = accountant.epsilon(delta, Conversion::Tight)?;
    Ok(spent.epsilon)
}

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
/// positive, `sampling_rate` is not in [0, 1], `delta` is not in (0, 1), or no
/// σ ≤ 1e4 reaches the target.
pub fn calibrate_noise_multiplier(
    sampling_rate: f64,
    num_steps: u64,
    target_epsilon: f64,
    delta: f64,
) -> Result<f64> {
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(CoreError::InvalidPrivacy(format!(
            "target_epsilon is {target_epsilon}, must be finite and positive"
        )));
    }
    validate_sampling_rate(sampling_rate)?;
    validate_delta(delta)?;
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

/// Checks that `sampling_rate` is in [0, 1].
fn validate_sampling_rate(sampling_rate: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&sampling_rate) {
        return Err(CoreError::InvalidPrivacy(format!(
            "sampling_rate is {sampling_rate}, must be in [0, 1]"
        )));
    }
    Ok(())
}

/// Checks that `delta` is in (0, 1).
fn validate_delta(delta: f64) -> Result<()> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(CoreError::InvalidPrivacy(format!(
            "delta is {delta}, must be in (0, 1)"
        )));
    }
    Ok(())
}

/// Returns the ε of the classic conversion at one order (Mironov 2017,
/// Proposition 3): `rdp + ln(1/δ)/(α − 1)`.
fn classic_epsilon(order: f64, rdp: f64, log_delta: f64) -> f64 {
    (rdp - log_delta / (order - 1.0)).max(0.0)
}

/// Returns the ε of the tight conversion at one order (Balle et al. 2020;
/// Canonne, Kamath, Steinke 2020), as TF Privacy's `compute_eps`.
fn tight_epsilon(order: f64, rdp: f64, delta: f64, log_delta: f64) -> f64 {
    if delta * delta + (-rdp).exp_m1() >= 0.0 {
        // δ ≥ sqrt(1 − exp(−KL)) bounds the total variation: ε = 0 suffices.
        return 0.0;
    }
    if order <= 1.01 {
        // The bound is numerically unstable as α → 1, and useless there.
        return f64::INFINITY;
    }
    let epsilon = rdp + (-1.0 / order).ln_1p() - (log_delta + order.ln()) / (order - 1.0);
    epsilon.max(0.0)
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
fn log_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < LOG_ERFC_ASYMPTOTIC_FROM {
        return libm::erfc(x).ln();
    }
    log_erfc_asymptotic(x)
}

/// Returns the asymptotic expansion of `ln(erfc(x))` for large positive `x`.
fn log_erfc_asymptotic(x: f64) -> f64 {
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
fn log_a_integer(sampling_rate: f64, sigma: f64, order: u64) -> f64 {
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
fn log_a_fractional(sampling_rate: f64, sigma: f64, order: f64) -> f64 {
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use proptest::prelude::*;

    use super::*;

    const DELTA: f64 = 1e-5;

    /// Returns the ε of one run over the default orders.
    fn spent(
        sampling_rate: f64,
        noise_multiplier: f64,
        num_steps: u64,
        conversion: Conversion,
    ) -> PrivacySpent {
        let mut accountant = RdpAccountant::new();
        accountant
            .compose(&SubsampledGaussian {
                sampling_rate,
                noise_multiplier,
                num_steps,
            })
            .expect("the test mechanism is valid");
        accountant
            .epsilon(DELTA, conversion)
            .expect("the test delta is valid")
    }

    fn assert_relatively_close(actual: f64, expected: f64, tolerance: f64) {
        let error = (actual - expected).abs() / expected.abs().max(f64::MIN_POSITIVE);
        assert!(
            error <= tolerance,
            "{actual} is not within {tolerance} (relative) of {expected}"
        );
    }

    fn invalid_privacy_message(result: Result<impl std::fmt::Debug>) -> String {
        match result {
            Err(CoreError::InvalidPrivacy(message)) => message,
            other => panic!("expected InvalidPrivacy, got {other:?}"),
        }
    }

    #[test]
    fn default_orders_are_tf_privacys_grid_up_to_1024() {
        let orders = default_orders();
        assert_eq!(orders.len(), 99 + 53 + 4);
        assert_eq!(orders[0], 1.1);
        assert_eq!(orders[9], 2.0);
        assert_eq!(orders[98], 10.9);
        assert_eq!(orders[99], 11.0);
        assert_eq!(orders[151], 63.0);
        assert_eq!(&orders[152..], &[128.0, 256.0, 512.0, 1024.0]);
        assert!(orders.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn abadi_mnist_example_matches_tf_privacy_with_both_conversions() {
        // Abadi et al. 2016: N = 60,000, lot size 256, σ = 1.1, 60 epochs.
        let sampling_rate = 256.0 / 60_000.0;
        let classic = spent(sampling_rate, 1.1, 14_063, Conversion::Classic);
        let tight = spent(sampling_rate, 1.1, 14_063, Conversion::Tight);
        println!("abadi mnist: classic {classic:?}, tight {tight:?}");
        assert!((classic.epsilon - 3.01).abs() <= 0.03, "{classic:?}");
        assert!((tight.epsilon - 2.60).abs() <= 0.03, "{tight:?}");
        assert!(tight.epsilon < classic.epsilon);
    }

    #[test]
    fn abadi_section_3_1_example_gives_classic_epsilon_1_26() {
        let classic = spent(0.01, 4.0, 10_000, Conversion::Classic);
        let tight = spent(0.01, 4.0, 10_000, Conversion::Tight);
        println!("abadi section 3.1: classic {classic:?}, tight {tight:?}");
        assert!((classic.epsilon - 1.26).abs() <= 0.02, "{classic:?}");
        assert!(tight.epsilon < classic.epsilon);
    }

    #[test]
    fn tf_privacy_reference_rdp_values_are_reproduced() {
        // rdp_accountant_test.py, test_compute_rdp_sequence and _scalar.
        let mut accountant =
            RdpAccountant::with_orders(vec![1.5, 2.5, 5.0, 50.0, 100.0]).expect("valid orders");
        accountant
            .compose(&SubsampledGaussian {
                sampling_rate: 0.01,
                noise_multiplier: 2.5,
                num_steps: 50,
            })
            .expect("valid mechanism");
        let expected = [0.00065, 0.001085, 0.00218075, 0.023846, 167.416307];
        for (actual, expected) in accountant.rdp().iter().zip(expected) {
            assert!((actual - expected).abs() <= 1e-5, "{actual} vs {expected}");
        }

        let mut scalar = RdpAccountant::with_orders(vec![5.0]).expect("valid orders");
        scalar
            .compose(&SubsampledGaussian {
                sampling_rate: 0.1,
                noise_multiplier: 2.0,
                num_steps: 10,
            })
            .expect("valid mechanism");
        assert!(
            (scalar.rdp()[0] - 0.07737).abs() <= 5e-6,
            "{:?}",
            scalar.rdp()
        );
    }

    #[test]
    fn log_a_matches_multi_precision_integration() {
        // ln A_α by mpmath quadrature (TF Privacy's test_compute_log_a_equals_mp
        // cases), computed offline.
        let cases = [
            (1e-6, 0.1, 256.0, 3_260_463.229_297),
            (1e-5, 0.1, 256.1, 3_263_607.039_788),
            (1e-6, 1.0, 27.0, 8.769_511_304_848e-10),
            (1e-4, 1.0, 1.5, 6.442_686_953_837e-9),
            (1e-3, 1.0, 2.0, 1.718_280_352_215e-6),
            (0.01, 10.0, 20.0, 1.912_969_991_284e-4),
            (0.1, 100.0, 20.5, 1.999_181_845_807e-4),
            (0.99, 0.1, 256.0, 3_263_997.427_114),
            (0.999, 100.0, 256.1, 3.260_108_037_973),
        ];
        for (sampling_rate, sigma, order, expected) in cases {
            let mechanism = SubsampledGaussian {
                sampling_rate,
                noise_multiplier: sigma,
                num_steps: 1,
            };
            let log_a = mechanism.rdp_of_one_step(order) * (order - 1.0);
            assert_relatively_close(log_a, expected, 1e-4);
        }
    }

    #[test]
    fn plain_gaussian_rdp_is_order_over_twice_sigma_squared() {
        let sigma = 1.3;
        let num_steps = 700;
        let mut accountant = RdpAccountant::new();
        accountant
            .compose(&SubsampledGaussian {
                sampling_rate: 1.0,
                noise_multiplier: sigma,
                num_steps,
            })
            .expect("valid mechanism");
        for (order, rdp) in accountant.orders().iter().zip(accountant.rdp()) {
            assert_eq!(*rdp, order / (2.0 * sigma * sigma) * num_steps as f64);
        }

        let closed_form_minimum = default_orders()
            .into_iter()
            .map(|order| {
                num_steps as f64 * order / (2.0 * sigma * sigma)
                    + (1.0 / DELTA).ln() / (order - 1.0)
            })
            .fold(f64::INFINITY, f64::min);
        let classic = accountant
            .epsilon(DELTA, Conversion::Classic)
            .expect("valid delta");
        assert_relatively_close(classic.epsilon, closed_form_minimum, 1e-12);
    }

    #[test]
    fn integer_and_fractional_routines_agree_at_an_integer_order() {
        for (sampling_rate, sigma) in [(0.01, 1.1), (256.0 / 60_000.0, 0.7), (0.2, 3.0), (0.5, 1.0)]
        {
            let integer = log_a_integer(sampling_rate, sigma, 3);
            let fractional = log_a_fractional(sampling_rate, sigma, 3.0);
            assert_relatively_close(fractional, integer, 1e-9);
        }
    }

    #[test]
    fn rdp_is_continuous_around_an_integer_order() {
        let (sampling_rate, sigma) = (0.01, 1.1);
        let rdp_at = |order: f64| log_a_fractional(sampling_rate, sigma, order) / (order - 1.0);
        let at_three = rdp_at(3.0);
        assert_relatively_close(rdp_at(2.9999), at_three, 1e-3);
        assert_relatively_close(rdp_at(3.0001), at_three, 1e-3);
        assert!(rdp_at(2.9999) <= at_three && at_three <= rdp_at(3.0001));
    }

    #[test]
    fn order_two_rdp_matches_its_closed_form_for_small_sampling_rates() {
        // A_2 = 1 + q² (e^{1/σ²} − 1), so ε_RDP(2) = ln(1 + q² (e^{1/σ²} − 1)).
        for (sampling_rate, sigma) in [(1e-3, 5.0), (0.01, 2.0), (0.001, 20.0)] {
            let mechanism = SubsampledGaussian {
                sampling_rate,
                noise_multiplier: sigma,
                num_steps: 1,
            };
            let rdp = mechanism.rdp_of_one_step(2.0);
            let closed_form =
                (sampling_rate * sampling_rate * (1.0 / (sigma * sigma)).exp_m1()).ln_1p();
            assert_relatively_close(rdp, closed_form, 1e-9);
            // ≈ q² times the plain Gaussian's α/(2σ²).
            let small_q_approximation = sampling_rate * sampling_rate * 2.0 / (2.0 * sigma * sigma);
            assert_relatively_close(rdp, small_q_approximation, 0.2);
        }
    }

    #[test]
    fn every_order_is_finite_for_usual_parameters() {
        // q = 0.5 with σ = 1e4 is the slowest series: ~87,000 terms at α = 1.1.
        for sampling_rate in [1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9] {
            for sigma in [0.5, 1.0, 2.0, 10.0, 100.0, 1e4] {
                let mechanism = SubsampledGaussian {
                    sampling_rate,
                    noise_multiplier: sigma,
                    num_steps: 1,
                };
                for order in default_orders() {
                    let rdp = mechanism.rdp_of_one_step(order);
                    // Below ~1e-16, ln(A_α) is lost to rounding of A_α ≈ 1.
                    let resolvable = sampling_rate * sampling_rate / (sigma * sigma) > 1e-12;
                    assert!(
                        rdp.is_finite() && rdp >= 0.0 && (rdp > 0.0 || !resolvable),
                        "q {sampling_rate} σ {sigma} α {order}: {rdp}"
                    );
                }
            }
        }
    }

    #[test]
    fn log_erfc_is_continuous_where_the_asymptotic_expansion_takes_over() {
        for x in [20.0, 24.0, LOG_ERFC_ASYMPTOTIC_FROM, 26.0] {
            assert_relatively_close(log_erfc_asymptotic(x), libm::erfc(x).ln(), 1e-13);
        }
        // ln erfc(40) by mpmath.
        assert_relatively_close(log_erfc(40.0), -1_604.261_556_653_274, 1e-14);
        assert_eq!(log_erfc(f64::INFINITY), f64::NEG_INFINITY);
        assert_relatively_close(log_erfc(f64::NEG_INFINITY), LN_2, 1e-15);
    }

    #[test]
    fn zero_sampling_rate_or_zero_steps_spend_nothing() {
        let mut accountant = RdpAccountant::new();
        for mechanism in [
            SubsampledGaussian {
                sampling_rate: 0.0,
                noise_multiplier: 1.0,
                num_steps: 1000,
            },
            SubsampledGaussian {
                sampling_rate: 0.5,
                noise_multiplier: 1e-300,
                num_steps: 0,
            },
        ] {
            accountant.compose(&mechanism).expect("valid mechanism");
        }
        assert!(accountant.rdp().iter().all(|rdp| *rdp == 0.0));
        for conversion in [Conversion::Classic, Conversion::Tight] {
            let spent = accountant.epsilon(DELTA, conversion).expect("valid delta");
            assert!(spent.epsilon >= 0.0 && spent.epsilon.is_finite());
        }
        assert_eq!(
            accountant
                .epsilon(DELTA, Conversion::Tight)
                .expect("valid")
                .epsilon,
            0.0
        );
    }

    #[test]
    fn extreme_noise_multipliers_give_a_sound_epsilon() {
        for sigma in [1e-300, 1e-160, 1e-5] {
            let tight = spent(0.01, sigma, 10, Conversion::Tight);
            assert!(tight.epsilon > 100.0, "σ = {sigma}: {tight:?}");
        }
        let no_noise_to_speak_of = spent(1.0, 1e-300, 1, Conversion::Classic);
        assert_eq!(no_noise_to_speak_of.epsilon, f64::INFINITY);
        let lots_of_noise = spent(0.5, 1e6, 1_000_000, Conversion::Tight);
        assert!(lots_of_noise.epsilon < 0.1, "{lots_of_noise:?}");
    }

    #[test]
    fn bad_inputs_are_refused_with_the_field_named() {
        let valid = SubsampledGaussian {
            sampling_rate: 0.01,
            noise_multiplier: 1.0,
            num_steps: 10,
        };
        let message = invalid_privacy_message(
            SubsampledGaussian {
                sampling_rate: 1.5,
                ..valid
            }
            .validate(),
        );
        assert_eq!(message, "sampling_rate is 1.5, must be in [0, 1]");
        let message = invalid_privacy_message(
            SubsampledGaussian {
                noise_multiplier: 0.0,
                ..valid
            }
            .validate(),
        );
        assert_eq!(
            message,
            "noise_multiplier is 0, must be finite and positive"
        );
        let message = invalid_privacy_message(
            SubsampledGaussian {
                noise_multiplier: f64::NAN,
                ..valid
            }
            .validate(),
        );
        assert_eq!(
            message,
            "noise_multiplier is NaN, must be finite and positive"
        );
        let message = invalid_privacy_message(epsilon(
            &SubsampledGaussian {
                sampling_rate: f64::NAN,
                ..valid
            },
            DELTA,
        ));
        assert!(message.starts_with("sampling_rate is NaN"), "{message}");

        let accountant = RdpAccountant::new();
        for bad_delta in [0.0, 1.0, f64::NAN, -1e-5] {
            let message = invalid_privacy_message(accountant.epsilon(bad_delta, Conversion::Tight));
            assert!(message.starts_with("delta is "), "{message}");
        }
        assert_eq!(
            invalid_privacy_message(epsilon(&valid, 0.0)),
            "delta is 0, must be in (0, 1)"
        );
        assert_eq!(
            invalid_privacy_message(epsilon(&valid, 1.0)),
            "delta is 1, must be in (0, 1)"
        );

        let message = invalid_privacy_message(calibrate_noise_multiplier(0.01, 100, -1.0, DELTA));
        assert_eq!(message, "target_epsilon is -1, must be finite and positive");
        for bad_target in [0.0, f64::NAN, f64::INFINITY] {
            let message =
                invalid_privacy_message(calibrate_noise_multiplier(0.01, 100, bad_target, DELTA));
            assert!(message.starts_with("target_epsilon is "), "{message}");
        }
        let message = invalid_privacy_message(calibrate_noise_multiplier(1.5, 100, 1.0, DELTA));
        assert!(message.starts_with("sampling_rate is 1.5"), "{message}");
        let message = invalid_privacy_message(calibrate_noise_multiplier(0.01, 100, 1.0, 0.0));
        assert!(message.starts_with("delta is 0"), "{message}");
        let message =
            invalid_privacy_message(calibrate_noise_multiplier(1.0, 1_000_000, 1e-6, DELTA));
        assert!(message.contains("target_epsilon is 0.000001"), "{message}");

        for bad_orders in [
            vec![],
            vec![2.0, 1.0],
            vec![0.5],
            vec![f64::NAN],
            vec![f64::INFINITY],
        ] {
            let message = invalid_privacy_message(RdpAccountant::with_orders(bad_orders));
            assert!(message.starts_with("order"), "{message}");
        }
    }

    #[test]
    fn calibration_meets_the_abadi_mnist_epsilon_with_sigma_near_1_1() {
        let sampling_rate = 256.0 / 60_000.0;
        let target = spent(sampling_rate, 1.1, 14_063, Conversion::Tight).epsilon;
        let sigma =
            calibrate_noise_multiplier(sampling_rate, 14_063, target, DELTA).expect("reachable");
        assert!((1.1..=1.1 * (1.0 + 1e-4)).contains(&sigma), "σ = {sigma}");
    }

    #[test]
    fn calibration_returns_the_floor_when_nothing_is_spent() {
        let sigma = calibrate_noise_multiplier(0.0, 100, 1.0, DELTA).expect("reachable");
        assert_eq!(sigma, MIN_CALIBRATED_NOISE_MULTIPLIER);
        let sigma = calibrate_noise_multiplier(0.3, 0, 1.0, DELTA).expect("reachable");
        assert_eq!(sigma, MIN_CALIBRATED_NOISE_MULTIPLIER);
    }

    /// Prints the cost of one ε and one calibration; run with
    /// `cargo test --release -p fedshield-core accountant -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing report, run in release"]
    fn timing_of_one_epsilon_and_one_calibration() {
        let mechanism = SubsampledGaussian {
            sampling_rate: 256.0 / 60_000.0,
            noise_multiplier: 1.1,
            num_steps: 14_063,
        };
        let num_repeats = 100;
        let started = Instant::now();
        for _ in 0..num_repeats {
            std::hint::black_box(epsilon(std::hint::black_box(&mechanism), DELTA).expect("valid"));
        }
        let per_epsilon = started.elapsed() / num_repeats;
        let started = Instant::now();
        let sigma =
            calibrate_noise_multiplier(256.0 / 60_000.0, 14_063, 2.0, DELTA).expect("reachable");
        let calibration = started.elapsed();
        println!("one epsilon: {per_epsilon:?}; one calibration: {calibration:?} (σ = {sigma})");
        for sampling_rate in [0.01, 0.1, 0.5, 0.9] {
            for sigma in [0.5, 1.0, 10.0, 1000.0] {
                let started = Instant::now();
                let tight = epsilon(
                    &SubsampledGaussian {
                        sampling_rate,
                        noise_multiplier: sigma,
                        num_steps: 1000,
                    },
                    DELTA,
                )
                .expect("valid");
                println!(
                    "q {sampling_rate} σ {sigma}: ε {tight:.4} in {:?}",
                    started.elapsed()
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn epsilon_grows_with_steps_and_sampling_rate_and_falls_with_noise(
            sampling_rate in 1e-4..0.3f64,
            sampling_rate_factor in 1.0..3.0f64,
            sigma in 0.5..5.0f64,
            sigma_factor in 1.0..3.0f64,
            num_steps in 1..20_000u64,
            extra_steps in 0..20_000u64,
        ) {
            let base = spent(sampling_rate, sigma, num_steps, Conversion::Tight).epsilon;
            let more_steps = spent(sampling_rate, sigma, num_steps + extra_steps, Conversion::Tight).epsilon;
            let higher_rate = spent(
                (sampling_rate * sampling_rate_factor).min(1.0),
                sigma,
                num_steps,
                Conversion::Tight,
            )
            .epsilon;
            let more_noise = spent(sampling_rate, sigma * sigma_factor, num_steps, Conversion::Tight).epsilon;
            let slack = 1e-9 * (1.0 + base);
            prop_assert!(more_steps >= base - slack, "{more_steps} < {base}");
            prop_assert!(higher_rate >= base - slack, "{higher_rate} < {base}");
            prop_assert!(more_noise <= base + slack, "{more_noise} > {base}");
        }

        #[test]
        fn composing_two_runs_equals_one_run_of_their_summed_steps(
            sampling_rate in 1e-4..1.0f64,
            sigma in 0.3..10.0f64,
            first_steps in 0..50_000u64,
            second_steps in 0..50_000u64,
        ) {
            let run = |num_steps| SubsampledGaussian { sampling_rate, noise_multiplier: sigma, num_steps };
            let mut twice = RdpAccountant::new();
            twice.compose(&run(first_steps)).expect("valid mechanism");
            twice.compose(&run(second_steps)).expect("valid mechanism");
            let mut once = RdpAccountant::new();
            once.compose(&run(first_steps + second_steps)).expect("valid mechanism");
            for (composed, single) in twice.rdp().iter().zip(once.rdp()) {
                prop_assert!((composed - single).abs() <= 1e-12 * single.abs(), "{composed} vs {single}");
            }
            for conversion in [Conversion::Classic, Conversion::Tight] {
                let composed = twice.epsilon(DELTA, conversion).expect("valid delta").epsilon;
                let single = once.epsilon(DELTA, conversion).expect("valid delta").epsilon;
                prop_assert!((composed - single).abs() <= 1e-12 * single.abs(), "{composed} vs {single}");
            }
        }

        #[test]
        fn calibrated_noise_multiplier_meets_the_target_tightly(
            sampling_rate in 1e-3..0.1f64,
            num_steps in 1..5_000u64,
            target_epsilon in 0.5..10.0f64,
        ) {
            let sigma = calibrate_noise_multiplier(sampling_rate, num_steps, target_epsilon, DELTA)
                .expect("reachable target");
            let epsilon_at = |noise_multiplier| {
                epsilon(&SubsampledGaussian { sampling_rate, noise_multiplier, num_steps }, DELTA)
                    .expect("valid mechanism")
            };
            prop_assert!(epsilon_at(sigma) <= target_epsilon);
            prop_assert!(epsilon_at(sigma * (1.0 - 1e-3)) > target_epsilon, "σ = {sigma} is not tight");
        }

        #[test]
        fn arbitrary_inputs_never_panic_nor_give_nan(
            sampling_rate in prop_oneof![Just(f64::NAN), Just(0.0), Just(1.0), -1.0..2.0f64, 1e-300..1e-3f64],
            noise_multiplier in prop_oneof![Just(f64::NAN), Just(0.0), Just(f64::INFINITY), 1e-300..1e-3f64, 1e-3..1e6f64],
            num_steps in prop_oneof![Just(0u64), Just(u64::MAX), 1..1_000_000u64],
            delta in prop_oneof![Just(f64::NAN), -1.0..2.0f64, 1e-300..1e-3f64],
        ) {
            let mechanism = SubsampledGaussian { sampling_rate, noise_multiplier, num_steps };
            let mut accountant = RdpAccountant::new();
            if accountant.compose(&mechanism).is_ok() {
                prop_assert!(accountant.rdp().iter().all(|rdp| *rdp >= 0.0));
                for conversion in [Conversion::Classic, Conversion::Tight] {
                    if let Ok(spent) = accountant.epsilon(delta, conversion) {
                        prop_assert!(spent.epsilon >= 0.0, "{spent:?}");
                    }
                }
            }
        }
    }
}
