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

//!
//! - `rdp`: the RDP of one run of the subsampled Gaussian ([`SubsampledGaussian`]).
//! - `conversion`: RDP → (ε, δ), classic and tight ([`Conversion`]).
//! - `ddg`: the distributed discrete Gaussian under secure aggregation ([`ddg_rho`], [`ddg_epsilon`], [`calibrate_ddg_variance`]).
//! - `calibration`: the noise multiplier that meets a target ([`calibrate_noise_multiplier`]).

mod calibration;
mod conversion;
mod ddg;
mod rdp;
#[cfg(test)]
mod tests;

pub use calibration::calibrate_noise_multiplier;
pub use conversion::{Conversion, PrivacySpent};
pub use ddg::{calibrate_ddg_variance, ddg_epsilon, ddg_rdp, ddg_rho, ddg_tau};
pub use rdp::SubsampledGaussian;

use crate::error::{CoreError, Result};
use crate::units::Delta;
use conversion::{classic_epsilon, tight_epsilon};

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
    /// [`CoreError::InvalidPrivacy`] if `delta` is not in (0, [`crate::units::MAX_DELTA`]].
    pub fn epsilon(&self, delta: f64, conversion: Conversion) -> Result<PrivacySpent> {
        Delta::new(delta)?;
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
    Delta::new(delta)?;
    let mut accountant = RdpAccountant::new();
    accountant.compose(mechanism)?;
    let spent = accountant.epsilon(delta, Conversion::Tight)?;
    Ok(spent.epsilon)
}
