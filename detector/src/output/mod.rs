//! Where verdicts go: which events become alerts (all, or only those over
//! the threshold), repeats rolled up by a suppression window, each alert
//! encoded once by the chosen format and handed to every sink.
//!
//! - [`suppress`]: the suppression window.

pub mod suppress;

use std::time::Duration;

use crate::alert::Alert;
use crate::error::Result;
use crate::format::AlertFormat;
use crate::sinks::{AlertSink, SinkStats};
pub use suppress::{SuppressionSettings, Suppressor};

/// What becomes an alert, and how much of it.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// Emit only events at or above the threshold; otherwise every event.
    pub alerts_only: bool,
    /// Contributing columns listed in each attack's explanation; 0 for none.
    pub explain_top_k: usize,
    /// Fields echoed in every verdict besides the schema's identity columns.
    pub include_fields: Vec<String>,
    /// Repeats of one key within a window rolled into one alert.
    pub suppression: Option<SuppressionSettings>,
}

impl Default for AlertOptions {
    fn default() -> Self {
        AlertOptions {
            alerts_only: false,
            explain_top_k: DEFAULT_EXPLAIN_TOP_K,
            include_fields: Vec::new(),
            suppression: None,
        }
    }
}

/// Contributing columns listed per attack unless the settings say otherwise.
pub const DEFAULT_EXPLAIN_TOP_K: usize = 5;

/// Counts of the alert output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputStats {
    /// Verdicts handed to the sinks (alerts, or every event without `alerts_only`).
    pub num_emitted: u64,
    /// Attacks among them.
    pub num_attacks: u64,
    /// Attacks rolled into another alert's count by the suppression window.
    pub num_suppressed: u64,
}

/// Encodes alerts with one format and hands each to every sink.
pub struct AlertOutput {
    format: Box<dyn AlertFormat>,
    sinks: Vec<Box<dyn AlertSink>>,
    options: AlertOptions,
    suppressor: Option<Suppressor>,
    /// The encoding of the alert being emitted.
    encoded: Vec<u8>,
    stats: OutputStats,
    /// Set once a sink's reader went away for good (a closed stdout pipe).
    closed: bool,
}

impl AlertOutput {
    /// Returns an output encoding with `format` into `sinks`.
    pub fn new(
        format: Box<dyn AlertFormat>,
        sinks: Vec<Box<dyn AlertSink>>,
        options: AlertOptions,
    ) -> Self {
        let suppressor = options.suppression.clone().map(Suppressor::new);
        AlertOutput {
            format,
            sinks,
            options,
            suppressor,
            encoded: Vec::with_capacity(1024),
            stats: OutputStats::default(),
            closed: false,
        }
    }

    /// Returns the options.
    pub fn options(&self) -> &AlertOptions {
        &self.options
    }

    /// Returns the counts so far.
    pub fn stats(&self) -> OutputStats {
        self.stats
    }

    /// Returns each sink's name and counts.
    pub fn sink_stats(&self) -> Vec<(String, SinkStats)> {
        self.sinks
            .iter()
            .map(|sink| (sink.name().to_string(), sink.stats()))
            .collect()
    }

    /// Returns true once a sink's reader went away: scoring stops.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Emits `alert`, unless the suppression window rolls it into a later
    /// alert's count.
    ///
    /// # Errors
    /// A sink's local output failure.
    pub fn emit(&mut self, alert: Alert) -> Result<()> {
        if alert.is_attack
            && let Some(suppressor) = &mut self.suppressor
        {
            let released = suppressor.offer(alert, std::time::Instant::now());
            if released.is_empty() {
                self.stats.num_suppressed += 1;
            }
            for alert in released {
                self.write(&alert)?;
            }
            return Ok(());
        }
        self.write(&alert)
    }

    /// Emits the roll-ups of suppression windows that have passed.
    ///
    /// # Errors
    /// As [`Self::emit`].
    pub fn expire(&mut self) -> Result<()> {
        let Some(suppressor) = &mut self.suppressor else {
            return Ok(());
        };
        for alert in suppressor.expire(std::time::Instant::now()) {
            self.write(&alert)?;
        }
        Ok(())
    }

    /// Hands what the sinks buffer to their destinations (after each batch).
    ///
    /// # Errors
    /// As [`Self::emit`].
    pub fn flush_batch(&mut self) -> Result<()> {
        for sink in &mut self.sinks {
            sink.end_batch()?;
            self.closed |= sink.is_closed();
        }
        Ok(())
    }

    /// Emits every pending roll-up and delivers what the sinks queue,
    /// waiting at most `wait` in all: the last step before exiting.
    ///
    /// # Errors
    /// As [`Self::emit`].
    pub fn finish(&mut self, wait: Duration) -> Result<()> {
        if let Some(suppressor) = &mut self.suppressor {
            for alert in suppressor.drain() {
                self.write(&alert)?;
            }
        }
        let deadline = std::time::Instant::now() + wait;
        for sink in &mut self.sinks {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            sink.flush(left)?;
        }
        Ok(())
    }

    fn write(&mut self, alert: &Alert) -> Result<()> {
        self.encoded.clear();
        self.format.encode(alert, &mut self.encoded);
        self.stats.num_emitted += 1;
        if alert.is_attack {
            self.stats.num_attacks += 1;
        }
        for sink in &mut self.sinks {
            sink.submit(alert, &self.encoded)?;
            self.closed |= sink.is_closed();
        }
        Ok(())
    }
}
