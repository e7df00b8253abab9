//! `fedshield bench rounds` through the real binary: the CI smoke test of
//! the smallest cell, and the coordinator's memory not growing with the
//! number of participants under FedAvg.

mod common;

use std::process::Command;

use serde_json::Value;

use common::tool_or_allowed_skip;

/// Runs `fedshield bench rounds --json` with `arguments` and returns its report.
fn bench_rounds(arguments: &[&str]) -> Value {
    let work_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fedshield"))
        .args(["bench", "rounds", "--json", "--work-dir"])
        .arg(work_dir.path())
        .args(arguments)
        .output()
        .expect("fedshield runs");
    assert!(
        output.status.success(),
        "bench rounds failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout.lines().last().expect("a report line");
    serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"))
}

fn field(report: &Value, name: &str) -> u64 {
    report[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} missing in {report}"))
}

#[test]
fn smallest_benchmark_cell_completes_its_rounds_over_mutual_tls() {
    let report = bench_rounds(&[
        "--participants",
        "2",
        "--params",
        "100000",
        "--rounds",
        "2",
        "--tls",
    ]);
    assert_eq!(field(&report, "rounds_completed"), 2, "{report}");
    assert_eq!(field(&report, "rounds_abandoned"), 0, "{report}");
    assert_eq!(report["round_seconds"].as_array().unwrap().len(), 2);
    assert!(report["median_round_seconds"].as_f64().unwrap() > 0.0);
    // Every round moves at least the model down and the update up, per participant.
    let minimum = 2 * 2 * 100_000 * 4;
    assert_eq!(field(&report, "min_bytes_per_round"), minimum);
    // The bytes on the wire come from the kernel's socket counters, read with `ss`.
    if tool_or_allowed_skip("ss", "-V") {
        assert!(
            field(&report, "bytes_moved_per_round") >= minimum,
            "{report}"
        );
    }
    assert!(field(&report, "coordinator_peak_rss_bytes") > 0, "{report}");
    assert!(field(&report, "participant_peak_rss_bytes") > 0, "{report}");
}

#[test]
fn coordinator_peak_memory_does_not_grow_with_the_number_of_participants() {
    let peak_at = |num_participants: &str| {
        let report = bench_rounds(&[
            "--participants",
            num_participants,
            "--params",
            "1000000",
            "--rounds",
            "1",
            "--tls",
        ]);
        assert_eq!(field(&report, "rounds_completed"), 1, "{report}");
        field(&report, "coordinator_peak_rss_bytes")
    };
    let few = peak_at("2");
    let many = peak_at("16");
    println!("coordinator peak RSS at P = 1M: K = 2 {few} bytes, K = 16 {many} bytes");
    assert!(
        many as f64 <= 1.2 * few as f64,
        "coordinator peak RSS grew from {few} bytes (K = 2) to {many} bytes (K = 16)"
    );
}
