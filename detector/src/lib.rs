//! fedshield detector: scores live events with a published model version
//! (`fedshield detect`).
//!
//! The pipeline runs on one blocking thread:
//! input bytes → lines ([`LineReader`]: an incomplete last line waits for its
//! newline) → records (csv fields, a JSON object or a Zeek TSV row,
//! [`EventParser`]) →
//! features (the schema's featurizer, the code ingestion uses, into a reused
//! buffer) → batches of up to `batch_events` rows → scores (core's inference, ndarray
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
//! follow mode, an async task looks for newer versions every `poll_interval` and
//! hands each one, verified, to the scoring thread through a `watch` channel;
//! the scoring thread switches between batches, so every output line names the
//! version that scored it.
//!
//! - [`settings`]: what a run needs (the binary builds it from its flags).
//! - [`events`]: input lines, events parsed into feature vectors, followed files.
//! - [`release`]: a verified model version, and the rules every version must satisfy.
//! - [`scoring`]: a release's network, and the [`Detector`] that scores batches of events.
//! - [`output`]: where verdicts go: the [`VerdictSink`] trait and its sinks (JSON lines).
//! - [`pipeline`]: the read loops, to the input's end or following a file.
//! - [`source`]: model versions from a local file or from the coordinator.
//! - [`alert`]: the [`alert::Alert`] record formats encode and sinks deliver.
//! - [`format`]: alert encodings (native JSON, ECS, OCSF).
//! - [`sinks`]: where encoded alerts go (stdout, file, syslog, webhook).
//! - [`metrics`]: the Prometheus metrics ([`metrics::DetectorMetrics`]).
//! - [`http`]: the plain-HTTP listener of `/metrics` and `/healthz`.
//! - [`error`]: the crate's error type, [`DetectorError`].

#![forbid(unsafe_code)]

pub mod alert;
pub mod error;
pub mod events;
pub mod format;
pub mod http;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod release;
pub mod scoring;
pub mod settings;
pub mod sinks;
pub mod source;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use error::{DetectorError, Result};
use events::{EventInput, EventParser, STDIN_NAME};
pub use format::AlertFormatName;
pub use output::{AlertOptions, AlertOutput};
use pipeline::{follow_file, score_to_end};
pub use release::{ModelRelease, ReleaseRules};
pub use scoring::{DetectStats, Detector, ScoringModel};
pub use settings::{
    CoordinatorSettings, DEFAULT_BATCH_EVENTS, DEFAULT_FLUSH_WAIT, DetectSettings,
    ModelSourceSettings, OutputSettings,
};
pub use sinks::stdout::StdoutSink;
pub use sinks::{SinkOptions, SinkSpec};
use source::open_model_source;

/// How long a stop on `shutdown` waits for the read under way (the sinks'
/// flush wait comes on top).
const STOP_WAIT: Duration = Duration::from_secs(1);

/// Scores events until the input ends (or forever when following a file),
/// or until `shutdown` is cancelled: then it stops after the read under way,
/// with what was read scored and written, and returns `Ok`.
///
/// # Errors
/// A model that cannot be loaded or fails its sha256 check, a schema that
/// does not fit the model, a csv or Zeek `#fields` header without the
/// schema's columns, or an
/// input that cannot be read. Malformed events are reported on stderr and
/// skipped, never an error.
pub async fn run(settings: DetectSettings, shutdown: CancellationToken) -> Result<()> {
    let metrics = Arc::new(metrics::DetectorMetrics::new());
    // Listening before the model loads lets a startup probe answer during
    // the download.
    let metrics_stop = CancellationToken::new();
    let metrics_server = match settings.metrics_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| DetectorError::MetricsListen { address, source })?;
            info!(address = %listener.local_addr().unwrap_or(address), "serving metrics");
            Some(tokio::spawn(http::serve_metrics(
                listener,
                metrics.clone(),
                metrics_stop.clone(),
            )))
        }
        None => None,
    };
    let outcome = score_events(settings, shutdown, metrics).await;
    // The endpoint answers until the sinks' last flush is done.
    metrics_stop.cancel();
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    outcome
}

/// Scores events as [`run`] says, counting in `metrics`.
async fn score_events(
    settings: DetectSettings,
    shutdown: CancellationToken,
    metrics: Arc<metrics::DetectorMetrics>,
) -> Result<()> {
    let opened = tokio::select! {
        opened = open_model_source(&settings) => opened?,
        () = shutdown.cancelled() => {
            info!("stopped by a signal while loading the model");
            return Ok(());
        }
    };
    let (source, rules, initial) = opened;
    let batch_events = settings.batch_events;
    let format = settings.event_format(&rules.schema);
    let input = EventInput::open(settings.events.as_deref(), settings.follow)?;
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
    let watches_models = settings.follow && source.can_switch();
    let stop = shutdown.clone();
    let output = open_output(
        &settings.output,
        &schema_name(&settings, &rules.schema),
        settings.alerts.clone(),
        &tokio::runtime::Handle::current(),
    )?;
    let flush_wait = settings.flush_wait;
    let mut scoring = tokio::task::spawn_blocking(move || -> Result<DetectStats> {
        let initial = receiver.borrow_and_update().clone();
        let model = ScoringModel::new(initial)?;
        let mut detector = Detector::new(parser, model, batch_events, output, io::stderr())
            .stop_when(stop)
            .with_metrics(metrics);
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
        detector.finish(flush_wait)?;
        report_output(&detector);
        Ok(detector.stats())
    });
    let watcher =
        watches_models.then(|| tokio::spawn(source.watch(rules, sender, settings.poll_interval)));
    let finished = tokio::select! {
        finished = &mut scoring => Some(finished),
        // A read that waits for input (a quiet pipe) cannot be interrupted;
        // everything read before it is already scored and written.
        () = shutdown.cancelled() => tokio::time::timeout(STOP_WAIT + flush_wait, &mut scoring).await.ok(),
    };
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let Some(finished) = finished else {
        info!("stopped by a signal while waiting for input");
        return Ok(());
    };
    let outcome = finished.map_err(|source| DetectorError::Task {
        task: "the scoring thread",
        source,
    })?;
    let stats = outcome?;
    info!(
        num_scored = stats.num_scored,
        num_malformed = stats.num_malformed,
        "input ended"
    );
    Ok(())
}

/// Returns the alert output `settings` name: the format, and every sink
/// opened (network sinks start their delivery tasks on `runtime`).
///
/// # Errors
/// A sink that cannot be opened (see [`sinks::open_sink`]).
fn open_output(
    settings: &OutputSettings,
    schema_name: &str,
    options: AlertOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<AlertOutput> {
    let context =
        format::FormatContext::new(settings.sink_options.syslog_hostname.clone(), schema_name);
    let format = format::new_format(settings.format, &context);
    let sinks = settings
        .sinks
        .iter()
        .map(|spec| sinks::open_sink(spec, &settings.sink_options, runtime))
        .collect::<Result<Vec<_>>>()?;
    Ok(AlertOutput::new(format, sinks, options))
}

/// Returns the name alerts give the events' schema: the `--schema` file's
/// stem, else `schema-` and the first 12 hex digits of its sha256.
fn schema_name(settings: &DetectSettings, schema: &fedshield_core::schema::Schema) -> String {
    settings
        .schema
        .as_deref()
        .and_then(|path| path.file_stem())
        .map(|stem| stem.to_string_lossy().replace(['-', '.'], "_"))
        .unwrap_or_else(|| format!("schema-{}", &schema.sha256()[..12]))
}

/// Logs what the output and each sink did: counts only.
fn report_output<E: std::io::Write>(detector: &Detector<E>) {
    let stats = detector.output().stats();
    info!(
        num_emitted = stats.num_emitted,
        num_attacks = stats.num_attacks,
        num_suppressed = stats.num_suppressed,
        "alerts emitted"
    );
    for (sink, sink_stats) in detector.output().sink_stats() {
        if sink_stats.num_dropped > 0 {
            tracing::warn!(
                sink = %sink,
                num_dropped = sink_stats.num_dropped,
                num_delivered = sink_stats.num_delivered,
                "sink dropped alerts"
            );
        }
    }
}
