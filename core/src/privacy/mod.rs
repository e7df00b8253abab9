//! Differential privacy: the quantities, the mechanisms, their accounting,
//! and the guarantees that travel between participants, the coordinator and
//! model cards.
//!
//! - [`dp_sgd`]: record-level DP-SGD (per-example clipping with ghost norms, Poisson sampling, Gaussian noise).
//! - [`noise`]: Gaussian noise from an OS-seeded CSPRNG.
//! - [`org_dp`]: organization-level DP of a whole update (clipping and Gaussian noise).
//! - [`distributed`]: distributed discrete Gaussian DP under secure aggregation (rotation, quantization, exact sampler).
//! - [`accountant`]: Rényi-DP accounting of the subsampled Gaussian, (ε, δ) conversion and noise calibration.
//! - `secure_target`: the secure-aggregation part of a plan (scale, distributed noise) and its accounting equivalent.
//! - `target`: an operator's (ε, δ) target and its calibration into a DP plan.
//! - `report`: a participant's report of its ledger's cumulative guarantee.
//! - `guarantee`: a model card's privacy statement and the ε a plan's rounds imply.
//! - [`lineage`]: a federation's privacy promise over all its rounds, and the check that a restart keeps it.
//!
//! Who computes what: the coordinator turns the operator's
//! [`PrivacyTarget`] into a DP plan with [`calibrate_plan`]; each
//! participant trains with [`dp_sgd`], keeps its own ledger and sends a
//! [`PrivacyReport`] with each update; each model card carries a
//! [`ModelPrivacy`].

pub mod accountant;
pub mod distributed;
pub mod dp_sgd;
mod guarantee;
pub mod lineage;
pub mod noise;
pub mod org_dp;
mod report;
mod secure_target;
mod target;

pub use guarantee::{
    DP_SGD_MECHANISM, DpRoundPlan, Guarantee, ModelPrivacy, ORG_DP_MECHANISM, ParticipantPrivacy,
    PlansGuarantee, composed_epsilon, org_level_mechanism, plans_guarantee, record_level_mechanism,
    record_level_mechanism_at,
};
pub use report::PrivacyReport;
pub use secure_target::{
    DEFAULT_ROUNDING_BETA, DISTRIBUTED_DP_MECHANISM, SecureAggregationRequest,
    secure_aggregation_plan,
};
pub use target::{OrgPrivacyTarget, PrivacyTarget, calibrate_plan};
