//! The privacy ledger: an append-only record, in the participant's data
//! directory, of every differentially private run its data went into. It is
//! the source of truth for what the organization has spent.
//!
//! Crash safety: an entry is appended and fsynced (file and, on creation,
//! directory) before training starts, so before anything derived from the
//! data can leave the node. A crash after the write and before the send
//! over-counts, which is safe; an update can never leave without its entry.
//! A crash in the middle of an append leaves a final line without its
//! newline: that append never returned, so its update was never sent, and the
//! torn line is cut off when the ledger is next opened. Any other unreadable
//! line is an error: the ledger cannot vouch for the budget any more.
//!
//! One process owns a ledger at a time (an exclusive lock on the file), so
//! two participants started on the same data directory cannot each spend the
//! budget they both believe is left.
//!
//! Format: JSON Lines, one [`LedgerEntry`] per line.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fedshield_core::plan::{DpSgdPlan, OrgDpPlan};
use fedshield_core::plan_fingerprint::PlanFingerprint;
use fedshield_core::privacy::accountant::SubsampledGaussian;
use fedshield_core::privacy::{
    PrivacyReport, composed_epsilon, org_level_mechanism, record_level_mechanism,
    record_level_mechanism_at,
};
use fedshield_core::units::{Delta, Epsilon};
use fedshield_core::{ModelVersion, RoundId};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{ParticipantError, Result};

/// File name of the ledger inside the data directory.
pub const LEDGER_FILE_NAME: &str = "privacy-ledger.jsonl";

/// The δ a participant accounts with when no budget sets one.
pub const DEFAULT_DELTA: f64 = 1e-5;

/// One DP run of this participant's data: one round's local training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    pub round_id: u64,
    pub base_model_version: u64,
    pub recorded_unix_ms: u64,
    /// The record-level mechanism: DP-SGD steps of this round, at this
    /// participant's own sampling rate q = B/N. The budget is enforced on it.
    pub record_level: SubsampledGaussian,
    /// The same steps at the plan's largest sampling rate B/N_min: the
    /// public worst case, which the participant reports to the coordinator
    /// (reporting its own q would disclose N). Absent in entries written
    /// before it existed, which report `record_level`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_record_level: Option<SubsampledGaussian>,
    /// The organization-level mechanism of this round, if the plan had one.
    #[serde(default)]
    pub org_level: Option<SubsampledGaussian>,
    /// sha256 of the base model the run trained from; with
    /// `plan_sha256`, what a stored privatized update is linked to (see
    /// [`crate::pending`]). Absent in entries written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model_sha256: Option<String>,
    /// Fingerprint of the run's training plan ([`PlanFingerprint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_sha256: Option<PlanFingerprint>,
    /// The organization-level mechanism by name, when `org_level` is the
    /// Gaussian equivalent of another one (the distributed discrete
    /// Gaussian under secure aggregation), with its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_level_mechanism: Option<String>,
}

impl LedgerEntry {
    /// Returns the entry for taking part in `round_id` under the plan's DP
    /// settings, sampling at this participant's own rate `sampling_rate`
    /// (q = B/N, from [`DpSgdPlan::sampling_rate_for`]).
    pub fn for_round(
        round_id: RoundId,
        base_version: ModelVersion,
        dp_sgd: &DpSgdPlan,
        sampling_rate: f64,
        org_dp: Option<&OrgDpPlan>,
    ) -> Self {
        LedgerEntry {
            round_id: round_id.0,
            base_model_version: base_version.0,
            recorded_unix_ms: fedshield_core::clock::unix_ms_now(),
            record_level: record_level_mechanism_at(dp_sgd, sampling_rate, 1),
            plan_record_level: Some(record_level_mechanism(dp_sgd, 1)),
            org_level: org_dp.map(|org| org_level_mechanism(org, 1)),
            base_model_sha256: None,
            plan_sha256: None,
            org_level_mechanism: None,
        }
    }

    /// Returns the entry with the plan's organization-level mechanism named,
    /// when the plan's is distributed DP (accounted as its Gaussian
    /// equivalent in `org_level`).
    pub fn with_org_mechanism(mut self, plan: &fedshield_core::TrainingPlan) -> Self {
        self.org_level_mechanism = plan
            .secure_aggregation
            .as_ref()
            .and_then(|secure| secure.distributed_dp_statement());
        self
    }

    /// Returns the entry with the base model's sha256 and the plan's
    /// fingerprint noted, so that the update this run privatizes can be
    /// re-sent for a retried round of the same base and plan.
    pub fn with_origin(mut self, base_model_sha256: &str, plan_sha256: PlanFingerprint) -> Self {
        self.base_model_sha256 = Some(base_model_sha256.to_string());
        self.plan_sha256 = Some(plan_sha256);
        self
    }
}

/// How much privacy a participant may spend over its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyBudget {
    /// Record-level ε.
    pub epsilon: f64,
    /// δ of the accounting.
    pub delta: f64,
    /// Organization-level ε, enforced when rounds use organization-level DP.
    #[serde(default)]
    pub org_epsilon: Option<f64>,
}

impl PrivacyBudget {
    /// Checks the budget's values, naming the one that is wrong.
    ///
    /// # Errors
    /// A description of every problem.
    pub fn validate(&self) -> std::result::Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Err(problem) = Epsilon::named("privacy budget epsilon", self.epsilon) {
            problems.push(problem.to_string());
        }
        if let Err(problem) = Delta::named("privacy budget delta", self.delta) {
            problems.push(problem.to_string());
        }
        if let Some(org_epsilon) = self.org_epsilon
            && let Err(problem) = Epsilon::named("privacy budget org_epsilon", org_epsilon)
        {
            problems.push(problem.to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// What a ledger adds up to at some δ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrivacySpend {
    /// Record-level ε over every entry, at the participant's own sampling
    /// rates: what its records really spent (the budget applies to it).
    pub epsilon: f64,
    /// Record-level ε over every entry at each plan's largest sampling rate
    /// (B/N_min): an upper bound of `epsilon` that depends on public values
    /// only, and the figure reported to the coordinator.
    pub reported_epsilon: f64,
    pub delta: f64,
    /// Organization-level ε, if any entry has an organization-level run.
    pub org_epsilon: Option<f64>,
    /// Entries (rounds) recorded.
    pub num_rounds: u64,
}

impl PrivacySpend {
    /// Returns the spend as the report sent with an update: the record-level
    /// ε at the plans' worst case, which does not disclose the data size.
    pub fn report(&self) -> PrivacyReport {
        PrivacyReport {
            epsilon: self.reported_epsilon,
            delta: self.delta,
            org_epsilon: self.org_epsilon,
            num_rounds: self.num_rounds,
        }
    }
}

/// An open, locked ledger.
#[derive(Debug)]
pub struct PrivacyLedger {
    path: PathBuf,
    /// Open for appending, exclusively locked for the ledger's lifetime.
    file: File,
    entries: Vec<LedgerEntry>,
}

impl PrivacyLedger {
    /// Opens (or creates) the ledger in `data_dir` and locks it.
    ///
    /// # Errors
    /// [`ParticipantError::Ledger`] if the file cannot be read or written, is
    /// held by another process, or has a malformed entry (named by line).
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(LEDGER_FILE_NAME);
        let ledger_error = |reason: String| ParticipantError::Ledger {
            path: path.clone(),
            reason,
        };
        fs::create_dir_all(data_dir)
            .map_err(|error| ledger_error(format!("cannot create its directory: {error}")))?;
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|error| ledger_error(format!("cannot open: {error}")))?;
        file.try_lock().map_err(|error| {
            ledger_error(format!(
                "is in use by another participant process ({error}); one participant per data directory"
            ))
        })?;
        if !existed {
            sync_directory(data_dir)
                .map_err(|error| ledger_error(format!("cannot persist its creation: {error}")))?;
        }
        let mut contents = String::new();
        file.read_to_string(&mut contents)
            .map_err(|error| ledger_error(format!("cannot read: {error}")))?;
        let complete_len = match contents.rfind('\n') {
            Some(index) => index + 1,
            None => 0,
        };
        if complete_len < contents.len() {
            // A torn append: its fsync never returned, so no update went out with it.
            warn!(
                path = %path.display(),
                num_bytes = contents.len() - complete_len,
                "privacy ledger ends in an incomplete entry from an interrupted write; removing it"
            );
            file.set_len(complete_len as u64)
                .and_then(|()| file.sync_all())
                .map_err(|error| ledger_error(format!("cannot cut off a torn entry: {error}")))?;
            file.seek(SeekFrom::End(0))
                .map_err(|error| ledger_error(format!("cannot seek: {error}")))?;
        }
        let entries = parse_entries(&contents[..complete_len], &path)?;
        Ok(PrivacyLedger {
            path,
            file,
            entries,
        })
    }

    /// Returns the ledger's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns every recorded entry, oldest first.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    /// Returns the recorded entry of round `round_id` made at
    /// `recorded_unix_ms`, if there is one: the entry a stored update names
    /// as the spend it was computed under.
    pub fn find(&self, round_id: u64, recorded_unix_ms: u64) -> Option<&LedgerEntry> {
        self.entries
            .iter()
            .find(|entry| entry.round_id == round_id && entry.recorded_unix_ms == recorded_unix_ms)
    }

    /// Returns what the recorded entries add up to at `delta`.
    ///
    /// # Errors
    /// [`ParticipantError::Core`] if the accountant refuses the parameters.
    pub fn spent(&self, delta: f64) -> Result<PrivacySpend> {
        spend_of(self.entries.iter(), delta)
    }

    /// Returns what the ledger would add up to with `entry` recorded too.
    ///
    /// # Errors
    /// As [`Self::spent`].
    pub fn spent_with(&self, entry: &LedgerEntry, delta: f64) -> Result<PrivacySpend> {
        spend_of(self.entries.iter().chain(std::iter::once(entry)), delta)
    }

    /// Appends `entry` and makes it durable before returning.
    ///
    /// # Errors
    /// [`ParticipantError::Ledger`] if the write or the fsync fails; the entry
    /// then counts as not recorded, and the caller must not send anything.
    pub fn record(&mut self, entry: LedgerEntry) -> Result<()> {
        let mut line = serde_json::to_string(&entry).map_err(|error| ParticipantError::Ledger {
            path: self.path.clone(),
            reason: format!("cannot encode an entry: {error}"),
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|error| ParticipantError::Ledger {
                path: self.path.clone(),
                reason: format!("cannot append an entry: {error}"),
            })?;
        self.entries.push(entry);
        Ok(())
    }
}

/// Returns what the ledger in `data_dir` adds up to at `delta`, without
/// locking it (a running participant may hold it) and without repairing a
/// torn final entry (which is left out, as its update was never sent). An
/// absent ledger has spent nothing.
///
/// # Errors
/// [`ParticipantError::Ledger`] for an unreadable file or a malformed entry.
pub fn inspect(data_dir: &Path, delta: f64) -> Result<PrivacySpend> {
    let path = data_dir.join(LEDGER_FILE_NAME);
    let contents = match fs::read_to_string(&path) {
        Ok(contents) => contents,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(ParticipantError::Ledger {
                path,
                reason: format!("cannot read: {error}"),
            });
        }
    };
    let complete_len = contents.rfind('\n').map_or(0, |index| index + 1);
    let entries = parse_entries(&contents[..complete_len], &path)?;
    spend_of(entries.iter(), delta)
}

fn parse_entries(contents: &str, path: &Path) -> Result<Vec<LedgerEntry>> {
    let ledger_error = |reason: String| ParticipantError::Ledger {
        path: path.to_path_buf(),
        reason,
    };
    let mut entries = Vec::new();
    for (index, line) in contents.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: LedgerEntry = serde_json::from_str(line).map_err(|error| {
            ledger_error(format!(
                "line {} is not a valid entry ({error}); the spent budget cannot be established, \
                 so the participant refuses to run: restore the ledger from a backup",
                index + 1
            ))
        })?;
        for mechanism in std::iter::once(&entry.record_level).chain(&entry.plan_record_level) {
            mechanism.validate().map_err(|error| {
                ledger_error(format!(
                    "line {} has invalid parameters: {error}",
                    index + 1
                ))
            })?;
        }
        if let Some(org_level) = &entry.org_level {
            org_level.validate().map_err(|error| {
                ledger_error(format!(
                    "line {} has invalid parameters: {error}",
                    index + 1
                ))
            })?;
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn spend_of<'a>(
    entries: impl Iterator<Item = &'a LedgerEntry>,
    delta: f64,
) -> Result<PrivacySpend> {
    let mut record_level: Vec<SubsampledGaussian> = Vec::new();
    let mut plan_record_level: Vec<SubsampledGaussian> = Vec::new();
    let mut org_level: Vec<SubsampledGaussian> = Vec::new();
    let mut num_rounds = 0u64;
    for entry in entries {
        record_level.push(entry.record_level);
        plan_record_level.push(entry.plan_record_level.unwrap_or(entry.record_level));
        org_level.extend(entry.org_level);
        num_rounds += 1;
    }
    let (epsilon, reported_epsilon) = if record_level.is_empty() {
        (0.0, 0.0)
    } else {
        (
            composed_epsilon(&record_level, delta)?,
            composed_epsilon(&plan_record_level, delta)?,
        )
    };
    let org_epsilon = if org_level.is_empty() {
        None
    } else {
        Some(composed_epsilon(&org_level, delta)?)
    };
    Ok(PrivacySpend {
        epsilon,
        reported_epsilon,
        delta,
        org_epsilon,
        num_rounds,
    })
}

fn sync_directory(directory: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(directory)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = directory;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// B = 10, N_min = 1000: q = 0.01 at the minimum data size.
    fn dp_plan() -> DpSgdPlan {
        DpSgdPlan::new(10, 1000, 1.1, 1.0, 100)
    }

    fn entry(round: u64) -> LedgerEntry {
        LedgerEntry::for_round(
            RoundId(round),
            ModelVersion(round - 1),
            &dp_plan(),
            dp_plan().max_sampling_rate(),
            None,
        )
    }

    #[test]
    fn entries_survive_reopening_and_spend_grows_with_each() {
        let directory = tempfile::tempdir().unwrap();
        let mut ledger = PrivacyLedger::open(directory.path()).unwrap();
        assert_eq!(ledger.spent(1e-5).unwrap().epsilon, 0.0);
        ledger.record(entry(1)).unwrap();
        let after_one = ledger.spent(1e-5).unwrap();
        ledger.record(entry(2)).unwrap();
        let after_two = ledger.spent(1e-5).unwrap();
        assert!(after_two.epsilon > after_one.epsilon);
        assert_eq!(after_two.num_rounds, 2);
        let ledger_entries_before_reopen = ledger.entries().to_vec();
        drop(ledger);
        let reopened = PrivacyLedger::open(directory.path()).unwrap();
        assert_eq!(reopened.entries().len(), 2);
        assert_eq!(reopened.spent(1e-5).unwrap(), after_two);
        // Parameters survive the file exactly (serde_json's float_roundtrip).
        assert_eq!(reopened.entries()[0], ledger_entries_before_reopen[0]);
        // Two rounds of 100 steps are one run of 200 steps.
        let single = composed_epsilon(&[record_level_mechanism(&dp_plan(), 2)], 1e-5).unwrap();
        assert!((after_two.epsilon - single).abs() < 1e-9);
    }

    #[test]
    fn spent_with_previews_without_recording() {
        let directory = tempfile::tempdir().unwrap();
        let mut ledger = PrivacyLedger::open(directory.path()).unwrap();
        ledger.record(entry(1)).unwrap();
        let preview = ledger.spent_with(&entry(2), 1e-5).unwrap();
        assert_eq!(preview.num_rounds, 2);
        assert_eq!(ledger.entries().len(), 1);
    }

    #[test]
    fn a_torn_final_entry_is_cut_off_and_the_rest_kept() {
        let directory = tempfile::tempdir().unwrap();
        let mut ledger = PrivacyLedger::open(directory.path()).unwrap();
        ledger.record(entry(1)).unwrap();
        drop(ledger);
        let path = directory.path().join(LEDGER_FILE_NAME);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"round_id\":2,\"base_mo").unwrap();
        drop(file);
        let mut reopened = PrivacyLedger::open(directory.path()).unwrap();
        assert_eq!(reopened.entries().len(), 1);
        reopened.record(entry(2)).unwrap();
        drop(reopened);
        let contents = fs::read_to_string(&path).unwrap();
        assert_eq!(contents.lines().count(), 2);
        assert_eq!(
            PrivacyLedger::open(directory.path())
                .unwrap()
                .entries()
                .len(),
            2
        );
    }

    #[test]
    fn a_corrupt_entry_in_the_middle_is_refused_with_its_line() {
        let directory = tempfile::tempdir().unwrap();
        let mut ledger = PrivacyLedger::open(directory.path()).unwrap();
        ledger.record(entry(1)).unwrap();
        drop(ledger);
        let path = directory.path().join(LEDGER_FILE_NAME);
        let good = fs::read_to_string(&path).unwrap();
        fs::write(&path, format!("{good}not json\n{good}")).unwrap();
        let error = PrivacyLedger::open(directory.path()).unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
        // Nothing was changed by the failed open.
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{good}not json\n{good}")
        );
    }

    #[test]
    fn inspecting_reads_a_held_ledger_without_changing_it() {
        let directory = tempfile::tempdir().unwrap();
        assert_eq!(inspect(directory.path(), 1e-5).unwrap().num_rounds, 0);
        let mut ledger = PrivacyLedger::open(directory.path()).unwrap();
        ledger.record(entry(1)).unwrap();
        let inspected = inspect(directory.path(), 1e-5).unwrap();
        assert_eq!(inspected, ledger.spent(1e-5).unwrap());
    }

    #[test]
    fn a_second_process_cannot_hold_the_same_ledger() {
        let directory = tempfile::tempdir().unwrap();
        let _held = PrivacyLedger::open(directory.path()).unwrap();
        let error = PrivacyLedger::open(directory.path()).unwrap_err();
        assert!(error.to_string().contains("in use"), "{error}");
    }

    #[test]
    fn organization_level_runs_are_accounted_separately() {
        let directory = tempfile::tempdir().unwrap();
        let mut ledger = PrivacyLedger::open(directory.path()).unwrap();
        let org = OrgDpPlan::new(1.0, 2.0);
        ledger
            .record(LedgerEntry::for_round(
                RoundId(1),
                ModelVersion(0),
                &dp_plan(),
                dp_plan().max_sampling_rate(),
                Some(&org),
            ))
            .unwrap();
        let spend = ledger.spent(1e-5).unwrap();
        let org_epsilon = spend.org_epsilon.unwrap();
        let expected = composed_epsilon(&[org_level_mechanism(&org, 1)], 1e-5).unwrap();
        assert!((org_epsilon - expected).abs() < 1e-12);
    }

    #[test]
    fn budgets_are_validated_with_the_key_named() {
        let budget = PrivacyBudget {
            epsilon: -1.0,
            delta: 0.5,
            org_epsilon: Some(f64::NAN),
        };
        let problems = budget.validate().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("epsilon"));
        assert!(problems[1].contains("delta"));
    }
}
