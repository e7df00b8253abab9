//! Throughput of the coordinator's aggregation: decoding an update's wire
//! chunks (validated, finite) and folding it into the streaming FedAvg.
//!
//! Run with `cargo bench -p fedshield-core --bench aggregation`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fedshield_core::aggregation::fedavg::FedAvg;
use fedshield_core::model::codec::{ChunkAssembler, DEFAULT_CHUNK_PARAMS, encode_chunks};

fn update(num_params: usize, seed: usize) -> Vec<f32> {
    (0..num_params)
        .map(|index| ((index * 31 + seed * 17) % 1000) as f32 * 1e-6)
        .collect()
}

fn fold(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("fedavg_fold");
    group.sample_size(20);
    for num_params in [1_000_000usize, 10_000_000] {
        let delta = update(num_params, 1);
        group.throughput(Throughput::Bytes((num_params * 4) as u64));
        group.bench_with_input(
            BenchmarkId::new("fold", num_params),
            &delta,
            |bencher, delta| {
                let mut aggregate = FedAvg::new(num_params);
                bencher.iter(|| aggregate.add(black_box(delta), 10.0).unwrap());
            },
        );
        let chunks: Vec<bytes::Bytes> = encode_chunks(&delta, DEFAULT_CHUNK_PARAMS).collect();
        group.bench_with_input(
            BenchmarkId::new("decode_and_fold", num_params),
            &chunks,
            |bencher, chunks| {
                let mut aggregate = FedAvg::new(num_params);
                // The coordinator recycles receive buffers between updates.
                let mut buffer = Vec::new();
                bencher.iter(|| {
                    let mut assembler =
                        ChunkAssembler::with_buffer(std::mem::take(&mut buffer), num_params);
                    for chunk in chunks {
                        assembler.push(black_box(chunk)).unwrap();
                    }
                    let delta = assembler.finish().unwrap();
                    aggregate.add(&delta, 10.0).unwrap();
                    buffer = delta;
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fold);
criterion_main!(benches);
