//! Gaussian noise for differential privacy, drawn from a CSPRNG seeded by
//! the operating system ([`os_seeded_rng`]).

use rand::rngs::{ChaCha20Rng, SysRng};
use rand::{CryptoRng, Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::error::{CoreError, Result};

/// Returns a CSPRNG (ChaCha20) seeded from the operating system, for DP noise.
///
/// # Errors
/// [`CoreError::Training`] if the operating system cannot provide a seed.
pub fn os_seeded_rng() -> Result<ChaCha20Rng> {
    ChaCha20Rng::try_from_rng(&mut SysRng).map_err(|error| {
        CoreError::Training(format!(
            "cannot seed the noise generator from the operating system: {error}"
        ))
    })
}

/// Adds independent N(0, std²) noise, drawn in f64, to each value.
///
/// # Panics
/// If `std` is negative or not finite; plans' `validate` rule that out.
pub fn add_gaussian_noise<R: Rng + CryptoRng + ?Sized>(values: &mut [f32], std: f64, rng: &mut R) {
    if std == 0.0 {
        return;
    }
    let normal = Normal::new(0.0, std).expect("noise std is finite and non-negative");
    for value in values {
        *value += normal.sample(rng) as f32;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Returns a generator with a fixed seed, for reproducible tests.
    pub(crate) fn seeded_rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    pub(crate) fn l2_norm(values: &[f32]) -> f64 {
        values
            .iter()
            .map(|&value| f64::from(value) * f64::from(value))
            .sum::<f64>()
            .sqrt()
    }

    pub(crate) fn mean_and_std(values: &[f32]) -> (f64, f64) {
        let count = values.len() as f64;
        let mean = values.iter().map(|&value| f64::from(value)).sum::<f64>() / count;
        let variance = values
            .iter()
            .map(|&value| (f64::from(value) - mean).powi(2))
            .sum::<f64>()
            / (count - 1.0);
        (mean, variance.sqrt())
    }

    #[test]
    fn gaussian_noise_has_the_configured_standard_deviation() {
        let std = 0.7;
        let mut values = vec![0.0f32; 200_000];
        add_gaussian_noise(&mut values, std, &mut seeded_rng(11));
        let (mean, sample_std) = mean_and_std(&values);
        assert!(
            (sample_std / std - 1.0).abs() < 0.01,
            "sample std {sample_std}"
        );
        assert!(
            mean.abs() < 4.0 * std / (values.len() as f64).sqrt(),
            "mean {mean}"
        );
        let mut untouched = vec![1.5f32; 10];
        add_gaussian_noise(&mut untouched, 0.0, &mut seeded_rng(1));
        assert_eq!(untouched, vec![1.5f32; 10]);
    }
    #[test]
    fn os_seeded_rngs_differ() {
        let mut first = os_seeded_rng().unwrap();
        let mut second = os_seeded_rng().unwrap();
        assert_ne!(first.next_u64(), second.next_u64());
    }
}
