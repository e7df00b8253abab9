//! The fingerprint of a training plan: the sha256 of its canonical
//! serialization, so that two plans with the same fingerprint train (and,
//! with DP, privatize) identically.
//!
//! A participant keys the privatized update it already computed by the base
//! model and this fingerprint: a retried round on the same base version with
//! the same plan gets that update again, re-sent at no privacy cost
//! (post-processing of a DP output), instead of a second training run that
//! would spend again (docs/PRIVACY.md, "Retried rounds").
//!
//! The fingerprint is computed from the plan's serde serialization, field by
//! field as declared, nested DP plans included: a field added to the plan
//! later is part of the fingerprint without any change here.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plan::TrainingPlan;

/// The sha256 (lowercase hex) of a training plan's canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlanFingerprint(String);

impl PlanFingerprint {
    /// Returns the fingerprint of `plan`: the sha256 of its JSON serialization
    /// (fields in declaration order; floats written so that they read back
    /// exactly, so equal plans give equal bytes).
    pub fn of(plan: &TrainingPlan) -> Self {
        // Serializing a plain struct of numbers and options into memory
        // cannot fail.
        let canonical =
            serde_json::to_vec(plan).expect("a training plan serializes to JSON in memory");
        PlanFingerprint(hex::encode(Sha256::digest(&canonical)))
    }

    /// Returns the fingerprint as lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlanFingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DpSgdPlan, OrgDpPlan};

    fn dp_plan() -> TrainingPlan {
        let mut plan = TrainingPlan::new().with_learning_rate(0.5);
        plan.dp_sgd = Some(DpSgdPlan::new(50, 1000, 1.1, 1.0, 20));
        plan
    }

    #[test]
    fn equal_plans_have_equal_fingerprints() {
        assert_eq!(
            PlanFingerprint::of(&dp_plan()),
            PlanFingerprint::of(&dp_plan())
        );
        assert_eq!(PlanFingerprint::of(&dp_plan()).as_str().len(), 64);
    }

    #[test]
    fn a_change_in_any_field_nested_ones_included_changes_the_fingerprint() {
        let base = PlanFingerprint::of(&dp_plan());
        let mut other_noise = dp_plan();
        other_noise.dp_sgd = Some(DpSgdPlan::new(50, 1000, 1.1000001, 1.0, 20));
        let mut other_steps = dp_plan();
        other_steps.dp_sgd = Some(DpSgdPlan::new(50, 1000, 1.1, 1.0, 21));
        let mut other_rate = dp_plan();
        other_rate.learning_rate = 0.25;
        let mut with_org = dp_plan();
        with_org.org_dp = Some(OrgDpPlan::new(1.0, 2.0));
        for changed in [other_noise, other_steps, other_rate, with_org] {
            assert_ne!(PlanFingerprint::of(&changed), base, "{changed:?}");
        }
    }
}
