//! The one-shot commands: `fedshield synth`, `fedshield train` (the
//! centralized baseline) and `fedshield evaluate`.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fedshield_core::card::ModelCard;
use fedshield_core::ingest::alert_labels::{AlertIndex, load_dataset_with_alert_labels};
use fedshield_core::ingest::{IngestOptions, load_dataset};
use fedshield_core::model::calibration::{
    STANDARD_ALERT_FPRS, ThresholdCalibration, calibrate_model,
};
use fedshield_core::model::data::Dataset;
use fedshield_core::model::file::{
    SCHEMA_METADATA_KEY, THRESHOLD_METADATA_KEY, load_model_with_metadata,
};
use fedshield_core::model::inference::score_rows;
use fedshield_core::model::metrics::{
    BinaryMetrics, CategoryMetrics, REFERENCE_FPR, per_category, threshold_at_fpr,
};
use fedshield_core::model::training::train_local_observed;
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::schema::Schema;
use fedshield_core::telemetry::{
    FlowGenerator, OrgProfile, SYNTHETIC_FLOWS_SCHEMA_TOML, write_csv, write_jsonl,
};
use fedshield_core::{ModelSpec, TrainingPlan};
use serde::Serialize;
use tracing::{info, warn};

use crate::cli::{DataArgs, EvaluateArgs, ModelArgs, ModelKind, SynthArgs, SynthFormat, TrainArgs};

/// Runs `fedshield synth`.
pub fn synth(args: SynthArgs) -> Result<()> {
    if args.records == 0 {
        bail!("--records must be at least 1");
    }
    let profile = if args.balanced {
        OrgProfile::balanced()
    } else {
        OrgProfile::for_org(args.org)
    };
    let mut generator = FlowGenerator::new(profile, args.seed);
    let flows = (0..args.records).map(|_| generator.next_flow());
    if let Some(parent) = args
        .out
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    let file = File::create(&args.out)
        .with_context(|| format!("failed to create {}", args.out.display()))?;
    let writer = BufWriter::new(file);
    match args.format {
        SynthFormat::Csv => write_csv(writer, flows),
        SynthFormat::Jsonl => write_jsonl(writer, flows),
    }
    .with_context(|| format!("failed to write {}", args.out.display()))?;
    let schema_path = args
        .schema_out
        .clone()
        .unwrap_or_else(|| schema_path_next_to(&args.out));
    std::fs::write(&schema_path, SYNTHETIC_FLOWS_SCHEMA_TOML)
        .with_context(|| format!("failed to write {}", schema_path.display()))?;
    eprintln!(
        "wrote {} flow records to {} and their schema to {}",
        args.records,
        args.out.display(),
        schema_path.display()
    );
    Ok(())
}

fn schema_path_next_to(data: &Path) -> PathBuf {
    let stem = data
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    data.with_file_name(format!("{stem}.schema.toml"))
}

/// Loads a labelled dataset and logs once how many rows were loaded and
/// skipped, by reason, and at which lines the first skipped rows are. What
/// was wrong with each row quotes its values, so it stays out of the log.
///
/// With `labels_from` (an eve file) the rows are labelled by the Suricata
/// alerts that share their Community ID, as the schema's `[alert_labels]`
/// table says, and the join's counts are printed.
///
/// # Errors
/// When the file cannot be loaded, or `labels_from` is given without an
/// `[alert_labels]` table in the schema, or such a table without it.
pub fn load_labelled(
    path: &Path,
    schema: &Schema,
    max_rows: Option<usize>,
    labels_from: Option<&Path>,
) -> Result<Dataset> {
    let options = IngestOptions {
        max_rows,
        ..IngestOptions::default()
    };
    let (dataset, report) = match (labels_from, schema.has_alert_labels()) {
        (Some(eve_path), true) => {
            let alerts =
                AlertIndex::read(eve_path, schema, options.max_line_bytes).with_context(|| {
                    format!(
                        "failed to read the alerts of --labels-from {}",
                        eve_path.display()
                    )
                })?;
            let (dataset, report, join_report) =
                load_dataset_with_alert_labels(path, schema, &options, &alerts)
                    .with_context(|| format!("failed to load {}", path.display()))?;
            info!(
                num_alerts = join_report.num_alerts,
                num_flows_matched = join_report.num_flows_matched,
                "alerts joined by community id"
            );
            eprintln!("{join_report}");
            (dataset, report)
        }
        (Some(eve_path), false) => bail!(
            "--labels-from {}: the schema has no [alert_labels] table, so alerts cannot label {}",
            eve_path.display(),
            path.display()
        ),
        (None, true) => bail!(
            "the schema labels {} from Suricata alerts ([alert_labels]): pass the eve file with --labels-from",
            path.display()
        ),
        (None, false) => load_dataset(path, schema, &options)
            .with_context(|| format!("failed to load {}", path.display()))?,
    };
    info!(
        num_rows = report.num_rows,
        num_skipped = report.skipped.total(),
        "{}",
        report.summary()
    );
    if !report.skipped_rows.is_empty() {
        let lines: Vec<String> = report
            .skipped_rows
            .iter()
            .map(|row| format!("{} ({})", row.line, row.reason.description()))
            .collect();
        warn!(
            "{}: the first skipped rows are at lines {}",
            report.source,
            lines.join(", ")
        );
    }
    Ok(dataset)
}

/// Returns the model spec the flags describe for data with this schema.
pub fn spec_for(args: &ModelArgs, schema: &Schema) -> ModelSpec {
    let input_dim = schema.num_features() as u32;
    match args.model_kind {
        ModelKind::Classifier => ModelSpec::mlp(input_dim, args.hidden.clone(), 2),
        ModelKind::Multiclass => {
            ModelSpec::mlp(input_dim, args.hidden.clone(), schema.num_classes() as u32)
        }
        ModelKind::Autoencoder => ModelSpec::autoencoder(input_dim, args.hidden.clone()),
    }
}

/// Refuses a model that learns from labels (a classifier) on data that
/// `schema` (read from `schema_path`) leaves unlabelled.
///
/// # Errors
/// Naming the schema file, when `spec` is a classifier and the schema has no labels.
pub fn require_labels_for(spec: &ModelSpec, schema: &Schema, schema_path: &Path) -> Result<()> {
    if spec.is_autoencoder() {
        return Ok(());
    }
    match schema.classifier_refusal() {
        Some(reason) => bail!(
            "cannot train a {} on {}: {reason}",
            spec.kind,
            schema_path.display()
        ),
        None => Ok(()),
    }
}

/// Everything `fedshield evaluate` reports.
#[derive(Debug, Serialize)]
pub struct EvaluationReport {
    pub model: String,
    pub data: String,
    pub model_kind: String,
    pub threshold_source: String,
    #[serde(flatten)]
    pub metrics: BinaryMetrics,
    /// Per raw label value: flag rate at the threshold and at 1% FPR.
    pub per_category: Vec<CategoryMetrics>,
}

/// Scores `data` with `weights` and computes the full report.
pub fn evaluation_report(
    weights: &ModelWeights,
    data: &Dataset,
    threshold: Option<f64>,
    stored_threshold: Option<f64>,
    target_fpr: f64,
) -> Result<(BinaryMetrics, Vec<CategoryMetrics>, String)> {
    let scores = score_rows(weights, data.features())?;
    let (threshold, source) = match (threshold, stored_threshold, weights.spec.is_autoencoder()) {
        (Some(threshold), _, _) => (threshold, "--threshold".to_string()),
        (None, Some(stored), true) => (stored, "calibrated at training time".to_string()),
        (None, None, true) => {
            let calibrated = threshold_at_fpr(&scores, data.labels(), target_fpr)
                .context("the data has no benign rows to calibrate the autoencoder threshold on; pass --threshold")?;
            (
                f64::from(calibrated).next_up(),
                format!(
                    "calibrated to {:.1}% FPR on this data's benign rows",
                    target_fpr * 100.0
                ),
            )
        }
        (None, _, false) => (
            fedshield_core::model::inference::CLASSIFIER_THRESHOLD,
            "classifier default: log-odds 0, P(attack) = 0.5".to_string(),
        ),
    };
    let metrics = BinaryMetrics::compute_at(&scores, data.labels(), threshold);
    let categories: Vec<&str> = (0..data.len()).map(|index| data.raw_label(index)).collect();
    let categories = per_category(&scores, data.labels(), &categories, threshold);
    Ok((metrics, categories, source))
}

/// Prints a report as one JSON object or as a table.
fn emit_report(report: &EvaluationReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print_report(report);
    }
    Ok(())
}

/// Prints a report as a table.
pub fn print_report(report: &EvaluationReport) {
    let metrics = &report.metrics;
    println!(
        "model {} ({}) on {}",
        report.model, report.model_kind, report.data
    );
    println!(
        "  rows {} (attacks {}), threshold {:.6} ({})",
        metrics.num_examples, metrics.num_attacks, metrics.threshold, report.threshold_source
    );
    println!(
        "  accuracy {:.4}  precision {:.4}  recall {:.4}  F1 {:.4}  FPR {:.4}",
        metrics.accuracy,
        metrics.precision,
        metrics.recall,
        metrics.f1,
        metrics.false_positive_rate
    );
    println!(
        "  ROC-AUC {:.4}  PR-AUC {:.4}  detection rate at {:.0}% FPR {:.4}",
        metrics.roc_auc,
        metrics.pr_auc,
        REFERENCE_FPR * 100.0,
        metrics.detection_rate_at_1pct_fpr
    );
    println!(
        "  {:<24} {:>8} {:>10} {:>12}",
        "label", "rows", "flagged", "flagged@1%"
    );
    for category in &report.per_category {
        println!(
            "  {:<24} {:>8} {:>10.4} {:>12.4}",
            category.category,
            category.num_examples,
            category.flagged_rate,
            category.flagged_rate_at_1pct_fpr
        );
    }
}

/// Runs `fedshield evaluate`.
pub fn evaluate(args: EvaluateArgs) -> Result<()> {
    if !(args.target_fpr > 0.0 && args.target_fpr < 1.0) {
        bail!("--target-fpr must be in (0, 1), got {}", args.target_fpr);
    }
    let (weights, metadata) = load_model_with_metadata(&args.model)?;
    let schema = load_schema(&args.data)?;
    if schema.num_features() != weights.spec.input_dim as usize {
        bail!(
            "schema {} produces {} features, model {} expects {}: the model was trained with another schema",
            args.data.schema.display(),
            schema.num_features(),
            args.model.display(),
            weights.spec.input_dim
        );
    }
    if !schema.is_labelled() {
        bail!(
            "schema {} has no label column: evaluation needs labelled data to compute its metrics",
            args.data.schema.display()
        );
    }
    let data = load_labelled(
        &args.data.data,
        &schema,
        args.data.max_rows,
        args.data.labels_from.as_deref(),
    )?;
    let stored_threshold = metadata
        .get(THRESHOLD_METADATA_KEY)
        .and_then(|value| value.parse::<f64>().ok());
    let (metrics, per_category, threshold_source) = evaluation_report(
        &weights,
        &data,
        args.threshold,
        stored_threshold,
        args.target_fpr,
    )?;
    let report = EvaluationReport {
        model: args.model.display().to_string(),
        data: args.data.data.display().to_string(),
        model_kind: weights.spec.kind.clone(),
        threshold_source,
        metrics,
        per_category,
    };
    emit_report(&report, args.json)
}

/// Returns the calibrated thresholds as one line ("FPR 0.01: threshold 1.25
/// (realized 0.0098)", …), or says that the data resolved none.
fn describe_calibration(calibration: &ThresholdCalibration) -> String {
    if calibration.thresholds.is_empty() {
        return format!(
            "too few for any of the standard false-positive rates {STANDARD_ALERT_FPRS:?}"
        );
    }
    calibration
        .thresholds
        .iter()
        .map(|entry| {
            format!(
                "FPR {}: threshold {:.6} (realized {:.4})",
                entry.target_fpr, entry.threshold, entry.realized_fpr
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn load_schema(data: &DataArgs) -> Result<Schema> {
    Schema::load(&data.schema)
        .with_context(|| format!("failed to load schema {}", data.schema.display()))
}

/// Runs `fedshield train`: the centralized baseline.
pub fn train(args: TrainArgs) -> Result<()> {
    if !(args.test_fraction > 0.0 && args.test_fraction < 1.0) && args.test_data.is_none() {
        bail!(
            "--test-fraction must be in (0, 1), got {}",
            args.test_fraction
        );
    }
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    let schema = load_schema(&args.data)?;
    let spec = spec_for(&args.model, &schema);
    require_labels_for(&spec, &schema, &args.data.schema)?;
    spec.validate()?;
    let labels_from = args.data.labels_from.as_deref();
    let all = load_labelled(&args.data.data, &schema, args.data.max_rows, labels_from)?;
    let (train_set, test_set) = match &args.test_data {
        Some(test_path) => (all, load_labelled(test_path, &schema, None, labels_from)?),
        None => all.split(args.test_fraction, 0x5eed),
    };
    let plan = TrainingPlan {
        local_epochs: args.epochs,
        batch_size: args.model.batch_size,
        learning_rate: args.model.learning_rate,
        max_local_steps: args.model.max_local_steps,
        weight_decay: args.model.weight_decay,
        trim_fraction: args.model.trim_fraction,
        dp_sgd: None,
        org_dp: None,
        secure_aggregation: None,
    };
    let initial = ModelWeights::init(spec.clone(), args.model.init_seed)?;
    let started = Instant::now();
    let progress = fedshield_participant::progress::Progress::training("training");
    let outcome =
        train_local_observed(&initial, &train_set, &plan, args.model.init_seed, &|step| {
            progress.step(step);
            std::ops::ControlFlow::Continue(())
        })?;
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let weights = ModelWeights::new(spec.clone(), outcome.params)?;
    let num_trained = if spec.is_autoencoder() {
        train_set
            .labels()
            .iter()
            .filter(|&&label| label == 0)
            .count()
    } else {
        train_set.len()
    };
    eprintln!(
        "trained on {num_trained} rows × {} epochs in {seconds:.1}s ({:.0} examples/s), final loss {:.4}",
        args.epochs,
        (num_trained as f64 * f64::from(args.epochs)) / seconds,
        outcome.mean_loss
    );
    let mut metadata = HashMap::new();
    metadata.insert(SCHEMA_METADATA_KEY.to_string(), schema.to_toml_string());
    let stored_threshold = if spec.is_autoencoder() {
        // Calibrate on benign training rows: a detector needs a threshold
        // before it has seen any labelled attack.
        let scores = score_rows(&weights, train_set.features())?;
        let threshold = threshold_at_fpr(&scores, train_set.labels(), REFERENCE_FPR)
            .map(|value| f64::from(value).next_up())
            .context("no benign training rows to calibrate the threshold on")?;
        metadata.insert(THRESHOLD_METADATA_KEY.to_string(), threshold.to_string());
        Some(threshold)
    } else {
        None
    };
    weights
        .save_safetensors(&args.out, metadata)
        .with_context(|| format!("failed to write {}", args.out.display()))?;
    // Metrics compare scores with labels: unlabelled test data has none.
    let evaluation = if schema.is_labelled() {
        Some(evaluation_report(
            &weights,
            &test_set,
            None,
            stored_threshold,
            REFERENCE_FPR,
        )?)
    } else {
        None
    };
    // Alert thresholds for `detect --alert-fpr`, on the test rows labelled
    // benign (every test row when the schema has no label column).
    let calibration_source = if args.test_data.is_some() {
        "train --test-data"
    } else {
        "train test split"
    };
    let calibration = calibrate_model(&weights, &test_set, calibration_source)
        .context("failed to calibrate the alert thresholds on the test rows")?;
    match &calibration {
        Some(calibration) => eprintln!(
            "calibrated alert thresholds on {} benign test rows: {}",
            calibration.num_benign,
            describe_calibration(calibration)
        ),
        None => eprintln!(
            "the test rows hold no benign row: the model card gets no alert threshold calibration"
        ),
    }
    // A model card next to the weights, as the coordinator publishes one, so
    // that `fedshield detect --model` and other frameworks can use the model.
    let card = ModelCard {
        version: 0,
        parent: None,
        sha256: weights.sha256(),
        num_params: weights.params.len() as u64,
        spec: spec.clone(),
        round_id: None,
        contributors: Vec::new(),
        num_examples: num_trained as u64,
        plan: plan.clone(),
        created_unix_ms: fedshield_core::clock::unix_ms_now(),
        feature_schema: Some(schema.to_toml_string()),
        feature_schema_sha256: Some(schema.sha256()),
        metrics: evaluation.as_ref().map(|(metrics, _, _)| *metrics),
        privacy: None,
        aggregation: None,
        calibration,
    };
    let card_path = args.out.with_extension("json");
    let card_json = serde_json::to_vec_pretty(&card).context("failed to encode the model card")?;
    fedshield_core::fsutil::write_atomic(&card_path, &card_json)
        .with_context(|| format!("failed to write {}", card_path.display()))?;
    eprintln!(
        "wrote {} and its model card {}",
        args.out.display(),
        card_path.display()
    );
    let Some((metrics, per_category, threshold_source)) = evaluation else {
        eprintln!(
            "the data is unlabelled (schema {} has no label column): detection metrics need labels and were not computed",
            args.data.schema.display()
        );
        return Ok(());
    };
    let report = EvaluationReport {
        model: args.out.display().to_string(),
        data: args.test_data.as_ref().map_or_else(
            || {
                format!(
                    "{} (held-out {:.0}%)",
                    args.data.data.display(),
                    args.test_fraction * 100.0
                )
            },
            |path| path.display().to_string(),
        ),
        model_kind: spec.kind.clone(),
        threshold_source,
        metrics,
        per_category,
    };
    emit_report(&report, args.json)
}
