//! Accepting TLS connections for a tonic or hyper server, one handshake task
//! each, within the limits of a [`ConnectionTracker`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::guarded::GuardedConnection;
use super::limits::{ConnectionRefusal, ConnectionTracker, HandshakeTicket, RateLimitedWarning};

/// The stream of completed TLS connections that [`serve_tls_incoming`] returns.
///
/// It never yields an error: failed accepts and handshakes are logged and
/// skipped. The `io::Error` item type is what tonic's
/// `serve_with_incoming_shutdown` expects.
pub type TlsIncoming = ReceiverStream<Result<GuardedConnection<TlsStream<TcpStream>>, io::Error>>;

/// Pause after an accept error that is not about one connection (EMFILE,
/// ENFILE, ENOBUFS), so a full file table does not spin the loop; the
/// connections already open keep being served meanwhile, and their
/// timeouts free descriptors.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// How often an accept error or a refused handshake is logged as a warning;
/// in between they are logged at debug level and counted.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Completed connections waiting for the server to take them.
const COMPLETED_QUEUE_LEN: usize = 16;

/// Returns the stream of TLS connections accepted on `listener` with `config`,
/// within the limits `tracker` enforces.
///
/// A task owns the listener and runs this loop, which never waits for
/// anything but the next connection:
/// 1. Accept a TCP connection. Errors never end the loop: one about a single
///    connection is skipped; others (EMFILE, ENFILE...) are logged at most
///    once per [`WARNING_INTERVAL`] (with the number held back) and followed
///    by a [`ACCEPT_ERROR_BACKOFF`] pause.
/// 2. Ask `tracker` to admit it ([`ConnectionTracker::admit_handshake`]):
///    over a connection cap it is closed at once; otherwise it may evict an
///    older handshake, from its own IP or the busiest one.
/// 3. Spawn its handshake, bounded by the tracker's `handshake_timeout` and
///    ended early if a newer connection evicts it. A failed or late
///    handshake is logged as `"tls handshake refused"` with the peer and
///    rustls' reason (unknown issuer, expired certificate...), at warn level
///    at most once per [`WARNING_INTERVAL`] and at debug level otherwise,
///    and the connection is dropped. A completed one takes an established
///    connection slot (or is closed if a cap filled meanwhile), is wrapped in
///    a [`GuardedConnection`] with the tracker's `idle_timeout`, and is sent
///    down the stream.
///
/// Cancelling `shutdown`, or dropping the stream, stops the loop, closes the
/// listener and abandons handshakes in flight; the stream then ends.
///
/// With tonic, pass the stream to `Server::builder()...serve_with_incoming_shutdown`
/// (without `tls_config`: the TLS is done here). [`GuardedConnection`]
/// forwards tonic's `Connected` info of `tokio_rustls::server::TlsStream<TcpStream>`
/// (feature `tls-ring`), so `Request::remote_addr()` works and
/// `Request::peer_certs()` returns the verified client chain; see
/// [`peer_identity`](super::peer_identity).
///
/// Must be called inside a tokio runtime.
pub fn serve_tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    tracker: Arc<ConnectionTracker>,
    shutdown: CancellationToken,
) -> TlsIncoming {
    let (sender, receiver) = mpsc::channel(COMPLETED_QUEUE_LEN);
    let accept_loop = AcceptLoop {
        listener,
        acceptor: TlsAcceptor::from(config),
        tracker,
        sender,
        shutdown,
        accept_error_warning: RateLimitedWarning::new(WARNING_INTERVAL),
        handshake_warning: Arc::new(RateLimitedWarning::new(WARNING_INTERVAL)),
    };
    tokio::spawn(accept_loop.run());
    ReceiverStream::new(receiver)
}

/// Where completed connections go.
type CompletedSender = mpsc::Sender<Result<GuardedConnection<TlsStream<TcpStream>>, io::Error>>;

/// State of the task that accepts connections.
struct AcceptLoop {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    /// Counts handshakes and connections (shared with the process's other
    /// listeners) and holds the limits.
    tracker: Arc<ConnectionTracker>,
    /// Where completed connections go; closed when the stream is dropped.
    sender: CompletedSender,
    shutdown: CancellationToken,
    /// Rate limit of the "tcp accept failed" warning.
    accept_error_warning: RateLimitedWarning,
    /// Rate limit of the "tls handshake refused" warning.
    handshake_warning: Arc<RateLimitedWarning>,
}

impl AcceptLoop {
    async fn run(self) {
        loop {
            let accepted = tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = self.sender.closed() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (tcp_stream, peer_address) = match accepted {
                Ok(connection) => connection,
                Err(error) if is_connection_error(&error) => {
                    debug!(reason = %error, "tcp connection lost before accept");
                    continue;
                }
                Err(error) => {
                    match self.accept_error_warning.should_log() {
                        Some(num_suppressed) => warn!(
                            reason = %error,
                            backoff_ms = ACCEPT_ERROR_BACKOFF.as_millis() as u64,
                            num_suppressed,
                            "tcp accept failed"
                        ),
                        None => debug!(reason = %error, "tcp accept failed"),
                    }
                    tokio::select! {
                        () = self.shutdown.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                    }
                }
            };
            let ticket = match self.tracker.admit_handshake(peer_address.ip()) {
                Ok(ticket) => ticket,
                Err(refusal) => {
                    debug!(peer = %peer_address, reason = %refusal, "tcp connection refused");
                    continue;
                }
            };
            tokio::spawn(handshake_task(
                self.acceptor.clone(),
                tcp_stream,
                peer_address,
                ticket,
                Arc::clone(&self.tracker),
                self.sender.clone(),
                self.handshake_warning.clone(),
                self.shutdown.clone(),
            ));
        }
        debug!("tls accept loop stopped");
    }
}

/// Runs one connection's handshake and hands the connection to the server,
/// unless it fails, runs out of time, is evicted, or finds a cap full.
#[allow(clippy::too_many_arguments)]
async fn handshake_task(
    acceptor: TlsAcceptor,
    tcp_stream: TcpStream,
    peer_address: SocketAddr,
    ticket: HandshakeTicket,
    tracker: Arc<ConnectionTracker>,
    sender: CompletedSender,
    handshake_warning: Arc<RateLimitedWarning>,
    shutdown: CancellationToken,
) {
    let limits = tracker.limits();
    let completed = tokio::select! {
        () = shutdown.cancelled() => return,
        () = ticket.eviction().cancelled() => {
            debug!(peer = %peer_address, reason = %ConnectionRefusal::Evicted, "tls handshake refused");
            return;
        }
        completed = handshake(acceptor, tcp_stream, peer_address, limits.handshake_timeout) => completed,
    };
    let tls_stream = match completed {
        Ok(tls_stream) => tls_stream,
        Err(failure) => {
            if failure.timed_out {
                tracker.record_handshake_timeout();
            }
            match handshake_warning.should_log() {
                Some(num_suppressed) => {
                    warn!(peer = %peer_address, reason = %failure.reason, num_suppressed, "tls handshake refused")
                }
                None => {
                    debug!(peer = %peer_address, reason = %failure.reason, "tls handshake refused")
                }
            }
            return;
        }
    };
    let slot = match ticket.establish() {
        Ok(slot) => slot,
        Err(refusal) => {
            debug!(peer = %peer_address, reason = %refusal, "tls connection refused");
            return;
        }
    };
    let connection = GuardedConnection::new(tls_stream, slot, peer_address, limits.idle_timeout);
    tokio::select! {
        () = shutdown.cancelled() => {}
        sent = sender.send(Ok(connection)) => {
            if sent.is_err() {
                debug!(peer = %peer_address, "tls connection dropped: server stopped");
            }
        }
    }
}

/// Why a handshake did not complete.
struct HandshakeFailure {
    /// rustls' reason, or the timeout.
    reason: String,
    /// Whether it ran out of time (rather than failing).
    timed_out: bool,
}

/// Returns the completed TLS stream, or why the handshake failed.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp_stream: TcpStream,
    peer_address: SocketAddr,
    handshake_timeout: Duration,
) -> Result<TlsStream<TcpStream>, HandshakeFailure> {
    if let Err(error) = tcp_stream.set_nodelay(true) {
        debug!(peer = %peer_address, reason = %error, "cannot set TCP_NODELAY");
    }
    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp_stream)).await {
        Ok(Ok(tls_stream)) => {
            debug!(peer = %peer_address, "tls handshake completed");
            Ok(tls_stream)
        }
        Ok(Err(error)) => Err(HandshakeFailure {
            reason: error.to_string(),
            timed_out: false,
        }),
        Err(_elapsed) => Err(HandshakeFailure {
            reason: format!("no handshake within {} ms", handshake_timeout.as_millis()),
            timed_out: true,
        }),
    }
}

/// Returns whether an accept error concerns one connection only, so the next
/// accept can follow at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
