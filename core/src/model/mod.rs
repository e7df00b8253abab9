//! The detection models: their architecture spec ([`ModelSpec`], here), the
//! burn module, its parameters, and how a model is trained, scored and measured.
//!
//! - `mlp`: the burn module of both families and its flat-vector mapping.
//! - [`weights`]: a model's parameters as one flat vector, its sha256, safetensors files.
//! - [`codec`]: the wire encoding of parameters and updates (little-endian float32 chunks).
//! - [`data`]: in-memory labelled datasets of feature vectors.
//! - [`training`]: local training with burn (ndarray backend, autodiff).
//! - [`inference`]: scoring feature vectors with a model.
//! - [`metrics`]: accuracy, ROC-AUC and friends.
//! - [`calibration`]: alert thresholds calibrated to standard false-positive rates.
//! - [`file`]: the metadata keys of model files (feature schema, threshold), and loading them.
//! - [`cache`]: downloaded model versions, one safetensors file each, sha256-checked.
//!
//! Two model families share one module, a stack of linear layers with ReLU
//! between them (none after the last):
//! - [`MLP_CLASSIFIER`]: `input → hidden… → num_classes` logits. With two
//!   classes it is a binary attack/benign detector; with more, class 0 is
//!   benign and the others are attack categories as numbered by the schema.
//! - [`AUTOENCODER`]: `input → hidden… → mirrored hidden… → input`, trained on
//!   benign traffic only; the anomaly score of a row is its mean squared
//!   reconstruction error, so attacks never seen in training still stand out.
//!
//! A third kind, [`BENCHMARK_FLAT`], is no detector at all: one flat vector
//! of parameters that `fedshield bench rounds` moves through real rounds to
//! measure their overhead. It has no layers, so nothing can train or score
//! with it ([`MlpClassifier::from_flat`] refuses it).
//!
//! Tensor layout (also the safetensors names): for each layer `i` in order,
//! `layers.{i}.weight` with shape `[d_in, d_out]` (row-major, `y = x W + b`)
//! followed by `layers.{i}.bias` with shape `[d_out]`.

pub mod cache;
pub mod calibration;
pub mod codec;
pub mod data;
pub mod explain;
pub mod file;
pub mod inference;
pub mod metrics;
mod mlp;
pub mod training;
pub mod weights;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

pub use mlp::MlpClassifier;

/// Model family: MLP classifier over attack/benign (or attack categories).
pub const MLP_CLASSIFIER: &str = "mlp-classifier";

/// Model family: autoencoder anomaly detector trained on benign traffic.
pub const AUTOENCODER: &str = "autoencoder";

/// Model family: a flat vector of parameters with no layers, used only by
/// the round-overhead benchmark. Its `input_dim` is its parameter count.
pub const BENCHMARK_FLAT: &str = "benchmark-flat";

/// Largest parameter count of a [`BENCHMARK_FLAT`] model (2^28, 1 GiB of float32).
pub const MAX_BENCHMARK_FLAT_PARAMS: u32 = 1 << 28;

/// Largest accepted layer width and input dimension; keeps a hostile spec from
/// asking for terabytes.
pub const MAX_LAYER_WIDTH: u32 = 1 << 16;

/// The architecture of a detection model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model family: [`MLP_CLASSIFIER`] or [`AUTOENCODER`].
    pub kind: String,
    /// Number of input features.
    pub input_dim: u32,
    /// Width of each hidden layer, input side first; for the autoencoder the
    /// encoder's layers (the decoder mirrors them).
    pub hidden_dims: Vec<u32>,
    /// Number of output classes (2 for attack/benign); 0 for the autoencoder.
    pub num_classes: u32,
}

/// Name and shape of one tensor of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Returns the number of values in the tensor.
    pub fn num_values(&self) -> usize {
        self.shape.iter().product()
    }
}

impl ModelSpec {
    /// Returns an MLP classifier spec.
    pub fn mlp(input_dim: u32, hidden_dims: Vec<u32>, num_classes: u32) -> Self {
        ModelSpec {
            kind: MLP_CLASSIFIER.to_string(),
            input_dim,
            hidden_dims,
            num_classes,
        }
    }

    /// Returns an autoencoder spec.
    pub fn autoencoder(input_dim: u32, hidden_dims: Vec<u32>) -> Self {
        ModelSpec {
            kind: AUTOENCODER.to_string(),
            input_dim,
            hidden_dims,
            num_classes: 0,
        }
    }

    /// Returns the spec of a benchmark model: `num_params` float32 values in
    /// one tensor, no layers. Only `fedshield bench rounds` uses it.
    pub fn benchmark_flat(num_params: u32) -> Self {
        ModelSpec {
            kind: BENCHMARK_FLAT.to_string(),
            input_dim: num_params,
            hidden_dims: Vec::new(),
            num_classes: 0,
        }
    }

    /// Returns true for the autoencoder family.
    pub fn is_autoencoder(&self) -> bool {
        self.kind == AUTOENCODER
    }

    /// Returns true for the flat benchmark model, which nothing can train.
    pub fn is_benchmark_flat(&self) -> bool {
        self.kind == BENCHMARK_FLAT
    }

    /// Checks that the spec describes a model this version can build.
    ///
    /// # Errors
    /// [`CoreError::InvalidSpec`] naming the field that is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.is_benchmark_flat() {
            if !self.hidden_dims.is_empty() || self.num_classes != 0 {
                return Err(CoreError::InvalidSpec(
                    "a benchmark-flat model has no hidden layers and no classes".to_string(),
                ));
            }
            if self.input_dim == 0 || self.input_dim > MAX_BENCHMARK_FLAT_PARAMS {
                return Err(CoreError::InvalidSpec(format!(
                    "a benchmark-flat model has {} parameters, must be in 1..={MAX_BENCHMARK_FLAT_PARAMS}",
                    self.input_dim
                )));
            }
            return Ok(());
        }
        if self.kind == AUTOENCODER {
            if self.num_classes != 0 {
                return Err(CoreError::InvalidSpec(format!(
                    "num_classes is {}, an autoencoder has none (0)",
                    self.num_classes
                )));
            }
            if self.hidden_dims.is_empty() {
                return Err(CoreError::InvalidSpec(
                    "an autoencoder needs at least one hidden layer (its bottleneck)".to_string(),
                ));
            }
            return self.validate_widths();
        }
        if self.kind != MLP_CLASSIFIER {
            return Err(CoreError::InvalidSpec(format!(
                "kind is {:?}, expected {MLP_CLASSIFIER:?} or {AUTOENCODER:?}",
                self.kind
            )));
        }
        if self.num_classes < 2 || self.num_classes > MAX_LAYER_WIDTH {
            return Err(CoreError::InvalidSpec(format!(
                "num_classes is {}, must be in 2..={MAX_LAYER_WIDTH}",
                self.num_classes
            )));
        }
        self.validate_widths()
    }

    fn validate_widths(&self) -> Result<()> {
        if self.input_dim == 0 || self.input_dim > MAX_LAYER_WIDTH {
            return Err(CoreError::InvalidSpec(format!(
                "input_dim is {}, must be in 1..={MAX_LAYER_WIDTH}",
                self.input_dim
            )));
        }
        if self.hidden_dims.len() > 16 {
            return Err(CoreError::InvalidSpec(format!(
                "{} hidden layers, at most 16 are supported",
                self.hidden_dims.len()
            )));
        }
        if let Some(bad) = self
            .hidden_dims
            .iter()
            .find(|&&width| width == 0 || width > MAX_LAYER_WIDTH)
        {
            return Err(CoreError::InvalidSpec(format!(
                "hidden layer width {bad} must be in 1..={MAX_LAYER_WIDTH}"
            )));
        }
        Ok(())
    }

    /// Returns `(d_in, d_out)` of each linear layer, input side first (none
    /// for a benchmark-flat model).
    pub fn layer_dims(&self) -> Vec<(usize, usize)> {
        if self.is_benchmark_flat() {
            return Vec::new();
        }
        let mut widths = Vec::with_capacity(2 * self.hidden_dims.len() + 2);
        widths.push(self.input_dim as usize);
        widths.extend(self.hidden_dims.iter().map(|&width| width as usize));
        if self.is_autoencoder() {
            // Mirror the encoder, bottleneck excluded, then back to the input.
            widths.extend(
                self.hidden_dims
                    .iter()
                    .rev()
                    .skip(1)
                    .map(|&width| width as usize),
            );
            widths.push(self.input_dim as usize);
        } else {
            widths.push(self.num_classes as usize);
        }
        widths.windows(2).map(|pair| (pair[0], pair[1])).collect()
    }

    /// Returns the tensors of the model in flat-vector order.
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        if self.is_benchmark_flat() {
            return vec![TensorSpec {
                name: "params".to_string(),
                shape: vec![self.input_dim as usize],
            }];
        }
        self.layer_dims()
            .into_iter()
            .enumerate()
            .flat_map(|(index, (d_in, d_out))| {
                [
                    TensorSpec {
                        name: format!("layers.{index}.weight"),
                        shape: vec![d_in, d_out],
                    },
                    TensorSpec {
                        name: format!("layers.{index}.bias"),
                        shape: vec![d_out],
                    },
                ]
            })
            .collect()
    }

    /// Returns the total number of float32 parameters.
    pub fn num_params(&self) -> usize {
        if self.is_benchmark_flat() {
            return self.input_dim as usize;
        }
        self.layer_dims()
            .into_iter()
            .map(|(d_in, d_out)| d_in * d_out + d_out)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoencoder_mirrors_its_encoder() {
        let spec = ModelSpec::autoencoder(10, vec![6, 3]);
        spec.validate().unwrap();
        assert_eq!(spec.layer_dims(), vec![(10, 6), (6, 3), (3, 6), (6, 10)]);
        let mut with_classes = spec.clone();
        with_classes.num_classes = 2;
        assert!(with_classes.validate().is_err());
        assert!(ModelSpec::autoencoder(10, vec![]).validate().is_err());
    }

    #[test]
    fn invalid_specs_are_rejected_with_the_field_named() {
        let mut spec = ModelSpec::mlp(5, vec![7], 2);
        spec.kind = "transformer".into();
        assert!(spec.validate().unwrap_err().to_string().contains("kind"));
        let zero_width = ModelSpec::mlp(5, vec![0], 2);
        assert!(
            zero_width
                .validate()
                .unwrap_err()
                .to_string()
                .contains("width")
        );
        let one_class = ModelSpec::mlp(5, vec![4], 1);
        assert!(
            one_class
                .validate()
                .unwrap_err()
                .to_string()
                .contains("num_classes")
        );
    }
}
