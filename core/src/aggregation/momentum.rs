//! Server momentum (FedAvgM): the server's optimizer over rounds, applied
//! to the aggregate of any rule.

use crate::error::{CoreError, Result};

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

    /// Turns `next = base + Δ̄` (from [`crate::aggregation::fedavg::FedAvg::finish`]) into
    /// `base + η·(β·v + Δ̄)`, updating the velocity in place.
    ///
    /// # Errors
    /// [`CoreError::NonFiniteAggregate`] if a parameter of the result or of
    /// the new velocity would not be finite; `next` and the velocity are then
    /// unchanged, so one refused step does not poison later rounds.
    pub fn apply(&mut self, base: &[f32], next: &mut [f32]) -> Result<()> {
        if self.is_plain() {
            return Ok(());
        }
        let velocity = self.velocity.get_or_insert_with(|| vec![0.0; base.len()]);
        if velocity.len() != base.len() {
            *velocity = vec![0.0; base.len()];
        }
        let (momentum, learning_rate) = (self.momentum, self.learning_rate);
        let step = |value: f32, base_value: f32, velocity_value: f32| -> (f32, f32) {
            let mean_delta = value - base_value;
            let next_velocity = momentum * velocity_value + mean_delta;
            (base_value + learning_rate * next_velocity, next_velocity)
        };
        // First pass: check, without writing anything.
        let overflow = next.iter().zip(base).zip(velocity.iter()).position(
            |((value, base_value), velocity_value)| {
                let (next_value, next_velocity) = step(*value, *base_value, *velocity_value);
                !(next_value.is_finite() && next_velocity.is_finite())
            },
        );
        if let Some(index) = overflow {
            return Err(CoreError::NonFiniteAggregate {
                index: index as u64,
                stage: "server momentum",
            });
        }
        for ((value, base_value), velocity_value) in
            next.iter_mut().zip(base).zip(velocity.iter_mut())
        {
            (*value, *velocity_value) = step(*value, *base_value, *velocity_value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_momentum_accumulates_the_mean_delta_across_rounds() {
        let mut server = ServerMomentum::new(0.5, 1.0);
        let base = [0.0f32, 0.0];
        let mut first = [1.0f32, -2.0];
        server.apply(&base, &mut first).unwrap();
        assert_eq!(first, [1.0, -2.0]);
        let mut second = [2.0f32, -4.0]; // base [1, -2], mean delta [1, -2]
        server.apply(&[1.0, -2.0], &mut second).unwrap();
        // v = 0.5·[1, -2] + [1, -2] = [1.5, -3]
        assert_eq!(second, [2.5, -5.0]);
        let mut plain = ServerMomentum::new(0.0, 1.0);
        let mut unchanged = [3.0f32];
        plain.apply(&[1.0], &mut unchanged).unwrap();
        assert_eq!(unchanged, [3.0]);
    }

    #[test]
    fn a_server_momentum_step_that_would_overflow_changes_neither_the_model_nor_the_velocity() {
        let mut server = ServerMomentum::new(0.9, 10.0);
        let base = [0.0f32, 0.0];
        let mut first = [1.0f32, 1.0];
        server.apply(&base, &mut first).unwrap();
        assert_eq!(first, [10.0, 10.0]);
        let velocity_before = server.velocity.clone();
        let mut huge = [1.0f32, 3.0e38];
        match server.apply(&base, &mut huge) {
            Err(CoreError::NonFiniteAggregate { index, stage }) => {
                assert_eq!(index, 1);
                assert_eq!(stage, "server momentum");
            }
            other => panic!("expected a refused step, got {other:?}"),
        }
        assert_eq!(huge, [1.0, 3.0e38]);
        assert_eq!(server.velocity, velocity_before);
        let mut next = [1.0f32, 1.0];
        server.apply(&base, &mut next).unwrap();
        // v = 0.9·[1, 1] + [1, 1]
        assert_eq!(next, [19.0, 19.0]);
    }
}
