//! Alert latency of `fedshield detect --follow`: from a Zeek conn line
//! written to the followed log to its alert received by a webhook.
//!
//! The detector runs in-process ([`fedshield_detector::run`] on a tokio
//! runtime, two worker threads) with `follow = true` on a temporary
//! `conn.log`, alerts-only output in the native format (explanations on,
//! top 5) into a webhook sink at `https://127.0.0.1:PORT/alerts`, signed
//! with an HMAC secret. The receiver is an HTTPS server written here (hyper
//! over rustls, its certificate issued by a CA generated with rcgen for the
//! run, trusted through `SinkOptions::webhook_tls_ca_file`) that checks
//! every body's signature and records when each alert arrived.
//!
//! The lines are the rows of the four CTU-50 hosts' Zeek `conn.log`s (from
//! `../shared/data/telemetry-samples`; required), cycled under the first
//! log's header. The model is an MLP (schema's features)→64→32→2 with random
//! weights; its threshold is the 99th percentile of its scores on the rows,
//! so 1% of the rows alert, and which lines must alert is known before the
//! run. A writer thread appends 100 lines every 10 ms (10,000 lines/s) and
//! records when each burst was written; a line's latency is its alert's
//! arrival minus its burst's write. Every expected alert must arrive, once
//! (a batch retried under the same batch id is counted once), and no other.
//!
//! Each run is measured twice: with the webhook's default batching (a batch
//! is sent when it holds 500 records or its first record waited 1 s) and
//! with a 100 ms wait. Each alert also carries when the detector scored it
//! (`detected_at`, milliseconds), which splits the latency into write →
//! scored (the follow loop's rest at end of file, 200 ms, and scoring) and
//! scored → received (the webhook's batching, TLS and HTTP).
//!
//! Run with `cargo bench --bench alert_latency`; `ALERT_LATENCY_SECS` sets
//! how long the writer writes in each run (default 15; 2 when run as a
//! test, without `--bench`).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use fedshield_core::card::ModelCard;
use fedshield_core::schema::{FileFormat, Schema};
use fedshield_core::{ModelSpec, ModelVersion, ModelWeights, TrainingPlan};
use fedshield_detector::events::{EventParser, Line, LineReader, ParsedLine, READ_BUFFER_BYTES};
use fedshield_detector::output::AlertOptions;
use fedshield_detector::{
    AlertFormatName, DEFAULT_BATCH_EVENTS, DetectSettings, ModelSourceSettings, OutputSettings,
    ReleaseRules, ScoringModel, SinkOptions, SinkSpec,
};
use fedshield_proto::tls::pki::CertificateAuthority;
use fedshield_proto::tls::{load_certificates_pem, load_private_key_pem};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

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
/// Header lines before the first row: the first row is line 9.
const NUM_HEADER_LINES: u64 = 8;

/// The writer's pace: `LINES_PER_BURST` lines every `BURST_INTERVAL`.
const LINES_PER_BURST: usize = 100;
const BURST_INTERVAL: Duration = Duration::from_millis(10);
/// How long the writer writes in each run unless `ALERT_LATENCY_SECS` says.
const DEFAULT_RUN_SECS: u64 = 15;
/// How long it writes when run as a test (`cargo test --benches`).
const SMOKE_RUN_SECS: u64 = 2;
/// The fraction of rows that alert.
const ALERT_RATE: f64 = 0.01;
/// How long the detector gets to start before the writer does.
const STARTUP_WAIT: Duration = Duration::from_secs(1);
/// How long after the last write the run waits for the last alerts.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

const WEBHOOK_SECRET: &[u8] = b"alert-latency-bench-secret";

/// The capture: its header and its rows, each without its line feed.
struct Capture {
    header: String,
    rows: Vec<String>,
}

/// Returns the CTU-50 rows under the first log's header.
fn load_capture() -> Result<Capture> {
    let mut header = String::new();
    let mut rows = Vec::new();
    for (host, num_rows) in CTU50_CONN_LOGS {
        let path = Path::new(SAMPLES_DIR)
            .join("stratosphere-ctu50-feel-zeek")
            .join(host)
            .join("conn.log.labeled");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "the telemetry samples are required: cannot read {}",
                path.display()
            )
        })?;
        let (directives, data): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|line| line.starts_with('#'));
        ensure!(
            directives.len() as u64 == NUM_HEADER_LINES,
            "{}: expected {NUM_HEADER_LINES} header lines",
            path.display()
        );
        ensure!(
            data.len() == num_rows,
            "{}: expected {num_rows} rows",
            path.display()
        );
        if header.is_empty() {
            header = directives.join("\n") + "\n";
        }
        rows.extend(data.iter().map(|row| row.to_string()));
    }
    Ok(Capture { header, rows })
}

fn zeek_schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/zeek-conn.toml")
}

/// Returns the score of every row of `capture` under `weights`.
fn row_scores(capture: &Capture, schema: &Schema, weights: &ModelWeights) -> Result<Vec<f32>> {
    let rules = ReleaseRules {
        schema: schema.clone(),
        threshold_flag: None,
        alert_fpr: None,
    };
    let release = rules.release(ModelVersion(1), weights.clone(), None, Default::default())?;
    let model = ScoringModel::new(Arc::new(release))?;
    let mut text = capture.header.clone();
    for row in &capture.rows {
        text.push_str(row);
        text.push('\n');
    }
    let mut parser = EventParser::new(schema.clone(), FileFormat::Zeek, "conn.log");
    let mut lines = LineReader::new(READ_BUFFER_BYTES);
    let mut input = text.as_bytes();
    let mut row = Vec::new();
    let mut features = Vec::new();
    loop {
        let num_read = lines.read_from(&mut input)?;
        while let Some(Line::Complete { number, bytes }) = lines.next_line() {
            match parser.parse(number, bytes, &mut row) {
                Ok(ParsedLine::Event) => features.extend_from_slice(&row),
                Ok(ParsedLine::Skipped) => {}
                Err(_) => bail!("line {number} of the capture does not parse"),
            }
        }
        if num_read == 0 {
            break;
        }
    }
    let mut all = Vec::with_capacity(capture.rows.len());
    let mut scores = Vec::new();
    let mut attack_classes = Vec::new();
    for batch in features.chunks(DEFAULT_BATCH_EVENTS * schema.num_features()) {
        model.score(batch, &mut scores, &mut attack_classes)?;
        all.extend_from_slice(&scores);
    }
    ensure!(
        all.len() == capture.rows.len(),
        "scored {} rows of {}",
        all.len(),
        capture.rows.len()
    );
    Ok(all)
}

/// Returns the score at or above which a fraction `rate` of `scores` lie
/// (more when that score is tied).
fn threshold_for_rate(scores: &[f32], rate: f64) -> f64 {
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let num_above = (rate * sorted.len() as f64).round() as usize;
    f64::from(sorted[num_above.clamp(1, sorted.len()) - 1])
}

/// Writes the model and its card (declaring the schema) into `directory`;
/// returns their paths.
fn write_model(
    directory: &Path,
    weights: &ModelWeights,
    schema_toml: &str,
) -> Result<(PathBuf, PathBuf)> {
    let schema = Schema::from_toml_str(schema_toml)?;
    let model = directory.join("model.safetensors");
    weights.save_safetensors(&model, Default::default())?;
    let card = ModelCard {
        version: 1,
        parent: None,
        sha256: weights.sha256(),
        num_params: weights.params.len() as u64,
        spec: weights.spec.clone(),
        round_id: None,
        contributors: Vec::new(),
        num_examples: 0,
        plan: TrainingPlan::new(),
        created_unix_ms: 0,
        feature_schema: Some(schema_toml.to_string()),
        feature_schema_sha256: Some(schema.sha256()),
        metrics: None,
        privacy: None,
        aggregation: None,
        calibration: None,
    };
    let card_path = directory.join("model.json");
    std::fs::write(&card_path, serde_json::to_vec_pretty(&card)?)?;
    Ok((model, card_path))
}

/// Returns the time now in UNIX milliseconds (fraction kept).
fn unix_ms_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64() * 1000.0)
}

/// Returns the UNIX milliseconds of an RFC 3339 UTC time with milliseconds
/// (`2026-12-03T08:40:00.123Z`, as the native format writes `detected_at`).
fn parse_detected_at(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    if bytes.len() != 24 || bytes[23] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second, millis) = (
        number(11..13)?,
        number(14..16)?,
        number(17..19)?,
        number(20..23)?,
    );
    // Days from the civil date (Howard Hinnant's algorithm).
    let year_of_era = if month <= 2 { year - 1 } else { year };
    let era = year_of_era.div_euclid(400);
    let year_in_era = year_of_era - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_in_era * 365 + year_in_era / 4 - year_in_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some((seconds * 1_000 + millis) as f64)
}

/// One alert as the receiver saw it.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at: Instant,
    at_unix_ms: f64,
    detected_unix_ms: f64,
}

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    num_requests: u64,
    num_bad_signatures: u64,
    num_malformed: u64,
    batch_ids: HashSet<String>,
    num_duplicate_batches: u64,
    /// Arrivals by line; a line seen twice (in different batches) is counted.
    arrivals: HashMap<u64, Arrival>,
    num_duplicate_lines: u64,
}

fn valid_signature(body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_signature) = header.and_then(|value| value.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_signature) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(WEBHOOK_SECRET) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// Records one webhook request: every alert's arrival, by line.
async fn handle(
    request: Request<Incoming>,
    seen: Arc<Mutex<Seen>>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let answer = |status: StatusCode| {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        Ok(response)
    };
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let signature = header("x-fedshield-signature");
    let batch_id = header("x-fedshield-batch-id");
    let Ok(collected) = request.into_body().collect().await else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let at = Instant::now();
    let at_unix_ms = unix_ms_now();
    let body = collected.to_bytes();
    let Ok(mut seen) = seen.lock() else {
        return answer(StatusCode::INTERNAL_SERVER_ERROR);
    };
    seen.num_requests += 1;
    if !valid_signature(&body, signature.as_deref()) {
        seen.num_bad_signatures += 1;
        return answer(StatusCode::UNAUTHORIZED);
    }
    let Some(batch_id) = batch_id else {
        seen.num_malformed += 1;
        return answer(StatusCode::BAD_REQUEST);
    };
    if !seen.batch_ids.insert(batch_id) {
        seen.num_duplicate_batches += 1;
        return answer(StatusCode::OK);
    }
    let Ok(records) = serde_json::from_slice::<Vec<serde_json::Value>>(&body) else {
        seen.num_malformed += 1;
        return answer(StatusCode::BAD_REQUEST);
    };
    for record in records {
        let line = record["line"].as_u64();
        let detected = record["detected_at"].as_str().and_then(parse_detected_at);
        let (Some(line), Some(detected_unix_ms)) = (line, detected) else {
            seen.num_malformed += 1;
            continue;
        };
        let arrival = Arrival {
            at,
            at_unix_ms,
            detected_unix_ms,
        };
        if seen.arrivals.insert(line, arrival).is_some() {
            seen.num_duplicate_lines += 1;
        }
    }
    answer(StatusCode::OK)
}

/// An HTTPS receiver on 127.0.0.1 with a certificate of `ca`.
struct Receiver {
    address: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_receiver(ca: &CertificateAuthority) -> Result<Receiver> {
    let issued = ca.issue_server(
        &["localhost".to_string()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        1,
    )?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            load_certificates_pem(&issued.cert_pem)?,
            load_private_key_pem(&issued.key_pem)?,
        )?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |request| handle(request, seen.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        })
    };
    Ok(Receiver {
        address,
        seen,
        task,
    })
}

/// When each burst was written.
#[derive(Debug, Clone, Copy)]
struct Written {
    at: Instant,
    at_unix_ms: f64,
}

/// Appends `LINES_PER_BURST` rows of `capture` (cycled) to `path` every
/// `BURST_INTERVAL` for `duration`; returns when each burst was written.
fn write_lines(path: &Path, capture: &Capture, duration: Duration) -> Result<Vec<Written>> {
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    let num_bursts = (duration.as_nanos() / BURST_INTERVAL.as_nanos()) as usize;
    let mut written = Vec::with_capacity(num_bursts);
    let mut burst = String::with_capacity(LINES_PER_BURST * 256);
    let mut next_row = 0;
    let started = Instant::now();
    for index in 0..num_bursts {
        burst.clear();
        for _ in 0..LINES_PER_BURST {
            burst.push_str(&capture.rows[next_row]);
            burst.push('\n');
            next_row = (next_row + 1) % capture.rows.len();
        }
        let due = started + BURST_INTERVAL * index as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        file.write_all(burst.as_bytes())?;
        written.push(Written {
            at: Instant::now(),
            at_unix_ms: unix_ms_now(),
        });
    }
    Ok(written)
}

/// Latencies of one run, in milliseconds.
struct RunReport {
    num_lines: usize,
    num_alerts: usize,
    num_requests: u64,
    writer_behind_ms: f64,
    latency_ms: Vec<f64>,
    to_scored_ms: Vec<f64>,
    scored_to_received_ms: Vec<f64>,
}

/// Returns the `quantile` of sorted `values` (nearest rank).
fn quantile(sorted: &[f64], quantile: f64) -> f64 {
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// Runs the detector on a followed log written at 10,000 lines/s for
/// `duration`, its webhook batching at most `max_batch_wait`.
async fn run_once(
    capture: Arc<Capture>,
    alerting_rows: Arc<Vec<bool>>,
    weights: &ModelWeights,
    threshold: f64,
    max_batch_wait: Duration,
    duration: Duration,
) -> Result<RunReport> {
    let directory = tempfile::tempdir()?;
    let schema_path = zeek_schema_path();
    let schema_toml = std::fs::read_to_string(&schema_path)
        .with_context(|| format!("cannot read {}", schema_path.display()))?;
    let (model, card) = write_model(directory.path(), weights, &schema_toml)?;
    let log = directory.path().join("conn.log");
    std::fs::write(&log, &capture.header)?;

    let ca = CertificateAuthority::generate("alert latency bench CA")?;
    let ca_file = directory.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem())?;
    let receiver = start_receiver(&ca).await?;

    let settings = DetectSettings {
        model_source: ModelSourceSettings::File { model, card },
        schema: Some(schema_path),
        events: Some(log.clone()),
        format: Some(FileFormat::Zeek),
        follow: true,
        threshold: Some(threshold),
        alert_fpr: None,
        poll_interval: Duration::from_secs(3_600),
        batch_events: DEFAULT_BATCH_EVENTS,
        output: OutputSettings {
            format: AlertFormatName::Native,
            sinks: vec![SinkSpec::Webhook {
                url: format!("https://127.0.0.1:{}/alerts", receiver.address.port()),
            }],
            sink_options: SinkOptions {
                webhook_secret: Some(WEBHOOK_SECRET.to_vec()),
                webhook_tls_ca_file: Some(ca_file),
                webhook_max_batch_wait: max_batch_wait,
                ..SinkOptions::default()
            },
        },
        metrics_listen: None,
        alerts: AlertOptions {
            alerts_only: true,
            explain_top_k: 5,
            include_fields: Vec::new(),
            suppression: None,
        },
        flush_wait: Duration::from_secs(5),
    };
    let shutdown = CancellationToken::new();
    let detector = tokio::spawn(fedshield_detector::run(settings, shutdown.clone()));
    tokio::time::sleep(STARTUP_WAIT).await;
    ensure!(!detector.is_finished(), "the detector stopped at its start");

    let writer = {
        let capture = capture.clone();
        let log = log.clone();
        tokio::task::spawn_blocking(move || write_lines(&log, &capture, duration))
    };
    let written = writer.await??;
    let num_lines = written.len() * LINES_PER_BURST;
    let expected: Vec<u64> = (0..num_lines)
        .filter(|index| alerting_rows[index % capture.rows.len()])
        .map(|index| NUM_HEADER_LINES + 1 + index as u64)
        .collect();
    let drain_until = Instant::now() + DRAIN_WAIT;
    while Instant::now() < drain_until {
        let num_arrived = {
            let seen = receiver
                .seen
                .lock()
                .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?;
            seen.arrivals.len()
        };
        if num_arrived >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    detector.await??;

    let seen = receiver
        .seen
        .lock()
        .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?;
    ensure!(
        seen.num_bad_signatures == 0,
        "{} requests with a bad signature",
        seen.num_bad_signatures
    );
    ensure!(
        seen.num_malformed == 0,
        "{} malformed requests or records",
        seen.num_malformed
    );
    ensure!(
        seen.num_duplicate_lines == 0,
        "{} lines alerted twice",
        seen.num_duplicate_lines
    );
    let expected_set: HashSet<u64> = expected.iter().copied().collect();
    let num_unexpected = seen
        .arrivals
        .keys()
        .filter(|line| !expected_set.contains(line))
        .count();
    ensure!(
        num_unexpected == 0,
        "{num_unexpected} alerts for lines that should not alert"
    );
    let mut latency_ms = Vec::with_capacity(expected.len());
    let mut to_scored_ms = Vec::with_capacity(expected.len());
    let mut scored_to_received_ms = Vec::with_capacity(expected.len());
    let mut num_missing = 0;
    for line in &expected {
        let Some(arrival) = seen.arrivals.get(line) else {
            num_missing += 1;
            continue;
        };
        let burst = ((line - NUM_HEADER_LINES - 1) as usize) / LINES_PER_BURST;
        let write = written[burst];
        latency_ms.push(arrival.at.saturating_duration_since(write.at).as_secs_f64() * 1000.0);
        to_scored_ms.push(arrival.detected_unix_ms - write.at_unix_ms);
        scored_to_received_ms.push(arrival.at_unix_ms - arrival.detected_unix_ms);
    }
    ensure!(
        num_missing == 0,
        "{num_missing} of {} expected alerts never arrived",
        expected.len()
    );
    let writer_behind_ms = written
        .iter()
        .enumerate()
        .map(|(index, write)| {
            let due = written[0].at + BURST_INTERVAL * index as u32;
            write.at.saturating_duration_since(due).as_secs_f64() * 1000.0
        })
        .fold(0.0, f64::max);
    Ok(RunReport {
        num_lines,
        num_alerts: expected.len(),
        num_requests: seen.num_requests,
        writer_behind_ms,
        latency_ms,
        to_scored_ms,
        scored_to_received_ms,
    })
}

fn print_report(max_batch_wait: Duration, duration: Duration, report: &RunReport) {
    let latency = sorted(&report.latency_ms);
    let to_scored = sorted(&report.to_scored_ms);
    let to_received = sorted(&report.scored_to_received_ms);
    let mean = latency.iter().sum::<f64>() / latency.len() as f64;
    println!(
        "webhook max batch wait {} ms: {} lines in {} s, {} alerts ({:.2}%) in {} requests; writer at most {:.1} ms behind its schedule",
        max_batch_wait.as_millis(),
        report.num_lines,
        duration.as_secs(),
        report.num_alerts,
        100.0 * report.num_alerts as f64 / report.num_lines as f64,
        report.num_requests,
        report.writer_behind_ms,
    );
    println!(
        "  write → received: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms",
        quantile(&latency, 0.50),
        quantile(&latency, 0.99),
        quantile(&latency, 1.0),
        mean
    );
    println!(
        "  write → scored (detected_at, ms resolution): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        quantile(&to_scored, 0.50),
        quantile(&to_scored, 0.99),
        quantile(&to_scored, 1.0),
    );
    println!(
        "  scored → received: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        quantile(&to_received, 0.50),
        quantile(&to_received, 0.99),
        quantile(&to_received, 1.0),
    );
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; a filter or `--list` from the harness
    // protocol is not meaningful for this single measurement.
    if std::env::args().any(|argument| argument == "--list") {
        return Ok(());
    }
    // Without `--bench` (`cargo test --benches`), a short smoke run.
    let is_bench = std::env::args().any(|argument| argument == "--bench");
    let run_secs = match std::env::var("ALERT_LATENCY_SECS") {
        Ok(text) => text
            .parse::<u64>()
            .with_context(|| format!("ALERT_LATENCY_SECS={text:?} is not a number of seconds"))?,
        Err(_) if is_bench => DEFAULT_RUN_SECS,
        Err(_) => SMOKE_RUN_SECS,
    };
    let duration = Duration::from_secs(run_secs.max(1));
    let capture = Arc::new(load_capture()?);
    let schema = Schema::load(&zeek_schema_path())?;
    let spec = ModelSpec::mlp(schema.num_features() as u32, vec![64, 32], 2);
    let weights = ModelWeights::init(spec, 1)?;
    let scores = row_scores(&capture, &schema, &weights)?;
    let threshold = threshold_for_rate(&scores, ALERT_RATE);
    let alerting_rows: Vec<bool> = scores
        .iter()
        .map(|&score| f64::from(score) >= threshold)
        .collect();
    let num_alerting = alerting_rows.iter().filter(|&&alerts| alerts).count();
    println!(
        "threshold {threshold}: {num_alerting} of {} capture rows alert ({:.2}%)",
        capture.rows.len(),
        100.0 * num_alerting as f64 / capture.rows.len() as f64
    );
    let alerting_rows = Arc::new(alerting_rows);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The default wait, and a longer and a shorter one around it.
    let default_wait = SinkOptions::default().webhook_max_batch_wait;
    for max_batch_wait in [
        default_wait,
        Duration::from_secs(1),
        Duration::from_millis(100),
    ] {
        let report = runtime.block_on(run_once(
            capture.clone(),
            alerting_rows.clone(),
            &weights,
            threshold,
            max_batch_wait,
            duration,
        ))?;
        print_report(max_batch_wait, duration, &report);
    }
    Ok(())
}
