//! Local training of the detection model with burn (ndarray backend, autodiff).
//!
//! The loop is written by hand (forward, loss, backward, optimizer step) so
//! that differential privacy can later sit between `backward()` and `step()`.

use std::ops::ControlFlow;

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::{Autodiff, NdArray};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{CoreError, Result};
use crate::model::MlpClassifier;
use crate::model::data::Dataset;
use crate::model::weights::ModelWeights;
use crate::schema::MAX_FEATURE_MAGNITUDE;

/// The backend local training runs on: ndarray on the CPU with autodiff.
pub type TrainBackend = Autodiff<NdArray<f32>>;

pub use crate::plan::TrainingPlan;

/// What local training produced.
#[derive(Debug, Clone)]
pub struct LocalTrainingOutcome {
    /// The locally trained parameters.
    pub params: Vec<f32>,
    /// Gradient steps taken.
    pub num_steps: u64,
    /// Mean training loss over the last epoch.
    pub mean_loss: f32,
    /// Examples left out because their loss or gradient was non-finite (an
    /// extreme record overflowing float32): under DP-SGD each such sampled
    /// example contributed zero to its step; without DP, rows with a feature
    /// beyond ±[`MAX_FEATURE_MAGNITUDE`] (NaN included) are left out of
    /// training (counted once) and a row whose loss is non-finite is left out
    /// of its batch (counted each time). Derived from raw data: log it
    /// locally, never send it.
    pub num_non_finite_examples: u64,
}

impl LocalTrainingOutcome {
    /// Returns `params − base`, the update a participant sends.
    pub fn delta_from(&self, base: &[f32]) -> Vec<f32> {
        self.params
            .iter()
            .zip(base)
            .map(|(trained, original)| trained - original)
            .collect()
    }
}

/// Trains `weights` on `data` following `plan` with minibatch SGD; `seed`
/// fixes the shuffling order. Classifiers minimize cross-entropy over the
/// binary label (two classes) or the schema's class index (more classes);
/// autoencoders minimize the mean squared reconstruction error of the
/// benign rows only.
///
/// CPU-bound: call it from a blocking thread, not from async code.
///
/// # Errors
/// [`CoreError::InvalidPlan`], [`CoreError::EmptyDataset`],
/// [`CoreError::FeatureDimMismatch`], or [`CoreError::Training`] if a batch's
/// loss is non-finite even without its examples whose own loss is
/// non-finite (those are left out of their batch, as DP-SGD gives them zero
/// weight, and counted in [`LocalTrainingOutcome::num_non_finite_examples`]).
pub fn train_local(
    weights: &ModelWeights,
    data: &Dataset,
    plan: &TrainingPlan,
    seed: u64,
) -> Result<LocalTrainingOutcome> {
    train_local_observed(weights, data, plan, seed, &no_progress)
}

/// How far local training is, reported after every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainingProgress {
    /// Steps (batches) done so far.
    pub steps_done: u64,
    /// Steps the plan will take in all.
    pub steps_planned: u64,
    /// The epoch the step belonged to (1-based); for DP-SGD, the
    /// epoch-equivalent (1/q steps each).
    pub epoch: u32,
    /// Epochs the plan will take in all.
    pub epochs: u32,
}

/// A callback that learns how far training is (progress bars, logs) after
/// every step, and may stop it there: training that is told
/// [`ControlFlow::Break`] returns [`CoreError::Cancelled`]. It receives
/// step counts only: nothing derived from the data.
pub type ProgressObserver<'a> = &'a (dyn Fn(TrainingProgress) -> ControlFlow<()> + Sync);

/// An observer for callers that need no progress and never stop training.
pub fn no_progress(_: TrainingProgress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// [`train_local`], reporting progress to `observer` after every step.
///
/// # Errors
/// As [`train_local`].
pub fn train_local_observed(
    weights: &ModelWeights,
    data: &Dataset,
    plan: &TrainingPlan,
    seed: u64,
    observer: ProgressObserver<'_>,
) -> Result<LocalTrainingOutcome> {
    plan.validate()?;
    let data = training_rows(weights, data)?;
    // Without clipping, one row beyond the featurizer's range (only a
    // dataset built in memory, not through a schema, can hold one) would
    // swamp every step it is in: such rows are left out.
    let is_in_range = |index: usize| {
        data.row(index)
            .iter()
            .all(|feature| f64::from(feature.abs()) <= MAX_FEATURE_MAGNITUDE)
    };
    let num_out_of_range = (0..data.len()).filter(|&index| !is_in_range(index)).count();
    let data = if num_out_of_range == 0 {
        data
    } else {
        std::borrow::Cow::Owned(data.filter(is_in_range))
    };
    let data = data.as_ref();
    if data.is_empty() {
        return Err(CoreError::EmptyDataset);
    }
    let autoencoder = weights.spec.is_autoencoder();
    check_trim_applies(weights, plan)?;
    let multi_class = weights.spec.num_classes > 2;
    let device = NdArrayDevice::Cpu;
    let mut model =
        MlpClassifier::<TrainBackend>::from_flat(&weights.spec, &weights.params, &device)?;
    let weight_decay = (plan.weight_decay > 0.0).then(|| WeightDecayConfig::new(plan.weight_decay));
    let mut optimizer = SgdConfig::new().with_weight_decay(weight_decay).init();
    let loss_function = CrossEntropyLossConfig::new().init(&device);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let batch_size = plan.batch_size as usize;
    let max_steps = if plan.max_local_steps == 0 {
        u64::MAX
    } else {
        u64::from(plan.max_local_steps)
    };
    let mut num_steps = 0u64;
    let mut num_non_finite_examples = num_out_of_range as u64;
    let mut mean_loss = f32::NAN;
    let steps_per_epoch = data.len().div_ceil(batch_size) as u64;
    let steps_planned = (steps_per_epoch * u64::from(plan.local_epochs)).min(max_steps);
    'epochs: for epoch in 0..plan.local_epochs {
        order.shuffle(&mut rng);
        let mut epoch_loss_sum = 0.0f64;
        let mut epoch_batches = 0u64;
        for batch_indices in order.chunks(batch_size) {
            if num_steps >= max_steps {
                break 'epochs;
            }
            let batch_loss = |rows: &[usize]| {
                let (inputs, targets) = batch_tensors(data, rows, multi_class, &device);
                if autoencoder {
                    let reconstruction = model.forward(inputs.clone()); // [batch, features]
                    (reconstruction - inputs).powi_scalar(2).mean() // [1]
                } else {
                    let logits = model.forward(inputs); // [batch, num_classes]
                    loss_function.forward(logits, targets) // [1]
                }
            };
            let (mut loss, mut loss_value) = if plan.trim_fraction > 0.0 {
                // Scores every row of the batch first: rows with a
                // non-finite loss, then the highest-error fraction, are
                // left out of the step.
                let losses = row_losses(
                    &model,
                    data,
                    batch_indices,
                    multi_class,
                    autoencoder,
                    &device,
                );
                num_non_finite_examples +=
                    losses.iter().filter(|loss| !loss.is_finite()).count() as u64;
                let kept = rows_kept_after_trim(batch_indices, &losses, plan.trim_fraction);
                if kept.is_empty() {
                    continue;
                }
                let loss = batch_loss(&kept);
                let loss_value: f32 = loss.clone().into_scalar();
                (loss, loss_value)
            } else {
                let loss = batch_loss(batch_indices);
                let loss_value: f32 = loss.clone().into_scalar();
                (loss, loss_value)
            };
            if !loss_value.is_finite() {
                // An extreme record overflowed: train on the rest of the
                // batch, as DP-SGD gives such an example zero weight.
                let losses = row_losses(
                    &model,
                    data,
                    batch_indices,
                    multi_class,
                    autoencoder,
                    &device,
                );
                let finite_rows: Vec<usize> = batch_indices
                    .iter()
                    .zip(&losses)
                    .filter(|(_, loss)| loss.is_finite())
                    .map(|(&row, _)| row)
                    .collect();
                num_non_finite_examples += (batch_indices.len() - finite_rows.len()) as u64;
                if finite_rows.is_empty() {
                    continue;
                }
                loss = batch_loss(&finite_rows);
                loss_value = loss.clone().into_scalar();
            }
            if !loss_value.is_finite() {
                return Err(CoreError::Training(format!(
                    "loss became {loss_value} at step {num_steps}"
                )));
            }
            let gradients = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(f64::from(plan.learning_rate), model, gradients);
            epoch_loss_sum += f64::from(loss_value);
            epoch_batches += 1;
            num_steps += 1;
            let progress = TrainingProgress {
                steps_done: num_steps,
                steps_planned,
                epoch: epoch + 1,
                epochs: plan.local_epochs,
            };
            if observer(progress).is_break() {
                return Err(CoreError::Cancelled {
                    steps_done: num_steps,
                });
            }
        }
        if epoch_batches > 0 {
            mean_loss = (epoch_loss_sum / epoch_batches as f64) as f32;
        }
    }
    Ok(LocalTrainingOutcome {
        params: model.to_flat(),
        num_steps,
        mean_loss,
        num_non_finite_examples,
    })
}

/// Returns how many rows of `data` a model of `spec` trains on: all of them
/// for a classifier, the benign ones for an autoencoder. This is the N of
/// DP-SGD's sampling rate q = B/N, which the participant's ledger accounts
/// with; it never leaves the node.
pub fn num_training_rows(spec: &crate::model::ModelSpec, data: &Dataset) -> usize {
    if spec.is_autoencoder() {
        return data
            .labels()
            .iter()
            .filter(|&&label| label == crate::model::data::BENIGN)
            .count();
    }
    data.len()
}

/// Returns each row's own loss under `model`, in the order of `rows`.
fn row_losses(
    model: &MlpClassifier<TrainBackend>,
    data: &Dataset,
    rows: &[usize],
    multi_class: bool,
    autoencoder: bool,
    device: &NdArrayDevice,
) -> Vec<f32> {
    let (inputs, targets) = batch_tensors(data, rows, multi_class, device);
    let outputs = model.forward(inputs.clone()); // [batch, outputs]
    let losses = if autoencoder {
        (outputs - inputs).powi_scalar(2).mean_dim(1) // [batch, 1]
    } else {
        log_softmax(outputs, 1)
            .gather(1, targets.unsqueeze_dim(1))
            .neg() // [batch, 1]
    };
    losses
        .into_data()
        .into_vec::<f32>()
        .expect("training tensors are float32")
}

/// Returns how many of a batch of `batch_len` rows trimming leaves out:
/// `⌊fraction · batch_len⌋`, so that a batch smaller than `1 / fraction`
/// loses none.
pub fn num_trimmed(batch_len: usize, fraction: f32) -> usize {
    ((batch_len as f64) * f64::from(fraction)).floor() as usize
}

/// Returns the rows of `rows` with a finite loss, less the
/// [`num_trimmed`] of them with the highest losses (`losses[i]` is row
/// `rows[i]`'s), in their original order.
pub(crate) fn rows_kept_after_trim(rows: &[usize], losses: &[f32], fraction: f32) -> Vec<usize> {
    let mut finite: Vec<(usize, f32)> = rows
        .iter()
        .zip(losses)
        .filter(|(_, loss)| loss.is_finite())
        .map(|(&row, &loss)| (row, loss))
        .collect();
    let num_kept = finite.len() - num_trimmed(rows.len(), fraction).min(finite.len());
    // The stable sort keeps ties in batch order, so the result does not
    // depend on anything but the losses and the order.
    let mut by_loss: Vec<usize> = (0..finite.len()).collect();
    by_loss.sort_by(|&first, &second| finite[first].1.total_cmp(&finite[second].1));
    let mut keep = vec![false; finite.len()];
    for &position in &by_loss[..num_kept] {
        keep[position] = true;
    }
    let mut position = 0;
    finite.retain(|_| {
        position += 1;
        keep[position - 1]
    });
    finite.into_iter().map(|(row, _)| row).collect()
}

/// Refuses a plan that trims for a classifier: a classifier's highest
/// losses are its hardest attacks, not contamination.
///
/// # Errors
/// [`CoreError::InvalidPlan`].
pub(crate) fn check_trim_applies(weights: &ModelWeights, plan: &TrainingPlan) -> Result<()> {
    if plan.trim_fraction > 0.0 && !weights.spec.is_autoencoder() {
        return Err(CoreError::InvalidPlan(format!(
            "trim_fraction is {}, but trimming applies to the autoencoder only (a classifier's highest losses are its hardest attacks)",
            plan.trim_fraction
        )));
    }
    Ok(())
}

/// Returns the rows a model trains on, after checking them against it: all
/// of `data` for a classifier (whose class indices must fit its outputs), the
/// benign rows only for an autoencoder, which learns what benign traffic
/// looks like.
///
/// # Errors
/// [`CoreError::EmptyDataset`] (also when no benign row is left),
/// [`CoreError::FeatureDimMismatch`], or [`CoreError::Training`] for a class
/// index the model cannot output.
pub(crate) fn training_rows<'a>(
    weights: &ModelWeights,
    data: &'a Dataset,
) -> Result<std::borrow::Cow<'a, Dataset>> {
    if data.is_empty() {
        return Err(CoreError::EmptyDataset);
    }
    let input_dim = weights.spec.input_dim as usize;
    if data.num_features() != input_dim {
        return Err(CoreError::FeatureDimMismatch {
            expected: input_dim,
            actual: data.num_features(),
        });
    }
    if weights.spec.is_autoencoder() {
        let benign_only = data.filter(|index| data.labels()[index] == crate::model::data::BENIGN);
        if benign_only.is_empty() {
            return Err(CoreError::EmptyDataset);
        }
        return Ok(std::borrow::Cow::Owned(benign_only));
    }
    let num_classes = weights.spec.num_classes;
    if num_classes > 2
        && let Some(bad) = data.classes().iter().find(|&&class| class >= num_classes)
    {
        return Err(CoreError::Training(format!(
            "class index {bad} does not fit the model's {num_classes} classes; the model and the schema disagree"
        )));
    }
    Ok(std::borrow::Cow::Borrowed(data))
}

/// Returns the input and target tensors of one minibatch.
fn batch_tensors(
    data: &Dataset,
    indices: &[usize],
    multi_class: bool,
    device: &NdArrayDevice,
) -> (Tensor<TrainBackend, 2>, Tensor<TrainBackend, 1, Int>) {
    let num_features = data.num_features();
    let mut features = Vec::with_capacity(indices.len() * num_features);
    let mut labels = Vec::with_capacity(indices.len());
    for &index in indices {
        features.extend_from_slice(data.row(index));
        let target = if multi_class {
            data.classes()[index]
        } else {
            data.labels()[index]
        };
        labels.push(i64::from(target));
    }
    let inputs = Tensor::from_data(
        TensorData::new(features, [indices.len(), num_features]),
        device,
    ); // [batch, features]
    let targets = Tensor::from_data(TensorData::new(labels, [indices.len()]), device); // [batch]
    (inputs, targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;
    use crate::model::inference::predict_attack_probability;
    use crate::model::metrics::BinaryMetrics;
    use crate::telemetry::{OrgProfile, num_flow_features, synthetic_dataset};

    #[test]
    fn local_training_improves_accuracy_on_synthetic_flows() {
        let data = synthetic_dataset(OrgProfile::balanced(), 3000, 1);
        let (train, test) = data.split(0.3, 2);
        let spec = ModelSpec::mlp(num_flow_features() as u32, vec![32, 16], 2);
        let initial = ModelWeights::init(spec.clone(), 3).unwrap();
        let plan = TrainingPlan::new().with_local_epochs(6);
        let outcome = train_local(&initial, &train, &plan, 4).unwrap();
        assert!(outcome.num_steps > 0);
        let trained = ModelWeights::new(spec, outcome.params.clone()).unwrap();
        let before = BinaryMetrics::compute(
            &predict_attack_probability(&initial, test.features()).unwrap(),
            test.labels(),
        );
        let after = BinaryMetrics::compute(
            &predict_attack_probability(&trained, test.features()).unwrap(),
            test.labels(),
        );
        assert!(
            after.accuracy > 0.9,
            "accuracy after training {}",
            after.accuracy
        );
        assert!(after.accuracy > before.accuracy + 0.1);
    }

    #[test]
    fn autoencoder_trained_on_benign_flows_scores_attacks_higher() {
        let data = synthetic_dataset(OrgProfile::balanced(), 4000, 5);
        let (train, test) = data.split(0.3, 6);
        let spec = ModelSpec::autoencoder(num_flow_features() as u32, vec![12, 4]);
        let initial = ModelWeights::init(spec.clone(), 3).unwrap();
        let plan = TrainingPlan::new()
            .with_local_epochs(8)
            .with_learning_rate(0.2);
        let outcome = train_local(&initial, &train, &plan, 4).unwrap();
        let trained = ModelWeights::new(spec, outcome.params).unwrap();
        let scores = crate::model::inference::score_rows(&trained, test.features()).unwrap();
        let auc = crate::model::metrics::roc_auc(&scores, test.labels());
        assert!(auc > 0.8, "autoencoder ROC-AUC {auc}");
    }

    /// Benign training rows with 5% of one attack family hidden among them
    /// as if benign (unlabelled traffic): trimming the highest-error 10% of
    /// each batch keeps the attacks from teaching the autoencoder, measured
    /// by the detection rate of that family at 1% false positives.
    #[test]
    fn trimming_keeps_hidden_attacks_from_teaching_the_autoencoder() {
        let data = synthetic_dataset(OrgProfile::balanced(), 8000, 5);
        let (train, test) = data.split(0.3, 6);
        // One attack family hidden among the training rows as if benign.
        // The first attack class of the synthetic telemetry (a scan), which
        // an autoencoder learns to reconstruct when enough of it is hidden in
        // its training data.
        let hidden_class = 1;
        let mut contaminated = Dataset::new(train.num_features());
        let num_benign = train.labels().iter().filter(|&&label| label == 0).count();
        let num_hidden = num_benign * 5 / 100;
        let mut hidden = 0;
        for row in 0..train.len() {
            let class = train.classes()[row];
            if class != 0 && (class != hidden_class || hidden == num_hidden) {
                continue;
            }
            hidden += usize::from(class != 0);
            contaminated.push(train.row(row), 0).unwrap();
        }
        assert_eq!(hidden, num_hidden);
        let family_test = test
            .filter(|row| matches!(test.classes()[row], 0) || test.classes()[row] == hidden_class);
        let spec = ModelSpec::autoencoder(num_flow_features() as u32, vec![12, 4]);
        let initial = ModelWeights::init(spec.clone(), 3).unwrap();
        let detection_rate_with_trim = |trim_fraction: f32| {
            let mut plan = TrainingPlan::new()
                .with_local_epochs(8)
                .with_learning_rate(0.2);
            plan.trim_fraction = trim_fraction;
            let outcome = train_local(&initial, &contaminated, &plan, 4).unwrap();
            let trained = ModelWeights::new(spec.clone(), outcome.params).unwrap();
            let scores =
                crate::model::inference::score_rows(&trained, family_test.features()).unwrap();
            let threshold =
                crate::model::metrics::threshold_at_fpr(&scores, family_test.labels(), 0.01)
                    .unwrap();
            crate::model::metrics::detection_rate_above(&scores, family_test.labels(), threshold)
        };
        let untrimmed = detection_rate_with_trim(0.0);
        let trimmed = detection_rate_with_trim(0.1);
        println!(
            "class {hidden_class}: ROC-AUC with {num_hidden} hidden attacks: untrimmed {untrimmed:.4}, trimmed {trimmed:.4}"
        );
        assert!(
            trimmed > untrimmed + 0.02,
            "trimmed {trimmed:.4} vs untrimmed {untrimmed:.4}"
        );
    }

    #[test]
    fn trimming_leaves_out_the_highest_losses_of_a_batch_in_batch_order() {
        let rows = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19];
        let losses = [0.5, 9.0, 0.1, f32::NAN, 0.3, 7.0, 0.2, 0.4, 0.6, 0.7];
        // ⌊0.25 · 10⌋ = 2 trimmed (11 and 15), and the NaN row (13) dropped.
        assert_eq!(
            rows_kept_after_trim(&rows, &losses, 0.25),
            [10, 12, 14, 16, 17, 18, 19]
        );
        assert_eq!(num_trimmed(3, 0.25), 0);
        let classifier = ModelWeights::init(ModelSpec::mlp(3, vec![4], 2), 1).unwrap();
        let mut data = Dataset::new(3);
        data.push(&[0.0, 1.0, 2.0], 1).unwrap();
        let mut plan = TrainingPlan::new();
        plan.trim_fraction = 0.1;
        let error = train_local(&classifier, &data, &plan, 0)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("trimming applies to the autoencoder only"),
            "{error}"
        );
    }

    #[test]
    fn multi_class_training_uses_class_indices_and_rejects_ones_that_do_not_fit() {
        let mut data = Dataset::new(2);
        for index in 0..60 {
            let class = (index % 3) as u32;
            data.push_labelled(&[class as f32, 1.0 - class as f32], class, "x")
                .unwrap();
        }
        let three = ModelWeights::init(ModelSpec::mlp(2, vec![8], 3), 1).unwrap();
        let plan = TrainingPlan::new().with_local_epochs(3).with_batch_size(8);
        assert!(train_local(&three, &data, &plan, 0).is_ok());
        let mut bad = Dataset::new(2);
        bad.push_labelled(&[0.0, 0.0], 5, "x").unwrap();
        assert!(matches!(
            train_local(&three, &bad, &plan, 0),
            Err(CoreError::Training(_))
        ));
    }

    #[test]
    fn invalid_plans_and_mismatched_data_are_errors() {
        let spec = ModelSpec::mlp(3, vec![4], 2);
        let weights = ModelWeights::init(spec, 1).unwrap();
        let mut data = Dataset::new(3);
        data.push(&[0.0, 1.0, 2.0], 1).unwrap();
        let zero_batch = TrainingPlan::new().with_batch_size(0);
        assert!(matches!(
            train_local(&weights, &data, &zero_batch, 0),
            Err(CoreError::InvalidPlan(_))
        ));
        let wrong_width = Dataset::new(5);
        assert!(train_local(&weights, &wrong_width, &TrainingPlan::new(), 0).is_err());
        let max_steps = TrainingPlan::new()
            .with_max_local_steps(1)
            .with_local_epochs(5);
        assert_eq!(
            train_local(&weights, &data, &max_steps, 0)
                .unwrap()
                .num_steps,
            1
        );
    }

    #[test]
    fn rows_with_a_non_finite_loss_are_left_out_of_their_batch_without_dp() {
        for spec in [
            ModelSpec::mlp(num_flow_features() as u32, vec![8], 2),
            ModelSpec::autoencoder(num_flow_features() as u32, vec![4]),
        ] {
            let clean = synthetic_dataset(OrgProfile::balanced(), 200, 1);
            let mut poisoned = clean.clone();
            poisoned
                .push(&vec![f32::NAN; num_flow_features()], 0)
                .unwrap();
            let initial = ModelWeights::init(spec.clone(), 1).unwrap();
            let plan = TrainingPlan::new().with_local_epochs(3).with_batch_size(32);
            let outcome = train_local(&initial, &poisoned, &plan, 4).unwrap();
            // Left out of training; every batch still trained.
            assert_eq!(outcome.num_non_finite_examples, 1);
            let num_training_rows = training_rows(&initial, &clean).unwrap().len();
            assert_eq!(outcome.num_steps, 3 * num_training_rows.div_ceil(32) as u64);
            assert!(outcome.params.iter().all(|value| value.is_finite()));
            assert!(outcome.mean_loss.is_finite());
            let clean_outcome = train_local(&initial, &clean, &plan, 4).unwrap();
            assert_eq!(clean_outcome.num_non_finite_examples, 0);
        }
    }

    #[test]
    fn an_observer_that_breaks_stops_training_after_that_step() {
        let train = synthetic_dataset(OrgProfile::balanced(), 160, 1);
        let spec = ModelSpec::mlp(num_flow_features() as u32, vec![8], 2);
        let initial = ModelWeights::init(spec, 1).unwrap();
        let plan = TrainingPlan::new().with_local_epochs(3).with_batch_size(32);
        let steps_seen = std::sync::Mutex::new(0u64);
        let result = train_local_observed(&initial, &train, &plan, 4, &|progress| {
            *steps_seen.lock().unwrap() = progress.steps_done;
            if progress.steps_done == 4 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert!(
            matches!(result, Err(CoreError::Cancelled { steps_done: 4 })),
            "{result:?}"
        );
        assert_eq!(*steps_seen.lock().unwrap(), 4, "no step after the break");
    }

    #[test]
    fn progress_is_reported_after_every_step_up_to_the_planned_total() {
        let train = synthetic_dataset(OrgProfile::balanced(), 160, 1);
        let spec = ModelSpec::mlp(num_flow_features() as u32, vec![8], 2);
        let initial = ModelWeights::init(spec, 1).unwrap();
        let plan = TrainingPlan::new().with_local_epochs(3).with_batch_size(32);
        let reports = std::sync::Mutex::new(Vec::new());
        let outcome = train_local_observed(&initial, &train, &plan, 4, &|progress| {
            reports.lock().unwrap().push(progress);
            ControlFlow::Continue(())
        })
        .unwrap();
        let reports = reports.into_inner().unwrap();
        // 160 rows in batches of 32: 5 steps per epoch, 15 in all.
        assert_eq!(outcome.num_steps, 15);
        assert_eq!(reports.len(), 15);
        for (index, progress) in reports.iter().enumerate() {
            assert_eq!(progress.steps_done, index as u64 + 1);
            assert_eq!(progress.steps_planned, 15);
            assert_eq!(progress.epoch, index as u32 / 5 + 1);
            assert_eq!(progress.epochs, 3);
        }
        // The observer changes nothing: same seed, same parameters.
        let plain = train_local(&initial, &train, &plan, 4).unwrap();
        assert_eq!(plain.params, outcome.params);
    }
}
