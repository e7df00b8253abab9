//! Per-example clipping with ghost norms: one explicit forward and backward
//! pass gives every example's gradient norm without materializing its
//! gradient, and the clipped sum of the weight gradients is one matrix
//! product `aᵀ (c ⊙ g)`.

use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Bool, Tensor, TensorData};

use super::layers::{Batch, DenseLayer, tensor_values};
use super::{DEVICE, DpBackend};
use crate::model::training::rows_kept_after_trim;

/// Added to per-example gradient norms before dividing by them, so that a
/// zero gradient gets clip factor 1 instead of a division by zero.
const NORM_EPSILON: f64 = 1e-12;
/// Returns per-example clip factors `min(1, C / ‖g_i‖)` from per-example
/// squared norms `‖g_i‖²`; a non-finite squared norm gets factor 0, so that
/// the example contributes nothing.
pub fn clip_factors(squared_norms: &[f32], clip_norm: f64) -> Vec<f32> {
    squared_norms
        .iter()
        .map(|&squared_norm| {
            if !squared_norm.is_finite() {
                return 0.0;
            }
            let norm = f64::from(squared_norm).max(0.0).sqrt();
            (clip_norm / (norm + NORM_EPSILON)).min(1.0) as f32
        })
        .collect()
}
/// The per-layer sums over a batch of the clipped per-example weight and
/// bias gradients.
pub(super) type ClippedSums = Vec<(Tensor<DpBackend, 2>, Tensor<DpBackend, 1>)>;

/// What the sampled examples of one step contribute.
pub(super) struct BatchContribution {
    /// The per-layer sums of the clipped per-example gradients.
    pub(super) clipped_sums: ClippedSums,
    /// The sum of the losses of the examples that contributed.
    pub(super) loss_sum: f64,
    /// Examples whose loss or gradient norm was non-finite, which contributed
    /// zero. Derived from raw data: local logs only.
    pub(super) num_non_finite_examples: u64,
    /// Examples whose loss is in `loss_sum`: those that contributed.
    pub(super) num_contributing: u64,
}

/// Returns the per-layer sums of the per-example gradients of `batch`, each
/// clipped to L2 norm `clip_norm`, and the sum of the per-example losses.
///
/// An example whose loss or gradient norm is non-finite (float32 overflow on
/// an extreme record) contributes zero, which clipping allows (its
/// contribution's norm, 0, is within `C`), so the step goes on and the
/// privacy analysis is unchanged; it is counted, not reported. Declining the
/// round instead would make whether a participant declines a non-private
/// function of one record.
///
/// With `trim_fraction > 0` (autoencoders), the [`num_trimmed`] examples
/// with the highest losses also contribute zero, and every other one is
/// clipped to `clip_norm / 2`. Adding or removing one record then changes
/// the sum by at most `clip_norm`: its own term, and at most one other
/// example that it pushes out of (or lets back into) the kept set. So the
/// noise `σ·C` gives the same guarantee as without trimming.
pub(super) fn clipped_gradient_sums(
    layers: &[DenseLayer],
    batch: &Batch,
    clip_norm: f64,
    trim_fraction: f32,
) -> BatchContribution {
    let pass = forward_backward(layers, batch);
    let norms_and_losses = pass.squared_norms_and_losses();
    let mut squared_norms = Vec::with_capacity(norms_and_losses.len() / 2);
    let mut contributes = Vec::with_capacity(norms_and_losses.len() / 2);
    let mut loss_sum = 0.0f64;
    let mut num_non_finite_examples = 0u64;
    for pair in norms_and_losses.chunks_exact(2) {
        let (squared_norm, loss) = (pair[0], pair[1]);
        let finite = squared_norm.is_finite() && loss.is_finite();
        contributes.push(finite);
        if finite {
            squared_norms.push(squared_norm);
            loss_sum += f64::from(loss);
        } else {
            // clip_factors gives a non-finite norm factor 0.
            squared_norms.push(f32::INFINITY);
            num_non_finite_examples += 1;
        }
    }
    let clip_norm = if trim_fraction > 0.0 {
        let losses: Vec<f32> = norms_and_losses
            .chunks_exact(2)
            .map(|pair| pair[1])
            .collect();
        let rows: Vec<usize> = (0..contributes.len()).collect();
        let kept = rows_kept_after_trim(&rows, &losses, trim_fraction);
        let mut is_kept = vec![false; contributes.len()];
        for row in kept {
            is_kept[row] = true;
        }
        for (row, contributes) in contributes.iter_mut().enumerate() {
            if *contributes && !is_kept[row] {
                *contributes = false;
                squared_norms[row] = f32::INFINITY;
                loss_sum -= f64::from(losses[row]);
            }
        }
        clip_norm / 2.0
    } else {
        clip_norm
    };
    let factors = clip_factors(&squared_norms, clip_norm);
    let num_contributing = contributes.iter().filter(|&&keep| keep).count() as u64;
    BatchContribution {
        num_contributing,
        clipped_sums: pass.clipped_gradient_sums(factors, &contributes),
        loss_sum,
        num_non_finite_examples,
    }
}
/// The activations and gradients of one forward and backward pass over a
/// batch, from which come both the per-example (ghost) norms and the sums of
/// clipped gradients.
pub(super) struct BatchPass {
    /// a_l, the input of each layer: `[batch, d_in of layer l]`.
    layer_inputs: Vec<Tensor<DpBackend, 2>>,
    /// g_l, the gradient of each example's own loss with respect to the
    /// output of each layer (before its ReLU): `[batch, d_out of layer l]`.
    output_gradients: Vec<Tensor<DpBackend, 2>>,
    /// Each example's loss: `[batch, 1]`.
    losses: Tensor<DpBackend, 2>,
}

/// Runs the MLP forward over `batch`, keeping each layer's input, then
/// backward from each example's own loss (not the batch mean), keeping each
/// layer's output gradient.
pub(super) fn forward_backward(layers: &[DenseLayer], batch: &Batch) -> BatchPass {
    let num_layers = layers.len();
    let mut layer_inputs = Vec::with_capacity(num_layers);
    let mut activations = batch.inputs.clone(); // [batch, input_dim]
    for (index, layer) in layers.iter().enumerate() {
        layer_inputs.push(activations.clone());
        let outputs =
            activations.matmul(layer.weight.clone()) + layer.bias.clone().unsqueeze::<2>(); // [batch, d_out]
        activations = if index + 1 < num_layers {
            relu(outputs)
        } else {
            outputs
        };
    }
    let (losses, mut gradient) = match &batch.one_hot_targets {
        Some(one_hot) => {
            // loss_i = −log softmax(z_i)[y_i]; ∂loss_i/∂z_i = softmax(z_i) − onehot(y_i).
            let log_probabilities = log_softmax(activations, 1); // [batch, num_classes]
            let losses = (log_probabilities.clone() * one_hot.clone())
                .sum_dim(1)
                .neg(); // [batch, 1]
            (losses, log_probabilities.exp() - one_hot.clone())
        }
        None => {
            // loss_i = mean_j (r_ij − x_ij)²; ∂loss_i/∂r_i = 2 (r_i − x_i) / d.
            let num_features = batch.inputs.dims()[1];
            let residuals = activations - batch.inputs.clone(); // [batch, features]
            let losses = residuals.clone().powi_scalar(2).mean_dim(1); // [batch, 1]
            (losses, residuals.mul_scalar(2.0 / num_features as f64))
        }
    };
    let mut output_gradients = Vec::with_capacity(num_layers);
    for index in (0..num_layers).rev() {
        let next_gradient = (index > 0).then(|| {
            let input_gradient = gradient
                .clone()
                .matmul(layers[index].weight.clone().transpose()); // [batch, d_in]
            // The input is the previous layer's ReLU output: where it is 0,
            // the ReLU passed no gradient.
            input_gradient.mask_fill(layer_inputs[index].clone().lower_equal_elem(0.0), 0.0)
        });
        output_gradients.push(gradient);
        match next_gradient {
            Some(next) => gradient = next,
            None => break,
        }
    }
    output_gradients.reverse();
    BatchPass {
        layer_inputs,
        output_gradients,
        losses,
    }
}

impl BatchPass {
    /// Returns, interleaved per example, the squared L2 norm of its gradient
    /// over all parameters and its loss: `[‖∇_1‖², loss_1, ‖∇_2‖², loss_2, …]`
    /// (one read-back of the tensors per step).
    pub(super) fn squared_norms_and_losses(&self) -> Vec<f32> {
        let mut squared_norms = self.losses.zeros_like(); // [batch, 1]
        for (inputs, gradients) in self.layer_inputs.iter().zip(&self.output_gradients) {
            let input_squared_norms = inputs.clone().powi_scalar(2).sum_dim(1); // [batch, 1]
            let gradient_squared_norms = gradients.clone().powi_scalar(2).sum_dim(1); // [batch, 1]
            // ‖a_i g_iᵀ‖² + ‖g_i‖² (weight and bias).
            squared_norms =
                squared_norms + input_squared_norms.add_scalar(1.0) * gradient_squared_norms;
        }
        let norms_and_losses = Tensor::cat(vec![squared_norms, self.losses.clone()], 1); // [batch, 2]
        tensor_values(norms_and_losses.into_data())
    }

    /// Returns, per layer, the sums over the batch of the clipped per-example
    /// weight gradients `aᵀ (c ⊙ g)` and bias gradients `Σ_i c_i g_i`.
    ///
    /// The inputs and gradients of examples whose `contributes` entry is false
    /// are set to 0 first: a factor of 0 alone would leave `0 · inf = NaN`.
    pub(super) fn clipped_gradient_sums(
        self,
        factors: Vec<f32>,
        contributes: &[bool],
    ) -> ClippedSums {
        let batch_size = factors.len();
        let factors =
            Tensor::<DpBackend, 2>::from_data(TensorData::new(factors, [batch_size, 1]), &DEVICE); // [batch, 1]
        let excluded = contributes.iter().any(|&keep| !keep).then(|| {
            let excluded: Vec<bool> = contributes.iter().map(|&keep| !keep).collect();
            Tensor::<DpBackend, 2, Bool>::from_data(
                TensorData::new(excluded, [batch_size, 1]),
                &DEVICE,
            ) // [batch, 1]
        });
        let zero_excluded = |values: Tensor<DpBackend, 2>| match &excluded {
            Some(excluded) => {
                let width = values.dims()[1];
                values.mask_fill(excluded.clone().expand([batch_size, width]), 0.0)
            }
            None => values,
        };
        self.layer_inputs
            .into_iter()
            .zip(self.output_gradients)
            .map(|(inputs, gradients)| {
                let inputs = zero_excluded(inputs); // [batch, d_in]
                let gradients = zero_excluded(gradients); // [batch, d_out]
                let d_out = gradients.dims()[1];
                let clipped = gradients * factors.clone(); // [batch, d_out]
                let weight_sum = inputs.transpose().matmul(clipped.clone()); // [d_in, d_out]
                let bias_sum = clipped.sum_dim(0).reshape([d_out]); // [d_out]
                (weight_sum, bias_sum)
            })
            .collect()
    }
}
