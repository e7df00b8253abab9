//! The coordinate-wise median, unweighted (Yin et al. 2018); with an even
//! number of updates, the mean of the two middle values.

use crate::aggregation::kernels::coordinate_wise;

/// With 1 or 2 updates there is no majority to outvote one poisoner.
pub(super) const MIN_UPDATES: usize = 3;

/// Returns `base + the coordinate-wise median of the deltas`. The median is
/// the trimmed mean that keeps only the middle value (odd K) or the two
/// middle values (even K).
pub(super) fn aggregate(base: &[f32], deltas: &[Vec<f32>]) -> Vec<f32> {
    let num_trimmed = (deltas.len() - 1) / 2;
    coordinate_wise(base, deltas, num_trimmed)
}
