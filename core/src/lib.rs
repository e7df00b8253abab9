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
//! - [`model_file`]: the metadata keys of model files (feature schema, threshold), and loading them.
//! - [`model_cache`]: downloaded model versions, one safetensors file each, sha256-checked.
//! - [`card`]: the model card of a published version (provenance and integrity data).
//! - [`aggregate`]: streaming FedAvg.
//! - [`robust`]: poisoning-robust aggregation rules (norm bounding, trimmed mean, median, Multi-Krum).
//! - [`accountant`]: Rényi-DP accountant of the subsampled Gaussian mechanism, (ε, δ) conversion and noise calibration.
//! - [`dp`]: DP-SGD (per-example clipping with ghost norms, Poisson sampling, Gaussian noise) and organization-level DP.
//! - [`clock`]: Unix-millisecond timestamps.
//! - [`privacy`]: privacy targets, plan calibration, participants' reports and model cards' guarantees.
//! - [`lineage`]: a federation's privacy promise over all its rounds, and the check that a restart keeps it.
//! - [`plan`]: the training plan of a round and its DP settings (DP-SGD, organization-level DP).
//! - [`plan_fingerprint`]: the sha256 of a training plan, which keys re-sent updates of retried rounds.
//! - [`untrusted_text`]: peer-chosen text (claimed ids, decline reasons) escaped and bounded for logs.

#![forbid(unsafe_code)]

pub mod accountant;
pub mod aggregate;
pub mod card;
pub mod clock;
pub mod dp;
pub mod error;
pub mod fsutil;
pub mod ids;
pub mod ingest;
pub mod lineage;
pub mod model;
pub mod model_cache;
pub mod model_file;
pub mod plan;
pub mod plan_fingerprint;
pub mod privacy;
pub mod robust;
pub mod schema;
pub mod telemetry;
pub mod untrusted_text;

pub use error::{CoreError, Result};
pub use ids::{ModelVersion, ParticipantId, RoundId};
pub use model::ModelSpec;
pub use model::weights::ModelWeights;
pub use plan::TrainingPlan;
