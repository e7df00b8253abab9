//! Tests of DP-SGD: equivalence with plain SGD without noise, ghost norms
//! against autodiff, clipping, noise, sampling and plan checks.

use rand::RngExt;

use super::clipping::{clipped_gradient_sums, forward_backward};
use super::layers::{Batch, layers_from_flat, objective_of, tensor_values};
use super::sampling::PoissonSampler;
use super::*;
use crate::model::ModelSpec;
use crate::model::metrics::evaluate_model;
use crate::model::training::train_local;
use crate::plan::OrgDpPlan;
use crate::privacy::noise::tests::{l2_norm, mean_and_std, seeded_rng};
use crate::privacy::org_dp::privatize_update;
use crate::telemetry::{held_out_dataset, num_flow_features};

/// Returns a plan without noise (which only tests may run) whose every
/// step samples all the rows a model of `spec` trains on in `data`:
/// B = N_min = N, so q = 1.
fn noiseless_full_batch(
    spec: &ModelSpec,
    data: &Dataset,
    clip_norm: f64,
    steps_per_round: u32,
) -> DpSgdPlan {
    let num_rows = crate::model::training::num_training_rows(spec, data);
    DpSgdPlan::new(
        num_rows as u32,
        num_rows as u64,
        0.0,
        clip_norm,
        steps_per_round,
    )
}

/// Returns `num_rows` rows of features uniform in ±`scale`, with classes
/// below `num_classes` (0 = benign) drawn uniformly.
fn random_dataset(
    num_rows: usize,
    num_features: usize,
    num_classes: u32,
    scale: f32,
    seed: u64,
) -> Dataset {
    let mut rng = seeded_rng(seed);
    let mut data = Dataset::new(num_features);
    for _ in 0..num_rows {
        let row: Vec<f32> = (0..num_features)
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        let class = rng.random_range(0..num_classes);
        data.push_labelled(&row, class, &format!("class-{class}"))
            .unwrap();
    }
    data
}

/// Returns the result of one plain SGD step over the whole of `data`,
/// computed by `train_local` (burn autodiff, batch-mean loss).
fn plain_full_batch_step(
    weights: &ModelWeights,
    data: &Dataset,
    learning_rate: f32,
) -> LocalTrainingOutcome {
    let plan = TrainingPlan::new()
        .with_batch_size(data.len() as u32)
        .with_max_local_steps(1)
        .with_learning_rate(learning_rate);
    train_local(weights, data, &plan, 0).unwrap()
}

fn max_abs_difference(first: &[f32], second: &[f32]) -> f32 {
    assert_eq!(first.len(), second.len());
    first
        .iter()
        .zip(second)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn test_specs() -> Vec<(&'static str, ModelSpec, u32)> {
    vec![
        ("binary classifier", ModelSpec::mlp(6, vec![8, 5], 2), 2),
        ("multi-class classifier", ModelSpec::mlp(6, vec![7], 4), 4),
        ("autoencoder", ModelSpec::autoencoder(6, vec![4, 2]), 2),
    ]
}

#[test]
fn weight_decay_acts_as_in_plain_sgd() {
    let spec = ModelSpec::mlp(6, vec![8, 5], 2);
    let weights = ModelWeights::init(spec, 7).unwrap();
    let data = random_dataset(24, 6, 2, 2.0, 8);
    let plan = TrainingPlan::new()
        .with_learning_rate(0.3)
        .with_weight_decay(0.05);
    let private = run_dp_sgd(
        &weights,
        &data,
        &plan,
        &noiseless_full_batch(&weights.spec, &data, 1e9, 1),
        &mut seeded_rng(1),
        &no_progress,
    )
    .unwrap();
    let plain_plan = plan
        .clone()
        .with_batch_size(data.len() as u32)
        .with_max_local_steps(1);
    let plain = train_local(&weights, &data, &plain_plan, 0).unwrap();
    let difference = max_abs_difference(&private.params, &plain.params);
    assert!(difference < 1e-4, "parameters differ by {difference}");
    let without_decay = plain_full_batch_step(&weights, &data, 0.3);
    assert!(max_abs_difference(&private.params, &without_decay.params) > 1e-4);
}

#[test]
fn noiseless_unclipped_full_batch_step_equals_a_plain_sgd_step() {
    for (name, spec, num_classes) in test_specs() {
        let weights = ModelWeights::init(spec, 7).unwrap();
        let data = random_dataset(24, 6, num_classes, 2.0, 8);
        let plan = TrainingPlan::new().with_learning_rate(0.3);
        let dp = noiseless_full_batch(&weights.spec, &data, 1e9, 1);
        let private = run_dp_sgd(
            &weights,
            &data,
            &plan,
            &dp,
            &mut seeded_rng(1),
            &no_progress,
        )
        .unwrap();
        let plain = plain_full_batch_step(&weights, &data, 0.3);
        assert_eq!(private.num_steps, 1);
        let difference = max_abs_difference(&private.params, &plain.params);
        assert!(
            difference < 1e-4,
            "{name}: parameters differ by {difference}"
        );
        assert!(
            max_abs_difference(&private.params, &weights.params) > 1e-3,
            "{name}: the step changed nothing"
        );
        assert!(
            (private.mean_loss - plain.mean_loss).abs() < 1e-4,
            "{name}: loss {} vs {}",
            private.mean_loss,
            plain.mean_loss
        );
    }
}

#[test]
fn ghost_norms_match_per_example_autodiff_gradients() {
    for (name, spec, num_classes) in test_specs() {
        let weights = ModelWeights::init(spec.clone(), 3).unwrap();
        let mut data = random_dataset(5, 6, num_classes, 1.5, 4);
        if spec.is_autoencoder() {
            // train_local trains autoencoders on benign rows only.
            data = random_dataset(5, 6, 1, 1.5, 4);
        }
        let rows: Vec<usize> = (0..data.len()).collect();
        let batch = Batch::new(&data, &rows, objective_of(&spec));
        let pass = forward_backward(&layers_from_flat(&weights), &batch);
        let norms_and_losses = pass.squared_norms_and_losses();
        for row in rows {
            let single = data.select(&[row]);
            // With learning rate 1, one step moves the parameters by
            // exactly minus the gradient.
            let step = plain_full_batch_step(&weights, &single, 1.0);
            let gradient = step.delta_from(&weights.params);
            let autodiff_squared_norm = l2_norm(&gradient).powi(2);
            let ghost_squared_norm = f64::from(norms_and_losses[2 * row]);
            let relative_error = (ghost_squared_norm - autodiff_squared_norm).abs()
                / autodiff_squared_norm.max(1e-12);
            assert!(
                relative_error < 1e-3,
                "{name}, row {row}: ghost {ghost_squared_norm} vs autodiff {autodiff_squared_norm}"
            );
            let loss = norms_and_losses[2 * row + 1];
            assert!(
                (loss - step.mean_loss).abs() < 1e-4,
                "{name}, row {row}: loss {loss} vs {}",
                step.mean_loss
            );
        }
    }
}

/// Returns `data` with `num_poisoned` more rows whose features overflow
/// float32 arithmetic (1e38, -1e38, NaN, inf in turn).
fn with_poisoned_rows(data: &Dataset, num_poisoned: usize) -> Dataset {
    let extremes = [1e38f32, -1e38, f32::NAN, f32::INFINITY];
    let mut poisoned = data.clone();
    for index in 0..num_poisoned {
        let row = vec![extremes[index % extremes.len()]; data.num_features()];
        poisoned.push_labelled(&row, 0, "class-0").unwrap();
    }
    poisoned
}

#[test]
fn an_example_with_a_non_finite_gradient_contributes_exactly_zero() {
    for (name, spec, num_classes) in test_specs() {
        let weights = ModelWeights::init(spec.clone(), 3).unwrap();
        let classes = if spec.is_autoencoder() {
            1
        } else {
            num_classes
        };
        let clean = random_dataset(6, 6, classes, 1.5, 4);
        let poisoned = with_poisoned_rows(&clean, 4);
        let layers = layers_from_flat(&weights);
        let clean_rows: Vec<usize> = (0..clean.len()).collect();
        let all_rows: Vec<usize> = (0..poisoned.len()).collect();
        let objective = objective_of(&spec);
        let expected = clipped_gradient_sums(
            &layers,
            &Batch::new(&clean, &clean_rows, objective),
            0.7,
            0.0,
        );
        let actual = clipped_gradient_sums(
            &layers,
            &Batch::new(&poisoned, &all_rows, objective),
            0.7,
            0.0,
        );
        assert_eq!(expected.num_non_finite_examples, 0, "{name}");
        assert_eq!(actual.num_non_finite_examples, 4, "{name}");
        assert!(
            (actual.loss_sum - expected.loss_sum).abs() < 1e-4,
            "{name}: loss {} vs {}",
            actual.loss_sum,
            expected.loss_sum
        );
        for ((expected_weight, expected_bias), (actual_weight, actual_bias)) in
            expected.clipped_sums.into_iter().zip(actual.clipped_sums)
        {
            let expected_values = tensor_values(expected_weight.into_data());
            let actual_values = tensor_values(actual_weight.into_data());
            assert!(
                actual_values.iter().all(|value| value.is_finite()),
                "{name}"
            );
            assert!(
                max_abs_difference(&expected_values, &actual_values) < 1e-5,
                "{name}: weight sums differ"
            );
            let expected_values = tensor_values(expected_bias.into_data());
            let actual_values = tensor_values(actual_bias.into_data());
            assert!(
                max_abs_difference(&expected_values, &actual_values) < 1e-5,
                "{name}: bias sums differ"
            );
        }
    }
}

#[test]
fn dp_sgd_with_a_poisoned_example_takes_every_step_and_stays_finite() {
    for (name, spec, num_classes) in test_specs() {
        let weights = ModelWeights::init(spec.clone(), 3).unwrap();
        let classes = if spec.is_autoencoder() {
            1
        } else {
            num_classes
        };
        let data = with_poisoned_rows(&random_dataset(40, 6, classes, 1.5, 4), 1);
        let plan = TrainingPlan::new().with_learning_rate(0.3);
        // q = B/N = 1: the poisoned example is in every step's sample.
        let num_rows = crate::model::training::num_training_rows(&spec, &data) as u32;
        let dp = DpSgdPlan::new(num_rows, u64::from(num_rows), 1.1, 0.5, 20);
        let outcome = train_local_dp(&weights, &data, &plan, &dp, &mut seeded_rng(9))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(outcome.num_steps, 20, "{name}");
        assert_eq!(outcome.num_non_finite_examples, 20, "{name}");
        assert!(
            outcome.params.iter().all(|value| value.is_finite()),
            "{name}"
        );
        assert!(outcome.mean_loss.is_finite(), "{name}");
        assert!(
            max_abs_difference(&outcome.params, &weights.params) > 1e-3,
            "{name}: the steps changed nothing"
        );
    }
}

#[test]
fn clipping_bounds_every_examples_contribution() {
    let spec = ModelSpec::mlp(8, vec![16], 2);
    let weights = ModelWeights::init(spec, 5).unwrap();
    let learning_rate = 0.1f32;
    let clip_norm = 0.5;
    let plan = TrainingPlan::new().with_learning_rate(learning_rate);
    let single_bound = f64::from(learning_rate) * clip_norm;
    let mut num_at_bound = 0;
    for seed in 0..40 {
        let data = random_dataset(1, 8, 2, 1000.0, seed);
        let dp = noiseless_full_batch(&weights.spec, &data, clip_norm, 1);
        let outcome = run_dp_sgd(
            &weights,
            &data,
            &plan,
            &dp,
            &mut seeded_rng(seed),
            &no_progress,
        )
        .unwrap();
        let change = l2_norm(&outcome.delta_from(&weights.params));
        assert!(
            change <= single_bound * (1.0 + 1e-4),
            "seed {seed}: change {change} above {single_bound}"
        );
        if change > 0.99 * single_bound {
            num_at_bound += 1;
        }
    }
    // Examples the model already gets right with saturated confidence have
    // no gradient left; the others must be clipped to exactly C.
    assert!(
        num_at_bound >= 10,
        "only {num_at_bound} examples were clipped"
    );

    // Several examples: each contributes at most C to the sum, divided by B.
    for seed in 0..10 {
        let num_rows = 12;
        let data = random_dataset(num_rows, 8, 2, 1000.0, 100 + seed);
        let dp = noiseless_full_batch(&weights.spec, &data, clip_norm, 1);
        let outcome = run_dp_sgd(
            &weights,
            &data,
            &plan,
            &dp,
            &mut seeded_rng(seed),
            &no_progress,
        )
        .unwrap();
        let change = l2_norm(&outcome.delta_from(&weights.params));
        // B = N: the expected batch is the whole batch.
        let expected_batch_size = f64::from(dp.expected_batch_size);
        let bound = f64::from(learning_rate) * clip_norm * num_rows as f64 / expected_batch_size;
        assert!(
            change <= bound * (1.0 + 1e-4),
            "change {change} above {bound}"
        );
    }
}
#[test]
fn an_empty_sample_steps_with_noise_of_std_sigma_times_c() {
    // 200·256 + 256 + 256·2 + 2 = 51,970 parameters.
    let spec = ModelSpec::mlp(200, vec![256], 2);
    let weights = ModelWeights::init(spec, 9).unwrap();
    let num_rows = 1000;
    let data = random_dataset(num_rows, 200, 2, 1.0, 10);
    // B = 1: q = 1/1000, and about a third of the seeds sample nothing.
    let dp = DpSgdPlan::new(1, num_rows as u64, 1.3, 0.8, 1);
    let sampler = PoissonSampler::new(num_rows, 1.0 / num_rows as f64).unwrap();
    let mut sampled = Vec::new();
    let seed = (0..100)
        .find(|&seed| {
            sampler.sample_into(&mut seeded_rng(seed), &mut sampled);
            sampled.is_empty()
        })
        .expect("one of 100 seeds samples nothing");
    // lr / B = 1: the change is minus the noise itself.
    let plan = TrainingPlan::new().with_learning_rate(1.0);
    let outcome = train_local_dp(&weights, &data, &plan, &dp, &mut seeded_rng(seed)).unwrap();
    assert!(outcome.mean_loss.is_nan(), "no example was sampled");
    let change = outcome.delta_from(&weights.params);
    let (mean, sample_std) = mean_and_std(&change);
    let expected_std = 1.3 * 0.8;
    assert!(
        (sample_std / expected_std - 1.0).abs() < 0.02,
        "std {sample_std}, expected {expected_std}"
    );
    assert!(mean.abs() < 4.0 * expected_std / (change.len() as f64).sqrt());
}

/// Returns the noise a one-step DP-SGD round adds to the parameters of
/// `weights` trained on `data`: the difference between the run with
/// `dp`'s σ and the run without noise from the same seed (with one step,
/// both draw the same Poisson sample before the noise).
fn one_step_noise(weights: &ModelWeights, data: &Dataset, dp: &DpSgdPlan, seed: u64) -> Vec<f32> {
    let plan = TrainingPlan::new().with_learning_rate(0.5);
    let noisy = run_dp_sgd(
        weights,
        data,
        &plan,
        dp,
        &mut seeded_rng(seed),
        &no_progress,
    )
    .unwrap();
    let without_noise = DpSgdPlan {
        noise_multiplier: 0.0,
        ..dp.clone()
    };
    let noiseless = run_dp_sgd(
        weights,
        data,
        &plan,
        &without_noise,
        &mut seeded_rng(seed),
        &no_progress,
    )
    .unwrap();
    assert_eq!(noisy.num_steps, u64::from(dp.steps_per_round));
    noisy.delta_from(&noiseless.params)
}

#[test]
fn update_noise_has_the_same_spread_for_1000_and_8000_records() {
    // 20·1024 + 1024 + 1024·2 + 2 = 23,554 parameters: the sample std of
    // the noise is within about 1/√(2·23,554) ≈ 0.5% of its true value,
    // so 3% is a margin of six standard errors.
    let spec = ModelSpec::mlp(20, vec![1024], 2);
    let weights = ModelWeights::init(spec, 41).unwrap();
    let dp = DpSgdPlan::new(64, 1000, 1.7, 0.9, 1);
    // lr·σ·C/B whatever N is.
    let expected_std = 0.5 * 1.7 * 0.9 / 64.0;
    let mut spreads = Vec::new();
    for (num_rows, seed) in [(1000, 42), (8000, 43)] {
        let data = random_dataset(num_rows, 20, 2, 1.0, seed);
        let noise = one_step_noise(&weights, &data, &dp, seed);
        let (mean, sample_std) = mean_and_std(&noise);
        assert!(
            (sample_std / expected_std - 1.0).abs() < 0.03,
            "N = {num_rows}: noise std {sample_std}, expected {expected_std}"
        );
        assert!(mean.abs() < 5.0 * expected_std / (noise.len() as f64).sqrt());
        spreads.push(sample_std);
    }
    assert!(
        (spreads[0] / spreads[1] - 1.0).abs() < 0.03,
        "noise std {} at N = 1000 against {} at N = 8000",
        spreads[0],
        spreads[1]
    );
}

#[test]
fn every_data_size_takes_the_plans_steps_and_samples_b_rows_on_average() {
    let plan_steps = 7;
    let dp = DpSgdPlan::new(16, 200, 1.0, 1.0, plan_steps);
    for num_rows in [200usize, 3200] {
        let sampling_rate = dp.sampling_rate_for(num_rows as u64).unwrap();
        assert!((sampling_rate * num_rows as f64 - 16.0).abs() < 1e-9);
        let sampler = PoissonSampler::new(num_rows, sampling_rate).unwrap();
        let mut rows = Vec::new();
        let mut rng = seeded_rng(num_rows as u64);
        let num_samples = 4000;
        let total: usize = (0..num_samples)
            .map(|_| {
                sampler.sample_into(&mut rng, &mut rows);
                rows.len()
            })
            .sum();
        let mean = total as f64 / f64::from(num_samples);
        // Binomial(N, B/N) has variance below B: 4 standard errors.
        assert!(
            (mean - 16.0).abs() < 4.0 * (16.0 / f64::from(num_samples)).sqrt(),
            "N = {num_rows}: mean batch {mean}"
        );
        let weights = ModelWeights::init(ModelSpec::mlp(4, vec![3], 2), 1).unwrap();
        let data = random_dataset(num_rows, 4, 2, 1.0, 5);
        let outcome = train_local_dp(
            &weights,
            &data,
            &TrainingPlan::new(),
            &dp,
            &mut seeded_rng(6),
        )
        .unwrap();
        assert_eq!(outcome.num_steps, u64::from(plan_steps));
    }
}

#[test]
fn fewer_rows_than_the_public_minimum_are_refused_without_naming_the_count() {
    let dp = DpSgdPlan::new(16, 500, 1.0, 1.0, 3);
    assert_eq!(dp.max_sampling_rate(), 16.0 / 500.0);
    assert_eq!(dp.sampling_rate_for(500).unwrap(), 16.0 / 500.0);
    assert_eq!(dp.sampling_rate_for(2000).unwrap(), 16.0 / 2000.0);
    let weights = ModelWeights::init(ModelSpec::mlp(4, vec![3], 2), 1).unwrap();
    let data = random_dataset(437, 4, 2, 1.0, 5);
    let error = train_local_dp(
        &weights,
        &data,
        &TrainingPlan::new(),
        &dp,
        &mut seeded_rng(6),
    )
    .unwrap_err();
    assert!(
        matches!(error, CoreError::BelowMinimumRecords { min_records: 500 }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("minimum of 500 records"), "{message}");
    assert!(!message.contains("437"), "{message} reveals the data size");
}

#[test]
fn poisson_sampling_draws_q_n_rows_on_average_and_reaches_every_row() {
    let num_rows = 1000;
    let sampling_rate = 0.05;
    let num_samples = 2000;
    let sampler = PoissonSampler::new(num_rows, sampling_rate).unwrap();
    let mut rng = seeded_rng(21);
    let mut rows = Vec::new();
    let mut times_drawn = vec![0u32; num_rows];
    let mut total = 0usize;
    for _ in 0..num_samples {
        sampler.sample_into(&mut rng, &mut rows);
        assert!(rows.windows(2).all(|pair| pair[0] < pair[1]));
        total += rows.len();
        for &row in &rows {
            times_drawn[row] += 1;
        }
    }
    let mean = total as f64 / num_samples as f64;
    let expected = sampling_rate * num_rows as f64;
    let standard_error =
        (num_rows as f64 * sampling_rate * (1.0 - sampling_rate) / num_samples as f64).sqrt();
    assert!(
        (mean - expected).abs() < 3.0 * standard_error,
        "mean batch {mean}, expected {expected} ± {standard_error}"
    );
    assert!(times_drawn.iter().all(|&count| count > 0));

    let everything = PoissonSampler::new(7, 1.0).unwrap();
    everything.sample_into(&mut rng, &mut rows);
    assert_eq!(rows, (0..7).collect::<Vec<_>>());
}

#[test]
fn dp_sgd_learns_to_detect_attacks_on_synthetic_flows() {
    // Both mix every benign profile and attack family (different seeds).
    let train = held_out_dataset(4000, 31);
    let held_out = held_out_dataset(1500, 1032);
    let spec = ModelSpec::mlp(num_flow_features() as u32, vec![32, 16], 2);
    let initial = ModelWeights::init(spec.clone(), 33).unwrap();
    let plan = TrainingPlan::new().with_learning_rate(1.0);
    let dp = DpSgdPlan::new(256, train.len() as u64, 1.0, 1.0, 300);
    let outcome = train_local_dp(&initial, &train, &plan, &dp, &mut seeded_rng(34)).unwrap();
    assert_eq!(outcome.num_steps, 300);
    assert!(outcome.mean_loss.is_finite());
    let trained = ModelWeights::new(spec, outcome.params).unwrap();
    let accuracy = evaluate_model(&trained, &held_out, None).unwrap().accuracy;
    let attack_fraction = held_out.attack_fraction();
    let majority = attack_fraction.max(1.0 - attack_fraction);
    assert!(
        accuracy > 0.9 && accuracy > majority + 0.15,
        "held-out accuracy {accuracy}, majority baseline {majority}"
    );
}

#[test]
fn bad_plans_are_refused_with_the_field_named() {
    let good = DpSgdPlan::new(10, 10, 1.1, 1.0, 100);
    good.validate().unwrap();
    let cases = [
        (
            DpSgdPlan {
                expected_batch_size: 0,
                ..good.clone()
            },
            "expected_batch_size",
        ),
        (
            DpSgdPlan {
                min_records: 9,
                ..good.clone()
            },
            "min_records",
        ),
        (
            DpSgdPlan {
                noise_multiplier: 0.0,
                ..good.clone()
            },
            "noise_multiplier",
        ),
        (
            DpSgdPlan {
                noise_multiplier: -1.0,
                ..good.clone()
            },
            "noise_multiplier",
        ),
        (
            DpSgdPlan {
                noise_multiplier: f64::INFINITY,
                ..good.clone()
            },
            "noise_multiplier",
        ),
        (
            DpSgdPlan {
                clip_norm: 0.0,
                ..good.clone()
            },
            "clip_norm",
        ),
        (
            DpSgdPlan {
                clip_norm: f64::NAN,
                ..good.clone()
            },
            "clip_norm",
        ),
        (
            DpSgdPlan {
                steps_per_round: 0,
                ..good.clone()
            },
            "steps_per_round",
        ),
        (
            DpSgdPlan {
                steps_per_round: 2_000_000,
                ..good.clone()
            },
            "steps_per_round",
        ),
    ];
    for (plan, field) in cases {
        let message = plan.validate().unwrap_err().to_string();
        assert!(message.contains(field), "{message:?} does not name {field}");
    }
    let org = OrgDpPlan::new(1.0, 1.0);
    org.validate().unwrap();
    for (plan, field) in [
        (
            OrgDpPlan {
                clip_norm: -1.0,
                ..org.clone()
            },
            "clip_norm",
        ),
        (
            OrgDpPlan {
                noise_multiplier: 0.0,
                ..org.clone()
            },
            "noise_multiplier",
        ),
    ] {
        let message = plan.validate().unwrap_err().to_string();
        assert!(message.contains(field), "{message:?} does not name {field}");
        assert!(privatize_update(&mut [0.0], &plan, &mut seeded_rng(1)).is_err());
    }

    let weights = ModelWeights::init(ModelSpec::mlp(3, vec![4], 3), 1).unwrap();
    let data = random_dataset(10, 3, 3, 1.0, 2);
    let plan = TrainingPlan::new();
    let zero_noise = DpSgdPlan {
        noise_multiplier: 0.0,
        ..good.clone()
    };
    assert!(matches!(
        train_local_dp(&weights, &data, &plan, &zero_noise, &mut seeded_rng(1)),
        Err(CoreError::InvalidPrivacy(_))
    ));
    let bad_learning_rate = TrainingPlan::new().with_learning_rate(-1.0);
    assert!(matches!(
        train_local_dp(
            &weights,
            &data,
            &bad_learning_rate,
            &good,
            &mut seeded_rng(1)
        ),
        Err(CoreError::InvalidPlan(_))
    ));
    assert!(matches!(
        train_local_dp(&weights, &Dataset::new(5), &plan, &good, &mut seeded_rng(1)),
        Err(CoreError::EmptyDataset)
    ));
    let wide = random_dataset(4, 5, 2, 1.0, 3);
    assert!(matches!(
        train_local_dp(&weights, &wide, &plan, &good, &mut seeded_rng(1)),
        Err(CoreError::FeatureDimMismatch { .. })
    ));
    let mut unknown_class = Dataset::new(3);
    unknown_class
        .push_labelled(&[0.0, 0.0, 0.0], 5, "x")
        .unwrap();
    assert!(matches!(
        train_local_dp(&weights, &unknown_class, &plan, &good, &mut seeded_rng(1)),
        Err(CoreError::Training(_))
    ));
    let autoencoder = ModelWeights::init(ModelSpec::autoencoder(3, vec![2]), 1).unwrap();
    let mut attack_rows = Dataset::new(3);
    attack_rows
        .push(&[1.0, 2.0, 3.0], crate::model::data::ATTACK)
        .unwrap();
    assert!(matches!(
        train_local_dp(&autoencoder, &attack_rows, &plan, &good, &mut seeded_rng(1)),
        Err(CoreError::EmptyDataset)
    ));
}

/// Flattens a batch's clipped sums into one vector.
fn flat_sums(contribution: super::clipping::BatchContribution) -> Vec<f32> {
    contribution
        .clipped_sums
        .into_iter()
        .flat_map(|(weight, bias)| {
            let mut values = tensor_values(weight.into_data());
            values.extend(tensor_values(bias.into_data()));
            values
        })
        .collect()
}

/// Adding one record to a trimmed batch can push another record out of the
/// kept set (or let one back in), so it may change two terms; clipping each
/// to C/2 keeps the change within C, the sensitivity the noise is for.
#[test]
fn one_record_moves_a_trimmed_batchs_sum_by_at_most_the_clip_norm() {
    let spec = ModelSpec::autoencoder(6, vec![4, 2]);
    let weights = ModelWeights::init(spec.clone(), 5).unwrap();
    let layers = layers_from_flat(&weights);
    let objective = objective_of(&spec);
    let clip_norm = 0.8;
    let mut largest_change = 0.0f64;
    for seed in 0..40 {
        // Rows of mixed scale, so that losses (and which rows are trimmed)
        // differ, and gradients are large enough to be clipped.
        let data = random_dataset(41, 6, 1, 1.0 + seed as f32 * 0.5, 100 + seed);
        // Batch sizes n where adding one record trims one more (⌊f(n+1)⌋ =
        // ⌊f·n⌋ + 1): a kept new record then pushes another one out. And one
        // where it does not.
        for (num_rows, trim_fraction) in [(29, 0.1), (39, 0.25), (29, 0.5), (30, 0.1)] {
            let without_last: Vec<usize> = (0..num_rows).collect();
            let with_last: Vec<usize> = (0..=num_rows).collect();
            let before = flat_sums(clipped_gradient_sums(
                &layers,
                &Batch::new(&data, &without_last, objective),
                clip_norm,
                trim_fraction,
            ));
            let after = flat_sums(clipped_gradient_sums(
                &layers,
                &Batch::new(&data, &with_last, objective),
                clip_norm,
                trim_fraction,
            ));
            let change: Vec<f32> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
            let change = l2_norm(&change);
            assert!(
                change <= clip_norm * (1.0 + 1e-4),
                "seed {seed}, trim {trim_fraction}: one record moved the sum by {change} > C = {clip_norm}"
            );
            largest_change = largest_change.max(change);
        }
    }
    // The bound is not vacuous: some record moves the sum by more than the
    // C/2 of its own clipped term.
    assert!(
        largest_change > clip_norm / 2.0 * 1.01,
        "largest change {largest_change}"
    );
}

#[test]
fn trimming_leaves_out_the_highest_loss_examples_and_refuses_classifiers() {
    let spec = ModelSpec::autoencoder(6, vec![4, 2]);
    let weights = ModelWeights::init(spec.clone(), 5).unwrap();
    let layers = layers_from_flat(&weights);
    let objective = objective_of(&spec);
    let data = random_dataset(20, 6, 1, 1.0, 9);
    let rows: Vec<usize> = (0..20).collect();
    let full = clipped_gradient_sums(&layers, &Batch::new(&data, &rows, objective), 1e6, 0.0);
    let trimmed = clipped_gradient_sums(&layers, &Batch::new(&data, &rows, objective), 1e6, 0.2);
    assert_eq!(full.num_contributing, 20);
    assert_eq!(trimmed.num_contributing, 16);
    // The 4 trimmed losses are the 4 largest.
    let pass = forward_backward(&layers, &Batch::new(&data, &rows, objective));
    let mut losses: Vec<f32> = pass
        .squared_norms_and_losses()
        .chunks_exact(2)
        .map(|pair| pair[1])
        .collect();
    losses.sort_by(f32::total_cmp);
    let lowest_16: f64 = losses[..16].iter().map(|&loss| f64::from(loss)).sum();
    assert!((trimmed.loss_sum - lowest_16).abs() < 1e-4);

    let classifier = ModelWeights::init(ModelSpec::mlp(6, vec![4], 2), 5).unwrap();
    let mut plan = TrainingPlan::new();
    plan.trim_fraction = 0.1;
    let dp = DpSgdPlan::new(20, 20, 1.0, 1.0, 1);
    plan.dp_sgd = Some(dp.clone());
    let error = train_local_dp(&classifier, &data, &plan, &dp, &mut seeded_rng(1))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("trimming applies to the autoencoder only"),
        "{error}"
    );
    plan.trim_fraction = 0.6;
    let error = plan.validate().unwrap_err().to_string();
    assert!(
        error.contains("trim_fraction is 0.6, must be in [0, 0.5]"),
        "{error}"
    );
}
