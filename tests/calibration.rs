//! Calibrated alert thresholds end to end, with the real binary:
//! `fedshield train` calibrates its card's thresholds on the benign rows of
//! its test split, and `fedshield detect --alert-fpr 0.01` on held-out rows
//! of the same capture flags about 1% of their benign rows.
//!
//! The capture is a real labelled Zeek conn.log (Stratosphere CTU-50, host
//! 011, 4,771 Benign / 3,951 Malicious / 326 Background rows) from
//! `../shared/data/telemetry-samples`. Without it those tests print why and
//! skip, unless `FEDSHIELD_REQUIRE_SAMPLES=1` makes its absence a failure.
//! The flag checks, the release of each version with its own card's
//! threshold, and `detect --coordinator --alert-fpr` against a real
//! coordinator (whose version 0 is calibrated on its evaluation set) run on
//! synthetic flows and need no sample.
//!
//! # Tolerance
//! The threshold is an order statistic of `n_cal` benign calibration scores,
//! and the realized rate is measured on `n_held` other benign rows. Both are
//! binomial samples of the true rate near `f = 0.01`, so their difference has
//! a standard error of about `sqrt(f(1−f)(1/n_cal + 1/n_held))`; the test
//! allows three of them: `|realized − 0.01| ≤ 3·sqrt(0.01·0.99·(1/n_cal + 1/n_held))`.
//! (Tied scores make the realized rate lower, never higher, on the
//! calibration data; see `fedshield_core::model::calibration`.)

mod common;
mod config_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

/// The CTU-50 host 011 capture, a labelled Zeek TSV conn.log.
const CTU50_HOST_011: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/telemetry-samples/stratosphere-ctu50-feel-zeek/011-ctu-normal-43-day1/conn.log.labeled"
);

/// The shipped Zeek conn.log schema (label column `label`; Background skipped).
const ZEEK_SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/zeek-conn.toml");

/// The false-positive rate the end-to-end runs ask for.
const ALERT_FPR: f64 = 0.01;

/// Returns the capture, or `None` (with the reason printed) when the samples
/// are absent and `FEDSHIELD_REQUIRE_SAMPLES` is not `1`.
fn capture() -> Option<PathBuf> {
    let path = PathBuf::from(CTU50_HOST_011);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("FEDSHIELD_REQUIRE_SAMPLES").as_deref() != Ok("1"),
        "FEDSHIELD_REQUIRE_SAMPLES=1 and the telemetry sample {} is missing",
        path.display()
    );
    eprintln!(
        "skipped: the telemetry sample {} is missing (../shared/data is not checked out)",
        path.display()
    );
    None
}

fn fedshield(dir: &Path, args: &[&str]) -> Output {
    config_support::fedshield(dir, args, &[])
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Returns splitmix64 of `value`: a fixed, well-mixed hash of a row number.
fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A capture split in two Zeek logs with the same header.
struct SplitCapture {
    /// Half the rows (Background included: `train` skips it).
    train: PathBuf,
    /// The other half's Benign and Malicious rows.
    held_out: PathBuf,
    /// Whether each row of `held_out` is Benign, by its 1-based line number.
    held_out_benign: HashMap<u64, bool>,
}

/// Splits `capture` by a hash of each row's number: odd hashes train,
/// even ones are held out.
fn split_capture(capture: &Path, dir: &Path) -> SplitCapture {
    let text = std::fs::read_to_string(capture).unwrap();
    let header: Vec<&str> = text
        .lines()
        .take_while(|line| line.starts_with('#'))
        .collect();
    let fields_line = header
        .iter()
        .find_map(|line| line.strip_prefix("#fields\t"))
        .expect("a #fields header");
    let label_column = fields_line
        .split('\t')
        .position(|field| field == "label")
        .expect("a label column");
    let mut train = header.join("\n") + "\n";
    let mut held_out = train.clone();
    let mut held_out_benign = HashMap::new();
    let mut held_out_line = header.len() as u64;
    for (row_number, row) in text.lines().skip(header.len()).enumerate() {
        if splitmix64(row_number as u64) % 2 == 1 {
            train.push_str(row);
            train.push('\n');
            continue;
        }
        let is_benign = match row.split('\t').nth(label_column) {
            Some("Benign") => true,
            Some("Malicious") => false,
            _ => continue,
        };
        held_out.push_str(row);
        held_out.push('\n');
        held_out_line += 1;
        held_out_benign.insert(held_out_line, is_benign);
    }
    let split = SplitCapture {
        train: dir.join("train.log"),
        held_out: dir.join("held-out.log"),
        held_out_benign,
    };
    std::fs::write(&split.train, train).unwrap();
    std::fs::write(&split.held_out, held_out).unwrap();
    split
}

/// Trains a model of `kind` on `data` with `fedshield train` (half of it
/// held out as the test split that calibrates); returns the model's path.
fn train(dir: &Path, kind: &str, hidden: &str, data: &Path, schema: &Path) -> PathBuf {
    let model = dir.join(format!("{kind}.safetensors"));
    let output = fedshield(
        dir,
        &[
            "train",
            "--data",
            path_str(data),
            "--schema",
            path_str(schema),
            "--model-kind",
            kind,
            "--hidden",
            hidden,
            "--epochs",
            "4",
            "--test-fraction",
            "0.5",
            "--out",
            path_str(&model),
            "--json",
        ],
    );
    assert_success(&output, "fedshield train");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("calibrated alert thresholds on"),
        "{stderr}"
    );
    model
}

/// Returns the model card `fedshield train` wrote next to `model`.
fn card_of(model: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(model.with_extension("json")).unwrap()).unwrap()
}

/// Returns the card's calibrated entry for `fpr`.
fn calibrated(card: &Value, fpr: f64) -> &Value {
    card["calibration"]["thresholds"]
        .as_array()
        .expect("the card has a calibration")
        .iter()
        .find(|entry| entry["target_fpr"].as_f64() == Some(fpr))
        .unwrap_or_else(|| panic!("no threshold for {fpr} in {}", card["calibration"]))
}

fn parse_verdicts(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each output line is one JSON object"))
        .collect()
}

/// Trains `kind` on one half of the capture, runs `detect --alert-fpr 0.01`
/// on the other, checks the verdicts follow the card's calibrated threshold
/// and that the realized false-positive rate on held-out benign rows is
/// within the tolerance of the module documentation; prints the numbers.
fn realized_rate_is_near_the_target(kind: &str, hidden: &str) {
    let Some(capture) = capture() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let split = split_capture(&capture, dir.path());
    let model = train(
        dir.path(),
        kind,
        hidden,
        &split.train,
        Path::new(ZEEK_SCHEMA),
    );
    let card = card_of(&model);
    let calibration = &card["calibration"];
    assert_eq!(calibration["source"], "train test split");
    let num_calibration = calibration["num_benign"].as_u64().unwrap();
    let entry = calibrated(&card, ALERT_FPR);
    let threshold = entry["threshold"].as_f64().unwrap();
    let calibration_realized = entry["realized_fpr"].as_f64().unwrap();
    assert!(calibration_realized <= ALERT_FPR, "{entry}");
    let output = fedshield(
        dir.path(),
        &[
            "detect",
            "--model",
            path_str(&model),
            "--events",
            path_str(&split.held_out),
            "--format",
            "zeek",
            "--alert-fpr",
            "1e-2",
        ],
    );
    assert_success(&output, "fedshield detect --alert-fpr");
    let verdicts = parse_verdicts(&output.stdout);
    assert_eq!(verdicts.len(), split.held_out_benign.len());
    let (mut num_benign, mut num_false_alerts) = (0u64, 0u64);
    for verdict in &verdicts {
        let line = verdict["line"].as_u64().unwrap();
        let is_benign = split.held_out_benign[&line];
        // Scores are float32, printed shortest; the threshold is a float32 too.
        let score = f64::from(verdict["score"].as_f64().unwrap() as f32);
        let is_alert = verdict["verdict"] == "attack";
        assert_eq!(
            is_alert,
            score >= threshold,
            "threshold {threshold}: {verdict}"
        );
        if is_benign {
            num_benign += 1;
            num_false_alerts += u64::from(is_alert);
        }
    }
    let realized = num_false_alerts as f64 / num_benign as f64;
    let tolerance = 3.0
        * (ALERT_FPR
            * (1.0 - ALERT_FPR)
            * (1.0 / num_calibration as f64 + 1.0 / num_benign as f64))
            .sqrt();
    eprintln!(
        "{kind}: calibrated on {num_calibration} benign rows (realized there {calibration_realized:.4}, threshold {threshold}), \
         held-out benign rows {num_benign}, false alerts {num_false_alerts}, realized FPR {realized:.4}, tolerance ±{tolerance:.4}"
    );
    assert!(
        (realized - ALERT_FPR).abs() <= tolerance,
        "{kind}: realized FPR {realized} on {num_benign} held-out benign rows, target {ALERT_FPR} ± {tolerance}"
    );
}

#[test]
fn a_classifier_alerts_on_about_one_percent_of_held_out_benign_zeek_rows_with_alert_fpr() {
    realized_rate_is_near_the_target("classifier", "32,16");
}

#[test]
fn an_autoencoder_alerts_on_about_one_percent_of_held_out_benign_zeek_rows_with_alert_fpr() {
    realized_rate_is_near_the_target("autoencoder", "24,8");
}

/// Trains a small classifier on synthetic flows; returns the model's path.
fn synthetic_classifier(dir: &Path) -> PathBuf {
    let data = dir.join("flows.csv");
    assert_success(
        &fedshield(
            dir,
            &[
                "synth",
                "--out",
                path_str(&data),
                "--records",
                "2000",
                "--seed",
                "3",
            ],
        ),
        "fedshield synth",
    );
    let model = dir.join("classifier.safetensors");
    assert_success(
        &fedshield(
            dir,
            &[
                "train",
                "--data",
                path_str(&data),
                "--schema",
                path_str(&dir.join("flows.schema.toml")),
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--out",
                path_str(&model),
                "--json",
            ],
        ),
        "fedshield train",
    );
    model
}

#[test]
fn alert_fpr_with_a_card_without_calibration_fails_and_asks_for_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let model = synthetic_classifier(dir.path());
    let events = dir.path().join("flows.csv");
    // The card train wrote is calibrated: --alert-fpr scores with it.
    let card = card_of(&model);
    let num_benign = card["calibration"]["num_benign"].as_u64().unwrap();
    assert!(num_benign > 100, "{}", card["calibration"]);
    let calibrated_run = fedshield(
        dir.path(),
        &[
            "detect",
            "--model",
            path_str(&model),
            "--events",
            path_str(&events),
            "--alert-fpr",
            "0.05",
        ],
    );
    assert_success(&calibrated_run, "detect with a calibrated card");
    let threshold = calibrated(&card, 0.05)["threshold"].as_f64().unwrap();
    for verdict in parse_verdicts(&calibrated_run.stdout) {
        let score = f64::from(verdict["score"].as_f64().unwrap() as f32);
        assert_eq!(
            verdict["verdict"] == "attack",
            score >= threshold,
            "{verdict}"
        );
    }
    // The same card as written before calibration existed: no such key.
    let mut old_card = card.clone();
    old_card.as_object_mut().unwrap().remove("calibration");
    std::fs::write(
        model.with_extension("json"),
        serde_json::to_vec_pretty(&old_card).unwrap(),
    )
    .unwrap();
    let refused = fedshield(
        dir.path(),
        &[
            "detect",
            "--model",
            path_str(&model),
            "--events",
            path_str(&events),
            "--alert-fpr",
            "0.01",
        ],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "--alert-fpr 0.01: the model card of version 0 has no alert threshold calibrated for it"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("pass --threshold instead"), "{stderr}");
    // The old card still scores with the default threshold.
    let default_run = fedshield(
        dir.path(),
        &[
            "detect",
            "--model",
            path_str(&model),
            "--events",
            path_str(&events),
        ],
    );
    assert_success(&default_run, "detect with an old card");
}

#[test]
fn an_alert_fpr_that_is_no_standard_target_is_refused_with_the_targets() {
    let dir = tempfile::tempdir().unwrap();
    // Flags are checked before any file is read: an empty model file will do.
    let model = dir.path().join("model.safetensors");
    std::fs::write(&model, b"").unwrap();
    let output = fedshield(
        dir.path(),
        &["detect", "--model", path_str(&model), "--alert-fpr", "0.02"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "--alert-fpr 0.02 is not a calibrated false-positive rate: model cards calibrate 0.001, 0.01, 0.05"
        ),
        "{stderr}"
    );
    let both = fedshield(
        dir.path(),
        &[
            "detect",
            "--model",
            path_str(&model),
            "--alert-fpr",
            "0.01",
            "--threshold",
            "1.5",
        ],
    );
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(!both.status.success(), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn each_version_scores_with_the_threshold_its_own_card_calibrated() {
    use fedshield_core::model::calibration::ThresholdCalibration;
    use fedshield_core::model::weights::ModelWeights;
    use fedshield_core::telemetry::synthetic_flows_schema;
    use fedshield_core::{ModelSpec, ModelVersion};
    use fedshield_detector::DetectorError;
    use fedshield_detector::release::{CardFacts, ReleaseRules};

    let schema = synthetic_flows_schema();
    let spec = ModelSpec::mlp(schema.num_features() as u32, vec![4], 2);
    let weights = ModelWeights::init(spec, 1).unwrap();
    let rules = ReleaseRules {
        schema,
        threshold_flag: None,
        alert_fpr: Some(0.01),
    };
    // Two versions' cards, calibrated on different benign scores.
    let card = |scale: f32, sha256: &str| CardFacts {
        sha256: sha256.to_string(),
        calibration: ThresholdCalibration::from_benign_scores(
            "test",
            &(0..1000).map(|i| i as f32 * scale).collect::<Vec<_>>(),
        )
        .unwrap(),
    };
    let first = rules
        .release(ModelVersion(1), weights.clone(), None, card(1.0, "aa"))
        .unwrap();
    let second = rules
        .release(ModelVersion(2), weights.clone(), None, card(2.0, "bb"))
        .unwrap();
    // 1% of 1,000 allows 10 alerts: just above the 11th highest score.
    assert_eq!(first.threshold, f64::from(989.0f32.next_up()));
    assert_eq!(second.threshold, f64::from(1978.0f32.next_up()));
    assert_eq!((first.alert_fpr, first.sha256.as_str()), (Some(0.01), "aa"));
    assert_eq!(second.sha256, "bb");
    assert!(second.calibration.is_some());
    // A version whose card has no calibration is refused, naming the way out.
    let error = rules
        .release(ModelVersion(3), weights.clone(), None, CardFacts::default())
        .unwrap_err();
    assert!(
        matches!(error, DetectorError::NoCalibration { version: ModelVersion(3), alert_fpr } if alert_fpr == 0.01),
        "{error}"
    );
    // Without --alert-fpr the classifier keeps its default threshold.
    let default_rules = ReleaseRules {
        alert_fpr: None,
        ..rules
    };
    let default = default_rules
        .release(ModelVersion(1), weights, None, card(1.0, "aa"))
        .unwrap();
    assert_eq!((default.threshold, default.alert_fpr), (0.0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_from_a_coordinator_scores_with_the_published_cards_calibrated_threshold() {
    use fedshield_coordinator::CoordinatorConfig;
    use fedshield_core::telemetry::{SYNTHETIC_FLOWS_SCHEMA_TOML, held_out_dataset};
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir().unwrap();
    let mut config =
        CoordinatorConfig::for_test(dir.path().join("coordinator"), common::test_spec());
    config.feature_schema_toml = Some(SYNTHETIC_FLOWS_SCHEMA_TOML.to_string());
    config.evaluation = Some(std::sync::Arc::new(held_out_dataset(2000, 5)));
    let shutdown = CancellationToken::new();
    let coordinator = common::start_coordinator(config, shutdown.clone()).await;
    // Version 0's card is calibrated on the evaluation set's benign rows.
    let card = coordinator.engine().current_model().card.clone();
    let calibration = card.calibration.clone().expect("version 0 is calibrated");
    assert_eq!(calibration.source, "coordinator evaluation set");
    let threshold = calibration.threshold_for(0.05).unwrap().threshold;
    let url = format!("http://{}", coordinator.local_addr());
    let work = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        let events = work.join("events.csv");
        assert_success(
            &fedshield(
                &work,
                &[
                    "synth",
                    "--out",
                    path_str(&events),
                    "--records",
                    "400",
                    "--seed",
                    "4",
                ],
            ),
            "fedshield synth",
        );
        fedshield(
            &work,
            &[
                "detect",
                "--coordinator",
                &url,
                "--insecure",
                "--cache-dir",
                path_str(&work.join("cache")),
                "--events",
                path_str(&events),
                "--alert-fpr",
                "0.05",
            ],
        )
    })
    .await
    .unwrap();
    assert_success(&output, "fedshield detect --coordinator --alert-fpr");
    let verdicts = parse_verdicts(&output.stdout);
    assert_eq!(verdicts.len(), 400);
    let num_alerts = verdicts
        .iter()
        .filter(|verdict| verdict["verdict"] == "attack")
        .count();
    for verdict in &verdicts {
        let score = f64::from(verdict["score"].as_f64().unwrap() as f32);
        assert_eq!(
            verdict["verdict"] == "attack",
            score >= threshold,
            "{verdict}"
        );
    }
    // The untrained version 0 flags some events at its calibrated threshold,
    // not all and not none as log-odds 0 might.
    assert!(num_alerts > 0 && num_alerts < 400, "{num_alerts} alerts");
    shutdown.cancel();
    coordinator.wait().await.unwrap();
}

/// Returns the identity of each row of a Zeek log by its 1-based line
/// number: `uid`, `id.orig_h`, `id.orig_p`, `id.resp_h`, `id.resp_p`, `proto`.
fn zeek_identities(log: &Path) -> HashMap<u64, Vec<String>> {
    let text = std::fs::read_to_string(log).unwrap();
    let fields: Vec<&str> = text
        .lines()
        .find_map(|line| line.strip_prefix("#fields\t"))
        .expect("a #fields header")
        .split('\t')
        .collect();
    let wanted = [
        "uid",
        "id.orig_h",
        "id.orig_p",
        "id.resp_h",
        "id.resp_p",
        "proto",
    ];
    let positions: Vec<usize> = wanted
        .iter()
        .map(|name| fields.iter().position(|field| field == name).unwrap())
        .collect();
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.starts_with('#'))
        .map(|(index, line)| {
            let values: Vec<&str> = line.split('\t').collect();
            let identity = positions
                .iter()
                .map(|&position| values[position].to_string())
                .collect();
            (index as u64 + 1, identity)
        })
        .collect()
}

/// Runs `detect --alerts-only --alert-fpr 0.01 --alert-format ecs` with a
/// file sink beside stdout; returns the alerts, checking both sinks hold
/// the same ones.
fn ecs_alerts(dir: &Path, model: &Path, events: &Path, run: u32) -> Vec<Value> {
    let alert_file = dir.join(format!("alerts-{run}.jsonl"));
    let output = fedshield(
        dir,
        &[
            "detect",
            "--model",
            path_str(model),
            "--events",
            path_str(events),
            "--format",
            "zeek",
            "--alert-fpr",
            "0.01",
            "--alerts-only",
            "--alert-format",
            "ecs",
            "--sink",
            "stdout",
            "--sink",
            &format!("file:{}", path_str(&alert_file)),
        ],
    );
    assert_success(&output, "fedshield detect --alerts-only --alert-format ecs");
    let from_file = std::fs::read(&alert_file).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&from_file),
        String::from_utf8_lossy(&output.stdout),
        "the file sink holds what stdout got"
    );
    parse_verdicts(&output.stdout)
}

#[test]
fn alerts_only_ecs_alerts_carry_their_flows_identity_and_a_stable_top_explanation() {
    let Some(capture) = capture() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let split = split_capture(&capture, dir.path());
    let model = train(
        dir.path(),
        "classifier",
        "32,16",
        &split.train,
        Path::new(ZEEK_SCHEMA),
    );
    // Every verdict, to know which lines are over the threshold.
    let every = fedshield(
        dir.path(),
        &[
            "detect",
            "--model",
            path_str(&model),
            "--events",
            path_str(&split.held_out),
            "--format",
            "zeek",
            "--alert-fpr",
            "0.01",
            "--explain-top-k",
            "0",
        ],
    );
    assert_success(&every, "fedshield detect");
    let mut attack_lines: Vec<u64> = parse_verdicts(&every.stdout)
        .iter()
        .filter(|verdict| verdict["verdict"] == "attack")
        .map(|verdict| verdict["line"].as_u64().unwrap())
        .collect();
    attack_lines.sort_unstable();
    assert!(attack_lines.len() > 100, "the capture's attacks alert");

    let identities = zeek_identities(&split.held_out);
    let first = ecs_alerts(dir.path(), &model, &split.held_out, 1);
    let second = ecs_alerts(dir.path(), &model, &split.held_out, 2);
    let mut alert_lines: Vec<u64> = first
        .iter()
        .map(|alert| alert["fedshield"]["line"].as_u64().unwrap())
        .collect();
    alert_lines.sort_unstable();
    assert_eq!(alert_lines, attack_lines, "alerts are exactly the attacks");
    let feature_columns: Vec<String> = fedshield_core::schema::Schema::load(Path::new(ZEEK_SCHEMA))
        .unwrap()
        .feature_columns()
        .into_iter()
        .map(|(name, _)| name.to_string())
        .collect();
    for (alert, again) in first.iter().zip(&second) {
        let line = alert["fedshield"]["line"].as_u64().unwrap();
        let identity = &identities[&line];
        assert_eq!(alert["event"]["kind"], "alert");
        assert_eq!(
            alert["event"]["id"],
            identity[0].as_str(),
            "uid of line {line}"
        );
        assert_eq!(alert["source"]["ip"], identity[1].as_str());
        assert_eq!(alert["source"]["port"], identity[2].parse::<u64>().unwrap());
        assert_eq!(alert["destination"]["ip"], identity[3].as_str());
        assert_eq!(
            alert["destination"]["port"],
            identity[4].parse::<u64>().unwrap()
        );
        assert_eq!(alert["network"]["transport"], identity[5].as_str());
        let explanation = alert["fedshield"]["explanation"]
            .as_array()
            .unwrap_or_else(|| panic!("an attack is explained: {alert}"));
        assert!(!explanation.is_empty() && explanation.len() <= 5);
        let weights: Vec<f64> = explanation
            .iter()
            .map(|item| item["weight"].as_f64().unwrap())
            .collect();
        assert!(
            weights.windows(2).all(|pair| pair[0] >= pair[1]),
            "{weights:?}"
        );
        assert!(weights[0] > 0.0);
        for item in explanation {
            let column = item["column"].as_str().unwrap();
            assert!(
                feature_columns.iter().any(|name| name == column),
                "{column}"
            );
        }
        assert_eq!(
            again["fedshield"]["line"], alert["fedshield"]["line"],
            "both runs emit the alerts in the same order"
        );
        assert_eq!(
            again["fedshield"]["explanation"][0]["column"], explanation[0]["column"],
            "the top explanation column of line {line} is stable across runs"
        );
    }
}
