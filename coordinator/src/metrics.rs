//! The coordinator's Prometheus metrics: rounds, updates, refusals,
//! aggregation and downloads.
//!
//! Only counts, sizes, durations and version numbers: no telemetry, no
//! update values, no tokens. Served as OpenMetrics text (which Prometheus
//! scrapes) on `GET /metrics` of the HTTPS endpoint and, optionally, on a
//! plain-HTTP listener for a scraper on a private network.

use std::sync::Arc;
use std::time::Duration;

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
pub const REJECTION_REASONS: [&str; 9] = [
    "malformed",
    "privacy_report",
    "wrong_round",
    "not_selected",
    "duplicate",
    "stalled",
    "too_slow",
    "access_denied",
    "unavailable",
];

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
        CoordinatorError::UpdateStalled { .. } => "stalled",
        CoordinatorError::UpdateTooSlow { .. } => "too_slow",
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
        }
    }

    /// Returns the metrics in OpenMetrics text format.
    pub fn render(&self) -> String {
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

    pub(crate) fn set_model_version(&self, version: u64) {
        self.model_version.set(version as i64);
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
