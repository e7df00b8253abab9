//! Serving one HTTPS connection with request-header deadlines, so that a
//! client that completes TLS and then sends nothing, or drips its headers
//! (slowloris), gives its connection back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::tls::GuardedConnection;

/// A TLS connection from [`serve_tls_incoming`](crate::tls::serve_tls_incoming).
pub type HttpsConnection = GuardedConnection<TlsStream<TcpStream>>;

/// Serves `connection` with `router` on a task of its own, until the client
/// closes it, a deadline passes, or `shutdown` drops it.
///
/// - The HTTP version is the one ALPN chose (`h2`, else HTTP/1.1); the
///   server does not wait for the client's first bytes to guess it.
/// - The first request's headers must arrive within `header_read_timeout`
///   of the end of the handshake, over either version; otherwise the
///   connection is closed.
/// - Over HTTP/1.1, every later request's headers must also arrive within
///   `header_read_timeout` of the previous response (hyper's
///   `header_read_timeout`), which also closes idle keep-alive connections.
/// - Whatever the version, the connection's own idle timeout
///   ([`GuardedConnection`]) closes it when no byte moves.
pub fn spawn_https_connection(
    connection: HttpsConnection,
    router: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let peer_address = connection.peer_address();
    let tracker = Arc::clone(connection.slot().tracker());
    let speaks_h2 = connection.get_ref().1.alpn_protocol() == Some(b"h2");
    let request_seen = Arc::new(AtomicBool::new(false));
    let router = router.layer(axum::middleware::map_request({
        let request_seen = Arc::clone(&request_seen);
        move |request: Request| {
            request_seen.store(true, Ordering::Relaxed);
            async move { request }
        }
    }));
    let service = TowerToHyperService::new(router);
    tokio::spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        let builder = if speaks_h2 {
            builder.http2_only()
        } else {
            builder.http1_only()
        };
        let served = builder.serve_connection(TokioIo::new(connection), service);
        let first_request_deadline = async {
            tokio::time::sleep(header_read_timeout).await;
            if request_seen.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = served => {
                if let Err(error) = result {
                    debug!(peer = %peer_address, reason = %error, "https connection ended");
                }
            }
            () = first_request_deadline => {
                tracker.record_idle_closed();
                debug!(
                    peer = %peer_address,
                    header_read_timeout_ms = header_read_timeout.as_millis() as u64,
                    "https connection closed: no request within the header read timeout"
                );
            }
            () = shutdown.cancelled() => {}
        }
    });
}
