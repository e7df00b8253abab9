//! Scoring: a release's network (core's inference, built once per version),
//! and the [`Detector`] that featurizes lines into batches, scores each batch
//! in one forward pass and hands the verdicts to a [`VerdictSink`].

use std::io::Write;
use std::sync::Arc;

use fedshield_core::ModelVersion;
use fedshield_core::model::inference::Scorer;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::error::Result;
use crate::events::{EventParser, Line, LineError, LineReader, ParsedLine, READ_BUFFER_BYTES};
use crate::output::VerdictSink;
use crate::release::ModelRelease;

/// A release and its network (ndarray backend, no autodiff), built once
/// per version on the scoring thread.
pub struct ScoringModel {
    release: Arc<ModelRelease>,
    scorer: Scorer,
}

impl ScoringModel {
    /// Builds the network of `release`.
    ///
    /// # Errors
    /// If the parameters do not fit the spec (a [`ModelWeights`](fedshield_core::ModelWeights) always fits).
    pub fn new(release: Arc<ModelRelease>) -> Result<Self> {
        let scorer = Scorer::new(&release.weights)?;
        Ok(ScoringModel { release, scorer })
    }

    /// Returns the release this model scores with.
    pub fn release(&self) -> &ModelRelease {
        &self.release
    }

    /// Scores `features` (row-major rows of the model's input width): writes
    /// one score per row to `scores` and, for a multi-class classifier, each
    /// row's most likely attack class (1..) to `attack_classes`; both are
    /// cleared first.
    ///
    /// [`Scorer::score_into`] computes them, as
    /// [`fedshield_core::model::inference::score_rows`] does, so scores are
    /// bit-identical to what `fedshield evaluate` computes.
    ///
    /// # Errors
    /// If `features` is not a whole number of rows.
    pub fn score(
        &self,
        features: &[f32],
        scores: &mut Vec<f32>,
        attack_classes: &mut Vec<u32>,
    ) -> Result<()> {
        attack_classes.clear();
        let wants_classes = self.release.class_names.is_some();
        self.scorer
            .score_into(features, scores, wants_classes.then_some(attack_classes))?;
        Ok(())
    }
}

/// Counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectStats {
    pub num_scored: u64,
    pub num_malformed: u64,
}

/// Featurizes lines into batches, scores each batch, hands its verdicts to
/// `output` (one call per batch) and reports malformed lines to `diagnostics`.
pub struct Detector<S: VerdictSink + ?Sized, E: Write> {
    parser: EventParser,
    model: ScoringModel,
    batch_events: usize,
    /// Features of the line being parsed.
    row: Vec<f32>,
    /// Features of the events waiting to be scored, row-major.
    pending_features: Vec<f32>,
    /// Line number of each waiting event.
    pending_lines: Vec<u64>,
    scores: Vec<f32>,
    attack_classes: Vec<u32>,
    /// Where verdicts go; once its reader went away (a closed pipe), scoring stops.
    output: Box<S>,
    /// `output.is_closed()` after the last batch written: a sink closes only
    /// in `write_batch`, so the per-line check reads this field instead of
    /// calling the sink (a dynamic call for `dyn VerdictSink`).
    output_closed: bool,
    diagnostics: E,
    /// Cancelled from outside (a SIGTERM): scoring stops after the current read.
    stop: CancellationToken,
    stats: DetectStats,
}

impl<S: VerdictSink + ?Sized, E: Write> Detector<S, E> {
    /// Returns a detector that scores `batch_events` events per forward pass
    /// and writes their verdicts to `output`: the sink [`open_sink`](crate::open_sink)
    /// chose (`S` = `dyn VerdictSink`), or a concrete one.
    pub fn new(
        parser: EventParser,
        model: ScoringModel,
        batch_events: usize,
        output: Box<S>,
        diagnostics: E,
    ) -> Self {
        let batch_events = batch_events.max(1);
        let input_dim = model.release().weights.spec.input_dim as usize;
        Detector {
            parser,
            model,
            batch_events,
            row: Vec::with_capacity(input_dim),
            pending_features: Vec::with_capacity(batch_events * input_dim),
            pending_lines: Vec::with_capacity(batch_events),
            scores: Vec::with_capacity(batch_events),
            attack_classes: Vec::with_capacity(batch_events),
            output_closed: output.is_closed(),
            output,
            diagnostics,
            stop: CancellationToken::new(),
            stats: DetectStats::default(),
        }
    }

    /// Makes scoring stop, after the read under way and with its events
    /// scored and written, once `stop` is cancelled.
    pub fn stop_when(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Returns whether scoring should stop: the output was closed, or a
    /// stop was asked for.
    pub fn should_stop(&self) -> bool {
        self.output_closed || self.stop.is_cancelled()
    }

    /// Returns the counts so far.
    pub fn stats(&self) -> DetectStats {
        self.stats
    }

    /// Returns true once the output has been closed by its reader.
    pub fn is_output_closed(&self) -> bool {
        self.output_closed
    }

    /// Returns the version scoring the next batch.
    pub fn model_version(&self) -> ModelVersion {
        self.model.release().version
    }

    /// Featurizes one line and scores the batch when it is full.
    ///
    /// # Errors
    /// A fatal line (see [`LineError::Fatal`]) or an output error.
    pub fn push_line(&mut self, line: Line<'_>) -> Result<()> {
        if self.output_closed {
            return Ok(());
        }
        let (number, parsed) = match line {
            Line::Complete { number, bytes } => {
                (number, self.parser.parse(number, bytes, &mut self.row))
            }
            Line::TooLong { number } => (
                number,
                Err(LineError::Malformed {
                    column: 1,
                    reason: format!("line is longer than {READ_BUFFER_BYTES} bytes"),
                }),
            ),
        };
        match parsed {
            Ok(ParsedLine::Event) => {
                self.pending_features.extend_from_slice(&self.row);
                self.pending_lines.push(number);
                if self.pending_lines.len() >= self.batch_events {
                    self.flush()?;
                }
            }
            Ok(ParsedLine::Skipped) => {}
            Err(LineError::Malformed { column, reason }) => {
                self.stats.num_malformed += 1;
                // A failing stderr must not stop detection.
                let _ = writeln!(
                    self.diagnostics,
                    "{}:{number}:{column}: malformed event skipped: {reason}",
                    self.parser.source_name()
                );
            }
            Err(LineError::Fatal(error)) => return Err(error),
        }
        Ok(())
    }

    /// Featurizes every complete line `lines` holds.
    ///
    /// # Errors
    /// As [`Self::push_line`].
    pub fn push_lines(&mut self, lines: &mut LineReader) -> Result<()> {
        while let Some(line) = lines.next_line() {
            self.push_line(line)?;
        }
        Ok(())
    }

    /// Scores the waiting events, writes their verdicts and flushes the output.
    ///
    /// # Errors
    /// An output error other than a closed pipe.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending_lines.is_empty() || self.output_closed {
            return Ok(());
        }
        self.model.score(
            &self.pending_features,
            &mut self.scores,
            &mut self.attack_classes,
        )?;
        self.output.write_batch(
            self.model.release(),
            &self.pending_lines,
            &self.scores,
            &self.attack_classes,
        )?;
        self.output_closed = self.output.is_closed();
        self.stats.num_scored += self.pending_lines.len() as u64;
        self.pending_lines.clear();
        self.pending_features.clear();
        Ok(())
    }

    /// Scores the waiting events with the current model, then switches to `model`.
    ///
    /// # Errors
    /// As [`Self::flush`].
    pub fn switch_model(&mut self, model: ScoringModel) -> Result<()> {
        self.flush()?;
        info!(
            from = %self.model.release().version,
            to = %model.release().version,
            "switched to model version"
        );
        self.model = model;
        Ok(())
    }

    /// Starts the input over: scores what is waiting and forgets the csv header.
    ///
    /// # Errors
    /// As [`Self::flush`].
    pub fn restart_input(&mut self) -> Result<()> {
        self.flush()?;
        self.parser.restart();
        Ok(())
    }
}
