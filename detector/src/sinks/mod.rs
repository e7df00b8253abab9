//! Where encoded alerts go: the [`AlertSink`] trait and its sinks.
//!
//! A sink receives one encoded record at a time (one JSON object, without a
//! line feed) from the scoring thread. A sink must never block scoring for
//! long: network sinks hand records to their own task through a bounded
//! queue; when the queue is full the record is dropped, counted and
//! reported, never lost silently.
//!
//! - [`spec`]: [`SinkSpec`] (the `--sink` strings) and [`SinkOptions`].
//! - [`stdout`], [`file`]: local sinks, written on the scoring thread.
//! - [`queue`]: the bounded queue and counters network sinks share.
//! - [`syslog`]: RFC 5424 over UDP, TCP or TLS.
//! - [`webhook`]: HMAC-signed JSON batches over HTTPS.
//!
//! [`open_sink`] is the one place a spec becomes a sink.

pub mod file;
pub mod queue;
pub mod spec;
pub mod stdout;
pub mod syslog;
pub mod webhook;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use fedshield_proto::tls::TlsError;

use crate::alert::Alert;
use crate::error::Result;

pub use spec::{
    DEFAULT_SYSLOG_FACILITY, RetryPolicy, SinkOptions, SinkSpec, SyslogTransport,
    syslog_facility_code,
};

/// Errors of the sinks; messages name the sink string, file or address.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A `--sink` string that names no sink.
    #[error("invalid sink {spec:?}: {reason}")]
    InvalidSpec { spec: String, reason: String },
    /// Options a sink cannot run with; `problems` names every field.
    #[error("invalid sink options: {}", problems.join("; "))]
    InvalidOptions { problems: Vec<String> },
    /// The alert file cannot be opened, written, synced or rotated.
    #[error("failed to {action} alert file {}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Standard output failed with something else than a closed pipe.
    #[error("failed to write alerts to standard output")]
    Stdout(#[source] io::Error),
    /// A network sink that cannot be set up (`sink` is its spec string).
    #[error("sink {sink}: {reason}")]
    Setup { sink: String, reason: String },
    /// TLS files of a network sink that cannot be loaded.
    #[error("sink {sink}: TLS files")]
    Tls {
        sink: String,
        #[source]
        source: TlsError,
    },
}

/// Opens the sink `spec` names: the one registry of sinks. Local sinks write
/// on the caller's thread; network sinks deliver from a task on `runtime`,
/// fed by a bounded queue of `options.queue_capacity_records`.
///
/// # Errors
/// Options with problems, an alert file that cannot be opened, TLS files
/// that cannot be loaded, or a webhook without a secret.
pub fn open_sink(
    spec: &SinkSpec,
    options: &SinkOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<Box<dyn AlertSink>> {
    let problems = options.problems();
    if !problems.is_empty() {
        return Err(SinkError::InvalidOptions { problems }.into());
    }
    let sink: Box<dyn AlertSink> = match spec {
        SinkSpec::Stdout => Box::new(stdout::StdoutSink::new()),
        SinkSpec::File { path } => Box::new(file::FileSink::open(path, options)?),
        SinkSpec::Syslog {
            transport,
            host,
            port,
        } => Box::new(syslog::SyslogSink::open(
            *transport, host, *port, options, runtime,
        )?),
        SinkSpec::Webhook { url } => Box::new(webhook::WebhookSink::open(url, options, runtime)?),
    };
    Ok(sink)
}

/// Counts of one sink, for the detector's metrics and its last report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Records handed to the sink.
    pub num_submitted: u64,
    /// Records the destination accepted.
    pub num_delivered: u64,
    /// Records dropped because the queue was full (or the sink closed).
    pub num_dropped: u64,
    /// Records waiting in the queue now (or being delivered).
    pub queue_depth: u64,
    /// Delivery attempts that failed (and were retried or dropped).
    pub num_failed_attempts: u64,
    /// Connections a TCP or TLS sink opened (reconnections included).
    pub num_connections: u64,
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

    /// Ends one scoring batch without waiting on a network: stdout and the
    /// alert file write out what they buffered; syslog and webhook sinks
    /// return at once and deliver on their own schedule (a webhook batch
    /// still fills up to its size or its wait). Call it after every batch,
    /// and [`Self::flush`] when scoring stops.
    ///
    /// # Errors
    /// As [`Self::submit`].
    fn end_batch(&mut self) -> Result<()> {
        self.flush(Duration::ZERO)
    }

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
