//! Streaming FedAvg and the checks that keep aggregates finite.
//!
//! [`FedAvg`] is a streaming fold (McMahan et al. 2017, "Communication-Efficient
//! Learning of Deep Networks from Decentralized Data", arXiv:1602.05629): it keeps
//! the running weighted mean of the deltas and the total weight, so its memory is
//! one model's worth of float32 whatever the number of participants.
//!
//! Overflow: a weighted *sum* of float32 values overflows as soon as one large
//! weight meets one large value (one update declaring 2^40 examples with every
//! value 3.0e38 turned a whole model into +inf). The running mean cannot: each
//! fold moves every coordinate to a point between its previous mean and the
//! new value (computed in f64), so every coordinate of the mean stays within
//! the range of the finite values folded in, whatever the weights. What can
//! still leave the float32 range is `base + mean` when a delta pushes a
//! parameter past `f32::MAX` on its own; [`check_applies_finitely`] refuses such
//! an update before it is folded, and [`FedAvg::finish`],
//! [`crate::aggregation::robust::RobustAggregator::finish`] and
//! [`crate::aggregation::momentum::ServerMomentum::apply`]
//! check their results with [`first_non_finite`] as a last line of defence.

use crate::error::{CoreError, Result};

/// Streaming federated averaging: `new = base + Σ wᵢ·Δᵢ / Σ wᵢ`, kept as a
/// running weighted mean `mₖ = mₖ₋₁ + (wₖ / Wₖ)·(Δₖ − mₖ₋₁)` with `Wₖ = Σᵢ≤ₖ wᵢ`,
/// which stays within the range of the deltas folded in and so cannot overflow.
pub struct FedAvg {
    running_mean: Vec<f32>,
    total_weight: f64,
    num_updates: usize,
}

impl FedAvg {
    /// Returns an empty aggregate for models of `num_params` parameters.
    pub fn new(num_params: usize) -> Self {
        FedAvg {
            running_mean: vec![0.0; num_params],
            total_weight: 0.0,
            num_updates: 0,
        }
    }

    /// Returns an empty aggregate for models of `num_params` parameters
    /// whose running mean lives in `buffer`'s memory (its contents are
    /// dropped): a recycled buffer spares a fresh model-sized allocation and
    /// its page faults.
    pub fn with_buffer(mut buffer: Vec<f32>, num_params: usize) -> Self {
        buffer.clear();
        buffer.resize(num_params, 0.0);
        FedAvg {
            running_mean: buffer,
            total_weight: 0.0,
            num_updates: 0,
        }
    }

    /// Returns the number of updates folded in so far.
    pub fn num_updates(&self) -> usize {
        self.num_updates
    }

    /// Returns the sum of the weights folded in so far.
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    /// Folds one whole update (a delta to the base model) with weight `weight`
    /// (its number of training examples, as capped by the caller).
    ///
    /// Finite values and finite weights cannot make the mean overflow: each
    /// coordinate moves to a point between its previous mean and `delta`'s
    /// value.
    ///
    /// # Errors
    /// [`CoreError::ParamCountMismatch`], [`CoreError::InvalidWeight`] (also
    /// when the total weight would stop being finite) or
    /// [`CoreError::NonFiniteParam`] naming the first non-finite value; the
    /// aggregate is unchanged on error.
    pub fn add(&mut self, delta: &[f32], weight: f64) -> Result<()> {
        if delta.len() != self.running_mean.len() {
            return Err(CoreError::ParamCountMismatch {
                expected: self.running_mean.len() as u64,
                actual: delta.len() as u64,
            });
        }
        let next_total_weight = self.total_weight + weight;
        if !(weight.is_finite() && weight > 0.0 && next_total_weight.is_finite()) {
            return Err(CoreError::InvalidWeight(weight));
        }
        if let Some(index) = first_non_finite(delta) {
            return Err(CoreError::NonFiniteParam {
                index: index as u64,
                value: delta[index],
            });
        }
        fold_into_mean(&mut self.running_mean, delta, weight / next_total_weight);
        self.total_weight = next_total_weight;
        self.num_updates += 1;
        Ok(())
    }

    /// Returns the next global model, `base + weighted mean of the deltas`,
    /// reusing the mean's memory.
    ///
    /// # Errors
    /// [`CoreError::EmptyAggregate`] if nothing was added,
    /// [`CoreError::ParamCountMismatch`] if `base` has the wrong size, or
    /// [`CoreError::NonFiniteAggregate`] if a parameter of the result is not
    /// finite (only possible when an update skipped [`check_applies_finitely`]).
    pub fn finish(self, base: &[f32]) -> Result<Vec<f32>> {
        if self.num_updates == 0 {
            return Err(CoreError::EmptyAggregate);
        }
        if base.len() != self.running_mean.len() {
            return Err(CoreError::ParamCountMismatch {
                expected: self.running_mean.len() as u64,
                actual: base.len() as u64,
            });
        }
        let mut next = self.running_mean;
        for (value, base_value) in next.iter_mut().zip(base) {
            *value += base_value;
        }
        check_finite_aggregate(&next, "weighted mean")?;
        Ok(next)
    }
}

/// Returns the index of the first value that is not finite, if any.
pub fn first_non_finite(values: &[f32]) -> Option<usize> {
    // A whole-slice check first: it vectorizes, and almost every slice passes.
    if values.iter().all(|value| value.is_finite()) {
        return None;
    }
    values.iter().position(|value| !value.is_finite())
}

/// Checks that every parameter of `values` (an aggregate about to become a
/// model) is finite.
///
/// # Errors
/// [`CoreError::NonFiniteAggregate`] naming the first non-finite index and
/// `stage`, the step that produced it.
pub fn check_finite_aggregate(values: &[f32], stage: &'static str) -> Result<()> {
    match first_non_finite(values) {
        None => Ok(()),
        Some(index) => Err(CoreError::NonFiniteAggregate {
            index: index as u64,
            stage,
        }),
    }
}

/// Checks that `delta` applied on its own to `base` keeps every parameter
/// finite in float32 (`base + delta` does not overflow).
///
/// Every aggregation rule returns, per coordinate, a value between the
/// smallest and the largest of the (possibly clipped) deltas it combines, so
/// when each update passes this check the aggregate added to the base is
/// finite too; an update that fails it is refused before it is folded, which
/// names its sender.
///
/// # Errors
/// [`CoreError::ParamCountMismatch`] or [`CoreError::OverflowingUpdate`]
/// naming the first parameter that would overflow.
pub fn check_applies_finitely(base: &[f32], delta: &[f32]) -> Result<()> {
    if base.len() != delta.len() {
        return Err(CoreError::ParamCountMismatch {
            expected: base.len() as u64,
            actual: delta.len() as u64,
        });
    }
    let all_finite = base
        .iter()
        .zip(delta)
        .all(|(base_value, delta_value)| (base_value + delta_value).is_finite());
    if all_finite {
        return Ok(());
    }
    let index = base
        .iter()
        .zip(delta)
        .position(|(base_value, delta_value)| !(base_value + delta_value).is_finite())
        .expect("a slice that is not all finite has a first non-finite sum");
    Err(CoreError::OverflowingUpdate {
        index: index as u64,
    })
}

/// `mean += fraction · (values − mean)`, with `fraction` = w / W in (0, 1].
///
/// Computed in f64 and rounded once: the exact result lies between the old
/// mean and the value, both finite float32, and rounding to the nearest
/// float32 cannot leave that interval, so the mean never overflows (a
/// float32 `values − mean` could: 3e38 − (−3e38)). Written so the compiler
/// vectorizes it.
fn fold_into_mean(mean: &mut [f32], values: &[f32], fraction: f64) {
    for (mean_value, value) in mean.iter_mut().zip(values) {
        let old = f64::from(*mean_value);
        *mean_value = (old + fraction * (f64::from(*value) - old)) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedavg_is_the_sample_weighted_mean_of_deltas_added_to_the_base() {
        let base = [1.0, 2.0, 3.0];
        let mut aggregate = FedAvg::new(3);
        aggregate.add(&[1.0, 0.0, -1.0], 1.0).unwrap();
        aggregate.add(&[4.0, 3.0, 2.0], 3.0).unwrap();
        let next = aggregate.finish(&base).unwrap();
        // mean delta = (1·[1,0,-1] + 3·[4,3,2]) / 4 = [3.25, 2.25, 1.25]
        assert_eq!(next, vec![4.25, 4.25, 4.25]);
    }

    #[test]
    fn invalid_updates_leave_the_aggregate_unchanged() {
        let mut aggregate = FedAvg::new(2);
        assert!(aggregate.add(&[1.0], 1.0).is_err());
        assert!(aggregate.add(&[1.0, 1.0], 0.0).is_err());
        assert!(aggregate.add(&[1.0, 1.0], f64::NAN).is_err());
        assert_eq!(aggregate.num_updates(), 0);
        assert!(matches!(
            aggregate.finish(&[0.0, 0.0]),
            Err(CoreError::EmptyAggregate)
        ));
    }

    #[test]
    fn one_update_declaring_two_to_the_forty_examples_with_values_of_3e38_leaves_the_mean_finite() {
        // The attack of the finding: the float32 sum Σ wᵢ·Δᵢ overflowed to +inf.
        let mut aggregate = FedAvg::new(4);
        aggregate.add(&[0.01, -0.02, 0.03, 0.0], 1500.0).unwrap();
        aggregate.add(&[3.0e38; 4], (1u64 << 40) as f64).unwrap();
        aggregate.add(&[-0.01, 0.02, 0.01, 0.0], 1200.0).unwrap();
        let next = aggregate.finish(&[0.5; 4]).unwrap();
        assert!(next.iter().all(|value| value.is_finite()), "{next:?}");
    }

    #[test]
    fn colluding_updates_at_the_float32_limit_with_the_largest_weights_keep_the_mean_in_range() {
        let mut aggregate = FedAvg::new(3);
        aggregate
            .add(&[f32::MAX, -f32::MAX, f32::MAX], 1e12)
            .unwrap();
        aggregate
            .add(&[f32::MAX, -f32::MAX, -f32::MAX], 1e12)
            .unwrap();
        aggregate
            .add(&[f32::MAX, -f32::MAX, f32::MAX], 1e12)
            .unwrap();
        let next = aggregate.finish(&[0.0; 3]).unwrap();
        assert_eq!(next[0], f32::MAX);
        assert_eq!(next[1], -f32::MAX);
        assert!(next[2].is_finite() && next[2] > 0.0, "{next:?}");
    }

    #[test]
    fn the_running_mean_stays_between_the_smallest_and_the_largest_folded_value() {
        let values = [
            (1.0e38f32, 7.0),
            (-2.5e38, 1.0),
            (3.3e38, 1e9),
            (-3.4e38, 3.0),
            (0.25, 1e-3),
        ];
        let mut aggregate = FedAvg::new(1);
        let mut smallest = f32::INFINITY;
        let mut largest = f32::NEG_INFINITY;
        for (value, weight) in values {
            aggregate.add(&[value], weight).unwrap();
            smallest = smallest.min(value);
            largest = largest.max(value);
            let mean = aggregate.running_mean[0];
            assert!(
                (smallest..=largest).contains(&mean),
                "mean {mean} outside [{smallest}, {largest}]"
            );
        }
    }

    #[test]
    fn an_update_that_carries_a_parameter_past_the_float32_limit_on_its_own_is_named_by_index() {
        let base = [1.0f32, 3.0e38, -3.0e38];
        check_applies_finitely(&base, &[1e30, 1e37, -1e37]).unwrap();
        assert!(matches!(
            check_applies_finitely(&base, &[0.0, 1e38, 0.0]),
            Err(CoreError::OverflowingUpdate { index: 1 })
        ));
        assert!(matches!(
            check_applies_finitely(&base, &[0.0, 0.0, -1e38]),
            Err(CoreError::OverflowingUpdate { index: 2 })
        ));
        assert!(matches!(
            check_applies_finitely(&base, &[0.0]),
            Err(CoreError::ParamCountMismatch { .. })
        ));
    }

    #[test]
    fn a_result_that_overflows_the_base_is_refused_instead_of_returned() {
        let mut aggregate = FedAvg::new(2);
        aggregate.add(&[0.0, 3.0e38], 1.0).unwrap();
        match aggregate.finish(&[0.0, 3.0e38]) {
            Err(CoreError::NonFiniteAggregate { index, stage }) => {
                assert_eq!(index, 1);
                assert_eq!(stage, "weighted mean");
            }
            other => panic!("expected a non-finite aggregate, got {other:?}"),
        }
    }

    #[test]
    fn non_finite_values_and_weights_that_overflow_the_total_are_refused() {
        let mut aggregate = FedAvg::new(2);
        aggregate.add(&[1.0, 1.0], f64::MAX).unwrap();
        assert!(matches!(
            aggregate.add(&[1.0, 1.0], f64::MAX),
            Err(CoreError::InvalidWeight(_))
        ));
        assert!(matches!(
            aggregate.add(&[1.0, f32::INFINITY], 1.0),
            Err(CoreError::NonFiniteParam { index: 1, .. })
        ));
        assert_eq!(aggregate.num_updates(), 1);
        assert_eq!(aggregate.finish(&[0.0, 0.0]).unwrap(), vec![1.0, 1.0]);
    }
}
