//! A plain-HTTP listener that serves `GET /metrics` and nothing else, for
//! a Prometheus scraper on a private network (`--metrics-listen`).
//!
//! No TLS and no authentication: it carries only counters, gauges and
//! histograms (no telemetry, updates, tokens or keys). Anything else on it
//! answers `404`.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Content type of OpenMetrics text, which Prometheus scrapes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Pause after a failed accept (a full file table fails every accept until
/// a descriptor is freed).
const ACCEPT_ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Returns the current metrics text on each scrape.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` on `listener` with the text `render` returns, until
/// `shutdown`. Connections still open at shutdown are dropped.
pub fn serve_metrics(
    listener: TcpListener,
    render: RenderMetrics,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move {
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
                    render(),
                )
                    .into_response()
            }
        }),
    );
    tokio::spawn(async move {
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
            debug!(%peer, "metrics scrape connection");
            spawn_http_connection(stream, router.clone(), shutdown.clone());
        }
    })
}

/// Serves one accepted connection (HTTP/1.1 or HTTP/2, whichever the
/// client speaks) with `router` on a task of its own, until the client
/// closes it or `shutdown` drops it.
pub fn spawn_http_connection<S>(stream: S, router: Router, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            _ = connection => {}
            () = shutdown.cancelled() => {}
        }
    });
}
