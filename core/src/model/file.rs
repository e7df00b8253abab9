//! Model files as `fedshield train` writes them: safetensors weights whose
//! string metadata may also carry the feature schema and, for autoencoders,
//! the calibrated threshold. `fedshield evaluate` and the detector read them back.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{CoreError, Result};
use crate::model::weights::ModelWeights;

/// safetensors metadata key of an autoencoder's calibrated threshold.
pub const THRESHOLD_METADATA_KEY: &str = "fedshield.threshold";
/// safetensors metadata key of the feature schema (TOML).
pub const SCHEMA_METADATA_KEY: &str = "fedshield.feature_schema";

/// Loads a safetensors model and its string metadata.
///
/// # Errors
/// [`CoreError::ReadModelFile`] when the file cannot be read,
/// [`CoreError::NotAModel`] when it is not a fedshield model.
pub fn load_model_with_metadata(path: &Path) -> Result<(ModelWeights, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|source| CoreError::ReadModelFile {
        path: path.to_path_buf(),
        source,
    })?;
    let not_a_model = |reason: String| CoreError::NotAModel {
        path: path.to_path_buf(),
        reason,
    };
    let weights = ModelWeights::from_safetensors(&bytes).map_err(not_a_model)?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|error| not_a_model(error.to_string()))?;
    Ok((weights, metadata.metadata().clone().unwrap_or_default()))
}
