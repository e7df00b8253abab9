//! The schema file as written: its TOML format, parsed with serde before
//! validation, and its canonical text.
//!
//! A schema lists the columns of a CSV or JSONL telemetry file and says what each
//! one becomes:
//!
//! ```toml
//! format = "csv"          # default format: "csv", "jsonl" or "zeek" (the loader also picks csv and
//!                         # jsonl by file extension); zeek columns are named by the #fields header
//! has_header = false      # csv only: match columns by header name (true) or by position (false)
//! delimiter = ","         # csv only: one ascii character
//!
//! [filter]                # jsonl only, optional: keep records whose fields equal these
//! event_type = "flow"     # values (strings or numbers); others are counted as filtered
//!
//! [alert_labels]         # optional, instead of a label column: label each flow by the
//! class_from = "category" # Suricata alerts that share its Community ID (--labels-from
//!                         # eve.json); keys and defaults in the `alert_labels` module
//!
//! [[columns]]
//! name = "duration"
//! kind = "numeric"        # one feature; transforms run in order and must bound it (a clamp)
//! transforms = [{ clamp = { min = 0.0, max = 1e6 } }, "log1p", { scale = { offset = 0.0, divisor = 10.0 } }]
//! missing = 0.0           # optional raw value for an empty or absent field (it goes through the transforms)
//!
//! [[columns]]
//! name = "protocol_type"
//! kind = "categorical"    # one-hot over the vocabulary plus one "other" slot for unseen values
//! vocabulary = ["tcp", "udp", "icmp"]
//!
//! [[columns]]
//! name = "service"
//! kind = "categorical"    # one-hot into hash_buckets slots by a stable hash (64-bit FNV-1a)
//! hash_buckets = 32
//!
//! [[columns]]
//! name = "services"       # a set-valued (multi-hot) categorical: every element of the value
//! kind = "categorical"    # sets its slot (vocabulary or hash bucket); an element outside the
//! vocabulary = ["dns", "http", "ssl", "quic"]  # vocabulary sets the "other" slot, a repeated one
//! set = true              # sets its slot once, and the empty set leaves every slot zero.
//! set_separator = ","     # optional, default ",": splits a csv field or a JSON string into elements;
//!                         # a JSON array's strings and numbers are its elements, and a zeek log
//!                         # splits on its #set_separator header (its (empty) marker is the empty
//!                         # set, its unset marker - is absent, so `missing` applies; a set column's
//!                         # missing value is split too: missing = "" makes an absent set empty)
//!
//! [[columns]]
//! name = "label"
//! kind = "label"          # at most one label column; a schema without one is unlabelled
//!                         # (every row is class 0: only the autoencoder trains on it)
//! benign = ["normal"]     # label values that mean benign
//! unlisted_labels = "error"  # a value neither benign nor classes lists: "error" (the default),
//!                         # "attack" (the last class), "benign" or "skip" (the row, counted)
//! attack = ["Malicious"]  # optional: label values that mean an attack of the last class, or, with
//!                         # class_column, an attack whose class that column's value names
//! skip = ["Background"]   # optional: label values whose rows are left out and counted
//! class_column = "detail" # optional: with attack, the column whose value picks the class (IoT-23's
//!                         # label = "Malicious" + detailed-label = "DDoS"); unlisted values: the last class
//! [columns.classes]       # optional attack classes, numbered 1, 2, ... in declaration order
//! dos = ["neptune", "smurf"]
//!
//! [[columns]]
//! name = "difficulty"
//! kind = "ignore"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize};

use super::Transform;
use super::alert_labels::AlertLabelsFile;
use super::json_fields::FilterValue;
use super::labels::{ClassTable, UnlistedLabels};

/// The file formats a schema can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Delimited text, one record per line (RFC 4180 quoting), with or without a header.
    Csv,
    /// One JSON object per line; a column name resolves a literal key first,
    /// then a dotted path through nested objects.
    Jsonl,
    /// A Zeek TSV log: `#` header directives name the columns and markers.
    Zeek,
}

impl FileFormat {
    /// Returns the format that `path`'s extension implies (`.csv`/`.txt` → csv,
    /// `.jsonl`/`.ndjson` → jsonl), or `None` for any other extension.
    pub fn from_extension(path: &Path) -> Option<FileFormat> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "csv" | "txt" => Some(FileFormat::Csv),
            "jsonl" | "ndjson" => Some(FileFormat::Jsonl),
            _ => None,
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileFormat::Csv => formatter.write_str("csv"),
            FileFormat::Jsonl => formatter.write_str("jsonl"),
            FileFormat::Zeek => formatter.write_str("zeek"),
        }
    }
}

/// The `missing` value of a column: a number for numeric columns, a string for categorical ones.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub(super) enum MissingValue {
    Number(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for MissingValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MissingValueVisitor;
        impl Visitor<'_> for MissingValueVisitor {
            type Value = MissingValue;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a number (numeric columns) or a string (categorical columns)")
            }
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<MissingValue, E> {
                Ok(MissingValue::Number(value))
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<MissingValue, E> {
                Ok(MissingValue::Number(value as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<MissingValue, E> {
                Ok(MissingValue::Number(value as f64))
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<MissingValue, E> {
                Ok(MissingValue::Text(value.to_string()))
            }
        }
        deserializer.deserialize_any(MissingValueVisitor)
    }
}

fn default_format() -> FileFormat {
    FileFormat::Csv
}

/// What splits a set-valued csv field or JSON string when the column names no `set_separator`.
pub(super) const DEFAULT_SET_SEPARATOR: &str = ",";

pub(super) fn default_delimiter() -> String {
    ",".to_string()
}

/// The schema file as written, before validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SchemaFile {
    #[serde(default = "default_format")]
    pub(super) format: FileFormat,
    #[serde(default)]
    pub(super) has_header: bool,
    #[serde(default = "default_delimiter")]
    pub(super) delimiter: String,
    /// JSON-lines records to keep: field name to required value (see
    /// `json_fields`). Written only when set, so that schemas without a
    /// filter keep their canonical text and sha256.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) filter: BTreeMap<String, FilterValue>,
    /// Labels joined from Suricata alerts (see `alert_labels`). Written
    /// only when set, so that other schemas keep their canonical text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) alert_labels: Option<AlertLabelsFile>,
    #[serde(default)]
    pub(super) columns: Vec<ColumnFile>,
}

/// One `[[columns]]` entry as written. Every kind-specific key is optional here;
/// validation reports keys that do not apply to the column's kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ColumnFile {
    pub(super) name: String,
    /// Kept as a string so that an unknown kind is reported with its key path
    /// alongside every other problem.
    pub(super) kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) transforms: Vec<Transform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) missing: Option<MissingValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) vocabulary: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) hash_buckets: Option<i64>,
    /// Set-valued (multi-hot) categorical; written only when true, so that
    /// schemas without set columns keep their canonical text and sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) set: Option<bool>,
    /// What splits a set-valued csv field or JSON string into elements (default ",").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) set_separator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) benign: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) classes: Option<ClassTable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) attack: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) skip: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) class_column: Option<String>,
    /// Written only when not the default (`"error"`), so that schemas written
    /// before the key existed keep their canonical text and sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) unlisted_labels: Option<UnlistedLabels>,
    /// What an echoed column means (`identity` columns and feature
    /// columns): an ECS field name (see `identity`). Written only when set,
    /// so that schemas without roles keep their canonical text and sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) role: Option<String>,
}

impl ColumnFile {
    /// Returns the kind-specific keys this column sets.
    pub(super) fn kind_specific_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if !self.transforms.is_empty() {
            keys.push("transforms");
        }
        if self.missing.is_some() {
            keys.push("missing");
        }
        if self.vocabulary.is_some() {
            keys.push("vocabulary");
        }
        if self.hash_buckets.is_some() {
            keys.push("hash_buckets");
        }
        if self.set.is_some() {
            keys.push("set");
        }
        if self.set_separator.is_some() {
            keys.push("set_separator");
        }
        if self.benign.is_some() {
            keys.push("benign");
        }
        if self.classes.is_some() {
            keys.push("classes");
        }
        if self.unlisted_labels.is_some() {
            keys.push("unlisted_labels");
        }
        if self.attack.is_some() {
            keys.push("attack");
        }
        if self.skip.is_some() {
            keys.push("skip");
        }
        if self.class_column.is_some() {
            keys.push("class_column");
        }
        keys
    }
}

/// Returns `file` without keys set to the value their absence means, where
/// canonical TOML leaves them out (see [`ColumnFile::unlisted_labels`]).
pub(super) fn without_default_keys(mut file: SchemaFile) -> SchemaFile {
    for column in &mut file.columns {
        if column.unlisted_labels == Some(UnlistedLabels::default()) {
            column.unlisted_labels = None;
        }
        if column.set == Some(false) {
            column.set = None;
        }
        if column.set_separator.as_deref() == Some(DEFAULT_SET_SEPARATOR) {
            column.set_separator = None;
        }
    }
    file
}

/// Returns "TOML error message at line L, column C" from a toml error and its source text.
pub(super) fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return message.to_string();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |newline| before.len() - newline - 1)
        + 1;
    format!("line {line}, column {column}: {message}")
}
