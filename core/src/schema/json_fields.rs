//! Field lookup in JSON-lines records and the schema's record filter.
//!
//! A column `name` such as `flow.bytes_toserver` is looked up first as a
//! literal top-level key (Zeek's JSON writer emits flat dotted keys such as
//! `id.orig_h`), then as a path through nested objects (Suricata's `eve.json`
//! nests `{"flow": {"bytes_toserver": ...}}`). JSON `null` and a missing key
//! both mean absent, so the column's `missing` rule applies.
//!
//! The record filter, written in the schema as
//!
//! ```toml
//! [filter]
//! event_type = "flow"   # keep records whose field equals this string
//! "flow.alerted" = 0    # ... and this number (every entry must match)
//! ```
//!
//! keeps a record only when every listed field (resolved as above) equals its
//! value: a string matches a JSON string exactly, a number matches a JSON
//! number of equal value. Records it leaves out are counted as filtered, not
//! as malformed. Ingestion and the detector call the same
//! [`Schema::keeps_json_record`], so they keep the same records.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Schema;

/// The value a filter entry requires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum FilterValue {
    Number(f64),
    Text(String),
}

impl FilterValue {
    fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (FilterValue::Text(wanted), Value::String(text)) => wanted == text,
            (FilterValue::Number(wanted), Value::Number(number)) => {
                number.as_f64() == Some(*wanted)
            }
            _ => false,
        }
    }
}

/// Returns the value of field `name` in `object`: the literal key `name` if
/// present, else the path of `name`'s dot-separated parts through nested
/// objects; `None` when neither exists or the value is `null`.
pub fn resolve_json_field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let value = match object.get(name) {
        Some(value) => value,
        None => {
            let mut parts = name.split('.');
            let first = parts.next()?;
            let mut current = object.get(first)?;
            for part in parts {
                current = current.as_object()?.get(part)?;
            }
            current
        }
    };
    if value.is_null() { None } else { Some(value) }
}

impl Schema {
    /// Returns true if the schema's `[filter]` keeps `object`: every filter
    /// field, resolved by [`resolve_json_field`], equals its value. A schema
    /// without a filter keeps every record.
    pub fn keeps_json_record(&self, object: &Map<String, Value>) -> bool {
        self.file.filter.iter().all(|(name, wanted)| {
            resolve_json_field(object, name).is_some_and(|value| wanted.matches(value))
        })
    }

    /// Returns true if the schema has a `[filter]`.
    pub fn has_record_filter(&self) -> bool {
        !self.file.filter.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{IngestOptions, IngestReport, load_dataset_from_reader};
    use crate::model::data::Dataset;
    use crate::schema::{FileFormat, RecordFields};

    fn object(text: &str) -> Map<String, Value> {
        match serde_json::from_str(text) {
            Ok(Value::Object(object)) => object,
            other => panic!("not a json object: {other:?}"),
        }
    }

    /// A jsonl schema reading `flow.bytes_toserver` (log1p, missing 0) and
    /// `proto`, keeping records whose `event_type` is "flow".
    fn flow_schema(filter: &str) -> Schema {
        let text = format!(
            r#"
            format = "jsonl"
            {filter}
            [[columns]]
            name = "flow.bytes_toserver"
            kind = "numeric"
            transforms = [{{ clamp = {{ min = 0.0, max = 1e12 }} }}, "log1p"]
            missing = 0.0
            [[columns]]
            name = "proto"
            kind = "categorical"
            vocabulary = ["TCP", "UDP"]
            [[columns]]
            name = "label"
            kind = "label"
            benign = ["ok"]
            "#
        );
        Schema::from_toml_str(&text).unwrap()
    }

    /// Loads JSON-lines `input`, named `eve.json`, through `schema`.
    fn load_eve(schema: &Schema, input: &str) -> (Dataset, IngestReport) {
        load_dataset_from_reader(
            input.as_bytes(),
            "eve.json",
            FileFormat::Jsonl,
            schema,
            &IngestOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_literal_dotted_key_wins_over_the_nested_path() {
        let record = object(r#"{"id.orig_p": 1, "id": {"orig_p": 2}}"#);
        assert_eq!(
            resolve_json_field(&record, "id.orig_p"),
            Some(&Value::from(1))
        );
        let nested_only = object(r#"{"id": {"orig_p": 2}}"#);
        assert_eq!(
            resolve_json_field(&nested_only, "id.orig_p"),
            Some(&Value::from(2))
        );
    }

    #[test]
    fn nested_paths_reach_any_depth_and_null_or_missing_is_absent() {
        let record = object(r#"{"a": {"b": {"c": "deep"}, "n": null}, "s": "x"}"#);
        assert_eq!(
            resolve_json_field(&record, "a.b.c"),
            Some(&Value::from("deep"))
        );
        assert_eq!(resolve_json_field(&record, "a.n"), None);
        assert_eq!(resolve_json_field(&record, "a.b.missing"), None);
        assert_eq!(resolve_json_field(&record, "s.x"), None);
        assert_eq!(resolve_json_field(&record, "nothing"), None);
    }

    #[test]
    fn nested_fields_featurize_and_null_takes_the_missing_value() {
        let schema = flow_schema("");
        let (features, _) = schema
            .featurize(&RecordFields::Json(&object(
                r#"{"flow": {"bytes_toserver": 3}, "proto": "UDP"}"#,
            )))
            .unwrap();
        assert_eq!(features, [4f32.ln(), 0.0, 1.0, 0.0]);
        let (absent, _) = schema
            .featurize(&RecordFields::Json(&object(
                r#"{"flow": {"bytes_toserver": null}, "proto": "TCP"}"#,
            )))
            .unwrap();
        assert_eq!(absent, [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn an_object_or_array_at_a_numeric_column_is_an_error_naming_line_and_column() {
        let schema = flow_schema("");
        let input = concat!(
            r#"{"flow": {"bytes_toserver": 1}, "proto": "TCP", "label": "ok"}"#,
            "\n",
            r#"{"flow": {"bytes_toserver": {"x": 1}}, "proto": "TCP", "label": "ok"}"#,
            "\n",
            r#"{"flow": {"bytes_toserver": [1]}, "proto": "TCP", "label": "ok"}"#,
            "\n",
        );
        let (_, report) = load_eve(&schema, input);
        assert_eq!(report.num_rows, 1);
        assert_eq!(report.skipped.num_malformed, 2);
        let problems: Vec<String> = report
            .skipped_rows
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "eve.json:2: column \"flow.bytes_toserver\": expected a number, got an object",
                "eve.json:3: column \"flow.bytes_toserver\": expected a number, got an array",
            ]
        );
    }

    #[test]
    fn the_filter_keeps_equal_strings_and_numbers_and_counts_the_rest_as_filtered() {
        let schema = flow_schema("[filter]\nevent_type = \"flow\"\n\"flow.alerted\" = 0");
        let input = concat!(
            r#"{"event_type": "flow", "flow": {"bytes_toserver": 1, "alerted": 0}, "proto": "TCP", "label": "ok"}"#,
            "\n",
            r#"{"event_type": "flow", "flow": {"bytes_toserver": 1, "alerted": 1}, "proto": "TCP", "label": "ok"}"#,
            "\n",
            r#"{"event_type": "alert", "flow": {"alerted": 0}, "label": "ok"}"#,
            "\n",
            r#"{"event_type": "flow", "flow": {"bytes_toserver": 2, "alerted": 0.0}, "proto": "UDP", "label": "ok"}"#,
            "\n",
            r#"{"flow": {"alerted": 0}, "proto": "UDP"}"#,
            "\n",
        );
        let (dataset, report) = load_eve(&schema, input);
        assert_eq!(dataset.len(), 2);
        assert_eq!(report.num_filtered, 3);
        assert_eq!(report.skipped.total(), 0);
        assert_eq!(
            report.summary(),
            "loaded 2 rows from eve.json (3 filtered out)"
        );
        assert!(schema.has_record_filter());
        assert!(!flow_schema("").has_record_filter());
    }

    #[test]
    fn a_filter_survives_the_canonical_text_and_needs_jsonl() {
        let schema = flow_schema("[filter]\nevent_type = \"flow\"\nseverity = 2");
        let reread = Schema::from_toml_str(&schema.to_toml_string()).unwrap();
        assert_eq!(reread, schema);
        assert_ne!(schema.sha256(), flow_schema("").sha256());
        let csv_text = schema
            .to_toml_string()
            .replace("format = \"jsonl\"", "format = \"csv\"");
        let error = Schema::from_toml_str(&csv_text).unwrap_err().to_string();
        assert!(
            error.contains("filter: a record filter applies to format = \"jsonl\""),
            "{error}"
        );
    }
}
