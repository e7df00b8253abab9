//! A schema without a label column: the data it reads is unlabelled, every
//! row counts as class 0, and the load report says so. Loads IoT-23's Trojan
//! capture (Zeek TSV), whose own label column the schema leaves out.
//!
//! The samples are required: `../shared/data/telemetry-samples` must hold them.

use fedshield_core::ingest::{IngestOptions, load_dataset};
use fedshield_core::schema::{LabelClass, Schema, UnlistedLabels};
use samples::sample;

mod samples;

/// Three conn.log columns, no label column.
const UNLABELLED_ZEEK_SCHEMA: &str = r#"
format = "zeek"
columns = [
    { name = "conn_state", kind = "categorical", hash_buckets = 8 },
    { name = "proto", kind = "categorical", vocabulary = ["tcp", "udp", "icmp"] },
    { name = "orig_bytes", kind = "numeric", missing = 0.0, transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"] },
]
"#;

fn unlabelled_schema() -> Schema {
    Schema::from_toml_str(UNLABELLED_ZEEK_SCHEMA).expect("a schema without a label column is valid")
}

#[test]
fn a_schema_without_a_label_column_is_unlabelled_with_one_class() {
    let schema = unlabelled_schema();
    assert!(!schema.is_labelled());
    assert_eq!(schema.label_column_name(), None);
    assert_eq!(
        (schema.num_classes(), schema.class_names()),
        (1, vec!["benign".to_string()])
    );
    assert_eq!(schema.class_of_label("Malicious"), LabelClass::Class(0));
    assert_eq!(schema.unlisted_labels(), UnlistedLabels::Error);
    assert_eq!(schema.num_features(), 1 + 4 + 8);
    let refusal = schema
        .classifier_refusal()
        .expect("a classifier is refused");
    assert!(
        refusal.starts_with("the schema has no label column"),
        "{refusal}"
    );
    assert!(
        refusal.contains("only the autoencoder trains on unlabelled data"),
        "{refusal}"
    );
    // The canonical text reads back to the same unlabelled schema.
    let reloaded = Schema::from_toml_str(&schema.to_toml_string()).unwrap();
    assert_eq!(reloaded, schema);
    assert_eq!(reloaded.sha256(), schema.sha256());
}

#[test]
fn a_labelled_schema_keeps_its_canonical_text_and_its_classifier() {
    let schema = Schema::for_test();
    assert!(schema.is_labelled());
    assert_eq!(schema.classifier_refusal(), None);
    assert_eq!(schema.label_column_name(), Some("label"));
    // Nothing about labels is written for a schema with a label column
    // beyond its column: the text (and so the sha256 participants compare)
    // is what it was before unlabelled schemas existed.
    let text = schema.to_toml_string();
    assert!(!text.contains("alert"), "{text}");
    assert!(
        text.ends_with("[columns.classes]\nscan = [\"portscan\"]\nflood = [\"synflood\"]\n"),
        "{text}"
    );
}

#[test]
fn every_row_of_an_unlabelled_capture_loads_as_benign() {
    let path = sample("iot23-ctu-iot-malware-42-1/conn.log.labeled");
    // Labels are required (training), and the schema has none: no row is
    // skipped for a missing label.
    let (dataset, report) =
        load_dataset(&path, &unlabelled_schema(), &IngestOptions::default()).unwrap();
    println!("{report}");
    // 4,426 rows (the README), 6 of them labelled Malicious in the file.
    assert_eq!(report.num_rows, 4_426);
    assert_eq!(report.skipped.total(), 0, "{report}");
    assert!(report.unlabelled_schema);
    assert_eq!(report.num_unlabelled, 4_426);
    assert!(dataset.classes().iter().all(|&class| class == 0));
    assert!(dataset.labels().iter().all(|&label| label == 0));
    assert!(
        report
            .summary()
            .ends_with("unlabelled (the schema has no label column; every row counts as benign)"),
        "{}",
        report.summary()
    );
}
