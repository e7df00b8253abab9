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
//!
//! # A detector: may download models and read the status, never train.
//! [[participant]]
//! id = "soc-scorer-1"
//! role = "detector"         # "participant" (the default) or "detector"
//! ```
//!
//! Roles are checked against [`Operation::allowed_roles`] on every call.
//!
//! The coordinator re-reads the file when it changes, so a revocation takes
//! effect within seconds and without a restart; a file that no longer parses
//! is reported and the last good registry stays in force. Every replacement
//! is announced to [`SharedRegistry::subscribe`]rs: each open `Join` stream
//! re-checks the certificate that opened it and ends when it is no longer
//! allowed (`crate::revocation`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fedshield_core::ParticipantId;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::roles::{Operation, Role};

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
    #[error(
        "{member} has role {role} in the coordinator's participant registry; {operation} is only for role {allowed}"
    )]
    WrongRole {
        member: ParticipantId,
        role: Role,
        operation: Operation,
        allowed: String,
    },
}

/// A certificate holder the registry allows: its id and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: ParticipantId,
    pub role: Role,
}

/// A registry entry as the coordinator keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemberEntry {
    revoked: bool,
    role: Role,
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
    /// What the member may do; participant when absent.
    #[serde(default)]
    role: Role,
}

/// Allowed participants and revocations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParticipantRegistry {
    /// Registered members: revoked or not, and their role.
    participants: BTreeMap<ParticipantId, MemberEntry>,
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
                    let member = MemberEntry {
                        revoked: entry.revoked,
                        role: entry.role,
                    };
                    if participants.insert(id, member).is_some() {
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
            participants: ids
                .into_iter()
                .map(|id| {
                    let member = MemberEntry {
                        revoked: false,
                        role: Role::Participant,
                    };
                    (id, member)
                })
                .collect(),
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

    /// Returns the member a certificate with subject CN `common_name` and
    /// sha256 `fingerprint` identifies, with its role, if it is registered
    /// and neither it nor the certificate is revoked. Callers check the role
    /// with [`Self::authorize_for`].
    ///
    /// # Errors
    /// [`AccessDenied`] saying why not.
    pub fn authorize(&self, common_name: &str, fingerprint: &str) -> Result<Member, AccessDenied> {
        let participant = ParticipantId::new(common_name.to_string())
            .map_err(|reason| AccessDenied::InvalidSubject(common_name.to_string(), reason))?;
        let role = match self.participants.get(&participant) {
            None => return Err(AccessDenied::Unknown(participant)),
            Some(MemberEntry { revoked: true, .. }) => {
                return Err(AccessDenied::RevokedParticipant(participant));
            }
            Some(MemberEntry {
                revoked: false,
                role,
            }) => *role,
        };
        if self
            .revoked_certificates
            .contains(&fingerprint.to_ascii_lowercase())
        {
            return Err(AccessDenied::RevokedCertificate {
                participant,
                fingerprint_prefix: fingerprint.chars().take(16).collect(),
            });
        }
        Ok(Member {
            id: participant,
            role,
        })
    }

    /// Returns the member a certificate identifies, as [`Self::authorize`],
    /// if its role may perform `operation` ([`Operation::allowed_roles`]).
    ///
    /// # Errors
    /// [`AccessDenied`] saying why not; [`AccessDenied::WrongRole`] names
    /// the member's role and the roles the operation needs.
    pub fn authorize_for(
        &self,
        common_name: &str,
        fingerprint: &str,
        operation: Operation,
    ) -> Result<Member, AccessDenied> {
        let member = self.authorize(common_name, fingerprint)?;
        if operation.allows(member.role) {
            return Ok(member);
        }
        let allowed: Vec<&str> = operation
            .allowed_roles()
            .iter()
            .map(|role| role.name())
            .collect();
        Err(AccessDenied::WrongRole {
            member: member.id,
            role: member.role,
            operation,
            allowed: allowed.join(" or "),
        })
    }
}

/// The registry in force, shared by every connection; replaced whole when
/// its file changes. Replacements are announced to subscribers (the open
/// `Join` streams, which end when their certificate is no longer allowed).
#[derive(Debug, Clone)]
pub struct SharedRegistry {
    current: Arc<watch::Sender<Arc<ParticipantRegistry>>>,
}

impl SharedRegistry {
    /// Returns a shared handle on `registry`.
    pub fn new(registry: ParticipantRegistry) -> Self {
        let (current, _) = watch::channel(Arc::new(registry));
        SharedRegistry {
            current: Arc::new(current),
        }
    }

    /// Returns the registry in force.
    pub fn get(&self) -> Arc<ParticipantRegistry> {
        self.current.borrow().clone()
    }

    /// Replaces the registry in force and wakes every subscriber.
    pub fn replace(&self, registry: ParticipantRegistry) {
        self.current.send_replace(Arc::new(registry));
    }

    /// Returns a receiver that sees every registry put in force after this
    /// call.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ParticipantRegistry>> {
        self.current.subscribe()
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
            registry
                .authorize("acme-soc", &other)
                .unwrap()
                .id
                .to_string(),
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
    fn roles_default_to_participant_and_a_detector_may_only_read() {
        let registry = ParticipantRegistry::from_toml_str(
            r#"
            [[participant]]
            id = "acme-soc"
            [[participant]]
            id = "scorer"
            role = "detector"
            "#,
            "participants.toml",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let other = "00".repeat(32);
        let acme = registry
            .authorize_for("acme-soc", &other, Operation::Join)
            .unwrap();
        assert_eq!(acme.role, Role::Participant);
        let scorer = registry
            .authorize_for("scorer", &other, Operation::DownloadModel)
            .unwrap();
        assert_eq!(scorer.role, Role::Detector);
        let refused = registry
            .authorize_for("scorer", &other, Operation::SubmitUpdate)
            .unwrap_err();
        assert!(matches!(refused, AccessDenied::WrongRole { .. }));
        assert_eq!(
            refused.to_string(),
            "scorer has role detector in the coordinator's participant registry; \
             submit_update is only for role participant"
        );
        let error = ParticipantRegistry::from_toml_str(
            "[[participant]]\nid = \"x\"\nrole = \"operator\"\n",
            "p.toml",
        )
        .unwrap_err();
        assert!(
            error.contains("p.toml") && error.contains("operator"),
            "{error}"
        );
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
