//! Flags of `fedshield detect`.

use std::path::PathBuf;

use clap::Args;

use super::parsers::existing_file;

/// Input format of `fedshield detect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    Csv,
    Jsonl,
    /// Zeek TSV logs (`conn.log`), columns named by each file's `#fields` header.
    Zeek,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("model_source").required(true).args(["model", "coordinator"])))]
pub struct DetectArgs {
    /// Config file (TOML) of this role's settings: keys are the flags without dashes
    /// (`tls_cert = "..."`); flags and FEDSHIELD_* environment variables override it.
    #[arg(long, value_parser = existing_file)]
    pub config: Option<PathBuf>,
    /// Print the effective settings (as a config file) and exit without starting anything.
    #[arg(long)]
    pub print_config: bool,
    /// Model file (safetensors) to score with. Its model card (--card) must exist and its sha256
    /// must match the file; the card also gives the feature schema.
    #[arg(long, value_parser = existing_file, conflicts_with = "coordinator")]
    pub model: Option<PathBuf>,
    /// The model's card (JSON, as the coordinator writes next to each version). Default: --model
    /// with the extension .json.
    #[arg(long, value_parser = existing_file, requires = "model")]
    pub card: Option<PathBuf>,
    /// Download the latest published model (or --version) from this coordinator's gRPC URL
    /// (https://HOST:PORT). Needs --cache-dir; the feature schema comes with each version's model card.
    #[arg(long, requires = "cache_dir")]
    pub coordinator: Option<String>,
    /// The CA the coordinator's certificate chains to (PEM).
    #[arg(long, value_parser = existing_file, requires = "coordinator")]
    pub tls_ca: Option<PathBuf>,
    /// This detector's client certificate (PEM); its subject must be in the coordinator's participant registry.
    #[arg(long, value_parser = existing_file, requires = "coordinator")]
    pub tls_cert: Option<PathBuf>,
    /// This detector's private key (PEM).
    #[arg(long, value_parser = existing_file, requires = "coordinator")]
    pub tls_key: Option<PathBuf>,
    /// The name the coordinator's certificate must carry (default: the host of --coordinator).
    #[arg(long, requires = "coordinator")]
    pub tls_server_name: Option<String>,
    /// Connect in plaintext (an http:// coordinator started with --insecure). For local experiments only.
    #[arg(long, requires = "coordinator", conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    pub insecure: bool,
    /// Score with this model version instead of the latest; with --follow it is never switched.
    #[arg(long, requires = "coordinator")]
    pub version: Option<u64>,
    /// Directory where downloaded model versions are cached (sha256-checked on every use).
    #[arg(long, requires = "coordinator")]
    pub cache_dir: Option<PathBuf>,
    /// Feature schema (TOML) of the events. Default: the schema in the model card; when given,
    /// it must be the schema the card names (needed only for a model whose card has none).
    #[arg(long, value_parser = existing_file)]
    pub schema: Option<PathBuf>,
    /// Events file; default: standard input.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Events format. Default: from the --events extension (.csv, .jsonl), else the schema's format.
    #[arg(long, value_enum)]
    pub format: Option<EventFormat>,
    /// Keep reading --events as it grows (from its start; truncation and rotation are followed),
    /// and switch to newly published model versions: the coordinator's (polled every --poll-secs),
    /// or a newer model-v*.safetensors with its card in --model's directory.
    #[arg(long)]
    pub follow: bool,
    /// Score at or above which an event is an attack. Default: 0 for classifiers (log-odds, as
    /// `evaluate`); for autoencoders the threshold stored in the model file, else this flag is required.
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Alert when the score is at or above the threshold the model card calibrated for this
    /// false-positive rate on benign held-out data (one of 0.001, 0.01, 0.05; with --follow each
    /// version uses its own card's). A card without calibration for it is an error: use --threshold.
    #[arg(long, conflicts_with = "threshold")]
    pub alert_fpr: Option<f64>,
    /// Seconds between checks for a newer model version with --follow.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_secs: u64,
    /// Events scored per forward pass (output is flushed after every batch, and whenever input pauses).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch_size: u64,
    /// Emit only events at or above the threshold (alerts); default: a verdict for every event.
    #[arg(long)]
    pub alerts_only: bool,
    /// More fields to echo in every verdict, besides the schema's identity columns (comma-separated
    /// names: csv header names, Zeek #fields names, JSON keys or dotted paths).
    #[arg(long, value_delimiter = ',')]
    pub include_fields: Vec<String>,
    /// Contributing input columns listed in each alert's explanation (0: no explanations).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=64))]
    pub explain_top_k: u64,
    /// Roll repeated alerts of one key into one alert with a count: the echoed field (a column
    /// name, or a role such as source.ip) whose value keys the window. Needs --suppress-secs.
    #[arg(long, requires = "suppress_secs")]
    pub suppress_key: Option<String>,
    /// Length of the suppression window in seconds: the first alert of a key goes out at once,
    /// repeats within the window go out as one alert with their count when it ends.
    #[arg(long, requires = "suppress_key", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub suppress_secs: Option<u64>,
    /// How each verdict is written: native (fedshield's JSON lines), ecs (Elastic Common Schema
    /// 8.x) or ocsf (an OCSF 1.8 Detection Finding, class 2004). See docs/ALERT_FORMATS.md.
    #[arg(long, default_value = "native")]
    pub alert_format: String,
    /// Where verdicts go; repeat the flag to feed several: stdout, file:PATH (rotated by size),
    /// syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT, syslog+tls://HOST:PORT (RFC 5424; TLS
    /// needs --sink-ca), https://… (a webhook, signed with --webhook-secret-file). Network sinks
    /// never block scoring: they queue up to --sink-queue alerts and count what they drop.
    /// See docs/SINKS.md.
    #[arg(long = "sink", default_value = "stdout")]
    pub sinks: Vec<String>,
    /// Alerts a network sink queues while its receiver is slow or down; past it they are dropped,
    /// counted (fedshield_detector_sink_dropped_total) and reported.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub sink_queue: u64,
    /// CA certificates (PEM) the certificate of a syslog+tls server or an https webhook must
    /// chain to (default for webhooks: the platform's trusted roots).
    #[arg(long, value_parser = existing_file)]
    pub sink_ca: Option<PathBuf>,
    /// File holding the webhook's HMAC-SHA256 secret (its bytes, a trailing line feed removed);
    /// required by an https:// sink. Each request carries X-Fedshield-Signature: sha256=HEX.
    #[arg(long, value_parser = existing_file)]
    pub webhook_secret_file: Option<PathBuf>,
    /// The syslog facility of RFC 5424 messages (kern, user, …, local0 … local7).
    #[arg(long, default_value = "local0")]
    pub syslog_facility: String,
    /// Serve Prometheus metrics (GET /metrics, OpenMetrics text) and GET /healthz on this address
    /// (HOST:PORT, plain HTTP; counts only, no event data). Default: no metrics endpoint.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Seconds the sinks may take, on exit (end of input, SIGINT or SIGTERM), to deliver the
    /// alerts they still queue; what is left then is counted as dropped and reported.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub flush_secs: u64,
}
