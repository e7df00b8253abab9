//! Scoring feature vectors with a model (ndarray backend, no autodiff):
//! whole datasets at once ([`score_rows`], [`predict_classes`]), or batch
//! after batch into reused buffers with a network built once ([`Scorer`],
//! what the detector runs). Both compute the same scores, bit for bit.

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
        .map(|(reconstruction, input)| reconstruction_error(reconstruction, input))
        .collect())
}

/// Returns the raw outputs of the model for each row, row-major.
fn forward_rows(weights: &ModelWeights, features: &[f32]) -> Result<Vec<f32>> {
    let scorer = Scorer::new(weights)?;
    let input_dim = scorer.input_dim();
    check_whole_rows(features, input_dim)?;
    let mut outputs = Vec::new();
    for batch in features.chunks(INFERENCE_BATCH_ROWS * input_dim) {
        outputs.extend_from_slice(scorer.forward(batch).as_slice::<f32>().expect(F32_OUTPUTS));
    }
    Ok(outputs)
}

/// Why the outputs of an ndarray float network are always float32.
const F32_OUTPUTS: &str = "ndarray float tensors hold f32";

/// Returns [`CoreError::FeatureDimMismatch`] unless `features` is a whole
/// number of rows of `input_dim` values.
fn check_whole_rows(features: &[f32], input_dim: usize) -> Result<()> {
    if features.len().is_multiple_of(input_dim) {
        return Ok(());
    }
    Err(CoreError::FeatureDimMismatch {
        expected: input_dim,
        actual: features.len() % input_dim,
    })
}

/// A model's network, built once, scoring batches of rows into buffers the
/// caller reuses: one tensor per batch, never one per row.
pub struct Scorer {
    network: MlpClassifier<NdArray<f32>>,
    device: NdArrayDevice,
    input_dim: usize,
    /// Outputs per row of a classifier; 0 for an autoencoder.
    num_classes: usize,
}

impl Scorer {
    /// Builds the network of `weights`.
    ///
    /// # Errors
    /// If the parameters do not fit the spec (a [`ModelWeights`] always fits).
    pub fn new(weights: &ModelWeights) -> Result<Self> {
        let device = NdArrayDevice::Cpu;
        let network = MlpClassifier::from_flat(&weights.spec, &weights.params, &device)?;
        Ok(Scorer {
            network,
            device,
            input_dim: weights.spec.input_dim as usize,
            num_classes: if weights.spec.is_autoencoder() {
                0
            } else {
                weights.spec.num_classes as usize
            },
        })
    }

    /// Returns the number of features per row.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Returns the network's outputs for a batch of whole rows, row-major.
    fn forward(&self, batch: &[f32]) -> TensorData {
        let num_rows = batch.len() / self.input_dim;
        let inputs = Tensor::<NdArray<f32>, 2>::from_data(
            TensorData::new(batch.to_vec(), [num_rows, self.input_dim]),
            &self.device,
        ); // [rows, features]
        self.network.forward(inputs).into_data() // [rows, outputs]
    }

    /// Scores `features` (row-major rows of the model's input width) in one
    /// forward pass: writes each row's score (as [`score_rows`] computes it)
    /// to `scores` and, when `attack_classes` is given and the model is a
    /// classifier, each row's [`most_likely_attack_class`] to it; both are
    /// cleared first.
    ///
    /// # Errors
    /// [`CoreError::FeatureDimMismatch`] if `features` is not a whole number of rows.
    pub fn score_into(
        &self,
        features: &[f32],
        scores: &mut Vec<f32>,
        mut attack_classes: Option<&mut Vec<u32>>,
    ) -> Result<()> {
        scores.clear();
        if let Some(classes) = attack_classes.as_deref_mut() {
            classes.clear();
        }
        check_whole_rows(features, self.input_dim)?;
        if features.is_empty() {
            return Ok(());
        }
        let outputs = self.forward(features);
        let outputs = outputs.as_slice::<f32>().expect(F32_OUTPUTS);
        if self.num_classes == 0 {
            scores.extend(
                outputs
                    .chunks_exact(self.input_dim)
                    .zip(features.chunks_exact(self.input_dim))
                    .map(|(reconstruction, input)| reconstruction_error(reconstruction, input)),
            );
            return Ok(());
        }
        for logits in outputs.chunks_exact(self.num_classes) {
            scores.push(attack_log_odds(logits));
            if let Some(classes) = attack_classes.as_deref_mut() {
                classes.push(most_likely_attack_class(logits));
            }
        }
        Ok(())
    }
}

/// Returns the mean squared error between an autoencoder's reconstruction
/// of a row and the row.
pub fn reconstruction_error(reconstruction: &[f32], input: &[f32]) -> f32 {
    reconstruction
        .iter()
        .zip(input)
        .map(|(output, original)| (output - original).powi(2))
        .sum::<f32>()
        / input.len() as f32
}

/// Returns the attack class (1..) with the largest of a classifier's logits
/// (class 0 benign); ties go to the later class, as in [`predict_classes`].
pub fn most_likely_attack_class(logits: &[f32]) -> u32 {
    logits[1..]
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(1, |(index, _)| index as u32 + 1)
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

    #[test]
    fn log_odds_of_two_classes_are_the_logit_difference() {
        assert_eq!(attack_log_odds(&[0.5, 2.0]), 1.5);
        assert_eq!(most_likely_attack_class(&[9.0, 1.0, 3.0, 2.0]), 2);
    }
}
