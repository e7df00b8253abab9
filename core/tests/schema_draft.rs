//! Drafts schemas from the real telemetry samples (Zeek TSV from IoT-23 and
//! CTU-50, Zeek JSON, Suricata eve.json, Argus csv) and checks that each
//! draft validates, reads its file without a malformed row, ignores the
//! identifiers and proposes the label. The samples are required.

mod support;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;

use fedshield_core::ingest::{IngestOptions, IngestReport, load_dataset_from_reader};
use fedshield_core::schema::draft::{DraftOptions, draft_schema, draft_schema_from_reader};
use fedshield_core::schema::{FileFormat, Schema};
use flate2::read::GzDecoder;
use support::sample;

/// Opens a sample, decompressing `.gz` files.
fn open_sample(relative_path: &str) -> Box<dyn Read> {
    let path = sample(relative_path);
    let file = File::open(&path).unwrap();
    if relative_path.ends_with(".gz") {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    }
}

/// Drafts a schema from a sample.
fn draft(relative_path: &str, format: FileFormat, fit: bool) -> String {
    let options = DraftOptions {
        format: Some(format),
        fit,
        ..DraftOptions::default()
    };
    let text = draft_schema_from_reader(open_sample(relative_path), relative_path, &options)
        .unwrap_or_else(|error| panic!("failed to draft from {relative_path}: {error}"));
    println!("{text}");
    text
}

/// A label column absent from every sample, so that an unlabelled draft
/// validates until schemas without a label column are accepted.
const PLACEHOLDER_LABEL: &str =
    "\n[[columns]]\nname = \"placeholder label\"\nkind = \"label\"\nbenign = [\"benign\"]\n";

/// Loads a sample through a draft (with the placeholder label when the
/// draft has none; its rows are then unlabelled).
fn load_with_draft(relative_path: &str, format: FileFormat, text: &str) -> IngestReport {
    let has_label = text.contains("kind = \"label\"");
    let schema_text = if has_label {
        text.to_string()
    } else {
        format!("{text}{PLACEHOLDER_LABEL}")
    };
    let schema = Schema::from_toml_str(&schema_text)
        .unwrap_or_else(|error| panic!("the draft of {relative_path} is invalid: {error}"));
    let options = IngestOptions {
        require_labels: has_label,
        ..IngestOptions::default()
    };
    let (_, report) = load_dataset_from_reader(
        open_sample(relative_path),
        relative_path,
        format,
        &schema,
        &options,
    )
    .unwrap_or_else(|error| panic!("the draft of {relative_path} does not read it: {error}"));
    println!("{report}");
    report
}

/// Returns the `kind` line of column `name` in a draft.
fn kind_of(text: &str, name: &str) -> String {
    let name_line = format!("name = \"{name}\"\n");
    let start = text
        .find(&name_line)
        .unwrap_or_else(|| panic!("the draft has no column {name:?}"));
    let after = &text[start + name_line.len()..];
    after.lines().next().unwrap().to_string()
}

/// Asserts that no column of `names` is a feature: each is ignored, or an
/// identity column echoed in verdicts (with its role on the next line).
fn assert_ignored(text: &str, names: &[&str]) {
    for name in names {
        let kind = kind_of(text, name);
        assert!(
            kind == "kind = \"ignore\"" || kind == "kind = \"identity\"",
            "{name}: {kind}"
        );
    }
}

/// Returns the lines of column `name` in a draft, up to the next column.
fn column_text<'t>(text: &'t str, name: &str) -> &'t str {
    let name_line = format!("name = \"{name}\"\n");
    let start = text.find(&name_line).unwrap() + name_line.len();
    let end = text[start..]
        .find("[[columns]]")
        .map_or(text.len(), |offset| start + offset);
    &text[start..end]
}

const IOT23_TROJAN: &str = "iot23-ctu-iot-malware-42-1/conn.log.labeled";
const CTU50_HOST_008: &str = "stratosphere-ctu50-feel-zeek/008-ctu-normal-40-day1/conn.log.labeled";
const ZEEK_JSON: &str = "zeek-json-nmap-portscan/conn.log";
const EVE_PAIRED: &str = "suricata-zeek-paired-slips-test7/eve.json";
const EVE_TEST6: &str = "suricata-eve-slips-test6/test6-malicious.suricata.json.gz";
const ARGUS: &str = "argus-binetflow-slips-test2/test2-malicious.binetflow";

#[test]
fn a_zeek_tsv_draft_ignores_identifiers_and_proposes_the_label() {
    for (path, num_rows, num_skipped) in [(IOT23_TROJAN, 4_426, 0), (CTU50_HOST_008, 5_663, 0)] {
        let text = draft(path, FileFormat::Zeek, false);
        // The flow's identity is echoed by role; other identifiers are ignored.
        for (name, role) in [
            ("ts", "@timestamp"),
            ("uid", "event.id"),
            ("id.orig_h", "source.ip"),
            ("id.orig_p", "source.port"),
            ("id.resp_h", "destination.ip"),
        ] {
            assert_eq!(
                column_text(&text, name).lines().take(2).collect::<Vec<_>>(),
                ["kind = \"identity\"", &format!("role = {role:?}")],
                "{name}"
            );
        }
        assert_eq!(kind_of(&text, "local_orig"), "kind = \"ignore\"");
        assert_ignored(
            &text,
            &[
                "ts",
                "uid",
                "id.orig_h",
                "id.resp_h",
                "id.orig_p",
                "local_orig",
                "local_resp",
                "tunnel_parents",
            ],
        );
        assert_eq!(kind_of(&text, "label"), "kind = \"label\"");
        assert_eq!(kind_of(&text, "duration"), "kind = \"numeric\"");
        assert!(
            column_text(&text, "service").contains("set = true"),
            "{text}"
        );
        assert!(column_text(&text, "proto").contains("vocabulary = [\"tcp\", \"udp\", \"icmp\"]"));
        assert!(column_text(&text, "orig_bytes").contains(
            "transforms = [{ clamp = { min = 0.0, max = 1000000000000.0 } }, \"log1p\", { scale = { offset = 0.0, divisor = 28.0 } }]"
        ));
        assert!(text.contains("nothing here was computed from the file"));
        let report = load_with_draft(path, FileFormat::Zeek, &text);
        assert_eq!(report.num_rows, num_rows, "{path}");
        assert_eq!(report.skipped.total(), num_skipped, "{report}");
    }
    let ctu50 = draft(CTU50_HOST_008, FileFormat::Zeek, false);
    assert_eq!(kind_of(&ctu50, "detailedlabel"), "kind = \"ignore\"");
}

#[test]
fn a_zeek_json_draft_reads_flat_dotted_keys_and_has_no_label() {
    let text = draft(ZEEK_JSON, FileFormat::Jsonl, false);
    assert_ignored(
        &text,
        &[
            "ts",
            "uid",
            "id.orig_h",
            "id.resp_h",
            "id.orig_p",
            "local_orig",
            "local_resp",
        ],
    );
    assert!(column_text(&text, "id.resp_p").contains("divisor = 65535.0"));
    // `duration` is set on 1,806 of the 4,504 lines: absent elsewhere.
    assert!(column_text(&text, "duration").contains("missing = 0.0"));
    assert!(column_text(&text, "service").contains("set = true\nmissing = \"\""));
    assert!(!text.contains("kind = \"label\""));
    assert!(text.contains("# No column holds labels"));
    let report = load_with_draft(ZEEK_JSON, FileFormat::Jsonl, &text);
    assert_eq!(
        (report.num_rows, report.skipped.total()),
        (4_504, 0),
        "{report}"
    );
    assert_eq!(report.num_unlabelled, 4_504);
}

#[test]
fn an_eve_draft_keeps_flow_events_and_labels_them_by_alerted() {
    for (path, num_flows) in [(EVE_PAIRED, 333), (EVE_TEST6, 3_512)] {
        let text = draft(path, FileFormat::Jsonl, false);
        assert!(text.contains("[filter]\nevent_type = \"flow\"\n"), "{text}");
        assert_ignored(
            &text,
            &[
                "timestamp",
                "flow_id",
                "src_ip",
                "dest_ip",
                "src_port",
                "flow.start",
                "flow.end",
            ],
        );
        assert_eq!(kind_of(&text, "flow.alerted"), "kind = \"label\"");
        assert!(column_text(&text, "flow.alerted").contains("benign = [\"false\"]"));
        assert!(column_text(&text, "flow.bytes_toserver").contains("divisor = 28.0"));
        let report = load_with_draft(path, FileFormat::Jsonl, &text);
        assert_eq!(report.num_rows, num_flows, "{path}");
        assert_eq!(report.skipped.total(), 0, "{report}");
    }
    let paired = draft(EVE_PAIRED, FileFormat::Jsonl, false);
    assert_eq!(
        column_text(&paired, "community_id")
            .lines()
            .take(2)
            .collect::<Vec<_>>(),
        ["kind = \"identity\"", "role = \"network.community_id\""]
    );
    assert_eq!(kind_of(&paired, "event_type"), "kind = \"ignore\"");
    // Suricata writes tcp_flags as hex strings ("1e"): text, even where they read as numbers.
    assert_eq!(kind_of(&paired, "tcp.tcp_flags"), "kind = \"categorical\"");
    let test6 = draft(EVE_TEST6, FileFormat::Jsonl, false);
    assert!(column_text(&test6, "metadata.flowbits").contains("set = true"));
}

#[test]
fn an_argus_csv_draft_reads_the_header_and_finds_the_label_empty() {
    let text = draft(ARGUS, FileFormat::Csv, false);
    assert!(text.contains("has_header = true\ndelimiter = \",\"\n"));
    assert_ignored(
        &text,
        &["StartTime", "SrcAddr", "DstAddr", "Sport", "Label"],
    );
    assert!(text.contains(
        "# why: label-like, but empty in every sampled record, so the file is unlabelled\nname = \"Label\""
    ));
    assert!(text.contains("# No column holds labels"));
    // ICMP rows hold hex ports such as 0x0008, so Dport is text.
    assert_eq!(kind_of(&text, "Dport"), "kind = \"categorical\"");
    assert!(text.contains("# why: text (not every value is a number, e.g. \"0x"));
    assert!(column_text(&text, "TotBytes").contains("divisor = 28.0"));
    assert!(column_text(&text, "dTos").contains("missing = 0.0"));
    let report = load_with_draft(ARGUS, FileFormat::Csv, &text);
    assert_eq!(
        (report.num_rows, report.skipped.total()),
        (6_751, 0),
        "{report}"
    );
}

/// Returns the values of Zeek TSV column `name` (unset `-` left out),
/// splitting rows on tabs and the IoT-23 tail on spaces.
fn zeek_values(relative_path: &str, name: &str) -> Vec<String> {
    let mut text = String::new();
    open_sample(relative_path)
        .read_to_string(&mut text)
        .unwrap();
    let split = |line: &str| -> Vec<String> {
        line.trim_end_matches('\r')
            .split('\t')
            .flat_map(|field| field.split("   "))
            .map(str::to_string)
            .collect()
    };
    let fields_line = text
        .lines()
        .find(|line| line.starts_with("#fields"))
        .unwrap();
    let position = split(fields_line)
        .iter()
        .position(|field| field == name)
        .unwrap()
        - 1;
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| split(line)[position].clone())
        .filter(|value| value != "-")
        .collect()
}

/// Returns the number after `key = ` in `text`.
fn number_after(text: &str, key: &str) -> f64 {
    let start = text.find(&format!("{key} = ")).unwrap() + key.len() + 3;
    let end = text[start..].find([',', ' ']).unwrap() + start;
    text[start..end].parse().unwrap()
}

#[test]
fn fit_computes_standardize_constants_vocabularies_and_labels_from_the_file() {
    let text = draft(IOT23_TROJAN, FileFormat::Zeek, true);
    assert!(text.contains(
        "# Fitted: the standardize constants, vocabularies and label values below were computed from conn.log.labeled."
    ));
    let bytes: Vec<f64> = zeek_values(IOT23_TROJAN, "orig_bytes")
        .iter()
        .map(|value| value.parse::<f64>().unwrap().clamp(0.0, 1e12).ln_1p())
        .collect();
    let mean = bytes.iter().sum::<f64>() / bytes.len() as f64;
    let std = (bytes
        .iter()
        .map(|value| (value - mean).powi(2))
        .sum::<f64>()
        / bytes.len() as f64)
        .sqrt();
    let orig_bytes = column_text(&text, "orig_bytes");
    assert!(
        (number_after(orig_bytes, "mean") - mean).abs() < 1e-9,
        "{orig_bytes} vs {mean}"
    );
    assert!(
        (number_after(orig_bytes, "std") - std).abs() < 1e-9,
        "{orig_bytes} vs {std}"
    );

    let mut history_counts: HashMap<String, usize> = HashMap::new();
    for value in zeek_values(IOT23_TROJAN, "history") {
        *history_counts.entry(value).or_insert(0) += 1;
    }
    let mut by_frequency: Vec<(String, usize)> = history_counts.into_iter().collect();
    by_frequency.sort_by(|left, right| right.1.cmp(&left.1).then(left.0.cmp(&right.0)));
    let top: Vec<String> = by_frequency
        .iter()
        .take(20)
        .map(|(value, _)| format!("{value:?}"))
        .collect();
    assert!(
        column_text(&text, "history").contains(&format!("vocabulary = [{}]", top.join(", "))),
        "{}",
        column_text(&text, "history")
    );
    // 4,420 Benign and 6 Malicious rows.
    let label = column_text(&text, "label");
    assert!(label.contains("benign = [\"Benign\"]\nunlisted_labels = \"skip\"\nclasses = { malicious = [\"Malicious\"] }"), "{label}");
    let report = load_with_draft(IOT23_TROJAN, FileFormat::Zeek, &text);
    assert_eq!(
        (report.num_rows, report.skipped.total()),
        (4_426, 0),
        "{report}"
    );

    let ctu50 = draft(CTU50_HOST_008, FileFormat::Zeek, true);
    assert!(column_text(&ctu50, "label").contains("# skipped: [\"Background\"]"));
    let ctu50_report = load_with_draft(CTU50_HOST_008, FileFormat::Zeek, &ctu50);
    // 4,201 Malicious and 1,402 Benign rows; the 60 Background rows are skipped.
    assert_eq!(ctu50_report.num_rows, 5_603);
    assert_eq!(ctu50_report.skipped.num_malformed, 0, "{ctu50_report}");
    assert_eq!(ctu50_report.skipped.total(), 60, "{ctu50_report}");
}

#[test]
fn a_draft_of_a_file_guesses_its_format_and_bad_input_names_the_file() {
    let directory = tempfile::tempdir().unwrap();
    let path = sample(IOT23_TROJAN);
    let text = draft_schema(&path, &DraftOptions::default()).unwrap();
    assert!(text.contains("format = \"zeek\""));

    let draft_error = |file_name: &str, content: Option<&str>| {
        let path = directory.path().join(file_name);
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let error = draft_schema(&path, &DraftOptions::default()).unwrap_err();
        (error.to_string(), path.display().to_string())
    };
    let (message, empty) = draft_error("empty.log", Some("\n\n"));
    assert_eq!(
        message,
        format!("{empty} is empty: there is nothing to draft a schema from")
    );
    let (message, absent) = draft_error("absent.log", None);
    assert!(
        message.starts_with(&format!("failed to open {absent}")),
        "{message}"
    );
    let (message, eve) = draft_error(
        "eve.json",
        Some("{\"event_type\": \"flow\"}\n{\"event_type\": \n"),
    );
    assert!(
        message.starts_with(&format!("{eve}:2: column 15: ")),
        "{message}"
    );
    let (message, zeek) = draft_error("conn.log", Some("#separator \\x09\n1\t2\n"));
    assert_eq!(
        message,
        format!(
            "{zeek}:2: column 1: a data line comes before any #fields header, so its columns are unknown"
        )
    );
}
