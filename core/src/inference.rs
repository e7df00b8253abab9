//! Scoring feature vectors with a model (ndarray backend, no autodiff).

use burn::backend::NdArray;
use burn::backend::ndarray::NdArrayDevice;
use burn::tensor::{Tensor, TensorData};

use crate::error::{CoreError, Result};
use crate::model::MlpClassifier;
use crate::weights::ModelWeights;

/// Rows scored per forward pass.
const INFERENCE_BATCH_ROWS: usize = 8192;

/// Returns each row's anomaly score: for classifiers the probability of
/// attack, for autoencoders the mean squared reconstruction error. Higher
/// always means more suspicious.
///
/// # Errors
/// [`CoreError::FeatureDimMismatch`] if `features` is not a whole number of rows.
pub fn score_rows(weights: &ModelWeights, features: &[f32]) -> Result<Vec<f32>> {
    if weights.spec.is_autoencoder() {
        reconstruction_errors(weights, features)
    } else {
        predict_attack_probability(weights, features)
    }
}

/// Returns each row's most likely class (0 = benign) under a classifier.
///
/// # Errors
/// [`CoreError::FeatureDimMismatch`], or [`CoreError::InvalidSpec`] for an autoencoder.
pub fn predict_classes(weights: &ModelWeights, features: &[f32]) -> Result<Vec<u32>> {
    if weights.spec.is_autoencoder() {
        return Err(CoreError::InvalidSpec(
            "an autoencoder does not predict classes".to_string(),
        ));
    }
    let num_classes = weights.spec.num_classes as usize;
    let outputs = forward_rows(weights, features)?;
    Ok(outputs
        .chunks(num_classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(index, _)| index as u32)
        })
        .collect())
}

/// Returns the mean squared reconstruction error of each row.
fn reconstruction_errors(weights: &ModelWeights, features: &[f32]) -> Result<Vec<f32>> {
    let input_dim = weights.spec.input_dim as usize;
    let reconstructions = forward_rows(weights, features)?;
    Ok(reconstructions
        .chunks(input_dim)
        .zip(features.chunks(input_dim))
        .map(|(reconstruction, input)| {
            reconstruction
                .iter()
                .zip(input)
                .map(|(output, original)| (output - original).powi(2))
                .sum::<f32>()
                / input_dim as f32
        })
        .collect())
}

/// Returns the raw outputs of the model for each row, row-major.
fn forward_rows(weights: &ModelWeights, features: &[f32]) -> Result<Vec<f32>> {
    let input_dim = weights.spec.input_dim as usize;
    if !features.len().is_multiple_of(input_dim) {
        return Err(CoreError::FeatureDimMismatch {
            expected: input_dim,
            actual: features.len() % input_dim,
        });
    }
    let device = NdArrayDevice::Cpu;
    let model = MlpClassifier::<NdArray<f32>>::from_flat(&weights.spec, &weights.params, &device)?;
    let mut outputs = Vec::new();
    for batch in features.chunks(INFERENCE_BATCH_ROWS * input_dim) {
        let num_rows = batch.len() / input_dim;
        let inputs = Tensor::<NdArray<f32>, 2>::from_data(
            TensorData::new(batch.to_vec(), [num_rows, input_dim]),
            &device,
        ); // [rows, features]
        let values = model
            .forward(inputs)
            .into_data()
            .to_vec::<f32>()
            .expect("ndarray float tensors hold f32"); // [rows, outputs]
        outputs.extend(values);
    }
    Ok(outputs)
}

/// Returns, for each row of `features` (row-major, `spec.input_dim` wide), a
/// classifier's probability that the row is an attack: one minus the
/// probability of class 0 (benign).
///
/// # Errors
/// [`CoreError::FeatureDimMismatch`] if `features` is not a whole number of
/// rows, [`CoreError::InvalidSpec`] for an autoencoder.
pub fn predict_attack_probability(weights: &ModelWeights, features: &[f32]) -> Result<Vec<f32>> {
    if weights.spec.is_autoencoder() {
        return Err(CoreError::InvalidSpec(
            "an autoencoder has no class probabilities; use score_rows".to_string(),
        ));
    }
    let num_classes = weights.spec.num_classes as usize;
    let logits = forward_rows(weights, features)?;
    Ok(logits.chunks(num_classes).map(attack_probability).collect())
}

/// Returns `1 − softmax(logits)[0]`, computed stably.
fn attack_probability(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f32 = logits.iter().map(|logit| (logit - max).exp()).sum();
    1.0 - (logits[0] - max).exp() / total
}
