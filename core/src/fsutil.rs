//! Crash-safe file writes.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{CoreError, Result};

/// Writes `contents` to `path` atomically: a temporary file in the same
/// directory is written and fsynced, renamed over `path`, and the directory is
/// fsynced, so after a crash `path` holds either the old or the new contents,
/// never a torn write.
///
/// # Errors
/// [`CoreError::Io`] naming the file that could not be written.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomic_with(path, |temp_path| {
        File::create(temp_path)?.write_all(contents)
    })
}

/// Like [`write_atomic`], for contents too large to build in memory first:
/// `write` creates and fills the file at the temporary path it is given
/// (streaming it as it likes); the fsync, rename and directory fsync are done
/// here.
///
/// # Errors
/// [`CoreError::Io`] naming `path`, with `write`'s error or the sync's.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    let io_error = |source| CoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(directory).map_err(io_error)?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp_path = directory.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    let write_result = (|| {
        write(&temp_path)?;
        File::open(&temp_path)?.sync_all()?;
        fs::rename(&temp_path, path)?;
        // Persist the rename itself.
        File::open(directory)?.sync_all()
    })();
    if write_result.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    write_result.map_err(io_error)
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_contents_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/model.bin");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let entries: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }
}
