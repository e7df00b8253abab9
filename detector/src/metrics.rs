//! The detector's Prometheus metrics: events scored (and their rate over the
//! last 10 s window), malformed events, alerts by class, alerts suppressed
//! into repeat counts, each sink's queue depth, deliveries and drops, the
//! model version in use and the build.
//!
//! Only counts, rates and version numbers: never an event, an alert's
//! fields or an address from the traffic. The class label is a category of
//! the model (or `attack`), never text from an event. Served as OpenMetrics
//! text on `GET /metrics` of the plain-HTTP listener of [`crate::http`].
//!
//! The scoring thread updates the metrics once per batch through atomics
//! (prometheus-client's counters and gauges); only the labelled families
//! take a read lock, once per batch and class, and the sink snapshots a
//! mutex, once per flush.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fedshield_core::ModelVersion;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::sinks::SinkStats;

pub use fedshield_proto::metrics_http::OPENMETRICS_CONTENT_TYPE;

/// Length of the window `fedshield_detector_events_per_second` is computed over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// The `class` label of alerts without a category (a binary model's verdict).
pub const ATTACK_CLASS: &str = "attack";

/// The `class` label that stands for every class past [`MAX_ALERT_CLASSES`].
pub const OTHER_CLASS: &str = "other";

/// Most distinct `class` labels exported; a model with more categories has
/// the rest counted as [`OTHER_CLASS`], so that the series count stays bounded.
pub const MAX_ALERT_CLASSES: usize = 64;

/// Longest `class` or `sink` label value kept, in bytes.
const MAX_LABEL_BYTES: usize = 64;

/// Label set of one labelled metric: `[(label, value)]`.
type Labels = Vec<(&'static str, String)>;

/// The events-per-second window: which window is open and how many events
/// had been scored when it opened. Updated without a lock: the thread that
/// moves `window_index` forward (a compare-exchange) is the only one that
/// swaps the count and sets the gauge.
struct RateWindow {
    /// Instant window 0 started; window `k` covers `[k, k + 1) × RATE_WINDOW` after it.
    started: Instant,
    /// Index of the window now open.
    window_index: AtomicU64,
    /// `events_total` when the open window started.
    num_events_at_window_start: AtomicU64,
    /// Events per second of the last completed window.
    events_per_second: Gauge<f64, AtomicU64>,
}

impl RateWindow {
    /// Closes the open window if `elapsed` (since `started`) lies in a later
    /// one; `num_events_before` is the events total not counting any batch
    /// being recorded now (which belongs to the new window). The last
    /// completed window is the open one if `elapsed` is in the next window;
    /// else a later one in which nothing was scored (a batch there would
    /// have closed it), and the rate is 0.
    fn roll(&self, elapsed: Duration, num_events_before: u64) {
        let window_nanos = RATE_WINDOW.as_nanos();
        let current = u64::try_from(elapsed.as_nanos() / window_nanos).unwrap_or(u64::MAX);
        let open = self.window_index.load(Ordering::Acquire);
        if current <= open {
            return;
        }
        if self
            .window_index
            .compare_exchange(open, current, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another thread closed it.
            return;
        }
        let num_events_at_start = self
            .num_events_at_window_start
            .swap(num_events_before, Ordering::AcqRel);
        let events_per_second = if current == open + 1 {
            num_events_before.saturating_sub(num_events_at_start) as f64 / RATE_WINDOW.as_secs_f64()
        } else {
            0.0
        };
        self.events_per_second.set(events_per_second);
    }
}

/// The detector's metrics. Share it with an `Arc`: the scoring thread
/// updates it, the HTTP listener renders it.
pub struct DetectorMetrics {
    registry: Registry,
    events: Counter,
    rate: RateWindow,
    malformed_events: Counter,
    alerts: Family<Labels, Counter>,
    /// Distinct classes given a series of their own so far (the first
    /// [`MAX_ALERT_CLASSES`]).
    num_alert_classes: AtomicUsize,
    alerts_suppressed: Counter,
    sink_queue_depth: Family<Labels, Gauge>,
    sink_submitted: Family<Labels, Counter>,
    sink_delivered: Family<Labels, Counter>,
    sink_dropped: Family<Labels, Counter>,
    /// The last [`SinkStats`] of each sink, to turn cumulative snapshots
    /// into counter increments.
    sink_snapshots: Mutex<HashMap<String, SinkStats>>,
    model_version: Gauge,
}

impl Default for DetectorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DetectorMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DetectorMetrics")
            .field("num_events", &self.events.get())
            .finish_non_exhaustive()
    }
}

impl DetectorMetrics {
    /// Returns a fresh set of metrics, all zero, with the events-per-second
    /// window starting now.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let build = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        registry.register(
            "fedshield_detector_build",
            "The fedshield build this detector runs",
            build,
        );
        let events = Counter::default();
        registry.register(
            "fedshield_detector_events",
            "Events scored (events per second is its rate)",
            events.clone(),
        );
        let events_per_second = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "fedshield_detector_events_per_second",
            "Events scored per second over the last completed 10 s window",
            events_per_second.clone(),
        );
        let malformed_events = Counter::default();
        registry.register(
            "fedshield_detector_malformed_events",
            "Events skipped because they could not be parsed or featurized",
            malformed_events.clone(),
        );
        let alerts = Family::<Labels, Counter>::default();
        registry.register(
            "fedshield_detector_alerts",
            "Alerts raised, by class (the model's category, or attack)",
            alerts.clone(),
        );
        let alerts_suppressed = Counter::default();
        registry.register(
            "fedshield_detector_alerts_suppressed",
            "Alerts not emitted but rolled into the repeat count of an earlier alert",
            alerts_suppressed.clone(),
        );
        let sink_queue_depth = Family::<Labels, Gauge>::default();
        registry.register(
            "fedshield_detector_sink_queue_depth",
            "Alert records waiting in each sink's queue",
            sink_queue_depth.clone(),
        );
        let sink_submitted = Family::<Labels, Counter>::default();
        registry.register(
            "fedshield_detector_sink_submitted",
            "Alert records handed to each sink",
            sink_submitted.clone(),
        );
        let sink_delivered = Family::<Labels, Counter>::default();
        registry.register(
            "fedshield_detector_sink_delivered",
            "Alert records each sink's destination accepted",
            sink_delivered.clone(),
        );
        let sink_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "fedshield_detector_sink_dropped",
            "Alert records each sink dropped (queue full, destination unreachable, or closed)",
            sink_dropped.clone(),
        );
        let model_version = Gauge::default();
        registry.register(
            "fedshield_detector_model_version",
            "Model version scoring events (0 before one is loaded)",
            model_version.clone(),
        );
        DetectorMetrics {
            registry,
            events,
            rate: RateWindow {
                started: Instant::now(),
                window_index: AtomicU64::new(0),
                num_events_at_window_start: AtomicU64::new(0),
                events_per_second,
            },
            malformed_events,
            alerts,
            num_alert_classes: AtomicUsize::new(0),
            alerts_suppressed,
            sink_queue_depth,
            sink_submitted,
            sink_delivered,
            sink_dropped,
            sink_snapshots: Mutex::new(HashMap::new()),
            model_version,
        }
    }

    /// Returns the metrics as OpenMetrics text (ending with `# EOF`), with
    /// the events-per-second gauge brought up to date first (a stalled
    /// input reads 0 once a whole window passed without events).
    pub fn render(&self) -> String {
        self.rate
            .roll(self.rate.started.elapsed(), self.events.get());
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Counts `num_events` events scored; call it once per batch.
    pub fn events_scored(&self, num_events: u64) {
        self.events_scored_at(num_events, self.rate.started.elapsed());
    }

    fn events_scored_at(&self, num_events: u64, elapsed: Duration) {
        let num_events_before = self.events.inc_by(num_events);
        self.rate.roll(elapsed, num_events_before);
    }

    /// Counts `num_events` events skipped as malformed.
    pub fn events_malformed(&self, num_events: u64) {
        self.malformed_events.inc_by(num_events);
    }

    /// Counts `num_alerts` alerts of `class` (the model's category, or
    /// [`ATTACK_CLASS`]); call it once per batch and class.
    pub fn alerts_raised(&self, class: &str, num_alerts: u64) {
        if num_alerts == 0 {
            return;
        }
        let label = label_value(class);
        // The family's read lock finds an existing class; a new one needs
        // the bound check (rare: once per class).
        if let Some(counter) = self.alerts.get(&vec![("class", label.clone())]) {
            counter.inc_by(num_alerts);
            return;
        }
        let num_classes = self.num_alert_classes.fetch_add(1, Ordering::Relaxed);
        let label = if num_classes >= MAX_ALERT_CLASSES {
            OTHER_CLASS.to_string()
        } else {
            label
        };
        self.alerts
            .get_or_create(&vec![("class", label)])
            .inc_by(num_alerts);
    }

    /// Counts `num_alerts` alerts suppressed: rolled into the repeat count
    /// of an earlier alert with the same suppression key.
    pub fn alerts_suppressed(&self, num_alerts: u64) {
        self.alerts_suppressed.inc_by(num_alerts);
    }

    /// Records the counts of the sink called `name` (one name per sink:
    /// two sinks of one kind need distinct names). `stats` are cumulative,
    /// as [`crate::sinks::AlertSink::stats`] returns them: the counters grow
    /// by the difference to the last snapshot of that name, and a snapshot
    /// below the last (a sink opened again) counts from zero. The queue
    /// depth gauge is set as is.
    pub fn record_sink_stats(&self, name: &str, stats: SinkStats) {
        let label = vec![("sink", label_value(name))];
        let last = {
            let mut snapshots = self
                .sink_snapshots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            snapshots
                .insert(name.to_string(), stats)
                .unwrap_or_default()
        };
        for (family, now, before) in [
            (
                &self.sink_submitted,
                stats.num_submitted,
                last.num_submitted,
            ),
            (
                &self.sink_delivered,
                stats.num_delivered,
                last.num_delivered,
            ),
            (&self.sink_dropped, stats.num_dropped, last.num_dropped),
        ] {
            let increment = if now >= before { now - before } else { now };
            family.get_or_create(&label).inc_by(increment);
        }
        self.sink_queue_depth
            .get_or_create(&label)
            .set(i64::try_from(stats.queue_depth).unwrap_or(i64::MAX));
    }

    /// Sets the model version scoring events (at start and at each switch).
    pub fn set_model_version(&self, version: ModelVersion) {
        self.model_version
            .set(i64::try_from(version.0).unwrap_or(i64::MAX));
    }
}

/// Returns `value` as a label value: at most [`MAX_LABEL_BYTES`] bytes of
/// ASCII letters, digits, `_`, `-`, `.` and `:`, anything else as `_`.
fn label_value(value: &str) -> String {
    value
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || matches!(character, '_' | '-' | '.' | ':') {
                character
            } else {
                '_'
            }
        })
        .take(MAX_LABEL_BYTES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the value of the sample line that starts with `series `.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|value| value.parse().unwrap())
    }

    fn rate(metrics: &DetectorMetrics) -> Option<f64> {
        let text = {
            let mut text = String::new();
            let _ = encode(&mut text, &metrics.registry);
            text
        };
        sample(&text, "fedshield_detector_events_per_second")
    }

    #[test]
    fn events_per_second_is_the_rate_of_the_last_completed_window() {
        let metrics = DetectorMetrics::new();
        let seconds = Duration::from_secs;
        metrics.events_scored_at(100, seconds(1));
        metrics.events_scored_at(400, seconds(9));
        // Window 0 is still open: no completed window yet.
        assert_eq!(rate(&metrics), Some(0.0));
        // The first batch of window 1 closes window 0 (500 events in 10 s)
        // and counts in window 1.
        metrics.events_scored_at(1_000, seconds(11));
        assert_eq!(rate(&metrics), Some(50.0));
        metrics.events_scored_at(1_000, seconds(19));
        metrics.events_scored_at(7, seconds(20));
        assert_eq!(rate(&metrics), Some(200.0));
        // Windows 2 and 3 pass: window 3 saw nothing.
        metrics.rate.roll(seconds(41), metrics.events.get());
        assert_eq!(rate(&metrics), Some(0.0));
        assert_eq!(metrics.events.get(), 2_507);
    }

    #[test]
    fn a_stalled_input_reads_zero_events_per_second_at_the_next_scrape_after_a_window() {
        let metrics = DetectorMetrics::new();
        metrics.events_scored_at(300, Duration::from_secs(2));
        metrics
            .rate
            .roll(Duration::from_secs(12), metrics.events.get());
        assert_eq!(rate(&metrics), Some(30.0));
        metrics
            .rate
            .roll(Duration::from_secs(25), metrics.events.get());
        assert_eq!(rate(&metrics), Some(0.0));
    }

    #[test]
    fn sink_snapshots_become_counter_increments_and_a_reopened_sink_counts_from_zero() {
        let metrics = DetectorMetrics::new();
        let stats = |num_submitted, num_delivered, num_dropped, queue_depth| SinkStats {
            num_submitted,
            num_delivered,
            num_dropped,
            queue_depth,
            ..SinkStats::default()
        };
        metrics.record_sink_stats("webhook", stats(10, 6, 1, 3));
        metrics.record_sink_stats("webhook", stats(15, 12, 2, 1));
        metrics.record_sink_stats("stdout", stats(4, 4, 0, 0));
        let text = metrics.render();
        for (series, expected) in [
            (
                "fedshield_detector_sink_submitted_total{sink=\"webhook\"}",
                15.0,
            ),
            (
                "fedshield_detector_sink_delivered_total{sink=\"webhook\"}",
                12.0,
            ),
            (
                "fedshield_detector_sink_dropped_total{sink=\"webhook\"}",
                2.0,
            ),
            ("fedshield_detector_sink_queue_depth{sink=\"webhook\"}", 1.0),
            (
                "fedshield_detector_sink_delivered_total{sink=\"stdout\"}",
                4.0,
            ),
        ] {
            assert_eq!(sample(&text, series), Some(expected), "{series}");
        }
        // Opened again: its counts start over.
        metrics.record_sink_stats("webhook", stats(2, 1, 0, 1));
        let text = metrics.render();
        assert_eq!(
            sample(
                &text,
                "fedshield_detector_sink_delivered_total{sink=\"webhook\"}"
            ),
            Some(13.0)
        );
    }

    #[test]
    fn alert_classes_are_bounded_and_cleaned_into_label_values() {
        let metrics = DetectorMetrics::new();
        metrics.alerts_raised("evil\"} 1\nfedshield_fake 1", 1);
        metrics.alerts_raised(ATTACK_CLASS, 0);
        for index in 0..MAX_ALERT_CLASSES + 5 {
            metrics.alerts_raised(&format!("class{index}"), 2);
        }
        let text = metrics.render();
        assert!(!text.contains("fedshield_fake 1"), "{text}");
        assert!(!text.contains(&format!("class=\"{ATTACK_CLASS}\"")));
        assert_eq!(
            sample(
                &text,
                "fedshield_detector_alerts_total{class=\"evil___1_fedshield_fake_1\"}"
            ),
            Some(1.0)
        );
        let num_class_series = text
            .lines()
            .filter(|line| line.starts_with("fedshield_detector_alerts_total{"))
            .count();
        assert_eq!(num_class_series, MAX_ALERT_CLASSES + 1);
        assert_eq!(
            sample(&text, "fedshield_detector_alerts_total{class=\"other\"}"),
            Some(12.0)
        );
    }
}
