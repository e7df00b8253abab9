//! The detector's plain-HTTP listener: `GET /metrics` (the
//! [`DetectorMetrics`] as OpenMetrics text, which Prometheus scrapes) and
//! `GET /healthz` (`200 ok` while the process serves). Anything else
//! answers `404`.
//!
//! No TLS and no authentication: it carries counts, rates and version
//! numbers only, never event data or alert contents. Bind it to localhost
//! or to a cluster-internal address (`--metrics-listen`), never to a
//! public interface.
//!
//! HTTP/1.1 only (what scrapers speak). Each connection is bounded so that
//! a client holding sockets open (slowloris) cannot keep the listener busy:
//! - at most [`MetricsServerLimits::max_connections`] at once; one over the
//!   cap is closed at once, without a reply;
//! - each request's headers (the first request's too, and the wait for a
//!   keep-alive connection's next request) must arrive within
//!   [`MetricsServerLimits::header_read_timeout`];
//! - a connection lives at most [`MetricsServerLimits::connection_lifetime`]:
//!   then it finishes the request under way and closes (a scraper simply
//!   reconnects), or is dropped [`CLOSE_GRACE`] later.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument};

use crate::error::Result;
use crate::metrics::{DetectorMetrics, OPENMETRICS_CONTENT_TYPE};

/// Pause after a failed accept (a full file table fails every accept until
/// a descriptor is freed).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// How long a connection past its lifetime may take to finish the request
/// under way before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The bounds of each connection to the metrics listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsServerLimits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from the
    /// connection's start or the end of its previous response.
    pub header_read_timeout: Duration,
    /// Time after which a connection is closed, whatever it does.
    pub connection_lifetime: Duration,
}

impl Default for MetricsServerLimits {
    fn default() -> Self {
        MetricsServerLimits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(120),
        }
    }
}

/// Serves `GET /metrics` and `GET /healthz` on `listener` until `shutdown`
/// is cancelled, within the default [`MetricsServerLimits`]; then closes the
/// listener and every open connection and returns `Ok`.
///
/// # Errors
/// None today: a failed accept (out of descriptors) is retried after a
/// pause, and a failed connection only ends that connection.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<DetectorMetrics>,
    shutdown: CancellationToken,
) -> Result<()> {
    serve_metrics_with(listener, metrics, MetricsServerLimits::default(), shutdown).await
}

/// Serves as [`serve_metrics`] does, within `limits`.
///
/// # Errors
/// As [`serve_metrics`].
#[instrument(skip_all, fields(listen = ?listener.local_addr().ok()))]
pub async fn serve_metrics_with(
    listener: TcpListener,
    metrics: Arc<DetectorMetrics>,
    limits: MetricsServerLimits,
    shutdown: CancellationToken,
) -> Result<()> {
    let router = Router::new()
        .route("/metrics", get(render_metrics).fallback(not_found))
        .route("/healthz", get(healthz).fallback(not_found))
        .fallback(not_found)
        .with_state(metrics);
    // One permit per open connection; all of them back means none is open.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    debug!("serving metrics");
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // EMFILE and the like persist: pause instead of spinning.
                debug!(reason = %error, "metrics accept failed");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, max_connections = limits.max_connections, "metrics connection refused: too many open");
            drop(stream);
            continue;
        };
        debug!(%peer, "metrics connection");
        let router = router.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, limits, shutdown).await;
            drop(slot);
        });
    }
    drop(listener);
    // Each connection task ends on `shutdown` too, returning its permit.
    let num_slots = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _all_closed = slots.acquire_many(num_slots).await;
    info!("metrics listener stopped");
    Ok(())
}

/// Serves one connection until the client closes it, a limit ends it, or
/// `shutdown` drops it.
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: MetricsServerLimits,
    shutdown: CancellationToken,
) {
    let service = TowerToHyperService::new(router);
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let lifetime = tokio::time::sleep(limits.connection_lifetime);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(error) = served {
                debug!(reason = %error, "metrics connection ended");
            }
            return;
        }
        () = lifetime => {}
        () = shutdown.cancelled() => return,
    }
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        _ = tokio::time::timeout(CLOSE_GRACE, connection) => {}
        () = shutdown.cancelled() => {}
    }
}

async fn render_metrics(State(metrics): State<Arc<DetectorMetrics>>) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok",
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found",
    )
        .into_response()
}
