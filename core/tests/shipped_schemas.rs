//! The JSON schemas shipped in `schemas/` read the real samples they are
//! for: `zeek-conn-json.toml` a Zeek JSON conn log (unlabelled), and
//! `suricata-flow.toml` Suricata's eve flow events labelled from its alerts.
//! (`zeek-conn.toml` is tested on every labelled Zeek TSV capture in
//! `ingest_zeek.rs`.)

use std::io::Read;
use std::path::Path;

use fedshield_core::ingest::alert_labels::{AlertIndex, load_dataset_with_alert_labels};
use fedshield_core::ingest::{IngestOptions, load_dataset};
use fedshield_core::schema::Schema;
use flate2::read::GzDecoder;
use samples::sample;

mod samples;

fn shipped(name: &str) -> Schema {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas")
        .join(name);
    Schema::load(&path).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn the_zeek_json_schema_reads_every_row_and_featurizes_like_the_tsv_schema() {
    let json = shipped("zeek-conn-json.toml");
    let tsv = shipped("zeek-conn.toml");
    assert!(!json.is_labelled());
    assert_eq!(json.feature_names(), tsv.feature_names());
    let (dataset, report) = load_dataset(
        &sample("zeek-json-nmap-portscan/conn.log"),
        &json,
        &IngestOptions::default(),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(report.num_rows, 4_504);
    assert_eq!(report.skipped.total(), 0, "{report}");
    assert_eq!(dataset.len(), 4_504);
}

#[test]
fn the_suricata_flow_schema_keeps_flow_events_and_labels_them_from_alerts() {
    let schema = shipped("suricata-flow.toml");
    let dir = tempfile::tempdir().unwrap();
    let mut eve = String::new();
    GzDecoder::new(
        std::fs::File::open(sample(
            "suricata-eve-slips-test6/test6-malicious.suricata.json.gz",
        ))
        .unwrap(),
    )
    .read_to_string(&mut eve)
    .unwrap();
    let eve_path = dir.path().join("eve.json");
    std::fs::write(&eve_path, eve).unwrap();
    let alerts = AlertIndex::read(&eve_path, &schema, 1 << 20).unwrap();
    let (dataset, report, join) =
        load_dataset_with_alert_labels(&eve_path, &schema, &IngestOptions::default(), &alerts)
            .unwrap_or_else(|error| panic!("{error}"));
    // 3,512 flow events of the 5,000 (its README); the other 1,488 filtered.
    assert_eq!(report.num_rows, 3_512);
    assert_eq!(report.num_filtered, 1_488);
    assert_eq!(report.skipped.total(), 0, "{report}");
    // The flows Suricata alerted on (`flow.alerted = true`, 366) are the
    // attacks; `flow.alerted` itself is not a feature.
    assert_eq!(join.num_flows_matched, 366);
    let num_attacks = dataset.labels().iter().filter(|&&label| label == 1).count();
    assert_eq!(num_attacks, 366);
    assert!(
        !schema
            .feature_names()
            .iter()
            .any(|name| name.contains("alerted")),
    );
}
