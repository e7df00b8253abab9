//! A cache of downloaded model versions (a participant's, a detector's), one
//! safetensors file per version, checked against the expected sha256 on every read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::error::Result;
use crate::ids::ModelVersion;
use crate::model::weights::ModelWeights;

/// Model versions cached in a directory.
#[derive(Debug, Clone)]
pub struct ModelCache {
    directory: PathBuf,
}

impl ModelCache {
    /// Returns the cache stored in `directory`.
    pub fn new(directory: &Path) -> Self {
        ModelCache {
            directory: directory.to_path_buf(),
        }
    }

    fn path(&self, version: ModelVersion) -> PathBuf {
        self.directory
            .join(format!("model-v{:08}.safetensors", version.0))
    }

    /// Returns the cached version if present and its sha256 is `expected_sha256`.
    /// A corrupt or mismatching file is removed and reported as a miss.
    pub fn get(&self, version: ModelVersion, expected_sha256: &str) -> Option<ModelWeights> {
        let path = self.path(version);
        if !path.exists() {
            return None;
        }
        match ModelWeights::load_safetensors(&path) {
            Ok(weights) if weights.sha256() == expected_sha256 => Some(weights),
            Ok(_) => {
                warn!(version = %version, path = %path.display(), "cached model has the wrong sha256; downloading again");
                let _ = std::fs::remove_file(&path);
                None
            }
            Err(error) => {
                warn!(version = %version, error = %error, "cached model is unreadable; downloading again");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a version atomically.
    ///
    /// # Errors
    /// [`CoreError::Io`](crate::CoreError::Io) naming the file.
    pub fn put(&self, version: ModelVersion, weights: &ModelWeights) -> Result<()> {
        let mut metadata = HashMap::new();
        metadata.insert("fedshield.version".to_string(), version.0.to_string());
        weights.save_safetensors(&self.path(version), metadata)?;
        Ok(())
    }
}
