//! Verdicts as JSON lines: one JSON object per scored event, written a
//! batch at a time to a byte sink (standard output), flushed after every batch.

use std::io::{self, Write};

use serde::Serialize;

use super::VerdictSink;
use crate::error::{DetectorError, Result};
use crate::release::ModelRelease;

/// One output line.
#[derive(Serialize)]
struct Verdict<'a> {
    line: u64,
    score: f32,
    verdict: &'static str,
    model_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
}

/// Writes verdicts as JSON lines to `output`.
pub struct JsonLinesOutput<W: Write> {
    output: W,
    /// The verdict lines of one batch.
    encoded: Vec<u8>,
    /// Set when the reader of `output` went away (a closed pipe).
    closed: bool,
}

impl<W: Write> JsonLinesOutput<W> {
    /// Returns an output sized for batches of `batch_events` events.
    pub fn new(output: W, batch_events: usize) -> Self {
        JsonLinesOutput {
            output,
            encoded: Vec::with_capacity(batch_events * 96),
            closed: false,
        }
    }
}

impl<W: Write> VerdictSink for JsonLinesOutput<W> {
    /// Writes one JSON line per event and flushes; a closed pipe marks the
    /// output closed.
    fn write_batch(
        &mut self,
        release: &ModelRelease,
        lines: &[u64],
        scores: &[f32],
        attack_classes: &[u32],
    ) -> Result<()> {
        self.encoded.clear();
        for (index, (&line, &score)) in lines.iter().zip(scores).enumerate() {
            let category = release.class_names.as_ref().and_then(|names| {
                let class = *attack_classes.get(index)? as usize;
                names.get(class).map(String::as_str)
            });
            let verdict = Verdict {
                line,
                score,
                verdict: if f64::from(score) >= release.threshold {
                    "attack"
                } else {
                    "benign"
                },
                model_version: release.version.0,
                category,
            };
            serde_json::to_writer(&mut self.encoded, &verdict)
                .expect("a verdict serializes to json in memory");
            self.encoded.push(b'\n');
        }
        let written = self
            .output
            .write_all(&self.encoded)
            .and_then(|()| self.output.flush());
        match written {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(error) => Err(DetectorError::WriteVerdicts(error)),
        }
    }

    fn is_closed(&self) -> bool {
        self.closed
    }
}
