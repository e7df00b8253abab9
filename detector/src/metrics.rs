//! Placeholder of the detector's metrics until the Prometheus registry lands.

use crate::sinks::SinkStats;

/// The detector's counters.
#[derive(Debug, Default)]
pub struct DetectorMetrics;

impl DetectorMetrics {
    pub fn set_model_version(&self, _version: u64) {}
    pub fn malformed_events(&self, _count: u64) {}
    pub fn alert(&self, _class: &str) {}
    pub fn events_scored(&self, _count: u64) {}
    pub fn record_sink_stats(&self, _name: &str, _stats: SinkStats) {}
}
