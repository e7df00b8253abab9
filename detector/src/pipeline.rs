//! The read loops: input to the detector until its end, or following a
//! growing file; between reads, a newly published model version replaces
//! the one scoring (between batches, so every verdict names its version).

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use fedshield_core::error::error_chain;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::error::{DetectorError, Result};
use crate::events::{EventFile, FileChange, LineReader, READ_BUFFER_BYTES};
use crate::release::ModelRelease;
use crate::scoring::{Detector, ScoringModel};

/// How long a followed file that has been read to its end rests before the
/// next look for new data.
pub const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Switches `detector` to the version the model source published last, if it is new.
fn switch_if_published<E: Write>(
    models: &mut watch::Receiver<Arc<ModelRelease>>,
    detector: &mut Detector<E>,
) -> Result<()> {
    if !models.has_changed().unwrap_or(false) {
        return Ok(());
    }
    let release = models.borrow_and_update().clone();
    match ScoringModel::new(release) {
        Ok(model) => detector.switch_model(model),
        Err(error) => {
            warn!(error = %error_chain(&error), "new model version unusable; scoring continues with the current one");
            Ok(())
        }
    }
}

/// Returns the error of a failed read of the input named `input_name`.
fn read_error(input_name: &str, source: io::Error) -> DetectorError {
    DetectorError::ReadEvents {
        input_name: input_name.to_string(),
        source,
    }
}

/// Scores every event of `input` until its end; with `models`, switches to
/// newly published versions between reads.
///
/// # Errors
/// As [`Detector::push_line`], or the input's read error.
pub fn score_to_end<E: Write>(
    input: &mut impl Read,
    source_name: &str,
    detector: &mut Detector<E>,
    mut models: Option<&mut watch::Receiver<Arc<ModelRelease>>>,
) -> Result<()> {
    let mut lines = LineReader::new(READ_BUFFER_BYTES);
    loop {
        let num_read = lines
            .read_from(input)
            .map_err(|source| read_error(source_name, source))?;
        detector.push_lines(&mut lines)?;
        if num_read == 0 {
            if let Some(line) = lines.take_rest() {
                detector.push_line(line)?;
            }
            return detector.flush();
        }
        detector.flush()?;
        if detector.should_stop() {
            return Ok(());
        }
        if let Some(models) = models.as_deref_mut() {
            switch_if_published(models, detector)?;
        }
    }
}

/// Scores the events of a growing file for ever: at its end, rests
/// [`FOLLOW_POLL_INTERVAL`] and reads again; starts over when the file is
/// truncated or replaced (rotated).
///
/// Rotation as Zeek does it (the log renamed, a new one created at the path)
/// is seen by file identity (device and inode on unix): what remains of the
/// renamed file is read through the open handle first, then the new file
/// from its start, with the parser restarted so that its own header (a csv
/// header, a Zeek `#fields` line in any column order) applies.
///
/// # Errors
/// As [`Detector::push_line`], or the file's read error.
pub fn follow_file<E: Write>(
    mut file: EventFile,
    detector: &mut Detector<E>,
    mut models: Option<&mut watch::Receiver<Arc<ModelRelease>>>,
) -> Result<()> {
    let mut lines = LineReader::new(READ_BUFFER_BYTES);
    loop {
        let num_read = lines
            .read_from(&mut file)
            .map_err(|source| read_error(&file.path.display().to_string(), source))?;
        detector.push_lines(&mut lines)?;
        // Every read, and so every pause of the writer, flushes a partial batch.
        detector.flush()?;
        if detector.should_stop() {
            return Ok(());
        }
        if let Some(models) = models.as_deref_mut() {
            switch_if_published(models, detector)?;
        }
        if num_read > 0 {
            continue;
        }
        match file.change()? {
            FileChange::None => std::thread::sleep(FOLLOW_POLL_INTERVAL),
            FileChange::Truncated => {
                info!(events = %file.path.display(), "events file truncated; reading it from its start");
                file.rewind()?;
                lines.restart();
                detector.restart_input()?;
            }
            FileChange::Replaced => {
                // What the writer appended before the rotation still counts,
                // and so does a last line without its line feed.
                while lines
                    .read_from(&mut file)
                    .map_err(|source| read_error(&file.path.display().to_string(), source))?
                    > 0
                {
                    detector.push_lines(&mut lines)?;
                }
                if let Some(line) = lines.take_rest() {
                    detector.push_line(line)?;
                }
                info!(events = %file.path.display(), "events file replaced; reading the new one from its start");
                file = EventFile::open(&file.path, true)?;
                lines.restart();
                detector.restart_input()?;
            }
        }
    }
}
