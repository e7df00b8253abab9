//! The MLP as DP-SGD sees it: dense layers on the non-autodiff ndarray
//! backend, read from and written back to the flat parameter vector, and
//! the batches they train on.

use burn::tensor::{Tensor, TensorData};

use super::{DEVICE, DpBackend};
use crate::model::ModelSpec;
use crate::model::data::Dataset;
use crate::model::weights::ModelWeights;

/// What a model learns to output.
#[derive(Debug, Clone, Copy)]
pub(super) enum Objective {
    /// Class probabilities (softmax over logits), trained with cross-entropy
    /// over the binary label (`multi_class` false) or the class index.
    Classes {
        num_classes: usize,
        multi_class: bool,
    },
    /// The input itself, trained with the mean squared reconstruction error.
    Reconstruction,
}

/// Returns what a model of `spec` learns (its rows were checked by
/// `training_rows`).
pub(super) fn objective_of(spec: &ModelSpec) -> Objective {
    if spec.is_autoencoder() {
        return Objective::Reconstruction;
    }
    if spec.num_classes <= 2 {
        return Objective::Classes {
            num_classes: 2,
            multi_class: false,
        };
    }
    Objective::Classes {
        num_classes: spec.num_classes as usize,
        multi_class: true,
    }
}

/// One linear layer, `y = x W + b`.
pub(super) struct DenseLayer {
    pub(super) weight: Tensor<DpBackend, 2>, // [d_in, d_out]
    pub(super) bias: Tensor<DpBackend, 1>,   // [d_out]
}

/// Returns the layers of `weights` (whose parameter count was checked), in
/// the flat layout of [`crate::model`]: per layer the row-major weight, then
/// the bias.
pub(super) fn layers_from_flat(weights: &ModelWeights) -> Vec<DenseLayer> {
    let mut offset = 0;
    let mut layers = Vec::new();
    for (d_in, d_out) in weights.spec.layer_dims() {
        let weight_values = weights.params[offset..offset + d_in * d_out].to_vec();
        offset += d_in * d_out;
        let bias_values = weights.params[offset..offset + d_out].to_vec();
        offset += d_out;
        layers.push(DenseLayer {
            weight: Tensor::from_data(TensorData::new(weight_values, [d_in, d_out]), &DEVICE),
            bias: Tensor::from_data(TensorData::new(bias_values, [d_out]), &DEVICE),
        });
    }
    layers
}

/// Returns the parameters of `layers` as one flat vector (inverse of
/// [`layers_from_flat`]).
pub(super) fn flatten_layers(layers: Vec<DenseLayer>) -> Vec<f32> {
    let mut params = Vec::new();
    for layer in layers {
        params.extend(tensor_values(layer.weight.into_data()));
        params.extend(tensor_values(layer.bias.into_data()));
    }
    params
}

pub(super) fn tensor_values(data: TensorData) -> Vec<f32> {
    data.into_vec::<f32>().expect("DP-SGD tensors are float32")
}

/// The inputs and targets of one sampled batch.
pub(super) struct Batch {
    pub(super) inputs: Tensor<DpBackend, 2>, // [batch, features]
    /// One-hot targets of a classifier, `[batch, num_classes]`; none for
    /// the autoencoder, whose target is its input.
    pub(super) one_hot_targets: Option<Tensor<DpBackend, 2>>,
}

impl Batch {
    pub(super) fn new(data: &Dataset, rows: &[usize], objective: Objective) -> Self {
        let num_features = data.num_features();
        let mut features = Vec::with_capacity(rows.len() * num_features);
        for &row in rows {
            features.extend_from_slice(data.row(row));
        }
        let inputs = Tensor::from_data(
            TensorData::new(features, [rows.len(), num_features]),
            &DEVICE,
        ); // [batch, features]
        let one_hot_targets = match objective {
            Objective::Reconstruction => None,
            Objective::Classes {
                num_classes,
                multi_class,
            } => {
                let mut one_hot = vec![0.0f32; rows.len() * num_classes];
                for (position, &row) in rows.iter().enumerate() {
                    let target = if multi_class {
                        data.classes()[row]
                    } else {
                        data.labels()[row]
                    } as usize;
                    one_hot[position * num_classes + target] = 1.0;
                }
                Some(Tensor::from_data(
                    TensorData::new(one_hot, [rows.len(), num_classes]),
                    &DEVICE,
                )) // [batch, num_classes]
            }
        };
        Batch {
            inputs,
            one_hot_targets,
        }
    }
}
