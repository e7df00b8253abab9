//! Scoring: a release's network (core's inference, built once per version),
//! and the [`Detector`] that featurizes lines into batches, scores each batch
//! in one forward pass and turns the verdicts into [`Alert`]s for the
//! [`AlertOutput`]: every event, or only those over the threshold, each with
//! its echoed identity fields and, for attacks, its explanation.

use std::io::Write;
use std::sync::Arc;

use fedshield_core::ModelVersion;
use fedshield_core::model::explain::Explainer;
use fedshield_core::model::inference::Scorer;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::alert::{Alert, Contribution, EchoedField, ModelKindName};
use crate::error::Result;
use crate::events::{EventParser, Line, LineError, LineReader, ParsedLine, READ_BUFFER_BYTES};
use crate::output::AlertOutput;
use crate::release::ModelRelease;

/// A release and its network (ndarray backend, no autodiff), built once
/// per version on the scoring thread.
pub struct ScoringModel {
    release: Arc<ModelRelease>,
    scorer: Scorer,
    /// Built on the first alert to explain.
    explainer: std::cell::OnceCell<Explainer>,
}

impl ScoringModel {
    /// Builds the network of `release`.
    ///
    /// # Errors
    /// If the parameters do not fit the spec (a [`ModelWeights`](fedshield_core::ModelWeights) always fits).
    pub fn new(release: Arc<ModelRelease>) -> Result<Self> {
        let scorer = Scorer::new(&release.weights)?;
        Ok(ScoringModel {
            release,
            scorer,
            explainer: std::cell::OnceCell::new(),
        })
    }

    /// Writes each feature's contribution to `row`'s score into
    /// `contributions` (see [`Explainer::contributions`]).
    ///
    /// # Errors
    /// If `row` is not one row of the model's input width.
    pub fn explain(&self, row: &[f32], contributions: &mut Vec<f32>) -> Result<()> {
        let explainer = match self.explainer.get() {
            Some(explainer) => explainer,
            None => {
                let built = Explainer::new(&self.release.weights)?;
                self.explainer.get_or_init(|| built)
            }
        };
        explainer.contributions(row, contributions)?;
        Ok(())
    }

    /// Returns the kind of model, as alerts name it.
    pub fn kind_name(&self) -> ModelKindName {
        let spec = &self.release.weights.spec;
        if spec.is_autoencoder() {
            ModelKindName::Autoencoder
        } else if self.release.class_names.is_some() {
            ModelKindName::MulticlassClassifier
        } else {
            ModelKindName::BinaryClassifier
        }
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

/// What alerts echo and explain, fixed for a run: the echoed fields' names
/// and roles, and each feature column's name and feature range.
struct AlertShape {
    echo_names: Vec<String>,
    echo_roles: Vec<Option<fedshield_core::schema::IdentityRole>>,
    feature_columns: Vec<(String, std::ops::Range<usize>)>,
}

impl AlertShape {
    fn new(parser: &EventParser, include_fields: &[String]) -> Self {
        let schema = parser.schema();
        let mut echo_names = Vec::new();
        let mut echo_roles = Vec::new();
        for column in schema.echoed_columns() {
            echo_names.push(column.name);
            echo_roles.push(column.role);
        }
        for name in include_fields {
            if !echo_names.contains(name) {
                echo_names.push(name.clone());
                echo_roles.push(None);
            }
        }
        let feature_columns = schema
            .feature_columns()
            .into_iter()
            .map(|(name, range)| (name.to_string(), range))
            .collect();
        AlertShape {
            echo_names,
            echo_roles,
            feature_columns,
        }
    }
}

/// Featurizes lines into batches, scores each batch, turns its verdicts into
/// alerts for `output` and reports malformed lines to `diagnostics`.
pub struct Detector<E: Write> {
    parser: EventParser,
    model: ScoringModel,
    batch_events: usize,
    /// Features of the line being parsed.
    row: Vec<f32>,
    /// Features of the events waiting to be scored, row-major.
    pending_features: Vec<f32>,
    /// Line number of each waiting event.
    pending_lines: Vec<u64>,
    /// The raw bytes of the waiting events, back to back, and where each
    /// ends: the fields an alert echoes are read from them once the event
    /// is known to be an alert.
    pending_text: Vec<u8>,
    pending_ends: Vec<usize>,
    scores: Vec<f32>,
    attack_classes: Vec<u32>,
    shape: AlertShape,
    /// Reused buffers of one explanation.
    contributions: Vec<f32>,
    echo_values: Vec<Option<String>>,
    /// Where verdicts go; once a sink's reader went away (a closed pipe),
    /// scoring stops.
    output: AlertOutput,
    /// `output.is_closed()` after the last batch written, read per line.
    output_closed: bool,
    diagnostics: E,
    /// Cancelled from outside (a SIGTERM): scoring stops after the current read.
    stop: CancellationToken,
    stats: DetectStats,
    metrics: Option<Arc<crate::metrics::DetectorMetrics>>,
    /// The output's suppressed count the metrics have seen.
    num_suppressed_reported: u64,
}

impl<E: Write> Detector<E> {
    /// Returns a detector that scores `batch_events` events per forward pass
    /// and hands their verdicts to `output`.
    pub fn new(
        parser: EventParser,
        model: ScoringModel,
        batch_events: usize,
        output: AlertOutput,
        diagnostics: E,
    ) -> Self {
        let batch_events = batch_events.max(1);
        let input_dim = model.release().weights.spec.input_dim as usize;
        let shape = AlertShape::new(&parser, &output.options().include_fields);
        Detector {
            parser,
            model,
            batch_events,
            row: Vec::with_capacity(input_dim),
            pending_features: Vec::with_capacity(batch_events * input_dim),
            pending_lines: Vec::with_capacity(batch_events),
            pending_text: Vec::with_capacity(batch_events * 256),
            pending_ends: Vec::with_capacity(batch_events),
            scores: Vec::with_capacity(batch_events),
            attack_classes: Vec::with_capacity(batch_events),
            shape,
            contributions: Vec::with_capacity(input_dim),
            echo_values: Vec::new(),
            output_closed: output.is_closed(),
            output,
            diagnostics,
            stop: CancellationToken::new(),
            stats: DetectStats::default(),
            metrics: None,
            num_suppressed_reported: 0,
        }
    }

    /// Makes scoring stop, after the read under way and with its events
    /// scored and written, once `stop` is cancelled.
    pub fn stop_when(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Makes the detector count what it does in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::DetectorMetrics>) -> Self {
        metrics.set_model_version(self.model.release().version);
        self.metrics = Some(metrics);
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

    /// Returns the alert output (its counts and its sinks' counts).
    pub fn output(&self) -> &AlertOutput {
        &self.output
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
        let (number, parsed, bytes) = match line {
            Line::Complete { number, bytes } => {
                // A Zeek directive may change the header the waiting events'
                // echoed fields are read by: score them first.
                if bytes.first() == Some(&b'#')
                    && self.parser.format() == fedshield_core::schema::FileFormat::Zeek
                    && !self.pending_lines.is_empty()
                {
                    self.flush()?;
                }
                (
                    number,
                    self.parser.parse(number, bytes, &mut self.row),
                    bytes,
                )
            }
            Line::TooLong { number } => (
                number,
                Err(LineError::Malformed {
                    column: 1,
                    reason: format!("line is longer than {READ_BUFFER_BYTES} bytes"),
                }),
                &[][..],
            ),
        };
        match parsed {
            Ok(ParsedLine::Event) => {
                self.pending_features.extend_from_slice(&self.row);
                self.pending_lines.push(number);
                self.pending_text.extend_from_slice(bytes);
                self.pending_ends.push(self.pending_text.len());
                if self.pending_lines.len() >= self.batch_events {
                    self.flush()?;
                }
            }
            Ok(ParsedLine::Skipped) => {}
            Err(LineError::Malformed { column, reason }) => {
                self.stats.num_malformed += 1;
                if let Some(metrics) = &self.metrics {
                    metrics.events_malformed(1);
                }
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

    /// Scores the waiting events, emits their verdicts, releases suppression
    /// roll-ups whose window passed and flushes the sinks.
    ///
    /// # Errors
    /// An output error other than a closed pipe.
    pub fn flush(&mut self) -> Result<()> {
        if self.output_closed {
            return Ok(());
        }
        if !self.pending_lines.is_empty() {
            self.score_pending()?;
        }
        self.output.expire()?;
        self.output.flush_batch()?;
        self.output_closed = self.output.is_closed();
        self.record_output_metrics();
        Ok(())
    }

    /// Brings the metrics up to date with the output's and the sinks' counts.
    fn record_output_metrics(&mut self) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let num_suppressed = self.output.stats().num_suppressed;
        metrics.alerts_suppressed(num_suppressed - self.num_suppressed_reported);
        self.num_suppressed_reported = num_suppressed;
        for (name, stats) in self.output.sink_stats() {
            metrics.record_sink_stats(&name, stats);
        }
    }

    /// Scores the waiting events and hands their verdicts to the output.
    fn score_pending(&mut self) -> Result<()> {
        self.model.score(
            &self.pending_features,
            &mut self.scores,
            &mut self.attack_classes,
        )?;
        let release = self.model.release.clone();
        let threshold = release.threshold;
        let alerts_only = self.output.options().alerts_only;
        let input_dim = release.weights.spec.input_dim as usize;
        let detected_unix_ms = unix_ms_now();
        let mut start = 0;
        for index in 0..self.pending_lines.len() {
            let end = self.pending_ends[index];
            let line_range = start..end;
            start = end;
            let score = self.scores[index];
            let is_attack = f64::from(score) >= threshold;
            if alerts_only && !is_attack {
                continue;
            }
            let category = release.class_names.as_ref().and_then(|names| {
                let class = *self.attack_classes.get(index)? as usize;
                names.get(class).cloned()
            });
            if is_attack && let Some(metrics) = &self.metrics {
                metrics.alerts_raised(
                    category.as_deref().unwrap_or(crate::metrics::ATTACK_CLASS),
                    1,
                );
            }
            let line_bytes = &self.pending_text[line_range];
            self.parser
                .extract_fields(line_bytes, &self.shape.echo_names, &mut self.echo_values);
            let fields = self
                .shape
                .echo_names
                .iter()
                .zip(&self.shape.echo_roles)
                .zip(self.echo_values.drain(..))
                .map(|((column, role), value)| EchoedField {
                    column: column.clone(),
                    role: *role,
                    value,
                })
                .collect();
            let explanation = if is_attack && self.output.options().explain_top_k > 0 {
                let row = &self.pending_features[index * input_dim..(index + 1) * input_dim];
                explain(
                    &self.model,
                    &self.parser,
                    &self.shape,
                    self.output.options().explain_top_k,
                    &mut self.contributions,
                    row,
                    line_bytes,
                )?
            } else {
                Vec::new()
            };
            let alert = Alert {
                source: self.parser.source_name().to_string(),
                line: self.pending_lines[index],
                score: f64::from(score),
                threshold,
                alert_fpr: release.alert_fpr,
                is_attack,
                category,
                model_version: release.version.0,
                model_sha256: release.sha256.clone(),
                model_kind: self.model.kind_name(),
                fields,
                explanation,
                count: 1,
                detected_unix_ms,
            };
            self.output.emit(alert)?;
        }
        if let Some(metrics) = &self.metrics {
            metrics.events_scored(self.pending_lines.len() as u64);
        }
        self.stats.num_scored += self.pending_lines.len() as u64;
        self.pending_lines.clear();
        self.pending_features.clear();
        self.pending_text.clear();
        self.pending_ends.clear();
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
        if let Some(metrics) = &self.metrics {
            metrics.set_model_version(model.release().version);
        }
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

    /// Scores what is waiting, emits every pending suppression roll-up and
    /// delivers what the sinks queue, waiting at most `wait`: the last step
    /// before exiting.
    ///
    /// # Errors
    /// As [`Self::flush`].
    pub fn finish(&mut self, wait: std::time::Duration) -> Result<()> {
        self.flush()?;
        self.output.finish(wait)?;
        self.record_output_metrics();
        Ok(())
    }
}

/// Returns the top contributing columns of one attack: the features'
/// contributions summed per column, largest first, at most
/// `explain_top_k`, with the event's value of each column.
#[allow(clippy::too_many_arguments)]
fn explain(
    model: &ScoringModel,
    parser: &EventParser,
    shape: &AlertShape,
    top_k: usize,
    contributions: &mut Vec<f32>,
    row: &[f32],
    line_bytes: &[u8],
) -> Result<Vec<Contribution>> {
    model.explain(row, contributions)?;
    let mut by_column: Vec<(usize, f64)> = shape
        .feature_columns
        .iter()
        .enumerate()
        .map(|(column_index, (_, range))| {
            let total: f64 = contributions[range.clone()]
                .iter()
                .map(|value| f64::from(*value))
                .sum();
            (column_index, total)
        })
        .filter(|(_, total)| *total > 0.0)
        .collect();
    by_column.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    by_column.truncate(top_k);
    let names: Vec<String> = by_column
        .iter()
        .map(|(column_index, _)| shape.feature_columns[*column_index].0.clone())
        .collect();
    let mut values = Vec::with_capacity(names.len());
    parser.extract_fields(line_bytes, &names, &mut values);
    Ok(names
        .into_iter()
        .zip(values)
        .zip(by_column)
        .map(|((column, value), (_, weight))| Contribution {
            column,
            value,
            weight,
        })
        .collect())
}

/// Returns the time now in UNIX milliseconds.
fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
