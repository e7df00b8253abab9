//! The randomized Hadamard rotation `x ↦ H·D·x/√d` that flattens an update
//! before quantization (Kairouz, Liu, Steinke 2021, §4.2): `D` is a diagonal
//! of random signs drawn from ChaCha20 seeded by a seed every participant of
//! the round shares, `H` the Walsh–Hadamard matrix of size `d`, a power of
//! two. `H/√d` is symmetric and orthogonal, so the rotation keeps L2 norms
//! and its inverse is `D·H·y/√d`. After it, each coordinate of a vector of
//! norm `S` is about `S/√d` with subgaussian tails, so few bits are wasted on
//! outliers and the modular sum rarely wraps.

use rand::rngs::ChaCha20Rng;
use rand::{Rng, SeedableRng};

/// Returns the dimension a vector of `num_params` values is padded to: the
/// smallest power of two ≥ `num_params`, at least 1.
pub fn padded_dim(num_params: usize) -> usize {
    num_params.max(1).next_power_of_two()
}

/// Multiplies each value by its sign from `D` (ChaCha20 from `seed`, one bit
/// per coordinate, 64 coordinates per `u64`).
fn apply_signs(values: &mut [f64], seed: &[u8; 32]) {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    for chunk in values.chunks_mut(64) {
        let bits = rng.next_u64();
        for (index, value) in chunk.iter_mut().enumerate() {
            if (bits >> index) & 1 == 1 {
                *value = -*value;
            }
        }
    }
}

/// Applies the unnormalized Walsh–Hadamard transform in place, O(d log d).
fn walsh_hadamard(values: &mut [f64]) {
    let len = values.len();
    let mut half = 1;
    while half < len {
        for block in values.chunks_mut(2 * half) {
            let (left, right) = block.split_at_mut(half);
            for (a, b) in left.iter_mut().zip(right.iter_mut()) {
                let sum = *a + *b;
                let difference = *a - *b;
                *a = sum;
                *b = difference;
            }
        }
        half *= 2;
    }
}

fn scale_by_inverse_sqrt_len(values: &mut [f64]) {
    let factor = 1.0 / (values.len() as f64).sqrt();
    for value in values {
        *value *= factor;
    }
}

/// Rotates `values` in place: `x ← H·D·x/√d`.
///
/// # Panics
/// If `values.len()` is not a power of two (see [`padded_dim`]).
pub fn rotate(values: &mut [f64], seed: &[u8; 32]) {
    assert!(
        values.len().is_power_of_two(),
        "rotation length {} is not a power of two",
        values.len()
    );
    apply_signs(values, seed);
    walsh_hadamard(values);
    scale_by_inverse_sqrt_len(values);
}

/// Undoes [`rotate`] in place: `y ← D·H·y/√d`.
///
/// # Panics
/// If `values.len()` is not a power of two.
pub fn unrotate(values: &mut [f64], seed: &[u8; 32]) {
    assert!(
        values.len().is_power_of_two(),
        "rotation length {} is not a power of two",
        values.len()
    );
    walsh_hadamard(values);
    scale_by_inverse_sqrt_len(values);
    apply_signs(values, seed);
}
