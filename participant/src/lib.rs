//! fedshield participant: runs next to an organization's private telemetry,
//! trains the shared model locally and sends only model updates.
//!
//! - [`config`]: participant settings.
//! - [`node`]: the participant loop (join, download, train, submit).
//! - [`backoff`]: reconnection delays.
//! - [`ledger`]: the privacy ledger, append-only and fsynced before any update leaves.
//! - [`pending`]: the privatized update of the last DP run, re-sent for a retried round.
//! - [`metrics`]: Prometheus metrics (rounds, traffic, training time, ε spent).
//! - [`ending`]: how a run ends (stopped, the federation complete).
//! - [`progress`]: progress of local training and model downloads (counts only).
//! - [`schema_check`]: declining a round whose feature schema differs, naming the differences.
//! - [`error`]: the error type.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod ending;
pub mod error;
pub mod ledger;
pub mod metrics;
pub mod node;
pub mod pending;
pub mod progress;
pub mod schema_check;

pub use config::ParticipantConfig;
pub use ending::{FederationEnd, RunEnd};
pub use error::ParticipantError;
pub use ledger::{PrivacyBudget, PrivacyLedger};
pub use metrics::ParticipantMetrics;
pub use node::{Participant, ParticipantEvent};
