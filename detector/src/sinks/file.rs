//! The file sink: JSON lines appended to a file, rotated by size.
//!
//! Before a line would take the file past `file_max_bytes`, the file
//! rotates: `PATH.{N-1}` → `PATH.N` (the oldest, `PATH.N` with
//! N = `file_num_kept`, is deleted), …, `PATH` → `PATH.1`, and a new `PATH`
//! starts. Lines are buffered and written whole before a rotation, so no
//! line is split or lost across files; a single line longer than
//! `file_max_bytes` gets a file of its own. [`AlertSink::flush`] writes the
//! buffer and fsyncs the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AlertSink, SinkError, SinkOptions, SinkStats};
use crate::alert::Alert;
use crate::error::Result;

/// Buffered bytes past which a submit writes them out before the flush.
const MAX_BUFFERED_BYTES: usize = 1 << 20;

/// Appends records to an alert file, rotating it by size.
pub struct FileSink {
    path: PathBuf,
    file: File,
    /// Bytes in the file, written or buffered.
    num_file_bytes: u64,
    max_bytes: u64,
    num_kept: usize,
    buffer: Vec<u8>,
    num_buffered: u64,
    stats: SinkStats,
}

impl FileSink {
    /// Opens (or creates) `path` for appending, with `options`' rotation
    /// limits.
    ///
    /// # Errors
    /// Names `path` when it cannot be opened or its size read.
    pub fn open(path: &Path, options: &SinkOptions) -> Result<Self> {
        let file = open_append(path)?;
        let num_file_bytes = file
            .metadata()
            .map_err(|source| file_error("read the size of", path, source))?
            .len();
        Ok(FileSink {
            path: path.to_path_buf(),
            file,
            num_file_bytes,
            max_bytes: options.file_max_bytes,
            num_kept: options.file_num_kept,
            buffer: Vec::new(),
            num_buffered: 0,
            stats: SinkStats::default(),
        })
    }

    /// Writes the buffered lines to the file (no fsync).
    fn write_out(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.buffer);
        let num_records = std::mem::take(&mut self.num_buffered);
        self.buffer.clear();
        match written {
            Ok(()) => {
                self.stats.num_delivered += num_records;
                Ok(())
            }
            Err(source) => {
                self.stats.num_dropped += num_records;
                Err(file_error("write", &self.path, source).into())
            }
        }
    }

    /// Writes out and syncs the current file, shifts the rotated ones and
    /// starts a new, empty file.
    fn rotate(&mut self) -> Result<()> {
        self.write_out()?;
        self.file
            .sync_all()
            .map_err(|source| file_error("sync", &self.path, source))?;
        if self.num_kept == 0 {
            fs::remove_file(&self.path)
                .map_err(|source| file_error("remove", &self.path, source))?;
        } else {
            for index in (1..self.num_kept).rev() {
                let from = rotated_path(&self.path, index);
                if from.exists() {
                    let to = rotated_path(&self.path, index + 1);
                    fs::rename(&from, &to).map_err(|source| file_error("rotate", &from, source))?;
                }
            }
            fs::rename(&self.path, rotated_path(&self.path, 1))
                .map_err(|source| file_error("rotate", &self.path, source))?;
        }
        self.file = open_append(&self.path)?;
        self.num_file_bytes = 0;
        Ok(())
    }
}

/// Returns `PATH.index`.
pub fn rotated_path(path: &Path, index: usize) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| file_error("open", path, source).into())
}

fn file_error(action: &'static str, path: &Path, source: io::Error) -> SinkError {
    SinkError::File {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl AlertSink for FileSink {
    fn name(&self) -> &str {
        "file"
    }

    fn submit(&mut self, _alert: &Alert, record: &[u8]) -> Result<()> {
        self.stats.num_submitted += 1;
        let num_line_bytes = record.len() as u64 + 1;
        if self.num_file_bytes > 0 && self.num_file_bytes + num_line_bytes > self.max_bytes {
            self.rotate()?;
        }
        self.buffer.extend_from_slice(record);
        self.buffer.push(b'\n');
        self.num_buffered += 1;
        self.num_file_bytes += num_line_bytes;
        if self.buffer.len() >= MAX_BUFFERED_BYTES {
            self.write_out()?;
        }
        Ok(())
    }

    fn flush(&mut self, _wait: Duration) -> Result<()> {
        self.write_out()?;
        self.file
            .sync_data()
            .map_err(|source| file_error("sync", &self.path, source).into())
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            queue_depth: self.num_buffered,
            ..self.stats
        }
    }
}
