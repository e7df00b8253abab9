//! The noisy SGD step of DP-SGD: the clipped sums plus Gaussian noise,
//! scaled by the learning rate over the public expected batch size.

use burn::tensor::{Tensor, TensorData};
use rand::{CryptoRng, Rng};

use super::clipping::ClippedSums;
use super::layers::DenseLayer;
use super::{DEVICE, DpBackend};
use crate::privacy::noise::add_gaussian_noise;

/// Takes one SGD step on `layers` with `(clipped_sums + noise) · step_scale`,
/// the noise being N(0, noise_std²) per coordinate; with no clipped sums
/// (an empty sample) the step is noise alone.
pub(super) fn apply_noisy_step<R: Rng + CryptoRng + ?Sized>(
    layers: Vec<DenseLayer>,
    clipped_sums: Option<ClippedSums>,
    noise_std: f64,
    step_scale: f64,
    decay_factor: f64,
    rng: &mut R,
) -> Vec<DenseLayer> {
    let mut clipped_sums = clipped_sums.map(Vec::into_iter);
    // The layers are moved, not cloned, so that the backend updates their
    // tensors in place.
    layers
        .into_iter()
        .map(|DenseLayer { weight, bias }| {
            // Weight decay (θ ← θ·(1 − lr·λ)) does not depend on the data,
            // so it costs no privacy.
            let (weight, bias) = if decay_factor == 1.0 {
                (weight, bias)
            } else {
                (
                    weight.mul_scalar(decay_factor),
                    bias.mul_scalar(decay_factor),
                )
            };
            let (weight_sum, bias_sum) = clipped_sums.as_mut().and_then(Iterator::next).unzip();
            let weight_noise = gaussian_tensor(weight.dims(), noise_std, rng); // [d_in, d_out]
            let bias_noise = gaussian_tensor(bias.dims(), noise_std, rng); // [d_out]
            DenseLayer {
                weight: match sum_of_present(weight_sum, weight_noise) {
                    Some(step) => weight - step.mul_scalar(step_scale),
                    None => weight,
                },
                bias: match sum_of_present(bias_sum, bias_noise) {
                    Some(step) => bias - step.mul_scalar(step_scale),
                    None => bias,
                },
            }
        })
        .collect()
}

/// Returns `first + second`, either alone if the other is absent, or none.
fn sum_of_present<const D: usize>(
    first: Option<Tensor<DpBackend, D>>,
    second: Option<Tensor<DpBackend, D>>,
) -> Option<Tensor<DpBackend, D>> {
    match (first, second) {
        (Some(first), Some(second)) => Some(first + second),
        (first, second) => first.or(second),
    }
}

/// Returns a tensor of N(0, std²) draws, or none when `std` is 0.
fn gaussian_tensor<const D: usize, R: Rng + CryptoRng + ?Sized>(
    shape: [usize; D],
    std: f64,
    rng: &mut R,
) -> Option<Tensor<DpBackend, D>> {
    if std == 0.0 {
        return None;
    }
    let mut values = vec![0.0f32; shape.iter().product()];
    add_gaussian_noise(&mut values, std, rng);
    Some(Tensor::from_data(TensorData::new(values, shape), &DEVICE))
}
