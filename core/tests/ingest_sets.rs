//! Set-valued (multi-hot) categorical columns on real telemetry: Zeek TSV
//! sets (CTU-50's `tunnel_parents`, always `(empty)`, and `service`) and
//! Suricata's `metadata.flowbits` JSON arrays. The samples are required;
//! the counts come from the sample READMEs and from counting the files.

mod support;

use std::fs::File;

use fedshield_core::ingest::{IngestOptions, IngestReport, load_dataset, load_dataset_from_reader};
use fedshield_core::model::data::Dataset;
use fedshield_core::schema::{FileFormat, Schema};
use flate2::read::GzDecoder;
use support::sample;

/// Returns, for each feature in `range`, how many rows set it, and how many
/// rows set two or more of them.
fn slot_counts(dataset: &Dataset, range: std::ops::Range<usize>) -> (Vec<usize>, usize) {
    let width = dataset.num_features();
    let mut counts = vec![0; range.len()];
    let mut num_multi_valued = 0;
    for row in dataset.features().chunks(width) {
        let slots = &row[range.clone()];
        for (count, value) in counts.iter_mut().zip(slots) {
            *count += usize::from(*value == 1.0);
        }
        num_multi_valued += usize::from(slots.iter().sum::<f32>() >= 2.0);
    }
    (counts, num_multi_valued)
}

fn load_ctu50_host_008(schema_text: &str) -> (Dataset, IngestReport) {
    let schema = Schema::from_toml_str(schema_text).unwrap();
    let path = sample("stratosphere-ctu50-feel-zeek/008-ctu-normal-40-day1/conn.log.labeled");
    let (dataset, report) = load_dataset(&path, &schema, &IngestOptions::default())
        .unwrap_or_else(|error| panic!("{error}"));
    println!("{report}");
    (dataset, report)
}

/// Host 008 of CTU-50: `service` (unset `-` on 4,846 rows) and
/// `tunnel_parents` (`(empty)` on all 5,663 rows) as set columns.
const CTU50_SETS_SCHEMA: &str = r#"
format = "zeek"
columns = [
    { name = "service", kind = "categorical", set = true, missing = "", vocabulary = ["dns", "http", "sip", "ssl"] },
    { name = "tunnel_parents", kind = "categorical", set = true, hash_buckets = 4 },
    { name = "label", kind = "label", benign = ["Benign"], unlisted_labels = "skip", classes = { malicious = ["Malicious"] } },
]
"#;

#[test]
fn ctu50_zeek_sets_read_the_empty_marker_as_the_empty_set() {
    let (dataset, report) = load_ctu50_host_008(CTU50_SETS_SCHEMA);
    // 5,663 rows: 4,201 Malicious, 1,402 Benign, 60 Background (skipped).
    assert_eq!(report.num_rows, 5_603);
    assert_eq!(report.skipped.num_malformed, 0, "{report}");
    assert_eq!(report.skipped.total(), 60, "{report}");
    // Slots dns, http, sip, ssl, other (dtls), then the four tunnel_parents buckets.
    let (service_counts, num_multi_service) = slot_counts(&dataset, 0..5);
    let (tunnel_counts, _) = slot_counts(&dataset, 5..9);
    assert_eq!(tunnel_counts, [0, 0, 0, 0], "(empty) sets no slot");
    assert_eq!(
        num_multi_service, 0,
        "no service value in host 008 holds a comma"
    );
    // Counted in the file without the Background rows; the one dtls row takes
    // the other slot and the 4,803 unset (`-`) rows the empty `missing` set.
    assert_eq!(service_counts, [10, 218, 33, 538, 1]);
}

#[test]
fn ctu50_tunnel_parents_as_a_single_valued_column_treats_empty_as_absent() {
    let single_valued = CTU50_SETS_SCHEMA.replace(
        "{ name = \"tunnel_parents\", kind = \"categorical\", set = true, hash_buckets = 4 }",
        "{ name = \"tunnel_parents\", kind = \"categorical\", hash_buckets = 4, missing = \"none\" }",
    );
    let (dataset, report) = load_ctu50_host_008(&single_valued);
    assert_eq!(report.num_rows, 5_603);
    let none_bucket = fedshield_core::schema::hash_bucket("none", 4) as usize;
    let (tunnel_counts, _) = slot_counts(&dataset, 5..9);
    assert_eq!(tunnel_counts[none_bucket], 5_603);
}

/// Flow events of eve.json with `metadata.flowbits` (a JSON array on 17 of
/// the 3,512 flows) as a set column, labelled by `flow.alerted`.
const EVE_FLOWBITS_SCHEMA: &str = r#"
format = "jsonl"

[filter]
event_type = "flow"

[[columns]]
name = "metadata.flowbits"
kind = "categorical"
vocabulary = ["ET.Evil", "ET.DROPIP", "ET.TorIP"]
set = true
missing = ""

[[columns]]
name = "flow.alerted"
kind = "label"
benign = ["false"]
classes = { alerted = ["true"] }
"#;

#[test]
fn eve_flowbits_arrays_become_multi_hot_slots() {
    let path = sample("suricata-eve-slips-test6/test6-malicious.suricata.json.gz");
    let schema = Schema::from_toml_str(EVE_FLOWBITS_SCHEMA).unwrap();
    let reader = GzDecoder::new(File::open(&path).unwrap());
    let (dataset, report) = load_dataset_from_reader(
        reader,
        &path.display().to_string(),
        FileFormat::Jsonl,
        &schema,
        &IngestOptions::default(),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(report.num_rows, 3_512);
    assert_eq!(report.skipped.total(), 0, "{report}");
    // 11 ["ET.Evil","ET.DROPIP"], 2 ["ET.Evil","ET.DshieldIP"], 4 ["ET.TorIP"].
    let (counts, num_multi_valued) = slot_counts(&dataset, 0..4);
    assert_eq!(counts, [13, 11, 4, 2]);
    assert_eq!(num_multi_valued, 13);
}
