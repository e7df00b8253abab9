//! Loads the real Zeek TSV samples (IoT-23 and Stratosphere CTU-50) with
//! `format = "zeek"` and checks the row and label counts their READMEs give.
//!
//! The samples are required: `../shared/data/telemetry-samples` must hold them.

use std::fs::File;
use std::path::Path;

use fedshield_core::ingest::{IngestOptions, IngestReport, load_dataset, load_dataset_from_reader};
use fedshield_core::model::data::Dataset;
use fedshield_core::schema::{FileFormat, IdentityRole, Schema};
use flate2::read::GzDecoder;
use samples::sample;

mod samples;

/// A few numeric conn.log columns and the `label` column: `Benign`/`benign`
/// is benign, `Malicious` the one attack class, and `Background` (no
/// labelling rule matched, so unknown) is skipped and counted.
const SCHEMA: &str = r#"
format = "zeek"
columns = [
    { name = "duration", kind = "numeric", missing = 0.0, transforms = [{ clamp = { min = 0.0, max = 1e6 } }, "log1p"] },
    { name = "orig_bytes", kind = "numeric", missing = 0.0, transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"] },
    { name = "resp_bytes", kind = "numeric", missing = 0.0, transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"] },
    { name = "orig_pkts", kind = "numeric", missing = 0.0, transforms = [{ clamp = { min = 0.0, max = 1e9 } }, "log1p"] },
    { name = "id.resp_p", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 65535.0 } }, { scale = { offset = 0.0, divisor = 65535.0 } }] },
    { name = "proto", kind = "categorical", vocabulary = ["tcp", "udp", "icmp"] },
    { name = "label", kind = "label", benign = ["Benign", "benign"], unlisted_labels = "skip", classes = { malicious = ["Malicious"] } },
]
"#;

fn schema() -> Schema {
    Schema::from_toml_str(SCHEMA).expect("the test schema is valid")
}

fn load(relative: &str) -> (Dataset, IngestReport) {
    let path = sample(relative);
    let (dataset, report) = load_dataset(&path, &schema(), &IngestOptions::default())
        .unwrap_or_else(|error| panic!("failed to load {relative}: {error}"));
    println!("{report}");
    (dataset, report)
}

/// Returns (benign, malicious) row counts.
fn label_counts(dataset: &Dataset) -> (usize, usize) {
    let num_malicious = dataset.labels().iter().filter(|&&label| label == 1).count();
    (dataset.len() - num_malicious, num_malicious)
}

#[test]
fn iot23_honeypot_crlf_capture_loads_every_benign_row() {
    let (dataset, report) = load("iot23-ctu-honeypot-4-1/conn.log.labeled");
    assert_eq!(report.num_rows, 452);
    assert_eq!(report.skipped.total(), 0, "{report}");
    assert_eq!(label_counts(&dataset), (452, 0));
    assert_eq!(dataset.raw_label(0), "benign");
}

#[test]
fn iot23_trojan_capture_loads_its_six_malicious_rows() {
    let (dataset, report) = load("iot23-ctu-iot-malware-42-1/conn.log.labeled");
    assert_eq!(report.num_rows, 4_426);
    assert_eq!(report.skipped.total(), 0, "{report}");
    assert_eq!(label_counts(&dataset), (4_420, 6));
}

#[test]
fn iot23_mirai_capture_without_close_or_final_newline_loads_every_row() {
    let path = sample("iot23-ctu-iot-malware-34-1/conn.log.labeled.gz");
    let file = File::open(&path).expect("the sample opens");
    let (dataset, report) = load_dataset_from_reader(
        GzDecoder::new(file),
        "conn.log.labeled",
        FileFormat::Zeek,
        &schema(),
        &IngestOptions::default(),
    )
    .unwrap_or_else(|error| panic!("failed to load {}: {error}", path.display()));
    assert_eq!(report.num_rows, 23_145);
    assert_eq!(report.skipped.total(), 0, "{report}");
    assert_eq!(label_counts(&dataset), (1_923, 21_222));
    let num_without_duration = (0..dataset.len())
        .filter(|&row| dataset.row(row)[0] == 0.0)
        .count();
    assert!(
        num_without_duration > 0,
        "unset durations take the missing value"
    );
}

#[test]
fn ctu50_hosts_load_with_background_rows_skipped_and_counted() {
    // (folder, benign, malicious, background) from the folder's README.
    let hosts = [
        ("008-ctu-normal-40-day1", 1_402, 4_201, 60),
        ("010-ctu-normal-42-day2", 1_937, 3_373, 37),
        ("011-ctu-normal-43-day1", 4_771, 3_951, 326),
        ("012-ctu-normal-44-day2", 782, 3_028, 930),
    ];
    let mut num_rows_total = 0;
    for (folder, num_benign, num_malicious, num_background) in hosts {
        let (dataset, report) = load(&format!(
            "stratosphere-ctu50-feel-zeek/{folder}/conn.log.labeled"
        ));
        assert_eq!(
            label_counts(&dataset),
            (num_benign, num_malicious),
            "{folder}"
        );
        assert_eq!(
            report.skipped.num_unlisted_label, num_background,
            "{folder}"
        );
        assert_eq!(report.skipped.total(), num_background, "{folder}: {report}");
        num_rows_total += report.num_rows + num_background;
    }
    assert_eq!(num_rows_total, 24_798);
}

/// The shipped `schemas/zeek-conn.toml`.
fn shipped_schema() -> Schema {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/zeek-conn.toml");
    Schema::load(&path).unwrap_or_else(|error| panic!("{error}"))
}

fn load_gz(relative: &str, schema: &Schema) -> (Dataset, IngestReport) {
    let path = sample(relative);
    let file = File::open(&path).expect("the sample opens");
    load_dataset_from_reader(
        GzDecoder::new(file),
        relative,
        FileFormat::Zeek,
        schema,
        &IngestOptions::default(),
    )
    .unwrap_or_else(|error| panic!("failed to load {}: {error}", path.display()))
}

#[test]
fn the_shipped_zeek_schema_reads_every_labelled_capture_with_background_skipped() {
    let schema = shipped_schema();
    // (file, benign, malicious, background) from the folders' READMEs.
    let files = [
        ("iot23-ctu-honeypot-4-1/conn.log.labeled", 452, 0, 0),
        ("iot23-ctu-iot-malware-42-1/conn.log.labeled", 4_420, 6, 0),
        (
            "stratosphere-ctu50-feel-zeek/008-ctu-normal-40-day1/conn.log.labeled",
            1_402,
            4_201,
            60,
        ),
        (
            "stratosphere-ctu50-feel-zeek/010-ctu-normal-42-day2/conn.log.labeled",
            1_937,
            3_373,
            37,
        ),
        (
            "stratosphere-ctu50-feel-zeek/011-ctu-normal-43-day1/conn.log.labeled",
            4_771,
            3_951,
            326,
        ),
        (
            "stratosphere-ctu50-feel-zeek/012-ctu-normal-44-day2/conn.log.labeled",
            782,
            3_028,
            930,
        ),
    ];
    for (relative, num_benign, num_malicious, num_background) in files {
        let (dataset, report) = load_dataset(&sample(relative), &schema, &IngestOptions::default())
            .unwrap_or_else(|error| panic!("failed to load {relative}: {error}"));
        assert_eq!(
            label_counts(&dataset),
            (num_benign, num_malicious),
            "{relative}"
        );
        assert_eq!(
            report.skipped.num_skipped_label, num_background,
            "{relative}"
        );
        assert_eq!(
            report.skipped.total(),
            num_background,
            "{relative}: {report}"
        );
        assert_eq!(dataset.num_features(), schema.num_features());
    }
    let (dataset, report) = load_gz("iot23-ctu-iot-malware-34-1/conn.log.labeled.gz", &schema);
    assert_eq!(report.skipped.total(), 0, "{report}");
    assert_eq!(label_counts(&dataset), (1_923, 21_222));
}

#[test]
fn shipped_zeek_schema_features_exclude_identifiers_and_the_label_leaking_locality() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/zeek-conn.toml"),
    )
    .unwrap();
    let schema = shipped_schema();
    let feature_columns: Vec<&str> = schema
        .feature_columns()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for name in [
        "ts",
        "uid",
        "id.orig_h",
        "id.resp_h",
        "id.orig_p",
        "local_orig",
        "local_resp",
        "community_id",
    ] {
        assert!(
            !feature_columns.contains(&name),
            "{name} must not be a feature"
        );
    }
    for name in ["local_orig", "local_resp"] {
        let declaration = format!("name = {name:?}\nkind = \"ignore\"");
        assert!(text.contains(&declaration), "{name} must be ignored");
    }
    // Identifiers are echoed in verdicts by their role, never featurized.
    let echoed: Vec<(String, Option<IdentityRole>)> = schema
        .echoed_columns()
        .into_iter()
        .map(|column| (column.name, column.role))
        .collect();
    let expected = [
        ("ts", IdentityRole::Timestamp),
        ("uid", IdentityRole::EventId),
        ("id.orig_h", IdentityRole::SourceIp),
        ("id.orig_p", IdentityRole::SourcePort),
        ("id.resp_h", IdentityRole::DestinationIp),
        ("id.resp_p", IdentityRole::DestinationPort),
        ("proto", IdentityRole::Transport),
    ];
    assert_eq!(
        echoed,
        expected
            .iter()
            .map(|(name, role)| (name.to_string(), Some(*role)))
            .collect::<Vec<_>>()
    );
    assert_eq!(schema.label_column_name(), Some("label"));
}

/// IoT-23's `detailed-label` picks the attack class of a `Malicious` row.
#[test]
fn iot23_detailed_labels_become_classes_through_the_class_column() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/zeek-conn.toml"),
    )
    .unwrap();
    let label_start = text.find("[[columns]]\nname = \"label\"").unwrap();
    let multi_class = format!(
        "{}{}",
        &text[..label_start],
        r#"[[columns]]
name = "detailed-label"
kind = "ignore"

[[columns]]
name = "label"
kind = "label"
benign = ["Benign", "benign"]
attack = ["Malicious"]
class_column = "detailed-label"

[columns.classes]
ddos = ["DDoS"]
command_and_control = ["C&C", "C&C-HeartBeat"]
scan = ["PartOfAHorizontalPortScan"]
"#
    );
    let schema = Schema::from_toml_str(&multi_class).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        schema.class_names(),
        [
            "benign",
            "ddos",
            "command_and_control",
            "scan",
            "other_attack"
        ]
    );
    let (dataset, report) = load_gz("iot23-ctu-iot-malware-34-1/conn.log.labeled.gz", &schema);
    assert_eq!(report.skipped.total(), 0, "{report}");
    let count = |class: u32| dataset.classes().iter().filter(|&&c| c == class).count();
    // The README's table: Benign 1,923, DDoS 14,394, C&C 6,706, PartOfAHorizontalPortScan 122.
    assert_eq!(
        [count(0), count(1), count(2), count(3), count(4)],
        [1_923, 14_394, 6_706, 122, 0]
    );
    // A value no class lists is the last class; a label value neither
    // benign, attack nor skip lists is still an error.
    let other = multi_class.replace(
        "scan = [\"PartOfAHorizontalPortScan\"]",
        "scan = [\"Okiru\"]",
    );
    let schema = Schema::from_toml_str(&other).unwrap();
    let (dataset, _) = load_gz("iot23-ctu-iot-malware-34-1/conn.log.labeled.gz", &schema);
    assert_eq!(dataset.classes().iter().filter(|&&c| c == 4).count(), 122);
    let strict = multi_class.replace("benign = [\"Benign\", \"benign\"]", "benign = [\"benign\"]");
    let schema = Schema::from_toml_str(&strict).unwrap();
    let error = load_dataset_from_reader(
        GzDecoder::new(
            File::open(sample("iot23-ctu-iot-malware-34-1/conn.log.labeled.gz")).unwrap(),
        ),
        "34-1",
        FileFormat::Zeek,
        &schema,
        &IngestOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("\"Benign\""), "{error}");
}

/// Zeek archives rotated logs gzipped: a `.gz` path is read decompressed,
/// by training and by `schema draft`.
#[test]
fn a_gzipped_log_is_read_and_drafted_from_its_path() {
    let path = sample("iot23-ctu-iot-malware-34-1/conn.log.labeled.gz");
    let (dataset, report) = load_dataset(&path, &shipped_schema(), &IngestOptions::default())
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        (report.num_rows, report.skipped.total()),
        (23_145, 0),
        "{report}"
    );
    assert_eq!(label_counts(&dataset), (1_923, 21_222));
    let draft = fedshield_core::schema::draft::draft_schema(
        &path,
        &fedshield_core::schema::draft::DraftOptions::default(),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(draft.contains("format = \"zeek\""), "{draft}");
    let drafted = Schema::from_toml_str(&draft).unwrap_or_else(|error| panic!("{error}"));
    let (_, report) = load_dataset(&path, &drafted, &IngestOptions::default())
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(report.num_rows + report.skipped.total(), 23_145, "{report}");
}
