//! A participant's [`PrivacyReport`]: the cumulative guarantee its own
//! ledger (the source of truth) holds, sent with each update. Each
//! participant samples with its own rate q = B/N (N: its rows, at least
//! N_min), composes every run it took part in, and reports the total; a
//! larger N means a smaller q and a smaller ε than the promise.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::units::Delta;

/// A participant's statement, sent with each update, of everything its
/// ledger holds after this round: the cumulative guarantee of its records
/// (and of the organization as a whole, with organization-level DP).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyReport {
    /// Record-level ε over every round the participant ever trained for.
    pub epsilon: f64,
    /// The δ the participant accounts with.
    pub delta: f64,
    /// Organization-level ε, when the plan has organization-level DP.
    #[serde(default)]
    pub org_epsilon: Option<f64>,
    /// Rounds recorded in the participant's ledger, this one included.
    pub num_rounds: u64,
}

impl PrivacyReport {
    /// Checks a report that came over the network.
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(CoreError::InvalidPrivacy(format!(
                "reported epsilon is {}, must be finite and non-negative",
                self.epsilon
            )));
        }
        Delta::named("reported delta", self.delta)?;
        if let Some(org_epsilon) = self.org_epsilon
            && !(org_epsilon.is_finite() && org_epsilon >= 0.0)
        {
            return Err(CoreError::InvalidPrivacy(format!(
                "reported org_epsilon is {org_epsilon}, must be finite and non-negative"
            )));
        }
        if self.num_rounds == 0 {
            return Err(CoreError::InvalidPrivacy(
                "reported num_rounds is 0, a report comes with at least one recorded round"
                    .to_string(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_from_the_network_are_checked() {
        let good = PrivacyReport {
            epsilon: 1.0,
            delta: 1e-5,
            org_epsilon: Some(2.0),
            num_rounds: 3,
        };
        assert!(good.validate().is_ok());
        for bad in [
            PrivacyReport {
                epsilon: f64::NAN,
                ..good
            },
            PrivacyReport { delta: 0.0, ..good },
            PrivacyReport {
                org_epsilon: Some(-1.0),
                ..good
            },
            PrivacyReport {
                num_rounds: 0,
                ..good
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
