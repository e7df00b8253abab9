//! Record-level differential privacy of local training with DP-SGD (Abadi
//! et al. 2016, <https://arxiv.org/abs/1607.00133>): every step trains on a
//! Poisson sample of the local rows, clips each example's gradient to an L2
//! norm `C`, sums the clipped gradients, adds Gaussian noise of standard
//! deviation `σ·C` to every coordinate and divides by the public expected
//! batch size `B`. The coordinator's [`DpSgdPlan`] fixes `B`, the steps per
//! round `T`, `σ`, `C` and a public minimum data size `N_min`; a participant
//! with `N ≥ N_min` rows samples with its own rate `q = B/N` and accounts
//! with it. Neither the noise scale of an update (`σ·C/B` per step) nor the
//! work of a round (`T` steps of `B` examples on average) depends on `N`.
//!
//! Per-example gradient norms come from one explicit forward and backward
//! pass of the MLP on the non-autodiff ndarray backend ("ghost norms",
//! Goodfellow 2015, <https://arxiv.org/abs/1510.01799>; Li et al. 2022,
//! <https://arxiv.org/abs/2110.05679>): for a linear layer with input `a_i`
//! and output gradient `g_i` of example `i`, the weight gradient is the
//! outer product `a_i g_iᵀ`, whose squared Frobenius norm is
//! `‖a_i‖²·‖g_i‖²`, and the bias gradient is `g_i`. The clipped sum of the
//! weight gradients is then one matrix product `aᵀ (c ⊙ g)`, so no
//! per-example gradient is ever materialized.
//!
//! Noise is drawn from a CSPRNG ([`crate::privacy::noise::os_seeded_rng`]); gradients, updates and
//! their norms are never logged.
//!
//! - `layers`: the MLP as DP-SGD sees it (dense layers on the ndarray backend, batches, objectives).
//! - `clipping`: per-example gradient norms (ghost norms) and the sums of clipped gradients.
//! - `sampling`: Poisson sampling of a step's rows.
//! - `step`: the noisy SGD step.

mod clipping;
mod layers;
mod sampling;
mod step;
#[cfg(test)]
mod tests;

pub use clipping::clip_factors;

use burn::backend::NdArray;
use burn::backend::ndarray::NdArrayDevice;
use rand::{CryptoRng, Rng};

use crate::error::{CoreError, Result};
use crate::model::data::Dataset;
use crate::model::training::{
    LocalTrainingOutcome, ProgressObserver, TrainingProgress, check_trim_applies, no_progress,
    training_rows,
};
use crate::model::weights::ModelWeights;
use crate::plan::{DpSgdPlan, TrainingPlan};
use clipping::clipped_gradient_sums;
use layers::{Batch, flatten_layers, layers_from_flat, objective_of};
use sampling::PoissonSampler;
use step::apply_noisy_step;

/// The backend DP-SGD runs on: ndarray on the CPU, without autodiff (the
/// backward pass is written out by hand to get per-example norms).
type DpBackend = NdArray<f32>;

/// The device of [`DpBackend`].
const DEVICE: NdArrayDevice = NdArrayDevice::Cpu;
/// Trains with DP-SGD (Abadi et al. 2016, <https://arxiv.org/abs/1607.00133>).
///
/// Each of `dp.steps_per_round` steps takes a Poisson sample of the N rows
/// (each independently with probability q = B/N, B = `dp.expected_batch_size`),
/// clips each sampled example's gradient (all parameters together) to L2
/// norm C, adds N(0, σ²C²) noise to every coordinate of the sum, divides by
/// the public B (which q·N equals) and takes an SGD step with
/// `plan.learning_rate`. An empty sample still takes a step with the noise
/// alone, as the accountant assumes. Of `plan`, only the learning rate is
/// used: the batches and the number of steps come from `dp`.
///
/// So the noise an update carries (standard deviation lr·σ·C/B per step and
/// coordinate), the number of steps and the expected work per step (B
/// examples) are the same for every participant, whatever its N: the
/// coordinator cannot tell data sizes apart from them. N enters only the
/// sampling rate q, which stays on the node (its ledger accounts with it).
///
/// The losses are those of [`crate::model::training::train_local`], per example
/// (the clipped quantity): classifiers minimize cross-entropy over the
/// binary label (two classes) or the class index (more classes);
/// autoencoders minimize the mean squared reconstruction error of each row
/// and train on benign rows only (N = benign rows, see
/// [`crate::model::training::num_training_rows`]).
///
/// The returned `mean_loss` is the mean per-example loss over the examples
/// sampled in the last epoch-equivalent of the round (the last ⌈1/q⌉ steps,
/// or all steps if fewer), NaN if none was sampled then. It is computed from
/// raw data without noise: keep it on the node.
///
/// CPU-bound: call it from a blocking thread, not from async code.
///
/// # Errors
/// [`CoreError::InvalidPlan`] or [`CoreError::InvalidPrivacy`] for bad plans,
/// [`CoreError::BelowMinimumRecords`] for fewer rows than the plan's minimum,
/// [`CoreError::InvalidSpec`], [`CoreError::ParamCountMismatch`], [`CoreError::EmptyDataset`],
/// [`CoreError::FeatureDimMismatch`], or [`CoreError::Training`] for a class
/// index the model cannot output or a parameter that became non-finite. An
/// example whose loss or gradient norm is non-finite does not fail training:
/// it contributes zero to its step and is counted in
/// [`LocalTrainingOutcome::num_non_finite_examples`].
pub fn train_local_dp<R: Rng + CryptoRng + ?Sized>(
    weights: &ModelWeights,
    data: &Dataset,
    plan: &TrainingPlan,
    dp: &DpSgdPlan,
    rng: &mut R,
) -> Result<LocalTrainingOutcome> {
    train_local_dp_observed(weights, data, plan, dp, rng, &no_progress)
}

/// [`train_local_dp`], reporting progress (step counts, which the plan fixes
/// in advance and which reveal nothing of the data) after every step.
///
/// # Errors
/// As [`train_local_dp`].
pub fn train_local_dp_observed<R: Rng + CryptoRng + ?Sized>(
    weights: &ModelWeights,
    data: &Dataset,
    plan: &TrainingPlan,
    dp: &DpSgdPlan,
    rng: &mut R,
    observer: ProgressObserver<'_>,
) -> Result<LocalTrainingOutcome> {
    dp.validate()?;
    run_dp_sgd(weights, data, plan, dp, rng, observer)
}

/// [`train_local_dp`] without the check that σ is positive (tests use σ = 0).
fn run_dp_sgd<R: Rng + CryptoRng + ?Sized>(
    weights: &ModelWeights,
    data: &Dataset,
    plan: &TrainingPlan,
    dp: &DpSgdPlan,
    rng: &mut R,
    observer: ProgressObserver<'_>,
) -> Result<LocalTrainingOutcome> {
    plan.validate()?;
    dp.validate_allowing_zero_noise()?;
    weights.spec.validate()?;
    if weights.spec.is_benchmark_flat() {
        return Err(CoreError::InvalidSpec(
            "a benchmark-flat model has no layers: it cannot be trained".to_string(),
        ));
    }
    let expected_params = weights.spec.num_params();
    if weights.params.len() != expected_params {
        return Err(CoreError::ParamCountMismatch {
            expected: expected_params as u64,
            actual: weights.params.len() as u64,
        });
    }
    check_trim_applies(weights, plan)?;
    let data = training_rows(weights, data)?;
    let data = data.as_ref();
    let objective = objective_of(&weights.spec);

    let mut layers = layers_from_flat(weights);
    let sampling_rate = dp.sampling_rate_for(data.len() as u64)?;
    let sampler = PoissonSampler::new(data.len(), sampling_rate)?;
    // θ ← θ − lr · (Σ clipped + noise) / B, with the public B rather than
    // q·N: the noise's scale in the update does not depend on N.
    let step_scale = f64::from(plan.learning_rate) / f64::from(dp.expected_batch_size);
    let noise_std = dp.noise_multiplier * dp.clip_norm;
    let decay_factor = 1.0 - f64::from(plan.learning_rate) * f64::from(plan.weight_decay);
    let num_steps = u64::from(dp.steps_per_round);
    // The last epoch-equivalent of the round, over which mean_loss is taken.
    let loss_window_steps = (1.0 / sampling_rate).ceil().min(num_steps as f64) as u64;
    let first_loss_step = num_steps - loss_window_steps;
    // Progress is told in epoch-equivalents of 1/q steps.
    let steps_per_epoch = loss_window_steps.max(1);
    let epochs = num_steps.div_ceil(steps_per_epoch).max(1) as u32;
    let mut loss_sum = 0.0f64;
    let mut num_loss_examples = 0u64;
    let mut num_non_finite_examples = 0u64;
    let mut sampled_rows = Vec::new();
    for step in 0..num_steps {
        sampler.sample_into(rng, &mut sampled_rows);
        let clipped_sums = if sampled_rows.is_empty() {
            None
        } else {
            let batch = Batch::new(data, &sampled_rows, objective);
            let contribution =
                clipped_gradient_sums(&layers, &batch, dp.clip_norm, plan.trim_fraction);
            num_non_finite_examples += contribution.num_non_finite_examples;
            if step >= first_loss_step {
                loss_sum += contribution.loss_sum;
                num_loss_examples += contribution.num_contributing;
            }
            Some(contribution.clipped_sums)
        };
        layers = apply_noisy_step(
            layers,
            clipped_sums,
            noise_std,
            step_scale,
            decay_factor,
            rng,
        );
        let progress = TrainingProgress {
            steps_done: step + 1,
            steps_planned: num_steps,
            epoch: ((step / steps_per_epoch) + 1).min(u64::from(epochs)) as u32,
            epochs,
        };
        if observer(progress).is_break() {
            return Err(CoreError::Cancelled {
                steps_done: step + 1,
            });
        }
    }
    let params = flatten_layers(layers);
    if let Some(index) = params.iter().position(|value| !value.is_finite()) {
        return Err(CoreError::Training(format!(
            "parameter {index} became non-finite after {num_steps} steps"
        )));
    }
    let mean_loss = if num_loss_examples == 0 {
        f32::NAN
    } else {
        (loss_sum / num_loss_examples as f64) as f32
    };
    Ok(LocalTrainingOutcome {
        params,
        num_steps,
        mean_loss,
        num_non_finite_examples,
    })
}
