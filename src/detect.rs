//! `fedshield detect`: scores live events with a published model version.
//!
//! The pipeline runs on one blocking thread:
//! input bytes → lines ([`LineReader`]: an incomplete last line waits for its
//! newline) → records (csv fields or a JSON object, [`EventParser`]) →
//! features (the schema's featurizer, the code ingestion uses, into a reused
//! buffer) → batches of up to `--batch-size` rows → scores (burn, ndarray
//! backend, [`ScoringModel`]) → one JSON line per event on stdout
//! ([`Detector`]). Output is flushed after every batch and after every read of
//! the input, so a partial batch never waits for more input.
//!
//! Scores and verdicts are those of `fedshield evaluate`: classifier scores are
//! the log-odds of attack, autoencoder scores the mean squared reconstruction
//! error, and an event is an attack when its score is at or above the
//! threshold. `tests/detect.rs` checks them against
//! [`fedshield_core::model::inference::score_rows`].
//!
//! Model versions come from a local safetensors file checked against the
//! sha256 of its model card, or from the coordinator over gRPC (`GetStatus`,
//! then `DownloadModel`, sha256-checked and cached by version). With
//! `--follow`, an async task looks for newer versions every `--poll-secs` and
//! hands each one, verified, to the scoring thread through a `watch` channel;
//! the scoring thread switches between batches, so every output line names the
//! version that scored it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use burn::backend::NdArray;
use burn::backend::ndarray::NdArrayDevice;
use burn::tensor::{Tensor, TensorData};
use csv::StringRecord;
use fedshield_coordinator::registry::ModelCard;
use fedshield_core::ModelVersion;
use fedshield_core::model::MlpClassifier;
use fedshield_core::model::inference::{CLASSIFIER_THRESHOLD, attack_log_odds};
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::schema::{FileFormat, HeaderPositions, RecordFields, Schema};
use fedshield_participant::cache::ModelCache;
use fedshield_participant::node::{download_model, error_chain};
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::{debug, info, warn};

use crate::cli::{DetectArgs, EventFormat};
use crate::commands::{ClientTlsFiles, client_tls_files};
use crate::offline::{SCHEMA_METADATA_KEY, THRESHOLD_METADATA_KEY, load_model_with_metadata};

/// How long a followed file that has been read to its end rests before the
/// next look for new data.
pub const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long a stop on SIGINT or SIGTERM waits for the read under way.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// Bytes read from the input at once; also the longest accepted line.
pub const READ_BUFFER_BYTES: usize = 1 << 20;

/// Events scored per forward pass unless `--batch-size` says otherwise.
pub const DEFAULT_BATCH_EVENTS: usize = 1024;

/// Largest gRPC message accepted from the coordinator: one model chunk and headroom.
const MAX_MESSAGE_BYTES: usize = fedshield_core::model::codec::MAX_CHUNK_BYTES + 64 * 1024;

/// Longest wait for the coordinator's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for one model download.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// How standard input is named in reports.
const STDIN_NAME: &str = "<stdin>";

/// Runs `fedshield detect` until the input ends (or forever with `--follow`
/// on a file).
///
/// # Errors
/// Bad flags, a model that cannot be loaded or fails its sha256 check, a
/// schema that does not fit the model, a csv header without the schema's
/// columns, or an input that cannot be read. Malformed events are reported
/// on stderr and skipped, never an error.
pub async fn run(args: DetectArgs) -> Result<()> {
    check_settings(&args)?;
    let batch_events = usize::try_from(args.batch_size).context("--batch-size is too large")?;
    let (source, rules, initial) = open_model_source(&args).await?;
    let format = event_format(&args, &rules.schema);
    let input = EventInput::open(args.events.as_deref(), args.follow)?;
    let parser = EventParser::new(rules.schema.clone(), format, input.name());
    info!(
        version = %initial.version,
        model_kind = %initial.weights.spec.kind,
        threshold = initial.threshold,
        events = %input.name(),
        format = %format,
        "scoring events"
    );
    let (sender, mut receiver) = watch::channel(Arc::new(initial));
    let watches_models = args.follow && source.can_switch();
    // SIGINT or SIGTERM: stop after the read under way, with what was read
    // scored and written, and exit 0.
    let shutdown = crate::shutdown::on_signal();
    let stop = shutdown.clone();
    let mut scoring = tokio::task::spawn_blocking(move || -> Result<DetectStats> {
        let initial = receiver.borrow_and_update().clone();
        let model = ScoringModel::new(initial)?;
        let mut detector = Detector::new(
            parser,
            model,
            batch_events,
            io::stdout().lock(),
            io::stderr(),
        )
        .stop_when(stop);
        let models = watches_models.then_some(&mut receiver);
        match input {
            EventInput::Stdin(mut stdin) => {
                score_to_end(&mut stdin, STDIN_NAME, &mut detector, models)?;
            }
            EventInput::File(mut file) if !file.follows => {
                let name = file.path.display().to_string();
                score_to_end(&mut file, &name, &mut detector, models)?;
            }
            EventInput::File(file) => follow_file(file, &mut detector, models)?,
        }
        Ok(detector.stats())
    });
    let watcher = watches_models
        .then(|| tokio::spawn(source.watch(rules, sender, Duration::from_secs(args.poll_secs))));
    let finished = tokio::select! {
        finished = &mut scoring => Some(finished),
        // A read that waits for input (a quiet pipe) cannot be interrupted;
        // everything read before it is already scored and written.
        () = shutdown.cancelled() => tokio::time::timeout(STOP_WAIT, &mut scoring).await.ok(),
    };
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let Some(finished) = finished else {
        info!("stopped by a signal while waiting for input");
        return Ok(());
    };
    let outcome = finished.context("the scoring thread failed")?;
    let stats = outcome?;
    info!(
        num_scored = stats.num_scored,
        num_malformed = stats.num_malformed,
        "input ended"
    );
    Ok(())
}

/// Checks the settings against each other, reading no file: before scoring and for
/// `--print-config`.
///
/// # Errors
/// The first problem, naming its flags.
pub fn check_settings(args: &DetectArgs) -> Result<()> {
    if let Some(threshold) = args.threshold
        && !threshold.is_finite()
    {
        bail!("--threshold must be a finite number, got {threshold}");
    }
    if let Some(url) = &args.coordinator {
        detector_tls_files(args, url)?;
    }
    Ok(())
}

/// Returns the events' format: `--format`, else the `--events` extension,
/// else the schema's default.
fn event_format(args: &DetectArgs, schema: &Schema) -> FileFormat {
    match args.format {
        Some(EventFormat::Csv) => FileFormat::Csv,
        Some(EventFormat::Jsonl) => FileFormat::Jsonl,
        None => args
            .events
            .as_deref()
            .and_then(FileFormat::from_extension)
            .unwrap_or(schema.format()),
    }
}

// ---------------------------------------------------------------------------
// Models: a verified release, and the burn network that scores with it.
// ---------------------------------------------------------------------------

/// A verified model version, ready to score with: what a model source hands
/// the scoring thread.
#[derive(Debug, Clone)]
pub struct ModelRelease {
    pub version: ModelVersion,
    pub weights: ModelWeights,
    /// Score at or above which an event is an attack.
    pub threshold: f64,
    /// Class names by class index (0 = benign) of a multi-class classifier;
    /// `None` for binary classifiers and autoencoders, whose events get no category.
    pub class_names: Option<Vec<String>>,
}

/// What every model version must satisfy to score these events: the schema
/// they are featurized with, and the `--threshold` flag.
#[derive(Debug, Clone)]
pub struct ReleaseRules {
    pub schema: Schema,
    pub threshold_flag: Option<f64>,
}

impl ReleaseRules {
    /// Returns the release of `weights`. The threshold is `--threshold`, else
    /// [`CLASSIFIER_THRESHOLD`] for classifiers, else the autoencoder's
    /// `stored_threshold` (as `fedshield evaluate` chooses it).
    ///
    /// # Errors
    /// When the model's inputs or classes do not fit the schema, or an
    /// autoencoder has no threshold.
    pub fn release(
        &self,
        version: ModelVersion,
        weights: ModelWeights,
        stored_threshold: Option<f64>,
    ) -> Result<ModelRelease> {
        let spec = &weights.spec;
        if spec.input_dim as usize != self.schema.num_features() {
            bail!(
                "model version {version} expects {} features, the schema produces {}: the model was trained with another schema",
                spec.input_dim,
                self.schema.num_features()
            );
        }
        let threshold = match (self.threshold_flag, spec.is_autoencoder()) {
            (Some(threshold), _) => threshold,
            (None, false) => CLASSIFIER_THRESHOLD,
            (None, true) => stored_threshold.with_context(|| {
                format!(
                    "model version {version} is an autoencoder without a stored threshold; pass --threshold"
                )
            })?,
        };
        let class_names = if !spec.is_autoencoder() && spec.num_classes > 2 {
            if spec.num_classes as usize != self.schema.num_classes() {
                bail!(
                    "model version {version} has {} classes, the schema declares {}: the model was trained with another schema",
                    spec.num_classes,
                    self.schema.num_classes()
                );
            }
            Some(self.schema.class_names())
        } else {
            None
        };
        Ok(ModelRelease {
            version,
            weights,
            threshold,
            class_names,
        })
    }
}

/// A release and its burn network (ndarray backend, no autodiff), built once
/// per version on the scoring thread.
pub struct ScoringModel {
    release: Arc<ModelRelease>,
    network: MlpClassifier<NdArray<f32>>,
    device: NdArrayDevice,
}

impl ScoringModel {
    /// Builds the network of `release`.
    ///
    /// # Errors
    /// If the parameters do not fit the spec (a [`ModelWeights`] always fits).
    pub fn new(release: Arc<ModelRelease>) -> Result<Self> {
        let device = NdArrayDevice::Cpu;
        let network =
            MlpClassifier::from_flat(&release.weights.spec, &release.weights.params, &device)?;
        Ok(ScoringModel {
            release,
            network,
            device,
        })
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
    /// The arithmetic is that of [`fedshield_core::model::inference::score_rows`]
    /// (same forward pass, same reductions in the same order), so scores are
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
        scores.clear();
        attack_classes.clear();
        let spec = &self.release.weights.spec;
        let input_dim = spec.input_dim as usize;
        if !features.len().is_multiple_of(input_dim) {
            bail!(
                "{} feature values are not a whole number of rows of {input_dim}",
                features.len()
            );
        }
        let num_rows = features.len() / input_dim;
        if num_rows == 0 {
            return Ok(());
        }
        let inputs = Tensor::<NdArray<f32>, 2>::from_data(
            TensorData::new(features.to_vec(), [num_rows, input_dim]),
            &self.device,
        ); // [rows, features]
        let outputs = self.network.forward(inputs).into_data(); // [rows, outputs]
        let outputs = outputs
            .as_slice::<f32>()
            .map_err(|error| anyhow!("model outputs are not float32: {error:?}"))?;
        if spec.is_autoencoder() {
            scores.extend(
                outputs
                    .chunks_exact(input_dim)
                    .zip(features.chunks_exact(input_dim))
                    .map(|(reconstruction, input)| reconstruction_error(reconstruction, input)),
            );
            return Ok(());
        }
        let num_classes = spec.num_classes as usize;
        let wants_classes = self.release.class_names.is_some();
        for logits in outputs.chunks_exact(num_classes) {
            scores.push(attack_log_odds(logits));
            if wants_classes {
                attack_classes.push(most_likely_attack_class(logits));
            }
        }
        Ok(())
    }
}

/// Returns the attack class (1..) with the largest logit; ties go to the
/// later class, as in `fedshield_core::model::inference::predict_classes`.
fn most_likely_attack_class(logits: &[f32]) -> u32 {
    logits[1..]
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(1, |(index, _)| index as u32 + 1)
}

/// Returns the mean squared error between a reconstruction and its input, as
/// `fedshield_core::model::inference` computes it.
fn reconstruction_error(reconstruction: &[f32], input: &[f32]) -> f32 {
    reconstruction
        .iter()
        .zip(input)
        .map(|(output, original)| (output - original).powi(2))
        .sum::<f32>()
        / input.len() as f32
}

// ---------------------------------------------------------------------------
// Events: lines, records, features.
// ---------------------------------------------------------------------------

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

/// What a line turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedLine {
    /// An event; its features are in the buffer.
    Event,
    /// A blank line or the csv header.
    Skipped,
}

/// Why a line was not an event.
#[derive(Debug)]
pub enum LineError {
    /// The line does not fit the schema; it is reported and skipped.
    Malformed(String),
    /// Nothing after it can be read either (a csv header without the schema's columns).
    Fatal(anyhow::Error),
}

/// Turns lines into feature vectors with the schema's featurizer.
///
/// csv lines are split into fields by the csv crate's rules (a line without
/// quotes is split on the delimiter directly, which is what the csv reader
/// does with it), one record per line. A label field may be absent: from a
/// JSON object, from a csv header, or, in a headerless csv, as the one
/// missing field of a row.
pub struct EventParser {
    schema: Schema,
    format: FileFormat,
    source_name: String,
    /// Column positions from the csv header line, once it has been read
    /// (schemas with `has_header`).
    header: Option<HeaderPositions>,
    /// Positions of headerless csv rows that leave out the label field.
    unlabelled_positions: Option<HeaderPositions>,
    /// Reused csv record.
    record: StringRecord,
}

impl EventParser {
    /// Returns a parser of `format` lines through `schema`; `source_name`
    /// names the input in reports.
    pub fn new(schema: Schema, format: FileFormat, source_name: impl Into<String>) -> Self {
        let unlabelled_positions = if format == FileFormat::Csv && !schema.has_header() {
            unlabelled_positions(&schema)
        } else {
            None
        };
        EventParser {
            schema,
            format,
            source_name: source_name.into(),
            header: None,
            unlabelled_positions,
            record: StringRecord::new(),
        }
    }

    /// Returns the name of the input.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Forgets the csv header: the input starts over (a truncated or rotated file).
    pub fn restart(&mut self) {
        self.header = None;
    }

    /// Featurizes line `line_number` into `features` (cleared first).
    ///
    /// # Errors
    /// [`LineError::Malformed`] with the reason, or [`LineError::Fatal`] for a
    /// csv header that lacks the schema's columns.
    pub fn parse(
        &mut self,
        line_number: u64,
        line: &[u8],
        features: &mut Vec<f32>,
    ) -> Result<ParsedLine, LineError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line)
            .map_err(|error| LineError::Malformed(format!("not valid UTF-8: {error}")))?;
        let text = if line_number == 1 {
            text.strip_prefix('\u{feff}').unwrap_or(text)
        } else {
            text
        };
        if text.trim().is_empty() {
            return Ok(ParsedLine::Skipped);
        }
        match self.format {
            FileFormat::Jsonl => self.parse_json(text, features),
            FileFormat::Csv => self.parse_csv(line_number, text, features),
        }
    }

    fn parse_json(&self, text: &str, features: &mut Vec<f32>) -> Result<ParsedLine, LineError> {
        let object = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(object)) => object,
            Ok(other) => {
                let kind = match other {
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                return Err(LineError::Malformed(format!(
                    "expected a json object, got {kind}"
                )));
            }
            Err(error) => return Err(LineError::Malformed(format!("invalid json: {error}"))),
        };
        self.schema
            .featurize_into(&RecordFields::Json(&object), features)
            .map(|_label| ParsedLine::Event)
            .map_err(LineError::Malformed)
    }

    fn parse_csv(
        &mut self,
        line_number: u64,
        text: &str,
        features: &mut Vec<f32>,
    ) -> Result<ParsedLine, LineError> {
        split_csv_line(text, self.schema.delimiter(), &mut self.record)
            .map_err(LineError::Malformed)?;
        if self.schema.has_header() && self.header.is_none() {
            // Events need no label: a header may leave the label column out.
            let matched = self.schema.header_positions(&self.record, false);
            let positions = matched.map_err(|mismatch| {
                LineError::Fatal(anyhow!(
                    "{}:{line_number}: the events' csv header does not fit the schema: {mismatch}",
                    self.source_name
                ))
            })?;
            self.header = Some(positions);
            return Ok(ParsedLine::Skipped);
        }
        let fields = match (&self.header, &self.unlabelled_positions) {
            (Some(header), _) => RecordFields::CsvWithHeader {
                record: &self.record,
                header,
            },
            (None, Some(unlabelled)) if self.record.len() + 1 == self.schema.num_columns() => {
                RecordFields::CsvWithHeader {
                    record: &self.record,
                    header: unlabelled,
                }
            }
            _ => RecordFields::CsvPositional(&self.record),
        };
        self.schema
            .featurize_into(&fields, features)
            .map(|_label| ParsedLine::Event)
            .map_err(LineError::Malformed)
    }
}

/// Splits one csv line into `record` (cleared first).
fn split_csv_line(text: &str, delimiter: u8, record: &mut StringRecord) -> Result<(), String> {
    record.clear();
    if !text.bytes().any(|byte| byte == b'"' || byte == b'\r') {
        for field in text.split(char::from(delimiter)) {
            record.push_field(field);
        }
        return Ok(());
    }
    // Quoted fields: the csv crate's reader, as ingestion uses.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    match reader.read_record(record) {
        Ok(_) => {}
        Err(error) => return Err(format!("invalid csv: {error}")),
    }
    let mut rest = StringRecord::new();
    if matches!(reader.read_record(&mut rest), Ok(true)) {
        return Err("the line holds more than one csv record".to_string());
    }
    Ok(())
}

/// Column names and kinds, read back from a schema's canonical TOML.
#[derive(Deserialize)]
struct SchemaColumns {
    #[serde(default)]
    columns: Vec<SchemaColumn>,
}

#[derive(Deserialize)]
struct SchemaColumn {
    name: String,
    kind: String,
}

/// Returns the positions of a headerless csv row that has every column of
/// `schema` but the label, in order.
fn unlabelled_positions(schema: &Schema) -> Option<HeaderPositions> {
    let columns: SchemaColumns = toml::from_str(&schema.to_toml_string()).ok()?;
    let header: StringRecord = columns
        .columns
        .iter()
        .filter(|column| column.kind != "label")
        .map(|column| column.name.as_str())
        .collect();
    schema.header_positions(&header, false).ok()
}

// ---------------------------------------------------------------------------
// The detector: batches, scores, verdict lines.
// ---------------------------------------------------------------------------

/// Counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectStats {
    pub num_scored: u64,
    pub num_malformed: u64,
}

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

/// Featurizes lines into batches, scores each batch, writes one JSON verdict
/// per event to `output` and reports malformed lines to `diagnostics`.
pub struct Detector<W: Write, E: Write> {
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
    /// The verdict lines of one batch.
    encoded: Vec<u8>,
    output: W,
    diagnostics: E,
    /// Set when the reader of `output` went away (a closed pipe): scoring stops.
    output_closed: bool,
    /// Cancelled from outside (a SIGTERM): scoring stops after the current read.
    stop: CancellationToken,
    stats: DetectStats,
}

impl<W: Write, E: Write> Detector<W, E> {
    /// Returns a detector that scores `batch_events` events per forward pass.
    pub fn new(
        parser: EventParser,
        model: ScoringModel,
        batch_events: usize,
        output: W,
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
            encoded: Vec::with_capacity(batch_events * 96),
            output,
            diagnostics,
            output_closed: false,
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
    fn should_stop(&self) -> bool {
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
                Err(LineError::Malformed(format!(
                    "line is longer than {READ_BUFFER_BYTES} bytes"
                ))),
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
            Err(LineError::Malformed(reason)) => {
                self.stats.num_malformed += 1;
                // A failing stderr must not stop detection.
                let _ = writeln!(
                    self.diagnostics,
                    "{}:{number}: malformed event skipped: {reason}",
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
        let release = self.model.release();
        self.encoded.clear();
        for (index, (&line, &score)) in self.pending_lines.iter().zip(&self.scores).enumerate() {
            let category = release.class_names.as_ref().and_then(|names| {
                let class = *self.attack_classes.get(index)? as usize;
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
        self.stats.num_scored += self.pending_lines.len() as u64;
        self.pending_lines.clear();
        self.pending_features.clear();
        let written = self
            .output
            .write_all(&self.encoded)
            .and_then(|()| self.output.flush());
        match written {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                self.output_closed = true;
                Ok(())
            }
            Err(error) => Err(error).context("failed to write verdicts"),
        }
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

/// Switches `detector` to the version the model source published last, if it is new.
fn switch_if_published<W: Write, E: Write>(
    models: &mut watch::Receiver<Arc<ModelRelease>>,
    detector: &mut Detector<W, E>,
) -> Result<()> {
    if !models.has_changed().unwrap_or(false) {
        return Ok(());
    }
    let release = models.borrow_and_update().clone();
    match ScoringModel::new(release) {
        Ok(model) => detector.switch_model(model),
        Err(error) => {
            warn!(error = %format!("{error:#}"), "new model version unusable; scoring continues with the current one");
            Ok(())
        }
    }
}

/// Scores every event of `input` until its end; with `models`, switches to
/// newly published versions between reads.
///
/// # Errors
/// As [`Detector::push_line`], or the input's read error.
pub fn score_to_end<W: Write, E: Write>(
    input: &mut impl Read,
    source_name: &str,
    detector: &mut Detector<W, E>,
    mut models: Option<&mut watch::Receiver<Arc<ModelRelease>>>,
) -> Result<()> {
    let mut lines = LineReader::new(READ_BUFFER_BYTES);
    loop {
        let num_read = lines
            .read_from(input)
            .with_context(|| format!("failed to read events from {source_name}"))?;
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
fn follow_file<W: Write, E: Write>(
    mut file: EventFile,
    detector: &mut Detector<W, E>,
    mut models: Option<&mut watch::Receiver<Arc<ModelRelease>>>,
) -> Result<()> {
    let mut lines = LineReader::new(READ_BUFFER_BYTES);
    loop {
        let num_read = lines
            .read_from(&mut file)
            .with_context(|| format!("failed to read events from {}", file.path.display()))?;
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
                while lines.read_from(&mut file).with_context(|| {
                    format!("failed to read events from {}", file.path.display())
                })? > 0
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

/// How a followed file changed under its path.
enum FileChange {
    None,
    /// Shorter than what was read: rewritten in place.
    Truncated,
    /// The path names another file (rotated).
    Replaced,
}

/// Where events come from.
enum EventInput {
    Stdin(io::Stdin),
    File(EventFile),
}

impl EventInput {
    fn open(path: Option<&Path>, follow: bool) -> Result<Self> {
        match path {
            None => Ok(EventInput::Stdin(io::stdin())),
            Some(path) => Ok(EventInput::File(EventFile::open(path, follow)?)),
        }
    }

    fn name(&self) -> String {
        match self {
            EventInput::Stdin(_) => STDIN_NAME.to_string(),
            EventInput::File(file) => file.path.display().to_string(),
        }
    }
}

/// An events file, and what following it needs to notice truncation and rotation.
struct EventFile {
    path: PathBuf,
    file: File,
    /// Bytes read so far.
    position: u64,
    follows: bool,
    /// Device and inode of the open file.
    #[cfg(unix)]
    identity: (u64, u64),
}

impl EventFile {
    fn open(path: &Path, follows: bool) -> Result<Self> {
        let file = File::open(path)
            .with_context(|| format!("failed to open --events {}", path.display()))?;
        #[cfg(unix)]
        let identity = {
            use std::os::unix::fs::MetadataExt;
            let metadata = file
                .metadata()
                .with_context(|| format!("failed to read metadata of {}", path.display()))?;
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
    fn change(&self) -> Result<FileChange> {
        let metadata = match std::fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            // Being rotated: the new file is not there yet.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(FileChange::None),
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("failed to read metadata of {}", self.path.display())
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
    fn rewind(&mut self) -> Result<()> {
        self.file
            .seek(SeekFrom::Start(0))
            .with_context(|| format!("failed to rewind {}", self.path.display()))?;
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

// ---------------------------------------------------------------------------
// Model sources: a local file with its card, or the coordinator.
// ---------------------------------------------------------------------------

/// Where model versions come from.
enum ModelSource {
    Local(LocalSource),
    Coordinator(CoordinatorSource),
}

/// Opens the model source the flags name and loads the first version.
async fn open_model_source(args: &DetectArgs) -> Result<(ModelSource, ReleaseRules, ModelRelease)> {
    match (&args.model, &args.coordinator) {
        (Some(model_path), None) => {
            let card_path = args
                .card
                .clone()
                .unwrap_or_else(|| model_path.with_extension("json"));
            let model_path = model_path.clone();
            let schema_flag = args.schema.clone();
            let threshold_flag = args.threshold;
            tokio::task::spawn_blocking(move || {
                LocalSource::open(model_path, card_path, schema_flag, threshold_flag)
            })
            .await
            .context("loading the model failed")?
        }
        (None, Some(url)) => {
            let cache_dir = args
                .cache_dir
                .as_ref()
                .context("--coordinator needs --cache-dir")?;
            let mut source = CoordinatorSource::connect(args, url, cache_dir).await?;
            let version = source.target_version().await?;
            let card = source.published_card(version).await?;
            // The schema comes with the model card; --schema may stand in for
            // a card without one, and must be the same schema otherwise.
            let schema = match (&args.schema, card.schema) {
                (Some(path), declared) => {
                    let schema = load_schema(path)?;
                    if let Some(declared) = declared
                        && declared.sha256() != schema.sha256()
                    {
                        bail!(
                            "--schema {} (sha256 {}) is not the schema model version {version} was trained with (sha256 {}, from its model card)",
                            path.display(),
                            schema.sha256(),
                            declared.sha256()
                        );
                    }
                    schema
                }
                (None, Some(declared)) => declared,
                (None, None) => bail!(
                    "model version {version} of coordinator {url} has no feature schema in its card; pass --schema"
                ),
            };
            source.schema_sha256 = schema.sha256();
            let rules = ReleaseRules {
                schema,
                threshold_flag: args.threshold,
            };
            let weights = source.fetch(version, &card.sha256).await?;
            let release = rules.release(version, weights, None)?;
            Ok((ModelSource::Coordinator(source), rules, release))
        }
        _ => bail!("give either --model or --coordinator"),
    }
}

impl ModelSource {
    /// Returns true if newer versions may replace the current one.
    fn can_switch(&self) -> bool {
        match self {
            ModelSource::Local(_) => true,
            ModelSource::Coordinator(source) => source.pinned.is_none(),
        }
    }

    /// Looks for a newer version every `poll_interval` and publishes each one
    /// that passes its checks to `sender`; runs until the receiver is gone.
    /// A version that fails is logged and scoring goes on with the current one.
    async fn watch(
        mut self,
        rules: ReleaseRules,
        sender: watch::Sender<Arc<ModelRelease>>,
        poll_interval: Duration,
    ) {
        let rules = Arc::new(rules);
        let mut current = sender.borrow().version;
        loop {
            tokio::time::sleep(poll_interval).await;
            if sender.is_closed() {
                return;
            }
            let found = match &mut self {
                ModelSource::Local(source) => source.newer_release(current, &rules).await,
                ModelSource::Coordinator(source) => source.newer_release(current, &rules).await,
            };
            match found {
                Ok(None) => {}
                Ok(Some(release)) => {
                    debug!(version = %release.version, "newer model version loaded");
                    current = release.version;
                    sender.send_replace(Arc::new(release));
                }
                Err(error) => {
                    warn!(error = %format!("{error:#}"), "model version check failed; scoring continues with the current version");
                }
            }
        }
    }
}

fn load_schema(path: &Path) -> Result<Schema> {
    Schema::load(path).with_context(|| format!("failed to load --schema {}", path.display()))
}

/// A model file with its card; with `--follow`, its directory is watched for
/// newer `model-v*.safetensors` files with their cards, as the coordinator's
/// registry writes them.
#[derive(Debug, Clone)]
struct LocalSource {
    directory: PathBuf,
    /// sha256 of the schema in use; a newer version must declare the same one (or none).
    schema_sha256: String,
    /// Versions that failed their checks, not tried again.
    refused: HashSet<u64>,
}

/// A model file checked against its card.
struct VerifiedModel {
    weights: ModelWeights,
    card: ModelCard,
    metadata: HashMap<String, String>,
}

impl LocalSource {
    /// Loads `model_path`, checks it against its card and resolves the schema.
    fn open(
        model_path: PathBuf,
        card_path: PathBuf,
        schema_flag: Option<PathBuf>,
        threshold_flag: Option<f64>,
    ) -> Result<(ModelSource, ReleaseRules, ModelRelease)> {
        let model = load_verified(&model_path, &card_path)?;
        let declared = declared_schema(&model, &card_path)?;
        let declared_sha256 = model
            .card
            .feature_schema_sha256
            .clone()
            .or_else(|| declared.as_ref().map(Schema::sha256));
        let schema = match (&schema_flag, declared) {
            (Some(path), _) => {
                let schema = load_schema(path)?;
                if let Some(expected) = &declared_sha256
                    && *expected != schema.sha256()
                {
                    bail!(
                        "--schema {} (sha256 {}) is not the schema model version {} was trained with (sha256 {expected}, from {})",
                        path.display(),
                        schema.sha256(),
                        model.card.version,
                        card_path.display()
                    );
                }
                schema
            }
            (None, Some(schema)) => schema,
            (None, None) => bail!(
                "neither the model card {} nor the model file {} holds a feature schema; pass --schema",
                card_path.display(),
                model_path.display()
            ),
        };
        let rules = ReleaseRules {
            schema,
            threshold_flag,
        };
        let version = ModelVersion(model.card.version);
        let stored_threshold = stored_threshold(&model.metadata);
        let release = rules
            .release(version, model.weights, stored_threshold)
            .with_context(|| format!("model {}", model_path.display()))?;
        let directory = model_path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let source = LocalSource {
            directory,
            schema_sha256: rules.schema.sha256(),
            refused: HashSet::new(),
        };
        Ok((ModelSource::Local(source), rules, release))
    }

    /// Returns the newest version in the directory if it is newer than
    /// `current` and passes its checks.
    async fn newer_release(
        &mut self,
        current: ModelVersion,
        rules: &Arc<ReleaseRules>,
    ) -> Result<Option<ModelRelease>> {
        let source = self.clone();
        let rules = rules.clone();
        let outcome = tokio::task::spawn_blocking(move || source.load_newest(current, &rules))
            .await
            .context("loading the model failed")?;
        match outcome {
            Ok(found) => Ok(found),
            Err((Some(version), error)) => {
                self.refused.insert(version);
                Err(error.context(format!("model version {version} refused")))
            }
            Err((None, error)) => Err(error),
        }
    }

    /// The blocking part of [`Self::newer_release`]; an error names the
    /// version it refuses, if it is about one.
    fn load_newest(
        &self,
        current: ModelVersion,
        rules: &ReleaseRules,
    ) -> Result<Option<ModelRelease>, (Option<u64>, anyhow::Error)> {
        let newest = newest_stored_version(&self.directory).map_err(|error| (None, error))?;
        let Some(version) =
            newest.filter(|&version| version > current.0 && !self.refused.contains(&version))
        else {
            return Ok(None);
        };
        let weights_path = self
            .directory
            .join(format!("model-v{version:08}.safetensors"));
        let card_path = self.directory.join(format!("model-v{version:08}.json"));
        let load = || -> Result<ModelRelease> {
            let model = load_verified(&weights_path, &card_path)?;
            if model.card.version != version {
                bail!(
                    "card {} says version {}, its file name says {version}",
                    card_path.display(),
                    model.card.version
                );
            }
            let declared = declared_schema(&model, &card_path)?;
            let declared_sha256 = model
                .card
                .feature_schema_sha256
                .clone()
                .or_else(|| declared.as_ref().map(Schema::sha256));
            if let Some(declared_sha256) = declared_sha256
                && declared_sha256 != self.schema_sha256
            {
                bail!(
                    "its feature schema has sha256 {declared_sha256}, the events are read with schema sha256 {}",
                    self.schema_sha256
                );
            }
            let stored_threshold = stored_threshold(&model.metadata);
            rules.release(ModelVersion(version), model.weights, stored_threshold)
        };
        load().map(Some).map_err(|error| (Some(version), error))
    }
}

/// Returns the highest version in `directory` with both a weights file and a
/// card (the registry writes the card last).
fn newest_stored_version(directory: &Path) -> Result<Option<u64>> {
    let entries = std::fs::read_dir(directory)
        .with_context(|| format!("failed to list {}", directory.display()))?;
    let newest = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .strip_prefix("model-v")?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()?;
            directory
                .join(format!("model-v{version:08}.safetensors"))
                .is_file()
                .then_some(version)
        })
        .max();
    Ok(newest)
}

/// Reads a model card.
fn read_card(path: &Path) -> Result<ModelCard> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "failed to read model card {} (pass --card; detect checks the model against its card's sha256)",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a fedshield model card", path.display()))
}

/// Loads a model file and checks its parameters against its card's sha256 and spec.
fn load_verified(weights_path: &Path, card_path: &Path) -> Result<VerifiedModel> {
    let card = read_card(card_path)?;
    let (weights, metadata) = load_model_with_metadata(weights_path)?;
    let actual = weights.sha256();
    if actual != card.sha256 {
        bail!(
            "model {} does not match its card {}: sha256 mismatch (the card says {}, the file's parameters hash to {actual}); refusing to score with it",
            weights_path.display(),
            card_path.display(),
            card.sha256
        );
    }
    if weights.spec != card.spec {
        bail!(
            "model {} has architecture {:?}, its card {} says {:?}",
            weights_path.display(),
            weights.spec,
            card_path.display(),
            card.spec
        );
    }
    Ok(VerifiedModel {
        weights,
        card,
        metadata,
    })
}

/// Returns the feature schema a model declares: its card's (checked against
/// the card's sha256), else the one `fedshield train` stores in the file.
fn declared_schema(model: &VerifiedModel, card_path: &Path) -> Result<Option<Schema>> {
    if let Some(text) = &model.card.feature_schema {
        let schema = Schema::from_toml_str(text)
            .with_context(|| format!("model card {}: feature_schema", card_path.display()))?;
        if let Some(expected) = &model.card.feature_schema_sha256
            && *expected != schema.sha256()
        {
            bail!(
                "model card {}: its feature_schema has sha256 {}, the card says {expected}",
                card_path.display(),
                schema.sha256()
            );
        }
        return Ok(Some(schema));
    }
    match model.metadata.get(SCHEMA_METADATA_KEY) {
        Some(text) => Schema::from_toml_str(text)
            .map(Some)
            .context("the model file's feature schema"),
        None => Ok(None),
    }
}

/// Returns the autoencoder threshold `fedshield train` stores in the model file.
fn stored_threshold(metadata: &HashMap<String, String>) -> Option<f64> {
    metadata
        .get(THRESHOLD_METADATA_KEY)
        .and_then(|value| value.parse::<f64>().ok())
        .filter(|threshold| threshold.is_finite())
}

/// The coordinator's published versions over gRPC, cached by version.
struct CoordinatorSource {
    url: String,
    client: FederationClient<Channel>,
    cache: ModelCache,
    cache_dir: PathBuf,
    /// `--version`: this version only, never switched.
    pinned: Option<ModelVersion>,
    /// sha256 of the schema events are read with; a newer version whose card
    /// declares another schema is refused.
    schema_sha256: String,
}

/// What the header of a version's download says about it.
struct PublishedCard {
    /// sha256 of the parameters.
    sha256: String,
    /// The feature schema of the model card, checked against the card's sha256 of it.
    schema: Option<Schema>,
}

impl CoordinatorSource {
    async fn connect(args: &DetectArgs, url: &str, cache_dir: &Path) -> Result<Self> {
        let tls = detector_tls(args, url)?;
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .with_context(|| format!("--coordinator {url} is not a valid URL"))?;
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls)
                .context("failed to apply the TLS configuration")?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(8 * 1024 * 1024))
            .initial_connection_window_size(Some(32 * 1024 * 1024))
            .connect()
            .await
            .map_err(|error| {
                anyhow!(
                    "failed to connect to coordinator {url}: {}",
                    error_chain(&error)
                )
            })?;
        std::fs::create_dir_all(cache_dir)
            .with_context(|| format!("failed to create --cache-dir {}", cache_dir.display()))?;
        Ok(CoordinatorSource {
            url: url.to_string(),
            client: FederationClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            cache: ModelCache::new(cache_dir),
            cache_dir: cache_dir.to_path_buf(),
            pinned: args.version.map(ModelVersion),
            schema_sha256: String::new(),
        })
    }

    /// Returns the latest published version and its sha256.
    async fn latest(&mut self) -> Result<(ModelVersion, String)> {
        let status = tokio::time::timeout(
            STATUS_TIMEOUT,
            self.client.get_status(pb::GetStatusRequest {}),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "coordinator {} did not answer GetStatus within {}s",
                self.url,
                STATUS_TIMEOUT.as_secs()
            )
        })?
        .with_context(|| format!("GetStatus on coordinator {} failed", self.url))?
        .into_inner();
        Ok((
            ModelVersion(status.current_model_version),
            status.current_model_sha256,
        ))
    }

    /// Returns the version to start with: `--version`, or the latest.
    async fn target_version(&mut self) -> Result<ModelVersion> {
        let (latest, _) = self.latest().await?;
        match self.pinned {
            None => Ok(latest),
            Some(pinned) if pinned > latest => bail!(
                "--version {pinned} is not published: the latest version of coordinator {} is {latest}",
                self.url
            ),
            Some(pinned) => Ok(pinned),
        }
    }

    /// Returns the sha256 and feature schema of a published version: the
    /// header of its download carries its model card (the rest of the
    /// stream is not read).
    async fn published_card(&mut self, version: ModelVersion) -> Result<PublishedCard> {
        let mut stream = self
            .client
            .download_model(pb::DownloadModelRequest {
                model_version: version.0,
                preferred_chunk_params: 0,
            })
            .await
            .with_context(|| {
                format!(
                    "coordinator {} refused to download version {version}",
                    self.url
                )
            })?
            .into_inner();
        let first = tokio::time::timeout(STATUS_TIMEOUT, stream.message())
            .await
            .map_err(|_| anyhow!("coordinator {} sent no model header in time", self.url))?
            .with_context(|| format!("download of version {version} failed"))?;
        match first.and_then(|chunk| chunk.payload) {
            Some(pb::model_chunk::Payload::Header(header)) if header.model_version == version.0 => {
                card_of_header(&header, version, &self.url)
            }
            _ => bail!(
                "coordinator {}: the download of version {version} did not start with its header",
                self.url
            ),
        }
    }

    /// Returns a version's weights from the cache, or downloads (sha256-checked) and caches them.
    async fn fetch(&mut self, version: ModelVersion, sha256: &str) -> Result<ModelWeights> {
        let cache = self.cache.clone();
        let expected = sha256.to_string();
        let cached = tokio::task::spawn_blocking(move || cache.get(version, &expected))
            .await
            .context("reading the model cache failed")?;
        if let Some(weights) = cached {
            debug!(version = %version, "model version found in the cache");
            return Ok(weights);
        }
        let weights = tokio::time::timeout(
            DOWNLOAD_TIMEOUT,
            download_model(&mut self.client, version, sha256),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "download of model version {version} from {} took longer than {}s",
                self.url,
                DOWNLOAD_TIMEOUT.as_secs()
            )
        })?
        .with_context(|| {
            format!(
                "failed to download model version {version} from coordinator {}",
                self.url
            )
        })?;
        let cache = self.cache.clone();
        let to_cache = weights.clone();
        tokio::task::spawn_blocking(move || cache.put(version, &to_cache))
            .await
            .context("writing the model cache failed")?
            .with_context(|| {
                format!(
                    "failed to cache model version {version} in --cache-dir {}",
                    self.cache_dir.display()
                )
            })?;
        info!(version = %version, sha256 = %sha256, "model version downloaded");
        Ok(weights)
    }

    /// Returns the latest version if it is newer than `current`.
    async fn newer_release(
        &mut self,
        current: ModelVersion,
        rules: &ReleaseRules,
    ) -> Result<Option<ModelRelease>> {
        let (latest, _) = self.latest().await?;
        if latest <= current {
            return Ok(None);
        }
        let card = self
            .published_card(latest)
            .await
            .with_context(|| format!("model version {latest} refused"))?;
        if let Some(schema) = &card.schema
            && schema.sha256() != self.schema_sha256
        {
            bail!(
                "model version {latest} refused: its feature schema has sha256 {}, the events are read with schema sha256 {}",
                schema.sha256(),
                self.schema_sha256
            );
        }
        let weights = self.fetch(latest, &card.sha256).await?;
        rules
            .release(latest, weights, None)
            .map(Some)
            .with_context(|| format!("model version {latest} refused"))
    }
}

/// Reads the model card a download header carries.
fn card_of_header(
    header: &pb::ModelHeader,
    version: ModelVersion,
    url: &str,
) -> Result<PublishedCard> {
    if header.card_json.is_empty() {
        // A coordinator from before cards travelled with downloads.
        return Ok(PublishedCard {
            sha256: header.sha256.clone(),
            schema: None,
        });
    }
    let card: ModelCard = serde_json::from_str(&header.card_json).with_context(|| {
        format!("coordinator {url}: the model card of version {version} is not valid")
    })?;
    if card.sha256 != header.sha256 || card.version != version.0 {
        bail!(
            "coordinator {url}: the model card of version {version} describes version {} with sha256 {}, the download header says sha256 {}",
            card.version,
            card.sha256,
            header.sha256
        );
    }
    let schema = match &card.feature_schema {
        None => None,
        Some(text) => {
            let schema = Schema::from_toml_str(text).with_context(|| {
                format!("coordinator {url}: the feature schema in the card of version {version}")
            })?;
            if let Some(expected) = &card.feature_schema_sha256
                && *expected != schema.sha256()
            {
                bail!(
                    "coordinator {url}: the card of version {version} holds a feature schema with sha256 {}, and says {expected}",
                    schema.sha256()
                );
            }
            Some(schema)
        }
    };
    Ok(PublishedCard {
        sha256: card.sha256,
        schema,
    })
}

/// Returns the client TLS settings from the flags (`None` with `--insecure`).
fn detector_tls(args: &DetectArgs, url: &str) -> Result<Option<ClientTlsConfig>> {
    detector_tls_files(args, url)?
        .map(|files| files.load("detector"))
        .transpose()
}

/// Returns the client TLS files the flags name (`None` with `--insecure`).
fn detector_tls_files<'a>(args: &'a DetectArgs, url: &str) -> Result<Option<ClientTlsFiles<'a>>> {
    client_tls_files(
        url,
        args.insecure,
        args.tls_ca.as_ref(),
        args.tls_cert.as_ref(),
        args.tls_key.as_ref(),
        args.tls_server_name.as_ref(),
    )
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

    #[test]
    fn quoted_csv_fields_split_like_the_csv_reader() {
        let mut record = StringRecord::new();
        split_csv_line("a,\"b,c\",d", b',', &mut record).unwrap();
        assert_eq!(record.iter().collect::<Vec<_>>(), ["a", "b,c", "d"]);
        split_csv_line("a,,c", b',', &mut record).unwrap();
        assert_eq!(record.iter().collect::<Vec<_>>(), ["a", "", "c"]);
    }

    #[test]
    fn headerless_rows_may_leave_out_the_label_field() {
        let mut parser = EventParser::new(Schema::for_test(), FileFormat::Csv, "test");
        let mut labelled = Vec::new();
        let mut unlabelled = Vec::new();
        assert_eq!(
            parser
                .parse(1, b"3,udp,53,portscan", &mut labelled)
                .unwrap(),
            ParsedLine::Event
        );
        assert_eq!(
            parser.parse(2, b"3,udp,53", &mut unlabelled).unwrap(),
            ParsedLine::Event
        );
        assert_eq!(labelled, unlabelled);
        assert!(matches!(
            parser.parse(3, b"3,udp", &mut unlabelled),
            Err(LineError::Malformed(_))
        ));
    }

    #[test]
    fn a_csv_header_without_the_label_column_gives_unlabelled_events() {
        let text = Schema::for_test()
            .to_toml_string()
            .replace("has_header = false", "has_header = true");
        let schema = Schema::from_toml_str(&text).unwrap();
        let mut parser = EventParser::new(schema, FileFormat::Csv, "test");
        let mut features = Vec::new();
        assert_eq!(
            parser.parse(1, b"port,proto,bytes", &mut features).unwrap(),
            ParsedLine::Skipped
        );
        assert_eq!(
            parser.parse(2, b"53,udp,3\r", &mut features).unwrap(),
            ParsedLine::Event
        );
        assert_eq!(features[0], 4f32.ln());
        let missing_column = EventParser::new(
            Schema::from_toml_str(&text).unwrap(),
            FileFormat::Csv,
            "test",
        )
        .parse(1, b"port,bytes", &mut features);
        assert!(matches!(missing_column, Err(LineError::Fatal(_))));
    }

    #[test]
    fn log_odds_of_two_classes_are_the_logit_difference() {
        assert_eq!(attack_log_odds(&[0.5, 2.0]), 1.5);
        assert_eq!(most_likely_attack_class(&[9.0, 1.0, 3.0, 2.0]), 2);
    }
}
