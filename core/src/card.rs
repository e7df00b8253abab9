//! The model card: what a published model version is (provenance and
//! integrity data that travels with the weights), as the coordinator stores
//! it next to each version and a detector checks a model against.

use serde::{Deserialize, Serialize};

use crate::model::calibration::ThresholdCalibration;
use crate::model::metrics::BinaryMetrics;
use crate::privacy::ModelPrivacy;
use crate::{ModelSpec, TrainingPlan};

/// What a published model version is: provenance and integrity data that
/// travels with the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub version: u64,
    /// The version this one was aggregated from (none for version 0).
    pub parent: Option<u64>,
    /// sha256 (hex) of the parameters' little-endian float32 bytes.
    pub sha256: String,
    pub num_params: u64,
    pub spec: ModelSpec,
    /// The round that produced this version (none for version 0).
    pub round_id: Option<u64>,
    /// Participants whose updates were averaged in.
    pub contributors: Vec<String>,
    /// Sum of the contributors' declared example counts.
    pub num_examples: u64,
    /// The local training plan of the round.
    pub plan: TrainingPlan,
    pub created_unix_ms: u64,
    /// The feature schema (TOML) the model's inputs come from, so that a
    /// detector can featurize events exactly as participants did.
    #[serde(default)]
    pub feature_schema: Option<String>,
    /// sha256 of the feature schema's canonical TOML.
    #[serde(default)]
    pub feature_schema_sha256: Option<String>,
    /// Metrics on the coordinator's evaluation set, when one is configured.
    #[serde(default)]
    pub metrics: Option<BinaryMetrics>,
    /// The model's differential-privacy guarantee: per participant whose
    /// data went into it, and the worst of them.
    #[serde(default)]
    pub privacy: Option<ModelPrivacy>,
    /// How the round's updates were combined.
    #[serde(default)]
    pub aggregation: Option<AggregationSummary>,
    /// Alert thresholds calibrated to standard false-positive rates on
    /// benign held-out rows (the coordinator's evaluation set, or
    /// `fedshield train`'s test split); what `fedshield detect --alert-fpr`
    /// scores with. Absent in cards written before calibration existed, and
    /// when there was no benign held-out data.
    #[serde(default)]
    pub calibration: Option<ThresholdCalibration>,
}

/// What the aggregation rule did in the round that produced a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregationSummary {
    /// The rule, as configured (`fedavg`, `norm-bound:5`, `trimmed-mean:0.2`, `median`, `multi-krum:1`).
    pub rule: String,
    /// Updates the rule received.
    pub num_updates: usize,
    /// Updates norm bounding scaled down.
    pub num_clipped: usize,
    /// Contributors whose updates Multi-Krum left out.
    pub rejected: Vec<String>,
    /// Set when the round ran secure aggregation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_aggregation: Option<SecureAggregationSummary>,
}

/// What secure aggregation did in the round that produced a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecureAggregationSummary {
    /// "yes": the coordinator saw only the sum of the survivors' updates.
    pub secure_aggregation: String,
    /// The protocol, with its reference.
    pub protocol: String,
    /// Participants whose masked update is in the sum.
    pub num_survivors: usize,
    /// Participants that shared keys and sent no masked update.
    pub num_dropped: usize,
    /// Neighbours each participant shared its secrets with.
    pub degree: usize,
    /// Shares that reconstruct a secret.
    pub threshold: usize,
    /// The distributed-DP statement (mechanism, noise, the fewest updates
    /// it is planned for), when participants added noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed_dp: Option<String>,
}
