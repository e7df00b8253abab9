//! Command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fedshield_coordinator::ParticipantsPerRound;
use fedshield_proto::tls::ListenerLimits;

/// fedshield: train a shared threat-detection model on private security
/// telemetry, with federated learning over gRPC.
#[derive(Debug, Parser)]
#[command(name = "fedshield", version, about)]
pub struct Cli {
    /// Log format: human-readable text, or one JSON object per line (for log
    /// collectors). Levels come from RUST_LOG (e.g. `info`, `fedshield_coordinator=debug`).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "FEDSHIELD_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator: accept participants, run rounds, publish models (or `coordinator tokens create|list|revoke`).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Coordinator(Box<CoordinatorArgs>),
    /// Run a participant: train locally, send model updates (or `participant budget`: its privacy spend).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Participant(ParticipantArgs),
    /// Run a whole federation on 127.0.0.1 with synthetic telemetry.
    Demo(DemoArgs),
    /// Write synthetic network-flow telemetry (CSV or JSONL) and its schema.
    Synth(SynthArgs),
    /// Train a model centrally on one dataset (the non-federated baseline).
    Train(TrainArgs),
    /// Evaluate a model on a labelled dataset.
    Evaluate(EvaluateArgs),
    /// Plan differential privacy: ε of a DP-SGD run, or the noise a target ε needs.
    Privacy(PrivacyArgs),
    /// Create TLS certificates: a CA, the coordinator's server certificate, participants' client certificates.
    Certs(CertsArgs),
    /// Score live events (CSV or JSONL) with a published model: one JSON verdict per event on stdout.
    Detect(DetectArgs),
    /// Benchmarks of whole federations on 127.0.0.1 (`bench rounds`: round overhead at scale).
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Round overhead: a coordinator and K participant processes on 127.0.0.1 move a model of P
    /// float32 parameters through a warm-up round and R timed rounds with a no-op local step.
    Rounds(BenchRoundsArgs),
    /// The coordinator process of `bench rounds` (started by it).
    #[command(hide = true)]
    CoordinatorNode(BenchCoordinatorNodeArgs),
    /// A participant process of `bench rounds` (started by it).
    #[command(hide = true)]
    ParticipantNode(BenchParticipantNodeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BenchRoundsArgs {
    /// Number of participant processes (K).
    #[arg(long, default_value_t = 2)]
    pub participants: usize,
    /// Number of float32 parameters of the model (P).
    #[arg(long, default_value_t = 100_000)]
    pub params: u32,
    /// Timed rounds (R), after one warm-up round.
    #[arg(long, default_value_t = 3)]
    pub rounds: u64,
    /// Mutual TLS between the coordinator and the participants, with a CA made for the run.
    #[arg(long)]
    pub tls: bool,
    /// Also time moving the same bytes over plain TCP and TLS sockets on 127.0.0.1.
    #[arg(long)]
    pub baseline: bool,
    /// Updates the coordinator receives at once (each holds one model-sized buffer).
    #[arg(long, default_value_t = 2)]
    pub max_concurrent_uploads: usize,
    /// Directory for certificates and the nodes' data (default: a new one under the system temp dir, removed at the end).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BenchCoordinatorNodeArgs {
    /// The run's directory (certificates under pki/, data under coordinator/).
    #[arg(long)]
    pub work_dir: PathBuf,
    #[arg(long)]
    pub participants: usize,
    #[arg(long)]
    pub params: u32,
    /// Rounds to run in all, warm-up included.
    #[arg(long)]
    pub rounds: u64,
    #[arg(long)]
    pub tls: bool,
    #[arg(long, default_value_t = 2)]
    pub max_concurrent_uploads: usize,
}

#[derive(Debug, Clone, Args)]
pub struct BenchParticipantNodeArgs {
    /// The run's directory (certificates under pki/, data under participant-<id>/).
    #[arg(long)]
    pub work_dir: PathBuf,
    /// The coordinator's URL.
    #[arg(long)]
    pub coordinator: String,
    /// Participant id (its certificate is pki/<id>.pem).
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub tls: bool,
    /// What the no-op local step adds to every parameter.
    #[arg(long, default_value_t = 1e-3)]
    pub increment: f32,
}

#[derive(Debug, Args)]
pub struct PrivacyArgs {
    #[command(subcommand)]
    pub command: PrivacyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Prints ε of DP-SGD with Poisson sampling rate Q, noise multiplier S and T steps, at δ.
    Epsilon(EpsilonArgs),
    /// Prints the smallest noise multiplier σ that keeps T steps at sampling rate Q within (ε, δ).
    Sigma(SigmaArgs),
}

#[derive(Debug, Args)]
pub struct EpsilonArgs {
    /// Poisson sampling rate q (expected batch size / dataset size), in [0, 1].
    #[arg(long)]
    pub q: f64,
    /// Noise multiplier σ (noise standard deviation / clipping norm).
    #[arg(long)]
    pub sigma: f64,
    /// Number of DP-SGD steps.
    #[arg(long)]
    pub steps: u64,
    /// δ.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SigmaArgs {
    /// Poisson sampling rate q, in [0, 1].
    #[arg(long)]
    pub q: f64,
    /// Number of DP-SGD steps.
    #[arg(long)]
    pub steps: u64,
    /// Target ε.
    #[arg(long)]
    pub epsilon: f64,
    /// δ.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Differential privacy of a federation, as its operator sets it.
#[derive(Debug, Clone, Args)]
pub struct DpArgs {
    /// Record-level ε each participant's data gets over all rounds (needs --rounds); enables DP-SGD.
    #[arg(long, value_parser = epsilon, env = "FEDSHIELD_DP_EPSILON")]
    pub dp_epsilon: Option<f64>,
    /// δ of the record-level (and organization-level) guarantee.
    #[arg(long, value_parser = delta, default_value_t = 1e-5, requires = "dp_epsilon")]
    pub dp_delta: f64,
    /// DP-SGD per-example gradient clipping norm C.
    #[arg(long, value_parser = clip_norm, default_value_t = 1.0, requires = "dp_epsilon")]
    pub dp_clip_norm: f64,
    /// DP-SGD public minimum data size N_min: σ is calibrated for the largest sampling rate B/N_min
    /// (B = --batch-size, the expected examples per step), participants with fewer records decline,
    /// and T = ⌈local_epochs · N_min / B⌉ steps per round.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), default_value_t = 4000, requires = "dp_epsilon")]
    pub dp_min_records: u64,
    /// Organization-level ε over all rounds: each whole update is clipped and noised too.
    #[arg(long, value_parser = epsilon, requires = "dp_epsilon")]
    pub org_dp_epsilon: Option<f64>,
    /// Organization-level clipping norm S of a whole update.
    #[arg(long, value_parser = clip_norm, default_value_t = 1.0, requires = "org_dp_epsilon")]
    pub org_dp_clip_norm: f64,
}

/// A participant's privacy budget.
#[derive(Debug, Clone, Args)]
pub struct BudgetArgs {
    /// Record-level ε this participant may spend over its lifetime; with it, rounds without DP are declined.
    #[arg(long, value_parser = epsilon, env = "FEDSHIELD_PRIVACY_EPSILON")]
    pub privacy_epsilon: Option<f64>,
    /// δ the participant accounts with.
    #[arg(long, value_parser = delta, env = "FEDSHIELD_PRIVACY_DELTA", default_value_t = 1e-5)]
    pub privacy_delta: f64,
    /// Organization-level ε this participant may spend.
    #[arg(
        long,
        value_parser = epsilon,
        env = "FEDSHIELD_PRIVACY_ORG_EPSILON",
        requires = "privacy_epsilon"
    )]
    pub privacy_org_epsilon: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub enum ParticipantCommand {
    /// Prints the privacy spent so far (from the ledger in --data-dir) and what is left of the budget.
    Budget(ParticipantBudgetArgs),
}

#[derive(Debug, Args)]
pub struct ParticipantBudgetArgs {
    /// The participant's data directory (holds its privacy ledger).
    #[arg(
        long,
        env = "FEDSHIELD_DATA_DIR",
        default_value = "fedshield-data/participant"
    )]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Which detection model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// MLP classifier, attack vs benign.
    Classifier,
    /// MLP classifier over benign and the schema's attack classes.
    Multiclass,
    /// Autoencoder trained on benign traffic; scores are reconstruction errors.
    Autoencoder,
}

/// Output format of `fedshield synth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output file (the schema is written next to it as <stem>.schema.toml unless --schema-out is given).
    #[arg(long)]
    pub out: PathBuf,
    /// File format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: SynthFormat,
    /// Organization profile (0, 1, 2, ...): each sees different benign traffic and attack mix.
    #[arg(long, default_value_t = 0)]
    pub org: usize,
    /// Mix every benign profile and attack family evenly (for held-out test sets) instead of one organization's.
    #[arg(long, conflicts_with = "org")]
    pub balanced: bool,
    /// Number of flow records.
    #[arg(long, default_value_t = 10_000)]
    pub records: usize,
    /// Seed; the same seed gives the same records.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write the schema.
    #[arg(long)]
    pub schema_out: Option<PathBuf>,
}

/// A labelled dataset on disk and the schema to read it with.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// CSV or JSONL file of telemetry records.
    #[arg(long)]
    pub data: PathBuf,
    /// Schema (TOML) describing the file's columns.
    #[arg(long)]
    pub schema: PathBuf,
    /// Read at most this many rows.
    #[arg(long)]
    pub max_rows: Option<usize>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Labelled test file (same schema); without it a random --test-fraction of --data is held out.
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Fraction of --data held out for testing when --test-data is absent.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Passes over the training data.
    #[arg(long, default_value_t = 10)]
    pub epochs: u32,
    /// Where to write the trained model (safetensors).
    #[arg(long, default_value = "fedshield-data/centralized.safetensors")]
    pub out: PathBuf,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Model file (safetensors, as published by the coordinator or written by `fedshield train`).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Score threshold (classifier scores are log-odds of attack); defaults to 0 (P = 0.5) for classifiers, and for autoencoders to the
    /// model's stored threshold or else the one that flags --target-fpr of this data's benign rows.
    #[arg(long)]
    pub threshold: Option<f64>,
    /// False-positive rate autoencoder thresholds are calibrated to.
    #[arg(long, default_value_t = 0.01)]
    pub target_fpr: f64,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Model and training plan flags shared by the coordinator and the demo.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Which model to train.
    #[arg(long, value_enum, default_value = "classifier")]
    pub model_kind: ModelKind,
    /// Hidden layer widths, comma-separated (for the autoencoder: the encoder, ending in the bottleneck).
    #[arg(long, value_delimiter = ',', default_value = "64,32")]
    pub hidden: Vec<u32>,
    /// Seed of the initial model.
    #[arg(long, default_value_t = 1)]
    pub init_seed: u64,
    /// Local passes over each participant's data per round.
    #[arg(long, default_value_t = 1)]
    pub local_epochs: u32,
    /// Examples per local gradient step (under DP: the expected batch size B of each Poisson sample).
    #[arg(long, default_value_t = 64)]
    pub batch_size: u32,
    /// Learning rate of local SGD.
    #[arg(long, default_value_t = 0.1)]
    pub learning_rate: f32,
    /// Upper bound on local gradient steps per round (0 = none).
    #[arg(long, default_value_t = 0)]
    pub max_local_steps: u32,
    /// L2 penalty (weight decay) of local SGD (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
}

#[derive(Debug, Subcommand)]
pub enum CoordinatorCommand {
    /// Issues a bearer token for the HTTPS model downloads and prints it (once); only its sha256 is stored (the same as `tokens create`).
    IssueToken(IssueTokenArgs),
    /// The HTTPS endpoint's bearer tokens: create, list, revoke.
    Tokens(TokensArgs),
}

#[derive(Debug, Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    pub command: TokensCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issues a bearer token named NAME and prints it (once); only its sha256 is stored.
    Create(TokenCreateArgs),
    /// Lists the tokens: name, when issued, when they expire, and whether they are active, expired or revoked (never the secrets).
    List(TokenFileArgs),
    /// Revokes the token named NAME: refused from the next request on, and its dashboard sessions end.
    Revoke(TokenRevokeArgs),
}

/// Where the token file is.
#[derive(Debug, Clone, Args)]
pub struct TokenFileArgs {
    /// The coordinator's data directory (the token file is <data-dir>/api-tokens.toml unless --api-tokens is given).
    #[arg(
        long,
        env = "FEDSHIELD_DATA_DIR",
        default_value = "fedshield-data/coordinator"
    )]
    pub data_dir: PathBuf,
    /// The token file.
    #[arg(long, env = "FEDSHIELD_API_TOKENS")]
    pub api_tokens: Option<PathBuf>,
}

/// How long a new token is valid.
#[derive(Debug, Clone, Args)]
pub struct TokenLifetimeArgs {
    /// Days until the token expires.
    #[arg(long, default_value_t = fedshield_coordinator::tokens::DEFAULT_TOKEN_LIFETIME_DAYS, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub expires_in_days: u64,
    /// The token never expires (until revoked).
    #[arg(long, conflicts_with = "expires_in_days")]
    pub no_expiry: bool,
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// A name for the holder, e.g. the detector's host; shown in the coordinator's logs.
    pub name: String,
    #[command(flatten)]
    pub file: TokenFileArgs,
    #[command(flatten)]
    pub lifetime: TokenLifetimeArgs,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The name of the token to revoke.
    pub name: String,
    #[command(flatten)]
    pub file: TokenFileArgs,
}

#[derive(Debug, Args)]
pub struct IssueTokenArgs {
    /// The coordinator's data directory (the token file is <data-dir>/api-tokens.toml unless --api-tokens is given).
    #[arg(
        long,
        env = "FEDSHIELD_DATA_DIR",
        default_value = "fedshield-data/coordinator"
    )]
    pub data_dir: PathBuf,
    /// The token file.
    #[arg(long)]
    pub api_tokens: Option<PathBuf>,
    /// A name for the holder, e.g. the detector's host; shown in the coordinator's logs.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub lifetime: TokenLifetimeArgs,
}

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    #[command(subcommand)]
    pub command: Option<CoordinatorCommand>,
    /// Config file (TOML) of this role's settings: keys are the flags without dashes
    /// (`tls_cert = "..."`); flags and FEDSHIELD_* environment variables override it.
    #[arg(long, value_parser = existing_file)]
    pub config: Option<PathBuf>,
    /// Print the effective settings (as a config file) and exit without starting anything.
    #[arg(long)]
    pub print_config: bool,
    /// Address to listen on for gRPC.
    #[arg(long, env = "FEDSHIELD_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// The coordinator's state directory (open round, round history, API tokens) and, by default, its model versions (<data-dir>/models).
    #[arg(
        long,
        env = "FEDSHIELD_DATA_DIR",
        default_value = "fedshield-data/coordinator"
    )]
    pub data_dir: PathBuf,
    /// Where published model versions are stored: a directory, file:///path, or s3://bucket/prefix for S3-compatible storage (credentials, region and endpoint from the AWS_* environment variables).
    #[arg(long, env = "FEDSHIELD_ARTIFACT_STORE", value_name = "URL")]
    pub artifact_store: Option<String>,
    /// Connected participants needed before a round opens.
    #[arg(long, default_value_t = 2)]
    pub min_participants: usize,
    /// Participants sampled per round: a count (8), a fraction (0.5) or a percentage (50%).
    #[arg(long, default_value = "100%")]
    pub participants_per_round: ParticipantsPerRound,
    /// Accepted updates needed to publish a round.
    #[arg(long, default_value_t = 2)]
    pub quorum: usize,
    /// Seconds from announcement to the round's deadline.
    #[arg(long, default_value_t = 120)]
    pub round_deadline_secs: u64,
    /// Total rounds the federation publishes, counted over its whole history (a restarted
    /// coordinator continues the count). After the last one, participants are told the federation
    /// is complete and exit 0, and so does the coordinator unless --keep-serving. Default: run
    /// until stopped.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: Option<u64>,
    /// After the last of --rounds, keep serving model downloads, status, metrics and the
    /// dashboard until stopped, instead of exiting.
    #[arg(long, requires = "rounds")]
    pub keep_serving: bool,
    /// Seconds a graceful stop (SIGINT, SIGTERM, or the end of --rounds) may take to let
    /// connections finish; then the coordinator stops anyway. A second signal stops it at once.
    #[arg(long, default_value_t = crate::shutdown::DEFAULT_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
    /// Server momentum β (FedAvgM); 0 is plain FedAvg. Helps when organizations' data differ a lot.
    #[arg(long, default_value_t = 0.0)]
    pub server_momentum: f32,
    /// Server learning rate η (FedAvgM); 1 is plain FedAvg.
    #[arg(long, default_value_t = 1.0)]
    pub server_learning_rate: f32,
    /// How updates are combined: fedavg, norm-bound:<max_norm>, trimmed-mean:<fraction>, median,
    /// or multi-krum:<f>[:<m>] (the last three need --quorum large enough to out-vote f attackers).
    #[arg(long, env = "FEDSHIELD_AGGREGATION", default_value = "fedavg")]
    pub aggregation: fedshield_core::robust::AggregationRule,
    /// Most training examples one update may declare (its num_samples); a header declaring more,
    /// or 0, is refused with INVALID_ARGUMENT. Rounds with DP accept exactly 1. At most 2^40.
    #[arg(long, default_value_t = fedshield_coordinator::weighting::DEFAULT_MAX_SAMPLES_PER_UPDATE)]
    pub max_samples_per_update: u64,
    /// Cap on one update's weight in the average: it weighs min(num_samples, this), so a
    /// participant lying about its size gains at most this; 1 weighs every update the same.
    #[arg(long, default_value_t = fedshield_coordinator::weighting::DEFAULT_MAX_UPDATE_WEIGHT)]
    pub max_update_weight: u64,
    /// Schema (TOML) of the federation's telemetry; fixes the model's inputs and
    /// classes and travels in every model card. Default: the built-in synthetic flows schema.
    #[arg(long, value_parser = existing_file)]
    pub schema: Option<PathBuf>,
    /// Labelled evaluation file (read with --schema) scored after every round;
    /// its metrics go into the model card. Must not be any participant's private data.
    #[arg(long, value_parser = existing_file, requires = "schema")]
    pub eval_data: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub dp: DpArgs,
    /// Start even when the privacy flags weaken the differential privacy of the stored model
    /// (no --dp-epsilon, a larger --dp-epsilon or --dp-delta, no --org-dp-epsilon, or a plan that
    /// composes with the rounds already run to more than the stored ε); otherwise that is refused.
    /// Logged as a warning and recorded in every model card from then on (docs/PRIVACY.md).
    #[arg(long)]
    pub accept_weaker_privacy: bool,
    /// The coordinator's certificate chain (PEM), from `fedshield certs server`.
    #[arg(long, value_parser = existing_file, env = "FEDSHIELD_TLS_CERT", required_unless_present = "insecure")]
    pub tls_cert: Option<PathBuf>,
    /// The coordinator's private key (PEM).
    #[arg(long, value_parser = existing_file, env = "FEDSHIELD_TLS_KEY", required_unless_present = "insecure")]
    pub tls_key: Option<PathBuf>,
    /// The CA participants' client certificates must chain to (PEM), from `fedshield certs ca`.
    #[arg(
        long,
        value_parser = existing_file,
        env = "FEDSHIELD_TLS_CLIENT_CA",
        required_unless_present = "insecure"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Participant registry (TOML): who may join, by certificate subject, and revocations; re-read when it changes.
    #[arg(
        long,
        value_parser = existing_file,
        env = "FEDSHIELD_PARTICIPANTS",
        required_unless_present = "insecure"
    )]
    pub participants: Option<PathBuf>,
    /// Serve plaintext gRPC and trust participants' declared ids. For local experiments only.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_client_ca", "participants"])]
    pub insecure: bool,
    /// Also serve HTTPS here: model downloads (GET /v1/models/latest, /v1/models/{v}, /v1/models/{v}/card), GET /v1/status, GET /metrics and the live dashboard (/dashboard, sign in with a token in its form).
    #[arg(long, env = "FEDSHIELD_HTTPS_LISTEN", conflicts_with = "insecure")]
    pub https_listen: Option<SocketAddr>,
    /// Also serve Prometheus metrics over plain HTTP here (GET /metrics), for a scraper on a private network. No TLS and no authentication: it carries only counts, sizes and durations (no keys, tokens or telemetry). Default: none.
    #[arg(long, env = "FEDSHIELD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer tokens for the HTTPS downloads (default: <data-dir>/api-tokens.toml; `coordinator tokens create` adds one).
    #[arg(long, env = "FEDSHIELD_API_TOKENS")]
    pub api_tokens: Option<PathBuf>,
    /// A dashboard session ends this many seconds after sign-in.
    #[arg(long, default_value_t = fedshield_coordinator::dashboard_sessions::DEFAULT_SESSION_MAX_AGE_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub dashboard_session_secs: u64,
    /// A dashboard session ends after this many seconds without a request.
    #[arg(long, default_value_t = fedshield_coordinator::dashboard_sessions::DEFAULT_SESSION_IDLE_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub dashboard_idle_secs: u64,
    #[command(flatten)]
    pub listener: ListenerArgs,
}

/// Caps and timeouts of the coordinator's TLS listeners (gRPC and HTTPS
/// together), against floods of idle, slow or half-open connections.
#[derive(Debug, Args)]
pub struct ListenerArgs {
    /// Seconds a client has from TCP connect to a completed TLS handshake; slower ones are closed.
    #[arg(long, default_value_t = ListenerLimits::default().handshake_timeout.as_secs())]
    pub handshake_timeout_secs: u64,
    /// TLS handshakes in flight at once over all clients; past it, a new connection evicts the oldest handshake of the source IP with the most.
    #[arg(long, default_value_t = ListenerLimits::default().max_handshakes)]
    pub max_handshakes: usize,
    /// TLS handshakes in flight at once from one IP; past it, a new one evicts that IP's oldest.
    #[arg(long, default_value_t = ListenerLimits::default().max_handshakes_per_ip)]
    pub max_handshakes_per_ip: usize,
    /// Established TLS connections at once over all clients; more are closed at once. Lowered at start to fit the open-file limit (ulimit -n).
    #[arg(long, default_value_t = ListenerLimits::default().max_connections)]
    pub max_connections: usize,
    /// Established TLS connections at once from one IP; more are closed at once.
    #[arg(long, default_value_t = ListenerLimits::default().max_connections_per_ip)]
    pub max_connections_per_ip: usize,
    /// Seconds without a byte either way after which a connection is closed (gRPC pings quiet clients every third of it).
    #[arg(long, default_value_t = ListenerLimits::default().idle_timeout.as_secs())]
    pub idle_timeout_secs: u64,
    /// HTTPS: seconds a client has to send a request's headers, after the handshake or the previous response.
    #[arg(long, default_value_t = ListenerLimits::default().header_read_timeout.as_secs())]
    pub header_read_timeout_secs: u64,
}

impl ListenerArgs {
    /// Returns the listener limits the flags describe.
    pub fn limits(&self) -> ListenerLimits {
        ListenerLimits {
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs),
            max_handshakes: self.max_handshakes,
            max_handshakes_per_ip: self.max_handshakes_per_ip,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
        }
    }
}

#[derive(Debug, Args)]
pub struct ParticipantArgs {
    #[command(subcommand)]
    pub command: Option<ParticipantCommand>,
    /// Config file (TOML) of this role's settings: keys are the flags without dashes
    /// (`tls_cert = "..."`); flags and FEDSHIELD_* environment variables override it.
    #[arg(long, value_parser = existing_file)]
    pub config: Option<PathBuf>,
    /// Print the effective settings (as a config file) and exit without starting anything.
    #[arg(long)]
    pub print_config: bool,
    /// The coordinator's gRPC URL.
    #[arg(
        long,
        env = "FEDSHIELD_COORDINATOR",
        default_value = "https://127.0.0.1:7070"
    )]
    pub coordinator: String,
    /// This participant's identity (letters, digits, '.', '_', '-').
    #[arg(long, env = "FEDSHIELD_PARTICIPANT_ID", required = true)]
    pub id: Option<String>,
    /// Directory for the model cache.
    #[arg(
        long,
        env = "FEDSHIELD_DATA_DIR",
        default_value = "fedshield-data/participant"
    )]
    pub data_dir: PathBuf,
    /// Organization profile of the synthetic telemetry to train on (0, 1, 2, ...).
    #[arg(long, default_value_t = 0)]
    pub synthetic_org: usize,
    /// Seed of the synthetic telemetry.
    #[arg(long, default_value_t = 1)]
    pub synthetic_seed: u64,
    /// Number of synthetic flow records.
    #[arg(long, default_value_t = 5000)]
    pub synthetic_records: usize,
    /// Train on this CSV or JSONL file instead of synthetic telemetry (needs --schema).
    #[arg(long, value_parser = existing_file, requires = "schema")]
    pub data: Option<PathBuf>,
    /// Schema (TOML) of --data.
    #[arg(long, value_parser = existing_file, requires = "data")]
    pub schema: Option<PathBuf>,
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// The CA the coordinator's certificate chains to (PEM).
    #[arg(long, value_parser = existing_file, env = "FEDSHIELD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This participant's client certificate (PEM), from `fedshield certs participant`; its subject must be --id.
    #[arg(long, value_parser = existing_file, env = "FEDSHIELD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This participant's private key (PEM).
    #[arg(long, value_parser = existing_file, env = "FEDSHIELD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The name the coordinator's certificate must carry (default: the host of --coordinator).
    #[arg(long, env = "FEDSHIELD_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Connect in plaintext (an http:// coordinator started with --insecure). For local experiments only.
    #[arg(long, conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    pub insecure: bool,
    /// Serve Prometheus metrics over plain HTTP here (GET /metrics), for a scraper on a private network. No TLS and no authentication: it carries only counts, sizes, durations and the ledger's total epsilon (no keys or telemetry). Default: none.
    #[arg(long, env = "FEDSHIELD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds a graceful stop (SIGINT or SIGTERM) may take (declining an open round, ending
    /// training after its current step); then the participant stops anyway. A second signal
    /// stops it at once.
    #[arg(long, default_value_t = crate::shutdown::DEFAULT_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of participants (organizations).
    #[arg(long, default_value_t = 4)]
    pub participants: usize,
    /// Rounds to run.
    #[arg(long, default_value_t = 10)]
    pub rounds: u64,
    /// Synthetic flow records per participant.
    #[arg(long, default_value_t = 4000)]
    pub records: usize,
    /// Records in the held-out evaluation set.
    #[arg(long, default_value_t = 6000)]
    pub held_out_records: usize,
    /// Directory the coordinator writes model versions to.
    #[arg(long, default_value = "fedshield-data/demo")]
    pub data_dir: PathBuf,
    /// Seed of the synthetic telemetry.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub dp: DpArgs,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Writes a new CA to OUT_DIR/ca.pem and OUT_DIR/ca.key.
    Ca(CertsCaArgs),
    /// Writes the coordinator's certificate, signed by the CA, to OUT_DIR/server.pem and OUT_DIR/server.key.
    Server(CertsServerArgs),
    /// Writes a participant's client certificate (CN = its id) to OUT_DIR/<ID>.pem and OUT_DIR/<ID>.key and prints its SHA-256 fingerprint. Detectors get the same kind of certificate (`certs detector`); the registry entry's `role` decides what it may do.
    #[command(visible_alias = "detector")]
    Participant(CertsParticipantArgs),
}

#[derive(Debug, Args)]
pub struct CertsCaArgs {
    /// Directory to write ca.pem and ca.key to (created if absent).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Subject common name of the CA.
    #[arg(long, default_value = "fedshield CA")]
    pub name: String,
    /// Overwrite existing files (the old CA can then no longer issue certificates).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("server_names").required(true).multiple(true).args(["dns", "ip"])))]
pub struct CertsServerArgs {
    /// Directory holding the CA's ca.pem and ca.key.
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// Directory to write server.pem and server.key to (created if absent).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// DNS name participants use to reach the coordinator (repeatable); the first is the subject CN.
    #[arg(long)]
    pub dns: Vec<String>,
    /// IP address participants use to reach the coordinator (repeatable).
    #[arg(long)]
    pub ip: Vec<std::net::IpAddr>,
    /// Days the certificate stays valid.
    #[arg(long, default_value_t = 825, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CertsParticipantArgs {
    /// Directory holding the CA's ca.pem and ca.key.
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// Directory to write <ID>.pem and <ID>.key to (created if absent).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// The participant's identity (letters, digits, '.', '_', '-'): the certificate's subject CN.
    #[arg(long)]
    pub id: String,
    /// Days the certificate stays valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Input format of `fedshield detect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    Csv,
    Jsonl,
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
    /// Seconds between checks for a newer model version with --follow.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_secs: u64,
    /// Events scored per forward pass (output is flushed after every batch, and whenever input pauses).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch_size: u64,
}

/// Parses a path to a file that must exist (a certificate, a key, a schema, data).
pub fn existing_file(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    if path.is_file() {
        Ok(path)
    } else if path.exists() {
        Err(format!("{value} is not a file"))
    } else {
        Err(format!("file {value} does not exist"))
    }
}

/// Parses a number that must be finite and greater than 0; `name` names it in errors.
fn positive(name: &str, value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(number) if number.is_finite() && number > 0.0 => Ok(number),
        Ok(_) => Err(format!("{name} is {value}, must be finite and positive")),
        Err(error) => Err(format!("{name} is {value}, not a number: {error}")),
    }
}

/// Parses an ε: finite and greater than 0.
pub fn epsilon(value: &str) -> Result<f64, String> {
    positive("epsilon", value)
}

/// Parses a clipping norm: finite and greater than 0.
pub fn clip_norm(value: &str) -> Result<f64, String> {
    positive("clip norm", value)
}

/// Parses a δ: in (0, 1).
pub fn delta(value: &str) -> Result<f64, String> {
    let number = positive("delta", value)?;
    if number < 1.0 {
        Ok(number)
    } else {
        Err(format!("delta is {value}, must be in (0, 1)"))
    }
}
