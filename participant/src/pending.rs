//! The privatized update of the participant's last DP run, kept on disk so
//! that a retried round re-sends it instead of training (and spending) again.
//!
//! Why: a coordinator abandons a round that misses its quorum (a member left,
//! the deadline passed) and retries the same base version. A participant
//! that trained again for every retry would spend its privacy budget once
//! per attempt, and a member leaving on purpose could burn the other
//! members' budgets without limit. The privatized update is a DP output:
//! sending it again is post-processing and costs nothing
//! (docs/PRIVACY.md, "Retried rounds").
//!
//! Life cycle:
//! 1. The round's spend is recorded in the ledger (fsynced), with the base
//!    model's sha256 and the plan's fingerprint.
//! 2. Training and privatization produce the update; it is written here
//!    atomically (temporary file, fsync, rename, directory fsync) before it
//!    is sent, with the ledger entry it was computed under.
//! 3. A later round on the same base version (number and sha256) with an
//!    identical plan (same [`PlanFingerprint`]) gets this update again: no
//!    download, no training, no new ledger entry.
//! 4. A round on another base version or with another plan removes it.
//!
//! The ledger stays the source of truth: a stored update is used only if the
//! ledger holds the entry it names, for the same base and plan (also after a
//! restart). An unreadable, mismatching or orphaned file is removed and the
//! round is trained (and spent) normally, which is always safe.
//!
//! Format: the magic line `fedshield-pending-update-v1`, one line of JSON
//! ([`StoredUpdateHeader`]), then the update's little-endian float32 bytes.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use fedshield_core::model::codec::params_as_le_bytes;
use fedshield_core::model::weights::params_sha256;
use fedshield_core::plan_fingerprint::PlanFingerprint;
use serde::{Deserialize, Serialize};

use crate::error::{ParticipantError, Result};

/// File name of the stored update inside the data directory.
pub const STORED_UPDATE_FILE_NAME: &str = "pending-update.bin";

/// First line of a stored update file.
const MAGIC_LINE: &[u8] = b"fedshield-pending-update-v1\n";

/// Longest header line accepted when reading a stored update.
const MAX_HEADER_BYTES: u64 = 64 * 1024;

/// What a stored update was computed from, and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredUpdateHeader {
    /// The base model version the update is a delta to.
    pub base_model_version: u64,
    /// The sha256 of that base model's parameters.
    pub base_model_sha256: String,
    /// The fingerprint of the plan it was trained and privatized under.
    pub plan_sha256: PlanFingerprint,
    /// Round id of the ledger entry that paid for it.
    pub ledger_round_id: u64,
    /// When that ledger entry was recorded (with the round id, the entry's key).
    pub ledger_recorded_unix_ms: u64,
    /// Local DP-SGD steps of the run.
    pub num_steps: u64,
    /// Mean training loss of the run, if it was finite.
    pub mean_loss: Option<f32>,
    /// Parameters in the update.
    pub num_params: u64,
    /// sha256 (lowercase hex) of the update's little-endian float32 bytes.
    pub update_sha256: String,
}

impl StoredUpdateHeader {
    /// Returns whether this update was computed from base `base_version`
    /// (with parameters of sha256 `base_sha256`) under the plan `plan_sha256`.
    pub fn is_for(
        &self,
        base_version: u64,
        base_sha256: &str,
        plan_sha256: &PlanFingerprint,
    ) -> bool {
        self.base_model_version == base_version
            && self.base_model_sha256 == base_sha256
            && self.plan_sha256 == *plan_sha256
    }
}

/// A stored update: its header and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUpdate {
    pub header: StoredUpdateHeader,
    pub delta: Vec<f32>,
}

/// The one stored update of a participant, in its data directory.
#[derive(Debug, Clone)]
pub struct StoredUpdateFile {
    path: PathBuf,
}

impl StoredUpdateFile {
    /// Returns the stored update file of the participant whose data
    /// directory is `data_dir` (it need not exist).
    pub fn new(data_dir: &Path) -> Self {
        StoredUpdateFile {
            path: data_dir.join(STORED_UPDATE_FILE_NAME),
        }
    }

    /// Returns the file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, reason: String) -> ParticipantError {
        ParticipantError::StoredUpdate {
            path: self.path.clone(),
            reason,
        }
    }

    /// Stores `delta` with `header` atomically and durably, replacing any
    /// stored update. `header.num_params` and `header.update_sha256` are
    /// set from `delta`. Returns the update's sha256. Blocking.
    ///
    /// # Errors
    /// [`ParticipantError::StoredUpdate`] if the file cannot be written;
    /// the previous file, if any, is then unchanged.
    pub fn save(&self, mut header: StoredUpdateHeader, delta: &[f32]) -> Result<String> {
        header.num_params = delta.len() as u64;
        header.update_sha256 = params_sha256(delta);
        let mut header_line = serde_json::to_vec(&header)
            .map_err(|error| self.error(format!("cannot encode the header: {error}")))?;
        header_line.push(b'\n');
        fedshield_core::fsutil::write_atomic_with(&self.path, |temp_path| {
            let mut file = std::io::BufWriter::new(File::create(temp_path)?);
            file.write_all(MAGIC_LINE)?;
            file.write_all(&header_line)?;
            file.write_all(params_as_le_bytes(delta))?;
            file.flush()
        })
        .map_err(|error| self.error(format!("cannot write: {error}")))?;
        Ok(header.update_sha256)
    }

    /// Returns the stored update's header, or `None` if none is stored.
    /// Blocking; reads only the first lines.
    ///
    /// # Errors
    /// [`ParticipantError::StoredUpdate`] for an unreadable or malformed file.
    pub fn header(&self) -> Result<Option<StoredUpdateHeader>> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.error(format!("cannot open: {error}"))),
        };
        let mut reader = BufReader::new(file);
        self.read_header(&mut reader).map(Some)
    }

    fn read_header(&self, reader: &mut BufReader<File>) -> Result<StoredUpdateHeader> {
        let mut magic = vec![0u8; MAGIC_LINE.len()];
        reader
            .read_exact(&mut magic)
            .map_err(|error| self.error(format!("cannot read the magic line: {error}")))?;
        if magic != MAGIC_LINE {
            return Err(self.error("does not start with the stored update magic line".into()));
        }
        let mut header_line = Vec::new();
        reader
            .by_ref()
            .take(MAX_HEADER_BYTES)
            .read_until(b'\n', &mut header_line)
            .map_err(|error| self.error(format!("cannot read the header: {error}")))?;
        if header_line.last() != Some(&b'\n') {
            return Err(self.error(format!(
                "the header line is missing or longer than {MAX_HEADER_BYTES} bytes"
            )));
        }
        serde_json::from_slice(&header_line)
            .map_err(|error| self.error(format!("malformed header: {error}")))
    }

    /// Returns the stored update, checked against the size and sha256 its
    /// header states, or `None` if none is stored. Blocking.
    ///
    /// # Errors
    /// [`ParticipantError::StoredUpdate`] for an unreadable, malformed,
    /// truncated or altered file.
    pub fn load(&self) -> Result<Option<StoredUpdate>> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.error(format!("cannot open: {error}"))),
        };
        let mut reader = BufReader::new(file);
        let header = self.read_header(&mut reader)?;
        let num_bytes = usize::try_from(header.num_params)
            .ok()
            .and_then(|num_params| num_params.checked_mul(4))
            .ok_or_else(|| {
                self.error(format!("header declares {} parameters", header.num_params))
            })?;
        let mut bytes = Vec::new();
        reader
            .take(num_bytes as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|error| self.error(format!("cannot read the update: {error}")))?;
        if bytes.len() != num_bytes {
            return Err(self.error(format!(
                "holds {} bytes of update, its header declares {num_bytes}",
                bytes.len()
            )));
        }
        let delta: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|value| f32::from_le_bytes([value[0], value[1], value[2], value[3]]))
            .collect();
        let actual_sha256 = params_sha256(&delta);
        if actual_sha256 != header.update_sha256 {
            return Err(self.error(format!(
                "the update has sha256 {actual_sha256}, its header states {}",
                header.update_sha256
            )));
        }
        Ok(Some(StoredUpdate { header, delta }))
    }

    /// Removes the stored update, durably; nothing stored is not an error.
    /// Blocking.
    ///
    /// # Errors
    /// [`ParticipantError::StoredUpdate`] if the file cannot be removed.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(self.error(format!("cannot remove: {error}"))),
        }
        fedshield_core::fsutil::sync_directory(fedshield_core::fsutil::parent_directory(&self.path))
            .map_err(|error| self.error(format!("cannot persist the removal: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedshield_core::TrainingPlan;

    fn header(base_version: u64) -> StoredUpdateHeader {
        StoredUpdateHeader {
            base_model_version: base_version,
            base_model_sha256: "ab".repeat(32),
            plan_sha256: PlanFingerprint::of(&TrainingPlan::new()),
            ledger_round_id: 3,
            ledger_recorded_unix_ms: 1_700_000_000_000,
            num_steps: 20,
            mean_loss: Some(0.5),
            num_params: 0,
            update_sha256: String::new(),
        }
    }

    #[test]
    fn a_stored_update_reads_back_exactly_with_its_sha256() {
        let directory = tempfile::tempdir().unwrap();
        let stored = StoredUpdateFile::new(directory.path());
        assert_eq!(stored.header().unwrap(), None);
        assert_eq!(stored.load().unwrap(), None);
        let delta = vec![0.25f32, -1.5, f32::MIN_POSITIVE, 3.0e-9];
        let sha256 = stored.save(header(4), &delta).unwrap();
        assert_eq!(sha256, params_sha256(&delta));
        let loaded = stored.load().unwrap().unwrap();
        assert_eq!(loaded.delta, delta);
        assert_eq!(loaded.header.num_params, 4);
        assert_eq!(loaded.header.update_sha256, sha256);
        assert_eq!(stored.header().unwrap().unwrap(), loaded.header);
        assert!(loaded.header.is_for(
            4,
            &"ab".repeat(32),
            &PlanFingerprint::of(&TrainingPlan::new())
        ));
        assert!(!loaded.header.is_for(
            5,
            &"ab".repeat(32),
            &PlanFingerprint::of(&TrainingPlan::new())
        ));
        stored.remove().unwrap();
        assert_eq!(stored.load().unwrap(), None);
        stored.remove().unwrap();
    }

    #[test]
    fn an_altered_or_truncated_stored_update_is_refused_with_the_reason() {
        let directory = tempfile::tempdir().unwrap();
        let stored = StoredUpdateFile::new(directory.path());
        stored.save(header(1), &[1.0, 2.0, 3.0]).unwrap();
        let mut bytes = std::fs::read(stored.path()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(stored.path(), &bytes).unwrap();
        let error = stored.load().unwrap_err();
        assert!(error.to_string().contains("sha256"), "{error}");
        std::fs::write(stored.path(), &bytes[..bytes.len() - 2]).unwrap();
        let error = stored.load().unwrap_err();
        assert!(error.to_string().contains("bytes of update"), "{error}");
        std::fs::write(stored.path(), b"not a stored update\n").unwrap();
        let error = stored.header().unwrap_err();
        assert!(error.to_string().contains("magic"), "{error}");
    }
}
