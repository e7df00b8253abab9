//! A verified model version ready to score with, and the rules every
//! version must satisfy to score these events.

use std::path::Path;

use fedshield_core::ModelVersion;
use fedshield_core::model::inference::CLASSIFIER_THRESHOLD;
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::schema::Schema;

use crate::error::{DetectorError, Result};

/// A verified model version, ready to score with: what a model source hands
/// the scoring thread.
#[derive(Debug, Clone)]
pub struct ModelRelease {
    pub version: ModelVersion,
    pub weights: ModelWeights,
    /// Score at or above which an event is an attack.
    pub threshold: f64,
    /// Class names by class index (0 = benign) of a multi-class classifier;
    /// `None` for binary classifiers and autoencoders, whose events get no category.
    pub class_names: Option<Vec<String>>,
}

/// What every model version must satisfy to score these events: the schema
/// they are featurized with, and the `--threshold` flag.
#[derive(Debug, Clone)]
pub struct ReleaseRules {
    pub schema: Schema,
    pub threshold_flag: Option<f64>,
}

impl ReleaseRules {
    /// Returns the release of `weights`. The threshold is `--threshold`, else
    /// [`CLASSIFIER_THRESHOLD`] for classifiers, else the autoencoder's
    /// `stored_threshold` (as `fedshield evaluate` chooses it).
    ///
    /// # Errors
    /// When the model's inputs or classes do not fit the schema, or an
    /// autoencoder has no threshold.
    pub fn release(
        &self,
        version: ModelVersion,
        weights: ModelWeights,
        stored_threshold: Option<f64>,
    ) -> Result<ModelRelease> {
        let spec = &weights.spec;
        if spec.input_dim as usize != self.schema.num_features() {
            return Err(DetectorError::FeatureCount {
                version,
                model_features: spec.input_dim,
                schema_features: self.schema.num_features(),
            });
        }
        let threshold = match (self.threshold_flag, spec.is_autoencoder()) {
            (Some(threshold), _) => threshold,
            (None, false) => CLASSIFIER_THRESHOLD,
            (None, true) => stored_threshold.ok_or(DetectorError::NoThreshold { version })?,
        };
        let class_names = if !spec.is_autoencoder() && spec.num_classes > 2 {
            if spec.num_classes as usize != self.schema.num_classes() {
                return Err(DetectorError::ClassCount {
                    version,
                    model_classes: spec.num_classes,
                    schema_classes: self.schema.num_classes(),
                });
            }
            Some(self.schema.class_names())
        } else {
            None
        };
        Ok(ModelRelease {
            version,
            weights,
            threshold,
            class_names,
        })
    }
}

/// Loads the schema `--schema` names.
///
/// # Errors
/// When it cannot be read or is not a valid schema.
pub fn load_schema_flag(path: &Path) -> Result<Schema> {
    Schema::load(path).map_err(|source| DetectorError::LoadSchema {
        path: path.to_path_buf(),
        source,
    })
}
