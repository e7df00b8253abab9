//! The coordinate-wise trimmed mean (Yin et al. 2018, "Byzantine-Robust
//! Distributed Learning: Towards Optimal Statistical Rates",
//! arXiv:1803.01498): per coordinate, drop the ⌊β·K⌋ largest and ⌊β·K⌋
//! smallest values and average the rest, unweighted.

use super::invalid;
use crate::aggregation::kernels::coordinate_wise;
use crate::error::Result;

/// Checks β: in [0, 0.5).
pub(super) fn validate(trim_fraction: f64) -> Result<()> {
    if (0.0..0.5).contains(&trim_fraction) {
        Ok(())
    } else {
        Err(invalid(format!(
            "trimmed-mean trim_fraction must be in [0, 0.5), got {trim_fraction}"
        )))
    }
}

/// Returns `base + the trimmed mean of the deltas`.
pub(super) fn aggregate(base: &[f32], deltas: &[Vec<f32>], trim_fraction: f64) -> Vec<f32> {
    let num_trimmed = trim_count(trim_fraction, deltas.len());
    coordinate_wise(base, deltas, num_trimmed)
}

/// Returns how many values the trimmed mean drops at each end of a coordinate
/// with `num_updates` values: ⌊β·K⌋, never so many that nothing is left.
pub(super) fn trim_count(trim_fraction: f64, num_updates: usize) -> usize {
    let num_trimmed = (trim_fraction * num_updates as f64).floor() as usize;
    num_trimmed.min(num_updates.saturating_sub(1) / 2)
}

/// Returns the smallest K with ⌊βK⌋ ≥ 1, computed with the same arithmetic as
/// [`trim_count`] so the two agree.
pub(super) fn min_updates(trim_fraction: f64) -> usize {
    if !(trim_fraction > 0.0 && trim_fraction < 0.5) {
        return 1;
    }
    let estimate = (1.0 / trim_fraction).ceil();
    if estimate >= 1e15 {
        return usize::MAX;
    }
    let mut num_updates = (estimate as usize).max(1);
    while num_updates > 1 && trim_count(trim_fraction, num_updates - 1) >= 1 {
        num_updates -= 1;
    }
    while trim_count(trim_fraction, num_updates) < 1 {
        num_updates += 1;
    }
    num_updates
}
