//! fedshield core: everything a participant, a coordinator and a detector share,
//! with no knowledge of the network.
//!
//! - [`ids`]: newtypes for round ids, model versions and participant ids.
//! - [`error`]: the crate's error type.
//! - [`fsutil`]: crash-safe (atomic) file writes.
//! - [`schema`]: telemetry schemas (TOML), their validation, and the featurizer of records.
//! - [`ingest`]: reading csv and JSON-lines telemetry files through a schema into a dataset.
//! - [`telemetry`]: the synthetic flow generator, its organization profiles and files.
//! - [`model`]: the detection model (spec, burn module, weights, codec, data, training, inference, metrics).
//! - [`card`]: the model card of a published version (provenance and integrity data).
//! - [`aggregation`]: streaming FedAvg, server momentum and the poisoning-robust rules.
//! - [`units`]: ε, δ, the sampling rate q and the noise multiplier σ, each checked once where it is made.
//! - [`privacy`]: DP-SGD, organization-level DP, the accountant, targets, reports, guarantees and lineage.
//! - [`secagg`]: secure aggregation (SecAgg+): keys, secret sharing, masks, the participant's and the coordinator's side.
//! - [`clock`]: Unix-millisecond timestamps.
//! - [`plan`]: the training plan of a round and its DP settings (DP-SGD, organization-level DP).
//! - [`plan_fingerprint`]: the sha256 of a training plan, which keys re-sent updates of retried rounds.
//! - [`untrusted_text`]: peer-chosen text (claimed ids, decline reasons) escaped and bounded for logs.

#![forbid(unsafe_code)]

pub mod aggregation;
pub mod card;
pub mod clock;
pub mod error;
pub mod fsutil;
pub mod ids;
pub mod ingest;
pub mod model;
pub mod plan;
pub mod plan_fingerprint;
pub mod privacy;
pub mod schema;
pub mod secagg;
pub mod telemetry;
pub mod units;
pub mod untrusted_text;

pub use error::{CoreError, Result};
pub use ids::{ModelVersion, ParticipantId, RoundId};
pub use model::ModelSpec;
pub use model::weights::ModelWeights;
pub use plan::TrainingPlan;
