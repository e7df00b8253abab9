//! The coordinator's own state: the round that is open and the history of
//! finished rounds. [`StateStore`] is the small interface the engine needs;
//! [`DirectoryStore`] is the embedded default, plain files in the data
//! directory, written atomically (temp file, fsync, rename) or appended and
//! fsynced, so a crash at any point leaves a readable state.

use std::path::{Path, PathBuf};

use fedshield_core::CoreError;

use serde::{Deserialize, Serialize};

use crate::error::Result;

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

/// Durable coordinator state other than model artifacts.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Records (durably) that `round` is open, so that a coordinator
    /// restarted after a crash re-opens it.
    ///
    /// # Errors
    /// [`crate::CoordinatorError::Store`] if the record cannot be written.
    fn record_open_round(&self, round: &OpenRoundRecord) -> Result<()>;

    /// Returns the last recorded open round, if any.
    ///
    /// # Errors
    /// [`crate::CoordinatorError::Store`] if the record exists and cannot be read.
    fn open_round_record(&self) -> Result<Option<OpenRoundRecord>>;

    /// Appends a finished round to the history and makes it durable.
    ///
    /// # Errors
    /// [`crate::CoordinatorError::Store`] if the history cannot be written.
    fn append_round(&self, record: &RoundRecord) -> Result<()>;

    /// Returns the last `limit` finished rounds, oldest first, and the
    /// number of completed and abandoned rounds in the whole history.
    ///
    /// # Errors
    /// [`crate::CoordinatorError::Store`] if the history cannot be read.
    fn round_history(&self, limit: usize) -> Result<(Vec<RoundRecord>, u64, u64)>;
}

/// The embedded default: files in one directory.
#[derive(Debug, Clone)]
pub struct DirectoryStore {
    directory: PathBuf,
}

impl DirectoryStore {
    /// Name of the open-round record in the directory.
    pub const OPEN_ROUND_FILE: &str = "open-round.json";
    /// Name of the round history (JSON Lines, append-only) in the directory.
    pub const ROUND_HISTORY_FILE: &str = "rounds.jsonl";

    /// Returns the store in `directory`, creating it if needed.
    ///
    /// # Errors
    /// [`crate::CoordinatorError::Store`] if the directory cannot be created.
    pub fn open(directory: &Path) -> Result<Self> {
        std::fs::create_dir_all(directory).map_err(|source| CoreError::Io {
            path: directory.to_path_buf(),
            source,
        })?;
        Ok(DirectoryStore {
            directory: directory.to_path_buf(),
        })
    }
}

impl StateStore for DirectoryStore {
    fn record_open_round(&self, round: &OpenRoundRecord) -> Result<()> {
        let json = serde_json::to_vec(round).expect("a round record serializes to json");
        fedshield_core::fsutil::write_atomic(&self.directory.join(Self::OPEN_ROUND_FILE), &json)?;
        Ok(())
    }

    fn open_round_record(&self) -> Result<Option<OpenRoundRecord>> {
        let path = self.directory.join(Self::OPEN_ROUND_FILE);
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

    fn append_round(&self, record: &RoundRecord) -> Result<()> {
        use std::io::Write;
        let path = self.directory.join(Self::ROUND_HISTORY_FILE);
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

    fn round_history(&self, limit: usize) -> Result<(Vec<RoundRecord>, u64, u64)> {
        let path = self.directory.join(Self::ROUND_HISTORY_FILE);
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
}
