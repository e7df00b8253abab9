//! The real binary on unlabelled telemetry: Slips' Argus binetflow sample,
//! whose `Label` column is empty in every row, read with a schema that has no
//! label column. The autoencoder trains on every row; a classifier refuses.
//!
//! The sample is required: `../shared/data/telemetry-samples` must hold it.

mod config_support;

use std::path::{Path, PathBuf};
use std::process::Output;

/// The Argus flow export, 6,751 flows (its README).
const BINETFLOW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/telemetry-samples/argus-binetflow-slips-test2/test2-malicious.binetflow"
);

/// Six Argus columns and no label column: the schema is unlabelled.
const UNLABELLED_SCHEMA: &str = r#"
format = "csv"
has_header = true
columns = [
    { name = "Dur", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 1e6 } }, "log1p"] },
    { name = "Proto", kind = "categorical", vocabulary = ["tcp", "udp", "icmp"] },
    { name = "Dir", kind = "categorical", vocabulary = ["->", "<->"] },
    { name = "TotPkts", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 1e9 } }, "log1p"] },
    { name = "TotBytes", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"] },
    { name = "SrcBytes", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"] },
]
"#;

fn binetflow() -> PathBuf {
    let path = PathBuf::from(BINETFLOW);
    assert!(
        path.is_file(),
        "the telemetry samples are required: {} is missing",
        path.display()
    );
    path
}

/// Runs `fedshield train` in `dir` on the binetflow sample with `model_kind`.
fn train(dir: &Path, model_kind: &str) -> Output {
    std::fs::write(dir.join("argus.schema.toml"), UNLABELLED_SCHEMA).unwrap();
    let data = binetflow();
    config_support::fedshield(
        dir,
        &[
            "train",
            "--model-kind",
            model_kind,
            "--hidden",
            "4",
            "--epochs",
            "1",
            "--schema",
            "argus.schema.toml",
            "--data",
            data.to_str().unwrap(),
            "--out",
            "model.safetensors",
        ],
        &[("RUST_LOG", "info")],
    )
}

#[test]
fn the_autoencoder_trains_on_every_row_of_unlabelled_data() {
    let dir = tempfile::tempdir().unwrap();
    let output = train(dir.path(), "autoencoder");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary = format!(
        "loaded 6,751 rows from {}, unlabelled (the schema has no label column; every row counts as benign)",
        binetflow().display()
    );
    assert!(stderr.contains(&summary), "{stderr}");
    assert!(
        stderr.contains("detection metrics need labels and were not computed"),
        "{stderr}"
    );
    assert!(dir.path().join("model.safetensors").is_file());
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("model.json")).unwrap()).unwrap();
    assert_eq!(card["metrics"], serde_json::Value::Null);
    // Every row of the training split counts as benign, so the autoencoder
    // trains on all of them: 6,751 less the 1,350 held out (20%, rounded).
    assert_eq!(card["num_examples"], 5_401);
    // Its alert thresholds calibrate on the test split, every row of it benign.
    assert_eq!(card["calibration"]["num_benign"], 1_350);
    assert_eq!(
        card["calibration"]["thresholds"].as_array().unwrap().len(),
        3
    );
}

#[test]
fn a_classifier_refuses_unlabelled_data_and_names_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    for model_kind in ["classifier", "multiclass"] {
        let output = train(dir.path(), model_kind);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains("argus.schema.toml: the schema has no label column"),
            "{stderr}"
        );
        assert!(
            stderr.contains("only the autoencoder trains on unlabelled data"),
            "{stderr}"
        );
        assert!(stderr.contains("--labels-from"), "{stderr}");
        assert!(!dir.path().join("model.safetensors").exists());
    }
}
