//! The conversion of a Rényi-DP curve into an (ε, δ) guarantee, at one
//! order: the classic bound (Mironov 2017) and the tight one (Balle et al.
//! 2020; Canonne, Kamath, Steinke 2020). [`super::RdpAccountant::epsilon`]
//! takes the best order.

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

/// Returns the ε of the classic conversion at one order (Mironov 2017,
/// Proposition 3): `rdp + ln(1/δ)/(α − 1)`.
pub(super) fn classic_epsilon(order: f64, rdp: f64, log_delta: f64) -> f64 {
    (rdp - log_delta / (order - 1.0)).max(0.0)
}

/// Returns the ε of the tight conversion at one order (Balle et al. 2020;
/// Canonne, Kamath, Steinke 2020), as TF Privacy's `compute_eps`.
pub(super) fn tight_epsilon(order: f64, rdp: f64, delta: f64, log_delta: f64) -> f64 {
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
