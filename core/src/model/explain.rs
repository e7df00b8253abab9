//! Why a model flagged a row: each input feature's contribution to its score.
//!
//! - Classifiers: gradient × input of the attack log-odds (the score
//!   [`attack_log_odds`](super::inference::attack_log_odds) computes), the
//!   first-order attribution of Shrikumar et al. 2016, "Not Just a Black Box"
//!   (arXiv:1605.01713). A positive contribution pushed the row towards
//!   "attack". For a one-hot slot it is the gradient at the active slot, so
//!   the column's category carries its own weight.
//! - Autoencoders: each feature's squared reconstruction error, whose mean
//!   is the score; every contribution is non-negative.
//!
//! The network is small (a ReLU MLP), so the forward pass, the stored
//! activations and the backward pass are written out in plain Rust over the
//! flat parameters: no autodiff graph per row, and the cost is that of three
//! forward passes. Only alerts are explained, so this never sits on the path
//! of every event.

use crate::error::{CoreError, Result};
use crate::model::weights::ModelWeights;

/// One linear layer of the network: `output = input · weight + bias`, with
/// `weight` row-major `[input_width, output_width]`, as the flat parameters
/// lay it out.
struct Layer {
    weight: Vec<f32>,
    bias: Vec<f32>,
    input_width: usize,
    output_width: usize,
}

/// A model's network in plain arrays, ready to attribute scores to features.
pub struct Explainer {
    layers: Vec<Layer>,
    input_dim: usize,
    is_autoencoder: bool,
}

impl Explainer {
    /// Builds the explainer of `weights`.
    ///
    /// # Errors
    /// [`CoreError::InvalidSpec`] for a model without layers (the benchmark
    /// model), [`CoreError::ParamCountMismatch`] if the parameters do not fit.
    pub fn new(weights: &ModelWeights) -> Result<Self> {
        let spec = &weights.spec;
        if spec.is_benchmark_flat() {
            return Err(CoreError::InvalidSpec(
                "a benchmark-flat model has no layers: nothing to explain".to_string(),
            ));
        }
        if weights.params.len() != spec.num_params() {
            return Err(CoreError::ParamCountMismatch {
                expected: spec.num_params() as u64,
                actual: weights.params.len() as u64,
            });
        }
        let mut offset = 0;
        let mut layers = Vec::new();
        for (input_width, output_width) in spec.layer_dims() {
            let weight = weights.params[offset..offset + input_width * output_width].to_vec();
            offset += input_width * output_width;
            let bias = weights.params[offset..offset + output_width].to_vec();
            offset += output_width;
            layers.push(Layer {
                weight,
                bias,
                input_width,
                output_width,
            });
        }
        Ok(Explainer {
            layers,
            input_dim: spec.input_dim as usize,
            is_autoencoder: spec.is_autoencoder(),
        })
    }

    /// Returns the number of features per row.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Writes each feature's contribution to `row`'s score into
    /// `contributions` (cleared first, `input_dim` values): gradient × input
    /// of the attack log-odds for classifiers, squared reconstruction error
    /// for autoencoders.
    ///
    /// # Errors
    /// [`CoreError::FeatureDimMismatch`] if `row` is not `input_dim` wide.
    pub fn contributions(&self, row: &[f32], contributions: &mut Vec<f32>) -> Result<()> {
        if row.len() != self.input_dim {
            return Err(CoreError::FeatureDimMismatch {
                expected: self.input_dim,
                actual: row.len(),
            });
        }
        contributions.clear();
        // Pre-activations of every layer, kept for the backward pass.
        let mut pre_activations: Vec<Vec<f32>> = Vec::with_capacity(self.layers.len());
        let mut activation = row.to_vec(); // [input_dim]
        let num_layers = self.layers.len();
        for (index, layer) in self.layers.iter().enumerate() {
            let mut output = layer.bias.clone(); // [output_width]
            for (input_index, &input_value) in activation.iter().enumerate() {
                if input_value == 0.0 {
                    continue;
                }
                let weights_row = &layer.weight
                    [input_index * layer.output_width..(input_index + 1) * layer.output_width];
                for (out, &weight) in output.iter_mut().zip(weights_row) {
                    *out += input_value * weight;
                }
            }
            pre_activations.push(output.clone());
            activation = if index + 1 < num_layers {
                output.into_iter().map(|value| value.max(0.0)).collect()
            } else {
                output
            };
        }
        let outputs = activation; // [num_classes] or [input_dim]
        if self.is_autoencoder {
            contributions.extend(
                outputs
                    .iter()
                    .zip(row)
                    .map(|(reconstruction, input)| (reconstruction - input).powi(2)),
            );
            return Ok(());
        }
        // d(attack log-odds)/d(logits): −1 for benign, the softmax over the
        // attack logits for each attack class.
        let mut gradient = vec![0.0_f32; outputs.len()];
        gradient[0] = -1.0;
        let attack_logits = &outputs[1..];
        let max = attack_logits
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = attack_logits
            .iter()
            .map(|logit| (logit - max).exp())
            .collect();
        let total: f32 = exps.iter().sum();
        for (slot, exp) in gradient[1..].iter_mut().zip(&exps) {
            *slot = exp / total;
        }
        for (index, layer) in self.layers.iter().enumerate().rev() {
            if index + 1 < num_layers {
                // Through the ReLU that followed this layer.
                for (value, pre) in gradient.iter_mut().zip(&pre_activations[index]) {
                    if *pre <= 0.0 {
                        *value = 0.0;
                    }
                }
            }
            let mut input_gradient = vec![0.0_f32; layer.input_width]; // [input_width]
            for (input_index, slot) in input_gradient.iter_mut().enumerate() {
                let weights_row = &layer.weight
                    [input_index * layer.output_width..(input_index + 1) * layer.output_width];
                *slot = weights_row
                    .iter()
                    .zip(&gradient)
                    .map(|(weight, grad)| weight * grad)
                    .sum();
            }
            gradient = input_gradient;
        }
        contributions.extend(gradient.iter().zip(row).map(|(grad, input)| grad * input));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inference::score_rows;
    use crate::model::{AUTOENCODER, MLP_CLASSIFIER, ModelSpec};

    fn weights(kind: &str, num_classes: u32, seed: u64) -> ModelWeights {
        let spec = ModelSpec {
            kind: kind.to_string(),
            input_dim: 6,
            hidden_dims: vec![5, 4],
            num_classes,
        };
        // A deterministic spread of positive and negative parameters.
        let mut state = seed;
        let params = (0..spec.num_params())
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        ModelWeights::new(spec, params).expect("params fit the spec")
    }

    const ROW: [f32; 6] = [0.3, 1.0, 0.0, 0.7, 0.2, 0.9];

    #[test]
    fn classifier_contributions_match_finite_differences_of_the_score() {
        for num_classes in [2, 4] {
            let weights = weights(MLP_CLASSIFIER, num_classes, 7 + u64::from(num_classes));
            let explainer = Explainer::new(&weights).expect("explainer");
            let mut contributions = Vec::new();
            explainer
                .contributions(&ROW, &mut contributions)
                .expect("contributions");
            let step = 1e-3_f32;
            for feature in 0..ROW.len() {
                let mut up = ROW;
                up[feature] += step;
                let mut down = ROW;
                down[feature] -= step;
                let scores = score_rows(&weights, &[up, down].concat()).expect("scores");
                let gradient = (scores[0] - scores[1]) / (2.0 * step);
                let expected = gradient * ROW[feature];
                assert!(
                    (contributions[feature] - expected).abs() < 2e-3,
                    "feature {feature} of a {num_classes}-class model: {} vs {expected}",
                    contributions[feature]
                );
            }
        }
    }

    #[test]
    fn autoencoder_contributions_average_to_its_score() {
        let weights = weights(AUTOENCODER, 0, 3);
        let explainer = Explainer::new(&weights).expect("explainer");
        let mut contributions = Vec::new();
        explainer
            .contributions(&ROW, &mut contributions)
            .expect("contributions");
        let score = score_rows(&weights, &ROW).expect("score")[0];
        let mean = contributions.iter().sum::<f32>() / contributions.len() as f32;
        assert!((mean - score).abs() < 1e-5, "{mean} vs {score}");
        assert!(contributions.iter().all(|value| *value >= 0.0));
    }

    #[test]
    fn a_row_of_the_wrong_width_is_refused() {
        let weights = weights(MLP_CLASSIFIER, 2, 1);
        let explainer = Explainer::new(&weights).expect("explainer");
        let error = explainer
            .contributions(&ROW[..5], &mut Vec::new())
            .expect_err("a short row");
        assert!(matches!(error, CoreError::FeatureDimMismatch { .. }));
    }
}
