//! Aggregation of participant updates into the next global model.
//!
//! [`FedAvg`] is a streaming fold (McMahan et al. 2017, "Communication-Efficient
//! Learning of Deep Networks from Decentralized Data", arXiv:1602.05629): it keeps
//! one running weighted sum of the deltas and the total weight, so its memory is
//! one model's worth of float32 whatever the number of participants.

use crate::error::{CoreError, Result};

/// Streaming federated averaging: `new = base + Σ wᵢ·Δᵢ / Σ wᵢ`.
pub struct FedAvg {
    weighted_sum: Vec<f32>,
    total_weight: f64,
    num_updates: usize,
}

impl FedAvg {
    /// Returns an empty aggregate for models of `num_params` parameters.
    pub fn new(num_params: usize) -> Self {
        FedAvg {
            weighted_sum: vec![0.0; num_params],
            total_weight: 0.0,
            num_updates: 0,
        }
    }

    /// Returns an empty aggregate for models of `num_params` parameters
    /// whose sum lives in `buffer`'s memory (its contents are dropped): a
    /// recycled buffer spares a fresh model-sized allocation and its page
    /// faults.
    pub fn with_buffer(mut buffer: Vec<f32>, num_params: usize) -> Self {
        buffer.clear();
        buffer.resize(num_params, 0.0);
        FedAvg {
            weighted_sum: buffer,
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
    /// (its number of training examples).
    ///
    /// # Errors
    /// [`CoreError::ParamCountMismatch`] or [`CoreError::InvalidWeight`]; the
    /// aggregate is unchanged on error.
    pub fn add(&mut self, delta: &[f32], weight: f64) -> Result<()> {
        if delta.len() != self.weighted_sum.len() {
            return Err(CoreError::ParamCountMismatch {
                expected: self.weighted_sum.len() as u64,
                actual: delta.len() as u64,
            });
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(CoreError::InvalidWeight(weight));
        }
        fold_into(&mut self.weighted_sum, delta, weight as f32);
        self.total_weight += weight;
        self.num_updates += 1;
        Ok(())
    }

    /// Returns the next global model, `base + weighted mean of the deltas`,
    /// reusing the sum's memory.
    ///
    /// # Errors
    /// [`CoreError::EmptyAggregate`] if nothing was added, or
    /// [`CoreError::ParamCountMismatch`] if `base` has the wrong size.
    pub fn finish(self, base: &[f32]) -> Result<Vec<f32>> {
        if self.num_updates == 0 {
            return Err(CoreError::EmptyAggregate);
        }
        if base.len() != self.weighted_sum.len() {
            return Err(CoreError::ParamCountMismatch {
                expected: self.weighted_sum.len() as u64,
                actual: base.len() as u64,
            });
        }
        let inverse_weight = (1.0 / self.total_weight) as f32;
        let mut next = self.weighted_sum;
        for (value, base_value) in next.iter_mut().zip(base) {
            *value = base_value + *value * inverse_weight;
        }
        Ok(next)
    }
}

/// Server-side optimizer state for FedAvgM (Hsu, Qi & Brown 2019, "Measuring
/// the Effects of Non-Identical Data Distribution for Federated Visual
/// Classification", arXiv:1909.06335): the averaged delta is treated as a
/// pseudo-gradient, `v ← β·v + Δ̄`, `w ← w + η·v`. With β = 0 and η = 1 it is
/// plain FedAvg.
#[derive(Debug, Clone)]
pub struct ServerMomentum {
    /// β: how much of the previous rounds' direction is kept.
    pub momentum: f32,
    /// η: the server learning rate.
    pub learning_rate: f32,
    velocity: Option<Vec<f32>>,
}

impl ServerMomentum {
    /// Returns the server optimizer with momentum β and learning rate η.
    pub fn new(momentum: f32, learning_rate: f32) -> Self {
        ServerMomentum {
            momentum,
            learning_rate,
            velocity: None,
        }
    }

    /// Returns true when this is plain FedAvg (β = 0, η = 1).
    pub fn is_plain(&self) -> bool {
        self.momentum == 0.0 && self.learning_rate == 1.0
    }

    /// Turns `next = base + Δ̄` (from [`FedAvg::finish`]) into
    /// `base + η·(β·v + Δ̄)`, updating the velocity in place.
    pub fn apply(&mut self, base: &[f32], next: &mut [f32]) {
        if self.is_plain() {
            return;
        }
        let velocity = self.velocity.get_or_insert_with(|| vec![0.0; base.len()]);
        if velocity.len() != base.len() {
            *velocity = vec![0.0; base.len()];
        }
        for ((value, base_value), velocity_value) in
            next.iter_mut().zip(base).zip(velocity.iter_mut())
        {
            let mean_delta = *value - base_value;
            *velocity_value = self.momentum * *velocity_value + mean_delta;
            *value = base_value + self.learning_rate * *velocity_value;
        }
    }
}

/// `sum += weight * values`, written so the compiler vectorizes it.
fn fold_into(sum: &mut [f32], values: &[f32], weight: f32) {
    for (accumulated, value) in sum.iter_mut().zip(values) {
        *accumulated += weight * value;
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
    fn server_momentum_accumulates_the_mean_delta_across_rounds() {
        let mut server = ServerMomentum::new(0.5, 1.0);
        let base = [0.0f32, 0.0];
        let mut first = [1.0f32, -2.0];
        server.apply(&base, &mut first);
        assert_eq!(first, [1.0, -2.0]);
        let mut second = [2.0f32, -4.0]; // base [1, -2], mean delta [1, -2]
        server.apply(&[1.0, -2.0], &mut second);
        // v = 0.5·[1, -2] + [1, -2] = [1.5, -3]
        assert_eq!(second, [2.5, -5.0]);
        let mut plain = ServerMomentum::new(0.0, 1.0);
        let mut unchanged = [3.0f32];
        plain.apply(&[1.0], &mut unchanged);
        assert_eq!(unchanged, [3.0]);
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
}
