//! The coordinator's Prometheus metrics: rounds, updates, refusals,
//! declines, aggregation, downloads, participants by state and the current
//! version's held-out metrics.
//!
//! Only counts, sizes, durations, version numbers and the evaluation-set
//! scores of published versions: no telemetry, no update values, no
//! tokens, and no text a participant chose (decline reasons are counted by
//! a fixed category). Served as OpenMetrics text (which Prometheus
//! scrapes) on `GET /metrics` of the HTTPS endpoint and, optionally, on a
//! plain-HTTP listener for a scraper on a private network.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fedshield_core::card::ModelCard;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::CoordinatorError;

pub use fedshield_proto::metrics_http::OPENMETRICS_CONTENT_TYPE;

/// Histogram buckets of the aggregation duration, in seconds.
const AGGREGATION_BUCKETS_SECS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Histogram buckets of the round duration, in seconds.
const ROUND_BUCKETS_SECS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Every `transport` label value of `fedshield_coordinator_model_downloads_total`.
pub const DOWNLOAD_TRANSPORTS: [&str; 2] = ["grpc", "https"];

/// Label set of one labelled counter: `[(label, value)]`.
type Labels = Vec<(&'static str, &'static str)>;

/// Every `reason` label value of `fedshield_coordinator_update_rejections_total`.
pub const REJECTION_REASONS: [&str; 10] = [
    "malformed",
    "privacy_report",
    "wrong_round",
    "not_selected",
    "duplicate",
    "stalled",
    "too_slow",
    "secure_aggregation",
    "access_denied",
    "unavailable",
];

/// Every `reason` label value of `fedshield_coordinator_round_declines_total`.
pub const DECLINE_REASONS: [&str; 7] = [
    "budget_exhausted",
    "insufficient_data",
    "schema_mismatch",
    "privacy_required",
    "deadline_passed",
    "shutting_down",
    "other",
];

/// Phrases of the reasons fedshield participants decline with, each with
/// its category; the first that a reason contains decides, and a reason
/// with none of them is `other`.
const DECLINE_PHRASES: [(&str, &str); 6] = [
    // ParticipantError::BudgetExhausted and ::OrgBudgetExhausted.
    ("privacy budget exhausted", "budget_exhausted"),
    // CoreError::BelowMinimumRecords (names the public minimum only).
    ("below the plan's public minimum", "insufficient_data"),
    // The participant's check of the announced schema sha256.
    ("feature schema", "schema_mismatch"),
    // ParticipantError::PrivacyRequired: a budget and a plan without DP.
    ("has no differential privacy", "privacy_required"),
    // ParticipantError::DeadlinePassed.
    ("deadline passed", "deadline_passed"),
    // A participant stopping mid-round.
    ("shutting down", "shutting_down"),
];

/// Returns the `reason` label of a decline: a category from
/// [`DECLINE_REASONS`], never the participant's text, so that the metric's
/// cardinality stays bounded and no free text reaches the scraper.
pub fn decline_reason(reason: &str) -> &'static str {
    DECLINE_PHRASES
        .iter()
        .find(|(phrase, _)| reason.contains(phrase))
        .map_or("other", |(_, category)| category)
}

/// Every `metric` label value of `fedshield_coordinator_model_evaluation`:
/// the held-out metrics a model card records.
pub const EVALUATION_METRICS: [&str; 9] = [
    "accuracy",
    "precision",
    "recall",
    "f1",
    "false_positive_rate",
    "roc_auc",
    "pr_auc",
    "detection_rate_at_1pct_fpr",
    "threshold",
];

/// Every `state` label value of `fedshield_coordinator_participants`.
pub const PARTICIPANT_STATES: [&str; 9] = [
    "connected",
    "selected",
    "training",
    "uploading",
    "submitted",
    "declined",
    "left_round",
    "sitting_out",
    "revoked",
];

/// How many participants are in each state the coordinator tracks. The
/// open round's selection splits into `training`, `uploading`,
/// `submitted`, `declined` and `left_round`; the other states overlap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParticipantStates {
    /// With an open `Join` session.
    pub connected: usize,
    /// Selected for the open round.
    pub selected: usize,
    /// Selected and connected, nothing delivered yet: training (or waiting
    /// for an upload slot).
    pub training: usize,
    /// Selected, its update being received.
    pub uploading: usize,
    /// Selected, its update accepted into the round's aggregate.
    pub submitted: usize,
    /// Selected, declined the round.
    pub declined: usize,
    /// Selected, its session ended before it delivered anything: a
    /// dropout once the round closes.
    pub left_round: usize,
    /// Sitting out round openings for leaving earlier rounds.
    pub sitting_out: usize,
    /// Whose session a revocation ended (until they join again).
    pub revoked: usize,
}

impl ParticipantStates {
    /// Returns each state's count, in [`PARTICIPANT_STATES`] order.
    pub fn counts(&self) -> [usize; PARTICIPANT_STATES.len()] {
        [
            self.connected,
            self.selected,
            self.training,
            self.uploading,
            self.submitted,
            self.declined,
            self.left_round,
            self.sitting_out,
            self.revoked,
        ]
    }
}

/// Where the participant gauges come from at each scrape: the engine's
/// counts, or `None` once the engine is gone.
type ParticipantSource = Box<dyn Fn() -> Option<ParticipantStates> + Send + Sync>;

/// Returns the `reason` label of a refused update: a small fixed set, so
/// that the metric's cardinality stays bounded whatever clients send.
pub fn rejection_reason(error: &CoordinatorError) -> &'static str {
    match error {
        CoordinatorError::InvalidParticipantId(_) | CoordinatorError::MalformedUpdate(_) => {
            "malformed"
        }
        CoordinatorError::InvalidPrivacyReport(_) => "privacy_report",
        CoordinatorError::NoOpenRound(_)
        | CoordinatorError::RoundClosed { .. }
        | CoordinatorError::WrongRound { .. }
        | CoordinatorError::WrongBaseVersion { .. } => "wrong_round",
        CoordinatorError::NotSelected { .. } => "not_selected",
        CoordinatorError::DuplicateUpdate { .. } | CoordinatorError::UploadInProgress { .. } => {
            "duplicate"
        }
        CoordinatorError::UpdateStalled { .. } | CoordinatorError::NoUpdateHeader { .. } => {
            "stalled"
        }
        CoordinatorError::UpdateTooSlow { .. } => "too_slow",
        CoordinatorError::SecureAggregation(_)
        | CoordinatorError::NotSecureRound(_)
        | CoordinatorError::PlainUpdateInSecureRound { .. }
        | CoordinatorError::SecurePhase { .. } => "secure_aggregation",
        CoordinatorError::NotJoined(_)
        | CoordinatorError::BadSessionToken(_)
        | CoordinatorError::NoClientCertificate
        | CoordinatorError::AccessDenied(_)
        | CoordinatorError::RevokedDuringRound { .. }
        | CoordinatorError::Impersonation { .. } => "access_denied",
        CoordinatorError::UnknownModelVersion(_)
        | CoordinatorError::Store(_)
        | CoordinatorError::Artifact { .. }
        | CoordinatorError::ArtifactStoreConfig(_)
        | CoordinatorError::ShuttingDown
        | CoordinatorError::TaskFailed(_)
        | CoordinatorError::PrivacyWeakened { .. } => "unavailable",
    }
}

/// The coordinator's metrics; cheap to clone (all clones update the same
/// values).
#[derive(Clone)]
pub struct CoordinatorMetrics {
    registry: Arc<Registry>,
    connected_participants: Gauge,
    rounds_opened: Counter,
    rounds_completed: Counter,
    rounds_abandoned: Counter,
    update_bytes_received: Counter,
    updates_accepted: Counter,
    update_rejections: Family<Labels, Counter>,
    aggregation_duration_seconds: Histogram,
    round_duration_seconds: Histogram,
    model_version: Gauge,
    model_downloads: Family<Labels, Counter>,
    uploads_waiting: Gauge,
    round_dropouts: Counter,
    participants_sitting_out: Gauge,
    round_declines: Family<Labels, Counter>,
    model_evaluation: Family<Labels, Gauge<f64, AtomicU64>>,
    model_evaluation_examples: Gauge,
    participants: Family<Labels, Gauge>,
    /// Read at each [`CoordinatorMetrics::render`] to set `participants`.
    participant_source: Arc<OnceLock<ParticipantSource>>,
}

/// One participant counted as waiting for an upload slot, until dropped
/// (also when its call is cancelled).
pub struct WaitingForUploadSlot(Gauge);

impl Drop for WaitingForUploadSlot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CoordinatorMetrics {
    /// Returns a fresh set of metrics, all zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let connected_participants = Gauge::default();
        registry.register(
            "fedshield_coordinator_connected_participants",
            "Participants with an open Join session",
            connected_participants.clone(),
        );
        let rounds_opened = Counter::default();
        registry.register(
            "fedshield_coordinator_rounds_opened",
            "Rounds opened",
            rounds_opened.clone(),
        );
        let rounds_completed = Counter::default();
        registry.register(
            "fedshield_coordinator_rounds_completed",
            "Rounds that published a new model version",
            rounds_completed.clone(),
        );
        let rounds_abandoned = Counter::default();
        registry.register(
            "fedshield_coordinator_rounds_abandoned",
            "Rounds closed without publishing (quorum out of reach, deadline, failure)",
            rounds_abandoned.clone(),
        );
        let update_bytes_received = Counter::default();
        registry.register(
            "fedshield_coordinator_update_bytes_received",
            "Bytes of update data chunks received, accepted or not",
            update_bytes_received.clone(),
        );
        let updates_accepted = Counter::default();
        registry.register(
            "fedshield_coordinator_updates_accepted",
            "Updates folded into a round's aggregate",
            updates_accepted.clone(),
        );
        let update_rejections = Family::<Labels, Counter>::default();
        registry.register(
            "fedshield_coordinator_update_rejections",
            "Updates refused, by reason",
            update_rejections.clone(),
        );
        for reason in REJECTION_REASONS {
            // Every reason is exported from the start, at zero.
            let _ = update_rejections.get_or_create(&vec![("reason", reason)]);
        }
        let aggregation_duration_seconds = Histogram::new(AGGREGATION_BUCKETS_SECS);
        registry.register(
            "fedshield_coordinator_aggregation_duration_seconds",
            "Time to finish a round's aggregate, evaluate and store the new version",
            aggregation_duration_seconds.clone(),
        );
        let round_duration_seconds = Histogram::new(ROUND_BUCKETS_SECS);
        registry.register(
            "fedshield_coordinator_round_duration_seconds",
            "Time from opening a round to closing it, completed or abandoned",
            round_duration_seconds.clone(),
        );
        let model_version = Gauge::default();
        registry.register(
            "fedshield_coordinator_model_version",
            "Current global model version",
            model_version.clone(),
        );
        let uploads_waiting = Gauge::default();
        registry.register(
            "fedshield_coordinator_uploads_waiting",
            "Participants waiting for one of the max_concurrent_uploads upload slots",
            uploads_waiting.clone(),
        );
        let model_downloads = Family::<Labels, Counter>::default();
        registry.register(
            "fedshield_coordinator_model_downloads",
            "Model weights served, by transport (grpc, https)",
            model_downloads.clone(),
        );
        for transport in DOWNLOAD_TRANSPORTS {
            let _ = model_downloads.get_or_create(&vec![("transport", transport)]);
        }
        let round_dropouts = Counter::default();
        registry.register(
            "fedshield_coordinator_round_dropouts",
            "Selected participants that left a round without an update or a decline",
            round_dropouts.clone(),
        );
        let participants_sitting_out = Gauge::default();
        registry.register(
            "fedshield_coordinator_participants_sitting_out",
            "Participants that sit out round openings for leaving earlier rounds",
            participants_sitting_out.clone(),
        );
        let round_declines = Family::<Labels, Counter>::default();
        registry.register(
            "fedshield_coordinator_round_declines",
            "Rounds selected participants declined, by reason category",
            round_declines.clone(),
        );
        for reason in DECLINE_REASONS {
            let _ = round_declines.get_or_create(&vec![("reason", reason)]);
        }
        let model_evaluation = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "fedshield_coordinator_model_evaluation",
            "Held-out metrics of the current model version on the evaluation set, by metric (absent without one)",
            model_evaluation.clone(),
        );
        let model_evaluation_examples = Gauge::default();
        registry.register(
            "fedshield_coordinator_model_evaluation_examples",
            "Examples the current model version was evaluated on (0 without an evaluation set)",
            model_evaluation_examples.clone(),
        );
        let participants = Family::<Labels, Gauge>::default();
        registry.register(
            "fedshield_coordinator_participants",
            "Participants by state: connected, selected for the open round and what each selected one is doing, sitting out, revoked",
            participants.clone(),
        );
        for state in PARTICIPANT_STATES {
            let _ = participants.get_or_create(&vec![("state", state)]);
        }
        CoordinatorMetrics {
            registry: Arc::new(registry),
            connected_participants,
            rounds_opened,
            rounds_completed,
            rounds_abandoned,
            update_bytes_received,
            updates_accepted,
            update_rejections,
            aggregation_duration_seconds,
            round_duration_seconds,
            model_version,
            model_downloads,
            uploads_waiting,
            round_dropouts,
            participants_sitting_out,
            round_declines,
            model_evaluation,
            model_evaluation_examples,
            participants,
            participant_source: Arc::new(OnceLock::new()),
        }
    }

    /// Returns the metrics in OpenMetrics text format, the participant
    /// gauges read from the engine at this moment.
    pub fn render(&self) -> String {
        if let Some(states) = self.participant_source.get().and_then(|source| source()) {
            self.set_participant_states(&states);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    pub(crate) fn set_connected_participants(&self, num_connected: usize) {
        self.connected_participants.set(num_connected as i64);
    }

    pub(crate) fn round_dropout(&self) {
        self.round_dropouts.inc();
    }

    pub(crate) fn set_participants_sitting_out(&self, num_sitting_out: usize) {
        self.participants_sitting_out.set(num_sitting_out as i64);
    }

    pub(crate) fn round_opened(&self) {
        self.rounds_opened.inc();
    }

    pub(crate) fn round_completed(&self, duration: Duration, aggregation: Duration) {
        self.rounds_completed.inc();
        self.round_duration_seconds.observe(duration.as_secs_f64());
        self.aggregation_duration_seconds
            .observe(aggregation.as_secs_f64());
    }

    pub(crate) fn round_abandoned(&self, duration: Duration) {
        self.rounds_abandoned.inc();
        self.round_duration_seconds.observe(duration.as_secs_f64());
    }

    /// Counts a participant as waiting for an upload slot until the
    /// returned guard is dropped.
    pub(crate) fn waiting_for_upload_slot(&self) -> WaitingForUploadSlot {
        self.uploads_waiting.inc();
        WaitingForUploadSlot(self.uploads_waiting.clone())
    }

    /// Sets the participant gauges from `source` at each render; only the
    /// first call has effect.
    pub(crate) fn count_participants_with(
        &self,
        source: impl Fn() -> Option<ParticipantStates> + Send + Sync + 'static,
    ) {
        let _ = self.participant_source.set(Box::new(source));
    }

    fn set_participant_states(&self, states: &ParticipantStates) {
        for (state, count) in PARTICIPANT_STATES.into_iter().zip(states.counts()) {
            self.participants
                .get_or_create(&vec![("state", state)])
                .set(count as i64);
        }
    }

    /// Sets the version gauge and the held-out metrics gauges to what the
    /// current version's card states; without metrics on the card, the
    /// metrics series are removed rather than left at an older version's.
    pub(crate) fn set_current_model(&self, card: &ModelCard) {
        self.model_version.set(card.version as i64);
        let Some(metrics) = &card.metrics else {
            self.model_evaluation.clear();
            self.model_evaluation_examples.set(0);
            return;
        };
        // In EVALUATION_METRICS order.
        let values = [
            metrics.accuracy,
            metrics.precision,
            metrics.recall,
            metrics.f1,
            metrics.false_positive_rate,
            metrics.roc_auc,
            metrics.pr_auc,
            metrics.detection_rate_at_1pct_fpr,
            metrics.threshold,
        ];
        for (metric, value) in EVALUATION_METRICS.into_iter().zip(values) {
            self.model_evaluation
                .get_or_create(&vec![("metric", metric)])
                .set(value);
        }
        self.model_evaluation_examples
            .set(i64::try_from(metrics.num_examples).unwrap_or(i64::MAX));
    }

    /// Counts a decline recorded for a round, by the category of `reason`
    /// (the participant's text, which is not kept).
    pub(crate) fn round_declined(&self, reason: &str) {
        self.round_declines
            .get_or_create(&vec![("reason", decline_reason(reason))])
            .inc();
    }

    pub(crate) fn update_bytes_received(&self, num_bytes: usize) {
        self.update_bytes_received.inc_by(num_bytes as u64);
    }

    pub(crate) fn update_accepted(&self) {
        self.updates_accepted.inc();
    }

    pub(crate) fn update_rejected(&self, error: &CoordinatorError) {
        self.update_rejections
            .get_or_create(&vec![("reason", rejection_reason(error))])
            .inc();
    }

    pub(crate) fn model_downloaded(&self, transport: &'static str) {
        self.model_downloads
            .get_or_create(&vec![("transport", transport)])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use fedshield_core::model::metrics::BinaryMetrics;
    use fedshield_core::model::weights::ModelWeights;
    use fedshield_core::{ModelSpec, ModelVersion, ParticipantId, RoundId, TrainingPlan};

    use super::*;
    use crate::dropouts::DropoutRecord;
    use crate::engine::{EngineStatus, OpenRoundStatus, RevokedMember};
    use crate::registry::PublishedModel;

    fn ids(names: &[&str]) -> Vec<ParticipantId> {
        names
            .iter()
            .map(|name| ParticipantId::new(*name).unwrap())
            .collect()
    }

    fn card(version: u64, metrics: Option<BinaryMetrics>) -> ModelCard {
        let spec = ModelSpec::mlp(4, vec![3], 2);
        ModelCard {
            version,
            parent: None,
            sha256: String::new(),
            num_params: 0,
            spec,
            round_id: None,
            contributors: Vec::new(),
            num_examples: 0,
            plan: TrainingPlan::new(),
            created_unix_ms: 0,
            feature_schema: None,
            feature_schema_sha256: None,
            metrics,
            privacy: None,
            aggregation: None,
            calibration: None,
        }
    }

    /// Returns the value of the sample line that starts with `series `.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|value| value.parse().unwrap())
    }

    #[test]
    fn each_selected_participant_is_in_one_state_of_the_round_and_gauges_follow_the_engine() {
        let weights = ModelWeights::init(ModelSpec::mlp(4, vec![3], 2), 1).unwrap();
        let status = EngineStatus {
            current: Arc::new(PublishedModel {
                version: ModelVersion(0),
                weights,
                card: card(0, None),
            }),
            connected: ids(&["a", "b", "c", "d", "e"]),
            last_contact_unix_ms: vec![0; 5],
            open_round: Some(OpenRoundStatus {
                round_id: RoundId(1),
                base_version: ModelVersion(0),
                selected: ids(&["a", "b", "c", "d", "f"]),
                accepted: ids(&["a"]),
                declined: ids(&["b"]),
                uploading: ids(&["c"]),
                quorum: 1,
                deadline_unix_ms: 0,
                attempt: 1,
            }),
            num_rounds_completed: 0,
            num_rounds_abandoned: 0,
            recent_rounds: Vec::new(),
            revoked: vec![RevokedMember {
                participant: ParticipantId::new("g").unwrap(),
                revoked_unix_ms: 1,
                reason: "test".to_string(),
            }],
            dropouts: vec![
                (
                    ParticipantId::new("f").unwrap(),
                    DropoutRecord {
                        num_dropouts: 1,
                        strikes: 1,
                        sit_out_rounds_left: 1,
                    },
                ),
                (
                    ParticipantId::new("e").unwrap(),
                    DropoutRecord {
                        num_dropouts: 1,
                        strikes: 0,
                        sit_out_rounds_left: 0,
                    },
                ),
            ],
        };
        let states = status.participant_states();
        assert_eq!(
            states,
            ParticipantStates {
                connected: 5,
                selected: 5,
                training: 1,
                uploading: 1,
                submitted: 1,
                declined: 1,
                left_round: 1,
                sitting_out: 1,
                revoked: 1,
            }
        );
        let metrics = CoordinatorMetrics::new();
        let before = metrics.render();
        for state in PARTICIPANT_STATES {
            let series = format!("fedshield_coordinator_participants{{state=\"{state}\"}}");
            assert_eq!(sample(&before, &series), Some(0.0), "{series}");
        }
        metrics.count_participants_with(move || Some(states));
        let text = metrics.render();
        for (state, count) in PARTICIPANT_STATES.into_iter().zip(states.counts()) {
            let series = format!("fedshield_coordinator_participants{{state=\"{state}\"}}");
            assert_eq!(sample(&text, &series), Some(count as f64), "{series}");
        }
    }

    #[test]
    fn declines_are_counted_by_a_fixed_category_never_by_their_text() {
        for (reason, category) in [
            (
                "privacy budget exhausted: spent epsilon 1.0000 of 1.0000; this round would bring it to 1.5000",
                "budget_exhausted",
            ),
            (
                "organization-level privacy budget exhausted: spent epsilon 1.0000 of 1.0000; this round would bring it to 2.0000",
                "budget_exhausted",
            ),
            (
                "the local training data is below the plan's public minimum of 4000 records; declining the round",
                "insufficient_data",
            ),
            (
                "the federation's feature schema (sha256 ab) differs from the local one (sha256 cd): column proto only in the federation's schema; train with the federation's schema",
                "schema_mismatch",
            ),
            ("participant shutting down", "shutting_down"),
            ("", "other"),
            ("evil\"} 1\nfedshield_fake 1", "other"),
        ] {
            assert_eq!(decline_reason(reason), category, "{reason}");
        }
        let metrics = CoordinatorMetrics::new();
        metrics.round_declined("evil\"} 1\nfedshield_fake 1");
        metrics.round_declined("participant shutting down");
        let text = metrics.render();
        assert!(!text.contains("evil") && !text.contains("fedshield_fake"));
        for reason in DECLINE_REASONS {
            let series =
                format!("fedshield_coordinator_round_declines_total{{reason=\"{reason}\"}}");
            let expected = if matches!(reason, "other" | "shutting_down") {
                1.0
            } else {
                0.0
            };
            assert_eq!(sample(&text, &series), Some(expected), "{series}");
        }
    }

    #[test]
    fn evaluation_gauges_follow_the_current_card_and_vanish_without_metrics() {
        let metrics = CoordinatorMetrics::new();
        let evaluated = BinaryMetrics::compute(&[0.9, 0.2, 0.7, 0.4], &[1, 0, 0, 1]);
        metrics.set_current_model(&card(3, Some(evaluated)));
        let text = metrics.render();
        assert_eq!(
            sample(&text, "fedshield_coordinator_model_version"),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                "fedshield_coordinator_model_evaluation{metric=\"accuracy\"}"
            ),
            Some(evaluated.accuracy)
        );
        assert_eq!(
            sample(
                &text,
                "fedshield_coordinator_model_evaluation{metric=\"roc_auc\"}"
            ),
            Some(evaluated.roc_auc)
        );
        assert_eq!(
            sample(&text, "fedshield_coordinator_model_evaluation_examples"),
            Some(4.0)
        );
        for metric in EVALUATION_METRICS {
            let series = format!("fedshield_coordinator_model_evaluation{{metric=\"{metric}\"}}");
            assert!(sample(&text, &series).is_some(), "{series}");
        }
        metrics.set_current_model(&card(4, None));
        let text = metrics.render();
        assert!(!text.contains("fedshield_coordinator_model_evaluation{"));
        assert_eq!(
            sample(&text, "fedshield_coordinator_model_evaluation_examples"),
            Some(0.0)
        );
    }
}
