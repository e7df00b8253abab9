//! What a detector runs with. The binary builds it from its flags and config
//! file; tests and benchmarks build it directly.

use std::path::PathBuf;
use std::time::Duration;

use fedshield_core::ModelVersion;
use fedshield_core::schema::{FileFormat, Schema};
use fedshield_proto::tls::ClientTlsFiles;

use crate::format::AlertFormatName;
use crate::output::AlertOptions;
use crate::sinks::{SinkOptions, SinkSpec};

/// Events scored per forward pass unless the settings say otherwise.
pub const DEFAULT_BATCH_EVENTS: usize = 1024;

/// How long sinks may take to deliver their queues on exit unless the
/// settings say otherwise.
pub const DEFAULT_FLUSH_WAIT: Duration = Duration::from_secs(10);

/// The settings of one detector run.
#[derive(Debug, Clone)]
pub struct DetectSettings {
    /// Where model versions come from.
    pub model_source: ModelSourceSettings,
    /// Feature schema (TOML) of the events; default: the model card's. When
    /// given, it must be the schema the card names.
    pub schema: Option<PathBuf>,
    /// Events file; standard input when `None`.
    pub events: Option<PathBuf>,
    /// Events format; default: from the events file's extension, else the schema's.
    pub format: Option<FileFormat>,
    /// Keep reading the events file as it grows, and switch to newer model versions.
    pub follow: bool,
    /// Score at or above which an event is an attack; default: see
    /// [`ReleaseRules::release`](crate::release::ReleaseRules::release).
    pub threshold: Option<f64>,
    /// Score with the threshold each version's model card calibrated for
    /// this false-positive rate (one of
    /// [`STANDARD_ALERT_FPRS`](fedshield_core::model::calibration::STANDARD_ALERT_FPRS));
    /// excludes `threshold`.
    pub alert_fpr: Option<f64>,
    /// Time between checks for a newer model version in follow mode.
    pub poll_interval: Duration,
    /// Events scored per forward pass.
    pub batch_events: usize,
    /// Where verdicts go.
    pub output: OutputSettings,
    /// Where Prometheus metrics and `/healthz` are served; `None` for nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Which events become alerts, what they echo and explain.
    pub alerts: AlertOptions,
    /// How long the sinks may take to deliver what they queue when the
    /// detector stops.
    pub flush_wait: Duration,
}

/// Where verdicts go: one format, and every sink it feeds.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    /// How each verdict is encoded.
    pub format: AlertFormatName,
    /// Every sink, each fed every verdict.
    pub sinks: Vec<SinkSpec>,
    /// Queue bounds, TLS files, the webhook's secret, syslog framing.
    pub sink_options: SinkOptions,
}

impl Default for OutputSettings {
    /// Native JSON lines on standard output.
    fn default() -> Self {
        OutputSettings {
            format: AlertFormatName::Native,
            sinks: vec![SinkSpec::Stdout],
            sink_options: SinkOptions::default(),
        }
    }
}

/// Where model versions come from.
#[derive(Debug, Clone)]
pub enum ModelSourceSettings {
    /// A local safetensors file and its model card.
    File { model: PathBuf, card: PathBuf },
    /// A coordinator's published versions.
    Coordinator(CoordinatorSettings),
}

/// How to reach the coordinator and keep its versions.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// The coordinator's gRPC URL.
    pub url: String,
    /// Client TLS files; `None` connects in plaintext.
    pub tls: Option<ClientTlsFiles>,
    /// This version only, never switched; `None` follows the latest.
    pub version: Option<ModelVersion>,
    /// Directory where downloaded versions are cached.
    pub cache_dir: PathBuf,
}

impl DetectSettings {
    /// Returns the events' format: the settings', else the events file's
    /// extension, else the schema's default.
    pub fn event_format(&self, schema: &Schema) -> FileFormat {
        self.format
            .or_else(|| self.events.as_deref().and_then(FileFormat::from_extension))
            .unwrap_or(schema.format())
    }
}
