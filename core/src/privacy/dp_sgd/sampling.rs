//! Poisson sampling of the rows of one DP-SGD step.

use rand::Rng;
use rand_distr::{Distribution, Geometric};

use crate::error::{CoreError, Result};
use crate::units::SamplingRate;

/// Poisson subsampling: every row joins a sample independently with
/// probability q. Instead of one coin per row, the gaps between sampled rows
/// are drawn from the geometric distribution (failures before a success),
/// which costs O(q·N) draws per sample.
pub(super) struct PoissonSampler {
    num_rows: u64,
    gap: Geometric,
}

impl PoissonSampler {
    pub(super) fn new(num_rows: usize, sampling_rate: f64) -> Result<Self> {
        let sampling_rate = SamplingRate::new(sampling_rate)?.get();
        let gap = Geometric::new(sampling_rate).map_err(|error| {
            CoreError::InvalidPrivacy(format!("sampling_rate is {sampling_rate}: {error}"))
        })?;
        Ok(PoissonSampler {
            num_rows: num_rows as u64,
            gap,
        })
    }

    /// Replaces `rows` with a fresh sample, in increasing order.
    pub(super) fn sample_into<R: Rng + ?Sized>(&self, rng: &mut R, rows: &mut Vec<usize>) {
        rows.clear();
        // Geometric returns u64::MAX when q is too small to ever succeed.
        let mut next_row = self.gap.sample(rng);
        while next_row < self.num_rows {
            rows.push(next_row as usize);
            next_row = next_row
                .saturating_add(1)
                .saturating_add(self.gap.sample(rng));
        }
    }
}
