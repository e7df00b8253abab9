//! A sink over any byte writer: one record per line, written through a
//! buffer and flushed after every batch. Standard output is one; tests and
//! benchmarks use others.

use std::io::{self, Write};
use std::time::Duration;

use crate::alert::Alert;
use crate::error::{DetectorError, Result};
use crate::sinks::{AlertSink, SinkStats};

/// Writes records as lines to `output`; a closed pipe closes the sink.
pub struct WriterSink<W: Write + Send> {
    name: String,
    output: W,
    /// The lines of the batch being written.
    buffer: Vec<u8>,
    stats: SinkStats,
    closed: bool,
}

impl<W: Write + Send> WriterSink<W> {
    /// Returns a sink named `name` writing to `output`.
    pub fn new(name: impl Into<String>, output: W) -> Self {
        WriterSink {
            name: name.into(),
            output,
            buffer: Vec::with_capacity(64 * 1024),
            stats: SinkStats::default(),
            closed: false,
        }
    }
}

impl<W: Write + Send> AlertSink for WriterSink<W> {
    fn name(&self) -> &str {
        &self.name
    }

    fn submit(&mut self, _alert: &Alert, record: &[u8]) -> Result<()> {
        self.stats.num_submitted += 1;
        if self.closed {
            self.stats.num_dropped += 1;
            return Ok(());
        }
        self.buffer.extend_from_slice(record);
        self.buffer.push(b'\n');
        self.stats.queue_depth += 1;
        Ok(())
    }

    /// Writes the buffered lines and flushes the writer: a writer is local,
    /// so it never waits for anything but the write.
    fn flush(&mut self, _wait: Duration) -> Result<()> {
        if self.buffer.is_empty() || self.closed {
            return Ok(());
        }
        let written = self
            .output
            .write_all(&self.buffer)
            .and_then(|()| self.output.flush());
        let num_lines = self.stats.queue_depth;
        self.stats.queue_depth = 0;
        self.buffer.clear();
        match written {
            Ok(()) => {
                self.stats.num_delivered += num_lines;
                Ok(())
            }
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                self.stats.num_dropped += num_lines;
                Ok(())
            }
            Err(error) => Err(DetectorError::WriteVerdicts(error)),
        }
    }

    fn stats(&self) -> SinkStats {
        self.stats
    }

    fn is_closed(&self) -> bool {
        self.closed
    }
}
