//! The real binary loading telemetry: `fedshield train` logs how many rows it
//! loaded and skipped (counts and line numbers, never field values), and
//! refuses a label value the schema does not list, naming the file and line.

mod config_support;

use std::path::Path;
use std::process::Output;

/// Runs the real binary in `dir` with info logs.
fn fedshield(dir: &Path, args: &[&str]) -> Output {
    config_support::fedshield(dir, args, &[("RUST_LOG", "info")])
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes 300 synthetic flows (csv with a header) to `flows.csv` in `dir`,
/// and their schema to `flows.schema.toml`; returns the file's lines.
fn synthetic_flows(dir: &Path) -> Vec<String> {
    let args = [
        "synth",
        "--out",
        "flows.csv",
        "--balanced",
        "--records",
        "300",
    ];
    let output = fedshield(dir, &args);
    assert!(output.status.success(), "{}", stderr_of(&output));
    std::fs::read_to_string(dir.join("flows.csv"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Trains a small model on `data` (a file in `dir`) with `fedshield train`.
fn train(dir: &Path, data: &str) -> Output {
    fedshield(
        dir,
        &[
            "train",
            "--data",
            data,
            "--schema",
            "flows.schema.toml",
            "--epochs",
            "1",
            "--hidden",
            "4",
            "--out",
            "model.safetensors",
            "--json",
        ],
    )
}

#[test]
fn train_logs_how_many_rows_it_loaded_and_skipped_without_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = synthetic_flows(dir.path());
    // Line 12 (the header is line 1) gets a byte count that is not a number.
    let mut fields: Vec<String> = lines[11].split(',').map(str::to_string).collect();
    fields[1] = "secret-value".to_string();
    lines[11] = fields.join(",");
    let data = "with-one-bad-row.csv";
    std::fs::write(dir.path().join(data), lines.join("\r\n") + "\r\n").unwrap();

    let output = train(dir.path(), data);
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    let summary = format!("loaded 299 rows from {data} (skipped 1: 1 malformed)");
    assert_eq!(stderr.matches(&summary).count(), 1, "{stderr}");
    assert!(
        stderr.contains("the first skipped rows are at lines 12 (malformed)"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-value"), "{stderr}");
}

#[test]
fn train_refuses_a_label_value_the_schema_does_not_list() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = synthetic_flows(dir.path());
    // Line 7: a label the synthetic-flows schema does not list.
    let label_start = lines[6].rfind(',').expect("rows are comma-separated") + 1;
    lines[6].replace_range(label_start.., "Background");
    let data = "with-an-unlisted-label.csv";
    std::fs::write(dir.path().join(data), lines.join("\n") + "\n").unwrap();

    let output = train(dir.path(), data);
    let stderr = stderr_of(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{data}:7: label value \"Background\" in column \"label\" is not listed"
        )),
        "{stderr}"
    );
    assert!(
        !dir.path().join("model.safetensors").exists(),
        "no model is written from a refused file"
    );
}
