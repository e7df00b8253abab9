//! The error type of fedshield-detector.
//!
//! Each variant names the file, flag, version or coordinator that was wrong
//! and wraps its cause as its source, so that the binary prints the whole
//! chain ("failed to read events from FILE: Caused by: ...").

use std::io;
use std::path::PathBuf;

use fedshield_core::schema::{HeaderMismatch, SchemaError};
use fedshield_core::{CoreError, ModelSpec, ModelVersion};
use fedshield_proto::download::DownloadError;
use fedshield_proto::tls::TlsError;

/// Errors of fedshield-detector. Messages are lowercase and name the offending value.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    // Reading events.
    #[error("failed to open --events {}", path.display())]
    OpenEvents {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read metadata of {}", path.display())]
    EventsMetadata {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to rewind {}", path.display())]
    RewindEvents {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read events from {input_name}")]
    ReadEvents {
        input_name: String,
        #[source]
        source: io::Error,
    },
    /// A csv header without the schema's columns: nothing after it can be read.
    #[error(
        "{input_name}:{line_number}: the events' csv header does not fit the schema: {mismatch}"
    )]
    CsvHeader {
        input_name: String,
        line_number: u64,
        mismatch: HeaderMismatch,
    },
    /// A Zeek `#fields` header without the schema's columns: its rows cannot be read.
    #[error(
        "{input_name}:{line_number}: the zeek #fields header does not fit the schema: {mismatch}"
    )]
    ZeekFields {
        input_name: String,
        line_number: u64,
        mismatch: HeaderMismatch,
    },

    // The feature schema.
    #[error("failed to load --schema {}", path.display())]
    LoadSchema {
        path: PathBuf,
        #[source]
        source: SchemaError,
    },
    /// `--schema` is not the schema the model declares; `declared_by` says
    /// where the declared one came from (a card's path, or "its model card").
    #[error(
        "--schema {} (sha256 {flag_sha256}) is not the schema model version {version} was trained with (sha256 {declared_sha256}, from {declared_by})",
        path.display()
    )]
    SchemaFlagMismatch {
        path: PathBuf,
        flag_sha256: String,
        version: ModelVersion,
        declared_sha256: String,
        declared_by: String,
    },
    #[error(
        "neither the model card {} nor the model file {} holds a feature schema; pass --schema",
        card.display(),
        model.display()
    )]
    NoLocalSchema { card: PathBuf, model: PathBuf },
    #[error(
        "model version {version} of coordinator {url} has no feature schema in its card; pass --schema"
    )]
    NoPublishedSchema { version: ModelVersion, url: String },
    #[error("model card {}: feature_schema", card.display())]
    CardSchema {
        card: PathBuf,
        #[source]
        source: SchemaError,
    },
    #[error(
        "model card {}: its feature_schema has sha256 {actual}, the card says {expected}",
        card.display()
    )]
    CardSchemaSha256 {
        card: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("the model file's feature schema")]
    ModelFileSchema(#[source] SchemaError),
    /// A newer version declares another schema than the events are read with.
    #[error(
        "its feature schema has sha256 {declared}, the events are read with schema sha256 {in_use}"
    )]
    SchemaChanged { declared: String, in_use: String },

    // A release's fit to the schema and its threshold.
    #[error(
        "model version {version} expects {model_features} features, the schema produces {schema_features}: the model was trained with another schema"
    )]
    FeatureCount {
        version: ModelVersion,
        model_features: u32,
        schema_features: usize,
    },
    #[error(
        "model version {version} has {model_classes} classes, the schema declares {schema_classes}: the model was trained with another schema"
    )]
    ClassCount {
        version: ModelVersion,
        model_classes: u32,
        schema_classes: usize,
    },
    #[error(
        "model version {version} is an autoencoder without a stored threshold; pass --threshold"
    )]
    NoThreshold { version: ModelVersion },
    /// `--alert-fpr` with a card that holds no threshold calibrated for it.
    #[error(
        "--alert-fpr {alert_fpr}: the model card of version {version} has no alert threshold calibrated for it (cards calibrate on benign held-out data; without enough, or from before calibration); pass --threshold instead"
    )]
    NoCalibration {
        version: ModelVersion,
        alert_fpr: f64,
    },

    // Model files and their cards.
    #[error(
        "failed to read model card {} (pass --card; detect checks the model against its card's sha256)",
        card.display()
    )]
    ReadCard {
        card: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a fedshield model card", card.display())]
    NotACard {
        card: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The model file's parameters do not hash to its card's sha256.
    #[error(
        "model {} does not match its card {}: sha256 mismatch (the card says {expected}, the file's parameters hash to {actual}); refusing to score with it",
        model.display(),
        card.display()
    )]
    Sha256Mismatch {
        model: PathBuf,
        card: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "model {} has architecture {model_spec:?}, its card {} says {card_spec:?}",
        model.display(),
        card.display()
    )]
    SpecMismatch {
        model: PathBuf,
        model_spec: Box<ModelSpec>,
        card: PathBuf,
        card_spec: Box<ModelSpec>,
    },
    #[error(
        "card {} says version {card_version}, its file name says {file_version}",
        card.display()
    )]
    CardVersion {
        card: PathBuf,
        card_version: u64,
        file_version: u64,
    },
    #[error("failed to list {}", directory.display())]
    ListModels {
        directory: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The first model cannot score these events (its release failed).
    #[error("model {}", model.display())]
    Model {
        model: PathBuf,
        #[source]
        source: Box<DetectorError>,
    },
    /// A newer version failed its checks; scoring goes on with the current one.
    #[error("model version {version} refused")]
    Refused {
        version: ModelVersion,
        #[source]
        source: Box<DetectorError>,
    },

    // The coordinator.
    #[error("--coordinator {url} is not a valid URL")]
    InvalidUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("failed to apply the TLS configuration")]
    ApplyTls(#[source] tonic::transport::Error),
    /// `reason` is the transport error's whole chain on one line.
    #[error("failed to connect to coordinator {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("failed to create --cache-dir {}", directory.display())]
    CreateCacheDir {
        directory: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("coordinator {url} did not answer GetStatus within {timeout_secs}s")]
    StatusTimeout { url: String, timeout_secs: u64 },
    #[error("GetStatus on coordinator {url} failed")]
    Status {
        url: String,
        #[source]
        source: tonic::Status,
    },
    #[error(
        "--version {pinned} is not published: the latest version of coordinator {url} is {latest}"
    )]
    NotPublished {
        pinned: ModelVersion,
        url: String,
        latest: ModelVersion,
    },
    #[error("coordinator {url} refused to download version {version}")]
    DownloadRefused {
        url: String,
        version: ModelVersion,
        #[source]
        source: tonic::Status,
    },
    #[error("coordinator {url} sent no model header in time")]
    HeaderTimeout { url: String },
    #[error("download of version {version} failed")]
    DownloadStream {
        version: ModelVersion,
        #[source]
        source: tonic::Status,
    },
    #[error("coordinator {url}: the download of version {version} did not start with its header")]
    NoHeader { url: String, version: ModelVersion },
    #[error("download of model version {version} from {url} took longer than {timeout_secs}s")]
    DownloadTimeout {
        version: ModelVersion,
        url: String,
        timeout_secs: u64,
    },
    #[error("failed to download model version {version} from coordinator {url}")]
    Download {
        version: ModelVersion,
        url: String,
        #[source]
        source: DownloadError,
    },
    #[error("failed to cache model version {version} in --cache-dir {}", directory.display())]
    CacheModel {
        version: ModelVersion,
        directory: PathBuf,
        #[source]
        source: CoreError,
    },
    #[error("coordinator {url}: the model card of version {version} is not valid")]
    PublishedCard {
        url: String,
        version: ModelVersion,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "coordinator {url}: the model card of version {version} describes version {card_version} with sha256 {card_sha256}, the download header says sha256 {header_sha256}"
    )]
    PublishedCardMismatch {
        url: String,
        version: ModelVersion,
        card_version: u64,
        card_sha256: String,
        header_sha256: String,
    },
    #[error("coordinator {url}: the feature schema in the card of version {version}")]
    PublishedSchema {
        url: String,
        version: ModelVersion,
        #[source]
        source: SchemaError,
    },
    #[error(
        "coordinator {url}: the card of version {version} holds a feature schema with sha256 {actual}, and says {expected}"
    )]
    PublishedSchemaSha256 {
        url: String,
        version: ModelVersion,
        expected: String,
        actual: String,
    },

    // Output.
    #[error("failed to write verdicts")]
    WriteVerdicts(#[source] io::Error),

    /// A blocking task that panicked or was cancelled; `task` names it
    /// ("loading the model", "the scoring thread").
    #[error("{task} failed")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// Client TLS files that cannot be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A model file that cannot be read, or a network that cannot be built or run.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A sink that cannot be opened or written.
    #[error(transparent)]
    Sink(#[from] crate::sinks::SinkError),
    /// The metrics address cannot be listened on.
    #[error("failed to listen for metrics on {address}: {source}")]
    MetricsListen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Result with [`DetectorError`].
pub type Result<T> = std::result::Result<T, DetectorError>;
