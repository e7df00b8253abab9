//! Physical line numbers of csv records.
//!
//! The csv crate's `Position::line()` counts the line feeds its parser has
//! consumed when a read starts. With CRLF line endings a record ends at the
//! `\r`, and its `\n` is consumed by the next read, so every record after the
//! first is reported one line too early
//! (<https://github.com/BurntSushi/rust-csv/issues/395>); a record after blank
//! lines is reported at the first blank one. Its byte offsets are right, so
//! [`LineCountingReader`] watches the bytes go by and turns the offset where a
//! read started into the line where the record's first byte is.

use std::collections::VecDeque;
use std::io::{self, Read};

/// A reader that passes bytes through and remembers where lines start.
///
/// A line is counted at each line feed (`\n`), so `\r\n` and `\n` files give
/// the same numbers; a lone `\r` (which the csv parser also takes as a record
/// terminator) starts no new line.
pub(super) struct LineCountingReader<R> {
    inner: R,
    /// Bytes read from `inner` so far.
    num_bytes_read: u64,
    /// Line feeds read from `inner` so far.
    num_line_feeds: u64,
    /// True when the last byte read was `\r` or `\n`, or nothing was read yet.
    after_line_break: bool,
    /// `(byte offset, 1-based line)` of every byte that follows a line break
    /// and is neither `\r` nor `\n` (the first byte a record can start at), in
    /// order, from the last looked-up offset on. The csv reader reads ahead by
    /// at most its buffer, so this holds at most a buffer's worth of lines.
    line_starts: VecDeque<(u64, u64)>,
}

impl<R> LineCountingReader<R> {
    pub(super) fn new(inner: R) -> Self {
        LineCountingReader {
            inner,
            num_bytes_read: 0,
            num_line_feeds: 0,
            after_line_break: true,
            line_starts: VecDeque::new(),
        }
    }

    /// Returns the line of the first record byte at or after byte `offset`
    /// (where the csv reader started reading a record), and forgets the lines
    /// before it: offsets must not decrease from one call to the next.
    ///
    /// Once a record has been read its first byte has been too; should none be
    /// known, this returns the line after the last line feed read.
    pub(super) fn line_at(&mut self, offset: u64) -> u64 {
        while self
            .line_starts
            .front()
            .is_some_and(|&(start, _)| start < offset)
        {
            self.line_starts.pop_front();
        }
        self.line_starts
            .front()
            .map_or(self.num_line_feeds + 1, |&(_, line)| line)
    }
}

impl<R: Read> Read for LineCountingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let num_read = self.inner.read(buffer)?;
        for (index, &byte) in buffer[..num_read].iter().enumerate() {
            match byte {
                b'\n' => {
                    self.num_line_feeds += 1;
                    self.after_line_break = true;
                }
                b'\r' => self.after_line_break = true,
                _ if self.after_line_break => {
                    let offset = self.num_bytes_read + index as u64;
                    self.line_starts
                        .push_back((offset, self.num_line_feeds + 1));
                    self.after_line_break = false;
                }
                _ => {}
            }
        }
        self.num_bytes_read += num_read as u64;
        Ok(num_read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads all of `text` through a counting reader in `chunk`-byte reads,
    /// then looks up each offset in turn.
    fn lines_at(text: &[u8], chunk: usize, offsets: &[u64]) -> Vec<u64> {
        let mut reader = LineCountingReader::new(text);
        let mut buffer = vec![0; chunk];
        while reader.read(&mut buffer).unwrap() > 0 {}
        offsets
            .iter()
            .map(|&offset| reader.line_at(offset))
            .collect()
    }

    #[test]
    fn offsets_on_pending_terminators_or_blank_lines_map_to_the_next_content_line() {
        // "a\r\n" then "b\r\n": the csv reader starts reading b at offset 2,
        // the "\n" its previous read left behind.
        let crlf = b"a\r\nb\r\n\r\n\r\nc\r\n";
        assert_eq!(lines_at(crlf, 3, &[0, 2, 5, 7]), [1, 2, 5, 5]);
        let lf = b"a\nb\n\n\nc\n";
        assert_eq!(lines_at(lf, 1, &[0, 2, 4]), [1, 2, 5]);
    }

    #[test]
    fn a_lone_carriage_return_starts_no_new_line() {
        assert_eq!(lines_at(b"a\rb\nc", 64, &[0, 2, 4]), [1, 1, 2]);
    }

    #[test]
    fn past_the_last_record_the_line_after_the_last_line_feed_is_returned() {
        assert_eq!(lines_at(b"a\nb\n\n", 64, &[4]), [4]);
    }
}
