//! The stdout sink: one JSON line per alert on standard output.
//!
//! Records are buffered and written out by [`AlertSink::flush`], which the
//! detector calls after every batch, so that a batch costs one write. A
//! closed pipe (`fedshield detect … | head`) is no error: the sink closes,
//! [`AlertSink::is_closed`] turns true, and later records count as dropped.

use std::io::{self, Write};
use std::time::Duration;

use super::{AlertSink, SinkError, SinkStats};
use crate::alert::Alert;
use crate::error::Result;

/// Buffered records past which a submit writes them out without waiting
/// for the flush.
const MAX_BUFFERED_BYTES: usize = 1 << 20;

/// Writes records to standard output.
pub struct StdoutSink<W: Write + Send = io::Stdout> {
    out: W,
    buffer: Vec<u8>,
    /// Records in `buffer`, not yet written.
    num_buffered: u64,
    stats: SinkStats,
    closed: bool,
}

impl StdoutSink<io::Stdout> {
    /// Returns a sink writing to this process's standard output.
    pub fn new() -> Self {
        StdoutSink::with_writer(io::stdout())
    }
}

impl Default for StdoutSink<io::Stdout> {
    fn default() -> Self {
        StdoutSink::new()
    }
}

impl<W: Write + Send> StdoutSink<W> {
    /// Returns a sink writing to `out` (tests pass a pipe or a buffer).
    pub fn with_writer(out: W) -> Self {
        StdoutSink {
            out,
            buffer: Vec::new(),
            num_buffered: 0,
            stats: SinkStats::default(),
            closed: false,
        }
    }

    /// Writes the buffered records out; a closed pipe closes the sink.
    fn write_out(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let written = self
            .out
            .write_all(&self.buffer)
            .and_then(|()| self.out.flush());
        let num_records = std::mem::take(&mut self.num_buffered);
        self.buffer.clear();
        match written {
            Ok(()) => {
                self.stats.num_delivered += num_records;
                Ok(())
            }
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                self.stats.num_dropped += num_records;
                Ok(())
            }
            Err(error) => {
                self.stats.num_dropped += num_records;
                Err(SinkError::Stdout(error).into())
            }
        }
    }
}

impl<W: Write + Send> AlertSink for StdoutSink<W> {
    fn name(&self) -> &str {
        "stdout"
    }

    fn submit(&mut self, _alert: &Alert, record: &[u8]) -> Result<()> {
        self.stats.num_submitted += 1;
        if self.closed {
            self.stats.num_dropped += 1;
            return Ok(());
        }
        self.buffer.extend_from_slice(record);
        self.buffer.push(b'\n');
        self.num_buffered += 1;
        if self.buffer.len() >= MAX_BUFFERED_BYTES {
            self.write_out()?;
        }
        Ok(())
    }

    fn flush(&mut self, _wait: Duration) -> Result<()> {
        self.write_out()
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            queue_depth: self.num_buffered,
            ..self.stats
        }
    }

    fn is_closed(&self) -> bool {
        self.closed
    }
}
