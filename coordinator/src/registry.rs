//! The model registry: published model versions on disk, one safetensors file
//! and one JSON model card per version, both written atomically. The card is
//! written last, so a version exists once its card does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fedshield_core::metrics::BinaryMetrics;
use fedshield_core::privacy::ModelPrivacy;
use fedshield_core::weights::ModelWeights;
use fedshield_core::{CoreError, ModelSpec, ModelVersion, TrainingPlan};
use serde::{Deserialize, Serialize};

use crate::error::{CoordinatorError, Result};

/// What a published model version is: provenance and integrity data that
/// travels with the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub version: u64,
    /// The version this one was aggregated from (none for version 0).
    pub parent: Option<u64>,
    /// sha256 (hex) of the parameters' little-endian float32 bytes.
    pub sha256: String,
    pub num_params: u64,
    pub spec: ModelSpec,
    /// The round that produced this version (none for version 0).
    pub round_id: Option<u64>,
    /// Participants whose updates were averaged in.
    pub contributors: Vec<String>,
    /// Sum of the contributors' declared example counts.
    pub num_examples: u64,
    /// The local training plan of the round.
    pub plan: TrainingPlan,
    pub created_unix_ms: u64,
    /// The feature schema (TOML) the model's inputs come from, so that a
    /// detector can featurize events exactly as participants did.
    #[serde(default)]
    pub feature_schema: Option<String>,
    /// sha256 of the feature schema's canonical TOML.
    #[serde(default)]
    pub feature_schema_sha256: Option<String>,
    /// Metrics on the coordinator's evaluation set, when one is configured.
    #[serde(default)]
    pub metrics: Option<BinaryMetrics>,
    /// The model's differential-privacy guarantee: per participant whose
    /// data went into it, and the worst of them.
    #[serde(default)]
    pub privacy: Option<ModelPrivacy>,
    /// How the round's updates were combined.
    #[serde(default)]
    pub aggregation: Option<AggregationSummary>,
}

/// What the aggregation rule did in the round that produced a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregationSummary {
    /// The rule, as configured (`fedavg`, `norm-bound:5`, `trimmed-mean:0.2`, `median`, `multi-krum:1`).
    pub rule: String,
    /// Updates the rule received.
    pub num_updates: usize,
    /// Updates norm bounding scaled down.
    pub num_clipped: usize,
    /// Contributors whose updates Multi-Krum left out.
    pub rejected: Vec<String>,
}

/// The round that was open, as recorded on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRoundRecord {
    pub round_id: u64,
    /// The version the round trains; the record is stale once a newer one exists.
    pub base_version: u64,
    pub opened_unix_ms: u64,
}

/// A finished round, as the round history file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundRecord {
    pub round_id: u64,
    pub base_version: u64,
    /// The version it published; `None` for an abandoned round.
    pub published: Option<u64>,
    pub contributors: Vec<String>,
    pub duration_ms: u64,
    pub reason: String,
    pub finished_unix_ms: u64,
}

/// One published model version held in memory.
#[derive(Debug)]
pub struct PublishedModel {
    pub version: ModelVersion,
    pub weights: ModelWeights,
    pub card: ModelCard,
}

/// Model versions stored under one directory.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    directory: PathBuf,
}

impl ModelRegistry {
    /// Returns the registry stored in `directory`, creating it if needed.
    ///
    /// # Errors
    /// [`CoordinatorError::Store`] if the directory cannot be created.
    pub fn open(directory: &Path) -> Result<Self> {
        std::fs::create_dir_all(directory).map_err(|source| CoreError::Io {
            path: directory.to_path_buf(),
            source,
        })?;
        Ok(ModelRegistry {
            directory: directory.to_path_buf(),
        })
    }

    /// Returns the path of a version's weights.
    pub fn weights_path(&self, version: ModelVersion) -> PathBuf {
        self.directory
            .join(format!("model-v{:08}.safetensors", version.0))
    }

    /// Returns the path of a version's model card.
    pub fn card_path(&self, version: ModelVersion) -> PathBuf {
        self.directory.join(format!("model-v{:08}.json", version.0))
    }

    /// Writes a version: weights first, then the card that makes it visible.
    ///
    /// # Errors
    /// [`CoordinatorError::Store`] if either file cannot be written.
    pub fn store(&self, model: &PublishedModel) -> Result<()> {
        let mut metadata = HashMap::new();
        metadata.insert("fedshield.version".to_string(), model.version.0.to_string());
        metadata.insert("fedshield.sha256".to_string(), model.card.sha256.clone());
        model
            .weights
            .save_safetensors(&self.weights_path(model.version), metadata)?;
        let card_json =
            serde_json::to_vec_pretty(&model.card).expect("a model card serializes to json");
        fedshield_core::fsutil::write_atomic(&self.card_path(model.version), &card_json)?;
        Ok(())
    }

    /// Returns the path of the record of the open round.
    fn open_round_path(&self) -> PathBuf {
        self.directory.join("open-round.json")
    }

    /// Records (atomically) that `round` is open, so that a coordinator
    /// restarted after a crash re-opens it.
    ///
    /// # Errors
    /// [`CoordinatorError::Store`] if the record cannot be written.
    pub fn record_open_round(&self, round: &OpenRoundRecord) -> Result<()> {
        let json = serde_json::to_vec(round).expect("a round record serializes to json");
        fedshield_core::fsutil::write_atomic(&self.open_round_path(), &json)?;
        Ok(())
    }

    /// Returns the last recorded open round, if any.
    ///
    /// # Errors
    /// [`CoordinatorError::Store`] if the record exists and cannot be read.
    pub fn open_round_record(&self) -> Result<Option<OpenRoundRecord>> {
        let path = self.open_round_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CoreError::Io { path, source }.into()),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            CoreError::MalformedModelFile {
                path,
                reason: format!("open round record: {error}"),
            }
            .into()
        })
    }

    /// Returns the path of the round history (JSON Lines, append-only).
    fn round_history_path(&self) -> PathBuf {
        self.directory.join("rounds.jsonl")
    }

    /// Appends a finished round to the history and makes it durable.
    ///
    /// # Errors
    /// [`CoordinatorError::Store`] if the history cannot be written.
    pub fn append_round(&self, record: &RoundRecord) -> Result<()> {
        use std::io::Write;
        let path = self.round_history_path();
        let mut line = serde_json::to_vec(record).expect("a round record serializes to json");
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| {
                // A torn last line (a crash during an earlier append) is cut
                // off first, so that this record starts on a line of its own.
                let contents = std::fs::read(&path)?;
                if contents.last().is_some_and(|&byte| byte != b'\n') {
                    let keep = contents
                        .iter()
                        .rposition(|&byte| byte == b'\n')
                        .map_or(0, |index| index + 1);
                    file.set_len(keep as u64)?;
                }
                file.write_all(&line)?;
                file.sync_data()
            })
            .map_err(|source| CoreError::Io { path, source })?;
        Ok(())
    }

    /// Returns the last `limit` finished rounds, oldest first, and the number
    /// of completed and abandoned rounds in the whole history. A torn last
    /// line (a crash during the append) is left out.
    ///
    /// # Errors
    /// [`CoordinatorError::Store`] if the history exists and cannot be read,
    /// or a complete line is not a round record (named by line number).
    pub fn round_history(&self, limit: usize) -> Result<(Vec<RoundRecord>, u64, u64)> {
        let path = self.round_history_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), 0, 0));
            }
            Err(source) => return Err(CoreError::Io { path, source }.into()),
        };
        let complete = &text[..text.rfind('\n').map_or(0, |index| index + 1)];
        let mut records = std::collections::VecDeque::new();
        let (mut num_completed, mut num_abandoned) = (0u64, 0u64);
        for (index, line) in complete.lines().enumerate() {
            let record: RoundRecord =
                serde_json::from_str(line).map_err(|error| CoreError::MalformedModelFile {
                    path: path.clone(),
                    reason: format!("line {} is not a round record: {error}", index + 1),
                })?;
            if record.published.is_some() {
                num_completed += 1;
            } else {
                num_abandoned += 1;
            }
            if records.len() == limit {
                records.pop_front();
            }
            records.push_back(record);
        }
        Ok((records.into_iter().collect(), num_completed, num_abandoned))
    }

    /// Returns the highest version with a card, if any.
    ///
    /// # Errors
    /// [`CoordinatorError::Store`] if the directory cannot be listed.
    pub fn latest_version(&self) -> Result<Option<ModelVersion>> {
        let entries = std::fs::read_dir(&self.directory).map_err(|source| CoreError::Io {
            path: self.directory.clone(),
            source,
        })?;
        let latest = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.strip_prefix("model-v")?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .map(ModelVersion);
        Ok(latest)
    }

    /// Loads a version and checks its weights against the card's sha256.
    ///
    /// # Errors
    /// [`CoordinatorError::UnknownModelVersion`] if it was never published,
    /// [`CoordinatorError::Store`] if its files are unreadable or corrupt.
    pub fn load(&self, version: ModelVersion) -> Result<PublishedModel> {
        let card_path = self.card_path(version);
        let card_bytes = match std::fs::read(&card_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(CoordinatorError::UnknownModelVersion(version));
            }
            Err(source) => {
                return Err(CoreError::Io {
                    path: card_path,
                    source,
                }
                .into());
            }
        };
        let card: ModelCard =
            serde_json::from_slice(&card_bytes).map_err(|error| CoreError::MalformedModelFile {
                path: card_path.clone(),
                reason: error.to_string(),
            })?;
        let weights_path = self.weights_path(version);
        let weights = ModelWeights::load_safetensors(&weights_path)?;
        let actual = weights.sha256();
        if actual != card.sha256 {
            return Err(CoreError::ChecksumMismatch {
                path: weights_path,
                expected: card.sha256,
                actual,
            }
            .into());
        }
        Ok(PublishedModel {
            version,
            weights,
            card,
        })
    }
}
