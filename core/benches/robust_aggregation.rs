//! Cost of one round of robust aggregation: `add` of K updates of P = 1M
//! parameters, then `finish`, for each rule and K = 8, 32. Criterion's time per
//! iteration is the time per round; the throughput is over the K·P·4 bytes of
//! updates. Cloning the updates (the setup) is not timed.
//!
//! Run with `cargo bench -p fedshield-core --bench robust_aggregation`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fedshield_core::aggregation::robust::{AggregationRule, RobustAggregator};

const NUM_PARAMS: usize = 1_000_000;

/// Returns a deterministic, update-like delta: small values that differ between seeds.
fn update(num_params: usize, seed: usize) -> Vec<f32> {
    (0..num_params)
        .map(|index| (((index * 31 + seed * 7919) % 1000) as f32 - 500.0) * 1e-6)
        .collect()
}

fn rules() -> Vec<AggregationRule> {
    vec![
        AggregationRule::FedAvg,
        // Small enough that every update is clipped: the worst case.
        AggregationRule::NormBounded { max_norm: 1e-3 },
        AggregationRule::TrimmedMean { trim_fraction: 0.2 },
        AggregationRule::Median,
        AggregationRule::MultiKrum {
            num_byzantine: 2,
            num_selected: None,
        },
    ]
}

fn round(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("robust_round_1m_params");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    let base = vec![0.5f32; NUM_PARAMS];
    for num_updates in [8usize, 32] {
        let deltas: Vec<Vec<f32>> = (0..num_updates)
            .map(|seed| update(NUM_PARAMS, seed))
            .collect();
        group.throughput(Throughput::Bytes((num_updates * NUM_PARAMS * 4) as u64));
        for rule in rules() {
            group.bench_with_input(
                BenchmarkId::new(rule.to_string(), format!("k{num_updates}")),
                &deltas,
                |bencher, deltas| {
                    bencher.iter_batched(
                        || deltas.clone(),
                        |round_deltas| {
                            let mut aggregator = RobustAggregator::new(&rule, NUM_PARAMS).unwrap();
                            for (index, delta) in round_deltas.into_iter().enumerate() {
                                let weight = 10.0 + index as f64;
                                black_box(aggregator.add(black_box(delta), weight).unwrap());
                            }
                            aggregator.finish(black_box(&base)).unwrap()
                        },
                        BatchSize::PerIteration,
                    );
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, round);
criterion_main!(benches);
