//! The distributed discrete Gaussian end to end, without a network: the
//! exact sampler's distribution, the randomized Hadamard rotation, the
//! encoding into `Z_(2^32)` and the decoding of a modular sum, and the
//! accounting of Kairouz, Liu, Steinke (ICML 2021).
//!
//! Statistical checks use fixed seeds and 5-standard-error bands, so they
//! are deterministic and a broken sampler fails them by far.
//!
//! The accounting reference values come from a transcription, in a few
//! lines of Python, of the paper's reference code (google-research/federated
//! `distributed_dp/accounting_utils.py`: `compute_rdp_dgaussian`'s
//! `eps(order)` and `ddgauss_epsilon`'s τ loop), run once independently of
//! this crate; the figures are quoted below with their inputs.

use fedshield_core::privacy::accountant::{
    SubsampledGaussian, calibrate_ddg_variance, calibrate_noise_multiplier, ddg_epsilon, ddg_rdp,
    ddg_rho, ddg_tau, epsilon,
};
use fedshield_core::privacy::distributed::{
    DiscreteGaussian, SecAggEncoding, choose_scale, padded_dim, rotate, sample_bernoulli_exp,
    sample_discrete_laplace, unrotate, wrap_tail_multiple,
};
use fedshield_core::{CoreError, Result};
use rand::rngs::ChaCha20Rng;
use rand::{RngExt, SeedableRng};

fn seeded_rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn l2_norm(values: &[f64]) -> f64 {
    values.iter().map(|value| value * value).sum::<f64>().sqrt()
}

fn mean_and_variance(samples: &[i64]) -> (f64, f64) {
    let count = samples.len() as f64;
    let mean = samples.iter().map(|&value| value as f64).sum::<f64>() / count;
    let variance = samples
        .iter()
        .map(|&value| (value as f64 - mean).powi(2))
        .sum::<f64>()
        / (count - 1.0);
    (mean, variance)
}

/// Returns the variance and fourth moment of `N_Z(0, σ²)` by summing its
/// mass function over |x| ≤ 40σ + 10.
fn discrete_gaussian_moments(sigma_squared: f64) -> (f64, f64) {
    let limit = (40.0 * sigma_squared.sqrt()).ceil() as i64 + 10;
    let mut total = 0.0;
    let mut second = 0.0;
    let mut fourth = 0.0;
    for x in -limit..=limit {
        let x = x as f64;
        let mass = (-x * x / (2.0 * sigma_squared)).exp();
        total += mass;
        second += x * x * mass;
        fourth += x.powi(4) * mass;
    }
    (second / total, fourth / total)
}

// ---------------------------------------------------------------------------
// The exact sampler

#[test]
fn bernoulli_exp_succeeds_with_probability_exp_minus_the_ratio() {
    let num_samples = 200_000;
    let mut rng = seeded_rng(1);
    for (numerator, denominator) in [
        (0u128, 1u128),
        (3, 10),
        (1, 1),
        (5, 2),
        (7, 3),
        (1, 1 << 100),
    ] {
        let probability = (-(numerator as f64) / denominator as f64).exp();
        let num_successes = (0..num_samples)
            .filter(|_| sample_bernoulli_exp(numerator, denominator, &mut rng))
            .count();
        let observed = num_successes as f64 / num_samples as f64;
        let standard_error = (probability * (1.0 - probability) / num_samples as f64).sqrt();
        assert!(
            (observed - probability).abs() <= 5.0 * standard_error + 1e-12,
            "exp(-{numerator}/{denominator}): observed {observed}, expected {probability}"
        );
    }
}

#[test]
fn discrete_laplace_is_centered_with_its_geometric_variance() {
    let num_samples = 200_000;
    let mut rng = seeded_rng(2);
    for (scale_num, scale_den) in [(1u64, 1u64), (3, 1), (20, 1), (7, 2)] {
        let samples: Vec<i64> = (0..num_samples)
            .map(|_| sample_discrete_laplace(scale_num, scale_den, &mut rng))
            .collect();
        let (mean, variance) = mean_and_variance(&samples);
        // P(x) ∝ q^|x| with q = exp(−1/scale): variance 2q/(1−q)².
        let q = (-(scale_den as f64) / scale_num as f64).exp();
        let expected_variance = 2.0 * q / (1.0 - q).powi(2);
        let mean_error = (expected_variance / num_samples as f64).sqrt();
        assert!(
            mean.abs() <= 5.0 * mean_error,
            "scale {scale_num}/{scale_den}: mean {mean}"
        );
        // The fourth moment of a discrete Laplace is below 25·variance² for these scales.
        let variance_error = (24.0 * expected_variance.powi(2) / num_samples as f64).sqrt();
        assert!(
            (variance - expected_variance).abs() <= 5.0 * variance_error,
            "scale {scale_num}/{scale_den}: variance {variance}, expected {expected_variance}"
        );
    }
}

#[test]
fn discrete_gaussian_has_mean_zero_and_its_variance_for_small_and_large_sigma() -> Result<()> {
    let num_samples = 200_000;
    let mut rng = seeded_rng(3);
    for sigma in [0.5, 2.0, 7.3, 1e3, 1e6] {
        let sigma_squared: f64 = sigma * sigma;
        let noise = DiscreteGaussian::from_variance(sigma_squared)?;
        let mut samples = vec![0i64; num_samples];
        noise.fill(&mut samples, &mut rng);
        let (mean, variance) = mean_and_variance(&samples);
        let (expected_variance, fourth_moment) = if sigma <= 100.0 {
            discrete_gaussian_moments(noise.variance())
        } else {
            // Within a relative e^(−2π²σ²) of the continuous moments.
            (sigma_squared, 3.0 * sigma_squared * sigma_squared)
        };
        let mean_error = (expected_variance / num_samples as f64).sqrt();
        assert!(mean.abs() <= 5.0 * mean_error, "sigma {sigma}: mean {mean}");
        let variance_error =
            ((fourth_moment - expected_variance * expected_variance) / num_samples as f64).sqrt();
        assert!(
            (variance - expected_variance).abs() <= 5.0 * variance_error,
            "sigma {sigma}: variance {variance}, expected {expected_variance} ± {variance_error}"
        );
    }
    Ok(())
}

#[test]
fn discrete_gaussian_is_symmetric_and_matches_its_mass_at_zero() -> Result<()> {
    let num_samples = 400_000;
    let sigma_squared = 0.8;
    let noise = DiscreteGaussian::from_variance(sigma_squared)?;
    let mut samples = vec![0i64; num_samples];
    noise.fill(&mut samples, &mut seeded_rng(4));
    for magnitude in 0..=3i64 {
        let num_positive = samples.iter().filter(|&&value| value == magnitude).count() as f64;
        let num_negative = samples.iter().filter(|&&value| value == -magnitude).count() as f64;
        assert!(
            (num_positive - num_negative).abs() <= 5.0 * (num_positive + num_negative).sqrt(),
            "±{magnitude}: {num_positive} vs {num_negative}"
        );
    }
    let normalizer: f64 = (-50..=50)
        .map(|x| (-f64::from(x * x) / (2.0 * sigma_squared)).exp())
        .sum();
    let mass_at_zero = 1.0 / normalizer;
    let num_zeros = samples.iter().filter(|&&value| value == 0).count() as f64;
    let observed = num_zeros / num_samples as f64;
    let standard_error = (mass_at_zero * (1.0 - mass_at_zero) / num_samples as f64).sqrt();
    assert!(
        (observed - mass_at_zero).abs() <= 5.0 * standard_error,
        "P(0): observed {observed}, expected {mass_at_zero}"
    );
    Ok(())
}

#[test]
fn discrete_gaussian_variance_is_a_close_dyadic_rational() -> Result<()> {
    for variance in [0.01, 0.25, 1.0 / 3.0, 1e6, 123_456_789.123, 1e17] {
        let noise = DiscreteGaussian::from_variance(variance)?;
        let (numerator, denominator) = noise.variance_rational();
        assert!(denominator.is_power_of_two());
        let approximation = numerator as f64 / denominator as f64;
        assert!(
            (approximation / variance - 1.0).abs() <= 2f64.powi(-40),
            "variance {variance} became {numerator}/{denominator}"
        );
    }
    for bad_variance in [f64::NAN, f64::INFINITY, 0.0, -1.0, 0.001, 1e19] {
        assert!(
            matches!(
                DiscreteGaussian::from_variance(bad_variance),
                Err(CoreError::InvalidPrivacy(_))
            ),
            "variance {bad_variance} was accepted"
        );
    }
    assert!(DiscreteGaussian::from_rational(0, 1).is_err());
    assert!(DiscreteGaussian::from_rational(1, 0).is_err());
    Ok(())
}

/// Prints the sampler's throughput; run with
/// `cargo test --release -p fedshield-core --test distributed_dp -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, meaningful only in release builds"]
fn discrete_gaussian_throughput_is_printed() -> Result<()> {
    let num_samples = 1_000_000;
    for sigma in [0.5f64, 10.0, 1e3, 1e5, 1e7] {
        let noise = DiscreteGaussian::from_variance(sigma * sigma)?;
        let mut samples = vec![0i64; num_samples];
        let start = std::time::Instant::now();
        noise.fill(&mut samples, &mut seeded_rng(5));
        let elapsed_secs = start.elapsed().as_secs_f64();
        println!("sigma {sigma:e}: {num_samples} samples in {elapsed_secs:.3} s");
    }
    let num_params = 1_000_000;
    let config = encoding(
        num_params,
        2f64.powi(16),
        Some(DiscreteGaussian::from_variance(1e6)?),
    );
    let mut rng = seeded_rng(5);
    let update = random_update(num_params, 1.0, &mut rng);
    let start = std::time::Instant::now();
    let encoded = config.encode(&update, &mut rng)?;
    let encode_secs = start.elapsed().as_secs_f64();
    let start = std::time::Instant::now();
    config.decode_average(&encoded.values, 1)?;
    let decode_secs = start.elapsed().as_secs_f64();
    println!(
        "{num_params} params (padded {}): encode {encode_secs:.3} s, decode {decode_secs:.3} s",
        config.padded_dim()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The rotation

#[test]
fn padded_dim_is_the_next_power_of_two_and_at_least_one() {
    assert_eq!(padded_dim(0), 1);
    assert_eq!(padded_dim(1), 1);
    assert_eq!(padded_dim(5), 8);
    assert_eq!(padded_dim(1024), 1024);
    assert_eq!(padded_dim(1025), 2048);
}

#[test]
fn rotation_keeps_norms_and_unrotate_undoes_it() {
    let seed = [7u8; 32];
    let mut rng = seeded_rng(6);
    for dim in [1usize, 2, 64, 4096] {
        let original: Vec<f64> = (0..dim).map(|_| rng.random_range(-3.0..3.0)).collect();
        let mut values = original.clone();
        rotate(&mut values, &seed);
        assert!((l2_norm(&values) - l2_norm(&original)).abs() <= 1e-9 * l2_norm(&original));
        if dim > 1 {
            assert_ne!(values, original);
        }
        unrotate(&mut values, &seed);
        for (restored, expected) in values.iter().zip(&original) {
            assert!(
                (restored - expected).abs() <= 1e-9,
                "{restored} vs {expected}"
            );
        }
    }
}

#[test]
fn rotation_flattens_a_one_hot_vector_to_plus_or_minus_one_over_root_d() {
    let dim = 1024;
    let mut values = vec![0.0; dim];
    values[17] = 1.0;
    rotate(&mut values, &[9u8; 32]);
    let flat = 1.0 / (dim as f64).sqrt();
    assert!(
        values
            .iter()
            .all(|value| (value.abs() - flat).abs() <= 1e-12)
    );
    let num_negative = values.iter().filter(|value| **value < 0.0).count();
    assert!(
        (400..=624).contains(&num_negative),
        "{num_negative} negative signs"
    );
}

#[test]
fn rotations_with_different_seeds_differ() {
    let mut first = vec![1.0; 64];
    let mut second = vec![1.0; 64];
    rotate(&mut first, &[1u8; 32]);
    rotate(&mut second, &[2u8; 32]);
    assert_ne!(first, second);
}

// ---------------------------------------------------------------------------
// The encoding

fn encoding(num_params: usize, scale: f64, noise: Option<DiscreteGaussian>) -> SecAggEncoding {
    SecAggEncoding {
        num_params,
        clip_norm: 1.0,
        scale,
        rotation_seed: [42u8; 32],
        noise,
        rounding_beta: (-0.5f64).exp(),
    }
}

fn random_update(num_params: usize, max_norm: f64, rng: &mut ChaCha20Rng) -> Vec<f32> {
    let raw: Vec<f64> = (0..num_params)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let norm = l2_norm(&raw);
    let target = rng.random_range(0.1..max_norm);
    raw.iter()
        .map(|value| (value * target / norm) as f32)
        .collect()
}

fn wrapping_sum(vectors: &[Vec<u32>]) -> Vec<u32> {
    let mut sum = vec![0u32; vectors[0].len()];
    for vector in vectors {
        for (total, value) in sum.iter_mut().zip(vector) {
            *total = total.wrapping_add(*value);
        }
    }
    sum
}

#[test]
fn decoded_average_of_eight_updates_is_within_the_quantization_bound() -> Result<()> {
    let num_params = 1000;
    let num_updates = 8;
    let dim = padded_dim(num_params);
    let mut rng = seeded_rng(7);
    let fine_scale = choose_scale(1.0, num_updates, 0.0, dim)?;
    // A coarse scale makes the quantization error visible, and the bound bite.
    for scale in [fine_scale, 16.0] {
        let config = encoding(num_params, scale, None);
        let updates: Vec<Vec<f32>> = (0..num_updates)
            .map(|_| random_update(num_params, 1.0, &mut rng))
            .collect();
        let mut encoded = Vec::new();
        for update in &updates {
            let encoded_update = config.encode(update, &mut rng)?;
            assert!(!encoded_update.clipped);
            assert_eq!(encoded_update.values.len(), dim);
            encoded.push(encoded_update.values);
        }
        let decoded = config.decode_average(&wrapping_sum(&encoded), num_updates)?;
        assert_eq!(decoded.len(), num_params);
        let error: Vec<f64> = (0..num_params)
            .map(|index| {
                let average = updates
                    .iter()
                    .map(|update| f64::from(update[index]))
                    .sum::<f64>()
                    / num_updates as f64;
                f64::from(decoded[index]) - average
            })
            .collect();
        let deterministic_bound = (dim as f64).sqrt() / scale;
        let float_slack = 1e-5;
        assert!(
            l2_norm(&error) <= deterministic_bound + float_slack,
            "scale {scale}: error {} above bound {deterministic_bound}",
            l2_norm(&error)
        );
        if scale == 16.0 {
            // The expected error is about sqrt(d/(4γ²n)) ≈ 0.35: not negligible.
            assert!(l2_norm(&error) > 0.05, "error {}", l2_norm(&error));
        }
    }
    Ok(())
}

#[test]
fn an_update_above_the_clip_norm_is_scaled_down_to_it() -> Result<()> {
    let num_params = 100;
    let config = encoding(num_params, 2f64.powi(20), None);
    let update: Vec<f32> = (0..num_params)
        .map(|index| (index % 7) as f32 - 3.0)
        .collect();
    let norm = l2_norm(
        &update
            .iter()
            .map(|value| f64::from(*value))
            .collect::<Vec<_>>(),
    );
    let encoded = config.encode(&update, &mut seeded_rng(8))?;
    assert!(encoded.clipped);
    let decoded = config.decode_average(&encoded.values, 1)?;
    for (decoded_value, original) in decoded.iter().zip(&update) {
        let expected = f64::from(*original) / norm;
        assert!((f64::from(*decoded_value) - expected).abs() <= 1e-4);
    }
    let small_update = vec![0.01f32; num_params];
    assert!(!config.encode(&small_update, &mut seeded_rng(8))?.clipped);
    Ok(())
}

#[test]
fn aligned_updates_at_the_clip_norm_do_not_wrap_at_the_chosen_scale() -> Result<()> {
    // The worst case per coordinate: each update rotates to S·e_0, all its
    // norm on one coordinate, and all K updates agree.
    let dim = 256;
    let num_updates = 16;
    let seed = [42u8; 32];
    let mut worst = vec![0.0f64; dim];
    worst[0] = 0.999_999;
    unrotate(&mut worst, &seed);
    let update: Vec<f32> = worst.iter().map(|value| *value as f32).collect();
    let total_noise_stddev = 1e-4;
    let scale = choose_scale(1.0, num_updates, total_noise_stddev, dim)?;
    let noise_variance = (scale * total_noise_stddev).powi(2) / num_updates as f64;
    let noise = DiscreteGaussian::from_variance(noise_variance)?;
    let mut rng = seeded_rng(9);
    let decode_at = |scale: f64, rng: &mut ChaCha20Rng| -> Result<Vec<f32>> {
        let config = SecAggEncoding {
            noise: Some(noise),
            ..encoding(dim, scale, None)
        };
        let encoded = (0..num_updates)
            .map(|_| config.encode(&update, rng).map(|encoded| encoded.values))
            .collect::<Result<Vec<_>>>()?;
        config.decode_average(&wrapping_sum(&encoded), num_updates)
    };
    let decoded = decode_at(scale, &mut rng)?;
    for (decoded_value, original) in decoded.iter().zip(&update) {
        assert!(
            (decoded_value - original).abs() <= 1e-3,
            "{decoded_value} vs {original}"
        );
    }
    // Twice the scale wraps: the check above would catch a scale too large.
    let wrapped = decode_at(2.0 * scale, &mut rng)?;
    let max_error = wrapped
        .iter()
        .zip(&update)
        .map(|(decoded_value, original)| (decoded_value - original).abs())
        .fold(0.0f32, f32::max);
    assert!(max_error > 0.01, "no wrap at twice the scale: {max_error}");
    Ok(())
}

#[test]
fn chosen_scale_is_the_largest_power_of_two_that_fits_32_bits() -> Result<()> {
    for (clip_norm, num_participants, total_noise_stddev, dim) in [
        (1.0, 8usize, 0.0, 1024usize),
        (0.5, 100, 0.3, 1 << 20),
        (10.0, 1000, 5.0, 64),
    ] {
        let scale = choose_scale(clip_norm, num_participants, total_noise_stddev, dim)?;
        assert_eq!(scale.log2().fract(), 0.0, "scale {scale}");
        let bound = |scale: f64| {
            num_participants as f64 * (scale * clip_norm + 1.0)
                + wrap_tail_multiple(dim) * scale * total_noise_stddev
        };
        assert!(bound(scale) <= f64::from(i32::MAX));
        assert!(bound(2.0 * scale) > f64::from(i32::MAX));
    }
    assert!(choose_scale(0.0, 8, 0.0, 64).is_err());
    assert!(choose_scale(1.0, 0, 0.0, 64).is_err());
    assert!(choose_scale(1.0, 8, f64::NAN, 64).is_err());
    Ok(())
}

#[test]
fn summed_noise_of_k_participants_has_variance_k_sigma_squared() -> Result<()> {
    let num_participants = 4;
    let dim = 4096;
    let num_repeats = 10;
    let sigma_squared = 2500.0;
    let noise = DiscreteGaussian::from_variance(sigma_squared)?;
    let config = encoding(dim, 1.0, Some(noise));
    let zeros = vec![0.0f32; dim];
    let mut rng = seeded_rng(10);
    let mut lifted = Vec::new();
    for _ in 0..num_repeats {
        let encoded = (0..num_participants)
            .map(|_| {
                config
                    .encode(&zeros, &mut rng)
                    .map(|encoded| encoded.values)
            })
            .collect::<Result<Vec<_>>>()?;
        lifted.extend(
            wrapping_sum(&encoded)
                .iter()
                .map(|value| i64::from(*value as i32)),
        );
    }
    let (mean, variance) = mean_and_variance(&lifted);
    let expected_variance = num_participants as f64 * sigma_squared;
    let num_samples = lifted.len() as f64;
    let mean_error = (expected_variance / num_samples).sqrt();
    let variance_error = (2.0 * expected_variance * expected_variance / num_samples).sqrt();
    assert!(mean.abs() <= 5.0 * mean_error, "mean {mean}");
    assert!(
        (variance - expected_variance).abs() <= 5.0 * variance_error,
        "variance {variance}, expected {expected_variance} ± {variance_error}"
    );
    Ok(())
}

#[test]
fn conditional_rounding_keeps_every_encoding_within_the_sensitivity() -> Result<()> {
    let num_params = 300;
    let config = encoding(num_params, 8.0, None);
    let sensitivity = config.l2_sensitivity();
    let scaled_norm = config.scale * config.clip_norm;
    assert!(sensitivity > scaled_norm && sensitivity < scaled_norm + (512f64).sqrt());
    let mut rng = seeded_rng(11);
    for _ in 0..50 {
        let update = random_update(num_params, 1.0, &mut rng);
        let encoded = config.encode(&update, &mut rng)?;
        let integers: Vec<f64> = encoded
            .values
            .iter()
            .map(|value| f64::from(*value as i32))
            .collect();
        assert!(l2_norm(&integers) <= sensitivity);
    }
    assert!(config.l1_sensitivity() >= sensitivity);
    Ok(())
}

#[test]
fn malformed_updates_and_sums_are_refused() -> Result<()> {
    let config = encoding(10, 4.0, None);
    let mut rng = seeded_rng(12);
    assert!(config.encode(&[0.0; 9], &mut rng).is_err());
    let mut with_nan = vec![0.0f32; 10];
    with_nan[3] = f32::NAN;
    assert!(config.encode(&with_nan, &mut rng).is_err());
    assert!(config.decode_average(&[0; 15], 1).is_err());
    assert!(config.decode_average(&[0; 16], 0).is_err());
    let bad_beta = SecAggEncoding {
        rounding_beta: 1.0,
        ..config.clone()
    };
    assert!(bad_beta.encode(&[0.0; 10], &mut rng).is_err());
    let bad_scale = SecAggEncoding {
        scale: f64::INFINITY,
        ..config
    };
    assert!(bad_scale.decode_average(&[0; 16], 1).is_err());
    Ok(())
}

// ---------------------------------------------------------------------------
// The accounting

#[test]
fn tau_and_rdp_match_the_reference_code() {
    // Inputs (Δ₂, Δ₁, σ², n, d) and outputs of the Python transcription of
    // `compute_rdp_dgaussian` / `ddgauss_epsilon` (q = 1, no rounding).
    let cases = [
        // (l2, l1, σ², n, d, τ, [(order, rdp)])
        (
            10.0,
            80.0,
            0.5,
            200u64,
            64usize,
            2.211764643e-1,
            [(2.0, 7.669641244), (8.0, 18.15529372), (32.0, 30.15529372)],
        ),
        (
            4.0,
            16.0,
            0.3,
            50,
            1024,
            2.568199201,
            [(2.0, 2630.902649), (8.0, 2634.102649), (32.0, 2646.902649)],
        ),
        (
            1000.0,
            256_000.0,
            1.0,
            100,
            65536,
            5.477887e-4,
            [(2.0, 1.002807e4), (8.0, 4.003590e4), (32.0, 1.600359e5)],
        ),
    ];
    for (l2, l1, sigma_squared, num_participants, dim, tau, rdps) in cases {
        let computed_tau = ddg_tau(sigma_squared, num_participants);
        assert!(
            (computed_tau / tau - 1.0).abs() < 1e-6,
            "tau {computed_tau} vs {tau}"
        );
        for (order, rdp) in rdps {
            let computed = ddg_rdp(order, l2, l1, sigma_squared, num_participants, dim);
            assert!(
                (computed / rdp - 1.0).abs() < 1e-6,
                "order {order}: {computed} vs {rdp}"
            );
        }
    }
}

#[test]
fn one_participant_reduces_to_the_discrete_gaussian_bound() -> Result<()> {
    let l2_sensitivity = 20.0;
    let sigma_squared: f64 = 400.0;
    assert_eq!(ddg_tau(sigma_squared, 1), 0.0);
    let rho = ddg_rho(l2_sensitivity, 160.0, sigma_squared, 1, 64);
    assert!((rho - l2_sensitivity * l2_sensitivity / (2.0 * sigma_squared)).abs() < 1e-12);
    // The same RDP curve as the continuous Gaussian of noise multiplier σ/Δ₂.
    let num_rounds = 10;
    let delta = 1e-5;
    let continuous = epsilon(
        &SubsampledGaussian {
            sampling_rate: 1.0,
            noise_multiplier: sigma_squared.sqrt() / l2_sensitivity,
            num_steps: num_rounds,
        },
        delta,
    )?;
    let distributed = ddg_epsilon(rho, num_rounds, delta)?;
    assert!(
        (distributed - continuous).abs() < 1e-9,
        "{distributed} vs {continuous}"
    );
    Ok(())
}

#[test]
fn ddg_epsilon_is_below_the_closed_form_zcdp_conversion() -> Result<()> {
    for (rho, num_rounds, delta) in [
        (0.01f64, 100u64, 1e-5f64),
        (0.5, 1, 1e-6),
        (0.001, 1000, 1e-9),
    ] {
        let total_rho = rho * num_rounds as f64;
        let closed_form = total_rho + 2.0 * (total_rho * (1.0 / delta).ln()).sqrt();
        let tight = ddg_epsilon(rho, num_rounds, delta)?;
        assert!(tight <= closed_form, "{tight} vs {closed_form}");
        assert!(tight >= 0.8 * closed_form, "{tight} vs {closed_form}");
    }
    assert_eq!(ddg_epsilon(0.0, 10, 1e-5)?, 0.0);
    assert!(ddg_epsilon(-1.0, 10, 1e-5).is_err());
    assert!(ddg_epsilon(f64::NAN, 10, 1e-5).is_err());
    assert!(ddg_epsilon(0.1, 10, 0.0).is_err());
    Ok(())
}

#[test]
fn more_noise_and_more_participants_spend_less() {
    let mut previous = f64::INFINITY;
    for sigma_squared in [0.1, 0.3, 1.0, 10.0, 1e3, 1e6] {
        let rho = ddg_rho(100.0, 1000.0, sigma_squared, 50, 1024);
        assert!(
            rho < previous,
            "sigma² {sigma_squared}: {rho} after {previous}"
        );
        previous = rho;
    }
    let mut previous = f64::INFINITY;
    for num_participants in [1u64, 2, 10, 100, 1000] {
        let rho = ddg_rho(100.0, 1000.0, 4.0, num_participants, 1024);
        assert!(
            rho < previous,
            "n {num_participants}: {rho} after {previous}"
        );
        previous = rho;
    }
    assert_eq!(ddg_rho(1.0, 1.0, 0.0, 10, 8), f64::INFINITY);
    assert_eq!(ddg_rho(1.0, 1.0, 1.0, 0, 8), f64::INFINITY);
}

#[test]
fn calibrated_variance_is_the_smallest_that_meets_the_target() -> Result<()> {
    let (delta, num_rounds) = (1e-5, 200u64);
    for (target_epsilon, num_participants, dim, l2, l1) in [
        (1.0, 100u64, 1 << 16, 1000.0, 256_000.0),
        (8.0, 10, 1024, 10.0, 80.0),
        (3.0, 1000, 64, 2.0, 4.0),
    ] {
        let sigma_squared = calibrate_ddg_variance(
            target_epsilon,
            delta,
            num_rounds,
            num_participants,
            dim,
            l2,
            l1,
        )?;
        let epsilon_at = |variance: f64| {
            ddg_epsilon(
                ddg_rho(l2, l1, variance, num_participants, dim),
                num_rounds,
                delta,
            )
        };
        assert!(epsilon_at(sigma_squared)? <= target_epsilon);
        assert!(epsilon_at(sigma_squared * (1.0 - 1e-5))? > target_epsilon);
    }
    Ok(())
}

#[test]
fn calibration_for_one_participant_agrees_with_the_gaussian_calibration() -> Result<()> {
    let (target_epsilon, delta, num_rounds, l2) = (2.0, 1e-6, 50u64, 30.0);
    let sigma_squared = calibrate_ddg_variance(target_epsilon, delta, num_rounds, 1, 256, l2, l2)?;
    let noise_multiplier = calibrate_noise_multiplier(1.0, num_rounds, target_epsilon, delta)?;
    let expected = (noise_multiplier * l2).powi(2);
    assert!(
        (sigma_squared / expected - 1.0).abs() < 1e-3,
        "{sigma_squared} vs {expected}"
    );
    assert!(calibrate_ddg_variance(0.0, delta, 1, 1, 8, 1.0, 1.0).is_err());
    assert!(calibrate_ddg_variance(1.0, delta, 1, 0, 8, 1.0, 1.0).is_err());
    assert!(calibrate_ddg_variance(1.0, 2.0, 1, 1, 8, 1.0, 1.0).is_err());
    Ok(())
}
