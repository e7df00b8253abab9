//! Throughput of `fedshield detect` on one core, in events per second, for
//! the MLP 61→64→32→2 on synthetic flow CSV lines:
//!
//! - `end_to_end_csv`: text lines in, JSON verdict lines out (line splitting,
//!   csv fields, featurization, batched scoring, JSON encoding; the JSON goes
//!   to a sink), exactly the code `fedshield detect --events FILE` runs;
//! - `featurize_csv`: line splitting, csv fields and featurization only;
//! - `score`: the forward pass and log-odds of pre-featurized batches of
//!   1,024 events.
//!
//! Run with `RAYON_NUM_THREADS=1 taskset -c 0 cargo bench --bench detect`.
//! burn's ndarray backend is built without its `multi-threads` feature here
//! (no rayon, single-threaded matrixmultiply), so scoring runs on the calling
//! thread anyway; `taskset` pins it to one core and `RAYON_NUM_THREADS=1`
//! would keep it there if the feature were ever enabled. Before measuring,
//! the bench prints the process CPU time per wall-clock second of 2 s of
//! end-to-end passes (Linux): 1.00 means one core.

use std::hint::black_box;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fedshield_core::ModelVersion;
use fedshield_core::model::ModelSpec;
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::schema::FileFormat;
use fedshield_core::telemetry::{FlowGenerator, OrgProfile, synthetic_flows_schema, write_csv};
use fedshield_detector::events::{EventParser, Line, LineReader, ParsedLine, READ_BUFFER_BYTES};
use fedshield_detector::pipeline::score_to_end;
use fedshield_detector::{
    DEFAULT_BATCH_EVENTS, Detector, JsonLinesOutput, ModelRelease, ReleaseRules, ScoringModel,
};

/// Events per measured pass.
const NUM_EVENTS: usize = 100_000;

/// Returns `NUM_EVENTS` synthetic flows as csv text with its header.
fn flow_csv() -> Vec<u8> {
    let mut generator = FlowGenerator::new(OrgProfile::balanced(), 7);
    let mut bytes = Vec::new();
    write_csv(&mut bytes, (0..NUM_EVENTS).map(|_| generator.next_flow()))
        .expect("writing to memory succeeds");
    bytes
}

/// Returns the release of an MLP 61→64→32→2 (random weights: scoring cost
/// does not depend on their values).
fn mlp_release() -> Arc<ModelRelease> {
    let schema = synthetic_flows_schema();
    let spec = ModelSpec::mlp(schema.num_features() as u32, vec![64, 32], 2);
    let weights = ModelWeights::init(spec, 1).expect("a valid spec");
    let rules = ReleaseRules {
        schema,
        threshold_flag: None,
    };
    Arc::new(
        rules
            .release(ModelVersion(1), weights, None)
            .expect("the model fits the schema"),
    )
}

/// Scores every line of `csv` as `fedshield detect` does, JSON into a sink;
/// returns the number of events scored.
fn detect_all(csv: &[u8], release: &Arc<ModelRelease>) -> u64 {
    let parser = EventParser::new(synthetic_flows_schema(), FileFormat::Csv, "bench");
    let model = ScoringModel::new(release.clone()).expect("the model builds");
    let output = Box::new(JsonLinesOutput::new(io::sink(), DEFAULT_BATCH_EVENTS));
    let mut detector = Detector::new(parser, model, DEFAULT_BATCH_EVENTS, output, io::sink());
    score_to_end(&mut &csv[..], "bench", &mut detector, None).expect("scoring succeeds");
    detector.stats().num_scored
}

/// Splits, parses and featurizes every line of `csv`, calling `on_event`
/// with each event's features.
fn featurize_all(csv: &[u8], row: &mut Vec<f32>, mut on_event: impl FnMut(&[f32])) {
    let mut parser = EventParser::new(synthetic_flows_schema(), FileFormat::Csv, "bench");
    let mut lines = LineReader::new(READ_BUFFER_BYTES);
    let mut input = csv;
    loop {
        let num_read = lines
            .read_from(&mut input)
            .expect("reading memory succeeds");
        while let Some(Line::Complete { number, bytes }) = lines.next_line() {
            if let Ok(ParsedLine::Event) = parser.parse(number, bytes, row) {
                on_event(row);
            }
        }
        if num_read == 0 {
            return;
        }
    }
}

/// Returns the process's user + system CPU seconds (Linux), if readable.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (in parentheses) come fields 3, 4, ...; utime
    // and stime are fields 14 and 15, in USER_HZ = 100 ticks per second.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user_ticks: f64 = fields.get(11)?.parse().ok()?;
    let system_ticks: f64 = fields.get(12)?.parse().ok()?;
    Some((user_ticks + system_ticks) / 100.0)
}

/// Prints end-to-end events/s over 2 s and how many cores that used.
fn report_cores_used(csv: &[u8], release: &Arc<ModelRelease>) {
    let cpu_before_secs = process_cpu_secs();
    let started = Instant::now();
    let mut num_scored = 0;
    while started.elapsed().as_secs_f64() < 2.0 {
        num_scored += detect_all(csv, release);
    }
    let wall_secs = started.elapsed().as_secs_f64();
    let events_per_sec = num_scored as f64 / wall_secs;
    match (cpu_before_secs, process_cpu_secs()) {
        (Some(before), Some(after)) => eprintln!(
            "detect end to end: {events_per_sec:.0} events/s; {:.2} CPU seconds per wall-clock second",
            (after - before) / wall_secs
        ),
        _ => eprintln!("detect end to end: {events_per_sec:.0} events/s"),
    }
}

fn bench_detect(criterion: &mut Criterion) {
    let csv = flow_csv();
    let release = mlp_release();
    assert_eq!(detect_all(&csv, &release), NUM_EVENTS as u64);
    report_cores_used(&csv, &release);

    let mut features = Vec::new();
    let mut row = Vec::new();
    featurize_all(&csv, &mut row, |row| features.extend_from_slice(row));
    let input_dim = row.len();
    assert_eq!(features.len(), NUM_EVENTS * input_dim);

    let mut group = criterion.benchmark_group("detect");
    group.throughput(Throughput::Elements(NUM_EVENTS as u64));
    group.sample_size(20);
    group.bench_function("end_to_end_csv", |bencher| {
        bencher.iter(|| black_box(detect_all(black_box(&csv), &release)));
    });
    group.bench_function("featurize_csv", |bencher| {
        bencher.iter(|| {
            let mut num_events = 0usize;
            featurize_all(black_box(&csv), &mut row, |_| num_events += 1);
            black_box(num_events)
        });
    });
    let model = ScoringModel::new(release.clone()).expect("the model builds");
    group.bench_function("score", |bencher| {
        let mut scores = Vec::new();
        let mut attack_classes = Vec::new();
        bencher.iter(|| {
            let mut total = 0.0f32;
            for batch in features.chunks(DEFAULT_BATCH_EVENTS * input_dim) {
                model
                    .score(batch, &mut scores, &mut attack_classes)
                    .expect("whole rows");
                total += scores[0];
            }
            black_box(total)
        });
    });
    group.finish();
}

criterion_group!(benches, bench_detect);
criterion_main!(benches);
