//! Splitting input into lines with one fixed buffer, as a file that a
//! writer appends to needs: an incomplete last line waits for its newline.

use std::io::{self, Read};

/// Bytes read from the input at once; also the longest accepted line.
pub const READ_BUFFER_BYTES: usize = 1 << 20;

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A whole line, without its line feed.
    Complete { number: u64, bytes: &'a [u8] },
    /// A line longer than the read buffer; its bytes are dropped.
    TooLong { number: u64 },
}

/// Splits input into lines with one fixed buffer. An incomplete last line
/// stays in the buffer until its line feed arrives (or the input ends), which
/// is what following a file that a writer appends to needs.
pub struct LineReader {
    buffer: Vec<u8>,
    /// Unconsumed bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
    /// Number of the next line, from 1.
    next_line_number: u64,
    /// Set while dropping the rest of a line that did not fit the buffer.
    skipping_long_line: bool,
}

impl LineReader {
    /// Returns a reader whose longest line is `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        LineReader {
            buffer: vec![0; capacity.max(1)],
            start: 0,
            end: 0,
            next_line_number: 1,
            skipping_long_line: false,
        }
    }

    /// Reads once from `input` into the free part of the buffer and returns
    /// the number of bytes read: 0 means the input is at its end (for now, if
    /// it is a growing file). Call [`Self::next_line`] until it returns `None`
    /// before reading again.
    ///
    /// # Errors
    /// The input's error.
    pub fn read_from(&mut self, input: &mut impl Read) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buffer.len() && self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match input.read(&mut self.buffer[self.end..]) {
                Ok(num_read) => {
                    self.end += num_read;
                    return Ok(num_read);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Returns the next complete line, or `None` when the buffer holds no line feed.
    pub fn next_line(&mut self) -> Option<Line<'_>> {
        loop {
            let unconsumed = &self.buffer[self.start..self.end];
            let Some(newline) = unconsumed.iter().position(|&byte| byte == b'\n') else {
                if self.skipping_long_line {
                    self.start = self.end;
                    return None;
                }
                if self.start == 0 && self.end == self.buffer.len() {
                    // The line fills the whole buffer: drop it up to its line feed.
                    self.skipping_long_line = true;
                    self.start = self.end;
                    let number = self.take_line_number();
                    return Some(Line::TooLong { number });
                }
                return None;
            };
            let line_start = self.start;
            self.start += newline + 1;
            if self.skipping_long_line {
                self.skipping_long_line = false;
                continue;
            }
            let number = self.take_line_number();
            return Some(Line::Complete {
                number,
                bytes: &self.buffer[line_start..line_start + newline],
            });
        }
    }

    /// Returns the incomplete last line at the end of the input, if any.
    pub fn take_rest(&mut self) -> Option<Line<'_>> {
        if self.skipping_long_line || self.start == self.end {
            self.start = self.end;
            return None;
        }
        let line_start = self.start;
        self.start = self.end;
        let number = self.take_line_number();
        Some(Line::Complete {
            number,
            bytes: &self.buffer[line_start..self.end],
        })
    }

    /// Drops everything buffered and numbers lines from 1 again (the input starts over).
    pub fn restart(&mut self) {
        self.start = 0;
        self.end = 0;
        self.next_line_number = 1;
        self.skipping_long_line = false;
    }

    fn take_line_number(&mut self) -> u64 {
        let number = self.next_line_number;
        self.next_line_number += 1;
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(reader: &mut LineReader) -> Vec<(u64, Vec<u8>)> {
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line() {
            match line {
                Line::Complete { number, bytes } => lines.push((number, bytes.to_vec())),
                Line::TooLong { number } => lines.push((number, b"<too long>".to_vec())),
            }
        }
        lines
    }

    #[test]
    fn a_partial_last_line_waits_for_its_line_feed() {
        let mut reader = LineReader::new(64);
        reader.read_from(&mut &b"a,b\nc,"[..]).unwrap();
        assert_eq!(lines_of(&mut reader), vec![(1, b"a,b".to_vec())]);
        reader.read_from(&mut &b"d\n"[..]).unwrap();
        assert_eq!(lines_of(&mut reader), vec![(2, b"c,d".to_vec())]);
        assert_eq!(reader.take_rest(), None);
    }

    #[test]
    fn a_line_longer_than_the_buffer_is_dropped_and_numbered_once() {
        let mut reader = LineReader::new(8);
        let mut input: &[u8] = b"0123456789abcdef\nok\nlast";
        let mut seen = Vec::new();
        loop {
            let num_read = reader.read_from(&mut input).unwrap();
            seen.extend(lines_of(&mut reader));
            if num_read == 0 {
                break;
            }
        }
        if let Some(Line::Complete { number, bytes }) = reader.take_rest() {
            seen.push((number, bytes.to_vec()));
        }
        assert_eq!(
            seen,
            vec![
                (1, b"<too long>".to_vec()),
                (2, b"ok".to_vec()),
                (3, b"last".to_vec())
            ]
        );
    }
}
