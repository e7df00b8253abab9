//! fedshield core: everything a participant, a coordinator and a detector share,
//! with no knowledge of the network.
//!
//! - [`ids`]: newtypes for round ids, model versions and participant ids.
//! - [`error`]: the crate's error type.
//! - [`fsutil`]: crash-safe (atomic) file writes.
//! - [`model`]: the MLP detection model (burn) and its architecture spec.
//! - [`weights`]: a model's parameters as one flat vector, its sha256, safetensors files.
//! - [`model_file`]: the metadata keys of model files (feature schema, threshold), and loading them.
//! - [`model_cache`]: downloaded model versions, one safetensors file each, sha256-checked.
//! - [`card`]: the model card of a published version (provenance and integrity data).
//! - [`codec`]: the wire encoding of parameters and updates (little-endian float32 chunks).
//! - [`aggregate`]: streaming FedAvg.
//! - [`robust`]: poisoning-robust aggregation rules (norm bounding, trimmed mean, median, Multi-Krum).
//! - [`accountant`]: Rényi-DP accountant of the subsampled Gaussian mechanism, (ε, δ) conversion and noise calibration.
//! - [`dp`]: DP-SGD (per-example clipping with ghost norms, Poisson sampling, Gaussian noise) and organization-level DP.
//! - [`clock`]: Unix-millisecond timestamps.
//! - [`telemetry`]: flow records, the synthetic telemetry generator and featurization.
//! - [`data`]: in-memory labelled datasets of feature vectors.
//! - [`training`]: local training with burn (ndarray backend, autodiff).
//! - [`inference`]: scoring feature vectors with a model.
//! - [`metrics`]: accuracy, ROC-AUC and friends.
//! - [`privacy`]: privacy targets, plan calibration, participants' reports and model cards' guarantees.
//! - [`lineage`]: a federation's privacy promise over all its rounds, and the check that a restart keeps it.
//! - [`plan`]: the training plan of a round and its DP settings (DP-SGD, organization-level DP).
//! - [`plan_fingerprint`]: the sha256 of a training plan, which keys re-sent updates of retried rounds.
//! - [`schema_diff`]: what differs between two schemas, for the message that declines a round.
//! - [`untrusted_text`]: peer-chosen text (claimed ids, decline reasons) escaped and bounded for logs.

#![forbid(unsafe_code)]

pub mod accountant;
pub mod aggregate;
pub mod card;
pub mod clock;
pub mod codec;
pub mod data;
pub mod dp;
pub mod error;
pub mod fsutil;
pub mod ids;
pub mod inference;
pub mod ingest;
pub mod lineage;
pub mod metrics;
pub mod model;
pub mod model_cache;
pub mod model_file;
pub mod plan;
pub mod plan_fingerprint;
pub mod privacy;
pub mod robust;
pub mod schema;
pub mod schema_diff;
pub mod telemetry;
pub mod training;
pub mod untrusted_text;
pub mod weights;

pub use error::{CoreError, Result};
pub use ids::{ModelVersion, ParticipantId, RoundId};
pub use model::ModelSpec;
pub use training::TrainingPlan;
pub use weights::ModelWeights;
