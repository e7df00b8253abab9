//! The transforms of a numeric column: fixed steps from a raw value to a feature.
//!
//! Transforms use fixed, declared constants (`standardize` takes a declared mean and
//! standard deviation): nothing is ever computed from a participant's local data, so
//! every participant featurizes the same way and no statistic of private telemetry
//! leaves through the schema.

use serde::{Deserialize, Serialize};

/// One step applied to a numeric column's raw value, with fixed declared constants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Transform {
    /// `ln(1 + x)`; values at or below -1 make the row malformed.
    Log1p,
    /// Limits the value to `min..=max`.
    Clamp { min: f64, max: f64 },
    /// `(x - offset) / divisor`.
    Scale {
        #[serde(default)]
        offset: f64,
        divisor: f64,
    },
    /// `(x - mean) / std` with a declared (never locally computed) mean and std.
    Standardize { mean: f64, std: f64 },
}

impl Transform {
    /// Returns the transformed value (possibly non-finite; the caller checks).
    /// `log1p` of a value at or below -1 is NaN, so that no later clamp can
    /// turn its infinity into a feature.
    pub fn apply(&self, value: f64) -> f64 {
        match *self {
            Transform::Log1p if value <= -1.0 => f64::NAN,
            Transform::Log1p => value.ln_1p(),
            Transform::Clamp { min, max } => value.clamp(min, max),
            Transform::Scale { offset, divisor } => (value - offset) / divisor,
            Transform::Standardize { mean, std } => (value - mean) / std,
        }
    }

    /// Returns the smallest interval holding the transformed values of every
    /// value in `low..=high` that does not make the row malformed; an end is
    /// infinite where the transform can give values without bound (log1p
    /// tends to -inf as its input approaches -1 from above).
    ///
    /// Every transform is monotone, so mapping the two ends is enough.
    pub(super) fn output_range(&self, low: f64, high: f64) -> (f64, f64) {
        let log1p_of = |value: f64| {
            if value > -1.0 {
                value.ln_1p()
            } else {
                f64::NEG_INFINITY
            }
        };
        match *self {
            Transform::Log1p => (log1p_of(low), log1p_of(high)),
            Transform::Clamp { min, max } => (low.clamp(min, max), high.clamp(min, max)),
            Transform::Scale { .. } | Transform::Standardize { .. } => {
                let first = self.apply(low);
                let second = self.apply(high);
                (first.min(second), first.max(second))
            }
        }
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Transform::Log1p => "log1p",
            Transform::Clamp { .. } => "clamp",
            Transform::Scale { .. } => "scale",
            Transform::Standardize { .. } => "standardize",
        }
    }

    /// Appends a problem (prefixed with `path`) for each constant that makes the transform unusable.
    pub(super) fn validate(&self, path: &str, problems: &mut Vec<String>) {
        let mut require_finite = |key: &str, value: f64| {
            if !value.is_finite() {
                problems.push(format!("{path}: {key} must be finite, got {value}"));
            }
        };
        match *self {
            Transform::Log1p => {}
            Transform::Clamp { min, max } => {
                require_finite("min", min);
                require_finite("max", max);
                if min > max {
                    problems.push(format!("{path}: min {min} is greater than max {max}"));
                }
            }
            Transform::Scale { offset, divisor } => {
                require_finite("offset", offset);
                require_finite("divisor", divisor);
                if divisor == 0.0 {
                    problems.push(format!("{path}: divisor must not be 0"));
                }
            }
            Transform::Standardize { mean, std } => {
                require_finite("mean", mean);
                require_finite("std", std);
                if std <= 0.0 {
                    problems.push(format!("{path}: std must be greater than 0, got {std}"));
                }
            }
        }
    }
}
