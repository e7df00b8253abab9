//! Kernels the robust rules share: f64 norms and distances, Batcher's
//! sorting network and the coordinate-wise trimmed mean built on it, the
//! weighted mean of selected updates, and the split of a model's coordinates
//! over scoped threads, block by block.

use std::num::NonZeroUsize;
use std::ops::Range;

use crate::error::{CoreError, Result};

/// Coordinates processed together: one block of the K updates (K·4 KiB) stays
/// in the core's L2 cache while it is sorted or compared.
pub(super) const BLOCK_COORDS: usize = 1024;

/// Below this many coordinates per thread, spawning threads costs more than it saves.
pub(super) const MIN_COORDS_PER_THREAD: usize = 1 << 16;

/// Returns Σ vᵢ² in f64, or the first non-finite value as an error.
///
/// A float32 squared is at most ~1.2e77, so the f64 sum of any realistic
/// number of them is finite exactly when every value is.
pub(super) fn finite_squared_norm(values: &[f32]) -> Result<f64> {
    const LANES: usize = 8;
    let mut accumulators = [0.0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let remainder = chunks.remainder();
    for chunk in chunks {
        for (accumulator, value) in accumulators.iter_mut().zip(chunk) {
            let wide_value = f64::from(*value);
            *accumulator += wide_value * wide_value;
        }
    }
    let mut squared_norm: f64 = accumulators.iter().sum();
    for value in remainder {
        squared_norm += f64::from(*value) * f64::from(*value);
    }
    if squared_norm.is_finite() {
        return Ok(squared_norm);
    }
    let (index, value) = values
        .iter()
        .enumerate()
        .find(|(_, value)| !value.is_finite())
        .expect("a non-finite sum of squares has a non-finite term");
    Err(CoreError::NonFiniteParam {
        index: index as u64,
        value: *value,
    })
}

/// Returns Σ (aᵢ − bᵢ)² in f64.
pub(super) fn squared_distance(left: &[f32], right: &[f32]) -> f64 {
    const LANES: usize = 8;
    let mut accumulators = [0.0f64; LANES];
    let left_chunks = left.chunks_exact(LANES);
    let right_chunks = right.chunks_exact(LANES);
    let tail = left_chunks.remainder().iter().zip(right_chunks.remainder());
    for (left_chunk, right_chunk) in left_chunks.zip(right_chunks) {
        for lane in 0..LANES {
            let difference = f64::from(left_chunk[lane]) - f64::from(right_chunk[lane]);
            accumulators[lane] += difference * difference;
        }
    }
    let mut total: f64 = accumulators.iter().sum();
    for (left_value, right_value) in tail {
        let difference = f64::from(*left_value) - f64::from(*right_value);
        total += difference * difference;
    }
    total
}

/// Returns the comparators `(lower, upper)` of Batcher's odd–even merge sort
/// network for `num_values` inputs (Batcher 1968, "Sorting networks and their
/// applications"; Knuth, TAOCP vol. 3, §5.3.4): applying "put the smaller at
/// `lower`, the larger at `upper`" in this order sorts any input. For a number
/// of inputs that is not a power of two it is the next power's network without
/// the comparators that touch the (virtual, +∞) padding. About K·log²K/4
/// comparators: 19 for K = 8, 191 for K = 32.
pub(super) fn sorting_network(num_values: usize) -> Vec<(usize, usize)> {
    let mut comparators = Vec::new();
    let mut merge_size = 1;
    while merge_size < num_values {
        let mut distance = merge_size;
        while distance > 0 {
            let mut offset = distance % merge_size;
            while offset + distance < num_values {
                for index in offset..(offset + distance).min(num_values - distance) {
                    // Only compare within one pair of merged runs.
                    if index / (2 * merge_size) == (index + distance) / (2 * merge_size) {
                        comparators.push((index, index + distance));
                    }
                }
                offset += 2 * distance;
            }
            distance /= 2;
        }
        merge_size *= 2;
    }
    comparators
}

/// Puts the element-wise minimum of two rows in `lower` and the maximum in
/// `upper`. Values are finite (checked on `add`), so a plain comparison is a
/// total order here, and it compiles to vector min/max.
pub(super) fn compare_exchange(lower: &mut [f32], upper: &mut [f32]) {
    for (low, high) in lower.iter_mut().zip(upper.iter_mut()) {
        let (smaller, larger) = if *high < *low {
            (*high, *low)
        } else {
            (*low, *high)
        };
        *low = smaller;
        *high = larger;
    }
}

/// Returns `base + the coordinate-wise trimmed mean of the deltas`: per
/// coordinate, the unweighted mean of the K values left after dropping the
/// `num_trimmed` smallest and `num_trimmed` largest (2·`num_trimmed` < K).
///
/// Works block by block: the block's slice of each delta is copied into one
/// row of a per-thread scratch buffer, the sorting network sorts every column
/// (coordinate) at once, and the kept middle rows are summed in f64. Nothing is
/// allocated per coordinate.
pub(super) fn coordinate_wise(base: &[f32], deltas: &[Vec<f32>], num_trimmed: usize) -> Vec<f32> {
    let num_updates = deltas.len();
    let kept_rows = num_trimmed..num_updates - num_trimmed;
    let inverse_num_kept = 1.0 / kept_rows.len() as f64;
    let comparators = sorting_network(num_updates);
    let mut params = vec![0.0f32; base.len()];
    fill_in_parallel(&mut params, |range_start, range_params| {
        // Row k holds delta k's values in the block: [K × BLOCK_COORDS].
        let mut scratch = vec![0.0f32; num_updates * BLOCK_COORDS];
        let mut sums = vec![0.0f64; BLOCK_COORDS];
        for (block_index, block_params) in range_params.chunks_mut(BLOCK_COORDS).enumerate() {
            let block_start = range_start + block_index * BLOCK_COORDS;
            let block_len = block_params.len();
            let block = block_start..block_start + block_len;
            for (row, delta) in scratch.chunks_exact_mut(BLOCK_COORDS).zip(deltas) {
                row[..block_len].copy_from_slice(&delta[block.clone()]);
            }
            for (lower, upper) in &comparators {
                let (before_upper, from_upper) = scratch.split_at_mut(upper * BLOCK_COORDS);
                let lower_row = &mut before_upper[lower * BLOCK_COORDS..][..block_len];
                compare_exchange(lower_row, &mut from_upper[..block_len]);
            }
            // Each column is now sorted: rows [t, K − t) are the kept values.
            let block_sums = &mut sums[..block_len];
            block_sums.fill(0.0);
            for row in scratch
                .chunks_exact(BLOCK_COORDS)
                .take(kept_rows.end)
                .skip(kept_rows.start)
            {
                for (sum, value) in block_sums.iter_mut().zip(&row[..block_len]) {
                    *sum += f64::from(*value);
                }
            }
            for ((param, base_value), sum) in block_params
                .iter_mut()
                .zip(&base[block])
                .zip(block_sums.iter())
            {
                *param = base_value + (sum * inverse_num_kept) as f32;
            }
        }
    });
    params
}

/// Returns `base + Σ wᵢ·Δᵢ / Σ wᵢ` over the `selected` deltas, accumulated in f64.
pub(super) fn weighted_mean(
    base: &[f32],
    deltas: &[Vec<f32>],
    weights: &[f64],
    selected: &[usize],
) -> Vec<f32> {
    let total_weight: f64 = selected.iter().map(|index| weights[*index]).sum();
    let terms: Vec<(&[f32], f64)> = selected
        .iter()
        .map(|index| (deltas[*index].as_slice(), weights[*index] / total_weight))
        .collect();
    let mut params = vec![0.0f32; base.len()];
    fill_in_parallel(&mut params, |range_start, range_params| {
        let mut block_sums = vec![0.0f64; BLOCK_COORDS];
        for (block_index, block_params) in range_params.chunks_mut(BLOCK_COORDS).enumerate() {
            let block_start = range_start + block_index * BLOCK_COORDS;
            let block = block_start..block_start + block_params.len();
            let sums = &mut block_sums[..block_params.len()];
            sums.fill(0.0);
            for (delta, coefficient) in &terms {
                for (sum, value) in sums.iter_mut().zip(&delta[block.clone()]) {
                    *sum += coefficient * f64::from(*value);
                }
            }
            for ((param, base_value), sum) in
                block_params.iter_mut().zip(&base[block]).zip(sums.iter())
            {
                *param = base_value + *sum as f32;
            }
        }
    });
    params
}

/// Returns how many threads to split `num_params` coordinates over.
pub(super) fn num_threads_for(num_params: usize) -> usize {
    let num_cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    num_cores.min(num_params / MIN_COORDS_PER_THREAD).max(1)
}

/// Returns how many coordinates each thread takes: a whole number of blocks.
pub(super) fn coords_per_thread(num_params: usize, num_threads: usize) -> usize {
    num_params
        .div_ceil(num_threads)
        .next_multiple_of(BLOCK_COORDS)
        .max(1)
}

/// Calls `fill(start, part)` on consecutive parts of `out` (`start` is the
/// part's first coordinate), on scoped threads when `out` is large. The calling
/// thread takes the first part; a panic in any part propagates.
pub(super) fn fill_in_parallel(out: &mut [f32], fill: impl Fn(usize, &mut [f32]) + Sync) {
    let num_threads = num_threads_for(out.len());
    if num_threads == 1 {
        fill(0, out);
        return;
    }
    let part_len = coords_per_thread(out.len(), num_threads);
    std::thread::scope(|scope| {
        let mut parts = out.chunks_mut(part_len).enumerate();
        let first = parts.next();
        for (part_index, part) in parts {
            let fill = &fill;
            scope.spawn(move || fill(part_index * part_len, part));
        }
        if let Some((_, part)) = first {
            fill(0, part);
        }
    });
}

/// Returns `map(range)` for consecutive ranges covering `0..num_params`, on
/// scoped threads when there are many coordinates; a panic propagates.
pub(super) fn map_ranges_in_parallel<T: Send>(
    num_params: usize,
    map: impl Fn(Range<usize>) -> T + Sync,
) -> Vec<T> {
    let num_threads = num_threads_for(num_params);
    if num_threads == 1 {
        return vec![map(0..num_params)];
    }
    let part_len = coords_per_thread(num_params, num_threads);
    let ranges: Vec<Range<usize>> = (0..num_params)
        .step_by(part_len)
        .map(|start| start..(start + part_len).min(num_params))
        .collect();
    std::thread::scope(|scope| {
        let map = &map;
        let handles: Vec<_> = ranges[1..]
            .iter()
            .map(|range| {
                let range = range.clone();
                scope.spawn(move || map(range))
            })
            .collect();
        let mut results = vec![map(ranges[0].clone())];
        for handle in handles {
            match handle.join() {
                Ok(result) => results.push(result),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    })
}
