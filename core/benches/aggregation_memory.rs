//! Peak heap memory of aggregating K updates of P parameters through the
//! coordinator's path (wire chunks → validating assembler → streaming FedAvg →
//! next model), measured with a counting global allocator.
//!
//! Run with `cargo bench -p fedshield-core --bench aggregation_memory`.
//! The claim it checks: peak memory is O(P), independent of K.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use fedshield_core::aggregation::fedavg::FedAvg;
use fedshield_core::model::codec::{ChunkAssembler, DEFAULT_CHUNK_PARAMS, encode_chunks};

struct CountingAllocator;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Aggregates `num_updates` updates and returns (peak heap bytes above the
/// starting point, seconds).
fn aggregate(num_params: usize, num_updates: usize) -> (usize, f64) {
    let base = vec![0.5f32; num_params];
    // One wire chunk, reused for every chunk of every update: stands in for
    // the network, which the coordinator does not buffer beyond one chunk.
    let wire_chunk = encode_chunks(&vec![0.001f32; DEFAULT_CHUNK_PARAMS], DEFAULT_CHUNK_PARAMS)
        .next()
        .expect("one chunk");
    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let started = Instant::now();
    let mut fed_avg = FedAvg::new(num_params);
    // The coordinator recycles receive buffers between updates.
    let mut buffer = Vec::new();
    for _ in 0..num_updates {
        let mut assembler = ChunkAssembler::with_buffer(std::mem::take(&mut buffer), num_params);
        let mut remaining = num_params;
        while remaining > 0 {
            let take = remaining.min(DEFAULT_CHUNK_PARAMS);
            assembler
                .push(&wire_chunk[..take * 4])
                .expect("valid chunk");
            remaining -= take;
        }
        let delta = assembler.finish().expect("complete update");
        fed_avg.add(&delta, 10.0).expect("fold");
        buffer = delta;
    }
    drop(buffer);
    let next = fed_avg.finish(&base).expect("non-empty aggregate");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(next.len(), num_params);
    (PEAK.load(Ordering::Relaxed) - baseline, seconds)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs a quick smoke check.
    let quick = !std::env::args().any(|argument| argument == "--bench");
    let num_params = if quick { 100_000 } else { 10_000_000 };
    let model_mib = (num_params * 4) as f64 / (1024.0 * 1024.0);
    println!("aggregation peak heap, P = {num_params} parameters ({model_mib:.1} MiB per model)");
    let mut peaks = Vec::new();
    for num_updates in [2usize, 32] {
        let (peak, seconds) = aggregate(num_params, num_updates);
        let gb_per_sec = (num_updates * num_params * 4) as f64 / seconds / 1e9;
        println!(
            "K = {num_updates:>2}: peak {:.1} MiB ({:.2} × model), {seconds:.3}s, {gb_per_sec:.2} GB/s decode+fold",
            peak as f64 / (1024.0 * 1024.0),
            peak as f64 / (num_params * 4) as f64
        );
        peaks.push(peak);
    }
    let growth = peaks[1] as f64 / peaks[0] as f64;
    println!("peak(K=32) / peak(K=2) = {growth:.3}");
    assert!(
        growth < 1.05,
        "aggregation memory grew with the number of updates"
    );
}
