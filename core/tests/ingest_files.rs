//! Strict ingestion of real files: label values the schema does not list,
//! columns absent from a header or from every JSON-lines record, physical
//! line numbers in CRLF and LF files, and the load report's counts.
//!
//! Each test writes small files into its own temporary directory and loads
//! them with `load_dataset`, as `fedshield participant --data` and
//! `fedshield train` do.

use std::path::{Path, PathBuf};

use fedshield_core::ingest::{IngestOptions, load_dataset};
use fedshield_core::schema::Schema;

/// Returns a schema over `bytes` (numeric), `proto` (vocabulary), `service`
/// (hashed, `missing = "-"`) and `label` (benign `benign`, class `scan`);
/// `label_keys` is added to the label column, `header` sets `has_header`,
/// `delimiter` the csv delimiter.
fn flow_schema(label_keys: &str, header: bool, delimiter: &str) -> Schema {
    let text = format!(
        r#"
        has_header = {header}
        delimiter = "{delimiter}"
        [[columns]]
        name = "bytes"
        kind = "numeric"
        transforms = [{{ clamp = {{ min = 0.0, max = 1e12 }} }}, "log1p"]
        [[columns]]
        name = "proto"
        kind = "categorical"
        vocabulary = ["tcp", "udp"]
        [[columns]]
        name = "service"
        kind = "categorical"
        hash_buckets = 4
        missing = "-"
        [[columns]]
        name = "label"
        kind = "label"
        benign = ["benign"]
        {label_keys}
        [columns.classes]
        scan = ["port_scan"]
        "#
    );
    Schema::from_toml_str(&text).expect("the test schema is valid")
}

fn headerless_schema(label_keys: &str) -> Schema {
    flow_schema(label_keys, false, ",")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the test file");
    path
}

/// Returns the message of the error that loading `path` must end in.
fn load_error(path: &Path, schema: &Schema) -> String {
    match load_dataset(path, schema, &IngestOptions::default()) {
        Ok((_, report)) => panic!("loading {} must fail, but {report}", path.display()),
        Err(error) => error.to_string(),
    }
}

/// Asserts that `message` starts with `expected_start`.
fn assert_starts_with(message: &str, expected_start: &str) {
    assert!(
        message.starts_with(expected_start),
        "expected a message starting with {expected_start:?}, got {message:?}"
    );
}

/// Returns `lines` joined with `line_ending` after each line.
fn joined(lines: &[&str], line_ending: &str) -> String {
    lines
        .iter()
        .map(|line| format!("{line}{line_ending}"))
        .collect()
}

/// Headerless rows: line 4 holds the label value `Background`, which the
/// schema does not list.
const ROWS_WITH_AN_UNLISTED_LABEL: [&str; 5] = [
    "10,tcp,http,benign",
    "20,udp,dns,port_scan",
    "30,tcp,ssh,benign",
    "40,tcp,http,Background",
    "50,udp,dns,benign",
];

#[test]
fn an_unlisted_label_value_is_an_error_naming_the_value_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, line_ending) in [("lf.csv", "\n"), ("crlf.csv", "\r\n")] {
        let path = write(
            dir.path(),
            name,
            &joined(&ROWS_WITH_AN_UNLISTED_LABEL, line_ending),
        );
        let error = load_error(&path, &headerless_schema(""));
        let expected_start = format!(
            "{}:4: label value \"Background\" in column \"label\" is not listed in the schema's benign or classes",
            path.display()
        );
        assert_starts_with(&error, &expected_start);
        assert!(error.contains("unlisted_labels"), "{error}");
    }
}

#[test]
fn an_unlisted_label_in_a_jsonl_file_is_an_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "events.jsonl",
        concat!(
            "{\"bytes\": 1, \"proto\": \"tcp\", \"service\": \"http\", \"label\": \"benign\"}\r\n",
            "\r\n",
            "{\"bytes\": 2, \"proto\": \"tcp\", \"service\": \"http\", \"label\": \"Malicious\"}\r\n",
        ),
    );
    let error = load_error(&path, &headerless_schema(""));
    assert_starts_with(
        &error,
        &format!("{}:3: label value \"Malicious\"", path.display()),
    );
}

#[test]
fn unlisted_labels_attack_benign_and_skip_do_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "flows.csv",
        &joined(&ROWS_WITH_AN_UNLISTED_LABEL, "\n"),
    );
    let load = |policy: &str| {
        let schema = headerless_schema(&format!("unlisted_labels = \"{policy}\""));
        load_dataset(&path, &schema, &IngestOptions::default())
            .unwrap_or_else(|error| panic!("unlisted_labels = {policy:?}: {error}"))
    };

    // Classes: benign 0, scan 1, other_attack 2.
    let (as_attack, attack_report) = load("attack");
    assert_eq!(as_attack.classes(), [0, 1, 0, 2, 0]);
    assert_eq!(as_attack.raw_label(3), "Background");
    assert_eq!(attack_report.num_rows, 5);

    let (as_benign, _) = load("benign");
    assert_eq!(as_benign.classes(), [0, 1, 0, 0, 0]);
    assert_eq!(as_benign.labels(), [0, 1, 0, 0, 0]);

    let (skipped, skip_report) = load("skip");
    assert_eq!(skipped.classes(), [0, 1, 0, 0]);
    let shown = skip_report.to_string();
    assert!(
        shown.starts_with(&format!(
            "loaded 4 rows from {} (skipped 1: 1 with an unlisted label)\n  line 4: label value \"Background\" is not listed",
            path.display()
        )),
        "{shown}"
    );
}

#[test]
fn a_header_without_a_column_that_has_a_missing_value_is_an_error_naming_it_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, delimiter, schema_delimiter) in [("flows.csv", ",", ","), ("flows.tsv", "\t", "\\t")]
    {
        let rows = ["bytes,proto,label", "10,tcp,benign", "20,udp,port_scan"]
            .map(|row| row.replace(',', delimiter));
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let path = write(dir.path(), name, &joined(&rows, "\n"));
        let schema = flow_schema("", true, schema_delimiter);
        let error = load_error(&path, &schema);
        assert_eq!(
            error,
            format!(
                "{}: the header has no column named \"service\"; the header has \"bytes\", \"proto\", \"label\"",
                path.display()
            ),
            "{name}"
        );
    }
}

#[test]
fn a_header_without_the_label_column_is_an_error_when_labels_are_required() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "flows.csv",
        "bytes,proto,service\n10,tcp,http\n20,udp,dns\n",
    );
    let schema = flow_schema("", true, ",");
    let error = load_error(&path, &schema);
    assert_starts_with(
        &error,
        &format!(
            "{}: the header has no column named \"label\"",
            path.display()
        ),
    );
    let scoring = IngestOptions {
        require_labels: false,
        ..IngestOptions::default()
    };
    let (dataset, report) = load_dataset(&path, &schema, &scoring).unwrap();
    assert_eq!((dataset.len(), report.num_unlabelled), (2, 2));
}

#[test]
fn a_jsonl_key_absent_from_every_record_is_an_error_but_absent_from_some_is_filled() {
    let dir = tempfile::tempdir().unwrap();
    let schema = headerless_schema("");
    let without_service = write(
        dir.path(),
        "without-service.jsonl",
        concat!(
            "{\"bytes\": 1, \"proto\": \"tcp\", \"label\": \"benign\"}\n",
            "{\"bytes\": 2, \"proto\": \"udp\", \"label\": \"port_scan\"}\n",
        ),
    );
    let error = load_error(&without_service, &schema);
    assert_starts_with(
        &error,
        &format!(
            "{}: no record has the key \"service\" (2 records read)",
            without_service.display()
        ),
    );

    let with_one_service = write(
        dir.path(),
        "one-service.jsonl",
        concat!(
            "{\"bytes\": 1, \"proto\": \"tcp\", \"label\": \"benign\"}\n",
            "{\"bytes\": 2, \"proto\": \"udp\", \"service\": \"dns\", \"label\": \"port_scan\"}\n",
            "{\"bytes\": 3, \"proto\": \"tcp\", \"service\": null, \"label\": \"benign\"}\n",
        ),
    );
    let (dataset, report) =
        load_dataset(&with_one_service, &schema, &IngestOptions::default()).unwrap();
    assert_eq!((dataset.len(), report.num_rows), (3, 3));
    // Records 1 and 3 took `missing = "-"`, so their service buckets match.
    let service_slots = |row: usize| dataset.row(row)[4..8].to_vec();
    assert_eq!(service_slots(0), service_slots(2));
}

/// Header, then rows whose physical lines 5 and 8 are malformed; line 7 is
/// blank (the csv crate would number the row after it at the blank line).
const ROWS_WITH_TWO_MALFORMED: [&str; 9] = [
    "bytes,proto,service,label",
    "10,tcp,http,benign",
    "20,udp,dns,port_scan",
    "30,tcp,ssh,benign",
    "lots,tcp,http,benign",
    "50,udp,dns,benign",
    "",
    "70,tcp",
    "80,tcp,http,port_scan",
];

#[test]
fn crlf_and_lf_files_report_malformed_rows_at_their_physical_lines() {
    let dir = tempfile::tempdir().unwrap();
    let schema = flow_schema("", true, ",");
    let mut shown_reports = Vec::new();
    for (name, line_ending) in [("lf.csv", "\n"), ("crlf.csv", "\r\n")] {
        let path = write(
            dir.path(),
            name,
            &joined(&ROWS_WITH_TWO_MALFORMED, line_ending),
        );
        let (dataset, report) = load_dataset(&path, &schema, &IngestOptions::default()).unwrap();
        assert_eq!(dataset.len(), 5, "{name}");
        let shown = report.to_string();
        let expected = format!(
            "loaded 5 rows from {} (skipped 2: 2 malformed)\n  line 5: column \"bytes\": \"lots\" is not a number\n  line 8: row has 2 fields, the header has 4",
            path.display()
        );
        assert_eq!(shown, expected, "{name}");
        shown_reports.push(shown.replace(&path.display().to_string(), "<file>"));
    }
    assert_eq!(shown_reports[0], shown_reports[1]);
}

#[test]
fn the_report_counts_loaded_and_skipped_rows_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "mixed.csv",
        &joined(
            &[
                "bytes,proto,service,label",
                "10,tcp,http,benign",
                "oops,tcp,http,benign",
                "20,udp,dns,",
                "30,tcp,ssh,Background",
                "40,tcp,ssh,port_scan",
                "50,tcp",
            ],
            "\r\n",
        ),
    );
    let schema = flow_schema("unlisted_labels = \"skip\"", true, ",");
    let (dataset, report) = load_dataset(&path, &schema, &IngestOptions::default()).unwrap();
    assert_eq!(dataset.len(), 2);
    let shown = report.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "loaded 2 rows from {} (skipped 4: 2 malformed, 1 without a label, 1 with an unlisted label)",
            path.display()
        )
    );
    let skipped_lines: Vec<&str> = lines[1..]
        .iter()
        .map(|line| line.split(':').next().unwrap_or(line))
        .collect();
    assert_eq!(
        skipped_lines,
        ["  line 3", "  line 4", "  line 5", "  line 7"]
    );
}
