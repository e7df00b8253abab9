//! How much one update weighs in its round's aggregate.
//!
//! An update's header declares `num_samples`, its number of local training
//! examples, which FedAvg (and the rules that average, norm bounding and
//! Multi-Krum) use as its weight. The coordinator cannot check that number: a
//! participant may lie. Two settings bound what a lie buys:
//!
//! - `round.max_samples_per_update` (`--max-samples-per-update`, default
//!   2^24 = 16,777,216): the protocol bound. A header declaring 0 or more is
//!   refused with INVALID_ARGUMENT before any of its data is read. In a round
//!   whose plan has DP-SGD the only valid count is exactly 1: DP updates are
//!   already averaged over their batches, and a weight that depended on the
//!   size of the private data would disclose it (DESIGN.md, "Privacy model").
//! - `round.max_update_weight` (`--max-update-weight`, default 100,000): the
//!   weight cap. An update weighs `min(num_samples, max_update_weight)`, so a
//!   participant that lies about its size gains at most the cap, whatever it
//!   declares: next to honest participants of total weight `H`, one liar
//!   carries at most `cap / (cap + H)` of the round's weight, and `k` colluding
//!   liars at most `k·cap / (k·cap + H)`. Participants with more examples than
//!   the cap weigh the same as one with exactly the cap. A cap of 1 weighs every
//!   update the same (what DP rounds do anyway).
//!
//! The rule depends only on the declared number and the configured cap, never
//! on what other participants declare, so it streams (the weight is known when
//! the update is folded) and cannot be gamed by declaring more. Robust rules
//! (`--aggregation`) bound what the *values* of a hostile update can do.

use crate::error::{CoordinatorError, Result};

/// Default of `round.max_samples_per_update`: 2^24 examples.
pub const DEFAULT_MAX_SAMPLES_PER_UPDATE: u64 = 1 << 24;

/// Default of `round.max_update_weight`.
pub const DEFAULT_MAX_UPDATE_WEIGHT: u64 = 100_000;

/// The largest `round.max_samples_per_update` a configuration may set: 2^40.
pub const MAX_SAMPLES_PER_UPDATE_LIMIT: u64 = 1 << 40;

/// The weight of one accepted update in its round's aggregate: its declared
/// example count, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UpdateWeight(u64);

impl UpdateWeight {
    /// Returns the weight as the aggregators take it.
    pub fn as_f64(self) -> f64 {
        self.0 as f64
    }

    /// Returns the weight as a count.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// The bounds on declared example counts and on the weight they give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateWeighting {
    /// A header may declare at most this many examples; more is refused.
    pub max_samples_per_update: u64,
    /// No update weighs more than this, whatever it declares.
    pub max_update_weight: u64,
}

impl Default for UpdateWeighting {
    /// Returns the documented defaults: 2^24 examples, weight cap 100,000.
    fn default() -> Self {
        UpdateWeighting {
            max_samples_per_update: DEFAULT_MAX_SAMPLES_PER_UPDATE,
            max_update_weight: DEFAULT_MAX_UPDATE_WEIGHT,
        }
    }
}

impl UpdateWeighting {
    /// Returns every problem with the settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=MAX_SAMPLES_PER_UPDATE_LIMIT).contains(&self.max_samples_per_update) {
            problems.push(format!(
                "round.max_samples_per_update ({}) must be in 1..={MAX_SAMPLES_PER_UPDATE_LIMIT}",
                self.max_samples_per_update
            ));
        }
        if self.max_update_weight == 0 {
            problems.push("round.max_update_weight must be at least 1".to_string());
        }
        problems
    }

    /// Checks the `num_samples` an update header declares and returns the
    /// update's weight, `min(num_samples, max_update_weight)`.
    /// `differentially_private` is whether the round's plan has DP-SGD.
    ///
    /// # Errors
    /// [`CoordinatorError::MalformedUpdate`] naming the declared value and the
    /// bound it breaks: 0, more than `max_samples_per_update`, or anything but
    /// 1 in a DP round.
    pub fn weight_of(
        &self,
        num_samples: u64,
        differentially_private: bool,
    ) -> Result<UpdateWeight> {
        if num_samples == 0 || num_samples > self.max_samples_per_update {
            return Err(CoordinatorError::MalformedUpdate(format!(
                "num_samples is {num_samples}, must be in 1..={} (round.max_samples_per_update)",
                self.max_samples_per_update
            )));
        }
        if differentially_private && num_samples != 1 {
            return Err(CoordinatorError::MalformedUpdate(format!(
                "num_samples is {num_samples}, must be exactly 1 in a round whose plan has \
                 differential privacy: every DP update weighs the same, whatever the size of its data"
            )));
        }
        Ok(UpdateWeight(num_samples.min(self.max_update_weight)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_above_the_protocol_bound_are_refused_naming_the_value_and_the_bound() {
        let weighting = UpdateWeighting::default();
        let error = weighting.weight_of(1 << 40, false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "malformed update: num_samples is 1099511627776, must be in 1..=16777216 (round.max_samples_per_update)"
        );
        assert!(weighting.weight_of(0, false).is_err());
        assert!(
            weighting
                .weight_of(DEFAULT_MAX_SAMPLES_PER_UPDATE + 1, false)
                .is_err()
        );
        assert_eq!(
            weighting
                .weight_of(DEFAULT_MAX_SAMPLES_PER_UPDATE, false)
                .unwrap()
                .get(),
            DEFAULT_MAX_UPDATE_WEIGHT
        );
    }

    #[test]
    fn a_dp_round_accepts_exactly_one_sample() {
        let weighting = UpdateWeighting::default();
        assert_eq!(weighting.weight_of(1, true).unwrap().get(), 1);
        let error = weighting.weight_of(1500, true).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("num_samples is 1500, must be exactly 1"),
            "{error}"
        );
    }

    #[test]
    fn a_weight_is_the_declared_count_capped_at_the_configured_maximum() {
        let weighting = UpdateWeighting {
            max_samples_per_update: 1_000_000,
            max_update_weight: 5_000,
        };
        assert_eq!(weighting.weight_of(1500, false).unwrap().get(), 1500);
        assert_eq!(weighting.weight_of(5_000, false).unwrap().get(), 5_000);
        assert_eq!(weighting.weight_of(999_999, false).unwrap().get(), 5_000);
        assert_eq!(weighting.weight_of(999_999, false).unwrap().as_f64(), 5e3);
    }

    #[test]
    fn out_of_range_settings_are_reported_with_their_keys() {
        let problems = UpdateWeighting {
            max_samples_per_update: 0,
            max_update_weight: 0,
        }
        .problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("round.max_samples_per_update (0)"));
        assert!(problems[1].contains("round.max_update_weight"));
        let too_large = UpdateWeighting {
            max_samples_per_update: MAX_SAMPLES_PER_UPDATE_LIMIT + 1,
            max_update_weight: 1,
        };
        assert_eq!(too_large.problems().len(), 1);
        assert!(UpdateWeighting::default().problems().is_empty());
    }
}
