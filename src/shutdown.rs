//! Turning SIGINT and SIGTERM into a cancellation token, and bounding how
//! long a graceful stop may take.
//!
//! The first signal starts a graceful stop (the token is cancelled); the
//! process then gets a grace period (`--shutdown-grace-secs`) to finish,
//! after which it stops anyway, so that a peer that never answers (a
//! stopped process holding its connection open) cannot keep it alive. A
//! second signal stops it at once ([`ExitStatus::Forced`]).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::exit::ExitStatus;

/// Default of `--shutdown-grace-secs`.
pub const DEFAULT_GRACE_SECS: u64 = 10;

/// Returns a token cancelled on the first SIGINT or SIGTERM; a second one
/// ends the process at once with [`ExitStatus::Forced`].
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut signals = Signals::new();
        signals.recv().await;
        info!("shutdown signal received; stopping (a second signal stops at once)");
        cancel.cancel();
        signals.recv().await;
        warn!("second shutdown signal: stopping at once");
        std::process::exit(ExitStatus::Forced.code().into());
    });
    token
}

/// Runs `work` to its end, or until `grace` after `shutdown` is cancelled,
/// whichever comes first. Returns `None` (and logs what was cut short) when
/// the grace period ended first.
pub async fn finish_within<F: Future>(
    shutdown: &CancellationToken,
    grace: Duration,
    what: &str,
    work: F,
) -> Option<F::Output> {
    tokio::pin!(work);
    tokio::select! {
        output = &mut work => return Some(output),
        () = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, work).await {
        Ok(output) => Some(output),
        Err(_) => {
            warn!(
                grace_secs = grace.as_secs_f64(),
                "{what} did not stop within the shutdown grace period; stopping now"
            );
            None
        }
    }
}

/// SIGINT and SIGTERM, registered once so that no signal between two
/// waits is missed.
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for the next SIGINT or SIGTERM.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            /// Waits for `signal`, or for ever if it could not be registered.
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(&mut self.terminate) => {}
                () = next(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
