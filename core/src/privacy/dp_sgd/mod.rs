//! Differential privacy of local training.
//!
//! - Record-level DP with DP-SGD (Abadi et al. 2016,
//!   <https://arxiv.org/abs/1607.00133>): every step trains on a Poisson
//!   sample of the local rows, clips each example's gradient to an L2 norm
//!   `C`, sums the clipped gradients, adds Gaussian noise of standard
//!   deviation `σ·C` to every coordinate and divides by the public expected
//!   batch size `B`. The coordinator's [`DpSgdPlan`] fixes `B`, the steps
//!   per round `T`, `σ`, `C` and a public minimum data size `N_min`; a
//!   participant with `N ≥ N_min` rows samples with its own rate
//!   `q = B/N` and accounts with it. Neither the noise scale of an update
//!   (`σ·C/B` per step) nor the work of a round (`T` steps of `B` examples on
//!   average) depends on `N`.
//! - Organization-level DP (McMahan et al. 2018, DP-FedAvg,
//!   <https://arxiv.org/abs/1710.06963>): [`privatize_update`] clips a whole
//!   update and adds Gaussian noise, so that the update hides any single
//!   organization's participation (given the matching accounting).
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
//! Noise is drawn from a CSPRNG ([`os_seeded_rng`]); gradients, updates and
//! their norms are never logged.

use burn::backend::NdArray;
use burn::backend::ndarray::NdArrayDevice;
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Bool, Tensor, TensorData};
use rand::rngs::{ChaCha20Rng, SysRng};
use rand::{CryptoRng, Rng, SeedableRng};
use rand_distr::{Distribution, Geometric, Normal};

use crate::error::{CoreError, Result};
use crate::model::ModelSpec;
use crate::model::data::Dataset;
use crate::model::training::{
    LocalTrainingOutcome, ProgressObserver, TrainingPlan, TrainingProgress, no_progress,
    training_rows,
};
use crate::model::weights::ModelWeights;
pub use crate::plan::{DpSgdPlan, MAX_DP_STEPS_PER_ROUND, OrgDpPlan};

/// The backend DP-SGD runs on: ndarray on the CPU, without autodiff (the
/// backward pass is written out by hand to get per-example norms).
type DpBackend = NdArray<f32>;

/// The device of [`DpBackend`].
const DEVICE: NdArrayDevice = NdArrayDevice::Cpu;

/// Added to per-example gradient norms before dividing by them, so that a
/// zero gradient gets clip factor 1 instead of a division by zero.
const NORM_EPSILON: f64 = 1e-12;

/// Relative margin by which [`privatize_update`] clips below its bound, so
/// that float32 rounding of the scaled values cannot push the norm above it.
const CLIP_ROUNDING_MARGIN: f64 = 1e-6;

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

/// Returns per-example clip factors `min(1, C / ‖g_i‖)` from per-example
/// squared norms `‖g_i‖²`; a non-finite squared norm gets factor 0, so that
/// the example contributes nothing.
pub fn clip_factors(squared_norms: &[f32], clip_norm: f64) -> Vec<f32> {
    squared_norms
        .iter()
        .map(|&squared_norm| {
            if !squared_norm.is_finite() {
                return 0.0;
            }
            let norm = f64::from(squared_norm).max(0.0).sqrt();
            (clip_norm / (norm + NORM_EPSILON)).min(1.0) as f32
        })
        .collect()
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
            let contribution = clipped_gradient_sums(&layers, &batch, dp.clip_norm);
            num_non_finite_examples += contribution.num_non_finite_examples;
            if step >= first_loss_step {
                loss_sum += contribution.loss_sum;
                num_loss_examples +=
                    sampled_rows.len() as u64 - contribution.num_non_finite_examples;
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

/// The per-layer sums over a batch of the clipped per-example weight and
/// bias gradients.
type ClippedSums = Vec<(Tensor<DpBackend, 2>, Tensor<DpBackend, 1>)>;

/// What the sampled examples of one step contribute.
struct BatchContribution {
    /// The per-layer sums of the clipped per-example gradients.
    clipped_sums: ClippedSums,
    /// The sum of the losses of the examples that contributed.
    loss_sum: f64,
    /// Examples whose loss or gradient norm was non-finite, which contributed
    /// zero. Derived from raw data: local logs only.
    num_non_finite_examples: u64,
}

/// Returns the per-layer sums of the per-example gradients of `batch`, each
/// clipped to L2 norm `clip_norm`, and the sum of the per-example losses.
///
/// An example whose loss or gradient norm is non-finite (float32 overflow on
/// an extreme record) contributes zero, which clipping allows (its
/// contribution's norm, 0, is within `C`), so the step goes on and the
/// privacy analysis is unchanged; it is counted, not reported. Declining the
/// round instead would make whether a participant declines a non-private
/// function of one record.
fn clipped_gradient_sums(
    layers: &[DenseLayer],
    batch: &Batch,
    clip_norm: f64,
) -> BatchContribution {
    let pass = forward_backward(layers, batch);
    let norms_and_losses = pass.squared_norms_and_losses();
    let mut squared_norms = Vec::with_capacity(norms_and_losses.len() / 2);
    let mut contributes = Vec::with_capacity(norms_and_losses.len() / 2);
    let mut loss_sum = 0.0f64;
    let mut num_non_finite_examples = 0u64;
    for pair in norms_and_losses.chunks_exact(2) {
        let (squared_norm, loss) = (pair[0], pair[1]);
        let finite = squared_norm.is_finite() && loss.is_finite();
        contributes.push(finite);
        if finite {
            squared_norms.push(squared_norm);
            loss_sum += f64::from(loss);
        } else {
            // clip_factors gives a non-finite norm factor 0.
            squared_norms.push(f32::INFINITY);
            num_non_finite_examples += 1;
        }
    }
    let factors = clip_factors(&squared_norms, clip_norm);
    BatchContribution {
        clipped_sums: pass.clipped_gradient_sums(factors, &contributes),
        loss_sum,
        num_non_finite_examples,
    }
}

/// Poisson subsampling: every row joins a sample independently with
/// probability q. Instead of one coin per row, the gaps between sampled rows
/// are drawn from the geometric distribution (failures before a success),
/// which costs O(q·N) draws per sample.
struct PoissonSampler {
    num_rows: u64,
    gap: Geometric,
}

impl PoissonSampler {
    fn new(num_rows: usize, sampling_rate: f64) -> Result<Self> {
        let gap = Geometric::new(sampling_rate).map_err(|error| {
            CoreError::InvalidPrivacy(format!("sampling_rate is {sampling_rate}: {error}"))
        })?;
        Ok(PoissonSampler {
            num_rows: num_rows as u64,
            gap,
        })
    }

    /// Replaces `rows` with a fresh sample, in increasing order.
    fn sample_into<R: Rng + ?Sized>(&self, rng: &mut R, rows: &mut Vec<usize>) {
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

/// What a model learns to output.
#[derive(Debug, Clone, Copy)]
enum Objective {
    /// Class probabilities (softmax over logits), trained with cross-entropy
    /// over the binary label (`multi_class` false) or the class index.
    Classes {
        num_classes: usize,
        multi_class: bool,
    },
    /// The input itself, trained with the mean squared reconstruction error.
    Reconstruction,
}

/// Returns what a model of `spec` learns (its rows were checked by
/// `training_rows`).
fn objective_of(spec: &ModelSpec) -> Objective {
    if spec.is_autoencoder() {
        return Objective::Reconstruction;
    }
    if spec.num_classes <= 2 {
        return Objective::Classes {
            num_classes: 2,
            multi_class: false,
        };
    }
    Objective::Classes {
        num_classes: spec.num_classes as usize,
        multi_class: true,
    }
}

/// One linear layer, `y = x W + b`.
struct DenseLayer {
    weight: Tensor<DpBackend, 2>, // [d_in, d_out]
    bias: Tensor<DpBackend, 1>,   // [d_out]
}

/// Returns the layers of `weights` (whose parameter count was checked), in
/// the flat layout of [`crate::model`]: per layer the row-major weight, then
/// the bias.
fn layers_from_flat(weights: &ModelWeights) -> Vec<DenseLayer> {
    let mut offset = 0;
    let mut layers = Vec::new();
    for (d_in, d_out) in weights.spec.layer_dims() {
        let weight_values = weights.params[offset..offset + d_in * d_out].to_vec();
        offset += d_in * d_out;
        let bias_values = weights.params[offset..offset + d_out].to_vec();
        offset += d_out;
        layers.push(DenseLayer {
            weight: Tensor::from_data(TensorData::new(weight_values, [d_in, d_out]), &DEVICE),
            bias: Tensor::from_data(TensorData::new(bias_values, [d_out]), &DEVICE),
        });
    }
    layers
}

/// Returns the parameters of `layers` as one flat vector (inverse of
/// [`layers_from_flat`]).
fn flatten_layers(layers: Vec<DenseLayer>) -> Vec<f32> {
    let mut params = Vec::new();
    for layer in layers {
        params.extend(tensor_values(layer.weight.into_data()));
        params.extend(tensor_values(layer.bias.into_data()));
    }
    params
}

fn tensor_values(data: TensorData) -> Vec<f32> {
    data.into_vec::<f32>().expect("DP-SGD tensors are float32")
}

/// The inputs and targets of one sampled batch.
struct Batch {
    inputs: Tensor<DpBackend, 2>, // [batch, features]
    /// One-hot targets of a classifier, `[batch, num_classes]`; none for
    /// the autoencoder, whose target is its input.
    one_hot_targets: Option<Tensor<DpBackend, 2>>,
}

impl Batch {
    fn new(data: &Dataset, rows: &[usize], objective: Objective) -> Self {
        let num_features = data.num_features();
        let mut features = Vec::with_capacity(rows.len() * num_features);
        for &row in rows {
            features.extend_from_slice(data.row(row));
        }
        let inputs = Tensor::from_data(
            TensorData::new(features, [rows.len(), num_features]),
            &DEVICE,
        ); // [batch, features]
        let one_hot_targets = match objective {
            Objective::Reconstruction => None,
            Objective::Classes {
                num_classes,
                multi_class,
            } => {
                let mut one_hot = vec![0.0f32; rows.len() * num_classes];
                for (position, &row) in rows.iter().enumerate() {
                    let target = if multi_class {
                        data.classes()[row]
                    } else {
                        data.labels()[row]
                    } as usize;
                    one_hot[position * num_classes + target] = 1.0;
                }
                Some(Tensor::from_data(
                    TensorData::new(one_hot, [rows.len(), num_classes]),
                    &DEVICE,
                )) // [batch, num_classes]
            }
        };
        Batch {
            inputs,
            one_hot_targets,
        }
    }
}

/// The activations and gradients of one forward and backward pass over a
/// batch, from which come both the per-example (ghost) norms and the sums of
/// clipped gradients.
struct BatchPass {
    /// a_l, the input of each layer: `[batch, d_in of layer l]`.
    layer_inputs: Vec<Tensor<DpBackend, 2>>,
    /// g_l, the gradient of each example's own loss with respect to the
    /// output of each layer (before its ReLU): `[batch, d_out of layer l]`.
    output_gradients: Vec<Tensor<DpBackend, 2>>,
    /// Each example's loss: `[batch, 1]`.
    losses: Tensor<DpBackend, 2>,
}

/// Runs the MLP forward over `batch`, keeping each layer's input, then
/// backward from each example's own loss (not the batch mean), keeping each
/// layer's output gradient.
fn forward_backward(layers: &[DenseLayer], batch: &Batch) -> BatchPass {
    let num_layers = layers.len();
    let mut layer_inputs = Vec::with_capacity(num_layers);
    let mut activations = batch.inputs.clone(); // [batch, input_dim]
    for (index, layer) in layers.iter().enumerate() {
        layer_inputs.push(activations.clone());
        let outputs =
            activations.matmul(layer.weight.clone()) + layer.bias.clone().unsqueeze::<2>(); // [batch, d_out]
        activations = if index + 1 < num_layers {
            relu(outputs)
        } else {
            outputs
        };
    }
    let (losses, mut gradient) = match &batch.one_hot_targets {
        Some(one_hot) => {
            // loss_i = −log softmax(z_i)[y_i]; ∂loss_i/∂z_i = softmax(z_i) − onehot(y_i).
            let log_probabilities = log_softmax(activations, 1); // [batch, num_classes]
            let losses = (log_probabilities.clone() * one_hot.clone())
                .sum_dim(1)
                .neg(); // [batch, 1]
            (losses, log_probabilities.exp() - one_hot.clone())
        }
        None => {
            // loss_i = mean_j (r_ij − x_ij)²; ∂loss_i/∂r_i = 2 (r_i − x_i) / d.
            let num_features = batch.inputs.dims()[1];
            let residuals = activations - batch.inputs.clone(); // [batch, features]
            let losses = residuals.clone().powi_scalar(2).mean_dim(1); // [batch, 1]
            (losses, residuals.mul_scalar(2.0 / num_features as f64))
        }
    };
    let mut output_gradients = Vec::with_capacity(num_layers);
    for index in (0..num_layers).rev() {
        let next_gradient = (index > 0).then(|| {
            let input_gradient = gradient
                .clone()
                .matmul(layers[index].weight.clone().transpose()); // [batch, d_in]
            // The input is the previous layer's ReLU output: where it is 0,
            // the ReLU passed no gradient.
            input_gradient.mask_fill(layer_inputs[index].clone().lower_equal_elem(0.0), 0.0)
        });
        output_gradients.push(gradient);
        match next_gradient {
            Some(next) => gradient = next,
            None => break,
        }
    }
    output_gradients.reverse();
    BatchPass {
        layer_inputs,
        output_gradients,
        losses,
    }
}

impl BatchPass {
    /// Returns, interleaved per example, the squared L2 norm of its gradient
    /// over all parameters and its loss: `[‖∇_1‖², loss_1, ‖∇_2‖², loss_2, …]`
    /// (one read-back of the tensors per step).
    fn squared_norms_and_losses(&self) -> Vec<f32> {
        let mut squared_norms = self.losses.zeros_like(); // [batch, 1]
        for (inputs, gradients) in self.layer_inputs.iter().zip(&self.output_gradients) {
            let input_squared_norms = inputs.clone().powi_scalar(2).sum_dim(1); // [batch, 1]
            let gradient_squared_norms = gradients.clone().powi_scalar(2).sum_dim(1); // [batch, 1]
            // ‖a_i g_iᵀ‖² + ‖g_i‖² (weight and bias).
            squared_norms =
                squared_norms + input_squared_norms.add_scalar(1.0) * gradient_squared_norms;
        }
        let norms_and_losses = Tensor::cat(vec![squared_norms, self.losses.clone()], 1); // [batch, 2]
        tensor_values(norms_and_losses.into_data())
    }

    /// Returns, per layer, the sums over the batch of the clipped per-example
    /// weight gradients `aᵀ (c ⊙ g)` and bias gradients `Σ_i c_i g_i`.
    ///
    /// The inputs and gradients of examples whose `contributes` entry is false
    /// are set to 0 first: a factor of 0 alone would leave `0 · inf = NaN`.
    fn clipped_gradient_sums(self, factors: Vec<f32>, contributes: &[bool]) -> ClippedSums {
        let batch_size = factors.len();
        let factors =
            Tensor::<DpBackend, 2>::from_data(TensorData::new(factors, [batch_size, 1]), &DEVICE); // [batch, 1]
        let excluded = contributes.iter().any(|&keep| !keep).then(|| {
            let excluded: Vec<bool> = contributes.iter().map(|&keep| !keep).collect();
            Tensor::<DpBackend, 2, Bool>::from_data(
                TensorData::new(excluded, [batch_size, 1]),
                &DEVICE,
            ) // [batch, 1]
        });
        let zero_excluded = |values: Tensor<DpBackend, 2>| match &excluded {
            Some(excluded) => {
                let width = values.dims()[1];
                values.mask_fill(excluded.clone().expand([batch_size, width]), 0.0)
            }
            None => values,
        };
        self.layer_inputs
            .into_iter()
            .zip(self.output_gradients)
            .map(|(inputs, gradients)| {
                let inputs = zero_excluded(inputs); // [batch, d_in]
                let gradients = zero_excluded(gradients); // [batch, d_out]
                let d_out = gradients.dims()[1];
                let clipped = gradients * factors.clone(); // [batch, d_out]
                let weight_sum = inputs.transpose().matmul(clipped.clone()); // [d_in, d_out]
                let bias_sum = clipped.sum_dim(0).reshape([d_out]); // [d_out]
                (weight_sum, bias_sum)
            })
            .collect()
    }
}

/// Takes one SGD step on `layers` with `(clipped_sums + noise) · step_scale`,
/// the noise being N(0, noise_std²) per coordinate; with no clipped sums
/// (an empty sample) the step is noise alone.
fn apply_noisy_step<R: Rng + CryptoRng + ?Sized>(
    layers: Vec<DenseLayer>,
    clipped_sums: Option<ClippedSums>,
    noise_std: f64,
    step_scale: f64,
    decay_factor: f64,
    rng: &mut R,
) -> Vec<DenseLayer> {
    let mut clipped_sums = clipped_sums.map(Vec::into_iter);
    // The layers are moved, not cloned, so that the backend updates their
    // tensors in place.
    layers
        .into_iter()
        .map(|DenseLayer { weight, bias }| {
            // Weight decay (θ ← θ·(1 − lr·λ)) does not depend on the data,
            // so it costs no privacy.
            let (weight, bias) = if decay_factor == 1.0 {
                (weight, bias)
            } else {
                (
                    weight.mul_scalar(decay_factor),
                    bias.mul_scalar(decay_factor),
                )
            };
            let (weight_sum, bias_sum) = clipped_sums.as_mut().and_then(Iterator::next).unzip();
            let weight_noise = gaussian_tensor(weight.dims(), noise_std, rng); // [d_in, d_out]
            let bias_noise = gaussian_tensor(bias.dims(), noise_std, rng); // [d_out]
            DenseLayer {
                weight: match sum_of_present(weight_sum, weight_noise) {
                    Some(step) => weight - step.mul_scalar(step_scale),
                    None => weight,
                },
                bias: match sum_of_present(bias_sum, bias_noise) {
                    Some(step) => bias - step.mul_scalar(step_scale),
                    None => bias,
                },
            }
        })
        .collect()
}

/// Returns `first + second`, either alone if the other is absent, or none.
fn sum_of_present<const D: usize>(
    first: Option<Tensor<DpBackend, D>>,
    second: Option<Tensor<DpBackend, D>>,
) -> Option<Tensor<DpBackend, D>> {
    match (first, second) {
        (Some(first), Some(second)) => Some(first + second),
        (first, second) => first.or(second),
    }
}

/// Returns a tensor of N(0, std²) draws, or none when `std` is 0.
fn gaussian_tensor<const D: usize, R: Rng + CryptoRng + ?Sized>(
    shape: [usize; D],
    std: f64,
    rng: &mut R,
) -> Option<Tensor<DpBackend, D>> {
    if std == 0.0 {
        return None;
    }
    let mut values = vec![0.0f32; shape.iter().product()];
    add_gaussian_noise(&mut values, std, rng);
    Some(Tensor::from_data(TensorData::new(values, shape), &DEVICE))
}

#[cfg(test)]
mod tests {
    use rand::RngExt;

    use super::*;
    use crate::model::metrics::evaluate_model;
    use crate::model::training::train_local;
    use crate::telemetry::{held_out_dataset, num_flow_features};

    fn seeded_rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

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

    fn l2_norm(values: &[f32]) -> f64 {
        values
            .iter()
            .map(|&value| f64::from(value) * f64::from(value))
            .sum::<f64>()
            .sqrt()
    }

    fn mean_and_std(values: &[f32]) -> (f64, f64) {
        let count = values.len() as f64;
        let mean = values.iter().map(|&value| f64::from(value)).sum::<f64>() / count;
        let variance = values
            .iter()
            .map(|&value| (f64::from(value) - mean).powi(2))
            .sum::<f64>()
            / (count - 1.0);
        (mean, variance.sqrt())
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
            let expected =
                clipped_gradient_sums(&layers, &Batch::new(&clean, &clean_rows, objective), 0.7);
            let actual =
                clipped_gradient_sums(&layers, &Batch::new(&poisoned, &all_rows, objective), 0.7);
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
            let bound =
                f64::from(learning_rate) * clip_norm * num_rows as f64 / expected_batch_size;
            assert!(
                change <= bound * (1.0 + 1e-4),
                "change {change} above {bound}"
            );
        }
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
    fn one_step_noise(
        weights: &ModelWeights,
        data: &Dataset,
        dp: &DpSgdPlan,
        seed: u64,
    ) -> Vec<f32> {
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

    #[test]
    fn os_seeded_rngs_differ() {
        let mut first = os_seeded_rng().unwrap();
        let mut second = os_seeded_rng().unwrap();
        assert_ne!(first.next_u64(), second.next_u64());
    }
}
