//! A verified model version ready to score with, and the rules every
//! version must satisfy to score these events.

use std::path::Path;

use fedshield_core::ModelVersion;
use fedshield_core::card::ModelCard;
use fedshield_core::model::calibration::ThresholdCalibration;
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
    /// The false-positive rate `threshold` was calibrated for (`--alert-fpr`);
    /// `None` when the threshold came from elsewhere.
    pub alert_fpr: Option<f64>,
    /// sha256 (hex) of the parameters, as the version's card gives it.
    pub sha256: String,
    /// The card's alert threshold calibration, if it has one.
    pub calibration: Option<ThresholdCalibration>,
}

/// What a version's model card tells its release: the sha256 alerts cite
/// and the calibrated alert thresholds.
#[derive(Debug, Clone, Default)]
pub struct CardFacts {
    /// sha256 (hex) of the parameters.
    pub sha256: String,
    pub calibration: Option<ThresholdCalibration>,
}

impl CardFacts {
    /// Returns the facts of `card`.
    pub fn of(card: &ModelCard) -> Self {
        CardFacts {
            sha256: card.sha256.clone(),
            calibration: card.calibration.clone(),
        }
    }
}

/// What every model version must satisfy to score these events: the schema
/// they are featurized with, and the `--threshold` and `--alert-fpr` flags.
#[derive(Debug, Clone)]
pub struct ReleaseRules {
    pub schema: Schema,
    pub threshold_flag: Option<f64>,
    /// `--alert-fpr`: score with each version's card's threshold calibrated
    /// for this false-positive rate (one of
    /// [`STANDARD_ALERT_FPRS`](fedshield_core::model::calibration::STANDARD_ALERT_FPRS)).
    pub alert_fpr: Option<f64>,
}

impl ReleaseRules {
    /// Returns the release of `weights`. The threshold is `--threshold`, else
    /// with `--alert-fpr` the one `card` calibrated for it (each version its
    /// own card's), else [`CLASSIFIER_THRESHOLD`] for classifiers, else the
    /// autoencoder's `stored_threshold` (as `fedshield evaluate` chooses it).
    ///
    /// # Errors
    /// When the model's inputs or classes do not fit the schema, an
    /// autoencoder has no threshold, or with `--alert-fpr` the card has no
    /// threshold calibrated for it ([`DetectorError::NoCalibration`]).
    pub fn release(
        &self,
        version: ModelVersion,
        weights: ModelWeights,
        stored_threshold: Option<f64>,
        card: CardFacts,
    ) -> Result<ModelRelease> {
        let spec = &weights.spec;
        if spec.input_dim as usize != self.schema.num_features() {
            return Err(DetectorError::FeatureCount {
                version,
                model_features: spec.input_dim,
                schema_features: self.schema.num_features(),
            });
        }
        let calibrated = match (self.threshold_flag, self.alert_fpr) {
            (None, Some(alert_fpr)) => Some(
                card.calibration
                    .as_ref()
                    .and_then(|calibration| calibration.threshold_for(alert_fpr))
                    .copied()
                    .ok_or(DetectorError::NoCalibration { version, alert_fpr })?,
            ),
            _ => None,
        };
        let threshold = match (self.threshold_flag, calibrated, spec.is_autoencoder()) {
            (Some(threshold), _, _) => threshold,
            (None, Some(calibrated), _) => calibrated.threshold,
            (None, None, false) => CLASSIFIER_THRESHOLD,
            (None, None, true) => stored_threshold.ok_or(DetectorError::NoThreshold { version })?,
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
            alert_fpr: calibrated.map(|entry| entry.target_fpr),
            sha256: card.sha256,
            calibration: card.calibration,
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
