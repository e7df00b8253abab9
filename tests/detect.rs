//! `fedshield detect` end to end: the real binary scoring real files, its
//! verdicts checked against the evaluator; malformed lines skipped; a model
//! that does not match its card refused; and `--follow` on a growing file,
//! switching model versions published by a real coordinator over gRPC or
//! stored next to a local model.
//!
//! SOC telemetry: one verdict per row of the real Zeek TSV, Zeek JSON and
//! Suricata eve samples in `../shared/data/telemetry-samples` (required; the
//! counts are those of each sample's README), a followed Zeek log rotated and
//! truncated, and bad input reported with its file, line and column.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedshield_coordinator::CoordinatorConfig;
use fedshield_coordinator::registry::{ModelRegistry, PublishedModel, weights_name};
use fedshield_core::card::ModelCard;
use fedshield_core::ingest::{IngestOptions, load_dataset};
use fedshield_core::model::inference::{CLASSIFIER_THRESHOLD, predict_classes, score_rows};
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::schema::Schema;
use fedshield_core::telemetry::{
    FlowGenerator, OrgProfile, SYNTHETIC_FLOWS_SCHEMA_TOML, synthetic_flows_schema, write_csv,
};
use fedshield_core::{ModelSpec, ModelVersion, TrainingPlan};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use common::{
    coordinator_tls, localhost_certificate, start_coordinator, start_participant, telemetry_sample,
    test_spec,
};

fn fedshield(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedshield"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run the fedshield binary")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Returns the card the coordinator's registry would write for `weights`.
fn card_for(weights: &ModelWeights, version: u64, schema_toml: &str) -> ModelCard {
    let schema = Schema::from_toml_str(schema_toml).unwrap();
    ModelCard {
        version,
        parent: version.checked_sub(1),
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
    }
}

/// Writes `model`'s card next to it (same path, extension .json).
fn write_card(model: &Path, version: u64, schema_toml: &str) {
    let weights = ModelWeights::load_safetensors(model).unwrap();
    let card = card_for(&weights, version, schema_toml);
    std::fs::write(
        model.with_extension("json"),
        serde_json::to_vec_pretty(&card).unwrap(),
    )
    .unwrap();
}

/// Writes synthetic training flows and trains a small model of `kind` on
/// them with `fedshield train`; returns the model's path.
fn train_model(dir: &Path, kind: &str) -> PathBuf {
    let train = dir.join("train.csv");
    assert_success(&fedshield(&[
        "synth",
        "--out",
        path_str(&train),
        "--records",
        "3000",
        "--seed",
        "1",
    ]));
    let model = dir.join(format!("{kind}.safetensors"));
    assert_success(&fedshield(&[
        "train",
        "--data",
        path_str(&train),
        "--schema",
        path_str(&dir.join("train.schema.toml")),
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--model-kind",
        kind,
        "--out",
        path_str(&model),
        "--json",
    ]));
    write_card(&model, 1, SYNTHETIC_FLOWS_SCHEMA_TOML);
    model
}

fn parse_verdicts(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each output line is one JSON object"))
        .collect()
}

/// Returns `count` synthetic flow rows of a balanced mix (csv, no header) and the header.
fn flow_rows(count: usize, seed: u64) -> (String, Vec<String>) {
    let mut generator = FlowGenerator::new(OrgProfile::balanced(), seed);
    let mut bytes = Vec::new();
    write_csv(&mut bytes, (0..count).map(|_| generator.next_flow())).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let mut lines = text.lines().map(str::to_string);
    let header = lines.next().unwrap();
    (header, lines.collect())
}

#[test]
fn detect_verdicts_match_the_evaluator_and_malformed_lines_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let model = train_model(dir.path(), "classifier");
    let clean = dir.path().join("clean.csv");
    assert_success(&fedshield(&[
        "synth",
        "--out",
        path_str(&clean),
        "--balanced",
        "--records",
        "400",
        "--seed",
        "2",
    ]));
    // Two malformed lines in the middle: a short row and a non-number.
    let mut lines: Vec<String> = std::fs::read_to_string(&clean)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.insert(101, "0.5,12,34".to_string());
    let mut bad_number: Vec<String> = lines[200].split(',').map(str::to_string).collect();
    bad_number[1] = "lots".to_string();
    lines.insert(201, bad_number.join(","));
    let events = dir.path().join("events.csv");
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let malformed_lines = [102u64, 202];

    let output = fedshield(&[
        "detect",
        "--model",
        path_str(&model),
        "--events",
        path_str(&events),
    ]);
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The short row ends at column 10; "lots" is the second field.
    let lots_column = lines[201].find(",lots").unwrap() + 2;
    assert!(
        stderr.contains(
            "events.csv:102:10: malformed event skipped: row has 3 fields, the header has 13"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "events.csv:202:{lots_column}: malformed event skipped: column \"{}\": \"lots\" is not a number",
            lines[0].split(',').nth(1).unwrap()
        )),
        "{stderr}"
    );
    assert_eq!(
        malformed_lines.len(),
        stderr.matches("malformed event skipped").count()
    );
    let verdicts = parse_verdicts(&output.stdout);

    // The evaluator's view of the same file: the loader skips the same lines.
    let schema = synthetic_flows_schema();
    let (dataset, report) = load_dataset(&events, &schema, &IngestOptions::default()).unwrap();
    assert_eq!(report.skipped.num_malformed, 2);
    let weights = ModelWeights::load_safetensors(&model).unwrap();
    let scores = score_rows(&weights, dataset.features()).unwrap();
    assert_eq!(verdicts.len(), dataset.len());
    assert_eq!(verdicts.len(), 400);
    let expected_lines = (2..=402u64).filter(|line| !malformed_lines.contains(line));
    let mut num_attacks = 0;
    for ((verdict, &score), line) in verdicts.iter().zip(&scores).zip(expected_lines) {
        assert_eq!(verdict["line"].as_u64(), Some(line), "{verdict}");
        assert_eq!(verdict["model_version"].as_u64(), Some(1), "{verdict}");
        assert_eq!(
            verdict["score"].as_f64().unwrap() as f32,
            score,
            "{verdict}"
        );
        let expected = if f64::from(score) >= CLASSIFIER_THRESHOLD {
            "attack"
        } else {
            "benign"
        };
        assert_eq!(verdict["verdict"], expected, "{verdict}");
        assert!(verdict.get("category").is_none(), "{verdict}");
        num_attacks += usize::from(expected == "attack");
    }
    assert!(num_attacks > 0 && num_attacks < 400, "{num_attacks}");

    // And `fedshield evaluate` flags the same events, label by label.
    let evaluation = fedshield(&[
        "evaluate",
        "--model",
        path_str(&model),
        "--data",
        path_str(&events),
        "--schema",
        path_str(&dir.path().join("clean.schema.toml")),
        "--json",
    ]);
    assert_success(&evaluation);
    let report: Value = serde_json::from_slice(&evaluation.stdout).unwrap();
    let mut detected: BTreeMap<String, usize> = BTreeMap::new();
    for (index, verdict) in verdicts.iter().enumerate() {
        if verdict["verdict"] == "attack" {
            *detected
                .entry(dataset.raw_label(index).to_string())
                .or_default() += 1;
        }
    }
    for category in report["per_category"].as_array().unwrap() {
        let name = category["category"].as_str().unwrap();
        let flagged =
            category["flagged_rate"].as_f64().unwrap() * category["num_examples"].as_f64().unwrap();
        assert_eq!(
            flagged.round() as usize,
            detected.get(name).copied().unwrap_or(0),
            "{name}: {report}"
        );
    }
}

#[test]
fn unlabelled_jsonl_events_from_stdin_get_the_most_likely_attack_category() {
    let dir = tempfile::tempdir().unwrap();
    let model = train_model(dir.path(), "multiclass");
    let labelled = dir.path().join("labelled.jsonl");
    assert_success(&fedshield(&[
        "synth",
        "--out",
        path_str(&labelled),
        "--format",
        "jsonl",
        "--balanced",
        "--records",
        "300",
        "--seed",
        "3",
    ]));
    let unlabelled: String = std::fs::read_to_string(&labelled)
        .unwrap()
        .lines()
        .map(|line| {
            let mut object: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
            object
                .remove("label")
                .expect("synthetic flows are labelled");
            serde_json::to_string(&object).unwrap() + "\n"
        })
        .collect();

    let mut child = Command::new(env!("CARGO_BIN_EXE_fedshield"))
        .args(["detect", "--model", path_str(&model), "--format", "jsonl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(unlabelled.as_bytes()).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_success(&output);
    let verdicts = parse_verdicts(&output.stdout);

    let schema = synthetic_flows_schema();
    let class_names = schema.class_names();
    let (dataset, _) = load_dataset(&labelled, &schema, &IngestOptions::default()).unwrap();
    let weights = ModelWeights::load_safetensors(&model).unwrap();
    assert_eq!(weights.spec.num_classes as usize, class_names.len());
    let scores = score_rows(&weights, dataset.features()).unwrap();
    let classes = predict_classes(&weights, dataset.features()).unwrap();
    assert_eq!(verdicts.len(), 300);
    let mut num_checked_categories = 0;
    for (index, verdict) in verdicts.iter().enumerate() {
        assert_eq!(verdict["line"].as_u64(), Some(index as u64 + 1));
        assert_eq!(verdict["score"].as_f64().unwrap() as f32, scores[index]);
        let category = verdict["category"]
            .as_str()
            .expect("multi-class verdicts name a category");
        assert!(
            class_names[1..].iter().any(|name| name == category),
            "{verdict}"
        );
        // Where the most likely class overall is an attack, it is also the most likely attack.
        if classes[index] != 0 {
            assert_eq!(category, class_names[classes[index] as usize], "{verdict}");
            num_checked_categories += 1;
        }
    }
    assert!(num_checked_categories > 0);
}

/// SIGTERM stops `detect` with status 0, as it stops the other roles: the
/// events read before it are scored and written, and a read that waits on a
/// quiet pipe does not keep the process alive.
#[test]
fn detect_exits_0_on_sigterm_with_what_it_read_scored() {
    let dir = tempfile::tempdir().unwrap();
    let model = train_model(dir.path(), "classifier");
    let (header, rows) = flow_rows(20, 9);
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedshield"))
        .args(["detect", "--model", path_str(&model), "--format", "csv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The pipe stays open: detect reads, scores these, then waits for more.
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{header}\n{}\n", rows.join("\n")).as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_sender.send(line).is_err() {
                return;
            }
        }
    });
    let mut verdicts = Vec::new();
    while verdicts.len() < rows.len() {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("a verdict for every event written");
        verdicts.push(line);
    }
    common::send_sigterm(&child);
    let status = wait_for_exit(&mut child);
    drop(stdin);
    assert_eq!(
        status.code(),
        Some(0),
        "detect exits 0 on SIGTERM: {status}"
    );
    assert_eq!(verdicts.len(), 20);
}

#[test]
fn a_model_that_does_not_match_its_card_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let weights = ModelWeights::init(test_spec(), 5).unwrap();
    let model = dir.path().join("model.safetensors");
    weights
        .save_safetensors(&model, Default::default())
        .unwrap();
    write_card(&model, 3, SYNTHETIC_FLOWS_SCHEMA_TOML);
    let (header, rows) = flow_rows(5, 1);
    let events = dir.path().join("events.csv");
    std::fs::write(&events, format!("{header}\n{}\n", rows.join("\n"))).unwrap();

    let intact = fedshield(&[
        "detect",
        "--model",
        path_str(&model),
        "--events",
        path_str(&events),
    ]);
    assert_success(&intact);
    assert_eq!(parse_verdicts(&intact.stdout).len(), 5);

    // Flip one bit of the last parameter.
    let mut bytes = std::fs::read(&model).unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    std::fs::write(&model, &bytes).unwrap();
    let corrupted = fedshield(&[
        "detect",
        "--model",
        path_str(&model),
        "--events",
        path_str(&events),
    ]);
    assert!(!corrupted.status.success());
    assert!(corrupted.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&corrupted.stderr);
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");
    assert!(stderr.contains("model.safetensors"), "{stderr}");

    std::fs::remove_file(model.with_extension("json")).unwrap();
    let without_card = fedshield(&[
        "detect",
        "--model",
        path_str(&model),
        "--events",
        path_str(&events),
    ]);
    assert!(!without_card.status.success());
    let stderr = String::from_utf8_lossy(&without_card.stderr);
    assert!(stderr.contains("model.json"), "{stderr}");
}

/// A `fedshield detect --follow` process and what it has printed so far.
struct FollowingDetector {
    child: Child,
    verdicts: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

impl FollowingDetector {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fedshield"))
            .arg("detect")
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fedshield detect");
        let verdicts = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let verdicts_sink = verdicts.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let verdict: Value = serde_json::from_str(&line).expect("one JSON object per line");
                verdicts_sink.lock().unwrap().push(verdict);
            }
        });
        let mut child_stderr = child.stderr.take().unwrap();
        let stderr_sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(num_read) = child_stderr.read(&mut buffer) {
                if num_read == 0 {
                    return;
                }
                stderr_sink
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..num_read]));
            }
        });
        FollowingDetector {
            child,
            verdicts,
            stderr,
        }
    }

    fn verdicts(&self) -> Vec<Value> {
        self.verdicts.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until `condition` holds for the verdicts and stderr so far, calling
    /// `between_polls` (e.g. to append events) every 300 ms.
    async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut between_polls: impl FnMut(),
        condition: impl Fn(&[Value], &str) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        let mut next_call = Instant::now();
        loop {
            if condition(&self.verdicts(), &self.stderr()) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "detect exited with {status} while waiting for {what}; stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; verdicts: {:?}\nstderr:\n{}",
                self.verdicts(),
                self.stderr()
            );
            if Instant::now() >= next_call {
                between_polls();
                next_call = Instant::now() + Duration::from_millis(300);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FollowingDetector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends text to a file, as a log writer would.
fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file.flush().unwrap();
}

/// Empties `path` in place (as copytruncate does), then waits long enough
/// for a follower to see it shorter before anything is written again.
async fn truncate_in_place(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Asserts that lines are numbered 2, 3, ... (the header is line 1) and that
/// versions never go back.
fn assert_in_order(verdicts: &[Value]) {
    let mut previous_version = 0;
    for (index, verdict) in verdicts.iter().enumerate() {
        assert_eq!(
            verdict["line"].as_u64(),
            Some(index as u64 + 2),
            "{verdicts:?}"
        );
        let version = verdict["model_version"].as_u64().unwrap();
        assert!(version >= previous_version, "{verdicts:?}");
        previous_version = version;
    }
}

/// Runs participants until the coordinator publishes `version`, then stops them.
async fn publish_version(
    coordinator: &fedshield_coordinator::CoordinatorHandle,
    work: &Path,
    version: u64,
) {
    let mut published = coordinator.engine().subscribe_published();
    let stop = CancellationToken::new();
    let url = format!("http://{}", coordinator.local_addr());
    let mut tasks = Vec::new();
    for (index, name) in ["alpha", "beta"].iter().enumerate() {
        let (task, _events) = start_participant(&url, name, index, work, stop.clone());
        tasks.push(task);
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while published.borrow_and_update().version < ModelVersion(version) {
            published.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("version {version} was not published within 60s"));
    // Stop at once, so that the next round does not publish another version.
    stop.cancel();
    for task in tasks {
        task.await
            .unwrap()
            .expect("the participant meets no permanent refusal");
    }
    assert_eq!(
        coordinator.engine().current_model().version,
        ModelVersion(version)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn detect_follows_a_growing_file_and_switches_to_each_version_the_coordinator_publishes() {
    let work = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), test_spec());
    config.feature_schema_toml = Some(SYNTHETIC_FLOWS_SCHEMA_TOML.to_string());
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    publish_version(&coordinator, work.path(), 1).await;

    let schema = work.path().join("flows.schema.toml");
    std::fs::write(&schema, SYNTHETIC_FLOWS_SCHEMA_TOML).unwrap();
    let cache = work.path().join("detector-cache");
    let events = work.path().join("events.csv");
    let (header, rows) = flow_rows(200, 9);
    let mut rows = rows.into_iter();
    let first: Vec<String> = rows.by_ref().take(10).collect();
    std::fs::write(&events, format!("{header}\n{}\n", first.join("\n"))).unwrap();
    let url = format!("http://{}", coordinator.local_addr());
    // No --schema: the schema comes with the model card.
    let mut detector = FollowingDetector::start(&[
        "--coordinator",
        &url,
        "--insecure",
        "--cache-dir",
        path_str(&cache),
        "--events",
        path_str(&events),
        "--follow",
        "--poll-secs",
        "1",
    ]);
    detector
        .wait_for(
            "the first 10 events",
            Duration::from_secs(30),
            || {},
            |verdicts, _| verdicts.len() >= 10,
        )
        .await;

    // A row written in two pieces is scored once, whole, after its line feed.
    let row = rows.next().unwrap();
    let (head, tail) = row.split_at(row.len() / 2);
    append(&events, head);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(detector.verdicts().len(), 10);
    let more: Vec<String> = rows.by_ref().take(4).collect();
    append(&events, &format!("{tail}\n{}\n", more.join("\n")));
    detector
        .wait_for(
            "15 events",
            Duration::from_secs(30),
            || {},
            |verdicts, _| verdicts.len() >= 15,
        )
        .await;
    let verdicts = detector.verdicts();
    assert_eq!(verdicts.len(), 15);
    assert!(
        verdicts.iter().all(|verdict| verdict["model_version"] == 1),
        "{verdicts:?}"
    );
    assert_in_order(&verdicts);

    publish_version(&coordinator, work.path(), 2).await;
    let rows = Mutex::new(rows);
    detector
        .wait_for(
            "an event scored by version 2",
            Duration::from_secs(30),
            || {
                let row = rows.lock().unwrap().next().expect("enough rows");
                append(&events, &format!("{row}\n"));
            },
            |verdicts, _| verdicts.iter().any(|verdict| verdict["model_version"] == 2),
        )
        .await;
    let verdicts = detector.verdicts();
    assert_in_order(&verdicts);
    let stderr = detector.stderr();
    assert!(stderr.contains("switched to model version"), "{stderr}");
    assert!(!stderr.contains("malformed"), "{stderr}");
    for version in [1, 2] {
        assert!(
            cache
                .join(format!("model-v{version:08}.safetensors"))
                .is_file(),
            "version {version} is cached"
        );
    }
    drop(detector);

    // An older version can still be pinned; it is downloaded into an empty cache.
    let pinned_cache = work.path().join("pinned-cache");
    let args: Vec<String> = [
        "detect",
        "--coordinator",
        &url,
        "--insecure",
        "--version",
        "1",
        "--schema",
        path_str(&schema),
        "--cache-dir",
        path_str(&pinned_cache),
        "--events",
        path_str(&events),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let pinned = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fedshield(&args)
    })
    .await
    .unwrap();
    assert_success(&pinned);
    let pinned_verdicts = parse_verdicts(&pinned.stdout);
    assert!(pinned_verdicts.len() > 15);
    assert!(
        pinned_verdicts
            .iter()
            .all(|verdict| verdict["model_version"] == 1)
    );
    assert!(pinned_cache.join("model-v00000001.safetensors").is_file());

    // A --schema other than the one the card names is refused before any
    // event is scored.
    let other_schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/nsl-kdd.toml");
    let args: Vec<String> = [
        "detect",
        "--coordinator",
        &url,
        "--insecure",
        "--schema",
        other_schema,
        "--cache-dir",
        path_str(&pinned_cache),
        "--events",
        path_str(&events),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let mismatched = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fedshield(&args)
    })
    .await
    .unwrap();
    assert!(!mismatched.status.success());
    let stderr = String::from_utf8_lossy(&mismatched.stderr);
    assert!(
        stderr.contains("is not the schema model version"),
        "{stderr}"
    );
    assert!(mismatched.stdout.is_empty());
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_model_is_switched_for_a_newer_verified_version_stored_next_to_it() {
    let work = tempfile::tempdir().unwrap();
    let registry = ModelRegistry::open_local(work.path()).unwrap();
    let store = async |version: u64, seed: u64| {
        let weights = ModelWeights::init(ModelSpec::mlp(61, vec![8], 2), seed).unwrap();
        let card = card_for(&weights, version, SYNTHETIC_FLOWS_SCHEMA_TOML);
        registry
            .store(&PublishedModel {
                version: ModelVersion(version),
                weights,
                card,
            })
            .await
            .unwrap();
    };
    store(1, 1).await;
    let events = work.path().join("events.csv");
    let (header, rows) = flow_rows(200, 4);
    std::fs::write(&events, format!("{header}\n{}\n", rows[..5].join("\n"))).unwrap();
    let rows = Mutex::new(rows.into_iter().skip(5));
    let append_row = || {
        let row = rows.lock().unwrap().next().expect("enough rows");
        append(&events, &format!("{row}\n"));
    };
    let mut detector = FollowingDetector::start(&[
        "--model",
        path_str(
            &work
                .path()
                .join("models")
                .join(weights_name(ModelVersion(1))),
        ),
        "--events",
        path_str(&events),
        "--follow",
        "--poll-secs",
        "1",
    ]);
    detector
        .wait_for(
            "the first 5 events",
            Duration::from_secs(30),
            || {},
            |verdicts, _| verdicts.len() >= 5,
        )
        .await;

    store(2, 2).await;
    detector
        .wait_for(
            "an event scored by version 2",
            Duration::from_secs(30),
            &append_row,
            |verdicts, _| verdicts.iter().any(|verdict| verdict["model_version"] == 2),
        )
        .await;

    // Version 3's weights do not match its card: refused, version 2 stays.
    store(3, 3).await;
    let tampered = ModelWeights::init(ModelSpec::mlp(61, vec![8], 2), 4).unwrap();
    tampered
        .save_safetensors(
            &work
                .path()
                .join("models")
                .join(weights_name(ModelVersion(3))),
            Default::default(),
        )
        .unwrap();
    detector
        .wait_for(
            "version 3 to be refused",
            Duration::from_secs(30),
            &append_row,
            |_, stderr| stderr.contains("model version 3 refused"),
        )
        .await;
    let num_before = detector.verdicts().len();
    detector
        .wait_for(
            "more events after the refusal",
            Duration::from_secs(30),
            &append_row,
            |verdicts, _| verdicts.len() >= num_before + 3,
        )
        .await;
    let verdicts = detector.verdicts();
    assert_in_order(&verdicts);
    assert!(
        verdicts.iter().all(|verdict| verdict["model_version"] != 3),
        "{verdicts:?}"
    );
    assert_eq!(verdicts.last().unwrap()["model_version"], 2);
    let stderr = detector.stderr();
    assert!(stderr.contains("model version 3 refused"), "{stderr}");
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_with_a_registered_certificate_scores_with_a_pinned_version_over_mutual_tls() {
    use fedshield_coordinator::participants::ParticipantRegistry;
    use fedshield_proto::tls::pki::CertificateAuthority;

    let work = tempfile::tempdir().unwrap();
    let authority = CertificateAuthority::generate("test CA").unwrap();
    let server = localhost_certificate(&authority);
    let registry_path = work.path().join("participants.toml");
    std::fs::write(&registry_path, "[[participant]]\nid = \"soc-detector\"\n").unwrap();
    let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), test_spec());
    config.tls = Some(coordinator_tls(
        &authority,
        &server,
        ParticipantRegistry::load(&registry_path).unwrap(),
    ));
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;

    let ca = work.path().join("ca.pem");
    std::fs::write(&ca, authority.cert_pem()).unwrap();
    let mut identities = Vec::new();
    for name in ["soc-detector", "intruder"] {
        let issued = authority.issue_client(name, 1).unwrap();
        let cert = work.path().join(format!("{name}.pem"));
        let key = work.path().join(format!("{name}.key"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        identities.push((cert, key));
    }
    let schema = work.path().join("flows.schema.toml");
    std::fs::write(&schema, SYNTHETIC_FLOWS_SCHEMA_TOML).unwrap();
    let events = work.path().join("events.csv");
    let (header, rows) = flow_rows(3, 5);
    std::fs::write(&events, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
    let url = format!("https://{}", coordinator.local_addr());
    let detect_as = |(cert, key): (PathBuf, PathBuf)| {
        let args: Vec<String> = [
            "detect",
            "--coordinator",
            &url,
            "--tls-ca",
            path_str(&ca),
            "--tls-cert",
            path_str(&cert),
            "--tls-key",
            path_str(&key),
            "--tls-server-name",
            "localhost",
            "--version",
            "0",
            "--schema",
            path_str(&schema),
            "--cache-dir",
            path_str(&work.path().join("cache")),
            "--events",
            path_str(&events),
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            fedshield(&args)
        })
    };
    let mut identities = identities.into_iter();
    let registered = detect_as(identities.next().unwrap()).await.unwrap();
    assert_success(&registered);
    let verdicts = parse_verdicts(&registered.stdout);
    assert_eq!(verdicts.len(), 3);
    assert!(
        verdicts.iter().all(|verdict| verdict["model_version"] == 0),
        "{verdicts:?}"
    );

    let intruder = detect_as(identities.next().unwrap()).await.unwrap();
    assert!(!intruder.status.success());
    assert!(intruder.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&intruder.stderr);
    assert!(stderr.contains("GetStatus on coordinator"), "{stderr}");
    shutdown.cancel();
    coordinator.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_rotated_events_file_is_read_again_from_its_start() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model.safetensors");
    ModelWeights::init(test_spec(), 2)
        .unwrap()
        .save_safetensors(&model, Default::default())
        .unwrap();
    write_card(&model, 7, SYNTHETIC_FLOWS_SCHEMA_TOML);
    let events = work.path().join("events.csv");
    let (header, rows) = flow_rows(12, 6);
    let write_events = |rows: &[String]| {
        std::fs::write(&events, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
    };
    write_events(&rows[..4]);
    let mut detector = FollowingDetector::start(&[
        "--model",
        path_str(&model),
        "--events",
        path_str(&events),
        "--follow",
    ]);
    detector
        .wait_for(
            "4 events",
            Duration::from_secs(30),
            || {},
            |verdicts, _| verdicts.len() >= 4,
        )
        .await;

    // Truncated in place, then rewritten shorter: numbered from line 2 again.
    truncate_in_place(&events).await;
    append(&events, &format!("{header}\n{}\n", rows[4..6].join("\n")));
    detector
        .wait_for(
            "2 events after truncation",
            Duration::from_secs(30),
            || {},
            |verdicts, _| verdicts.len() >= 6,
        )
        .await;

    // Rotated: renamed away and replaced by a new file.
    std::fs::rename(&events, work.path().join("events.csv.1")).unwrap();
    write_events(&rows[6..9]);
    detector
        .wait_for(
            "3 events after rotation",
            Duration::from_secs(30),
            || {},
            |verdicts, _| verdicts.len() >= 9,
        )
        .await;
    let lines: Vec<u64> = detector
        .verdicts()
        .iter()
        .map(|verdict| verdict["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 3, 4, 5, 2, 3, 2, 3, 4]);
    let stderr = detector.stderr();
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(stderr.contains("replaced"), "{stderr}");
    assert!(!stderr.contains("malformed"), "{stderr}");
}

/// A few conn.log columns of Zeek TSV logs; events need no label, but
/// IoT-23 and CTU-50 rows carry one.
const ZEEK_TSV_SCHEMA: &str = r#"
format = "zeek"
columns = [
    { name = "duration", kind = "numeric", missing = 0.0, transforms = [{ clamp = { min = 0.0, max = 1e6 } }, "log1p"] },
    { name = "resp_bytes", kind = "numeric", missing = 0.0, transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"] },
    { name = "proto", kind = "categorical", vocabulary = ["tcp", "udp", "icmp"] },
    { name = "label", kind = "label", benign = ["Benign", "benign"], classes = { malicious = ["Malicious"] } },
]
"#;

/// The same columns of Zeek's JSON writer (flat dotted keys, unset fields left out).
const ZEEK_JSON_SCHEMA: &str = r#"
format = "jsonl"
columns = [
    { name = "duration", kind = "numeric", missing = 0.0, transforms = [{ clamp = { min = 0.0, max = 1e6 } }, "log1p"] },
    { name = "resp_bytes", kind = "numeric", missing = 0.0, transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"] },
    { name = "id.resp_p", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 65535.0 } }, { scale = { offset = 0.0, divisor = 65535.0 } }] },
    { name = "proto", kind = "categorical", vocabulary = ["tcp", "udp", "icmp"] },
    { name = "label", kind = "label", benign = ["Benign"], classes = { malicious = ["Malicious"] } },
]
"#;

/// Suricata eve flow events: nested keys, the other event types filtered out.
const EVE_FLOW_SCHEMA: &str = r#"
format = "jsonl"
columns = [
    { name = "flow.bytes_toserver", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"] },
    { name = "flow.pkts_toserver", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 1e9 } }, "log1p"] },
    { name = "proto", kind = "categorical", vocabulary = ["TCP", "UDP"] },
    { name = "label", kind = "label", benign = ["Benign"], classes = { malicious = ["Malicious"] } },
]

[filter]
event_type = "flow"
"#;

/// Writes a small untrained classifier for `schema_toml` and its card; returns the model's path.
fn model_for_schema(dir: &Path, schema_toml: &str) -> PathBuf {
    let schema = Schema::from_toml_str(schema_toml).unwrap();
    let spec = ModelSpec::mlp(
        schema.num_features() as u32,
        vec![8],
        schema.num_classes() as u32,
    );
    let model = dir.join("soc.safetensors");
    ModelWeights::init(spec, 3)
        .unwrap()
        .save_safetensors(&model, Default::default())
        .unwrap();
    write_card(&model, 1, schema_toml);
    model
}

/// Runs `fedshield detect` on `events` with a model of `schema_toml`.
fn run_detect(dir: &Path, schema_toml: &str, events: &Path) -> Output {
    let model = model_for_schema(dir, schema_toml);
    fedshield(&[
        "detect",
        "--model",
        path_str(&model),
        "--events",
        path_str(events),
    ])
}

/// Returns the malformed-line reports of a detect run's stderr.
fn malformed_reports(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.contains("malformed event skipped"))
        .collect()
}

/// Runs `fedshield detect` on `events` with a model of `schema_toml`;
/// returns the verdicts and stderr, asserting success.
fn detect_events(dir: &Path, schema_toml: &str, events: &Path) -> (Vec<Value>, String) {
    let output = run_detect(dir, schema_toml, events);
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (parse_verdicts(&output.stdout), stderr)
}

/// Asserts one verdict per sample row and no malformed line.
fn assert_one_verdict_per_row(schema_toml: &str, events: &Path, num_rows: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (verdicts, stderr) = detect_events(dir.path(), schema_toml, events);
    assert_eq!(verdicts.len(), num_rows, "{stderr}");
    assert!(stderr.contains("num_malformed=0"), "{stderr}");
}

#[test]
fn detect_scores_every_row_of_the_iot23_zeek_captures() {
    // 8 header lines, then the rows; a CRLF file with a labelled #close.
    let honeypot = telemetry_sample("iot23-ctu-honeypot-4-1/conn.log.labeled");
    let dir = tempfile::tempdir().unwrap();
    let (verdicts, _) = detect_events(dir.path(), ZEEK_TSV_SCHEMA, &honeypot);
    assert_eq!(verdicts.len(), 452);
    assert_eq!(verdicts[0]["line"].as_u64(), Some(9));
    assert_eq!(verdicts[451]["line"].as_u64(), Some(460));
    assert_one_verdict_per_row(
        ZEEK_TSV_SCHEMA,
        &telemetry_sample("iot23-ctu-iot-malware-42-1/conn.log.labeled"),
        4_426,
    );
}

#[test]
fn detect_scores_every_row_of_a_ctu50_host_zeek_log() {
    assert_one_verdict_per_row(
        ZEEK_TSV_SCHEMA,
        &telemetry_sample("stratosphere-ctu50-feel-zeek/008-ctu-normal-40-day1/conn.log.labeled"),
        5_663,
    );
}

#[test]
fn detect_scores_every_zeek_json_line_and_every_eve_flow_event() {
    assert_one_verdict_per_row(
        ZEEK_JSON_SCHEMA,
        &telemetry_sample("zeek-json-nmap-portscan/conn.log"),
        4_504,
    );
    let dir = tempfile::tempdir().unwrap();
    let eve = dir.path().join("eve.json");
    let mut decompressed = Vec::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(telemetry_sample(
            "suricata-eve-slips-test6/test6-malicious.suricata.json.gz",
        ))
        .unwrap(),
    )
    .read_to_end(&mut decompressed)
    .unwrap();
    std::fs::write(&eve, decompressed).unwrap();
    assert_one_verdict_per_row(EVE_FLOW_SCHEMA, &eve, 3_512);
}

/// The header Zeek writes before a conn.log's rows (8 lines), with `fields` tab-separated.
fn zeek_header(fields: &str) -> String {
    let num_fields = fields.split('\t').count();
    let types = vec!["string"; num_fields].join("\t");
    format!(
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#open\t2026-12-02-09-00-00\n#fields\t{fields}\n#types\t{types}\n"
    )
}

#[test]
fn zeek_bad_input_is_reported_with_file_line_and_column_and_later_headers_apply() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("conn.log");
    let text = [
        zeek_header("ts\tduration\tresp_bytes\tproto\tlabel"),
        // 9: an event.
        "1.0\t2.5\t300\ttcp\tBenign\n".to_string(),
        // 10: truncated: three fields, the line ends after column 10.
        "2.0\t1.5\t40\n".to_string(),
        // 11: text where a number belongs.
        "3.0\tlong\t40\tudp\tBenign\n".to_string(),
        // 12-13: a new #fields header in the middle (another column order,
        // no label): the row after it is the event of line 9.
        "#fields\tproto\tduration\tresp_bytes\tts\n".to_string(),
        "tcp\t2.5\t300\t1.0\n".to_string(),
        // 14-15: #close ends the log; a row after it has no header.
        "#close\t2026-12-02-10-00-00\n".to_string(),
        "4.0\t1\t1\ttcp\tBenign\n".to_string(),
        // 16-24: the next log, its own header, one event.
        zeek_header("ts\tduration\tresp_bytes\tproto\tlabel"),
        "5.0\t2.5\t300\ttcp\tMalicious\n".to_string(),
    ]
    .concat();
    std::fs::write(&events, text).unwrap();
    let (verdicts, stderr) = detect_events(dir.path(), ZEEK_TSV_SCHEMA, &events);
    let lines: Vec<u64> = verdicts
        .iter()
        .map(|verdict| verdict["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [9, 13, 24], "{stderr}");
    assert_eq!(verdicts[0]["score"], verdicts[1]["score"]);
    assert_eq!(verdicts[0]["score"], verdicts[2]["score"]);
    let source = path_str(&events);
    assert_eq!(
        malformed_reports(&stderr),
        [
            format!("{source}:10:11: malformed event skipped: row has 3 fields, the header has 5"),
            format!(
                "{source}:11:5: malformed event skipped: column \"duration\": \"long\" is not a number"
            ),
            format!(
                "{source}:15:1: malformed event skipped: no #fields header applies to this line (a zeek log starts with its header, and #close ends it), so its columns are unknown"
            ),
        ],
        "{stderr}"
    );
}

#[test]
fn a_zeek_fields_header_without_a_schema_column_stops_detection_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("conn.log");
    let text = format!(
        "{}1.0\t2.5\t300\ttcp\tBenign\n#fields\tts\tproto\tlabel\n",
        zeek_header("ts\tduration\tresp_bytes\tproto\tlabel")
    );
    std::fs::write(&events, text).unwrap();
    let output = run_detect(dir.path(), ZEEK_TSV_SCHEMA, &events);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:10: the zeek #fields header does not fit the schema: the header has no column named \"duration\", \"resp_bytes\"",
            path_str(&events)
        )),
        "{stderr}"
    );
}

#[test]
fn invalid_json_and_a_wrong_type_are_reported_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("conn.jsonl");
    let text = concat!(
        "{\"duration\": 1.5, \"resp_bytes\": 10, \"id.resp_p\": 80, \"proto\": \"tcp\"}\n",
        "{\"duration\": 1.5, \"resp_bytes\": }\n",
        "{\"proto\": \"tcp\", \"id.resp_p\": 80, \"duration\": \"long\"}\n",
    );
    std::fs::write(&events, text).unwrap();
    let (verdicts, stderr) = detect_events(dir.path(), ZEEK_JSON_SCHEMA, &events);
    assert_eq!(verdicts.len(), 1, "{stderr}");
    let source = path_str(&events);
    assert_eq!(
        malformed_reports(&stderr),
        [
            format!("{source}:2:33: malformed event skipped: invalid json: expected value"),
            format!(
                "{source}:3:35: malformed event skipped: column \"duration\": \"long\" is not a number"
            ),
        ],
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_zeek_log_is_read_through_rotation_and_truncation_without_losing_a_line() {
    let work = tempfile::tempdir().unwrap();
    let model = model_for_schema(work.path(), ZEEK_TSV_SCHEMA);
    let events = work.path().join("conn.log");
    let rows = [
        "1.0\t2.5\t300\ttcp\tBenign\n",
        "2.0\t-\t-\tudp\tBenign\n",
        "3.0\t0.1\t40\ticmp\tMalicious\n",
    ];
    std::fs::write(
        &events,
        format!(
            "{}{}{}",
            zeek_header("ts\tduration\tresp_bytes\tproto\tlabel"),
            rows[0],
            rows[1]
        ),
    )
    .unwrap();
    let mut detector = FollowingDetector::start(&[
        "--model",
        path_str(&model),
        "--events",
        path_str(&events),
        "--follow",
    ]);
    detector
        .wait_for(
            "2 events",
            Duration::from_secs(30),
            || {},
            |verdicts, _| verdicts.len() >= 2,
        )
        .await;

    // Zeek rotates: the log is renamed, its writer flushes its last row and
    // #close into it, and a new conn.log starts with a fresh header, here
    // with another column order.
    let rotated = work.path().join("conn.2026-12-02-10-00-00.log");
    std::fs::rename(&events, &rotated).unwrap();
    append(
        &rotated,
        &format!("{}#close\t2026-12-02-10-00-00\n", rows[2]),
    );
    let reordered = |row: &str| {
        let fields: Vec<&str> = row.trim_end().split('\t').collect();
        format!(
            "{}\t{}\t{}\t{}\n",
            fields[3], fields[2], fields[1], fields[0]
        )
    };
    std::fs::write(
        &events,
        format!(
            "{}{}{}{}",
            zeek_header("proto\tresp_bytes\tduration\tts"),
            reordered(rows[0]),
            reordered(rows[1]),
            reordered(rows[2])
        ),
    )
    .unwrap();
    detector
        .wait_for(
            "3 events after rotation",
            Duration::from_secs(30),
            || {},
            |verdicts, _| verdicts.len() >= 6,
        )
        .await;

    // copytruncate: the same file emptied, then written from its start.
    truncate_in_place(&events).await;
    append(
        &events,
        &format!(
            "{}{}",
            zeek_header("ts\tduration\tresp_bytes\tproto\tlabel"),
            rows[2]
        ),
    );
    detector
        .wait_for(
            "1 event after truncation",
            Duration::from_secs(30),
            || {},
            |verdicts, _| verdicts.len() >= 7,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let verdicts = detector.verdicts();
    let lines: Vec<u64> = verdicts
        .iter()
        .map(|verdict| verdict["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [9, 10, 11, 9, 10, 11, 9]);
    let scores: Vec<&Value> = verdicts.iter().map(|verdict| &verdict["score"]).collect();
    assert_eq!(scores[..3], scores[3..6]);
    assert_eq!(scores[2], scores[6]);
    let stderr = detector.stderr();
    assert!(stderr.contains("replaced"), "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(!stderr.contains("malformed"), "{stderr}");
}

/// Waits up to 30 s for `child` to exit after a SIGTERM; returns its status.
fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "detect did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads octet-counted RFC 5424 frames (`LEN SP MSG`, RFC 6587 §3.4.1) from
/// every connection `listener` accepts until each closes; returns the
/// messages.
fn collect_syslog_frames(listener: std::net::TcpListener) -> Arc<Mutex<Vec<String>>> {
    let frames = Arc::new(Mutex::new(Vec::new()));
    let collected = frames.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let frames = collected.clone();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = BufReader::new(stream).read_to_end(&mut bytes);
                let mut rest = &bytes[..];
                while let Some(space) = rest.iter().position(|byte| *byte == b' ') {
                    let length: usize = std::str::from_utf8(&rest[..space])
                        .expect("an ascii frame length")
                        .parse()
                        .expect("an octet count");
                    let message = &rest[space + 1..space + 1 + length];
                    frames
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(message).into_owned());
                    rest = &rest[space + 1 + length..];
                }
                assert!(rest.is_empty(), "a partial syslog frame was left");
            });
        }
    });
    frames
}

/// Returns the address `detect` logged for its metrics listener.
fn metrics_address(stderr_lines: &std::sync::mpsc::Receiver<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = stderr_lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("detect logs its metrics address");
        if line.contains("serving metrics")
            && let Some(address) = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("address="))
        {
            return address.to_string();
        }
    }
}

/// Returns the body of `GET path` from a plain-HTTP server at `address`.
fn http_get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Returns the value of the sample `name` (labels included) in an
/// OpenMetrics exposition.
fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

#[test]
fn followed_alerts_reach_syslog_and_file_sinks_are_counted_in_metrics_and_sigterm_exits_0_after_flushing()
 {
    let dir = tempfile::tempdir().unwrap();
    let model = train_model(dir.path(), "classifier");
    let (header, rows) = flow_rows(300, 17);
    let events = dir.path().join("events.csv");
    std::fs::write(&events, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
    let syslog = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let syslog_address = syslog.local_addr().unwrap();
    let frames = collect_syslog_frames(syslog);
    let alert_file = dir.path().join("alerts.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedshield"))
        .env("RUST_LOG", "info")
        .args([
            "detect",
            "--model",
            path_str(&model),
            "--events",
            path_str(&events),
            "--follow",
            // Every event is an alert: the counts below are exact.
            "--threshold=-1000000",
            "--alerts-only",
            "--alert-format",
            "ecs",
            "--sink",
            &format!("syslog+tcp://{syslog_address}"),
            "--sink",
            &format!("file:{}", path_str(&alert_file)),
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (stderr_sender, stderr_lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let _ = stderr_sender.send(line);
        }
    });
    let address = metrics_address(&stderr_lines);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let num_lines = std::fs::read_to_string(&alert_file)
            .map(|text| text.lines().count())
            .unwrap_or(0);
        if num_lines == rows.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{num_lines} of {} alerts in the file",
            rows.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let exposition = http_get(&address, "/metrics");
    assert!(exposition.ends_with("# EOF\n"), "{exposition}");
    assert_eq!(
        sample(&exposition, "fedshield_detector_events_total"),
        Some(rows.len() as f64)
    );
    assert_eq!(
        sample(
            &exposition,
            "fedshield_detector_alerts_total{class=\"attack\"}"
        ),
        Some(rows.len() as f64)
    );
    assert_eq!(
        sample(&exposition, "fedshield_detector_model_version"),
        Some(1.0)
    );
    assert!(http_get(&address, "/healthz").ends_with("ok"));

    common::send_sigterm(&child);
    let status = wait_for_exit(&mut child);
    assert_eq!(
        status.code(),
        Some(0),
        "detect exits 0 on SIGTERM: {status}"
    );
    // The syslog connection closed when detect exited: every alert is in.
    let deadline = Instant::now() + Duration::from_secs(10);
    while frames.lock().unwrap().len() < rows.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let frames = frames.lock().unwrap().clone();
    assert_eq!(frames.len(), rows.len(), "every alert reached syslog");
    let file_alerts: Vec<Value> = std::fs::read_to_string(&alert_file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let mut file_lines: Vec<u64> = file_alerts
        .iter()
        .map(|alert| alert["fedshield"]["line"].as_u64().expect("fedshield.line"))
        .collect();
    file_lines.sort_unstable();
    assert_eq!(file_lines, (2..=rows.len() as u64 + 1).collect::<Vec<_>>());
    for (frame, alert) in frames.iter().zip(&file_alerts) {
        assert!(
            frame.starts_with("<132>1 "),
            "warning severity, local0: {frame}"
        );
        assert_eq!(alert["event"]["kind"], "alert");
    }
}
