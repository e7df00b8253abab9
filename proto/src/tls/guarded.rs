//! An established connection that holds its place in the connection caps
//! and closes itself when idle.

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;
use tracing::debug;

use super::limits::ConnectionSlot;

/// A connection accepted by [`serve_tls_incoming`](super::serve_tls_incoming):
/// the stream `S`, its [`ConnectionSlot`] (freed when this is dropped, that
/// is when the server closes the connection), and an idle timer.
///
/// Reads and writes go straight to `S`. When neither has moved a byte for
/// the idle timeout, the next pending read or write fails with
/// `io::ErrorKind::TimedOut`, so whichever server drives the connection
/// (tonic, hyper) closes it. A server always has a read pending on an open
/// connection, so the timer fires even when the client sends nothing at all.
///
/// It dereferences to `S`, so `connection.get_ref().1.peer_certificates()`
/// reaches the TLS session as on a plain `TlsStream`.
pub struct GuardedConnection<S> {
    stream: S,
    /// Kept for its `Drop`, which gives the connection's place back.
    slot: ConnectionSlot,
    peer_address: SocketAddr,
    idle_timeout: Duration,
    /// When a byte last moved either way.
    last_activity: Instant,
    /// Set to `last_activity + idle_timeout` whenever a read or write is
    /// pending (resetting it on every byte would cost a timer update each).
    idle_timer: Pin<Box<Sleep>>,
    /// Whether the idle timeout was reached (counted and logged once).
    idle_expired: bool,
}

impl<S> GuardedConnection<S> {
    /// Wraps `stream`, which holds `slot`, closing it after `idle_timeout`
    /// without a byte read or written.
    pub fn new(
        stream: S,
        slot: ConnectionSlot,
        peer_address: SocketAddr,
        idle_timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        GuardedConnection {
            stream,
            slot,
            peer_address,
            idle_timeout,
            last_activity: now,
            idle_timer: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            idle_expired: false,
        }
    }

    /// Returns the client's address.
    pub fn peer_address(&self) -> SocketAddr {
        self.peer_address
    }

    /// Returns the slot this connection holds in the caps.
    pub fn slot(&self) -> &ConnectionSlot {
        &self.slot
    }

    /// Notes that a byte moved now.
    fn record_activity(&mut self) {
        self.last_activity = Instant::now();
    }

    /// Returns the outcome of a write to the inner stream, counting written
    /// bytes as activity and failing a pending write once the connection
    /// has been idle too long.
    fn after_write(
        &mut self,
        context: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(num_written)) => {
                if num_written > 0 {
                    self.record_activity();
                }
                Poll::Ready(Ok(num_written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match self.poll_idle(context) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }

    /// Returns the idle-timeout error if the connection has been idle too
    /// long, and otherwise arms the timer to wake the task when it could be.
    fn poll_idle(&mut self, context: &mut Context<'_>) -> Option<io::Error> {
        let deadline = self.last_activity + self.idle_timeout;
        if self.idle_timer.deadline() != deadline {
            self.idle_timer.as_mut().reset(deadline);
        }
        if self.idle_timer.as_mut().poll(context).is_pending() {
            return None;
        }
        if !self.idle_expired {
            self.idle_expired = true;
            debug!(
                peer = %self.peer_address,
                idle_timeout_ms = self.idle_timeout.as_millis() as u64,
                "idle connection closed"
            );
            self.slot.tracker().record_idle_closed();
        }
        Some(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connection idle for {} ms", self.idle_timeout.as_millis()),
        ))
    }
}

impl<S> Deref for GuardedConnection<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.stream
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedConnection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled_before = buffer.filled().len();
        match Pin::new(&mut this.stream).poll_read(context, buffer) {
            Poll::Ready(Ok(())) => {
                if buffer.filled().len() > filled_before {
                    this.record_activity();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match this.poll_idle(context) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedConnection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(context, bytes);
        this.after_write(context, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(context, buffers);
        this.after_write(context, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(context)
    }
}

/// tonic sees the wrapped stream's connection info, so `Request::remote_addr()`
/// and `Request::peer_certs()` work as on a plain `TlsStream`.
impl<S: Connected> Connected for GuardedConnection<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
