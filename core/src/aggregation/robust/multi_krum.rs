//! Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries:
//! Byzantine Tolerant Gradient Descent", NeurIPS): each update is scored by
//! the sum of squared L2 distances to its K−f−2 nearest other updates; the
//! `num_selected` lowest-scoring (default K−f) are averaged, weighted.

use super::invalid;
use crate::aggregation::kernels::{
    BLOCK_COORDS, map_ranges_in_parallel, squared_distance, weighted_mean,
};
use crate::error::Result;

/// Checks f (2f+3 must not overflow) and m (at least 1 when given).
pub(super) fn validate(num_byzantine: usize, num_selected: Option<usize>) -> Result<()> {
    if krum_min_updates(num_byzantine).is_none() {
        return Err(invalid(format!(
            "multi-krum num_byzantine is too large, got {num_byzantine}"
        )));
    }
    if num_selected == Some(0) {
        return Err(invalid(
            "multi-krum num_selected must be at least 1, got 0".to_string(),
        ));
    }
    Ok(())
}

/// Returns 2f+3 (Blanchard et al.'s condition), and at least `num_selected`;
/// `usize::MAX` when 2f+3 overflows.
pub(super) fn min_updates(num_byzantine: usize, num_selected: Option<usize>) -> usize {
    krum_min_updates(num_byzantine)
        .unwrap_or(usize::MAX)
        .max(num_selected.unwrap_or(0))
}

/// Returns Multi-Krum's parameters and the arrival indices it rejected,
/// averaging `num_selected` updates (K−f when absent).
///
/// The caller has checked K ≥ 2f+3 and m ≤ K.
pub(super) fn aggregate(
    base: &[f32],
    deltas: &[Vec<f32>],
    weights: &[f64],
    num_byzantine: usize,
    num_selected: Option<usize>,
) -> (Vec<f32>, Vec<usize>) {
    let num_averaged = num_selected.unwrap_or(deltas.len() - num_byzantine);
    multi_krum(base, deltas, weights, num_byzantine, num_averaged)
}

/// Returns 2f+3, or None when it overflows.
fn krum_min_updates(num_byzantine: usize) -> Option<usize> {
    num_byzantine.checked_mul(2)?.checked_add(3)
}

/// Returns Multi-Krum's parameters and the arrival indices it rejected.
///
/// The caller has checked K ≥ 2f+3 and m ≤ K.
fn multi_krum(
    base: &[f32],
    deltas: &[Vec<f32>],
    weights: &[f64],
    num_byzantine: usize,
    num_selected: usize,
) -> (Vec<f32>, Vec<usize>) {
    let num_updates = deltas.len();
    let distances = pairwise_squared_distances(deltas, base.len());
    // Score: sum of squared distances to the K−f−2 nearest other updates.
    let num_neighbours = num_updates - num_byzantine - 2;
    let mut others = Vec::with_capacity(num_updates - 1);
    let scores: Vec<f64> = (0..num_updates)
        .map(|update_index| {
            others.clear();
            others.extend(
                (0..num_updates)
                    .filter(|other| *other != update_index)
                    .map(|other| distances[update_index * num_updates + other]),
            );
            others.select_nth_unstable_by(num_neighbours - 1, f64::total_cmp);
            others[..num_neighbours].iter().sum()
        })
        .collect();
    // Lowest scores first; ties go to the earlier arrival, so the outcome is deterministic.
    let mut ranking: Vec<usize> = (0..num_updates).collect();
    ranking.sort_by(|left, right| {
        scores[*left]
            .total_cmp(&scores[*right])
            .then(left.cmp(right))
    });
    let (selected, rejected) = ranking.split_at(num_selected);
    let mut selected = selected.to_vec();
    selected.sort_unstable();
    let mut rejected = rejected.to_vec();
    rejected.sort_unstable();
    let params = weighted_mean(base, deltas, weights, &selected);
    (params, rejected)
}

/// Returns the K×K (row-major, symmetric) matrix of squared L2 distances
/// between the deltas, accumulated in f64 block by block so each block of the
/// K deltas is read from cache K−1 times rather than from memory.
fn pairwise_squared_distances(deltas: &[Vec<f32>], num_params: usize) -> Vec<f64> {
    let num_updates = deltas.len();
    let partial_matrices = map_ranges_in_parallel(num_params, |range| {
        let mut distances = vec![0.0f64; num_updates * num_updates];
        let mut block_start = range.start;
        while block_start < range.end {
            let block = block_start..(block_start + BLOCK_COORDS).min(range.end);
            for left in 0..num_updates {
                for right in left + 1..num_updates {
                    distances[left * num_updates + right] += squared_distance(
                        &deltas[left][block.clone()],
                        &deltas[right][block.clone()],
                    );
                }
            }
            block_start = block.end;
        }
        distances
    });
    let mut distances = vec![0.0f64; num_updates * num_updates];
    for partial in partial_matrices {
        for (total, value) in distances.iter_mut().zip(partial) {
            *total += value;
        }
    }
    for left in 0..num_updates {
        for right in left + 1..num_updates {
            distances[right * num_updates + left] = distances[left * num_updates + right];
        }
    }
    distances
}
