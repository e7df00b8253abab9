//! Scoring feature vectors with a model (ndarray backend, no autodiff).

use burn::backend::NdArray;
use burn::backend::ndarray::NdArrayDevice;
use burn::tensor::{Tensor, TensorData};

use crate::error::{CoreError, Result};
use crate::model::MlpClassifier;
use crate::model::weights::ModelWeights;

/// Rows scored per forward pass.
const INFERENCE_BATCH_ROWS: usize = 8192;

/// Classifier score at which a row counts as an attack: log-odds 0, i.e.
/// P(attack) = 0.5.
pub const CLASSIFIER_THRESHOLD: f64 = 0.0;

/// Returns each row's anomaly score: for classifiers the log-odds of attack,
/// `ln P(attack) − ln P(benign)` (which, unlike the probability, does not
/// saturate at 1.0 and so keeps ranking confident predictions), for
/// autoencoders the mean squared reconstruction error. Higher always means
/// more suspicious.
///
/// # Errors
/// [`CoreError::FeatureDimMismatch`] if `features` is not a whole number of rows.
pub fn score_rows(weights: &ModelWeights, features: &[f32]) -> Result<Vec<f32>> {
    if weights.spec.is_autoencoder() {
        return reconstruction_errors(weights, features);
    }
    let num_classes = weights.spec.num_classes as usize;
    let logits = forward_rows(weights, features)?;
    Ok(logits.chunks(num_classes).map(attack_log_odds).collect())
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

/// Returns `ln Σ_{c≥1} exp(l_c) − l_0`, the log-odds of attack, computed
/// stably from one row of classifier logits (class 0 benign).
pub fn attack_log_odds(logits: &[f32]) -> f32 {
    let attack_logits = &logits[1..];
    let max = attack_logits
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let log_sum = max
        + attack_logits
            .iter()
            .map(|logit| (logit - max).exp())
            .sum::<f32>()
            .ln();
    log_sum - logits[0]
}

/// Returns `1 − softmax(logits)[0]`, computed stably.
fn attack_probability(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f32 = logits.iter().map(|logit| (logit - max).exp()).sum();
    1.0 - (logits[0] - max).exp() / total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_odds_agree_with_probabilities_and_do_not_saturate() {
        let logits = [0.3f32, 1.2, -0.4];
        let probability = attack_probability(&logits);
        let log_odds = attack_log_odds(&logits);
        assert!((log_odds - (probability / (1.0 - probability)).ln()).abs() < 1e-5);
        // Both far beyond f32 probability resolution: still ordered.
        assert!(attack_log_odds(&[0.0, 60.0]) > attack_log_odds(&[0.0, 50.0]));
        assert_eq!(
            attack_probability(&[0.0, 60.0]),
            attack_probability(&[0.0, 50.0])
        );
    }
}
