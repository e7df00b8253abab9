//! Where events come from: standard input, or a file that may be followed
//! as it grows, is truncated or is replaced (rotated).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{DetectorError, Result};

/// How standard input is named in reports.
pub const STDIN_NAME: &str = "<stdin>";

/// How a followed file changed under its path.
pub enum FileChange {
    None,
    /// Shorter than what was read: rewritten in place.
    Truncated,
    /// The path names another file (rotated).
    Replaced,
}

/// Where events come from.
pub enum EventInput {
    Stdin(io::Stdin),
    File(EventFile),
}

impl EventInput {
    /// Opens `path`, or standard input when there is none.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: Option<&Path>, follow: bool) -> Result<Self> {
        match path {
            None => Ok(EventInput::Stdin(io::stdin())),
            Some(path) => Ok(EventInput::File(EventFile::open(path, follow)?)),
        }
    }

    /// Returns the input's name in reports.
    pub fn name(&self) -> String {
        match self {
            EventInput::Stdin(_) => STDIN_NAME.to_string(),
            EventInput::File(file) => file.path.display().to_string(),
        }
    }
}

/// An events file, and what following it needs to notice truncation and rotation.
pub struct EventFile {
    pub path: PathBuf,
    file: File,
    /// Bytes read so far.
    position: u64,
    /// Whether the file is followed as it grows.
    pub follows: bool,
    /// Device and inode of the open file.
    #[cfg(unix)]
    identity: (u64, u64),
}

impl EventFile {
    /// Opens `path`; `follows` says whether it will be followed.
    ///
    /// # Errors
    /// When the file or its metadata cannot be read.
    pub fn open(path: &Path, follows: bool) -> Result<Self> {
        let file = File::open(path).map_err(|source| DetectorError::OpenEvents {
            path: path.to_path_buf(),
            source,
        })?;
        #[cfg(unix)]
        let identity = {
            use std::os::unix::fs::MetadataExt;
            let metadata = file
                .metadata()
                .map_err(|source| DetectorError::EventsMetadata {
                    path: path.to_path_buf(),
                    source,
                })?;
            (metadata.dev(), metadata.ino())
        };
        Ok(EventFile {
            path: path.to_path_buf(),
            file,
            position: 0,
            follows,
            #[cfg(unix)]
            identity,
        })
    }

    /// Returns how the file at the path changed since it was opened, as seen
    /// at the end of what was read.
    ///
    /// # Errors
    /// When the path's metadata cannot be read (other than its absence).
    pub fn change(&self) -> Result<FileChange> {
        let metadata = match std::fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            // Being rotated: the new file is not there yet.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(FileChange::None),
            Err(source) => {
                return Err(DetectorError::EventsMetadata {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if (metadata.dev(), metadata.ino()) != self.identity {
                return Ok(FileChange::Replaced);
            }
        }
        if metadata.len() < self.position {
            return Ok(FileChange::Truncated);
        }
        Ok(FileChange::None)
    }

    /// Reads the file from its start again.
    ///
    /// # Errors
    /// When the file cannot be sought.
    pub fn rewind(&mut self) -> Result<()> {
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|source| DetectorError::RewindEvents {
                path: self.path.clone(),
                source,
            })?;
        self.position = 0;
        Ok(())
    }
}

impl Read for EventFile {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let num_read = self.file.read(buffer)?;
        self.position += num_read as u64;
        Ok(num_read)
    }
}
