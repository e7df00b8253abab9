//! Participant configuration.

use std::path::PathBuf;
use std::time::Duration;

use fedshield_core::ParticipantId;

use crate::ledger::PrivacyBudget;

/// Everything a participant needs to run.
#[derive(Debug, Clone)]
pub struct ParticipantConfig {
    /// The coordinator's gRPC address, e.g. `http://127.0.0.1:7070`.
    pub coordinator_url: String,
    /// This participant's identity.
    pub participant_id: ParticipantId,
    /// Where downloaded model versions are cached.
    pub data_dir: PathBuf,
    /// First reconnection delay; doubles per failure up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest reconnection delay.
    pub max_backoff: Duration,
    /// Reconnect if the coordinator is silent for this many heartbeat intervals.
    pub missed_heartbeats: u32,
    /// sha256 of the schema the local data was featurized with; rounds of a
    /// federation with another schema are declined. `None` skips the check.
    pub feature_schema_sha256: Option<String>,
    /// Canonical TOML of that schema
    /// ([`fedshield_core::schema::Schema::to_toml_string`]): when a round's
    /// schema differs, the decline names the differing columns. `None`
    /// names only the two hashes.
    pub feature_schema_toml: Option<String>,
    /// The most privacy this participant may ever spend. With a budget it
    /// only takes part in rounds with differential privacy, and declines a
    /// round that would exceed it. Without one it still trains with DP when
    /// the plan asks, and records and reports the spend (δ = 1e-5).
    pub privacy_budget: Option<PrivacyBudget>,
    /// Mutual TLS: the CA the coordinator's certificate must chain to, this
    /// participant's certificate and key, and the coordinator's name
    /// (fedshield_proto::tls::client_tls_config). Required for an
    /// `https://` coordinator URL; `None` only with `http://` (`--insecure`).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Seed of the local shuffling order of training without DP, mixed with
    /// each round's id. `None` (the default, and the only choice the CLI
    /// offers) draws it from the OS-seeded RNG, so the order cannot be
    /// predicted from outside; tests set it for reproducible runs. DP noise
    /// and sampling are always OS-seeded.
    pub shuffle_seed: Option<u64>,
}

impl ParticipantConfig {
    /// Returns a configuration for tests: fast reconnects.
    pub fn for_test(
        coordinator_url: String,
        participant_id: ParticipantId,
        data_dir: PathBuf,
    ) -> Self {
        ParticipantConfig {
            coordinator_url,
            participant_id,
            data_dir,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            missed_heartbeats: 5,
            feature_schema_sha256: None,
            feature_schema_toml: None,
            privacy_budget: None,
            tls: None,
            shuffle_seed: None,
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// Every problem found, each naming its setting.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !(self.coordinator_url.starts_with("http://")
            || self.coordinator_url.starts_with("https://"))
        {
            problems.push(format!(
                "coordinator_url {:?} must start with http:// or https://",
                self.coordinator_url
            ));
        }
        match (self.coordinator_url.starts_with("https://"), &self.tls) {
            (true, None) => problems.push(format!(
                "coordinator_url {:?} is https:// but no TLS certificates are configured (tls_ca, tls_cert, tls_key)",
                self.coordinator_url
            )),
            (false, Some(_)) if self.coordinator_url.starts_with("http://") => problems.push(format!(
                "coordinator_url {:?} is plaintext http:// but TLS certificates are configured; use https://",
                self.coordinator_url
            )),
            _ => {}
        }
        if self.initial_backoff.is_zero() {
            problems.push("initial_backoff_ms must be positive".to_string());
        }
        if self.max_backoff < self.initial_backoff {
            problems.push("max_backoff_ms must be at least initial_backoff_ms".to_string());
        }
        if self.missed_heartbeats == 0 {
            problems.push("missed_heartbeats must be at least 1".to_string());
        }
        if let Some(budget) = &self.privacy_budget
            && let Err(budget_problems) = budget.validate()
        {
            problems.extend(budget_problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
