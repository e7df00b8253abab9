//! The real binary labelling flows from Suricata alerts: `fedshield train
//! --labels-from eve.json` on the flow events of Slips' eve sample (745
//! alerts, 3,512 flows, no community_id), with a schema whose
//! `[alert_labels]` table makes every alert an attack.
//!
//! The sample is required: `../shared/data/telemetry-samples` must hold it.

mod config_support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;

use flate2::read::GzDecoder;

const EVE_GZ: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/telemetry-samples/suricata-eve-slips-test6/test6-malicious.suricata.json.gz"
);

/// Eve flow events, labelled attack when an alert shares their flow.
const SCHEMA: &str = r#"
format = "jsonl"
columns = [
    { name = "proto", kind = "categorical", vocabulary = ["TCP", "UDP"] },
    { name = "flow.bytes_toserver", kind = "numeric", transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"] },
    { name = "dest_port", kind = "ignore" },
    { name = "dest_ip", kind = "ignore" },
    { name = "src_port", kind = "ignore" },
    { name = "src_ip", kind = "ignore" },
]

[filter]
event_type = "flow"

[alert_labels]
"#;

/// Writes the decompressed eve file and the schema into `dir`; returns the
/// eve file's path.
fn prepare(dir: &Path) -> PathBuf {
    let gz_path = Path::new(EVE_GZ);
    assert!(
        gz_path.is_file(),
        "the telemetry samples are required: {} is missing",
        gz_path.display()
    );
    let mut eve = String::new();
    GzDecoder::new(std::fs::File::open(gz_path).unwrap())
        .read_to_string(&mut eve)
        .unwrap();
    let eve_path = dir.join("eve.json");
    std::fs::write(&eve_path, eve).unwrap();
    std::fs::write(dir.join("eve-flows.schema.toml"), SCHEMA).unwrap();
    eve_path
}

fn train(dir: &Path, extra_args: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--schema",
        "eve-flows.schema.toml",
        "--data",
        "eve.json",
        "--out",
        "model.safetensors",
        "--hidden",
        "4",
        "--epochs",
        "1",
    ];
    args.extend_from_slice(extra_args);
    config_support::fedshield(dir, &args, &[])
}

#[test]
fn train_labels_flows_from_alerts_and_prints_the_join() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let output = train(dir.path(), &["--labels-from", "eve.json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // The counts core/tests/alert_labels.rs checks against an independent
    // computation; with no classes declared every alert means "attack".
    let join = "alerts from eve.json: 745 alerts on 621 flows (0 without a usable community_id or 5-tuple); \
                366 of 3,512 flows matched (0 without a usable community_id or 5-tuple); \
                322 alerts on flows not in the log; flows per class: benign 3,146, attack 366";
    assert_eq!(stderr.matches(join).count(), 1, "{stderr}");
    assert!(dir.path().join("model.safetensors").is_file());
}

#[test]
fn an_alert_labelled_schema_needs_labels_from_and_only_it_takes_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let output = train(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("the schema labels eve.json from Suricata alerts ([alert_labels]): pass the eve file with --labels-from"),
        "{stderr}"
    );

    let unlabelled = SCHEMA.replace("[alert_labels]\n", "");
    std::fs::write(dir.path().join("eve-flows.schema.toml"), unlabelled).unwrap();
    let output = train(
        dir.path(),
        &["--labels-from", "eve.json", "--model-kind", "autoencoder"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--labels-from eve.json: the schema has no [alert_labels] table"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("eve-flows.schema.toml"), SCHEMA).unwrap();
    let missing = train(dir.path(), &["--labels-from", "absent-eve.json"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success(), "{stderr}");
    assert!(
        stderr.contains("failed to read the alerts of --labels-from absent-eve.json"),
        "{stderr}"
    );
    assert!(
        stderr.contains("failed to open absent-eve.json"),
        "{stderr}"
    );
}
