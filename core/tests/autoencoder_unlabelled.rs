//! The autoencoder trained on unlabelled Zeek traffic: the IoT-23 honeypot
//! (4-1) and the Trojan capture (42-1), read with `schemas/zeek-conn.toml`
//! less its label column, so that 42-1's six malicious flows are hidden in
//! the "normal" traffic as they would be in a real sensor's log. It is
//! evaluated on the labelled Mirai capture (34-1), which it never saw:
//! 1,923 benign flows against 21,222 attacks (DDoS, C&C, port scans).

use std::fs::File;
use std::path::Path;

use fedshield_core::ingest::{IngestOptions, load_dataset, load_dataset_from_reader};
use fedshield_core::model::ModelSpec;
use fedshield_core::model::data::Dataset;
use fedshield_core::model::inference::score_rows;
use fedshield_core::model::metrics::BinaryMetrics;
use fedshield_core::model::training::{TrainingPlan, train_local};
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::schema::{FileFormat, Schema};
use flate2::read::GzDecoder;
use samples::sample;

mod samples;

fn shipped_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/zeek-conn.toml"))
        .unwrap()
}

/// `zeek-conn.toml` without its label column: an unlabelled schema.
fn unlabelled_schema() -> Schema {
    let text = shipped_text();
    let label_start = text.find("[[columns]]\nname = \"label\"").unwrap();
    let schema = Schema::from_toml_str(&text[..label_start]).unwrap();
    assert!(!schema.is_labelled());
    schema
}

fn unlabelled_training_rows() -> Dataset {
    let schema = unlabelled_schema();
    let mut all = Dataset::new(schema.num_features());
    for (relative, num_rows) in [
        ("iot23-ctu-honeypot-4-1/conn.log.labeled", 452),
        ("iot23-ctu-iot-malware-42-1/conn.log.labeled", 4_426),
    ] {
        let (dataset, report) = load_dataset(&sample(relative), &schema, &IngestOptions::default())
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            (report.num_rows, report.skipped.total()),
            (num_rows, 0),
            "{report}"
        );
        assert!(dataset.labels().iter().all(|&label| label == 0));
        for row in 0..dataset.len() {
            all.push(dataset.row(row), 0).unwrap();
        }
    }
    all
}

fn mirai_capture() -> Dataset {
    let schema = Schema::from_toml_str(&shipped_text()).unwrap();
    let path = sample("iot23-ctu-iot-malware-34-1/conn.log.labeled.gz");
    let (dataset, _) = load_dataset_from_reader(
        GzDecoder::new(File::open(&path).unwrap()),
        "34-1",
        FileFormat::Zeek,
        &schema,
        &IngestOptions::default(),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    dataset
}

fn train_and_evaluate(train: &Dataset, test: &Dataset, trim_fraction: f32) -> BinaryMetrics {
    let spec = ModelSpec::autoencoder(train.num_features() as u32, vec![32, 8]);
    let initial = ModelWeights::init(spec.clone(), 7).unwrap();
    let mut plan = TrainingPlan::new()
        .with_local_epochs(20)
        .with_batch_size(64)
        .with_learning_rate(0.2);
    plan.trim_fraction = trim_fraction;
    let outcome = train_local(&initial, train, &plan, 11).unwrap();
    let trained = ModelWeights::new(spec, outcome.params).unwrap();
    let scores = score_rows(&trained, test.features()).unwrap();
    BinaryMetrics::compute(&scores, test.labels())
}

#[test]
fn an_autoencoder_trained_on_unlabelled_iot_traffic_detects_an_unseen_botnet() {
    let train = unlabelled_training_rows();
    let test = mirai_capture();
    assert_eq!(test.len(), 23_145);
    // Measured (docs/BENCHMARKS.md): ROC-AUC 0.989, detection rate 0.750
    // at 1% false positives, with and without trimming 5% of each batch
    // (only 6 of the 4,878 training flows are attacks).
    for trim_fraction in [0.0, 0.05] {
        let metrics = train_and_evaluate(&train, &test, trim_fraction);
        println!(
            "trim {trim_fraction}: ROC-AUC {:.4}, detection rate at 1% FPR {:.4}",
            metrics.roc_auc, metrics.detection_rate_at_1pct_fpr
        );
        assert!(
            metrics.roc_auc >= 0.97,
            "trim {trim_fraction}: ROC-AUC {:.4}",
            metrics.roc_auc
        );
        assert!(
            metrics.detection_rate_at_1pct_fpr >= 0.65,
            "trim {trim_fraction}: detection rate {:.4}",
            metrics.detection_rate_at_1pct_fpr
        );
    }
}
