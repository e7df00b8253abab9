//! Throughput (examples per second) of local training without privacy
//! (`train_local`, burn autodiff) and with DP-SGD (`train_local_dp`: ghost
//! norms, per-example clipping, Gaussian noise), for the same MLP
//! 125 → 64 → 32 → 2 and the same (expected) batch size, one epoch (or
//! epoch-equivalent) of 20,000 rows each.
//!
//! Run with `cargo bench -p fedshield-core --bench dp_training`. Besides
//! criterion's report it prints both rates and their ratio on one line each.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fedshield_core::model::data::Dataset;
use fedshield_core::model::training::train_local;
use fedshield_core::plan::DpSgdPlan;
use fedshield_core::privacy::dp_sgd::train_local_dp;
use fedshield_core::privacy::noise::os_seeded_rng;
use fedshield_core::{ModelSpec, ModelWeights, TrainingPlan};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const NUM_ROWS: usize = 20_000;
const NUM_FEATURES: usize = 125;
const BATCH_SIZE: u32 = 64;

/// Returns rows of uniform random features, labelled by the sign of the
/// sum of the first two features.
fn random_dataset() -> Dataset {
    let mut rng = StdRng::seed_from_u64(1);
    let mut data = Dataset::new(NUM_FEATURES);
    for _ in 0..NUM_ROWS {
        let row: Vec<f32> = (0..NUM_FEATURES)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let label = u32::from(row[0] + row[1] > 0.0);
        data.push(&row, label)
            .expect("rows have NUM_FEATURES values");
    }
    data
}

struct Setup {
    weights: ModelWeights,
    data: Dataset,
    plan: TrainingPlan,
    dp: DpSgdPlan,
}

impl Setup {
    fn new() -> Self {
        let spec = ModelSpec::mlp(NUM_FEATURES as u32, vec![64, 32], 2);
        let weights = ModelWeights::init(spec, 2).expect("a valid spec");
        let plan = TrainingPlan::new()
            .with_batch_size(BATCH_SIZE)
            .with_local_epochs(1)
            .with_learning_rate(0.05);
        let dp = DpSgdPlan::new(
            BATCH_SIZE,
            NUM_ROWS as u64,
            1.0,
            1.0,
            NUM_ROWS as u32 / BATCH_SIZE,
        );
        Setup {
            weights,
            data: random_dataset(),
            plan,
            dp,
        }
    }

    fn train_plain(&self) {
        let outcome = train_local(&self.weights, &self.data, &self.plan, 3).expect("training runs");
        black_box(outcome);
    }

    fn train_private(&self, rng: &mut rand::rngs::ChaCha20Rng) {
        let outcome = train_local_dp(&self.weights, &self.data, &self.plan, &self.dp, rng)
            .expect("training runs");
        black_box(outcome);
    }

    /// Expected examples per DP-SGD round: steps · B.
    fn private_examples_per_round(&self) -> f64 {
        f64::from(self.dp.steps_per_round) * f64::from(self.dp.expected_batch_size)
    }
}

/// Returns the median of `num_runs` timings of `run`, after one warm-up run.
fn median_duration(num_runs: usize, mut run: impl FnMut()) -> Duration {
    run();
    let mut durations: Vec<Duration> = (0..num_runs)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    durations.sort();
    durations[num_runs / 2]
}

fn training(criterion: &mut Criterion) {
    let setup = Setup::new();
    let mut rng = os_seeded_rng().expect("the operating system provides a seed");

    let plain_secs = median_duration(5, || setup.train_plain()).as_secs_f64();
    let private_secs = median_duration(5, || setup.train_private(&mut rng)).as_secs_f64();
    let plain_rate = NUM_ROWS as f64 / plain_secs;
    let private_rate = setup.private_examples_per_round() / private_secs;
    println!("non-private train_local: {plain_rate:.0} examples/s");
    println!("DP-SGD train_local_dp:   {private_rate:.0} examples/s");
    println!("DP-SGD / non-private:    {:.2}", private_rate / plain_rate);

    let mut group = criterion.benchmark_group("local_training_epoch");
    group.sample_size(10);
    group.throughput(Throughput::Elements(NUM_ROWS as u64));
    group.bench_function("non_private", |bencher| {
        bencher.iter(|| setup.train_plain());
    });
    group.bench_function("dp_sgd", |bencher| {
        bencher.iter(|| setup.train_private(&mut rng));
    });
    group.finish();
}

criterion_group!(benches, training);
criterion_main!(benches);
