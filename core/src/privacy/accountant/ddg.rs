//! Privacy of the distributed discrete Gaussian (Kairouz, Liu, Steinke,
//! "The Distributed Discrete Gaussian Mechanism for Federated Learning with
//! Secure Aggregation", ICML 2021, <https://arxiv.org/abs/2102.06387>).
//!
//! `n` participants each add `N_Z(0, σ²)` per coordinate to a `d`-dimensional
//! integer vector; the sum of their noise is not a discrete Gaussian, but is
//! close to `N_Z(0, nσ²)`: with
//! `τ = 10 · Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1))` (their Theorem 1), the
//! released sum satisfies, at every order α > 1 (their Proposition 14, as
//! the paper's reference code `compute_rdp_dgaussian` in
//! google-research/federated `distributed_dp/accounting_utils.py` evaluates
//! it), with `a = Δ₂/(√n·σ)` and `b = Δ₁/(√n·σ)`:
//!
//! `D_α ≤ min( α·a²/2 + τ·d, (α/2)·(a² + 2·b·τ + τ²·d), (α/2)·(a + τ·√d)² )`.
//!
//! [`ddg_rdp`] is that curve. [`ddg_rho`] is the ρ-zCDP (`D_α ≤ α·ρ` for all
//! α > 1) it implies: the last two terms are already of that form, and the
//! first is at most `α·(a²/2 + τ·d)` for α ≥ 1. For `n = 1`, τ = 0 and ρ is
//! the discrete Gaussian's `Δ₂²/(2σ²)` (Canonne, Kamath, Steinke 2020,
//! Theorem 4). Sensitivities and σ² are in the same (integer) units.

use std::f64::consts::PI;

use super::{Conversion, RdpAccountant};
use crate::error::{CoreError, Result};
use crate::units::Delta;

/// Calibration never looks below this per-participant variance.
const MIN_CALIBRATED_VARIANCE: f64 = 1e-2;

/// Calibration fails if this per-participant variance does not reach the target.
const MAX_CALIBRATED_VARIANCE: f64 = 1e20;

/// Calibration stops when its bracket is this narrow, relatively.
const CALIBRATION_RELATIVE_TOLERANCE: f64 = 1e-6;

/// Returns τ of Kairouz et al. Theorem 1:
/// `10 · Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1))`, 0 for a single participant.
pub fn ddg_tau(sigma_squared: f64, num_participants: u64) -> f64 {
    let mut sum = 0.0;
    for k in 1..num_participants {
        let ratio = k as f64 / (k + 1) as f64;
        let term = (-2.0 * PI * PI * sigma_squared * ratio).exp();
        sum += term;
        if term == 0.0 {
            // Every later term is smaller still (k/(k+1) grows).
            break;
        }
    }
    10.0 * sum
}

/// Returns the RDP at `order` of one release of the sum (the module doc's
/// bound), `+∞` for a non-positive variance or no participants.
pub fn ddg_rdp(
    order: f64,
    l2_sensitivity: f64,
    l1_sensitivity: f64,
    sigma_squared: f64,
    num_participants: u64,
    dim: usize,
) -> f64 {
    let Some((l2_scale, l1_scale, tau)) = scales(
        l2_sensitivity,
        l1_sensitivity,
        sigma_squared,
        num_participants,
    ) else {
        return f64::INFINITY;
    };
    let dim = dim as f64;
    let additive = order * l2_scale * l2_scale / 2.0 + tau * dim;
    let with_l1 = order / 2.0 * (l2_scale * l2_scale + 2.0 * l1_scale * tau + tau * tau * dim);
    let shifted = order / 2.0 * (l2_scale + dim.sqrt() * tau).powi(2);
    additive.min(with_l1).min(shifted)
}

/// Returns `(Δ₂/(√n·σ), Δ₁/(√n·σ), τ)`, `None` for a non-positive variance
/// or no participants.
fn scales(
    l2_sensitivity: f64,
    l1_sensitivity: f64,
    sigma_squared: f64,
    num_participants: u64,
) -> Option<(f64, f64, f64)> {
    if sigma_squared.is_nan() || sigma_squared <= 0.0 || num_participants == 0 {
        return None;
    }
    let total_stddev = (num_participants as f64 * sigma_squared).sqrt();
    Some((
        l2_sensitivity / total_stddev,
        l1_sensitivity / total_stddev,
        ddg_tau(sigma_squared, num_participants),
    ))
}

/// Returns ρ such that one release of the sum of `num_participants`
/// participants' `N_Z(0, sigma_squared)` noise over `dim` coordinates is
/// ρ-zCDP (`ρ = ε²/2`): `min(a²/2 + τd, (a² + 2bτ + τ²d)/2, (a + τ√d)²/2)`
/// with the module doc's `a`, `b`, τ; `+∞` for a non-positive variance or no
/// participants.
pub fn ddg_rho(
    l2_sensitivity: f64,
    l1_sensitivity: f64,
    sigma_squared: f64,
    num_participants: u64,
    dim: usize,
) -> f64 {
    let Some((l2_scale, l1_scale, tau)) = scales(
        l2_sensitivity,
        l1_sensitivity,
        sigma_squared,
        num_participants,
    ) else {
        return f64::INFINITY;
    };
    let dim = dim as f64;
    let additive = l2_scale * l2_scale / 2.0 + tau * dim;
    let with_l1 = (l2_scale * l2_scale + 2.0 * l1_scale * tau + tau * tau * dim) / 2.0;
    let shifted = (l2_scale + dim.sqrt() * tau).powi(2) / 2.0;
    additive.min(with_l1).min(shifted)
}

/// Returns the ε at `delta` of `num_rounds` releases, each ρ-zCDP with
/// `ρ = rho_per_round`: the RDP curve `α·ρ·num_rounds` over the accountant's
/// [`super::default_orders`], converted with the tight conversion. It is
/// never above the closed form `ρT + 2·sqrt(ρT·ln(1/δ))` (Bun, Steinke 2016,
/// Proposition 1.3) by more than the order grid's coarseness.
///
/// # Errors
/// [`CoreError::InvalidPrivacy`] if `rho_per_round` is negative or NaN, or
/// `delta` is not in (0, [`crate::units::MAX_DELTA`]].
pub fn ddg_epsilon(rho_per_round: f64, num_rounds: u64, delta: f64) -> Result<f64> {
    Delta::new(delta)?;
    if rho_per_round.is_nan() || rho_per_round < 0.0 {
        return Err(CoreError::InvalidPrivacy(format!(
            "rho_per_round is {rho_per_round}, must be non-negative"
        )));
    }
    let mut accountant = RdpAccountant::new();
    let total_rho = rho_per_round * num_rounds as f64;
    for (rdp, order) in accountant.rdp.iter_mut().zip(&accountant.orders) {
        *rdp = order * total_rho;
    }
    Ok(accountant.epsilon(delta, Conversion::Tight)?.epsilon)
}

/// Returns the smallest per-participant variance σ² (integer units) such
/// that `num_rounds` releases of the sum of `num_participants` participants'
/// noise meet `target_epsilon` at `delta`, as [`ddg_rho`] and
/// [`ddg_epsilon`] account it.
///
/// Bisects `ln σ²` over [1e-2, 1e20] until the bracket is narrower than
/// 1e-6 relatively and returns its upper end, which always meets the target.
///
/// # Errors
/// [`CoreError::InvalidPrivacy`] if `target_epsilon` is not finite and
/// positive, `delta` is invalid, `num_participants` is 0, a sensitivity is
/// not finite and positive, or no σ² ≤ 1e20 reaches the target.
pub fn calibrate_ddg_variance(
    target_epsilon: f64,
    delta: f64,
    num_rounds: u64,
    num_participants: u64,
    dim: usize,
    l2_sensitivity: f64,
    l1_sensitivity: f64,
) -> Result<f64> {
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(CoreError::InvalidPrivacy(format!(
            "target_epsilon is {target_epsilon}, must be finite and positive"
        )));
    }
    Delta::new(delta)?;
    if num_participants == 0 {
        return Err(CoreError::InvalidPrivacy(
            "num_participants is 0, must be at least 1".to_string(),
        ));
    }
    for (name, value) in [
        ("l2_sensitivity", l2_sensitivity),
        ("l1_sensitivity", l1_sensitivity),
    ] {
        if !(value.is_finite() && value > 0.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "{name} is {value}, must be finite and positive"
            )));
        }
    }
    let epsilon_at = |sigma_squared: f64| {
        let rho = ddg_rho(
            l2_sensitivity,
            l1_sensitivity,
            sigma_squared,
            num_participants,
            dim,
        );
        ddg_epsilon(rho, num_rounds, delta)
    };
    // Invariant: ε(variance_high) ≤ target < ε(variance_low).
    let mut variance_high = MAX_CALIBRATED_VARIANCE;
    if epsilon_at(variance_high)? > target_epsilon {
        return Err(CoreError::InvalidPrivacy(format!(
            "target_epsilon is {target_epsilon}, which no variance up to \
             {MAX_CALIBRATED_VARIANCE} reaches (num_rounds {num_rounds}, num_participants \
             {num_participants}, dim {dim}, delta {delta})"
        )));
    }
    let mut variance_low = MIN_CALIBRATED_VARIANCE;
    if epsilon_at(variance_low)? <= target_epsilon {
        return Ok(variance_low);
    }
    while variance_high > variance_low * (1.0 + CALIBRATION_RELATIVE_TOLERANCE) {
        let variance_mid = (0.5 * (variance_low.ln() + variance_high.ln())).exp();
        if !(variance_mid > variance_low && variance_mid < variance_high) {
            break;
        }
        if epsilon_at(variance_mid)? <= target_epsilon {
            variance_high = variance_mid;
        } else {
            variance_low = variance_mid;
        }
    }
    Ok(variance_high)
}
