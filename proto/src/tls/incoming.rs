//! Accepting TLS connections for a tonic server, one handshake task each.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The stream of completed TLS connections that [`serve_tls_incoming`] returns.
///
/// It never yields an error: failed accepts and handshakes are logged and
/// skipped. The `io::Error` item type is what tonic's
/// `serve_with_incoming_shutdown` expects.
pub type TlsIncoming = ReceiverStream<Result<TlsStream<TcpStream>, io::Error>>;

/// Pause after an accept error that is not about one connection (EMFILE,
/// ENFILE, ENOBUFS), so a full file table does not spin the loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Completed connections waiting for the server to take them.
const COMPLETED_QUEUE_LEN: usize = 16;

/// Returns the stream of TLS connections accepted on `listener` with `config`.
///
/// A task owns the listener and runs this loop:
/// 1. Wait for one of `max_concurrent_handshakes` slots (so a flood of idle
///    connections cannot exhaust memory or file descriptors).
/// 2. Accept a TCP connection. Errors never end the loop: one about a single
///    connection is skipped; others (EMFILE...) are logged and followed by a
///    short backoff.
/// 3. Spawn the handshake with the slot, bounded by `handshake_timeout`. A
///    failed or late handshake is logged as
///    `warn!(peer, reason, "tls handshake refused")`, where the reason is
///    rustls' (unknown issuer, expired certificate, no client certificate...),
///    and the connection is dropped. A completed one is sent down the stream,
///    and the slot is freed once the server has taken it.
///
/// Cancelling `shutdown`, or dropping the stream, stops the loop, closes the
/// listener and abandons handshakes in flight; the stream then ends.
///
/// With tonic, pass the stream to `Server::builder()...serve_with_incoming_shutdown`
/// (without `tls_config`: the TLS is done here). tonic implements `Connected`
/// for `tokio_rustls::server::TlsStream<TcpStream>` (feature `tls-ring`), so
/// `Request::remote_addr()` works and `Request::peer_certs()` returns the
/// verified client chain; see [`peer_identity`](super::peer_identity).
///
/// Must be called inside a tokio runtime.
pub fn serve_tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
    max_concurrent_handshakes: usize,
    shutdown: CancellationToken,
) -> TlsIncoming {
    let (sender, receiver) = mpsc::channel(COMPLETED_QUEUE_LEN);
    let accept_loop = AcceptLoop {
        listener,
        acceptor: TlsAcceptor::from(config),
        handshake_timeout,
        handshake_slots: Arc::new(Semaphore::new(max_concurrent_handshakes.max(1))),
        sender,
        shutdown,
    };
    tokio::spawn(accept_loop.run());
    ReceiverStream::new(receiver)
}

/// State of the task that accepts connections.
struct AcceptLoop {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    /// Longest time a client may take to complete its handshake.
    handshake_timeout: Duration,
    /// One permit per handshake in flight or completed connection not yet taken.
    handshake_slots: Arc<Semaphore>,
    /// Where completed connections go; closed when the stream is dropped.
    sender: mpsc::Sender<Result<TlsStream<TcpStream>, io::Error>>,
    shutdown: CancellationToken,
}

impl AcceptLoop {
    async fn run(self) {
        loop {
            let slot = tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = self.sender.closed() => break,
                slot = self.handshake_slots.clone().acquire_owned() => {
                    slot.expect("the handshake semaphore is never closed")
                }
            };
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
                    warn!(
                        reason = %error,
                        backoff_ms = ACCEPT_ERROR_BACKOFF.as_millis() as u64,
                        "tcp accept failed"
                    );
                    tokio::select! {
                        () = self.shutdown.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                    }
                }
            };
            let acceptor = self.acceptor.clone();
            let sender = self.sender.clone();
            let shutdown = self.shutdown.clone();
            let handshake_timeout = self.handshake_timeout;
            tokio::spawn(async move {
                let completed = tokio::select! {
                    () = shutdown.cancelled() => return,
                    completed = handshake(acceptor, tcp_stream, peer_address, handshake_timeout) => completed,
                };
                if let Some(tls_stream) = completed {
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        sent = sender.send(Ok(tls_stream)) => {
                            if sent.is_err() {
                                debug!(peer = %peer_address, "tls connection dropped: server stopped");
                            }
                        }
                    }
                }
                drop(slot);
            });
        }
        debug!("tls accept loop stopped");
    }
}

/// Returns the completed TLS stream, or `None` after logging why the handshake failed.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp_stream: TcpStream,
    peer_address: SocketAddr,
    handshake_timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    if let Err(error) = tcp_stream.set_nodelay(true) {
        debug!(peer = %peer_address, reason = %error, "cannot set TCP_NODELAY");
    }
    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp_stream)).await {
        Ok(Ok(tls_stream)) => {
            debug!(peer = %peer_address, "tls handshake completed");
            Some(tls_stream)
        }
        Ok(Err(error)) => {
            warn!(peer = %peer_address, reason = %error, "tls handshake refused");
            None
        }
        Err(_elapsed) => {
            warn!(
                peer = %peer_address,
                reason = %format_args!("no handshake within {} ms", handshake_timeout.as_millis()),
                "tls handshake refused"
            );
            None
        }
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
