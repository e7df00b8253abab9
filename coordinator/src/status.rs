//! The coordinator's status as JSON (`GET /v1/status`): what the live
//! dashboard renders, and what scripts and tests read.
//!
//! Only what the coordinator already knows and publishes: participant ids,
//! round progress, the metrics and privacy sections of model cards. No
//! update values, tokens or session secrets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fedshield_core::ModelVersion;
use fedshield_core::card::ModelCard;
use fedshield_core::model::metrics::BinaryMetrics;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::engine::Engine;
use crate::registry::ModelRegistry;

/// Most model versions listed in one status report (the newest ones).
pub const MAX_VERSIONS_IN_STATUS: u64 = 200;

/// The whole status report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// When the report was made, in unix milliseconds.
    pub generated_unix_ms: u64,
    pub current_version: u64,
    pub num_rounds_completed: u64,
    pub num_rounds_abandoned: u64,
    /// The open round, if one is open.
    pub open_round: Option<OpenRoundReport>,
    /// Connected participants, by id.
    pub participants: Vec<ParticipantReport>,
    /// Members whose session a revocation ended (until they join again),
    /// oldest revocation first; each with `state: "revoked"`.
    #[serde(default)]
    pub revoked_participants: Vec<RevokedParticipantReport>,
    /// Published versions, oldest first (at most [`MAX_VERSIONS_IN_STATUS`]).
    pub versions: Vec<VersionReport>,
    /// Finished rounds, oldest first.
    pub recent_rounds: Vec<RoundReport>,
    /// Every participant, connected or not, that left a round it was
    /// selected for without an update or a decline, by id
    /// ([`crate::dropouts`]).
    #[serde(default)]
    pub dropouts: Vec<DropoutReport>,
    /// Set once the federation has published every round it was started
    /// for (`--rounds`): no round opens again.
    #[serde(default)]
    pub complete: Option<CompletionReport>,
}

/// How the federation ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionReport {
    pub final_version: u64,
    pub final_sha256: String,
    pub num_rounds_completed: u64,
}

/// A participant's dropouts and the rounds it sits out for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropoutReport {
    pub participant: String,
    /// Rounds it left without an update or a decline, since the coordinator started.
    pub num_dropouts: u64,
    /// Dropouts not yet worked off by accepted updates.
    pub strikes: u32,
    /// Round openings it still sits out.
    pub sit_out_rounds_left: u32,
}

/// Progress of the open round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenRoundReport {
    pub round_id: u64,
    pub base_version: u64,
    pub selected: Vec<String>,
    pub accepted: Vec<String>,
    pub declined: Vec<String>,
    pub quorum: usize,
    pub deadline_unix_ms: u64,
    pub attempt: u32,
}

/// A connected participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantReport {
    pub id: String,
    /// When it last called the coordinator, in unix milliseconds.
    pub last_contact_unix_ms: u64,
    /// Rounds it left without an update or a decline ([`crate::dropouts`]).
    #[serde(default)]
    pub num_dropouts: u64,
    /// Round openings it still sits out for them.
    #[serde(default)]
    pub sit_out_rounds_left: u32,
}

/// A member whose live session was ended because the participant
/// registry no longer allows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokedParticipantReport {
    pub id: String,
    /// Always "revoked": what the dashboard shows.
    pub state: String,
    /// When its session was ended, in unix milliseconds.
    pub revoked_unix_ms: u64,
    /// Why the registry no longer allows it.
    pub reason: String,
}

/// One published model version, from its card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionReport {
    pub version: u64,
    pub round_id: Option<u64>,
    pub created_unix_ms: u64,
    pub num_examples: u64,
    pub contributors: Vec<String>,
    /// Held-out metrics, when the coordinator evaluates versions.
    pub metrics: Option<BinaryMetrics>,
    /// The model's record-level ε (worst over contributors), when every
    /// round in its history had DP.
    pub epsilon: Option<f64>,
    /// Each contributor's reported cumulative privacy spend, with DP.
    pub privacy: Vec<PrivacySpend>,
    /// Where to download the weights and the card (same credentials).
    pub weights_url: String,
    pub card_url: String,
}

/// A participant's privacy spend, as its model card states it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpend {
    pub participant: String,
    /// Record-level ε the participant reported (its ledger's total).
    pub reported_epsilon: f64,
    pub delta: f64,
    /// ε the coordinator's plan implies for its contributions.
    pub plan_epsilon: f64,
    pub num_rounds_contributed: u64,
}

/// A finished round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    pub round_id: u64,
    pub base_version: u64,
    /// "completed" or "abandoned".
    pub outcome: String,
    pub published: Option<u64>,
    pub contributors: Vec<String>,
    pub duration_ms: u64,
    pub reason: String,
}

/// Model cards already read; versions never change once published.
#[derive(Clone, Default)]
pub struct CardCache {
    cards: Arc<Mutex<BTreeMap<u64, Arc<ModelCard>>>>,
}

impl CardCache {
    /// Returns version `version`'s card, reading it once from `registry`.
    async fn get(&self, registry: &ModelRegistry, version: u64) -> Option<Arc<ModelCard>> {
        let cached = self
            .cards
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&version)
            .cloned();
        if let Some(card) = cached {
            return Some(card);
        }
        match registry.load_card(ModelVersion(version)).await {
            Ok(card) => {
                let card = Arc::new(card);
                self.cards
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(version, card.clone());
                Some(card)
            }
            Err(error) => {
                warn!(version, error = %error, "model card unreadable; left out of the status");
                None
            }
        }
    }
}

fn version_report(card: &ModelCard) -> VersionReport {
    let privacy = card
        .privacy
        .as_ref()
        .map(|privacy| {
            privacy
                .participants
                .iter()
                .map(|(participant, spend)| PrivacySpend {
                    participant: participant.clone(),
                    reported_epsilon: spend.reported.epsilon,
                    delta: spend.reported.delta,
                    plan_epsilon: spend.plan_epsilon,
                    num_rounds_contributed: spend.num_rounds_contributed,
                })
                .collect()
        })
        .unwrap_or_default();
    VersionReport {
        version: card.version,
        round_id: card.round_id,
        created_unix_ms: card.created_unix_ms,
        num_examples: card.num_examples,
        contributors: card.contributors.clone(),
        metrics: card.metrics,
        // No ε for a model with a round without DP in its history.
        epsilon: card
            .privacy
            .as_ref()
            .filter(|privacy| privacy.guarantee_holds())
            .map(|privacy| privacy.epsilon),
        privacy,
        weights_url: format!("/v1/models/{}", card.version),
        card_url: format!("/v1/models/{}/card", card.version),
    }
}

/// Returns the coordinator's status, reading the model cards it has not
/// read yet from the artifact store.
pub async fn build_status(
    engine: &Engine,
    registry: &ModelRegistry,
    cards: &CardCache,
) -> StatusReport {
    let status = engine.status();
    let current_version = status.current.version.0;
    let first_version = current_version.saturating_sub(MAX_VERSIONS_IN_STATUS - 1);
    let mut versions = Vec::new();
    for version in first_version..=current_version {
        if version == current_version {
            versions.push(version_report(&status.current.card));
        } else if let Some(card) = cards.get(registry, version).await {
            versions.push(version_report(&card));
        }
    }
    let names = |ids: &[fedshield_core::ParticipantId]| -> Vec<String> {
        ids.iter().map(ToString::to_string).collect()
    };
    let complete = engine.completion().map(|completion| CompletionReport {
        final_version: completion.final_version.0,
        final_sha256: completion.final_sha256,
        num_rounds_completed: completion.num_rounds_completed,
    });
    StatusReport {
        complete,
        generated_unix_ms: fedshield_core::clock::unix_ms_now(),
        current_version,
        num_rounds_completed: status.num_rounds_completed,
        num_rounds_abandoned: status.num_rounds_abandoned,
        open_round: status.open_round.as_ref().map(|round| OpenRoundReport {
            round_id: round.round_id.0,
            base_version: round.base_version.0,
            selected: names(&round.selected),
            accepted: names(&round.accepted),
            declined: names(&round.declined),
            quorum: round.quorum,
            deadline_unix_ms: round.deadline_unix_ms,
            attempt: round.attempt,
        }),
        participants: status
            .connected
            .iter()
            .zip(&status.last_contact_unix_ms)
            .map(|(participant, last_contact)| {
                let dropouts = status
                    .dropouts
                    .iter()
                    .find(|(dropper, _)| dropper == participant)
                    .map(|(_, record)| *record)
                    .unwrap_or_default();
                ParticipantReport {
                    id: participant.to_string(),
                    last_contact_unix_ms: *last_contact,
                    num_dropouts: dropouts.num_dropouts,
                    sit_out_rounds_left: dropouts.sit_out_rounds_left,
                }
            })
            .collect(),
        revoked_participants: status
            .revoked
            .iter()
            .map(|member| RevokedParticipantReport {
                id: member.participant.to_string(),
                state: "revoked".to_string(),
                revoked_unix_ms: member.revoked_unix_ms,
                reason: member.reason.clone(),
            })
            .collect(),
        versions,
        recent_rounds: status
            .recent_rounds
            .iter()
            .map(|round| RoundReport {
                round_id: round.round_id.0,
                base_version: round.base_version.0,
                outcome: round.outcome.name().to_string(),
                published: round.published().map(|version| version.0),
                contributors: round.contributor_names(),
                duration_ms: round.duration_ms(),
                reason: round.reason.clone(),
            })
            .collect(),
        dropouts: status
            .dropouts
            .iter()
            .map(|(participant, record)| DropoutReport {
                participant: participant.to_string(),
                num_dropouts: record.num_dropouts,
                strikes: record.strikes,
                sit_out_rounds_left: record.sit_out_rounds_left,
            })
            .collect(),
    }
}
