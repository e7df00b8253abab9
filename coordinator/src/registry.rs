//! The model registry: published model versions, one safetensors object and
//! one JSON model card per version in the artifact store, each written
//! atomically. The card is written last, so a version exists once its card
//! does; the card's sha256 is checked on every load. The round state (open
//! round, round history) sits beside it in the [`StateStore`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use fedshield_core::metrics::BinaryMetrics;
use fedshield_core::privacy::ModelPrivacy;
use fedshield_core::weights::ModelWeights;
use fedshield_core::{ModelSpec, ModelVersion, TrainingPlan};
use serde::{Deserialize, Serialize};

use crate::artifacts::ArtifactStore;
use crate::error::{CoordinatorError, Result};
use crate::store::{DirectoryStore, StateStore};

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

/// Published model versions and the round state of one coordinator.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    artifacts: ArtifactStore,
    state: Arc<dyn StateStore>,
}

/// Name of a version's weights in the artifact store.
pub fn weights_name(version: ModelVersion) -> String {
    format!("model-v{:08}.safetensors", version.0)
}

/// Metadata key of the weights file that holds the parameters' sha256.
const SHA256_METADATA_KEY: &str = "fedshield.sha256";

/// Returns the metadata every weights file carries besides the spec and
/// the sha256: the version.
fn version_metadata(version: ModelVersion) -> HashMap<String, String> {
    HashMap::from([("fedshield.version".to_string(), version.0.to_string())])
}

/// Returns a model card as stored: pretty-printed JSON.
fn card_json(card: &ModelCard) -> Vec<u8> {
    serde_json::to_vec_pretty(card).expect("a model card serializes to json")
}

/// Name of a version's model card in the artifact store.
pub fn card_name(version: ModelVersion) -> String {
    format!("model-v{:08}.json", version.0)
}

impl ModelRegistry {
    /// Returns the registry of a data directory with the embedded defaults:
    /// state in `<data_dir>/state`, artifacts in `<data_dir>/models`.
    ///
    /// # Errors
    /// A store error if either directory cannot be created.
    pub fn open_local(data_dir: &Path) -> Result<Self> {
        Self::open(data_dir, ArtifactStore::local(&data_dir.join("models"))?)
    }

    /// Returns the registry with state in `<data_dir>/state` and artifacts
    /// in `artifacts`.
    ///
    /// # Errors
    /// [`CoordinatorError::Store`] if the state directory cannot be created.
    pub fn open(data_dir: &Path, artifacts: ArtifactStore) -> Result<Self> {
        Ok(ModelRegistry {
            artifacts,
            state: Arc::new(DirectoryStore::open(&data_dir.join("state"))?),
        })
    }

    /// Returns the registry over explicit stores.
    pub fn with_stores(artifacts: ArtifactStore, state: Arc<dyn StateStore>) -> Self {
        ModelRegistry { artifacts, state }
    }

    /// Returns the artifact store.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// Returns the round state store.
    pub fn state(&self) -> &dyn StateStore {
        self.state.as_ref()
    }

    /// Writes a version: weights first, then the card that makes it visible.
    ///
    /// # Errors
    /// A store error if either object cannot be written.
    pub async fn store(&self, model: &PublishedModel) -> Result<()> {
        let mut metadata = version_metadata(model.version);
        metadata.insert(SHA256_METADATA_KEY.to_string(), model.card.sha256.clone());
        let weights = model.weights.to_safetensors(metadata)?;
        self.artifacts
            .put(&weights_name(model.version), Bytes::from(weights))
            .await?;
        self.artifacts
            .put(
                &card_name(model.version),
                Bytes::from(card_json(&model.card)),
            )
            .await
    }

    /// Writes a new version whose card's sha256 is not filled in yet: sets
    /// it to the sha256 of the weights, then writes the weights and the card
    /// as [`Self::store`] does, and returns the model. In a local store the
    /// weights are streamed to their file while a second thread hashes them
    /// (no file image in memory, one pass over the parameters per core).
    ///
    /// # Errors
    /// A store error if either object cannot be written.
    pub async fn store_new(&self, model: PublishedModel) -> Result<PublishedModel> {
        let (Some(weights_path), Some(card_path)) = (
            self.artifacts.local_path(&weights_name(model.version)),
            self.artifacts.local_path(&card_name(model.version)),
        ) else {
            let mut model = model;
            model.card.sha256 = model.weights.sha256();
            self.store(&model).await?;
            return Ok(model);
        };
        tokio::task::spawn_blocking(move || -> Result<PublishedModel> {
            let mut model = model;
            model.card.sha256 = model.weights.save_safetensors_hashed(
                &weights_path,
                version_metadata(model.version),
                SHA256_METADATA_KEY,
            )?;
            fedshield_core::fsutil::write_atomic(&card_path, &card_json(&model.card))?;
            Ok(model)
        })
        .await
        .map_err(|error| CoordinatorError::Artifact {
            location: self.artifacts.location().to_string(),
            reason: format!("storing task failed: {error}"),
        })?
    }

    /// Returns the highest version with a card, if any.
    ///
    /// # Errors
    /// A store error if the artifact store cannot be listed.
    pub async fn latest_version(&self) -> Result<Option<ModelVersion>> {
        let latest = self
            .artifacts
            .list()
            .await?
            .iter()
            .filter_map(|name| {
                name.strip_prefix("model-v")?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .map(ModelVersion);
        Ok(latest)
    }

    /// Returns a version's card and its stored safetensors bytes, after
    /// checking that the weights they hold match the card's sha256.
    ///
    /// # Errors
    /// [`CoordinatorError::UnknownModelVersion`] if it was never published,
    /// a store error if its objects are unreadable or corrupt (the message
    /// names the object and what is wrong).
    pub async fn load_verified(
        &self,
        version: ModelVersion,
    ) -> Result<(ModelCard, ModelWeights, Bytes)> {
        let card = self.load_card(version).await?;
        let corrupt = |name: &str, reason: String| CoordinatorError::Artifact {
            location: format!("{}/{name}", self.artifacts.location().trim_end_matches('/')),
            reason,
        };
        let weights_name = weights_name(version);
        let Some(bytes) = self.artifacts.get(&weights_name).await? else {
            return Err(corrupt(
                &weights_name,
                "missing, though its model card exists".to_string(),
            ));
        };
        let checked = bytes.clone();
        let weights = tokio::task::spawn_blocking(move || {
            let weights = ModelWeights::from_safetensors(&checked)?;
            let actual = weights.sha256();
            Ok::<_, String>((weights, actual))
        })
        .await
        .map_err(|error| corrupt(&weights_name, error.to_string()))?;
        let (weights, actual) = weights.map_err(|reason| {
            corrupt(&weights_name, format!("not a valid model file: {reason}"))
        })?;
        if actual != card.sha256 {
            return Err(corrupt(
                &weights_name,
                format!(
                    "sha256 is {actual}, its card says {}: the stored version is corrupted and is not served",
                    card.sha256
                ),
            ));
        }
        Ok((card, weights, bytes))
    }

    /// Loads only a version's model card (for status pages); the weights
    /// are neither read nor checked.
    ///
    /// # Errors
    /// [`CoordinatorError::UnknownModelVersion`] if it was never published,
    /// a store error if the card is unreadable or malformed.
    pub async fn load_card(&self, version: ModelVersion) -> Result<ModelCard> {
        let card_name = card_name(version);
        let Some(card_bytes) = self.artifacts.get(&card_name).await? else {
            return Err(CoordinatorError::UnknownModelVersion(version));
        };
        serde_json::from_slice(&card_bytes).map_err(|error| CoordinatorError::Artifact {
            location: format!(
                "{}/{card_name}",
                self.artifacts.location().trim_end_matches('/')
            ),
            reason: format!("not a model card: {error}"),
        })
    }

    /// Loads a version and checks its weights against the card's sha256.
    ///
    /// # Errors
    /// As [`ModelRegistry::load_verified`].
    pub async fn load(&self, version: ModelVersion) -> Result<PublishedModel> {
        let (card, weights, _) = self.load_verified(version).await?;
        Ok(PublishedModel {
            version,
            weights,
            card,
        })
    }

    /// See [`StateStore::record_open_round`].
    ///
    /// # Errors
    /// As the state store's.
    pub fn record_open_round(&self, round: &OpenRoundRecord) -> Result<()> {
        self.state.record_open_round(round)
    }

    /// See [`StateStore::open_round_record`].
    ///
    /// # Errors
    /// As the state store's.
    pub fn open_round_record(&self) -> Result<Option<OpenRoundRecord>> {
        self.state.open_round_record()
    }

    /// See [`StateStore::append_round`].
    ///
    /// # Errors
    /// As the state store's.
    pub fn append_round(&self, record: &RoundRecord) -> Result<()> {
        self.state.append_round(record)
    }

    /// See [`StateStore::round_history`].
    ///
    /// # Errors
    /// As the state store's.
    pub fn round_history(&self, limit: usize) -> Result<(Vec<RoundRecord>, u64, u64)> {
        self.state.round_history(limit)
    }
}
