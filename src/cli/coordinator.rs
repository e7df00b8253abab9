//! Flags of `fedshield coordinator`, its TLS listeners' limits among them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fedshield_coordinator::ParticipantsPerRound;
use fedshield_proto::tls::ListenerLimits;

use super::model::ModelArgs;
use super::parsers::existing_file;
use super::privacy::DpArgs;
use super::tokens::CoordinatorCommand;

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
    pub aggregation: fedshield_core::aggregation::robust::AggregationRule,
    /// Secure aggregation (SecAgg+): participants clip, quantize and mask their updates, and
    /// the coordinator learns only their sum, even when some drop out after masking. With
    /// --org-dp-epsilon, each participant adds its share of distributed discrete Gaussian
    /// noise, so the organization-level guarantee holds against the coordinator too. Needs
    /// --aggregation fedavg (rules that inspect single updates cannot see masked ones).
    #[arg(long)]
    pub secure_aggregation: bool,
    /// L2 norm each participant clips its whole update to before quantizing it for secure
    /// aggregation, when --org-dp-epsilon is not given (with it, --org-dp-clip-norm is the bound).
    #[arg(long, default_value_t = fedshield_core::plan::DEFAULT_SECURE_AGGREGATION_CLIP_NORM, requires = "secure_aggregation")]
    pub secure_aggregation_clip_norm: f64,
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
