//! The participant registry: which organizations may take part, by the
//! subject (CN) of their client certificate, and which certificates or
//! whole participants are revoked.
//!
//! The registry is a TOML file the operator edits:
//!
//! ```toml
//! # Single certificates revoked (sha256 of the DER certificate, hex), e.g. a
//! # stolen key; `fedshield certs participant` prints the fingerprint. (Top-level
//! # keys come before the first [[participant]] table.)
//! revoked_certificates = ["3f2a…"]
//!
//! # Participants allowed to join, by certificate subject CN.
//! [[participant]]
//! id = "acme-soc"
//!
//! [[participant]]
//! id = "globex"
//! revoked = true            # the whole organization is out
//! ```
//!
//! The coordinator re-reads the file when it changes, so a revocation takes
//! effect within seconds and without a restart; a file that no longer parses
//! is reported and the last good registry stays in force.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use fedshield_core::ParticipantId;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why a certificate holder may not take part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    #[error("certificate subject {0:?} is not a valid participant id: {1}")]
    InvalidSubject(String, String),
    #[error("participant {0} is not in the coordinator's participant registry")]
    Unknown(ParticipantId),
    #[error("participant {0} is revoked in the coordinator's participant registry")]
    RevokedParticipant(ParticipantId),
    #[error("certificate {fingerprint_prefix}… of participant {participant} is revoked")]
    RevokedCertificate {
        participant: ParticipantId,
        fingerprint_prefix: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    participant: Vec<ParticipantEntry>,
    #[serde(default)]
    revoked_certificates: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParticipantEntry {
    id: String,
    #[serde(default)]
    revoked: bool,
}

/// Allowed participants and revocations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParticipantRegistry {
    /// Registered participants; `true` when revoked.
    participants: BTreeMap<ParticipantId, bool>,
    /// Revoked certificate fingerprints (lowercase hex sha256 of the DER).
    revoked_certificates: BTreeSet<String>,
}

impl ParticipantRegistry {
    /// Parses a registry; `origin` names the file in errors.
    ///
    /// # Errors
    /// Every problem found, each naming its key and entry.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, String> {
        let file: RegistryFile =
            toml::from_str(text).map_err(|error| format!("{origin}: {error}"))?;
        let mut problems = Vec::new();
        let mut participants = BTreeMap::new();
        for (index, entry) in file.participant.iter().enumerate() {
            match ParticipantId::new(entry.id.clone()) {
                Ok(id) => {
                    if participants.insert(id, entry.revoked).is_some() {
                        problems.push(format!(
                            "{origin}: participant[{index}].id {:?} is listed twice",
                            entry.id
                        ));
                    }
                }
                Err(reason) => problems.push(format!(
                    "{origin}: participant[{index}].id {:?}: {reason}",
                    entry.id
                )),
            }
        }
        let mut revoked_certificates = BTreeSet::new();
        for (index, fingerprint) in file.revoked_certificates.iter().enumerate() {
            let normalized = fingerprint.trim().replace(':', "").to_ascii_lowercase();
            if normalized.len() != 64 || !normalized.chars().all(|c| c.is_ascii_hexdigit()) {
                problems.push(format!(
                    "{origin}: revoked_certificates[{index}] {fingerprint:?} is not a sha256 fingerprint (64 hex digits)"
                ));
                continue;
            }
            revoked_certificates.insert(normalized);
        }
        if problems.is_empty() {
            Ok(ParticipantRegistry {
                participants,
                revoked_certificates,
            })
        } else {
            Err(problems.join("; "))
        }
    }

    /// Reads a registry file.
    ///
    /// # Errors
    /// The file cannot be read, or [`Self::from_toml_str`]'s problems.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            format!(
                "cannot read participant registry {}: {error}",
                path.display()
            )
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Returns a registry allowing exactly `ids` (tests, the demo).
    pub fn allowing(ids: impl IntoIterator<Item = ParticipantId>) -> Self {
        ParticipantRegistry {
            participants: ids.into_iter().map(|id| (id, false)).collect(),
            revoked_certificates: BTreeSet::new(),
        }
    }

    /// Returns the number of registered participants.
    pub fn len(&self) -> usize {
        self.participants.len()
    }

    /// Returns whether no participant is registered.
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// Returns the participant a certificate with subject CN `common_name` and
    /// sha256 `fingerprint` identifies, if it may take part.
    ///
    /// # Errors
    /// [`AccessDenied`] saying why not.
    pub fn authorize(
        &self,
        common_name: &str,
        fingerprint: &str,
    ) -> Result<ParticipantId, AccessDenied> {
        let participant = ParticipantId::new(common_name.to_string())
            .map_err(|reason| AccessDenied::InvalidSubject(common_name.to_string(), reason))?;
        match self.participants.get(&participant) {
            None => return Err(AccessDenied::Unknown(participant)),
            Some(true) => return Err(AccessDenied::RevokedParticipant(participant)),
            Some(false) => {}
        }
        if self
            .revoked_certificates
            .contains(&fingerprint.to_ascii_lowercase())
        {
            return Err(AccessDenied::RevokedCertificate {
                participant,
                fingerprint_prefix: fingerprint.chars().take(16).collect(),
            });
        }
        Ok(participant)
    }
}

/// The registry in force, shared by every connection; replaced whole when
/// its file changes.
#[derive(Debug, Clone)]
pub struct SharedRegistry {
    current: Arc<RwLock<Arc<ParticipantRegistry>>>,
}

impl SharedRegistry {
    /// Returns a shared handle on `registry`.
    pub fn new(registry: ParticipantRegistry) -> Self {
        SharedRegistry {
            current: Arc::new(RwLock::new(Arc::new(registry))),
        }
    }

    /// Returns the registry in force.
    pub fn get(&self) -> Arc<ParticipantRegistry> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the registry in force.
    pub fn replace(&self, registry: ParticipantRegistry) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(registry);
    }

    /// Re-reads `path` every `interval` while its modification time changes,
    /// until `shutdown`; a file that does not parse is logged and ignored.
    pub fn watch(&self, path: PathBuf, interval: Duration, shutdown: CancellationToken) {
        let shared = self.clone();
        tokio::spawn(async move {
            let modified = |path: &Path| -> Option<SystemTime> {
                std::fs::metadata(path)
                    .and_then(|meta| meta.modified())
                    .ok()
            };
            let mut last_seen = modified(&path);
            let mut ticker = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let now = modified(&path);
                if now == last_seen {
                    continue;
                }
                last_seen = now;
                let reload_path = path.clone();
                let loaded =
                    tokio::task::spawn_blocking(move || ParticipantRegistry::load(&reload_path))
                        .await
                        .unwrap_or_else(|error| Err(error.to_string()));
                match loaded {
                    Ok(registry) => {
                        info!(
                            path = %path.display(),
                            num_participants = registry.len(),
                            num_revoked_certificates = registry.revoked_certificates.len(),
                            "participant registry reloaded"
                        );
                        shared.replace(registry);
                    }
                    Err(error) => warn!(
                        path = %path.display(),
                        error = %error,
                        "participant registry not reloaded; the previous one stays in force"
                    ),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINGERPRINT: &str = "3f2a000000000000000000000000000000000000000000000000000000000001";

    fn registry() -> ParticipantRegistry {
        ParticipantRegistry::from_toml_str(
            &format!(
                r#"
                revoked_certificates = ["{FINGERPRINT}"]
                [[participant]]
                id = "acme-soc"
                [[participant]]
                id = "globex"
                revoked = true
                "#
            ),
            "participants.toml",
        )
        .unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn registered_participants_are_allowed_and_others_are_told_why_not() {
        let registry = registry();
        let other = "00".repeat(32);
        assert_eq!(
            registry.authorize("acme-soc", &other).unwrap().to_string(),
            "acme-soc"
        );
        assert!(matches!(
            registry.authorize("initech", &other),
            Err(AccessDenied::Unknown(_))
        ));
        assert!(matches!(
            registry.authorize("globex", &other),
            Err(AccessDenied::RevokedParticipant(_))
        ));
        assert!(matches!(
            registry.authorize("acme-soc", &FINGERPRINT.to_uppercase()),
            Err(AccessDenied::RevokedCertificate { .. })
        ));
        assert!(matches!(
            registry.authorize("bad name!", &other),
            Err(AccessDenied::InvalidSubject(..))
        ));
    }

    #[test]
    fn bad_registry_files_name_every_problem() {
        let error = ParticipantRegistry::from_toml_str(
            r#"
            revoked_certificates = ["abc"]
            [[participant]]
            id = "ok"
            [[participant]]
            id = "ok"
            [[participant]]
            id = "no spaces"
            "#,
            "participants.toml",
        )
        .unwrap_err();
        assert!(error.contains("revoked_certificates[0]"), "{error}");
        assert!(error.contains("listed twice"), "{error}");
        assert!(error.contains("participant[2].id"), "{error}");
        let error = ParticipantRegistry::from_toml_str("[[participant]]\nname = \"x\"\n", "p.toml")
            .unwrap_err();
        assert!(error.contains("p.toml"), "{error}");
    }
}
