//! Reading a text input line by line, numbered from 1, with lines longer than
//! a limit passed over without being held in memory (the JSON-lines and Zeek
//! readers, and the eve alerts of `alert_labels`).

use std::io::{BufRead, BufReader, Read};

use super::collector::Collector;
use super::{IngestError, SkipReason};

/// The UTF-8 byte order mark, removed from the start of the first line.
const BYTE_ORDER_MARK: &[u8] = "\u{feff}".as_bytes();

/// Size of the read buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// What [`BoundedLines::read_line`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LineRead {
    /// A line of at most the limit, with its 1-based number.
    Line(u64),
    /// A line longer than the limit, passed over, with its 1-based number.
    Overlong(u64),
    /// The end of the input.
    End,
}

/// Lines of one input, with the current line number and byte count.
pub(super) struct BoundedLines<R> {
    buffered: BufReader<R>,
    max_line_bytes: usize,
    source_name: String,
    /// 1-based number of the line read last (0 before the first).
    line_number: u64,
    num_bytes_read: u64,
}

impl<R: Read> BoundedLines<R> {
    /// Returns the lines of `reader`, named `source_name` in read errors.
    pub(super) fn new(reader: R, max_line_bytes: usize, source_name: &str) -> Self {
        BoundedLines {
            buffered: BufReader::with_capacity(READ_BUFFER_BYTES, reader),
            max_line_bytes,
            source_name: source_name.to_string(),
            line_number: 0,
            num_bytes_read: 0,
        }
    }

    /// Reads the next line into `line_bytes` (cleared first, the line end
    /// kept, a byte order mark at the start of the input removed) and returns its 1-based number, or `None` at the end of the input
    /// or when `collector` says to stop. A line longer than the limit is
    /// skipped as malformed in `collector`.
    ///
    /// # Errors
    /// [`IngestError::Read`] naming the input and line when reading fails.
    pub(super) fn next_line(
        &mut self,
        line_bytes: &mut Vec<u8>,
        collector: &mut Collector<'_>,
    ) -> Result<Option<u64>, IngestError> {
        loop {
            if collector.should_stop(self.num_bytes_read) {
                return Ok(None);
            }
            match self.read_line(line_bytes)? {
                LineRead::Line(line_number) => return Ok(Some(line_number)),
                LineRead::End => return Ok(None),
                LineRead::Overlong(line_number) => collector.skip(
                    line_number,
                    SkipReason::Malformed,
                    format!("line is longer than {} bytes", self.max_line_bytes),
                ),
            }
        }
    }

    /// Returns the longest accepted line, in bytes.
    pub(super) fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// Reads the next line into `line_bytes` as [`BoundedLines::next_line`]
    /// does, without a collector: an overlong line is passed over and
    /// reported as [`LineRead::Overlong`].
    ///
    /// # Errors
    /// [`IngestError::Read`] naming the input and line when reading fails.
    pub(super) fn read_line(&mut self, line_bytes: &mut Vec<u8>) -> Result<LineRead, IngestError> {
        line_bytes.clear();
        let line_limit = self.max_line_bytes as u64 + 1;
        let num_read = (&mut self.buffered)
            .take(line_limit)
            .read_until(b'\n', line_bytes)
            .map_err(|source| self.read_error(source, self.line_number + 1))?;
        if num_read == 0 {
            return Ok(LineRead::End);
        }
        self.line_number += 1;
        self.num_bytes_read += num_read as u64;
        if num_read <= self.max_line_bytes || line_bytes.last() == Some(&b'\n') {
            if self.line_number == 1 && line_bytes.starts_with(BYTE_ORDER_MARK) {
                line_bytes.drain(..BYTE_ORDER_MARK.len());
            }
            return Ok(LineRead::Line(self.line_number));
        }
        let num_skipped = self
            .buffered
            .skip_until(b'\n')
            .map_err(|source| self.read_error(source, self.line_number))?;
        self.num_bytes_read += num_skipped as u64;
        Ok(LineRead::Overlong(self.line_number))
    }

    fn read_error(&self, source: std::io::Error, line: u64) -> IngestError {
        IngestError::Read {
            source_name: self.source_name.clone(),
            line,
            source,
        }
    }
}
