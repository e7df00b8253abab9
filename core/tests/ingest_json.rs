//! Loads real JSON-lines telemetry: Suricata `eve.json` (nested objects, a
//! record filter keeping flow events) and Zeek's JSON `conn.log` (flat dotted
//! keys, unset fields left out). The sample files are required; counts come
//! from each sample folder's README.

use std::fs::File;
use std::path::{Path, PathBuf};

use fedshield_core::ingest::{IngestOptions, load_dataset_from_reader};
use fedshield_core::model::data::Dataset;
use fedshield_core::schema::{FileFormat, Schema};
use flate2::read::GzDecoder;

const SAMPLES_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/telemetry-samples"
);

/// Returns the path of a sample file, failing the test when it is absent.
fn sample(relative_path: &str) -> PathBuf {
    let path = Path::new(SAMPLES_DIR).join(relative_path);
    assert!(
        path.is_file(),
        "sample {} is required by this test and was not found",
        path.display()
    );
    path
}

/// Returns how many rows have feature `index` equal to 1 (a one-hot slot).
fn count_hot(dataset: &Dataset, index: usize) -> usize {
    let width = dataset.num_features();
    dataset
        .features()
        .chunks(width)
        .filter(|row| row[index] == 1.0)
        .count()
}

fn count_class(dataset: &Dataset, class: u32) -> usize {
    dataset
        .classes()
        .iter()
        .filter(|&&row_class| row_class == class)
        .count()
}

/// Flow events of eve.json: nested `flow.*` counters, labelled by `flow.alerted`.
const EVE_FLOW_SCHEMA: &str = r#"
format = "jsonl"

[filter]
event_type = "flow"

[[columns]]
name = "flow.bytes_toserver"
kind = "numeric"
transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"]
missing = 0.0

[[columns]]
name = "flow.bytes_toclient"
kind = "numeric"
transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"]
missing = 0.0

[[columns]]
name = "flow.pkts_toserver"
kind = "numeric"
transforms = [{ clamp = { min = 0.0, max = 1e9 } }, "log1p"]
missing = 0.0

[[columns]]
name = "proto"
kind = "categorical"
vocabulary = ["TCP", "UDP"]

[[columns]]
name = "flow.alerted"
kind = "label"
benign = ["false"]
[columns.classes]
alerted = ["true"]
"#;

#[test]
fn suricata_eve_flow_events_load_through_the_filter() {
    let path = sample("suricata-eve-slips-test6/test6-malicious.suricata.json.gz");
    let schema = Schema::from_toml_str(EVE_FLOW_SCHEMA).unwrap();
    let file = File::open(&path).unwrap();
    let (dataset, report) = load_dataset_from_reader(
        GzDecoder::new(file),
        &path.display().to_string(),
        FileFormat::Jsonl,
        &schema,
        &IngestOptions::default(),
    )
    .unwrap();
    println!("{report}");
    // README: 5,000 events, 3,512 of them flows; 366 flows have alerted = true.
    assert_eq!(report.num_rows, 3_512);
    assert_eq!(report.num_filtered, 5_000 - 3_512);
    assert_eq!(report.skipped.total(), 0, "{report}");
    assert_eq!(dataset.len(), 3_512);
    assert_eq!(count_class(&dataset, 1), 366);
    assert_eq!(count_class(&dataset, 0), 3_512 - 366);
    // Features: three counters, then proto TCP, UDP, other.
    assert_eq!(dataset.num_features(), 6);
    assert_eq!(count_hot(&dataset, 3), 2_336);
    assert_eq!(count_hot(&dataset, 4), 1_176);
    // The first flow event: bytes_toserver 4,056, bytes_toclient 0, pkts_toserver 12.
    let first_flow = &dataset.features()[..3];
    assert_eq!(
        first_flow,
        [(4_057f64).ln() as f32, 0.0, (13f64).ln() as f32]
    );
}

/// Zeek's JSON conn.log: flat dotted keys (`id.resp_p`), unset fields left out.
const ZEEK_JSON_SCHEMA: &str = r#"
format = "jsonl"

[[columns]]
name = "duration"
kind = "numeric"
transforms = [{ clamp = { min = 0.0, max = 86400.0 } }, "log1p"]
missing = 0.0

[[columns]]
name = "orig_bytes"
kind = "numeric"
transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"]
missing = 0.0

[[columns]]
name = "id.resp_p"
kind = "numeric"
transforms = [{ clamp = { min = 0.0, max = 65535.0 } }, { scale = { offset = 0.0, divisor = 65535.0 } }]

[[columns]]
name = "proto"
kind = "categorical"
vocabulary = ["tcp", "udp", "icmp"]

[[columns]]
name = "conn_state"
kind = "categorical"
vocabulary = ["S0", "REJ"]

[[columns]]
name = "label"
kind = "label"
benign = ["benign"]
"#;

#[test]
fn zeek_json_conn_log_loads_every_row_by_flat_dotted_keys() {
    let path = sample("zeek-json-nmap-portscan/conn.log");
    let schema = Schema::from_toml_str(ZEEK_JSON_SCHEMA).unwrap();
    let options = IngestOptions {
        require_labels: false,
        ..IngestOptions::default()
    };
    let (dataset, report) = load_dataset_from_reader(
        File::open(&path).unwrap(),
        &path.display().to_string(),
        FileFormat::Jsonl,
        &schema,
        &options,
    )
    .unwrap();
    println!("{report}");
    // README: 4,504 lines, no label; tcp 4,062, udp 59, icmp 383; S0 2,409, REJ 1,273.
    assert_eq!(report.num_rows, 4_504);
    assert_eq!(report.num_unlabelled, 4_504);
    assert_eq!(report.num_filtered, 0);
    assert_eq!(report.skipped.total(), 0, "{report}");
    // Features: duration, orig_bytes, id.resp_p, proto (tcp, udp, icmp, other),
    // conn_state (S0, REJ, other).
    assert_eq!(dataset.num_features(), 10);
    assert_eq!(count_hot(&dataset, 3), 4_062);
    assert_eq!(count_hot(&dataset, 4), 59);
    assert_eq!(count_hot(&dataset, 5), 383);
    assert_eq!(count_hot(&dataset, 6), 0);
    assert_eq!(count_hot(&dataset, 7), 2_409);
    assert_eq!(count_hot(&dataset, 8), 1_273);
    // 2,698 flows have no orig_bytes key (README: 1,806 of 4,504 have it), so
    // the missing 0 applies; 1,620 more carry orig_bytes = 0.
    let width = dataset.num_features();
    let num_without_bytes = dataset
        .features()
        .chunks(width)
        .filter(|row| row[1] == 0.0)
        .count();
    assert_eq!(num_without_bytes, 4_504 - 1_806 + 1_620);
}
