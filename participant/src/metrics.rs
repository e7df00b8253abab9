//! The participant's Prometheus metrics: rounds, traffic, training time and
//! the privacy ledger's totals.
//!
//! Only counts, sizes, durations and the ledger's cumulative ε: no
//! telemetry, no per-record values, no update contents. Served as
//! OpenMetrics text on `--metrics-listen`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Histogram buckets of the local training duration, in seconds.
const TRAINING_BUCKETS_SECS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The participant's metrics; cheap to clone (all clones update the same
/// values).
#[derive(Clone)]
pub struct ParticipantMetrics {
    registry: Arc<Registry>,
    rounds_trained: Counter,
    rounds_declined: Counter,
    updates_resent: Counter,
    bytes_downloaded: Counter,
    bytes_uploaded: Counter,
    training_duration_seconds: Histogram,
    privacy_epsilon_spent: Gauge<f64, AtomicU64>,
    /// ε left in the budget; exported only when there is a budget.
    privacy_epsilon_remaining: Gauge<f64, AtomicU64>,
    budget_epsilon: Option<f64>,
}

impl ParticipantMetrics {
    /// Returns a fresh set of metrics, all zero, for a participant whose
    /// record-level privacy budget is `budget_epsilon`, if it has one.
    pub fn new(budget_epsilon: Option<f64>) -> Self {
        let mut registry = Registry::default();
        let rounds_trained = Counter::default();
        registry.register(
            "fedshield_participant_rounds_trained",
            "Rounds this participant trained for and whose update the coordinator accepted",
            rounds_trained.clone(),
        );
        let rounds_declined = Counter::default();
        registry.register(
            "fedshield_participant_rounds_declined",
            "Announced rounds this participant did not complete (privacy budget, errors, refusals)",
            rounds_declined.clone(),
        );
        let updates_resent = Counter::default();
        registry.register(
            "fedshield_participant_updates_resent",
            "Retried rounds answered with the stored privatized update of an earlier attempt on the same base version and plan (no training, no privacy spend)",
            updates_resent.clone(),
        );
        let bytes_downloaded = Counter::default();
        registry.register(
            "fedshield_participant_model_bytes_downloaded",
            "Bytes of model parameters downloaded from the coordinator",
            bytes_downloaded.clone(),
        );
        let bytes_uploaded = Counter::default();
        registry.register(
            "fedshield_participant_update_bytes_uploaded",
            "Bytes of update parameters sent to the coordinator",
            bytes_uploaded.clone(),
        );
        let training_duration_seconds = Histogram::new(TRAINING_BUCKETS_SECS);
        registry.register(
            "fedshield_participant_training_duration_seconds",
            "Time spent in local training per round",
            training_duration_seconds.clone(),
        );
        let privacy_epsilon_spent = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "fedshield_participant_privacy_epsilon_spent",
            "Record-level epsilon spent so far, from the privacy ledger",
            privacy_epsilon_spent.clone(),
        );
        let privacy_epsilon_remaining = Gauge::<f64, AtomicU64>::default();
        if let Some(budget) = budget_epsilon {
            privacy_epsilon_remaining.set(budget);
            registry.register(
                "fedshield_participant_privacy_epsilon_remaining",
                "Record-level epsilon left in the privacy budget",
                privacy_epsilon_remaining.clone(),
            );
        }
        ParticipantMetrics {
            registry: Arc::new(registry),
            rounds_trained,
            rounds_declined,
            updates_resent,
            bytes_downloaded,
            bytes_uploaded,
            training_duration_seconds,
            privacy_epsilon_spent,
            privacy_epsilon_remaining,
            budget_epsilon,
        }
    }

    /// Returns the metrics in OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    pub(crate) fn round_trained(&self) {
        self.rounds_trained.inc();
    }

    pub(crate) fn round_declined(&self) {
        self.rounds_declined.inc();
    }

    pub(crate) fn update_resent(&self) {
        self.updates_resent.inc();
    }

    pub(crate) fn downloaded(&self, num_bytes: usize) {
        self.bytes_downloaded.inc_by(num_bytes as u64);
    }

    pub(crate) fn uploaded(&self, num_bytes: usize) {
        self.bytes_uploaded.inc_by(num_bytes as u64);
    }

    pub(crate) fn trained_for(&self, duration: Duration) {
        self.training_duration_seconds
            .observe(duration.as_secs_f64());
    }

    /// Sets the ledger's total: `spent_epsilon` so far.
    pub(crate) fn set_privacy_spent(&self, spent_epsilon: f64) {
        self.privacy_epsilon_spent.set(spent_epsilon);
        if let Some(budget) = self.budget_epsilon {
            self.privacy_epsilon_remaining
                .set((budget - spent_epsilon).max(0.0));
        }
    }
}
