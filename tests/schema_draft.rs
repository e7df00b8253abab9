//! The real binary drafting a schema: `fedshield schema draft --from FILE
//! --fit --out PATH` on the labelled Zeek log of the Suricata + Zeek pair,
//! then loading the file through the schema it wrote. The sample is required.

mod config_support;

use std::path::Path;

use fedshield_core::ingest::{IngestOptions, load_dataset};
use fedshield_core::schema::Schema;

const PAIRED_ZEEK_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/telemetry-samples/suricata-zeek-paired-slips-test7/conn.log.labeled"
);

#[test]
fn schema_draft_writes_a_fitted_schema_that_reads_its_file() {
    let log = Path::new(PAIRED_ZEEK_LOG);
    assert!(
        log.is_file(),
        "sample {} is required by this test and was not found",
        log.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "schema",
        "draft",
        "--from",
        PAIRED_ZEEK_LOG,
        "--fit",
        "--out",
        "conn.schema.toml",
    ];
    let output = config_support::fedshield(dir.path(), &args, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout.is_empty());
    let schema_path = dir.path().join("conn.schema.toml");
    let text = std::fs::read_to_string(&schema_path).unwrap();
    assert!(
        text.contains("were computed from conn.log.labeled."),
        "{text}"
    );
    assert!(text.contains("format = \"zeek\""));
    let schema = Schema::load(&schema_path).unwrap();
    let (dataset, report) = load_dataset(log, &schema, &IngestOptions::default()).unwrap();
    // 322 Malicious and 51 Benign rows; the one Background row is skipped.
    assert_eq!(
        (report.num_rows, report.skipped.num_malformed),
        (373, 0),
        "{report}"
    );
    assert_eq!(report.skipped.total(), 1, "{report}");
    assert_eq!(
        dataset.labels().iter().filter(|&&class| class == 1).count(),
        322
    );

    let missing = config_support::fedshield(
        dir.path(),
        &["schema", "draft", "--from", "absent.log"],
        &[],
    );
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("failed to draft a schema from absent.log"),
        "{stderr}"
    );
}
