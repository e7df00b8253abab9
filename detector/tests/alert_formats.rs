//! The alert formats against the published definitions of their standards:
//! every ECS document's fields against the ECS 8.11 field definitions (npm
//! `@elastic/ecs`), every OCSF finding against the JSON Schema of class 2004
//! (PyPI `ocsf-json-schema`), both vendored under `tests/data` (see the
//! PROVENANCE.md files there), and the native format against the verdict
//! line `fedshield detect` has always written.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use fedshield_detector::alert::{Alert, Contribution, EchoedField, IdentityRole, ModelKindName};
use fedshield_detector::format::timestamp::EventTime;
use fedshield_detector::format::{
    AlertFormat, AlertFormatName, ECS_VERSION, FormatContext, OCSF_VERSION, Severity, new_format,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// A change that breaks a valid encoding, for the negative tests.
type Edit = fn(&mut Value);

/// When the test alerts were scored: 2025-12-03T07:40:00.123Z.
const DETECTED_UNIX_MS: u64 = 1_764_747_600_123;

fn data_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(relative)
}

// ----------------------------------------------------------------------
// Test alerts

fn field(column: &str, role: Option<IdentityRole>, value: Option<&str>) -> EchoedField {
    EchoedField {
        column: column.to_owned(),
        role,
        value: value.map(str::to_owned),
    }
}

/// Zeek conn.log identity columns, in schema order, with `service` echoed
/// through `--include-fields` (no role).
fn zeek_fields(
    ts: Option<&str>,
    source_ip: Option<&str>,
    source_port: Option<&str>,
    destination_ip: Option<&str>,
    destination_port: Option<&str>,
) -> Vec<EchoedField> {
    vec![
        field("ts", Some(IdentityRole::Timestamp), ts),
        field(
            "uid",
            Some(IdentityRole::EventId),
            Some("CHhAvVGS1DHFjwGM9"),
        ),
        field("id.orig_h", Some(IdentityRole::SourceIp), source_ip),
        field("id.orig_p", Some(IdentityRole::SourcePort), source_port),
        field(
            "id.resp_h",
            Some(IdentityRole::DestinationIp),
            destination_ip,
        ),
        field(
            "id.resp_p",
            Some(IdentityRole::DestinationPort),
            destination_port,
        ),
        field("proto", Some(IdentityRole::Transport), Some("TCP")),
        field(
            "community_id",
            Some(IdentityRole::CommunityId),
            Some("1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
        ),
        field("service", None, Some("ssh")),
    ]
}

fn base_alert(kind: ModelKindName, score: f64, threshold: f64) -> Alert {
    Alert {
        source: "conn.log".to_owned(),
        line: 42,
        score,
        threshold,
        alert_fpr: None,
        is_attack: score >= threshold,
        category: None,
        model_version: 5,
        model_sha256: "9f2c8e1b7a3d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6".to_owned(),
        model_kind: kind,
        fields: zeek_fields(
            Some("1526044838.104366"),
            Some("192.168.10.5"),
            Some("49152"),
            Some("203.0.113.7"),
            Some("22"),
        ),
        explanation: Vec::new(),
        count: 1,
        detected_unix_ms: DETECTED_UNIX_MS,
    }
}

fn attack_with_category() -> Alert {
    let mut alert = base_alert(ModelKindName::MulticlassClassifier, 4.25, 1.5);
    alert.category = Some("SSH-Bruteforce".to_owned());
    alert.alert_fpr = Some(0.001);
    alert.explanation = vec![
        Contribution {
            column: "service".to_owned(),
            value: Some("ssh".to_owned()),
            weight: 2.5,
        },
        Contribution {
            column: "duration".to_owned(),
            value: Some("0.000412".to_owned()),
            weight: 0.75,
        },
        Contribution {
            column: "orig_bytes".to_owned(),
            value: None,
            weight: 0.125,
        },
    ];
    alert
}

fn benign() -> Alert {
    let mut alert = base_alert(ModelKindName::BinaryClassifier, f64::from(-4.68f32), 0.0);
    alert.line = 2;
    alert
}

fn missing_fields() -> Alert {
    let mut alert = base_alert(ModelKindName::BinaryClassifier, 0.5, 0.0);
    alert.fields = zeek_fields(None, Some("10.0.0.1"), None, None, None);
    alert.fields[1].value = None;
    alert.fields[7].value = None;
    alert
}

fn not_an_ip_address() -> Alert {
    let mut alert = base_alert(ModelKindName::BinaryClassifier, 2.0, 0.0);
    alert.fields = zeek_fields(
        Some("not a time"),
        Some("gateway.example"),
        Some("http"),
        Some("10.0.0.300"),
        Some("70000"),
    );
    alert
}

fn ipv6() -> Alert {
    let mut alert = base_alert(ModelKindName::BinaryClassifier, 7.0, 0.0);
    alert.fields = zeek_fields(
        Some("1526044838"),
        Some("2001:db8::5"),
        Some("50000"),
        Some("fe80::1"),
        Some("443"),
    );
    alert
}

fn repeated() -> Alert {
    let mut alert = attack_with_category();
    alert.count = 17;
    alert
}

fn autoencoder() -> Alert {
    let mut alert = base_alert(ModelKindName::Autoencoder, 0.0375, 0.0125);
    alert.explanation = vec![Contribution {
        column: "resp_bytes".to_owned(),
        value: Some("1048576".to_owned()),
        weight: 0.03,
    }];
    alert
}

/// A Suricata-style event: RFC 3339 time with a `+hhmm` offset, flow id.
fn suricata() -> Alert {
    let mut alert = base_alert(ModelKindName::BinaryClassifier, 1.0, 0.0);
    alert.source = "-".to_owned();
    alert.fields = vec![
        field(
            "timestamp",
            Some(IdentityRole::Timestamp),
            Some("2018-05-11T15:20:38.104366+0200"),
        ),
        field(
            "flow_id",
            Some(IdentityRole::EventId),
            Some("1581945312617046"),
        ),
        field("src_ip", Some(IdentityRole::SourceIp), Some("192.168.10.5")),
        field(
            "dest_ip",
            Some(IdentityRole::DestinationIp),
            Some("8.8.8.8"),
        ),
        field("proto", Some(IdentityRole::Transport), Some("UDP")),
    ];
    alert
}

fn without_fields() -> Alert {
    let mut alert = base_alert(ModelKindName::BinaryClassifier, 3.0, 0.0);
    alert.fields = Vec::new();
    alert
}

fn every_case() -> Vec<(&'static str, Alert)> {
    vec![
        ("attack with category", attack_with_category()),
        ("benign", benign()),
        ("missing fields", missing_fields()),
        ("not an ip address", not_an_ip_address()),
        ("ipv6", ipv6()),
        ("repeated", repeated()),
        ("autoencoder", autoencoder()),
        ("suricata", suricata()),
        ("without fields", without_fields()),
    ]
}

fn encode(name: AlertFormatName, alert: &Alert) -> Value {
    let format = new_format(name, &FormatContext::for_test());
    let mut out = b"prefix:".to_vec();
    format.encode(alert, &mut out);
    let encoded = out
        .strip_prefix(b"prefix:")
        .expect("encode appends to what out holds");
    assert!(
        !encoded.contains(&b'\n'),
        "one object without a line feed: {}",
        String::from_utf8_lossy(encoded)
    );
    serde_json::from_slice(encoded).expect("the encoding is one JSON value")
}

// ----------------------------------------------------------------------
// ECS validation

#[derive(Deserialize)]
struct EcsDefinitions {
    ecs_version: String,
    fields: HashMap<String, EcsField>,
}

#[derive(Deserialize)]
struct EcsField {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    normalize: Vec<String>,
    #[serde(default)]
    allowed_values: Vec<String>,
    #[serde(default)]
    expected_event_types: HashMap<String, Vec<String>>,
}

fn ecs_definitions() -> &'static EcsDefinitions {
    static DEFINITIONS: OnceLock<EcsDefinitions> = OnceLock::new();
    DEFINITIONS.get_or_init(|| {
        let path = data_path("ecs/ecs_fields-8.11.0.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()));
        serde_json::from_str(&text).expect("the vendored ECS definitions parse")
    })
}

/// Returns every way `document` breaks the ECS definitions: fields ECS does
/// not define (outside the custom `fedshield` object), values of the wrong
/// type, scalars where ECS normalizes to arrays, values outside the allowed
/// ones, event types a category does not expect, a missing `ecs.version`
/// or `@timestamp`.
fn ecs_problems(document: &Value) -> Vec<String> {
    let definitions = ecs_definitions();
    let mut problems = Vec::new();
    let Some(object) = document.as_object() else {
        return vec!["the document is not an object".to_owned()];
    };
    walk_ecs(definitions, "", object, &mut problems);
    for required in ["@timestamp", "ecs.version"] {
        if ecs_leaf(document, required).is_none() {
            problems.push(format!("{required}: missing"));
        }
    }
    if let (Some(Value::Array(categories)), Some(Value::Array(types))) = (
        ecs_leaf(document, "event.category"),
        ecs_leaf(document, "event.type"),
    ) {
        let expected = &definitions.fields["event.category"].expected_event_types;
        for category in categories.iter().filter_map(Value::as_str) {
            let Some(expected_types) = expected.get(category) else {
                continue;
            };
            for event_type in types.iter().filter_map(Value::as_str) {
                if !expected_types.iter().any(|allowed| allowed == event_type) {
                    problems.push(format!(
                        "event.type: {event_type:?} is not expected for category {category:?}"
                    ));
                }
            }
        }
    }
    problems
}

fn ecs_leaf<'v>(document: &'v Value, path: &str) -> Option<&'v Value> {
    if let Some(value) = document.get(path) {
        return Some(value);
    }
    path.split('.')
        .try_fold(document, |value, key| value.get(key))
}

fn walk_ecs(
    definitions: &EcsDefinitions,
    prefix: &str,
    object: &Map<String, Value>,
    problems: &mut Vec<String>,
) {
    for (key, value) in object {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if path == "fedshield" {
            if !value.is_object() {
                problems.push("fedshield: the custom fields are not an object".to_owned());
            }
            continue;
        }
        match (definitions.fields.get(&path), value) {
            (Some(definition), _) => check_ecs_value(&path, definition, value, problems),
            (None, Value::Object(children)) => walk_ecs(definitions, &path, children, problems),
            (None, _) => problems.push(format!("{path}: not an ECS field")),
        }
    }
}

fn check_ecs_value(path: &str, definition: &EcsField, value: &Value, problems: &mut Vec<String>) {
    let is_array_field = definition.normalize.iter().any(|rule| rule == "array");
    let values: Vec<&Value> = match value {
        Value::Array(items) if is_array_field => items.iter().collect(),
        Value::Array(_) => {
            problems.push(format!("{path}: an array where ECS has one value"));
            return;
        }
        _ if is_array_field => {
            problems.push(format!("{path}: ECS normalizes this field to an array"));
            return;
        }
        scalar => vec![scalar],
    };
    for value in values {
        let fits = match definition.kind.as_str() {
            "keyword" | "constant_keyword" | "wildcard" | "match_only_text" | "text" => {
                value.is_string()
            }
            "ip" => value
                .as_str()
                .is_some_and(|text| text.parse::<IpAddr>().is_ok()),
            "long" | "integer" | "short" | "byte" | "unsigned_long" => {
                value.is_i64() || value.is_u64()
            }
            "float" | "half_float" | "scaled_float" | "double" => value.is_number(),
            "date" => value.as_str().is_some_and(is_rfc3339),
            "boolean" => value.is_boolean(),
            "object" | "flattened" | "nested" => value.is_object() || value.is_array(),
            other => {
                problems.push(format!("{path}: ECS type {other} is not checked here"));
                continue;
            }
        };
        if !fits {
            problems.push(format!("{path}: {value} is not an ECS {}", definition.kind));
            continue;
        }
        if !definition.allowed_values.is_empty() {
            let text = value.as_str().unwrap_or_default();
            if !definition
                .allowed_values
                .iter()
                .any(|allowed| allowed == text)
            {
                problems.push(format!("{path}: {value} is not an allowed value"));
            }
        }
    }
}

/// Checks the RFC 3339 shape `YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)`
/// independently of the format's own parser.
fn is_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digit_at = |index: usize| bytes.get(index).is_some_and(u8::is_ascii_digit);
    let shape = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
        .into_iter()
        .all(digit_at)
        && bytes.len() >= 20
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !shape {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let num_digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if num_digits == 0 {
            return false;
        }
        rest = &fraction[num_digits..];
    }
    rest == "Z"
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':')
}

// ----------------------------------------------------------------------
// OCSF validation

fn ocsf_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path = data_path("ocsf/detection_finding-1.8.0.schema.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()));
        let schema: Value = serde_json::from_str(&text).expect("the vendored schema parses");
        jsonschema::validator_for(&schema).expect("the vendored OCSF schema compiles")
    })
}

#[derive(Deserialize)]
struct OcsfDictionary {
    version: String,
    class: HashMap<String, OcsfDefinition>,
    objects: HashMap<String, OcsfDefinition>,
}

#[derive(Deserialize)]
struct OcsfDefinition {
    #[serde(default)]
    uid: Option<u64>,
    attributes: HashMap<String, OcsfAttribute>,
}

#[derive(Deserialize)]
struct OcsfAttribute {
    requirement: String,
    #[serde(default)]
    profiles: Option<Vec<String>>,
    #[serde(default)]
    enum_captions: Option<HashMap<String, Option<String>>>,
}

fn ocsf_dictionary() -> &'static OcsfDictionary {
    static DICTIONARY: OnceLock<OcsfDictionary> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let path = data_path("ocsf/detection_finding-1.8.0.attributes.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()));
        let mut raw: Value = serde_json::from_str(&text).expect("the vendored dictionary parses");
        // `enum` is a Rust keyword; read it as `enum_captions`.
        rename_enum_keys(&mut raw);
        serde_json::from_value(raw).expect("the vendored dictionary has the expected shape")
    })
}

fn rename_enum_keys(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(captions) = object.remove("enum") {
                object.insert("enum_captions".to_owned(), captions);
            }
            object.values_mut().for_each(rename_enum_keys);
        }
        Value::Array(items) => items.iter_mut().for_each(rename_enum_keys),
        _ => {}
    }
}

/// Returns every way `finding` breaks OCSF 1.8.0's Detection Finding: the
/// JSON Schema's errors (required attributes, types, enum ids, ranges,
/// patterns, no attribute outside the class and its objects), and beyond
/// the schema: a caption that does not match its enum id (`severity` for
/// `severity_id`), a `type_uid` that is not `class_uid * 100 + activity_id`,
/// a recommended attribute missing.
fn ocsf_problems(finding: &Value) -> Vec<String> {
    let mut problems: Vec<String> = ocsf_validator()
        .iter_errors(finding)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect();
    let dictionary = ocsf_dictionary();
    let class = &dictionary.class["detection_finding"];
    check_captions("", class, finding, &mut problems);
    let objects = [
        ("/metadata", "metadata"),
        ("/metadata/product", "product"),
        ("/finding_info", "finding_info"),
        ("/finding_info/analytic", "analytic"),
        ("/evidences/0", "evidences"),
        ("/evidences/0/src_endpoint", "network_endpoint"),
        ("/evidences/0/dst_endpoint", "network_endpoint"),
        ("/evidences/0/connection_info", "network_connection_info"),
    ];
    for (pointer, object_name) in objects {
        if let Some(object) = finding.pointer(pointer) {
            check_captions(
                pointer,
                &dictionary.objects[object_name],
                object,
                &mut problems,
            );
        }
    }
    let number = |key: &str| finding.get(key).and_then(Value::as_u64);
    if let (Some(class_uid), Some(activity_id), Some(type_uid)) = (
        number("class_uid"),
        number("activity_id"),
        number("type_uid"),
    ) && type_uid != class_uid * 100 + activity_id
    {
        problems.push(format!(
            "/type_uid: {type_uid} is not class_uid * 100 + activity_id"
        ));
    }
    if number("class_uid") != class.uid {
        problems.push("/class_uid: not the vendored class's uid".to_owned());
    }
    // Recommended attributes of the class fedshield always knows (those of
    // profiles it does not declare aside).
    for name in ["confidence_id", "is_alert", "message", "status_id"] {
        let attribute = &class.attributes[name];
        assert_eq!(attribute.requirement, "recommended", "{name}");
        if attribute.profiles.is_none() && finding.get(name).is_none() {
            problems.push(format!("/{name}: recommended, missing"));
        }
    }
    for (pointer, name) in [
        ("/finding_info", "title"),
        ("/finding_info", "analytic"),
        ("/metadata/product", "vendor_name"),
        ("/metadata/product", "version"),
        ("/metadata", "reporter"),
    ] {
        if finding
            .pointer(pointer)
            .is_some_and(|object| object.get(name).is_none())
        {
            problems.push(format!("{pointer}/{name}: recommended, missing"));
        }
    }
    problems
}

/// Checks that each enum attribute's caption sibling (`severity` beside
/// `severity_id`, `class_name` beside `class_uid`) is the id's caption.
fn check_captions(
    pointer: &str,
    definition: &OcsfDefinition,
    object: &Value,
    problems: &mut Vec<String>,
) {
    for (name, attribute) in &definition.attributes {
        let Some(captions) = &attribute.enum_captions else {
            continue;
        };
        let Some(id) = object.get(name).and_then(Value::as_u64) else {
            continue;
        };
        let base = name
            .strip_suffix("_id")
            .or_else(|| name.strip_suffix("_uid"))
            .unwrap_or(name);
        let siblings = [base.to_owned(), format!("{base}_name")];
        for sibling in siblings.iter().filter(|sibling| *sibling != name) {
            let Some(written) = object.get(sibling).and_then(Value::as_str) else {
                continue;
            };
            let expected = captions.get(&id.to_string()).cloned().flatten();
            if expected.as_deref() != Some(written) {
                problems.push(format!(
                    "{pointer}/{sibling}: {written:?} is not the caption of {name} {id} ({expected:?})"
                ));
            }
        }
    }
}

// ----------------------------------------------------------------------
// The vendored definitions themselves

#[test]
fn vendored_definitions_are_the_versions_the_formats_declare() {
    assert_eq!(ecs_definitions().ecs_version, ECS_VERSION);
    assert_eq!(ocsf_dictionary().version, OCSF_VERSION);
    assert_eq!(ocsf_dictionary().class["detection_finding"].uid, Some(2004));
}

// ----------------------------------------------------------------------
// Native

#[test]
fn native_keeps_the_verdict_line_keys_and_their_values() {
    let encoded = {
        let mut out = Vec::new();
        new_format(AlertFormatName::Native, &FormatContext::for_test()).encode(&benign(), &mut out);
        String::from_utf8(out).expect("json is utf-8")
    };
    assert!(
        encoded.starts_with(r#"{"line":2,"score":-4.68,"verdict":"benign","model_version":5,"#),
        "{encoded}"
    );
    let native = encode(AlertFormatName::Native, &benign());
    assert_eq!(native["source"], "conn.log");
    assert_eq!(native["threshold"], json!(0.0));
    assert_eq!(native["detected_at"], "2025-12-03T07:40:00.123Z");
    assert_eq!(native["fields"]["id.orig_h"], "192.168.10.5");
    assert_eq!(native["fields"]["service"], "ssh");
    for omitted in ["category", "alert_fpr", "explanation", "count"] {
        assert!(native.get(omitted).is_none(), "{omitted}: {native}");
    }
}

#[test]
fn native_adds_category_explanation_and_count_when_they_say_something() {
    let native = encode(AlertFormatName::Native, &repeated());
    assert_eq!(native["verdict"], "attack");
    assert_eq!(native["category"], "SSH-Bruteforce");
    assert_eq!(native["alert_fpr"], json!(0.001));
    assert_eq!(native["count"], json!(17));
    assert_eq!(
        native["explanation"],
        json!([
            {"column": "service", "value": "ssh", "weight": 2.5},
            {"column": "duration", "value": "0.000412", "weight": 0.75},
            {"column": "orig_bytes", "value": null, "weight": 0.125},
        ])
    );
}

#[test]
fn native_writes_absent_columns_as_null() {
    let native = encode(AlertFormatName::Native, &missing_fields());
    assert_eq!(native["fields"]["uid"], Value::Null);
    assert_eq!(native["fields"]["id.orig_p"], Value::Null);
    assert_eq!(native["fields"]["id.orig_h"], "10.0.0.1");
    let columns: Vec<&String> = native["fields"]
        .as_object()
        .expect("fields is an object")
        .keys()
        .collect();
    assert_eq!(columns.len(), 9, "{columns:?}");
}

// ----------------------------------------------------------------------
// ECS

#[test]
fn every_ecs_document_validates_against_the_ecs_definitions() {
    for (case, alert) in every_case() {
        let document = encode(AlertFormatName::Ecs, &alert);
        let problems = ecs_problems(&document);
        assert!(problems.is_empty(), "{case}: {problems:#?}\n{document:#}");
    }
}

#[test]
fn ecs_places_the_flow_in_standard_fields() {
    let document = encode(AlertFormatName::Ecs, &attack_with_category());
    assert_eq!(document["@timestamp"], "2018-05-11T13:20:38.104366Z");
    assert_eq!(document["ecs"]["version"], ECS_VERSION);
    assert_eq!(document["event"]["kind"], "alert");
    assert_eq!(document["event"]["id"], "CHhAvVGS1DHFjwGM9");
    assert_eq!(document["event"]["created"], "2025-12-03T07:40:00.123Z");
    assert_eq!(
        document["source"],
        json!({"ip": "192.168.10.5", "port": 49152})
    );
    assert_eq!(
        document["destination"],
        json!({"ip": "203.0.113.7", "port": 22})
    );
    assert_eq!(
        document["network"],
        json!({
            "transport": "tcp",
            "iana_number": "6",
            "community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            "type": "ipv4",
        })
    );
    assert_eq!(document["rule"]["version"], "5");
    assert_eq!(document["rule"]["category"], "SSH-Bruteforce");
    assert_eq!(document["rule"]["id"], "fedshield-zeek_conn");
    assert_eq!(document["observer"]["hostname"], "detector-test");
    // Severity from the likelihood: logistic(4.25) = 0.986: critical.
    assert_eq!(
        document["event"]["severity"],
        json!(Severity::Critical.id())
    );
    assert_eq!(document["event"]["risk_score"], json!(98.59));
    let fedshield = &document["fedshield"];
    assert_eq!(fedshield["score"], json!(4.25));
    assert_eq!(fedshield["threshold"], json!(1.5));
    assert_eq!(fedshield["count"], json!(1));
    assert_eq!(fedshield["model"]["kind"], "multiclass_classifier");
    // Only `service` has no role: the placed columns are not repeated.
    assert_eq!(fedshield["fields"], json!({"service": "ssh"}));
    assert_eq!(fedshield["explanation"][0]["column"], "service");
    assert!(
        document.get("threat").is_none(),
        "no fabricated ATT&CK data"
    );
}

#[test]
fn ecs_keeps_values_that_do_not_fit_their_field_under_fedshield() {
    let document = encode(AlertFormatName::Ecs, &not_an_ip_address());
    assert!(document.get("source").is_none(), "{document:#}");
    assert!(document.get("destination").is_none(), "{document:#}");
    // No event time: @timestamp is the detection time.
    assert_eq!(document["@timestamp"], "2025-12-03T07:40:00.123Z");
    assert_eq!(
        document["fedshield"]["fields"],
        json!({
            "ts": "not a time",
            "id.orig_h": "gateway.example",
            "id.orig_p": "http",
            "id.resp_h": "10.0.0.300",
            "id.resp_p": "70000",
            "service": "ssh",
        })
    );
}

#[test]
fn ecs_marks_benign_verdicts_as_events_and_ipv6_flows_as_ipv6() {
    let document = encode(AlertFormatName::Ecs, &benign());
    assert_eq!(document["event"]["kind"], "event");
    assert_eq!(
        document["event"]["severity"],
        json!(Severity::Informational.id())
    );
    let document = encode(AlertFormatName::Ecs, &ipv6());
    assert_eq!(document["network"]["type"], "ipv6");
    assert_eq!(document["source"]["ip"], "2001:db8::5");
    assert_eq!(document["@timestamp"], "2018-05-11T13:20:38Z");
    let document = encode(AlertFormatName::Ecs, &suricata());
    assert_eq!(document["@timestamp"], "2018-05-11T13:20:38.104366Z");
    assert_eq!(document["network"]["transport"], "udp");
}

#[test]
fn ecs_validation_rejects_unknown_fields_wrong_types_and_values() {
    let valid = encode(AlertFormatName::Ecs, &attack_with_category());
    assert!(ecs_problems(&valid).is_empty());
    let broken = |edit: Edit| {
        let mut document = valid.clone();
        edit(&mut document);
        ecs_problems(&document)
    };
    let cases: [(&str, Edit); 8] = [
        ("a port as text", |document| {
            document["source"]["port"] = json!("49152");
        }),
        ("an address that is no address", |document| {
            document["destination"]["ip"] = json!("gateway.example");
        }),
        ("event.count, which ECS lacks", |document| {
            document["event"]["count"] = json!(3);
        }),
        ("a kind ECS does not allow", |document| {
            document["event"]["kind"] = json!("finding");
        }),
        ("a category as a single value", |document| {
            document["event"]["category"] = json!("network");
        }),
        ("an event type the category does not expect", |document| {
            document["event"]["type"] = json!(["creation"]);
        }),
        ("a date that is no date", |document| {
            document["event"]["created"] = json!(1_764_747_600_123u64);
        }),
        ("no ecs.version", |document| {
            document.as_object_mut().expect("an object").remove("ecs");
        }),
    ];
    for (case, edit) in cases {
        assert!(!broken(edit).is_empty(), "accepted {case}");
    }
}

// ----------------------------------------------------------------------
// OCSF

#[test]
fn every_ocsf_finding_validates_against_the_class_2004_schema() {
    for (case, alert) in every_case() {
        let finding = encode(AlertFormatName::Ocsf, &alert);
        let problems = ocsf_problems(&finding);
        assert!(problems.is_empty(), "{case}: {problems:#?}\n{finding:#}");
    }
}

#[test]
fn ocsf_places_the_flow_as_evidence() {
    let finding = encode(AlertFormatName::Ocsf, &repeated());
    assert_eq!(finding["class_uid"], json!(2004));
    assert_eq!(finding["type_uid"], json!(200401));
    assert_eq!(finding["metadata"]["version"], OCSF_VERSION);
    assert_eq!(finding["metadata"]["original_time"], "1526044838.104366");
    assert_eq!(finding["time"], json!(DETECTED_UNIX_MS));
    assert_eq!(finding["count"], json!(17));
    assert_eq!(finding["is_alert"], json!(true));
    assert_eq!(
        finding["finding_info"]["uid"],
        "fedshield:5:CHhAvVGS1DHFjwGM9"
    );
    assert_eq!(finding["finding_info"]["types"], json!(["SSH-Bruteforce"]));
    assert_eq!(
        finding["finding_info"]["first_seen_time"],
        json!(1_526_044_838_104u64)
    );
    assert_eq!(finding["finding_info"]["analytic"]["type_id"], json!(4));
    assert_eq!(finding["finding_info"]["analytic"]["version"], "5");
    assert_eq!(
        finding["evidences"],
        json!([{
            "src_endpoint": {"ip": "192.168.10.5", "port": 49152},
            "dst_endpoint": {"ip": "203.0.113.7", "port": 22},
            "connection_info": {
                "direction_id": 0,
                "direction": "Unknown",
                "protocol_name": "tcp",
                "protocol_num": 6,
                "community_uid": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
                "uid": "CHhAvVGS1DHFjwGM9",
            },
        }])
    );
    assert_eq!(finding["unmapped"]["fields"], json!({"service": "ssh"}));
    assert_eq!(finding["unmapped"]["explanation"][1]["weight"], json!(0.75));
}

#[test]
fn ocsf_leaves_out_endpoints_without_an_address() {
    let finding = encode(AlertFormatName::Ocsf, &not_an_ip_address());
    let evidence = &finding["evidences"][0];
    assert!(evidence.get("src_endpoint").is_none(), "{finding:#}");
    assert!(evidence.get("dst_endpoint").is_none(), "{finding:#}");
    assert_eq!(
        finding["unmapped"]["fields"]["id.orig_h"],
        "gateway.example"
    );
    let finding = encode(AlertFormatName::Ocsf, &without_fields());
    assert!(finding.get("evidences").is_none(), "{finding:#}");
    assert_eq!(finding["finding_info"]["uid"], "fedshield:5:conn.log:42");
}

#[test]
fn ocsf_severity_follows_the_likelihood_of_attack() {
    let benign = encode(AlertFormatName::Ocsf, &benign());
    assert_eq!(benign["severity_id"], json!(1));
    assert_eq!(benign["is_alert"], json!(false));
    // An autoencoder at three times its threshold: 1 - 2^-3 = 0.875: high.
    let anomaly = encode(AlertFormatName::Ocsf, &autoencoder());
    assert_eq!(anomaly["severity"], "High");
    assert_eq!(anomaly["confidence_score"], json!(88));
    assert_eq!(anomaly["finding_info"]["types"], json!(["Network Anomaly"]));
    assert_eq!(
        anomaly["finding_info"]["analytic"]["algorithm"],
        "autoencoder"
    );
}

#[test]
fn ocsf_validation_rejects_missing_attributes_wrong_types_and_ids() {
    let valid = encode(AlertFormatName::Ocsf, &attack_with_category());
    assert!(ocsf_problems(&valid).is_empty());
    let broken = |edit: Edit| {
        let mut finding = valid.clone();
        edit(&mut finding);
        ocsf_problems(&finding)
    };
    let cases: [(&str, Edit); 8] = [
        ("no finding uid", |finding| {
            finding["finding_info"]
                .as_object_mut()
                .expect("an object")
                .remove("uid");
        }),
        ("a severity id OCSF lacks", |finding| {
            finding["severity_id"] = json!(7);
        }),
        ("an attribute outside the class", |finding| {
            finding["score"] = json!(4.25);
        }),
        ("an address that is no address", |finding| {
            finding["evidences"][0]["src_endpoint"]["ip"] = json!("gateway.example");
        }),
        ("a port out of range", |finding| {
            finding["evidences"][0]["dst_endpoint"]["port"] = json!(70_000);
        }),
        ("time as text", |finding| {
            finding["time"] = json!("2025-12-03T07:40:00.123Z");
        }),
        ("a caption that is not its id's", |finding| {
            finding["severity"] = json!("Low");
        }),
        ("a type uid of another activity", |finding| {
            finding["type_uid"] = json!(200402);
        }),
    ];
    for (case, edit) in cases {
        assert!(!broken(edit).is_empty(), "accepted {case}");
    }
}

// ----------------------------------------------------------------------
// Timestamps and cost

#[test]
fn event_times_read_zeek_seconds_and_rfc3339() {
    let zeek = EventTime::parse("1526044838.104366").expect("zeek ts parses");
    assert_eq!(zeek.to_string(), "2018-05-11T13:20:38.104366Z");
    assert!(is_rfc3339(&zeek.to_string()));
    assert_eq!(EventTime::parse("-"), None);
}

/// Prints encoding rates; `cargo test --release --test alert_formats -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn encoding_rates() {
    let context = FormatContext::for_test();
    let num_alerts = 200_000;
    let cases = [
        ("benign event", AlertFormatName::Native, benign()),
        ("attack", AlertFormatName::Native, attack_with_category()),
        ("attack", AlertFormatName::Ecs, attack_with_category()),
        ("attack", AlertFormatName::Ocsf, attack_with_category()),
    ];
    for (case, name, alert) in cases {
        let format: Box<dyn AlertFormat> = new_format(name, &context);
        let mut out = Vec::with_capacity(4096);
        let mut num_bytes = 0;
        let started = Instant::now();
        for _ in 0..num_alerts {
            out.clear();
            format.encode(&alert, &mut out);
            num_bytes += out.len();
        }
        let elapsed_secs = started.elapsed().as_secs_f64();
        println!(
            "{name}, {case}: {:.0} alerts/s, {} bytes per alert",
            f64::from(num_alerts) / elapsed_secs,
            num_bytes / num_alerts as usize
        );
    }
}
