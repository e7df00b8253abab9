//! Where encoded alerts go: the [`AlertSink`] trait and its sinks.
//!
//! A sink receives one encoded record at a time (one JSON object, without a
//! line feed) from the scoring thread. A sink must never block scoring for
//! long: network sinks hand records to their own task through a bounded
//! queue; when the queue is full the record is dropped, counted and
//! reported, never lost silently.

use std::time::Duration;

use crate::alert::Alert;
use crate::error::Result;

/// Counts of one sink, for the detector's metrics and its last report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Records handed to the sink.
    pub num_submitted: u64,
    /// Records the destination accepted.
    pub num_delivered: u64,
    /// Records dropped because the queue was full (or the sink closed).
    pub num_dropped: u64,
    /// Records waiting in the queue now.
    pub queue_depth: u64,
}

/// A destination of encoded alert records.
pub trait AlertSink: Send {
    /// Returns the sink's name for metrics and logs (`stdout`, `file`,
    /// `syslog-udp`, `syslog-tcp`, `syslog-tls`, `webhook`).
    fn name(&self) -> &str;

    /// Hands one encoded record of `alert` (no trailing line feed) to the
    /// sink; `alert` gives what a framing needs (syslog's severity and
    /// timestamp). Never blocks on the destination: a record that does not
    /// fit the queue is dropped and counted.
    ///
    /// # Errors
    /// Only a local output failure that makes going on pointless (stdout
    /// or the alert file cannot be written).
    fn submit(&mut self, alert: &Alert, record: &[u8]) -> Result<()>;

    /// Delivers what is queued, waiting at most `wait`; what is still queued
    /// then is counted as dropped.
    ///
    /// # Errors
    /// As [`Self::submit`].
    fn flush(&mut self, wait: Duration) -> Result<()>;

    /// Returns the counts so far.
    fn stats(&self) -> SinkStats;

    /// Returns true once the sink's reader went away for good (a closed
    /// standard-output pipe): scoring stops.
    fn is_closed(&self) -> bool {
        false
    }
}
