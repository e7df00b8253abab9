//! fedshield coordinator: runs federated rounds over gRPC and publishes the
//! aggregated detection model.
//!
//! - [`artifacts`]: model artifacts in any `object_store` store, chosen by URL.
//! - [`config`]: round rules and server settings.
//! - [`dashboard_sessions`]: dashboard sessions opened by signing in with a token.
//! - [`dropouts`]: members that leave rounds they were selected for, selected less often.
//! - [`engine`]: the round engine (sessions, uploads, rounds, publishing, history).
//! - [`error`]: the error type and the one table of its kinds to gRPC and HTTP status codes.
//! - [`http`]: the HTTPS endpoint: model downloads, metrics, status API, dashboard.
//! - [`lineage`]: the stored model's privacy lineage, which a restart may not weaken unacknowledged.
//! - [`metrics`]: the Prometheus metrics.
//! - [`participants`]: the participant registry (who may join, revocations).
//! - [`registry`]: published model versions (safetensors + model card) and the round state.
//! - [`revocation`]: ending live `Join` streams whose certificate is revoked.
//! - [`roles`]: member roles (participant, detector) and what each may call.
//! - [`server`]: starting and stopping a coordinator on a bound listener.
//! - [`service`]: the `fedshield.v1.Federation` gRPC handlers, thin adapters over the engine.
//! - [`status`]: the JSON status the dashboard renders.
//! - [`store`]: the coordinator's own state (open round, round history) in its data directory.
//! - [`tokens`]: the HTTPS endpoint's bearer tokens (issue, list, revoke, expiry).
//! - [`weighting`]: the bounds on an update's declared example count and its weight.

#![forbid(unsafe_code)]

pub mod artifacts;
pub mod config;
pub mod dashboard_sessions;
pub mod dropouts;
pub mod engine;
pub mod error;
pub mod http;
pub mod lineage;
pub mod metrics;
pub mod participants;
pub mod registry;
pub mod revocation;
pub mod roles;
pub mod server;
pub mod service;
pub mod status;
pub mod store;
pub mod tokens;
pub mod weighting;

pub use config::{
    CoordinatorConfig, CoordinatorTls, HttpsSettings, ParticipantsPerRound, RoundConfig,
};
pub use engine::{Engine, TranscriptEntry, TranscriptRecorder};
pub use error::{CoordinatorError, ErrorKind};
pub use server::{CoordinatorHandle, run, start};
