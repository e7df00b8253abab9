use super::*;
use crate::ingest::{IngestOptions, load_dataset_from_reader};
use crate::schema::Schema;

fn draft_text(text: &str, format: FileFormat, fit: bool) -> String {
    let options = DraftOptions {
        format: Some(format),
        fit,
        ..DraftOptions::default()
    };
    draft_schema_from_reader(text.as_bytes(), "flows", &options).unwrap()
}

/// A Zeek log whose `service` set holds `ssl,quic` and whose `tunnel_parents` is `(empty)`.
const ZEEK_LOG: &str = "#separator \\x09\n#set_separator\t,\n#fields\tuid\tservice\torig_bytes\ttunnel_parents\tlabel\n#types\tstring\tset[string]\tcount\tset[string]\tstring\nC1\tssl,quic\t10\t(empty)\tbenign\nC2\t-\t-\t(empty)\tMalicious\nC3\tdns\t1000\t(empty)\tbenign\n";

#[test]
fn a_zeek_set_type_drafts_a_set_column_that_reads_multi_hot() {
    let text = draft_text(ZEEK_LOG, FileFormat::Zeek, true);
    assert!(
        text.contains("name = \"service\"\nkind = \"categorical\"\nvocabulary = [\"dns\", \"quic\", \"ssl\"]\nset = true\nmissing = \"\"\n"),
        "{text}"
    );
    let schema = Schema::from_toml_str(&text).unwrap();
    let (dataset, report) = load_dataset_from_reader(
        ZEEK_LOG.as_bytes(),
        "flows",
        FileFormat::Zeek,
        &schema,
        &IngestOptions::default(),
    )
    .unwrap();
    assert_eq!((report.num_rows, report.skipped.total()), (3, 0));
    // Slots dns, quic, ssl, other; then orig_bytes.
    assert_eq!(dataset.row(0)[..4], [0.0, 1.0, 1.0, 0.0]);
    assert_eq!(dataset.row(1)[..4], [0.0, 0.0, 0.0, 0.0]);
    assert_eq!(dataset.row(2)[..4], [1.0, 0.0, 0.0, 0.0]);
    assert_eq!(dataset.classes(), [0, 1, 0]);
}

#[test]
fn fitted_constants_are_the_population_mean_and_std_after_log1p() {
    let text = draft_text(ZEEK_LOG, FileFormat::Zeek, true);
    let values = [10f64.ln_1p(), 1000f64.ln_1p()];
    let mean = (values[0] + values[1]) / 2.0;
    let std = (values[1] - values[0]) / 2.0;
    let expected = format!(
        "transforms = [{{ clamp = {{ min = 0.0, max = 1000000000000.0 }} }}, \"log1p\", {{ standardize = {{ mean = {mean:?}, std = {std:?} }} }}]\nmissing = 0.0\n"
    );
    assert!(text.contains(&expected), "{text}");
    assert!(text.contains("computed from flows."));
}

#[test]
fn a_constant_column_gets_a_standard_deviation_of_one() {
    assert_eq!(mean_and_std(&[5.0, 5.0], PORT), (5.0, 1.0));
    assert_eq!(mean_and_std(&[], BYTES), (0.0, 1.0));
}

#[test]
fn names_and_values_decide_identifiers_and_labels() {
    let facts = ColumnFacts::default();
    for name in [
        "uid",
        "ts",
        "id.orig_h",
        "src_ip",
        "SrcAddr",
        "community_id",
        "flow_id",
        "local_resp",
        "flow.start",
        "StartTime",
    ] {
        assert!(identifier_reason(name, None, &facts).is_some(), "{name}");
    }
    for name in ["orig_bytes", "id.resp_p", "history", "proto"] {
        assert!(identifier_reason(name, None, &facts).is_none(), "{name}");
    }
    assert!(looks_like_address_or_time("fe80::d2:4591:568e:c3d1"));
    assert!(looks_like_address_or_time("2019/04/04 16:23:00.33"));
    assert!(!looks_like_address_or_time("S0"));
    assert_eq!(label_preference("Label"), Some(0));
    assert_eq!(label_preference("flow.alerted"), Some(9));
    assert!(label_preference("detailed-label") > label_preference("label"));
    assert_eq!(label_preference("service"), None);
}

#[test]
fn a_csv_draft_finds_the_delimiter_and_proposes_the_label() {
    let text = draft_text(
        "dur;proto;class\n1.5;tcp;normal\n0;udp;neptune\n",
        FileFormat::Csv,
        false,
    );
    assert!(
        text.contains("has_header = true\ndelimiter = \";\"\n"),
        "{text}"
    );
    assert!(text.contains("name = \"class\"\nkind = \"label\"\nbenign = [\"Benign\", \"benign\", \"normal\"]\nunlisted_labels = \"attack\"\n"), "{text}");
    let schema = Schema::from_toml_str(&text).unwrap();
    assert_eq!(schema.num_classes(), 2);
}

#[test]
fn flow_identifiers_become_identity_columns_with_their_roles() {
    let roles = [
        ("ts", Some("@timestamp")),
        ("uid", Some("event.id")),
        ("id.orig_h", Some("source.ip")),
        ("id.orig_p", Some("source.port")),
        ("id.resp_h", Some("destination.ip")),
        ("community_id", Some("network.community_id")),
        ("src_ip", Some("source.ip")),
        ("dest_ip", Some("destination.ip")),
        ("flow_id", Some("event.id")),
        ("tunnel_parents", None),
        ("fuid", None),
        ("local_orig", None),
    ];
    for (name, role) in roles {
        assert_eq!(identity_role(name, None), role, "{name}");
    }
    assert_eq!(
        identity_role("first_seen", Some("time")),
        Some("@timestamp")
    );
}
