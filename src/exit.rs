//! The binary's exit statuses. 0 is success (also a stop on SIGINT or
//! SIGTERM, and a participant whose federation is complete), 1 an error,
//! 2 a usage error (clap); the statuses below each name one condition that
//! retrying cannot change, so that a supervisor (systemd, Kubernetes) can
//! stop restarting and tell an operator. docs/DEPLOY.md lists them.

use std::fmt;

/// A condition that ends the process with its own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The coordinator refuses this participant (PERMISSION_DENIED): not in
    /// its registry, revoked, or not allowed to take part.
    Denied = 3,
    /// The participant's certificate names another participant than `--id`.
    IdentityMismatch = 4,
    /// The participant's privacy budget cannot pay for a round of the
    /// federation.
    BudgetExhausted = 5,
    /// The coordinator's privacy settings would weaken the differential
    /// privacy of its stored model, and `--accept-weaker-privacy` does not
    /// acknowledge it.
    PrivacyWeakened = 6,
    /// A second SIGINT or SIGTERM during a graceful stop: stopped at once.
    Forced = 130,
}

impl ExitStatus {
    /// Returns the process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error that ends the process with `status`.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    pub message: String,
}

impl Exit {
    /// Returns the error for `status`, with `message` for the operator.
    pub fn new(status: ExitStatus, message: impl Into<String>) -> Self {
        Exit {
            status,
            message: message.into(),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Returns the exit status for an error that ended the process: its
/// [`Exit`] status if one is in its chain, else 1.
pub fn code_of(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Exit>())
        .map_or(1, |exit| exit.status.code())
}
