//! A local model file checked against its card; with follow mode, its
//! directory is watched for newer versions, as the coordinator's registry
//! writes them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fedshield_core::ModelVersion;
use fedshield_core::card::ModelCard;
use fedshield_core::model::file::{
    SCHEMA_METADATA_KEY, THRESHOLD_METADATA_KEY, load_model_with_metadata,
};
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::schema::Schema;

use crate::error::{DetectorError, Result};
use crate::release::{CardFacts, ModelRelease, ReleaseRules, load_schema_flag};

/// A model file with its card; with `--follow`, its directory is watched for
/// newer `model-v*.safetensors` files with their cards, as the coordinator's
/// registry writes them.
#[derive(Debug, Clone)]
pub struct LocalSource {
    directory: PathBuf,
    /// sha256 of the schema in use; a newer version must declare the same one (or none).
    schema_sha256: String,
    /// Versions that failed their checks, not tried again.
    refused: HashSet<u64>,
}

/// A model file checked against its card.
struct VerifiedModel {
    weights: ModelWeights,
    card: ModelCard,
    metadata: HashMap<String, String>,
}

impl LocalSource {
    /// Loads `model_path`, checks it against its card and resolves the
    /// schema: `schema_flag`, which must be the one the model declares, else
    /// the declared one.
    ///
    /// # Errors
    /// A model that cannot be loaded or fails its checks, or a schema that
    /// does not fit it.
    pub fn open(
        model_path: PathBuf,
        card_path: PathBuf,
        schema_flag: Option<PathBuf>,
        threshold_flag: Option<f64>,
        alert_fpr: Option<f64>,
    ) -> Result<(Self, ReleaseRules, ModelRelease)> {
        let model = load_verified(&model_path, &card_path)?;
        let declared = declared_schema(&model, &card_path)?;
        let declared_sha256 = model
            .card
            .feature_schema_sha256
            .clone()
            .or_else(|| declared.as_ref().map(Schema::sha256));
        let schema = match (&schema_flag, declared) {
            (Some(path), _) => {
                let schema = load_schema_flag(path)?;
                if let Some(expected) = &declared_sha256
                    && *expected != schema.sha256()
                {
                    return Err(DetectorError::SchemaFlagMismatch {
                        path: path.clone(),
                        flag_sha256: schema.sha256(),
                        version: ModelVersion(model.card.version),
                        declared_sha256: expected.clone(),
                        declared_by: card_path.display().to_string(),
                    });
                }
                schema
            }
            (None, Some(schema)) => schema,
            (None, None) => {
                return Err(DetectorError::NoLocalSchema {
                    card: card_path,
                    model: model_path,
                });
            }
        };
        let rules = ReleaseRules {
            schema,
            threshold_flag,
            alert_fpr,
        };
        let version = ModelVersion(model.card.version);
        let stored_threshold = stored_threshold(&model.metadata);
        let release = rules
            .release(
                version,
                model.weights,
                stored_threshold,
                CardFacts::of(&model.card),
            )
            .map_err(|source| DetectorError::Model {
                model: model_path.clone(),
                source: Box::new(source),
            })?;
        let directory = model_path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let source = LocalSource {
            directory,
            schema_sha256: rules.schema.sha256(),
            refused: HashSet::new(),
        };
        Ok((source, rules, release))
    }

    /// Returns the newest version in the directory if it is newer than
    /// `current` and passes its checks.
    ///
    /// # Errors
    /// A version that fails its checks (not tried again), or a directory
    /// that cannot be listed.
    pub async fn newer_release(
        &mut self,
        current: ModelVersion,
        rules: &Arc<ReleaseRules>,
    ) -> Result<Option<ModelRelease>> {
        let source = self.clone();
        let rules = rules.clone();
        let outcome = tokio::task::spawn_blocking(move || source.load_newest(current, &rules))
            .await
            .map_err(|source| DetectorError::Task {
                task: "loading the model",
                source,
            })?;
        if let Err(DetectorError::Refused { version, .. }) = &outcome {
            self.refused.insert(version.0);
        }
        outcome
    }

    /// The blocking part of [`Self::newer_release`]; an error about one
    /// version is [`DetectorError::Refused`].
    fn load_newest(
        &self,
        current: ModelVersion,
        rules: &ReleaseRules,
    ) -> Result<Option<ModelRelease>> {
        let newest = newest_stored_version(&self.directory)?;
        let Some(version) =
            newest.filter(|&version| version > current.0 && !self.refused.contains(&version))
        else {
            return Ok(None);
        };
        let weights_path = self
            .directory
            .join(format!("model-v{version:08}.safetensors"));
        let card_path = self.directory.join(format!("model-v{version:08}.json"));
        let load = || -> Result<ModelRelease> {
            let model = load_verified(&weights_path, &card_path)?;
            if model.card.version != version {
                return Err(DetectorError::CardVersion {
                    card: card_path.clone(),
                    card_version: model.card.version,
                    file_version: version,
                });
            }
            let declared = declared_schema(&model, &card_path)?;
            let declared_sha256 = model
                .card
                .feature_schema_sha256
                .clone()
                .or_else(|| declared.as_ref().map(Schema::sha256));
            if let Some(declared_sha256) = declared_sha256
                && declared_sha256 != self.schema_sha256
            {
                return Err(DetectorError::SchemaChanged {
                    declared: declared_sha256,
                    in_use: self.schema_sha256.clone(),
                });
            }
            let stored_threshold = stored_threshold(&model.metadata);
            rules.release(
                ModelVersion(version),
                model.weights,
                stored_threshold,
                CardFacts::of(&model.card),
            )
        };
        load().map(Some).map_err(|error| DetectorError::Refused {
            version: ModelVersion(version),
            source: Box::new(error),
        })
    }
}

/// Returns the highest version in `directory` with both a weights file and a
/// card (the registry writes the card last).
fn newest_stored_version(directory: &Path) -> Result<Option<u64>> {
    let entries = std::fs::read_dir(directory).map_err(|source| DetectorError::ListModels {
        directory: directory.to_path_buf(),
        source,
    })?;
    let newest = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .strip_prefix("model-v")?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()?;
            directory
                .join(format!("model-v{version:08}.safetensors"))
                .is_file()
                .then_some(version)
        })
        .max();
    Ok(newest)
}

/// Reads a model card.
fn read_card(path: &Path) -> Result<ModelCard> {
    let bytes = std::fs::read(path).map_err(|source| DetectorError::ReadCard {
        card: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| DetectorError::NotACard {
        card: path.to_path_buf(),
        source,
    })
}

/// Loads a model file and checks its parameters against its card's sha256 and spec.
fn load_verified(weights_path: &Path, card_path: &Path) -> Result<VerifiedModel> {
    let card = read_card(card_path)?;
    let (weights, metadata) = load_model_with_metadata(weights_path)?;
    let actual = weights.sha256();
    if actual != card.sha256 {
        return Err(DetectorError::Sha256Mismatch {
            model: weights_path.to_path_buf(),
            card: card_path.to_path_buf(),
            expected: card.sha256,
            actual,
        });
    }
    if weights.spec != card.spec {
        return Err(DetectorError::SpecMismatch {
            model: weights_path.to_path_buf(),
            model_spec: Box::new(weights.spec),
            card: card_path.to_path_buf(),
            card_spec: Box::new(card.spec),
        });
    }
    Ok(VerifiedModel {
        weights,
        card,
        metadata,
    })
}

/// Returns the feature schema a model declares: its card's (checked against
/// the card's sha256), else the one `fedshield train` stores in the file.
fn declared_schema(model: &VerifiedModel, card_path: &Path) -> Result<Option<Schema>> {
    if let Some(text) = &model.card.feature_schema {
        let schema = Schema::from_toml_str(text).map_err(|source| DetectorError::CardSchema {
            card: card_path.to_path_buf(),
            source,
        })?;
        if let Some(expected) = &model.card.feature_schema_sha256
            && *expected != schema.sha256()
        {
            return Err(DetectorError::CardSchemaSha256 {
                card: card_path.to_path_buf(),
                expected: expected.clone(),
                actual: schema.sha256(),
            });
        }
        return Ok(Some(schema));
    }
    match model.metadata.get(SCHEMA_METADATA_KEY) {
        Some(text) => Schema::from_toml_str(text)
            .map(Some)
            .map_err(DetectorError::ModelFileSchema),
        None => Ok(None),
    }
}

/// Returns the autoencoder threshold `fedshield train` stores in the model file.
fn stored_threshold(metadata: &HashMap<String, String>) -> Option<f64> {
    metadata
        .get(THRESHOLD_METADATA_KEY)
        .and_then(|value| value.parse::<f64>().ok())
        .filter(|threshold| threshold.is_finite())
}
