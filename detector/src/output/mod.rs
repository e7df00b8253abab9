//! Where verdicts go: the [`Detector`](crate::Detector) hands each scored
//! batch to a [`VerdictSink`]. A new format or destination is one file here
//! implementing the trait, one variant of [`OutputSettings`] and one arm of
//! [`open_sink`].
//!
//! - [`json_lines`]: one JSON object per event and line on a byte sink (standard output).

pub mod json_lines;

use std::io;

pub use json_lines::JsonLinesOutput;

use crate::error::Result;
use crate::release::ModelRelease;
use crate::settings::OutputSettings;

/// Receives the verdicts of each scored batch. The detector calls it once
/// per batch (up to `batch_events` events), never per event, so the
/// `Box<dyn VerdictSink>` that [`open_sink`] returns costs one dynamic call
/// per batch; a detector built on a concrete sink calls it statically.
pub trait VerdictSink {
    /// Writes the verdicts of one scored batch and flushes: the events' line
    /// numbers, their scores and, for a multi-class release, their most
    /// likely attack classes (empty otherwise), all scored by `release`. An
    /// event is an attack when its score is at or above `release.threshold`.
    /// A reader that went away (a closed pipe) is not an error: it closes the sink.
    ///
    /// # Errors
    /// An output error other than the reader going away.
    fn write_batch(
        &mut self,
        release: &ModelRelease,
        lines: &[u64],
        scores: &[f32],
        attack_classes: &[u32],
    ) -> Result<()>;

    /// Returns true once the sink's reader went away: scoring stops. Only
    /// [`Self::write_batch`] closes a sink; the detector asks after each batch.
    fn is_closed(&self) -> bool;
}

/// Returns the sink `settings` names, sized for batches of `batch_events`
/// events. Call it on the thread that scores: a sink may hold a lock on
/// standard output.
pub fn open_sink(settings: &OutputSettings, batch_events: usize) -> Box<dyn VerdictSink> {
    match settings {
        OutputSettings::JsonLinesStdout => {
            Box::new(JsonLinesOutput::new(io::stdout().lock(), batch_events))
        }
    }
}
