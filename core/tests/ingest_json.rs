//! Loads real JSON-lines telemetry: Suricata `eve.json` (nested objects, a
//! record filter keeping flow events) and Zeek's JSON `conn.log` (flat dotted
//! keys, unset fields left out). The sample files are required; counts come
//! from each sample folder's README.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use fedshield_core::ingest::{IngestOptions, IngestReport, load_dataset_from_reader};
use fedshield_core::model::data::Dataset;
use fedshield_core::schema::{FileFormat, Schema};
use flate2::read::GzDecoder;
use samples::sample;

mod samples;

/// Returns how many rows have feature `index` equal to 1 (a one-hot slot).
fn count_hot(dataset: &Dataset, index: usize) -> usize {
    let width = dataset.num_features();
    dataset
        .features()
        .chunks(width)
        .filter(|row| row[index] == 1.0)
        .count()
}

/// Loads JSON-lines from `reader`, read from `path`, through the schema text.
fn load(
    reader: impl Read,
    path: &Path,
    schema_text: &str,
    options: &IngestOptions,
) -> (Dataset, IngestReport) {
    let schema = Schema::from_toml_str(schema_text).unwrap();
    let loaded = load_dataset_from_reader(
        reader,
        &path.display().to_string(),
        FileFormat::Jsonl,
        &schema,
        options,
    );
    let (dataset, report) = loaded.unwrap_or_else(|error| panic!("{error}"));
    println!("{report}");
    (dataset, report)
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
    let file = GzDecoder::new(File::open(&path).unwrap());
    let (dataset, report) = load(file, &path, EVE_FLOW_SCHEMA, &IngestOptions::default());
    // README: 5,000 events, 3,512 of them flows; 366 flows have alerted = true.
    assert_eq!(report.num_rows, 3_512);
    assert_eq!(report.num_filtered, 5_000 - 3_512);
    assert_eq!(report.skipped.total(), 0, "{report}");
    assert_eq!(dataset.len(), 3_512);
    let num_alerted = dataset
        .classes()
        .iter()
        .filter(|&&class| class == 1)
        .count();
    assert_eq!(num_alerted, 366);
    assert_eq!(dataset.classes().len(), 3_512);
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
    let options = IngestOptions {
        require_labels: false,
        ..IngestOptions::default()
    };
    let (dataset, report) = load(
        File::open(&path).unwrap(),
        &path,
        ZEEK_JSON_SCHEMA,
        &options,
    );
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
