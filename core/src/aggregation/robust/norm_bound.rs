//! Norm bounding (Sun et al. 2019, "Can You Really Backdoor Federated
//! Learning?", arXiv:1911.07963): each update is scaled down to L2 norm C
//! if it is larger, then the weighted mean is taken as it streams in.

use super::invalid;
use crate::error::Result;

/// Checks C: positive and finite.
pub(super) fn validate(max_norm: f64) -> Result<()> {
    if max_norm.is_finite() && max_norm > 0.0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "norm-bound max_norm must be positive and finite, got {max_norm}"
        )))
    }
}

/// Scales `delta`, whose squared L2 norm (computed in f64) is
/// `squared_norm`, down to norm `max_norm` if it is larger; returns whether
/// it did.
pub(super) fn clip(delta: &mut [f32], squared_norm: f64, max_norm: f64) -> bool {
    let norm = squared_norm.sqrt();
    if norm <= max_norm {
        return false;
    }
    let scale = (max_norm / norm) as f32;
    for value in delta {
        *value *= scale;
    }
    true
}
