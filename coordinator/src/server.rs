//! Starting and stopping a coordinator: model registry, round engine and
//! gRPC server on a listener the caller bound.

use std::net::SocketAddr;
use std::sync::Arc;

use fedshield_core::card::ModelCard;
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::{CoreError, ModelVersion};
use fedshield_proto::v1::federation_server::FederationServer;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use fedshield_proto::tls::{ConnectionTracker, ListenerCounts, ListenerLimits, serve_tls_incoming};
use tracing::{info, warn};

use crate::participants::SharedRegistry;

use crate::artifacts::ArtifactStore;
use crate::config::CoordinatorConfig;
use crate::engine::Engine;
use crate::error::{CoordinatorError, Result, ServerError};
use crate::lineage::check_privacy_lineage;
use crate::registry::{ModelRegistry, PublishedModel};
use crate::service::{FederationService, ServiceSettings};

/// HTTP/2 receive window of each stream (update upload). Participants
/// reserve an upload slot (`ReserveUploadSlot`) before they upload, so an
/// upload normally starts only once it is being read, and the window sets
/// its speed: against 128 KiB, rounds of 2 and 8 participants × 10M
/// parameters took 8–10% less time (docs/BENCHMARKS.md). An upload that
/// comes without a slot (a client that does not reserve one) waits for a
/// slot with up to this much of it buffered by the transport.
pub const RECEIVE_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;

/// HTTP/2 receive window of each connection (one participant): its one
/// upload plus small calls. Also what bounds the memory a participant's
/// connection can make the coordinator buffer, whatever it sends.
pub const RECEIVE_CONNECTION_WINDOW_BYTES: u32 = 2 * 1024 * 1024;

/// Returns how often the gRPC server pings a connection that is quiet
/// (and how long it waits for the answer): a third of the idle timeout, so
/// that a live client answers well before its connection counts as idle,
/// and a dead one is dropped.
fn grpc_keepalive_interval(limits: &ListenerLimits) -> Duration {
    (limits.idle_timeout / 3).max(Duration::from_millis(100))
}

/// A running coordinator.
pub struct CoordinatorHandle {
    engine: Engine,
    local_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    /// Handshakes and connections of the TLS listeners.
    connection_tracker: Arc<ConnectionTracker>,
    shutdown: CancellationToken,
    server: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    driver: JoinHandle<()>,
}

impl CoordinatorHandle {
    /// Returns the round engine, for status and publication events.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Returns the address the HTTPS download endpoint listens on, if any.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// Returns what the TLS listeners hold now and how many connections
    /// they shed (refused, evicted, timed out, closed idle).
    pub fn listener_counts(&self) -> ListenerCounts {
        self.connection_tracker.counts()
    }

    /// Returns the address the gRPC server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the coordinator and waits until its tasks have ended.
    ///
    /// # Errors
    /// The server's transport error, if it failed.
    pub async fn stop(self) -> std::result::Result<(), ServerError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the coordinator stopped (its shutdown token was cancelled).
    ///
    /// # Errors
    /// The server's transport error, if it failed.
    pub async fn wait(self) -> std::result::Result<(), ServerError> {
        let server_result = self.server.await;
        let _ = self.driver.await;
        match server_result {
            Ok(result) => result.map_err(|error| ServerError::Transport(error.to_string())),
            Err(error) => Err(ServerError::Transport(error.to_string())),
        }
    }
}

/// Loads the latest published model from the registry, or creates and
/// stores version 0. First repairs what a crash may have left: a torn
/// latest version (its card without its weights, never announced) is
/// removed, and the round history gets the records of announced versions
/// it lacks (see the registry's commit protocol).
///
/// # Errors
/// [`CoordinatorError::Store`] if the stored model is corrupt or unwritable,
/// or if it does not match the configured architecture.
pub async fn load_or_init_model(
    config: &CoordinatorConfig,
    registry: &ModelRegistry,
) -> Result<PublishedModel> {
    registry.recover_torn_latest().await?;
    if let Some(version) = registry.latest_version().await? {
        let model = registry.load(version).await?;
        if model.weights.spec != config.model {
            return Err(CoordinatorError::Store(CoreError::InvalidSpec(format!(
                "stored model version {version} has architecture {:?}, the configuration asks for {:?}; use a new data directory",
                model.weights.spec, config.model
            ))));
        }
        if let Err(error) = registry.recover_round_history(&model.card).await {
            warn!(error = %error, "the round history could not be completed from the model cards");
        }
        info!(version = %version, sha256 = %model.card.sha256, "resuming from stored model");
        return Ok(model);
    }
    let model = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || initial_model(&config))
            .await
            .map_err(|error| CoordinatorError::Store(CoreError::Training(error.to_string())))??
    };
    registry.store(&model).await?;
    info!(num_params = model.weights.params.len(), sha256 = %model.card.sha256, "initial model created");
    Ok(model)
}

/// Returns version 0: freshly initialized weights and their card (with
/// metrics on the evaluation set, if one is configured).
fn initial_model(config: &CoordinatorConfig) -> Result<PublishedModel> {
    let weights = ModelWeights::init(config.model.clone(), config.init_seed)?;
    let card = ModelCard {
        version: 0,
        parent: None,
        sha256: weights.sha256(),
        num_params: weights.params.len() as u64,
        spec: weights.spec.clone(),
        round_id: None,
        contributors: Vec::new(),
        num_examples: 0,
        plan: config.plan.clone(),
        created_unix_ms: fedshield_core::clock::unix_ms_now(),
        feature_schema: config.feature_schema_toml.clone(),
        feature_schema_sha256: match &config.feature_schema_toml {
            Some(toml) => Some(
                fedshield_core::schema::Schema::from_toml_str(toml)
                    .map_err(|error| CoreError::InvalidSpec(format!("feature schema: {error}")))?
                    .sha256(),
            ),
            None => None,
        },
        metrics: match &config.evaluation {
            Some(evaluation) => Some(fedshield_core::model::metrics::evaluate_model(
                &weights, evaluation, None,
            )?),
            None => None,
        },
        privacy: None,
        aggregation: None,
        calibration: match &config.evaluation {
            Some(evaluation) => {
                crate::engine::calibrate_on_evaluation_set(&weights, evaluation, ModelVersion(0))?
            }
            None => None,
        },
    };
    Ok(PublishedModel {
        version: ModelVersion(0),
        weights,
        card,
    })
}

/// Starts a coordinator on `listener`; it runs until `shutdown` is cancelled.
///
/// # Errors
/// Invalid configuration (every problem listed) or a store error.
pub async fn start(
    config: CoordinatorConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<CoordinatorHandle> {
    config
        .validate()
        .map_err(|problems| CoordinatorError::Store(CoreError::InvalidPlan(problems.join("; "))))?;
    // From here on the plan is the one rounds announce, DP noise calibrated.
    let mut config = config;
    config.plan = config.training_plan()?;
    if let (Some(target), Some(dp_sgd)) = (&config.privacy, &config.plan.dp_sgd) {
        info!(
            epsilon = target.epsilon,
            delta = target.delta,
            expected_batch_size = dp_sgd.expected_batch_size,
            min_records = dp_sgd.min_records,
            max_sampling_rate = dp_sgd.max_sampling_rate(),
            steps_per_round = dp_sgd.steps_per_round,
            noise_multiplier = dp_sgd.noise_multiplier,
            clip_norm = dp_sgd.clip_norm,
            "differential privacy calibrated"
        );
    }
    let local_addr = listener.local_addr().map_err(|source| CoreError::Io {
        path: "listener".into(),
        source,
    })?;
    let registry = match &config.artifact_store {
        Some(url) => ModelRegistry::open(&config.data_dir, ArtifactStore::from_url(url)?)?,
        None => ModelRegistry::open_local(&config.data_dir)?,
    };
    info!(artifacts = %registry.artifacts().location(), "model artifact store");
    let initial = load_or_init_model(&config, &registry).await?;
    // As the engine counts them: an unreadable history counts none, so the
    // check assumes every round of `--rounds` is still to run.
    let num_rounds_completed = registry
        .round_history(1)
        .map_or(0, |(_, num_completed, _)| num_completed);
    let lineage = check_privacy_lineage(&config, &initial.card, num_rounds_completed)?;
    let engine = Engine::new(
        config.round.clone(),
        config.plan.clone(),
        registry.clone(),
        Arc::new(initial),
        config.max_concurrent_uploads,
    );
    if let Some(evaluation) = &config.evaluation {
        engine.set_evaluation_set(evaluation.clone());
    }
    if let Some(target) = &config.privacy {
        engine.set_privacy_delta(target.delta);
    }
    engine.set_privacy_lineage(lineage);
    let access = config.tls.as_ref().map(|tls| {
        let shared = SharedRegistry::new(tls.registry.clone());
        if let Some(path) = &tls.registry_path {
            shared.watch(path.clone(), Duration::from_secs(2), shutdown.clone());
        }
        shared
    });
    // One tracker for both ports: the caps hold for the process.
    let connection_tracker = ConnectionTracker::new(config.listener_limits.clone());
    let https_addr = match &config.https {
        Some(https) => {
            let https_listener =
                TcpListener::bind(https.listen)
                    .await
                    .map_err(|source| CoreError::Io {
                        path: format!("https listener {}", https.listen).into(),
                        source,
                    })?;
            let address = https_listener
                .local_addr()
                .map_err(|source| CoreError::Io {
                    path: "https listener".into(),
                    source,
                })?;
            crate::http::serve_https(
                https_listener,
                https.server_config.clone(),
                engine.clone(),
                registry.clone(),
                access.clone(),
                https.tokens_path.clone(),
                https.dashboard_sessions,
                connection_tracker.clone(),
                shutdown.clone(),
            );
            info!(%address, "https model downloads listening");
            Some(address)
        }
        None => None,
    };
    let service = FederationService::new(
        engine.clone(),
        ServiceSettings {
            heartbeat_interval: config.heartbeat_interval,
            chunk_params: config.chunk_params,
            chunk_idle_timeout: config.chunk_idle_timeout,
        },
        shutdown.clone(),
        access,
    );
    let grpc_limit = fedshield_core::model::codec::MAX_CHUNK_BYTES + 64 * 1024;
    let federation = FederationServer::new(service)
        .max_decoding_message_size(grpc_limit)
        .max_encoding_message_size(grpc_limit);
    let server_shutdown = shutdown.clone();
    let router = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(RECEIVE_STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(RECEIVE_CONNECTION_WINDOW_BYTES))
        .tcp_nodelay(true)
        .max_frame_size(Some(fedshield_proto::HTTP2_MAX_FRAME_BYTES))
        .http2_keepalive_interval(Some(grpc_keepalive_interval(&config.listener_limits)))
        .http2_keepalive_timeout(Some(grpc_keepalive_interval(&config.listener_limits)))
        .add_service(federation);
    let server = match &config.tls {
        Some(tls) => {
            let incoming = serve_tls_incoming(
                listener,
                tls.server_config.clone(),
                connection_tracker.clone(),
                server_shutdown.clone(),
            );
            info!(
                num_participants = tls.registry.len(),
                "mutual TLS: clients need a certificate of the participant CA and a registry entry"
            );
            tokio::spawn(
                router.serve_with_incoming_shutdown(incoming, server_shutdown.cancelled_owned()),
            )
        }
        None => {
            warn!(
                "TLS IS OFF: gRPC runs in plaintext and participant ids are not authenticated; \
                 anyone who can reach this port can read updates and impersonate participants"
            );
            tokio::spawn(router.serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                server_shutdown.cancelled_owned(),
            ))
        }
    };
    let driver = tokio::spawn(engine.clone().run(shutdown.clone()));
    info!(%local_addr, "coordinator listening");
    Ok(CoordinatorHandle {
        engine,
        local_addr,
        https_addr,
        connection_tracker,
        shutdown,
        server,
        driver,
    })
}

/// Runs a coordinator on `listener` until `shutdown` is cancelled.
///
/// # Errors
/// Startup errors, or the server's transport error.
pub async fn run(
    config: CoordinatorConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let handle = start(config, listener, shutdown).await?;
    handle.wait().await?;
    Ok(())
}
