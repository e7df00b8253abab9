//! Scoring feature vectors with a model (ndarray backend, no autodiff).

use burn::backend::NdArray;
use burn::backend::ndarray::NdArrayDevice;
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};

use crate::error::{CoreError, Result};
use crate::model::MlpClassifier;
use crate::weights::ModelWeights;

/// Rows scored per forward pass.
const INFERENCE_BATCH_ROWS: usize = 8192;

/// Returns, for each row of `features` (row-major, `spec.input_dim` wide), the
/// model's probability that the row is an attack: one minus the probability of
/// class 0 (benign).
///
/// # Errors
/// [`CoreError::FeatureDimMismatch`] if `features` is not a whole number of rows.
pub fn predict_attack_probability(weights: &ModelWeights, features: &[f32]) -> Result<Vec<f32>> {
    let input_dim = weights.spec.input_dim as usize;
    if !features.len().is_multiple_of(input_dim) {
        return Err(CoreError::FeatureDimMismatch {
            expected: input_dim,
            actual: features.len() % input_dim,
        });
    }
    let device = NdArrayDevice::Cpu;
    let model = MlpClassifier::<NdArray<f32>>::from_flat(&weights.spec, &weights.params, &device)?;
    let num_classes = weights.spec.num_classes as usize;
    let mut scores = Vec::with_capacity(features.len() / input_dim);
    for batch in features.chunks(INFERENCE_BATCH_ROWS * input_dim) {
        let num_rows = batch.len() / input_dim;
        let inputs = Tensor::<NdArray<f32>, 2>::from_data(
            TensorData::new(batch.to_vec(), [num_rows, input_dim]),
            &device,
        ); // [rows, features]
        let probabilities = softmax(model.forward(inputs), 1); // [rows, classes]
        let values = probabilities
            .into_data()
            .to_vec::<f32>()
            .expect("ndarray float tensors hold f32");
        scores.extend(values.chunks(num_classes).map(|row| 1.0 - row[0]));
    }
    Ok(scores)
}
