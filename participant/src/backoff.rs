//! Exponential backoff with jitter for reconnecting to the coordinator.

use std::time::Duration;

use rand::RngExt;

/// Reconnection delays: `initial · 2ⁿ` capped at `max`, each scaled by a
/// random factor in [0.5, 1) so that many participants do not reconnect in
/// lockstep after a coordinator restart.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    num_failures: u32,
}

impl Backoff {
    /// Returns a backoff starting at `initial`, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            num_failures: 0,
        }
    }

    /// Returns the delay before the next attempt and counts a failure.
    pub fn next_delay(&mut self) -> Duration {
        let exponent = self.num_failures.min(20);
        self.num_failures = self.num_failures.saturating_add(1);
        let ceiling = self.initial.saturating_mul(1 << exponent).min(self.max);
        ceiling.mul_f64(rand::rng().random_range(0.5..1.0))
    }

    /// Forgets past failures after a successful connection.
    pub fn reset(&mut self) {
        self.num_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = backoff.next_delay();
        assert!(first >= Duration::from_millis(50) && first < Duration::from_millis(100));
        let second = backoff.next_delay();
        assert!(second >= Duration::from_millis(100) && second < Duration::from_millis(200));
        for _ in 0..10 {
            assert!(backoff.next_delay() < Duration::from_secs(1));
        }
        backoff.reset();
        assert!(backoff.next_delay() < Duration::from_millis(100));
    }
}
