//! The model registry: published model versions, one safetensors object and
//! one JSON model card per version in the artifact store. A version exists
//! once its card does; the card's sha256 is checked on every load. The round
//! state (open round, round history) sits beside it in the [`StateStore`].
//!
//! # Commit protocol
//!
//! A new version is durable, and may be announced, once
//! [`ModelRegistry::store_new`] returns. How it gets there depends on the
//! store:
//!
//! - Local store (a directory), in [`ModelRegistry::store_new`]:
//!   1. the files of an earlier attempt at the same version (one that
//!      failed, or was cut short by a crash, and so was never announced)
//!      are removed, and the directory fsynced, if there are any;
//!   2. the weights are written under a temporary name
//!      (`.model-v….safetensors.tmp-…`, which
//!      [`ModelRegistry::latest_version`] never counts) while their sha256
//!      is computed;
//!   3. the weights' fsync and the card's write and fsync (its temporary
//!      file, `.model-v….json.tmp-…`) run at once, on two threads;
//!   4. the weights are renamed into place, then the card;
//!   5. the directory is fsynced once, which makes both renames durable.
//!
//!   Two fsync latencies in a row instead of four (each file alone: fsync,
//!   rename, directory fsync). Before step 5 a crash may keep any subset of
//!   the two renames, as filesystems need not persist renames in the order
//!   they were made: neither (the version was never written), the weights
//!   alone (a file no card lists, removed by step 1 when the version is
//!   written again), both (a complete version, not yet announced), or the
//!   card alone: a torn version, never announced, which
//!   [`ModelRegistry::recover_torn_latest`] removes at startup. Both files'
//!   contents were fsynced before either rename, so a file present under
//!   its final name is complete. Each version's step 5 returned before the
//!   next version was built, so only the latest version can be torn, and
//!   only when the version before it is whole; a card whose weights are
//!   missing in any other case is a damaged store, an error.
//! - Object stores (S3, memory): [`ModelRegistry::store`] puts the weights,
//!   then the card, each put atomic and durable once acknowledged, so a card
//!   never exists without its weights and there is nothing to recover. A
//!   missing weights object there is damage from outside: loading it fails,
//!   naming the object, rather than rolling back to a version number that
//!   participants may already have been announced.
//!
//! The round history (`StateStore::append_round`) is appended after a
//! version is announced, off the round's critical path; a crash in between
//! loses at most the records of the latest versions, which
//! [`ModelRegistry::recover_round_history`] rebuilds from their cards at
//! startup.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use fedshield_core::CoreError;
use fedshield_core::ModelVersion;
use fedshield_core::card::ModelCard;
use fedshield_core::fsutil::{self, StagedFile};
use fedshield_core::model::weights::ModelWeights;
use tracing::warn;

use crate::artifacts::ArtifactStore;
use crate::error::{CoordinatorError, Result};
// The records live with the state store that keeps them; re-exported here,
// where callers have always found them.
use crate::store::{DirectoryStore, StateStore};
pub use crate::store::{OpenRoundRecord, RoundRecord};

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

/// Removes those of `paths` that exist, card first, and fsyncs their
/// directory if any was removed.
///
/// [`ModelRegistry::store_new`] writes a version again only after an
/// attempt that failed or was cut short by a crash, which was never
/// announced. Its files must be gone, durably, before the new ones are
/// renamed into place: a crash before the single directory fsync may keep
/// one new rename and not the other, and an old card beside new weights (or
/// new card beside old weights) would be a version whose sha256 does not
/// match, not one the recovery can recognize as torn.
fn remove_leftovers_durably(paths: &[&Path]) -> Result<()> {
    let mut removed_any = false;
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => removed_any = true,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CoreError::Io {
                    path: path.to_path_buf(),
                    source,
                }
                .into());
            }
        }
    }
    if let (true, Some(path)) = (removed_any, paths.first()) {
        fsutil::sync_directory(fsutil::parent_directory(path))?;
    }
    Ok(())
}

/// Returns whether a file exists at `path`.
fn file_exists(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CoreError::Io {
            path: path.to_path_buf(),
            source,
        }
        .into()),
    }
}

/// Reason of a round record rebuilt from its model card after a crash
/// (see [`ModelRegistry::recover_round_history`]).
pub const RECOVERED_ROUND_REASON: &str =
    "recorded from its model card after a restart (the record was lost in a crash)";

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

    /// The error of a blocking task on the artifact store that panicked or
    /// was cancelled (`what`: "storing", "recovery").
    fn task_failed(&self, what: &str, error: &tokio::task::JoinError) -> CoordinatorError {
        CoordinatorError::Artifact {
            location: self.artifacts.location().to_string(),
            reason: format!("{what} task failed: {error}"),
        }
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
    /// it to the sha256 of the weights, writes the weights and the card, and
    /// returns the model once both are durable (see the module's commit
    /// protocol). In a local store the weights are streamed to their file
    /// while a second thread hashes them (no file image in memory, one pass
    /// over the parameters per core), and the card is written and fsynced
    /// while the weights are; other stores get [`Self::store`]'s ordered puts.
    ///
    /// # Errors
    /// A store error if either object cannot be written. A local store may
    /// then hold the version's weights without its card, or both without
    /// their directory fsync: the version counts as unwritten, and storing
    /// it again replaces them.
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
            remove_leftovers_durably(&[&card_path, &weights_path])?;
            let (staged_weights, sha256) = model.weights.stage_safetensors_hashed(
                &weights_path,
                version_metadata(model.version),
                SHA256_METADATA_KEY,
            )?;
            model.card.sha256 = sha256;
            let card_bytes = card_json(&model.card);
            // The card's fsync runs on a second thread while this one waits
            // for the weights' fsync: one fsync latency for both files.
            let (weights_synced, staged_card) = std::thread::scope(|scope| {
                let card_writer = scope.spawn(|| -> Result<StagedFile> {
                    let staged_card = StagedFile::write(&card_path, |temp_path| {
                        std::fs::File::create(temp_path)?.write_all(&card_bytes)
                    })?;
                    staged_card.sync()?;
                    Ok(staged_card)
                });
                let weights_synced = staged_weights.sync();
                let staged_card = card_writer
                    .join()
                    .expect("writing a model card does not panic");
                (weights_synced, staged_card)
            });
            // On an error the staged files are dropped, which removes them.
            weights_synced?;
            let staged_card = staged_card?;
            // Weights, then card: a crash before the directory fsync may keep
            // either rename without the other (see the module documentation).
            staged_weights.commit()?;
            staged_card.commit()?;
            fsutil::sync_directory(fsutil::parent_directory(&card_path))?;
            Ok(model)
        })
        .await
        .map_err(|error| self.task_failed("storing", &error))?
    }

    /// Removes the latest version of a local store if it is torn: its card
    /// exists, its weights file does not, and the version before it has
    /// both. Only a crash in the middle of [`Self::store_new`] leaves that
    /// (see the module's commit protocol), and such a version was never
    /// announced, so the store resumes from the version before it. Returns
    /// the version removed, if any. Call it once at startup, before
    /// [`Self::latest_version`], while no version is being written.
    ///
    /// Anything else is left for [`Self::load`] to report: a version with
    /// its weights is not torn (its sha256 is checked on load), and version
    /// 0 is written by [`Self::store`], whose puts are ordered.
    ///
    /// Object stores are left as they are: their ordered puts never leave a
    /// card without its weights, so a missing weights object there is
    /// reported by [`Self::load`] instead.
    ///
    /// # Errors
    /// A store error if the store cannot be listed or read or the card
    /// cannot be removed; [`CoordinatorError::Artifact`] naming a file of
    /// the version before the latest if the latest lacks its weights and
    /// that version is incomplete too: the store is damaged, not torn, and
    /// nothing is removed.
    pub async fn recover_torn_latest(&self) -> Result<Option<ModelVersion>> {
        let Some(latest) = self.latest_version().await? else {
            return Ok(None);
        };
        let Some(previous) = latest.0.checked_sub(1).map(ModelVersion) else {
            return Ok(None);
        };
        let (Some(weights_path), Some(card_path), Some(previous_weights), Some(previous_card)) = (
            self.artifacts.local_path(&weights_name(latest)),
            self.artifacts.local_path(&card_name(latest)),
            self.artifacts.local_path(&weights_name(previous)),
            self.artifacts.local_path(&card_name(previous)),
        ) else {
            return Ok(None);
        };
        let location = self.artifacts.location().trim_end_matches('/').to_string();
        let card_to_remove = card_path.clone();
        let removed = tokio::task::spawn_blocking(move || -> Result<bool> {
            if file_exists(&weights_path)? {
                return Ok(false);
            }
            for (path, name) in [
                (&previous_weights, weights_name(previous)),
                (&previous_card, card_name(previous)),
            ] {
                if !file_exists(path)? {
                    return Err(CoordinatorError::Artifact {
                        location: format!("{location}/{name}"),
                        reason: format!(
                            "missing, and the latest version {latest} lacks its weights file too: the store is damaged, not torn by a crash"
                        ),
                    });
                }
            }
            std::fs::remove_file(&card_to_remove).map_err(|source| CoreError::Io {
                path: card_to_remove.clone(),
                source,
            })?;
            fsutil::sync_directory(fsutil::parent_directory(&card_to_remove))?;
            Ok(true)
        })
        .await
        .map_err(|error| self.task_failed("recovery", &error))??;
        if !removed {
            return Ok(None);
        }
        warn!(
            version = %latest,
            card = %card_path.display(),
            "removed the card of the latest version, whose weights file is missing: a publication torn by a crash, never announced; resuming from the version before"
        );
        Ok(Some(latest))
    }

    /// Appends to the round history the records of the rounds that
    /// published `latest` and the versions before it whose records are not
    /// there: the history is appended after a version is announced, so a
    /// crash may lose the last records. Records are appended in round order,
    /// so the missing ones are those of versions whose round came after the
    /// last recorded round; each is rebuilt from its card (contributors,
    /// base version, creation time; the duration is unknown and recorded as
    /// 0). Returns how many were appended.
    ///
    /// # Errors
    /// A store error if the history cannot be read or written, or a card
    /// cannot be loaded.
    pub async fn recover_round_history(&self, latest: &ModelCard) -> Result<usize> {
        let (last_records, _, _) = self.state.round_history(1)?;
        let last_recorded_round = last_records.last().map(|record| record.round_id);
        let mut missing = Vec::new();
        let mut card = latest.clone();
        while let Some(round_id) = card.round_id
            && last_recorded_round.is_none_or(|last| round_id > last)
        {
            missing.push(RoundRecord {
                round_id,
                base_version: card.parent.unwrap_or(0),
                published: Some(card.version),
                contributors: card.contributors.clone(),
                duration_ms: 0,
                reason: RECOVERED_ROUND_REASON.to_string(),
                finished_unix_ms: card.created_unix_ms,
            });
            let Some(parent) = card.parent else {
                break;
            };
            card = self.load_card(ModelVersion(parent)).await?;
        }
        for record in missing.iter().rev() {
            warn!(
                round = record.round_id,
                version = record.published,
                "round missing from the history after a crash; recorded from its model card"
            );
            self.state.append_round(record)?;
        }
        Ok(missing.len())
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;

    use fedshield_core::{ModelSpec, TrainingPlan};

    use super::*;
    use crate::config::CoordinatorConfig;

    fn spec() -> ModelSpec {
        ModelSpec::mlp(4, vec![3], 2)
    }

    /// Returns version `version`, published by round `version`, with its
    /// card's sha256 not filled in (as [`ModelRegistry::store_new`] takes it).
    fn unhashed_model(version: u64) -> PublishedModel {
        let weights = ModelWeights::init(spec(), version).unwrap();
        PublishedModel {
            version: ModelVersion(version),
            card: ModelCard {
                version,
                parent: version.checked_sub(1),
                sha256: String::new(),
                num_params: weights.params.len() as u64,
                spec: spec(),
                round_id: (version > 0).then_some(version),
                contributors: vec!["org-a".to_string(), "org-b".to_string()],
                num_examples: 20,
                plan: TrainingPlan::new(),
                created_unix_ms: 1_000 + version,
                feature_schema: None,
                feature_schema_sha256: None,
                metrics: None,
                privacy: None,
                aggregation: None,
                calibration: None,
            },
            weights,
        }
    }

    /// Returns a local registry in `data_dir` holding versions
    /// `0..=latest`: version 0 stored as the coordinator stores it, the
    /// others as rounds publish them.
    async fn registry_with_versions(data_dir: &Path, latest: u64) -> ModelRegistry {
        let registry = ModelRegistry::open_local(data_dir).unwrap();
        let mut initial = unhashed_model(0);
        initial.card.sha256 = initial.weights.sha256();
        registry.store(&initial).await.unwrap();
        for version in 1..=latest {
            registry.store_new(unhashed_model(version)).await.unwrap();
        }
        registry
    }

    fn models_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("models")
    }

    fn file_names(directory: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Log lines written while it is installed on this thread (the tests
    /// run on a current-thread runtime).
    #[derive(Clone, Default)]
    struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

    impl CapturedLogs {
        fn install(&self) -> tracing::subscriber::DefaultGuard {
            let logs = self.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || logs.clone())
                .finish();
            tracing::subscriber::set_default(subscriber)
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl std::io::Write for CapturedLogs {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn store_new_leaves_no_temporary_files_and_its_version_loads_verified() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry_with_versions(dir.path(), 2).await;
        assert_eq!(
            file_names(&models_dir(dir.path())),
            [
                "model-v00000000.json",
                "model-v00000000.safetensors",
                "model-v00000001.json",
                "model-v00000001.safetensors",
                "model-v00000002.json",
                "model-v00000002.safetensors",
            ]
        );
        let loaded = registry.load(ModelVersion(2)).await.unwrap();
        let expected = unhashed_model(2);
        assert_eq!(loaded.weights, expected.weights);
        assert_eq!(loaded.card.sha256, expected.weights.sha256());
        assert_eq!(loaded.card.contributors, expected.card.contributors);
        // A temporary file a crash left behind is not a version.
        std::fs::write(
            models_dir(dir.path()).join(".model-v00000003.json.tmp-1-0"),
            b"{",
        )
        .unwrap();
        std::fs::write(
            models_dir(dir.path()).join(".model-v00000003.safetensors.tmp-1-1"),
            b"",
        )
        .unwrap();
        assert_eq!(
            registry.latest_version().await.unwrap(),
            Some(ModelVersion(2))
        );
        assert_eq!(registry.recover_torn_latest().await.unwrap(), None);
    }

    #[tokio::test]
    async fn store_new_replaces_the_files_of_an_earlier_failed_attempt_at_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry_with_versions(dir.path(), 1).await;
        // What a failed attempt at version 2 may leave: its weights renamed,
        // its card too, without the directory fsync.
        let stale = unhashed_model(2);
        std::fs::write(
            models_dir(dir.path()).join(weights_name(ModelVersion(2))),
            b"stale weights",
        )
        .unwrap();
        std::fs::write(
            models_dir(dir.path()).join(card_name(ModelVersion(2))),
            card_json(&stale.card),
        )
        .unwrap();
        registry.store_new(unhashed_model(2)).await.unwrap();
        let loaded = registry.load(ModelVersion(2)).await.unwrap();
        assert_eq!(loaded.weights, unhashed_model(2).weights);
        assert_eq!(file_names(&models_dir(dir.path())).len(), 6);
    }

    #[tokio::test]
    async fn a_torn_latest_version_is_removed_and_the_coordinator_resumes_from_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry_with_versions(dir.path(), 2).await;
        // A crash before the directory fsync kept version 2's card rename
        // and lost its weights rename.
        std::fs::remove_file(models_dir(dir.path()).join(weights_name(ModelVersion(2)))).unwrap();
        let logs = CapturedLogs::default();
        let _logging = logs.install();
        let config = CoordinatorConfig::for_test(dir.path().to_path_buf(), spec());
        let model = crate::server::load_or_init_model(&config, &registry)
            .await
            .unwrap();
        assert_eq!(model.version, ModelVersion(1));
        assert_eq!(model.weights, unhashed_model(1).weights);
        assert!(
            !models_dir(dir.path())
                .join(card_name(ModelVersion(2)))
                .exists()
        );
        assert_eq!(
            registry.latest_version().await.unwrap(),
            Some(ModelVersion(1))
        );
        let text = logs.text();
        let line = text
            .lines()
            .find(|line| line.contains("removed the card of the latest version"))
            .unwrap_or_else(|| panic!("no warning about the torn version:\n{text}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("version=2"), "{line}");
        assert!(line.contains("model-v00000002.json"), "{line}");
        // Version 2 was never announced, so the history gets no record of it.
        let (records, num_completed, _) = registry.round_history(10).unwrap();
        assert_eq!(num_completed, 1);
        assert_eq!(records[0].published, Some(1));
        // The next start finds nothing to repair.
        assert_eq!(registry.recover_torn_latest().await.unwrap(), None);
        // Version 2 can be published again.
        registry.store_new(unhashed_model(2)).await.unwrap();
        registry.load(ModelVersion(2)).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_weights_file_under_an_older_version_is_still_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry_with_versions(dir.path(), 2).await;
        std::fs::remove_file(models_dir(dir.path()).join(weights_name(ModelVersion(1)))).unwrap();
        // Only the latest version can be torn: nothing is removed.
        assert_eq!(registry.recover_torn_latest().await.unwrap(), None);
        assert_eq!(file_names(&models_dir(dir.path())).len(), 5);
        let error = registry
            .load(ModelVersion(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("model-v00000001.safetensors"), "{error}");
        assert!(error.contains("missing"), "{error}");
        // With the latest version's weights gone as well, the store is
        // damaged rather than torn: startup fails naming the older file,
        // and removes nothing.
        std::fs::remove_file(models_dir(dir.path()).join(weights_name(ModelVersion(2)))).unwrap();
        let config = CoordinatorConfig::for_test(dir.path().to_path_buf(), spec());
        let error = crate::server::load_or_init_model(&config, &registry)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("model-v00000001.safetensors"), "{error}");
        assert!(error.contains("missing"), "{error}");
        assert!(
            models_dir(dir.path())
                .join(card_name(ModelVersion(2)))
                .exists()
        );
    }

    #[tokio::test]
    async fn the_round_history_gets_the_records_of_published_versions_a_crash_lost() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry_with_versions(dir.path(), 3).await;
        let recorded = RoundRecord {
            round_id: 1,
            base_version: 0,
            published: Some(1),
            contributors: vec!["org-a".to_string()],
            duration_ms: 12,
            reason: "test".to_string(),
            finished_unix_ms: 1,
        };
        registry.append_round(&recorded).unwrap();
        // Versions 2 and 3 were announced; their records were still queued.
        let latest = registry.load_card(ModelVersion(3)).await.unwrap();
        assert_eq!(registry.recover_round_history(&latest).await.unwrap(), 2);
        let (records, num_completed, num_abandoned) = registry.round_history(10).unwrap();
        assert_eq!((num_completed, num_abandoned), (3, 0));
        assert_eq!(records[0], recorded);
        for (record, version) in records[1..].iter().zip([2, 3]) {
            let card = unhashed_model(version).card;
            assert_eq!(record.round_id, version);
            assert_eq!(record.base_version, version - 1);
            assert_eq!(record.published, Some(version));
            assert_eq!(record.contributors, card.contributors);
            assert_eq!(record.finished_unix_ms, card.created_unix_ms);
            assert_eq!(record.reason, RECOVERED_ROUND_REASON);
        }
        // Complete now: nothing more to add.
        assert_eq!(registry.recover_round_history(&latest).await.unwrap(), 0);
        // A later round (abandoned) recorded after the latest version's
        // round means that one's record is there too.
        let abandoned = RoundRecord {
            round_id: 4,
            base_version: 3,
            published: None,
            ..recorded
        };
        registry.append_round(&abandoned).unwrap();
        assert_eq!(registry.recover_round_history(&latest).await.unwrap(), 0);
    }
}
