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
//! and, on real telemetry read from `../shared/data/telemetry-samples` at the
//! start (required: the bench fails when it is absent), with an MLP of each
//! schema's feature count →64→32→2:
//!
//! - `zeek/*`: the rows of the four CTU-50 hosts' Zeek TSV `conn.log`s
//!   (24,798 rows) four times over under one header (99,200 lines), through
//!   the shipped `schemas/zeek-conn.toml`: `featurize` (line splitting, Zeek
//!   fields, featurization), `end_to_end` (as `end_to_end_csv`) and `ingest`
//!   (core's `load_dataset_from_reader`, as `fedshield train` loads a log);
//! - `eve/*`: Slips' Suricata `eve.json` sample (5,000 events, 3,512 of them
//!   flows) twenty times over (100,000 lines), through a schema of nested
//!   `flow.*` fields with `[filter] event_type = "flow"`: `featurize` and
//!   `end_to_end`. Throughput counts every line; the filter drops the
//!   non-flow events after parsing their JSON.
//!
//! and, on the same Zeek input, `zeek_alerts/*`: `detect` end to end with
//! alerts-only output at a 1% alert rate (the threshold set, once before
//! measuring, to the 99th percentile of the model's scores on that input;
//! the bench prints the realized rate), the schema's identity columns
//! echoed, into an in-memory sink (a [`StdoutSink`] over `io::sink()`):
//! `ecs_explain` and `native_explain` explain every alert (top 5 columns,
//! gradient × input), `ecs` and `native` do not, `no_alerts` (threshold
//! above every score) is the floor: the same pass with nothing to emit, and
//! `explain_only` is the explanations alone (the alerting rows' features
//! computed beforehand). Throughput counts the input's events in every case.
//!
//! Run with `RAYON_NUM_THREADS=1 taskset -c 0 cargo bench --bench detect`.
//! burn's ndarray backend is built without its `multi-threads` feature here
//! (no rayon, single-threaded matrixmultiply), so scoring runs on the calling
//! thread anyway; `taskset` pins it to one core and `RAYON_NUM_THREADS=1`
//! would keep it there if the feature were ever enabled. Before measuring,
//! the bench prints the process CPU time per wall-clock second of 2 s of
//! end-to-end passes (Linux): 1.00 means one core.

use std::hint::black_box;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fedshield_core::ModelVersion;
use fedshield_core::ingest::{IngestOptions, load_dataset_from_reader};
use fedshield_core::model::ModelSpec;
use fedshield_core::model::inference::CLASSIFIER_THRESHOLD;
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::schema::{FileFormat, Schema};
use fedshield_core::telemetry::{FlowGenerator, OrgProfile, synthetic_flows_schema, write_csv};
use fedshield_detector::events::{EventParser, Line, LineReader, ParsedLine, READ_BUFFER_BYTES};
use fedshield_detector::format::native::NativeFormat;
use fedshield_detector::format::{FormatContext, new_format};
use fedshield_detector::pipeline::score_to_end;
use fedshield_detector::{
    AlertFormatName, AlertOptions, AlertOutput, DEFAULT_BATCH_EVENTS, Detector, ModelRelease,
    ReleaseRules, ScoringModel, StdoutSink,
};
use flate2::read::GzDecoder;

/// Events per measured pass.
const NUM_EVENTS: usize = 100_000;

const SAMPLES_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/telemetry-samples"
);

/// The four CTU-50 hosts' labelled Zeek conn logs (same 23 columns, 8 header
/// lines each) and their rows, from the folder's README.
const CTU50_CONN_LOGS: [(&str, usize); 4] = [
    ("008-ctu-normal-40-day1", 5_663),
    ("010-ctu-normal-42-day2", 5_347),
    ("011-ctu-normal-43-day1", 9_048),
    ("012-ctu-normal-44-day2", 4_740),
];
const CTU50_ROWS: usize = 24_798;
/// Rows labelled Background in the four logs (README), which training skips.
const CTU50_BACKGROUND_ROWS: usize = 1_353;
/// How many times the CTU-50 rows repeat in the Zeek input.
const ZEEK_COPIES: usize = 4;

/// Slips' eve sample: 5,000 events, 3,512 of them flows (README).
const EVE_GZ: &str = "suricata-eve-slips-test6/test6-malicious.suricata.json.gz";
const EVE_EVENTS: usize = 5_000;
const EVE_FLOWS: usize = 3_512;
/// How many times the eve sample repeats in the eve input.
const EVE_COPIES: usize = 20;

/// Suricata eve flow events: the flow's counters nested under `flow`, the
/// other event types left out by the filter.
const EVE_FLOW_SCHEMA: &str = r#"
format = "jsonl"
columns = [
    { name = "proto", kind = "categorical", vocabulary = ["TCP", "UDP", "ICMP"] },
    { name = "dest_port", kind = "categorical", vocabulary = ["22", "23", "53", "80", "443", "445", "1900", "3389", "5060", "8080"] },
    { name = "app_proto", kind = "categorical", vocabulary = ["failed", "dns", "http", "tls", "ssh", "smb"], missing = "failed" },
    { name = "flow.pkts_toserver", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 1e9 } }, "log1p", { scale = { offset = 0.0, divisor = 10.0 } }] },
    { name = "flow.pkts_toclient", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 1e9 } }, "log1p", { scale = { offset = 0.0, divisor = 10.0 } }] },
    { name = "flow.bytes_toserver", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p", { scale = { offset = 0.0, divisor = 20.0 } }] },
    { name = "flow.bytes_toclient", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p", { scale = { offset = 0.0, divisor = 20.0 } }] },
    { name = "flow.age", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 1e6 } }, "log1p", { scale = { offset = 0.0, divisor = 5.0 } }] },
    { name = "flow.state", kind = "categorical", vocabulary = ["new", "established", "closed"] },
    { name = "flow.reason", kind = "categorical", vocabulary = ["timeout", "shutdown", "forced"] },
]

[filter]
event_type = "flow"
"#;

/// Returns the bytes of a telemetry sample, failing when the samples are absent.
fn read_sample(relative_path: &str) -> Vec<u8> {
    let path = Path::new(SAMPLES_DIR).join(relative_path);
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "the telemetry samples are required: cannot read {}: {error}",
            path.display()
        )
    })
}

/// Returns the CTU-50 rows `ZEEK_COPIES` times over as one Zeek TSV log,
/// under the first log's header.
fn zeek_conn_tsv() -> Vec<u8> {
    let mut header = String::new();
    let mut rows = String::new();
    for (host, num_rows) in CTU50_CONN_LOGS {
        let relative_path = format!("stratosphere-ctu50-feel-zeek/{host}/conn.log.labeled");
        let text = String::from_utf8(read_sample(&relative_path))
            .unwrap_or_else(|error| panic!("{relative_path}: {error}"));
        let (directives, data): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|line| line.starts_with('#'));
        assert_eq!(directives.len(), 8, "{relative_path}");
        assert_eq!(data.len(), num_rows, "{relative_path}");
        if header.is_empty() {
            header = directives.join("\n") + "\n";
        }
        rows.extend(data.iter().flat_map(|row| [row, "\n"]));
    }
    assert_eq!(rows.lines().count(), CTU50_ROWS);
    (header + &rows.repeat(ZEEK_COPIES)).into_bytes()
}

/// Returns the eve sample, decompressed, `EVE_COPIES` times over.
fn eve_json() -> Vec<u8> {
    let gzipped = read_sample(EVE_GZ);
    let mut eve = Vec::new();
    GzDecoder::new(&gzipped[..])
        .read_to_end(&mut eve)
        .unwrap_or_else(|error| panic!("{EVE_GZ}: {error}"));
    assert_eq!(
        eve.iter().filter(|&&byte| byte == b'\n').count(),
        EVE_EVENTS
    );
    eve.repeat(EVE_COPIES)
}

/// Returns the shipped Zeek conn.log schema.
fn zeek_conn_schema() -> Schema {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/zeek-conn.toml");
    Schema::load(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Returns `NUM_EVENTS` synthetic flows as csv text with its header.
fn flow_csv() -> Vec<u8> {
    let mut generator = FlowGenerator::new(OrgProfile::balanced(), 7);
    let mut bytes = Vec::new();
    write_csv(&mut bytes, (0..NUM_EVENTS).map(|_| generator.next_flow()))
        .expect("writing to memory succeeds");
    bytes
}

/// Returns the release of an MLP (schema's features)→64→32→2 (random
/// weights: scoring cost does not depend on their values).
fn mlp_release(schema: Schema) -> Arc<ModelRelease> {
    mlp_release_with_threshold(schema, None)
}

/// Returns the release of [`mlp_release`]'s network with `threshold_flag`
/// as its threshold (`None`: the classifier default).
fn mlp_release_with_threshold(schema: Schema, threshold_flag: Option<f64>) -> Arc<ModelRelease> {
    let spec = ModelSpec::mlp(schema.num_features() as u32, vec![64, 32], 2);
    let weights = ModelWeights::init(spec, 1).expect("a valid spec");
    let rules = ReleaseRules {
        schema,
        threshold_flag,
        alert_fpr: None,
    };
    Arc::new(
        rules
            .release(ModelVersion(1), weights, None, Default::default())
            .expect("the model fits the schema"),
    )
}

/// Scores every line of `input` as `fedshield detect` does, JSON into a
/// sink; returns the number of events scored.
fn detect_all(
    input: &[u8],
    schema: &Schema,
    format: FileFormat,
    release: &Arc<ModelRelease>,
) -> u64 {
    let parser = EventParser::new(schema.clone(), format, "bench");
    let model = ScoringModel::new(release.clone()).expect("the model builds");
    let output = AlertOutput::new(
        Box::new(NativeFormat),
        vec![Box::new(StdoutSink::with_writer(io::sink()))],
        // A verdict for every event, as before alerts existed: the
        // explanations' cost is measured by the alert cases.
        AlertOptions {
            explain_top_k: 0,
            ..AlertOptions::default()
        },
    );
    let mut detector = Detector::new(parser, model, DEFAULT_BATCH_EVENTS, output, io::sink());
    score_to_end(&mut &input[..], "bench", &mut detector, None).expect("scoring succeeds");
    detector.stats().num_scored
}

/// Scores every line of `input` with alerts-only output in `format_name`
/// (identity columns echoed, `explain_top_k` columns explained per alert)
/// into an in-memory sink; returns the number of events scored and of
/// alerts emitted.
fn detect_alerts(
    input: &[u8],
    schema: &Schema,
    release: &Arc<ModelRelease>,
    format_name: AlertFormatName,
    explain_top_k: usize,
) -> (u64, u64) {
    let parser = EventParser::new(schema.clone(), FileFormat::Zeek, "conn.log");
    let model = ScoringModel::new(release.clone()).expect("the model builds");
    let output = AlertOutput::new(
        new_format(format_name, &FormatContext::new("bench", "zeek_conn")),
        vec![Box::new(StdoutSink::with_writer(io::sink()))],
        AlertOptions {
            alerts_only: true,
            explain_top_k,
            include_fields: Vec::new(),
            suppression: None,
        },
    );
    let mut detector = Detector::new(parser, model, DEFAULT_BATCH_EVENTS, output, io::sink());
    score_to_end(&mut &input[..], "conn.log", &mut detector, None).expect("scoring succeeds");
    (
        detector.stats().num_scored,
        detector.output().stats().num_emitted,
    )
}

/// Returns the model's score of every event of `input`, in input order.
fn all_scores(
    input: &[u8],
    schema: &Schema,
    format: FileFormat,
    release: &Arc<ModelRelease>,
) -> Vec<f32> {
    let mut features = Vec::new();
    let mut row = Vec::new();
    featurize_all(input, schema, format, &mut row, |row| {
        features.extend_from_slice(row)
    });
    let model = ScoringModel::new(release.clone()).expect("the model builds");
    let mut all = Vec::new();
    let mut scores = Vec::new();
    let mut attack_classes = Vec::new();
    for batch in features.chunks(DEFAULT_BATCH_EVENTS * schema.num_features()) {
        model
            .score(batch, &mut scores, &mut attack_classes)
            .expect("whole rows");
        all.extend_from_slice(&scores);
    }
    all
}

/// Returns the `quantile` (0 to 1) of `scores`: the score at or above which
/// a fraction `1 - quantile` of them lie (more when that score is tied).
fn score_quantile(scores: &[f32], quantile: f64) -> f64 {
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let num_above = ((1.0 - quantile) * sorted.len() as f64).round() as usize;
    f64::from(sorted[num_above.clamp(1, sorted.len()) - 1])
}

/// Splits, parses and featurizes every line of `input`, calling `on_event`
/// with each event's features.
fn featurize_all(
    input: &[u8],
    schema: &Schema,
    format: FileFormat,
    row: &mut Vec<f32>,
    mut on_event: impl FnMut(&[f32]),
) {
    let mut parser = EventParser::new(schema.clone(), format, "bench");
    let mut lines = LineReader::new(READ_BUFFER_BYTES);
    let mut input = input;
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
fn report_cores_used(csv: &[u8], schema: &Schema, release: &Arc<ModelRelease>) {
    let cpu_before_secs = process_cpu_secs();
    let started = Instant::now();
    let mut num_scored = 0;
    while started.elapsed().as_secs_f64() < 2.0 {
        num_scored += detect_all(csv, schema, FileFormat::Csv, release);
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
    let schema = synthetic_flows_schema();
    let release = mlp_release(schema.clone());
    assert_eq!(
        detect_all(&csv, &schema, FileFormat::Csv, &release),
        NUM_EVENTS as u64
    );
    report_cores_used(&csv, &schema, &release);

    let mut features = Vec::new();
    let mut row = Vec::new();
    featurize_all(&csv, &schema, FileFormat::Csv, &mut row, |row| {
        features.extend_from_slice(row)
    });
    let input_dim = row.len();
    assert_eq!(features.len(), NUM_EVENTS * input_dim);

    let mut group = criterion.benchmark_group("detect");
    group.throughput(Throughput::Elements(NUM_EVENTS as u64));
    group.sample_size(20);
    group.bench_function("end_to_end_csv", |bencher| {
        bencher.iter(|| {
            black_box(detect_all(
                black_box(&csv),
                &schema,
                FileFormat::Csv,
                &release,
            ))
        });
    });
    group.bench_function("featurize_csv", |bencher| {
        bencher.iter(|| {
            let mut num_events = 0usize;
            featurize_all(black_box(&csv), &schema, FileFormat::Csv, &mut row, |_| {
                num_events += 1
            });
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

/// Benchmarks `featurize` and `end_to_end` of `input` in group `name`,
/// checking first that both see `num_events` events.
fn bench_real_input(
    criterion: &mut Criterion,
    name: &str,
    input: &[u8],
    format: FileFormat,
    schema: &Schema,
    num_events: usize,
) {
    let release = mlp_release(schema.clone());
    assert_eq!(
        detect_all(input, schema, format, &release),
        num_events as u64
    );
    let mut row = Vec::new();
    let mut num_featurized = 0;
    featurize_all(input, schema, format, &mut row, |_| num_featurized += 1);
    assert_eq!(num_featurized, num_events);
    assert_eq!(row.len(), schema.num_features());

    let num_lines = input.iter().filter(|&&byte| byte == b'\n').count();
    let mut group = criterion.benchmark_group(name);
    group.throughput(Throughput::Elements(num_lines as u64));
    group.sample_size(20);
    group.bench_function("featurize", |bencher| {
        bencher.iter(|| {
            let mut num_events = 0usize;
            featurize_all(black_box(input), schema, format, &mut row, |_| {
                num_events += 1
            });
            black_box(num_events)
        });
    });
    group.bench_function("end_to_end", |bencher| {
        bencher.iter(|| black_box(detect_all(black_box(input), schema, format, &release)));
    });
    group.finish();
}

/// Loads the Zeek input as `fedshield train` does, returning the rows kept
/// (Background rows are skipped and counted).
fn ingest_zeek(input: &[u8], schema: &Schema) -> usize {
    let (dataset, report) = load_dataset_from_reader(
        input,
        "conn.log",
        FileFormat::Zeek,
        schema,
        &IngestOptions::default(),
    )
    .expect("the conn log loads");
    assert_eq!(report.skipped.total(), report.skipped.num_skipped_label);
    dataset.len()
}

fn bench_zeek_and_eve(criterion: &mut Criterion) {
    let zeek = zeek_conn_tsv();
    let zeek_schema = zeek_conn_schema();
    let num_zeek_rows = CTU50_ROWS * ZEEK_COPIES;
    bench_real_input(
        criterion,
        "zeek",
        &zeek,
        FileFormat::Zeek,
        &zeek_schema,
        num_zeek_rows,
    );

    assert_eq!(
        ingest_zeek(&zeek, &zeek_schema),
        (CTU50_ROWS - CTU50_BACKGROUND_ROWS) * ZEEK_COPIES
    );
    let mut group = criterion.benchmark_group("zeek");
    group.throughput(Throughput::Elements(num_zeek_rows as u64));
    group.sample_size(20);
    group.bench_function("ingest", |bencher| {
        bencher.iter(|| black_box(ingest_zeek(black_box(&zeek), &zeek_schema)));
    });
    group.finish();

    let eve = eve_json();
    let eve_schema = Schema::from_toml_str(EVE_FLOW_SCHEMA).expect("a valid schema");
    let num_eve_flows = EVE_FLOWS * EVE_COPIES;
    bench_real_input(
        criterion,
        "eve",
        &eve,
        FileFormat::Jsonl,
        &eve_schema,
        num_eve_flows,
    );
}

/// The fraction of the Zeek events that alert in `zeek_alerts/*`.
const ALERT_RATE: f64 = 0.01;
/// Columns explained per alert when explanations are on.
const EXPLAIN_TOP_K: usize = 5;

fn bench_zeek_alerts(criterion: &mut Criterion) {
    let zeek = zeek_conn_tsv();
    let schema = zeek_conn_schema();
    let num_rows = CTU50_ROWS * ZEEK_COPIES;
    let scores = all_scores(
        &zeek,
        &schema,
        FileFormat::Zeek,
        &mlp_release(schema.clone()),
    );
    assert_eq!(scores.len(), num_rows);
    let threshold = score_quantile(&scores, 1.0 - ALERT_RATE);
    let num_alerts = scores
        .iter()
        .filter(|&&score| f64::from(score) >= threshold)
        .count();
    let num_distinct = {
        let mut bits: Vec<u32> = scores.iter().map(|score| score.to_bits()).collect();
        bits.sort_unstable();
        bits.dedup();
        bits.len()
    };
    eprintln!(
        "zeek alerts: threshold {threshold} (the {:.0}th percentile of {num_rows} scores, {num_distinct} distinct): {num_alerts} alerts, a realized rate of {:.3}%",
        100.0 * (1.0 - ALERT_RATE),
        100.0 * num_alerts as f64 / num_rows as f64
    );
    let num_default_attacks = scores
        .iter()
        .filter(|&&score| f64::from(score) >= CLASSIFIER_THRESHOLD)
        .count();
    eprintln!(
        "zeek alerts: at the default threshold {CLASSIFIER_THRESHOLD} (zeek/end_to_end), {num_default_attacks} of {num_rows} events are attacks"
    );
    let release = mlp_release_with_threshold(schema.clone(), Some(threshold));
    let above_all = mlp_release_with_threshold(schema.clone(), Some(f64::INFINITY));

    let cases = [
        ("ecs_explain", AlertFormatName::Ecs, EXPLAIN_TOP_K),
        ("ecs", AlertFormatName::Ecs, 0),
        ("native_explain", AlertFormatName::Native, EXPLAIN_TOP_K),
        ("native", AlertFormatName::Native, 0),
    ];
    for (_, format_name, explain_top_k) in cases {
        assert_eq!(
            detect_alerts(&zeek, &schema, &release, format_name, explain_top_k),
            (num_rows as u64, num_alerts as u64)
        );
    }
    assert_eq!(
        detect_alerts(
            &zeek,
            &schema,
            &above_all,
            AlertFormatName::Ecs,
            EXPLAIN_TOP_K
        ),
        (num_rows as u64, 0)
    );

    let mut group = criterion.benchmark_group("zeek_alerts");
    group.throughput(Throughput::Elements(num_rows as u64));
    group.sample_size(20);
    for (name, format_name, explain_top_k) in cases {
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                black_box(detect_alerts(
                    black_box(&zeek),
                    &schema,
                    &release,
                    format_name,
                    explain_top_k,
                ))
            });
        });
    }
    // The explanations alone: gradient × input of every alerting row.
    let mut features = Vec::new();
    let mut row = Vec::new();
    featurize_all(&zeek, &schema, FileFormat::Zeek, &mut row, |row| {
        features.extend_from_slice(row)
    });
    let alert_rows: Vec<&[f32]> = features
        .chunks(schema.num_features())
        .zip(&scores)
        .filter(|(_, score)| f64::from(**score) >= threshold)
        .map(|(row, _)| row)
        .collect();
    assert_eq!(alert_rows.len(), num_alerts);
    let model = ScoringModel::new(release.clone()).expect("the model builds");
    group.bench_function("explain_only", |bencher| {
        let mut contributions = Vec::new();
        bencher.iter(|| {
            let mut total = 0.0f32;
            for row in &alert_rows {
                model
                    .explain(row, &mut contributions)
                    .expect("one whole row");
                total += contributions[0];
            }
            black_box(total)
        });
    });
    group.bench_function("no_alerts", |bencher| {
        bencher.iter(|| {
            black_box(detect_alerts(
                black_box(&zeek),
                &schema,
                &above_all,
                AlertFormatName::Ecs,
                EXPLAIN_TOP_K,
            ))
        });
    });
    group.finish();
}

criterion_group!(benches, bench_detect, bench_zeek_and_eve, bench_zeek_alerts);
criterion_main!(benches);
