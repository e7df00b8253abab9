//! Organization-level DP (McMahan et al. 2018, DP-FedAvg,
//! <https://arxiv.org/abs/1710.06963>): [`privatize_update`] clips a whole
//! update and adds Gaussian noise, so that the update hides any single
//! organization's participation (given the matching accounting).

use rand::{CryptoRng, Rng};

use crate::error::{CoreError, Result};
use crate::plan::OrgDpPlan;
use crate::privacy::noise::add_gaussian_noise;

/// Relative margin by which [`privatize_update`] clips below its bound, so
/// that float32 rounding of the scaled values cannot push the norm above it.
const CLIP_ROUNDING_MARGIN: f64 = 1e-6;
/// Organization-level DP (McMahan et al. 2018, DP-FedAvg,
/// <https://arxiv.org/abs/1710.06963>): clips the whole update to L2 norm
/// `plan.clip_norm` and adds N(0, (σ·clip_norm)²) noise per coordinate.
/// Returns whether the update was clipped (never its norm: it is derived
/// from raw data).
///
/// # Errors
/// [`CoreError::InvalidPrivacy`] for a bad plan, [`CoreError::NonFiniteParam`]
/// if the update holds a non-finite value (it is left unchanged then).
pub fn privatize_update<R: Rng + CryptoRng + ?Sized>(
    update: &mut [f32],
    plan: &OrgDpPlan,
    rng: &mut R,
) -> Result<bool> {
    plan.validate()?;
    if let Some((index, &value)) = update
        .iter()
        .enumerate()
        .find(|(_, value)| !value.is_finite())
    {
        return Err(CoreError::NonFiniteParam {
            index: index as u64,
            value,
        });
    }
    let clipped = clip_to_norm(update, plan.clip_norm);
    add_gaussian_noise(update, plan.noise_multiplier * plan.clip_norm, rng);
    Ok(clipped)
}

/// Scales `values` down to L2 norm at most `max_norm` (a hair below it, see
/// [`CLIP_ROUNDING_MARGIN`]) and returns whether they had to be scaled.
fn clip_to_norm(values: &mut [f32], max_norm: f64) -> bool {
    let norm = values
        .iter()
        .map(|&value| f64::from(value) * f64::from(value))
        .sum::<f64>()
        .sqrt();
    if norm <= max_norm {
        return false;
    }
    let scale = (max_norm / norm * (1.0 - CLIP_ROUNDING_MARGIN)) as f32;
    for value in values {
        *value *= scale;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::noise::tests::{l2_norm, mean_and_std, seeded_rng};

    #[test]
    fn privatize_update_clips_to_the_bound_and_adds_noise_of_std_sigma_s() {
        let clip_norm = 0.5;
        let mut large: Vec<f32> = (0..1000).map(|index| (index % 7) as f32 - 3.0).collect();
        assert!(clip_to_norm(&mut large, clip_norm));
        let clipped_norm = l2_norm(&large);
        assert!(clipped_norm <= clip_norm && clipped_norm > clip_norm * (1.0 - 1e-5));
        let mut small = vec![0.001f32; 100];
        assert!(!clip_to_norm(&mut small, clip_norm));
        assert_eq!(small, vec![0.001f32; 100]);

        let plan = OrgDpPlan::new(clip_norm, 2.0);
        let inside: Vec<f32> = (0..100_000)
            .map(|index| ((index % 5) as f32 - 2.0) * 1e-4)
            .collect();
        let mut noisy = inside.clone();
        assert!(!privatize_update(&mut noisy, &plan, &mut seeded_rng(3)).unwrap());
        let noise: Vec<f32> = noisy
            .iter()
            .zip(&inside)
            .map(|(out, original)| out - original)
            .collect();
        let (mean, sample_std) = mean_and_std(&noise);
        assert!(
            (sample_std / (2.0 * clip_norm) - 1.0).abs() < 0.02,
            "std {sample_std}"
        );
        assert!(mean.abs() < 4.0 * sample_std / (noise.len() as f64).sqrt());

        let outside: Vec<f32> = inside.iter().map(|value| value * 1e4).collect();
        let mut expected = outside.clone();
        clip_to_norm(&mut expected, clip_norm);
        let mut noisy = outside.clone();
        assert!(privatize_update(&mut noisy, &plan, &mut seeded_rng(4)).unwrap());
        let noise: Vec<f32> = noisy
            .iter()
            .zip(&expected)
            .map(|(out, clipped)| out - clipped)
            .collect();
        let (_, sample_std) = mean_and_std(&noise);
        assert!(
            (sample_std / (2.0 * clip_norm) - 1.0).abs() < 0.02,
            "std {sample_std}"
        );

        let mut broken = vec![0.0, f32::NAN];
        assert!(matches!(
            privatize_update(&mut broken, &plan, &mut seeded_rng(5)),
            Err(CoreError::NonFiniteParam { index: 1, .. })
        ));
    }
}
