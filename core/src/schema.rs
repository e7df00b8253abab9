//! Telemetry schemas (TOML files) and the featurizer that turns one record into
//! a feature vector and a class.
//!
//! A schema lists the columns of a CSV or JSONL telemetry file and says what each
//! one becomes:
//!
//! ```toml
//! format = "csv"          # default format: "csv" or "jsonl" (the loader also picks by file extension)
//! has_header = false      # csv only: match columns by header name (true) or by position (false)
//! delimiter = ","         # csv only: one ascii character
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
//! name = "label"
//! kind = "label"          # exactly one label column
//! benign = ["normal"]     # label values that mean benign
//! unlisted_labels = "error"  # a value neither benign nor classes lists: "error" (the default),
//!                         # "attack" (the last class), "benign" or "skip" (the row, counted)
//! [columns.classes]       # optional attack classes, numbered 1, 2, ... in declaration order
//! dos = ["neptune", "smurf"]
//!
//! [[columns]]
//! name = "difficulty"
//! kind = "ignore"
//! ```
//!
//! Every numeric feature is bounded: validation follows each numeric column's
//! transforms over all possible raw values and refuses the schema, naming the
//! column, unless they map every value into
//! `-MAX_FEATURE_MAGNITUDE..=MAX_FEATURE_MAGNITUDE` (±1e6). In practice a
//! numeric column needs a `clamp` with its documented range (before `log1p`,
//! whose output is unbounded, or after any transform); a column without
//! transforms is refused. A raw value that is not a finite number (`NaN`,
//! `inf`, or too large for a float) makes the row malformed, and the
//! featurizer clamps every numeric feature into the range once more as a last
//! line of defence. So one extreme record cannot make a gradient non-finite.
//!
//! Transforms use fixed, declared constants (`standardize` takes a declared mean and
//! standard deviation): nothing is ever computed from a participant's local data, so
//! every participant featurizes the same way and no statistic of private telemetry
//! leaves through the schema.
//!
//! Field values are trimmed of surrounding whitespace; an empty field counts as absent.
//! Categorical and label values are matched exactly (case-sensitive).
//!
//! Every column the schema lists must be in the input, whatever its `missing`
//! value says: `missing` fills an empty field (or a JSON key absent from one
//! record), never a whole column. A csv header must name every numeric and
//! categorical column, and the label column when labels are required
//! (training, evaluation); only ignored columns may be absent. JSON-lines
//! records may leave a key out one by one, but a key that no record of a file
//! holds is an error (see [`crate::ingest`]).
//!
//! A label value that neither `benign` nor `classes` lists is an error by
//! default ([`UnlistedLabels`]), naming the value, the file and the line:
//! write `unlisted_labels = "attack"` to count such values as attacks (the
//! last class), `"benign"`, or `"skip"` to leave their rows out.

mod labels;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

pub use labels::{ATTACK_CLASS, LabelClass, LabelInfo, OTHER_ATTACK_CLASS, UnlistedLabels};
use labels::{ClassTable, LabelMapping, validate_label};

/// Largest accepted `hash_buckets`.
pub const MAX_HASH_BUCKETS: i64 = 65_536;

/// Largest magnitude of a numeric feature: every numeric column's transforms
/// must map all values into `-MAX_FEATURE_MAGNITUDE..=MAX_FEATURE_MAGNITUDE`
/// (validation checks it), and the featurizer clamps every numeric feature into
/// that range as a last line of defence. Bounded features keep one extreme
/// record from making a gradient non-finite.
pub const MAX_FEATURE_MAGNITUDE: f64 = 1e6;

/// Longest field value, in characters, quoted in a malformed-row reason.
const MAX_QUOTED_VALUE_CHARS: usize = 40;

/// Errors of loading or validating a schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("failed to read schema file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("schema {origin} is not valid toml: {message}")]
    Parse { origin: String, message: String },
    #[error("schema {origin} is invalid ({} problems): {}", problems.len(), problems.join("; "))]
    Invalid {
        origin: String,
        /// Every problem found, each starting with its key path.
        problems: Vec<String>,
    },
}

/// The file formats a schema can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Delimited text, one record per line (RFC 4180 quoting), with or without a header.
    Csv,
    /// One JSON object per line.
    Jsonl,
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
        }
    }
}

/// One step applied to a numeric column's raw value, with fixed declared constants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Transform {
    /// `ln(1 + x)`; values at or below -1 make the row malformed.
    Log1p,
    /// Limits the value to `min..=max`.
    Clamp { min: f64, max: f64 },
    /// `(x - offset) / divisor`.
    Scale {
        #[serde(default)]
        offset: f64,
        divisor: f64,
    },
    /// `(x - mean) / std` with a declared (never locally computed) mean and std.
    Standardize { mean: f64, std: f64 },
}

impl Transform {
    /// Returns the transformed value (possibly non-finite; the caller checks).
    /// `log1p` of a value at or below -1 is NaN, so that no later clamp can
    /// turn its infinity into a feature.
    pub fn apply(&self, value: f64) -> f64 {
        match *self {
            Transform::Log1p if value <= -1.0 => f64::NAN,
            Transform::Log1p => value.ln_1p(),
            Transform::Clamp { min, max } => value.clamp(min, max),
            Transform::Scale { offset, divisor } => (value - offset) / divisor,
            Transform::Standardize { mean, std } => (value - mean) / std,
        }
    }

    /// Returns the smallest interval holding the transformed values of every
    /// value in `low..=high` that does not make the row malformed; an end is
    /// infinite where the transform can give values without bound (log1p
    /// tends to -inf as its input approaches -1 from above).
    ///
    /// Every transform is monotone, so mapping the two ends is enough.
    fn output_range(&self, low: f64, high: f64) -> (f64, f64) {
        let log1p_of = |value: f64| {
            if value > -1.0 {
                value.ln_1p()
            } else {
                f64::NEG_INFINITY
            }
        };
        match *self {
            Transform::Log1p => (log1p_of(low), log1p_of(high)),
            Transform::Clamp { min, max } => (low.clamp(min, max), high.clamp(min, max)),
            Transform::Scale { .. } | Transform::Standardize { .. } => {
                let first = self.apply(low);
                let second = self.apply(high);
                (first.min(second), first.max(second))
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Transform::Log1p => "log1p",
            Transform::Clamp { .. } => "clamp",
            Transform::Scale { .. } => "scale",
            Transform::Standardize { .. } => "standardize",
        }
    }

    /// Appends a problem (prefixed with `path`) for each constant that makes the transform unusable.
    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        let mut require_finite = |key: &str, value: f64| {
            if !value.is_finite() {
                problems.push(format!("{path}: {key} must be finite, got {value}"));
            }
        };
        match *self {
            Transform::Log1p => {}
            Transform::Clamp { min, max } => {
                require_finite("min", min);
                require_finite("max", max);
                if min > max {
                    problems.push(format!("{path}: min {min} is greater than max {max}"));
                }
            }
            Transform::Scale { offset, divisor } => {
                require_finite("offset", offset);
                require_finite("divisor", divisor);
                if divisor == 0.0 {
                    problems.push(format!("{path}: divisor must not be 0"));
                }
            }
            Transform::Standardize { mean, std } => {
                require_finite("mean", mean);
                require_finite("std", std);
                if std <= 0.0 {
                    problems.push(format!("{path}: std must be greater than 0, got {std}"));
                }
            }
        }
    }
}

/// The `missing` value of a column: a number for numeric columns, a string for categorical ones.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
enum MissingValue {
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

fn default_delimiter() -> String {
    ",".to_string()
}

/// The schema file as written, before validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    #[serde(default = "default_format")]
    format: FileFormat,
    #[serde(default)]
    has_header: bool,
    #[serde(default = "default_delimiter")]
    delimiter: String,
    #[serde(default)]
    columns: Vec<ColumnFile>,
}

/// One `[[columns]]` entry as written. Every kind-specific key is optional here;
/// validation reports keys that do not apply to the column's kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnFile {
    name: String,
    /// Kept as a string so that an unknown kind is reported with its key path
    /// alongside every other problem.
    kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    transforms: Vec<Transform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    missing: Option<MissingValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vocabulary: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash_buckets: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    benign: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    classes: Option<ClassTable>,
    /// Written only when not the default (`"error"`), so that schemas written
    /// before the key existed keep their canonical text and sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unlisted_labels: Option<UnlistedLabels>,
}

impl ColumnFile {
    /// Returns the kind-specific keys this column sets.
    fn kind_specific_keys(&self) -> Vec<&'static str> {
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
        if self.benign.is_some() {
            keys.push("benign");
        }
        if self.classes.is_some() {
            keys.push("classes");
        }
        if self.unlisted_labels.is_some() {
            keys.push("unlisted_labels");
        }
        keys
    }
}

/// What a validated column contributes.
#[derive(Clone, Debug)]
enum ColumnRole {
    /// One feature: the parsed value through the transforms.
    Numeric {
        transforms: Vec<Transform>,
        missing: Option<f64>,
    },
    /// `vocabulary.len() + 1` features: a one-hot over the vocabulary, the last slot for other values.
    Vocabulary {
        slot_of_value: HashMap<String, usize>,
        values: Vec<String>,
        missing: Option<String>,
    },
    /// `num_buckets` features: a one-hot at `fnv1a_64(value) % num_buckets`.
    Hashed {
        num_buckets: u32,
        missing: Option<String>,
    },
    /// The label; no features.
    Label,
    /// Read past; no features.
    Ignore,
}

impl ColumnRole {
    fn num_features(&self) -> usize {
        match self {
            ColumnRole::Numeric { .. } => 1,
            ColumnRole::Vocabulary { values, .. } => values.len() + 1,
            ColumnRole::Hashed { num_buckets, .. } => *num_buckets as usize,
            ColumnRole::Label | ColumnRole::Ignore => 0,
        }
    }
}

#[derive(Clone, Debug)]
struct Column {
    name: String,
    role: ColumnRole,
}

/// A validated schema: the columns of a telemetry file and how each becomes features.
///
/// Build it with [`Schema::from_toml_str`] or [`Schema::load`]; featurize records with
/// [`Schema::featurize`].
#[derive(Clone, Debug)]
pub struct Schema {
    file: SchemaFile,
    delimiter: u8,
    columns: Vec<Column>,
    num_features: usize,
    label: LabelMapping,
}

impl PartialEq for Schema {
    fn eq(&self, other: &Schema) -> bool {
        self.file == other.file
    }
}

impl Schema {
    /// Parses and validates a schema from TOML text.
    ///
    /// # Errors
    /// [`SchemaError::Parse`] for invalid TOML, an unknown key or a value of the wrong
    /// type; [`SchemaError::Invalid`] listing every validation problem with its key path.
    pub fn from_toml_str(text: &str) -> Result<Schema, SchemaError> {
        Schema::parse_named(text, "<inline>")
    }

    /// Reads, parses and validates the schema file at `path`.
    ///
    /// # Errors
    /// As [`Schema::from_toml_str`], plus [`SchemaError::Io`]; every error names the file.
    pub fn load(path: &Path) -> Result<Schema, SchemaError> {
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Schema::parse_named(&text, &path.display().to_string())
    }

    fn parse_named(text: &str, origin: &str) -> Result<Schema, SchemaError> {
        let file: SchemaFile = toml::from_str(text).map_err(|error| SchemaError::Parse {
            origin: origin.to_string(),
            message: describe_toml_error(text, &error),
        })?;
        Schema::validate(file, origin)
    }

    /// Returns a small schema for tests: a headerless csv with columns `bytes`
    /// (numeric, clamped to 0..=1e12 then log1p), `proto` (vocabulary tcp/udp), `port` (8 hash buckets) and
    /// `label` (benign = "ok", classes scan = ["portscan"] and flood = ["synflood"]).
    pub fn for_test() -> Schema {
        let text = r#"
            format = "csv"
            [[columns]]
            name = "bytes"
            kind = "numeric"
            transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"]
            [[columns]]
            name = "proto"
            kind = "categorical"
            vocabulary = ["tcp", "udp"]
            [[columns]]
            name = "port"
            kind = "categorical"
            hash_buckets = 8
            [[columns]]
            name = "label"
            kind = "label"
            benign = ["ok"]
            [columns.classes]
            scan = ["portscan"]
            flood = ["synflood"]
        "#;
        Schema::from_toml_str(text).expect("the test schema is valid")
    }

    /// Checks every rule and compiles the columns, collecting all problems.
    fn validate(file: SchemaFile, origin: &str) -> Result<Schema, SchemaError> {
        let mut problems = Vec::new();
        let delimiter = match file.delimiter.as_bytes() {
            [byte] if byte.is_ascii() && !matches!(byte, b'"' | b'\n' | b'\r') => *byte,
            _ => {
                problems.push(format!(
                    "delimiter must be one ascii character other than a quote or a line break, got {:?}",
                    file.delimiter
                ));
                b','
            }
        };
        if file.columns.is_empty() {
            problems.push("columns: the schema declares no columns".to_string());
        }

        let mut first_index_of_name: HashMap<&str, usize> = HashMap::new();
        let mut columns = Vec::with_capacity(file.columns.len());
        let mut label_column_indices: Vec<usize> = Vec::new();
        let mut label_mapping: Option<LabelMapping> = None;
        let mut num_feature_columns = 0;
        for (column_index, column) in file.columns.iter().enumerate() {
            let path = column_path(column_index, &column.name);
            if column.name.trim().is_empty() {
                problems.push(format!("{path}: name must not be empty"));
            } else if column.name.trim() != column.name {
                problems.push(format!(
                    "{path}: name must not start or end with whitespace"
                ));
            } else if let Some(&first_index) = first_index_of_name.get(column.name.as_str()) {
                problems.push(format!(
                    "{path}: duplicate column name, {} already uses it",
                    column_path(first_index, &column.name)
                ));
            } else {
                first_index_of_name.insert(&column.name, column_index);
            }
            match column.kind.as_str() {
                "label" => label_column_indices.push(column_index),
                "numeric" | "categorical" => num_feature_columns += 1,
                _ => {}
            }
            let role = match validate_column(column, &path, &mut problems) {
                CompiledColumn::Role(role) => role,
                CompiledColumn::Label(mut mapping) => {
                    if label_mapping.is_none() {
                        mapping.column_index = column_index;
                        label_mapping = Some(mapping);
                    }
                    ColumnRole::Label
                }
                CompiledColumn::Invalid => ColumnRole::Ignore,
            };
            columns.push(Column {
                name: column.name.clone(),
                role,
            });
        }

        if label_column_indices.is_empty() && !file.columns.is_empty() {
            problems.push(
                "columns: no column has kind \"label\"; exactly one label column is required"
                    .to_string(),
            );
        }
        for &column_index in label_column_indices.iter().skip(1) {
            let first_index = label_column_indices[0];
            problems.push(format!(
                "{}: a second label column; {} is already the label and exactly one is allowed",
                column_path(column_index, &file.columns[column_index].name),
                column_path(first_index, &file.columns[first_index].name)
            ));
        }
        let num_features: usize = columns
            .iter()
            .map(|column| column.role.num_features())
            .sum();
        if num_feature_columns == 0 && !file.columns.is_empty() {
            problems.push(
                "columns: the schema has no feature columns (kind \"numeric\" or \"categorical\")"
                    .to_string(),
            );
        }

        match label_mapping {
            Some(label) if problems.is_empty() => Ok(Schema {
                file: without_default_keys(file),
                delimiter,
                columns,
                num_features,
                label,
            }),
            _ => Err(SchemaError::Invalid {
                origin: origin.to_string(),
                problems,
            }),
        }
    }

    /// Returns the canonical TOML text of the schema (every default written out);
    /// [`Schema::from_toml_str`] reads it back to an equal schema.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(&self.file)
            .expect("a validated schema has only finite numbers and serializes")
    }

    /// Returns the sha256 (lowercase hex) of [`Schema::to_toml_string`]: equal for
    /// schemas that featurize identically however their files were formatted.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.to_toml_string().as_bytes()))
    }

    /// Returns the default file format.
    pub fn format(&self) -> FileFormat {
        self.file.format
    }

    /// Returns true if csv files start with a header line naming the columns.
    pub fn has_header(&self) -> bool {
        self.file.has_header
    }

    /// Returns the csv field delimiter.
    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    /// Returns the number of columns (fields of a headerless csv row).
    pub fn num_columns(&self) -> usize {
        self.columns.len()
    }

    /// Returns the name of the label column.
    pub fn label_column_name(&self) -> &str {
        &self.columns[self.label.column_index].name
    }

    /// Returns the length of every feature vector.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// Returns one name per feature, in order: `name` for numeric columns,
    /// `name=value` and `name=<other>` for vocabularies, `name#bucket` for hashed columns.
    pub fn feature_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.num_features);
        for column in &self.columns {
            match &column.role {
                ColumnRole::Numeric { .. } => names.push(column.name.clone()),
                ColumnRole::Vocabulary { values, .. } => {
                    names.extend(
                        values
                            .iter()
                            .map(|value| format!("{}={value}", column.name)),
                    );
                    names.push(format!("{}=<other>", column.name));
                }
                ColumnRole::Hashed { num_buckets, .. } => {
                    names.extend(
                        (0..*num_buckets).map(|bucket| format!("{}#{bucket}", column.name)),
                    );
                }
                ColumnRole::Label | ColumnRole::Ignore => {}
            }
        }
        names
    }

    /// Returns the class names by class index: `["benign", declared classes...,
    /// "other_attack"]` when attack classes are declared, else `["benign", "attack"]`.
    pub fn class_names(&self) -> Vec<String> {
        self.label.class_names.clone()
    }

    /// Returns the number of classes (including benign).
    pub fn num_classes(&self) -> usize {
        self.label.class_names.len()
    }

    /// Returns what a raw label value (trimmed) means: its class (0 = benign),
    /// or, for a value neither `benign` nor `classes` lists, what the label
    /// column's `unlisted_labels` says.
    pub fn class_of_label(&self, raw_label: &str) -> LabelClass {
        self.label.class_of(raw_label)
    }

    /// Returns what the label column does with values it does not list.
    pub fn unlisted_labels(&self) -> UnlistedLabels {
        self.label.unlisted()
    }

    /// Returns the names of the columns every input must hold, in schema
    /// order: every numeric and categorical column (a `missing` value fills an
    /// empty field, never a whole column), and the label column when
    /// `require_label` is set. Ignored columns may be absent.
    pub fn columns_required_in_input(&self, require_label: bool) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|column| match column.role {
                ColumnRole::Label => require_label,
                ColumnRole::Ignore => false,
                _ => true,
            })
            .map(|column| column.name.as_str())
            .collect()
    }

    /// Returns where each schema column sits in a csv `header`.
    ///
    /// Header names are trimmed; when a name repeats, the first occurrence counts.
    ///
    /// # Errors
    /// [`HeaderMismatch`] naming every column of
    /// [`Schema::columns_required_in_input`] that the header lacks. Without
    /// `require_label` an absent label column is allowed (rows are then
    /// unlabelled); an absent ignored column always is.
    pub fn header_positions(
        &self,
        header: &csv::StringRecord,
        require_label: bool,
    ) -> Result<HeaderPositions, HeaderMismatch> {
        let mut position_of_name: HashMap<&str, usize> = HashMap::new();
        for (position, name) in header.iter().enumerate() {
            let name = if position == 0 {
                strip_byte_order_mark(name)
            } else {
                name
            };
            position_of_name.entry(name.trim()).or_insert(position);
        }
        let positions: Vec<Option<usize>> = self
            .columns
            .iter()
            .map(|column| position_of_name.get(column.name.as_str()).copied())
            .collect();
        let missing_columns: Vec<String> = self
            .columns_required_in_input(require_label)
            .into_iter()
            .filter(|name| !position_of_name.contains_key(name))
            .map(str::to_string)
            .collect();
        if !missing_columns.is_empty() {
            return Err(HeaderMismatch { missing_columns });
        }
        Ok(HeaderPositions {
            positions,
            num_header_fields: header.len(),
        })
    }

    /// Returns the feature vector of `record` and its label (`None` when the label
    /// field is absent or empty, e.g. for unlabelled live events).
    ///
    /// A label value the schema does not list is no reason to refuse the record
    /// here: its [`LabelInfo::class`] says what `unlisted_labels` asks for, and
    /// the loader acts on it (a detector scoring events ignores labels).
    ///
    /// # Errors
    /// A reason naming the column and value when the record does not fit the schema:
    /// wrong field count, a non-numeric or non-finite numeric value, a value that a
    /// transform makes non-finite, or an absent field without a `missing` value.
    pub fn featurize<'r>(
        &self,
        record: &RecordFields<'r>,
    ) -> Result<(Vec<f32>, Option<LabelInfo<'r>>), String> {
        let mut features = Vec::with_capacity(self.num_features);
        let label = self.featurize_into(record, &mut features)?;
        Ok((features, label))
    }

    /// Does what [`Schema::featurize`] does, writing the features into `features`
    /// (cleared first) so that a loop can reuse one buffer. On error `features` holds
    /// an unspecified prefix.
    ///
    /// # Errors
    /// As [`Schema::featurize`].
    pub fn featurize_into<'r>(
        &self,
        record: &RecordFields<'r>,
        features: &mut Vec<f32>,
    ) -> Result<Option<LabelInfo<'r>>, String> {
        features.clear();
        record.check_field_count(self.columns.len())?;
        let mut label = None;
        for (column_index, column) in self.columns.iter().enumerate() {
            let field = record.field(column_index, &column.name);
            match &column.role {
                ColumnRole::Ignore => {}
                ColumnRole::Label => label = self.label_of(field, &column.name)?,
                ColumnRole::Numeric {
                    transforms,
                    missing,
                } => {
                    let value = numeric_feature(field, transforms, *missing, &column.name)?;
                    features.push(value);
                }
                ColumnRole::Vocabulary {
                    slot_of_value,
                    values,
                    missing,
                } => {
                    let text = categorical_text(field, missing.as_deref(), &column.name)?;
                    let other_slot = values.len();
                    let slot = slot_of_value
                        .get(text.as_ref())
                        .copied()
                        .unwrap_or(other_slot);
                    push_one_hot(features, other_slot + 1, slot);
                }
                ColumnRole::Hashed {
                    num_buckets,
                    missing,
                } => {
                    let text = categorical_text(field, missing.as_deref(), &column.name)?;
                    let bucket = hash_bucket(&text, *num_buckets);
                    push_one_hot(features, *num_buckets as usize, bucket as usize);
                }
            }
        }
        debug_assert_eq!(features.len(), self.num_features);
        Ok(label)
    }

    fn label_of<'r>(
        &self,
        field: FieldValue<'r>,
        column_name: &str,
    ) -> Result<Option<LabelInfo<'r>>, String> {
        let raw_label: Cow<'r, str> = match field {
            FieldValue::Absent => return Ok(None),
            FieldValue::Text(text) => Cow::Borrowed(text),
            FieldValue::Number(number) => Cow::Owned(number.to_string()),
            FieldValue::Bool(flag) => Cow::Borrowed(if flag { "true" } else { "false" }),
            FieldValue::Unsupported(what) => {
                return Err(format!(
                    "label column {column_name:?}: expected a string, number or boolean, got {what}"
                ));
            }
        };
        let class = self.class_of_label(&raw_label);
        Ok(Some(LabelInfo { class, raw_label }))
    }
}

/// Returns `file` without keys set to the value their absence means, where
/// canonical TOML leaves them out (see [`ColumnFile::unlisted_labels`]).
fn without_default_keys(mut file: SchemaFile) -> SchemaFile {
    for column in &mut file.columns {
        if column.unlisted_labels == Some(UnlistedLabels::default()) {
            column.unlisted_labels = None;
        }
    }
    file
}

/// The result of validating one `[[columns]]` entry.
enum CompiledColumn {
    Role(ColumnRole),
    Label(LabelMapping),
    Invalid,
}

fn column_path(column_index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("columns[{column_index}]")
    } else {
        format!("columns[{column_index}] ({name:?})")
    }
}

/// Validates one column, appending problems prefixed with `path`.
fn validate_column(column: &ColumnFile, path: &str, problems: &mut Vec<String>) -> CompiledColumn {
    let allowed_keys: &[&str] = match column.kind.as_str() {
        "numeric" => &["transforms", "missing"],
        "categorical" => &["vocabulary", "hash_buckets", "missing"],
        "label" => &["benign", "classes", "unlisted_labels"],
        "ignore" => &[],
        unknown => {
            problems.push(format!(
                "{path}: unknown kind {unknown:?}, expected \"numeric\", \"categorical\", \"label\" or \"ignore\""
            ));
            return CompiledColumn::Invalid;
        }
    };
    let num_problems_before = problems.len();
    for key in column.kind_specific_keys() {
        if !allowed_keys.contains(&key) {
            problems.push(format!(
                "{path}: key {key:?} does not apply to kind {:?}",
                column.kind
            ));
        }
    }
    let compiled = match column.kind.as_str() {
        "numeric" => validate_numeric(column, path, problems),
        "categorical" => validate_categorical(column, path, problems),
        "label" => CompiledColumn::Label(validate_label(
            column.benign.as_deref(),
            column.classes.as_ref(),
            column.unlisted_labels,
            path,
            problems,
        )),
        _ => CompiledColumn::Role(ColumnRole::Ignore),
    };
    if problems.len() > num_problems_before {
        return CompiledColumn::Invalid;
    }
    compiled
}

fn validate_numeric(column: &ColumnFile, path: &str, problems: &mut Vec<String>) -> CompiledColumn {
    let num_problems_before = problems.len();
    for (transform_index, transform) in column.transforms.iter().enumerate() {
        let transform_path = format!(
            "{path}.transforms[{transform_index}] ({})",
            transform.name()
        );
        transform.validate(&transform_path, problems);
    }
    if problems.len() == num_problems_before {
        require_bounded_features(&column.transforms, path, problems);
    }
    let missing = match &column.missing {
        None => None,
        Some(MissingValue::Text(text)) => {
            problems.push(format!(
                "{path}: missing must be a number for a numeric column, got {text:?}"
            ));
            None
        }
        Some(MissingValue::Number(raw)) => {
            let transformed = column
                .transforms
                .iter()
                .fold(*raw, |value, transform| transform.apply(value));
            if !raw.is_finite() || !(transformed as f32).is_finite() {
                problems.push(format!(
                    "{path}: missing value {raw} does not give a finite feature after the transforms"
                ));
            }
            Some(*raw)
        }
    };
    CompiledColumn::Role(ColumnRole::Numeric {
        transforms: column.transforms.clone(),
        missing,
    })
}

/// Appends a problem unless `transforms` (whose constants are valid) map every
/// raw value into `-MAX_FEATURE_MAGNITUDE..=MAX_FEATURE_MAGNITUDE`.
///
/// An unbounded feature lets one extreme record (say `1e38` in a byte count)
/// make a gradient non-finite, so every numeric column must declare its range
/// with a `clamp`.
fn require_bounded_features(transforms: &[Transform], path: &str, problems: &mut Vec<String>) {
    let (low, high) = transforms.iter().fold(
        (f64::NEG_INFINITY, f64::INFINITY),
        |(low, high), transform| transform.output_range(low, high),
    );
    if !(low.is_finite() && high.is_finite()) {
        problems.push(format!(
            "{path}: numeric column is unbounded (its transforms give values in {}); \
             add a clamp with the column's range, e.g. {{ clamp = {{ min = 0.0, max = 1.0 }} }} \
             for a rate or a flag, or {{ clamp = {{ min = 0.0, max = 1e12 }} }} before \"log1p\" \
             for a byte count",
            describe_range(low, high)
        ));
    } else if low < -MAX_FEATURE_MAGNITUDE || high > MAX_FEATURE_MAGNITUDE {
        problems.push(format!(
            "{path}: features reach {}, beyond the limit of {MAX_FEATURE_MAGNITUDE:e} in magnitude; \
             clamp or scale the column into {:e}..={MAX_FEATURE_MAGNITUDE:e}",
            describe_range(low, high),
            -MAX_FEATURE_MAGNITUDE
        ));
    }
}

/// Returns `low..=high` for a message, with `-inf` and `inf` for unbounded ends.
fn describe_range(low: f64, high: f64) -> String {
    format!("{low}..={high}")
}

fn validate_categorical(
    column: &ColumnFile,
    path: &str,
    problems: &mut Vec<String>,
) -> CompiledColumn {
    let missing = match &column.missing {
        None => None,
        Some(MissingValue::Text(text)) => Some(text.clone()),
        Some(MissingValue::Number(number)) => {
            problems.push(format!(
                "{path}: missing must be a string for a categorical column, got {number}"
            ));
            None
        }
    };
    match (&column.vocabulary, column.hash_buckets) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{path}: set either vocabulary or hash_buckets, not both"
            ));
            CompiledColumn::Invalid
        }
        (None, None) => {
            problems.push(format!(
                "{path}: a categorical column needs a vocabulary or hash_buckets"
            ));
            CompiledColumn::Invalid
        }
        (Some(vocabulary), None) => {
            if vocabulary.is_empty() {
                problems.push(format!("{path}: vocabulary must not be empty"));
            }
            let mut slot_of_value = HashMap::with_capacity(vocabulary.len());
            for (slot, value) in vocabulary.iter().enumerate() {
                if value.trim().is_empty() || value.trim() != value {
                    problems.push(format!(
                        "{path}.vocabulary[{slot}]: {value:?} is empty or has surrounding whitespace, and no trimmed field can match it"
                    ));
                } else if slot_of_value.insert(value.clone(), slot).is_some() {
                    problems.push(format!("{path}.vocabulary: {value:?} is listed twice"));
                }
            }
            CompiledColumn::Role(ColumnRole::Vocabulary {
                slot_of_value,
                values: vocabulary.clone(),
                missing,
            })
        }
        (None, Some(hash_buckets)) => {
            if !(1..=MAX_HASH_BUCKETS).contains(&hash_buckets) {
                problems.push(format!(
                    "{path}: hash_buckets must be in 1..={MAX_HASH_BUCKETS}, got {hash_buckets}"
                ));
                return CompiledColumn::Invalid;
            }
            CompiledColumn::Role(ColumnRole::Hashed {
                num_buckets: hash_buckets as u32,
                missing,
            })
        }
    }
}

/// Returns "TOML error message at line L, column C" from a toml error and its source text.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
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

/// Where each schema column sits in a csv row, from its header line.
#[derive(Clone, Debug)]
pub struct HeaderPositions {
    /// One entry per schema column: its field position, or `None` if the header lacks it.
    positions: Vec<Option<usize>>,
    num_header_fields: usize,
}

/// A csv header lacks columns the schema needs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the header has no column named {}", quote_names(missing_columns))]
pub struct HeaderMismatch {
    /// The schema columns that the header lacks, in schema order.
    pub missing_columns: Vec<String>,
}

fn quote_names(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One record to featurize: a csv row or a JSON object.
#[derive(Clone, Copy, Debug)]
pub enum RecordFields<'a> {
    /// A headerless csv row: field `i` is schema column `i`, and the row must have
    /// exactly one field per column.
    CsvPositional(&'a csv::StringRecord),
    /// A csv row of a file with a header, matched to columns by header name.
    CsvWithHeader {
        record: &'a csv::StringRecord,
        header: &'a HeaderPositions,
    },
    /// A JSON object: fields by column name. Strings, numbers and booleans are
    /// accepted (numeric strings too, for numeric columns); null counts as absent.
    Json(&'a serde_json::Map<String, serde_json::Value>),
}

/// One field of a record, as the featurizer sees it.
#[derive(Clone, Copy, Debug)]
enum FieldValue<'a> {
    /// Absent, empty (after trimming) or JSON null.
    Absent,
    Text(&'a str),
    Number(&'a serde_json::Number),
    Bool(bool),
    /// A JSON array or object, described for the error message.
    Unsupported(&'static str),
}

impl<'a> RecordFields<'a> {
    fn check_field_count(&self, num_columns: usize) -> Result<(), String> {
        match self {
            RecordFields::CsvPositional(record) if record.len() != num_columns => Err(format!(
                "row has {} fields, the schema expects {num_columns} (one per column)",
                record.len()
            )),
            RecordFields::CsvWithHeader { record, header }
                if record.len() != header.num_header_fields =>
            {
                Err(format!(
                    "row has {} fields, the header has {}",
                    record.len(),
                    header.num_header_fields
                ))
            }
            _ => Ok(()),
        }
    }

    fn field(&self, column_index: usize, column_name: &str) -> FieldValue<'a> {
        let text = match *self {
            RecordFields::CsvPositional(record) => record.get(column_index),
            RecordFields::CsvWithHeader { record, header } => header
                .positions
                .get(column_index)
                .copied()
                .flatten()
                .and_then(|position| record.get(position)),
            RecordFields::Json(object) => match object.get(column_name) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(text)) => Some(text.as_str()),
                Some(serde_json::Value::Number(number)) => return FieldValue::Number(number),
                Some(serde_json::Value::Bool(flag)) => return FieldValue::Bool(*flag),
                Some(serde_json::Value::Array(_)) => return FieldValue::Unsupported("an array"),
                Some(serde_json::Value::Object(_)) => return FieldValue::Unsupported("an object"),
            },
        };
        match text.map(str::trim) {
            None | Some("") => FieldValue::Absent,
            Some(trimmed) => FieldValue::Text(trimmed),
        }
    }
}

/// Returns `value` Debug-quoted, cut to [`MAX_QUOTED_VALUE_CHARS`] characters.
pub(crate) fn quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_VALUE_CHARS) {
        Some((cut, _)) => format!("{:?}...", &value[..cut]),
        None => format!("{value:?}"),
    }
}

fn numeric_feature(
    field: FieldValue<'_>,
    transforms: &[Transform],
    missing: Option<f64>,
    column_name: &str,
) -> Result<f32, String> {
    let raw = match field {
        FieldValue::Absent => missing.ok_or_else(|| {
            format!("column {column_name:?} is empty or absent and has no missing value")
        })?,
        FieldValue::Text(text) => text
            .parse::<f64>()
            .map_err(|_| format!("column {column_name:?}: {} is not a number", quoted(text)))?,
        FieldValue::Number(number) => number.as_f64().ok_or_else(|| {
            format!("column {column_name:?}: {number} is not representable as a float")
        })?,
        FieldValue::Bool(flag) => f64::from(u8::from(flag)),
        FieldValue::Unsupported(what) => {
            return Err(format!(
                "column {column_name:?}: expected a number, got {what}"
            ));
        }
    };
    if !raw.is_finite() {
        return Err(format!(
            "column {column_name:?}: {raw} is not a finite number"
        ));
    }
    let transformed = transforms
        .iter()
        .fold(raw, |value, transform| transform.apply(value));
    let feature = transformed as f32;
    if !feature.is_finite() {
        return Err(format!(
            "column {column_name:?}: value {raw} becomes {feature} after the transforms"
        ));
    }
    // Validation proved the transforms bounded; this clamp is the last line
    // of defence, should float rounding ever step outside the range.
    let limit = MAX_FEATURE_MAGNITUDE as f32;
    Ok(feature.clamp(-limit, limit))
}

fn categorical_text<'v>(
    field: FieldValue<'v>,
    missing: Option<&'v str>,
    column_name: &str,
) -> Result<Cow<'v, str>, String> {
    match field {
        FieldValue::Absent => missing.map(Cow::Borrowed).ok_or_else(|| {
            format!("column {column_name:?} is empty or absent and has no missing value")
        }),
        FieldValue::Text(text) => Ok(Cow::Borrowed(text)),
        FieldValue::Number(number) => Ok(Cow::Owned(number.to_string())),
        FieldValue::Bool(flag) => Ok(Cow::Borrowed(if flag { "true" } else { "false" })),
        FieldValue::Unsupported(what) => Err(format!(
            "column {column_name:?}: expected a string, number or boolean, got {what}"
        )),
    }
}

fn push_one_hot(features: &mut Vec<f32>, num_slots: usize, hot_slot: usize) {
    let start = features.len();
    features.resize(start + num_slots, 0.0);
    features[start + hot_slot] = 1.0;
}

/// Returns the 64-bit FNV-1a hash of `bytes`: stable across processes, platforms
/// and releases, unlike std's randomly keyed SipHash.
/// See <http://www.isthe.com/chongo/tech/comp/fnv/>.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// Returns the bucket (in `0..num_buckets`) of a categorical value in a hashed column.
pub fn hash_bucket(value: &str, num_buckets: u32) -> u32 {
    (fnv1a_64(value.as_bytes()) % u64::from(num_buckets.max(1))) as u32
}

/// Returns `text` without a leading UTF-8 byte order mark.
pub(crate) fn strip_byte_order_mark(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use csv::StringRecord;
    use proptest::prelude::*;

    fn csv_record(fields: &[&str]) -> StringRecord {
        StringRecord::from(fields.to_vec())
    }

    fn json_object(text: &str) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::from_str(text).unwrap() {
            serde_json::Value::Object(object) => object,
            other => panic!("not an object: {other}"),
        }
    }

    fn problems_of(text: &str) -> Vec<String> {
        match Schema::from_toml_str(text) {
            Err(SchemaError::Invalid { problems, .. }) => problems,
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    /// Returns the text of a schema with one numeric column `name` under
    /// `transforms` and a label column.
    fn numeric_schema_text(name: &str, transforms: &str) -> String {
        format!(
            r#"
            [[columns]]
            name = "{name}"
            kind = "numeric"
            transforms = {transforms}
            [[columns]]
            name = "label"
            kind = "label"
            benign = ["ok"]
            "#
        )
    }

    fn numeric_schema(transforms: &str) -> Schema {
        Schema::from_toml_str(&numeric_schema_text("x", transforms)).unwrap()
    }

    /// Transforms that bound a test column without changing the values tests use.
    const WIDE_CLAMP: &str = "[{ clamp = { min = -1e6, max = 1e6 } }]";

    fn featurize_one(schema: &Schema, value: &str) -> Result<f32, String> {
        let record = csv_record(&[value, "ok"]);
        let (features, _) = schema.featurize(&RecordFields::CsvPositional(&record))?;
        Ok(features[0])
    }

    fn assert_close(actual: f32, expected: f64) {
        assert!(
            (f64::from(actual) - expected).abs() < 1e-6,
            "expected {expected}, got {actual}"
        );
    }

    #[test]
    fn vocabulary_one_hot_uses_the_other_slot_for_unseen_values() {
        let schema = Schema::for_test();
        let tcp = csv_record(&["0", "tcp", "80", "ok"]);
        let udp = csv_record(&["0", "udp", "80", "ok"]);
        let sctp = csv_record(&["0", "sctp", "80", "ok"]);
        let slots = |record: &StringRecord| {
            let (features, _) = schema
                .featurize(&RecordFields::CsvPositional(record))
                .unwrap();
            features[1..4].to_vec()
        };
        assert_eq!(slots(&tcp), vec![1.0, 0.0, 0.0]);
        assert_eq!(slots(&udp), vec![0.0, 1.0, 0.0]);
        assert_eq!(slots(&sctp), vec![0.0, 0.0, 1.0]);
    }

    #[test]
    fn feature_and_class_names_follow_the_columns() {
        let schema = Schema::for_test();
        let names = schema.feature_names();
        assert_eq!(names.len(), schema.num_features());
        assert_eq!(schema.num_features(), 1 + 3 + 8);
        assert_eq!(
            &names[..5],
            ["bytes", "proto=tcp", "proto=udp", "proto=<other>", "port#0"]
        );
        assert_eq!(names[11], "port#7");
        assert_eq!(
            schema.class_names(),
            ["benign", "scan", "flood", "other_attack"]
        );
        assert_eq!(schema.num_classes(), 4);
        assert_eq!(schema.class_of_label("ok"), LabelClass::Class(0));
        assert_eq!(schema.class_of_label("portscan"), LabelClass::Class(1));
        assert_eq!(schema.class_of_label("synflood"), LabelClass::Class(2));
        assert_eq!(schema.class_of_label("worm"), LabelClass::UnlistedError);
    }

    #[test]
    fn labels_without_declared_classes_are_binary() {
        let schema = numeric_schema(WIDE_CLAMP);
        assert_eq!(schema.class_names(), ["benign", "attack"]);
        assert_eq!(schema.class_of_label("ok"), LabelClass::Class(0));
        assert_eq!(schema.class_of_label("anything"), LabelClass::UnlistedError);
        let attack_schema = Schema::from_toml_str(&format!(
            "{}unlisted_labels = \"attack\"\n",
            numeric_schema_text("x", WIDE_CLAMP)
        ))
        .unwrap();
        assert_eq!(
            attack_schema.class_of_label("anything"),
            LabelClass::Class(1)
        );
    }

    /// Returns [`Schema::for_test`] with `unlisted_labels` set to `policy`.
    fn test_schema_with_unlisted_labels(policy: &str) -> Schema {
        let text = Schema::for_test().to_toml_string().replace(
            "benign = [\"ok\"]",
            &format!("benign = [\"ok\"]\nunlisted_labels = \"{policy}\""),
        );
        Schema::from_toml_str(&text).unwrap()
    }

    #[test]
    fn unlisted_label_values_mean_what_the_schema_says() {
        for (policy, expected) in [
            ("error", LabelClass::UnlistedError),
            ("attack", LabelClass::Class(3)),
            ("benign", LabelClass::Class(0)),
            ("skip", LabelClass::UnlistedSkip),
        ] {
            let schema = test_schema_with_unlisted_labels(policy);
            assert_eq!(schema.unlisted_labels().name(), policy);
            assert_eq!(schema.class_of_label("worm"), expected, "{policy}");
            // Listed values keep their classes under every policy, and the
            // class names (the model's outputs) do not depend on it.
            assert_eq!(schema.class_of_label("ok"), LabelClass::Class(0));
            assert_eq!(schema.class_of_label("synflood"), LabelClass::Class(2));
            assert_eq!(
                schema.class_names(),
                ["benign", "scan", "flood", "other_attack"]
            );
            let record = csv_record(&["1", "tcp", "80", "worm"]);
            let (_, label) = schema
                .featurize(&RecordFields::CsvPositional(&record))
                .unwrap();
            assert_eq!(label.unwrap().class, expected, "{policy}");
        }
        assert_eq!(Schema::for_test().unlisted_labels(), UnlistedLabels::Error);
    }

    #[test]
    fn unlisted_labels_is_written_only_when_not_the_default() {
        let implicit = Schema::for_test();
        let explicit = test_schema_with_unlisted_labels("error");
        assert_eq!(explicit.to_toml_string(), implicit.to_toml_string());
        assert_eq!(explicit.sha256(), implicit.sha256());
        assert!(!implicit.to_toml_string().contains("unlisted_labels"));
        let skip = test_schema_with_unlisted_labels("skip");
        assert!(
            skip.to_toml_string().contains("unlisted_labels = \"skip\""),
            "{}",
            skip.to_toml_string()
        );
        assert_ne!(skip.sha256(), implicit.sha256());
        assert_eq!(Schema::from_toml_str(&skip.to_toml_string()).unwrap(), skip);
    }

    #[test]
    fn unlisted_labels_takes_one_of_four_values_and_only_on_the_label() {
        let error = Schema::from_toml_str(&format!(
            "{}unlisted_labels = \"maybe\"\n",
            numeric_schema_text("x", WIDE_CLAMP)
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains("unknown variant `maybe`"), "{error}");
        assert!(
            error.contains("`error`, `attack`, `benign`, `skip`"),
            "{error}"
        );
        let misplaced = format!(
            "[[columns]]\nname = \"x\"\nkind = \"numeric\"\ntransforms = {WIDE_CLAMP}\nunlisted_labels = \"skip\"\n[[columns]]\nname = \"label\"\nkind = \"label\"\nbenign = [\"ok\"]\n"
        );
        assert_eq!(
            problems_of(&misplaced),
            ["columns[0] (\"x\"): key \"unlisted_labels\" does not apply to kind \"numeric\""]
        );
    }

    #[test]
    fn classes_are_numbered_in_declaration_order_not_alphabetically() {
        let schema = Schema::from_toml_str(
            r#"
            [[columns]]
            name = "x"
            kind = "numeric"
            transforms = [{ clamp = { min = 0.0, max = 1.0 } }]
            [[columns]]
            name = "label"
            kind = "label"
            benign = ["normal"]
            [columns.classes]
            zeta = ["z"]
            alpha = ["a"]
            "#,
        )
        .unwrap();
        assert_eq!(
            schema.class_names(),
            ["benign", "zeta", "alpha", "other_attack"]
        );
        assert_eq!(schema.class_of_label("z"), LabelClass::Class(1));
        assert_eq!(schema.class_of_label("a"), LabelClass::Class(2));
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn hashing_is_stable_and_in_range() {
        // Pinned values: a change here changes every model trained on hashed columns.
        assert_eq!(hash_bucket("http", 64), (fnv1a_64(b"http") % 64) as u32);
        assert_eq!(hash_bucket("a", 8), (0xaf63_dc4c_8601_ec8c_u64 % 8) as u32);
        for value in ["", "http", "ftp_data", "443", "ünïcode"] {
            for num_buckets in [1, 2, 7, 64, 65_536] {
                let bucket = hash_bucket(value, num_buckets);
                assert!(bucket < num_buckets);
                assert_eq!(bucket, hash_bucket(value, num_buckets));
            }
        }
        let schema = Schema::for_test();
        let record = csv_record(&["0", "tcp", "8080", "ok"]);
        let (features, _) = schema
            .featurize(&RecordFields::CsvPositional(&record))
            .unwrap();
        let hashed = &features[4..12];
        assert_eq!(hashed.iter().sum::<f32>(), 1.0);
        assert_eq!(hashed[hash_bucket("8080", 8) as usize], 1.0);
    }

    #[test]
    fn log1p_transform_matches_hand_computed_values() {
        let schema = numeric_schema(r#"["log1p", { clamp = { min = -1e6, max = 1e6 } }]"#);
        assert_close(featurize_one(&schema, "0").unwrap(), 0.0);
        assert_close(featurize_one(&schema, "1").unwrap(), std::f64::consts::LN_2);
        assert_close(featurize_one(&schema, "9").unwrap(), 10f64.ln());
        assert!(
            featurize_one(&schema, "-1")
                .unwrap_err()
                .contains("after the transforms")
        );
    }

    #[test]
    fn clamp_transform_limits_values() {
        let schema = numeric_schema("[{ clamp = { min = -1.0, max = 2.5 } }]");
        assert_close(featurize_one(&schema, "-7").unwrap(), -1.0);
        assert_close(featurize_one(&schema, "1.25").unwrap(), 1.25);
        assert_close(featurize_one(&schema, "1e9").unwrap(), 2.5);
    }

    #[test]
    fn scale_transform_subtracts_the_offset_then_divides() {
        let schema = numeric_schema(
            "[{ clamp = { min = -1e5, max = 1e5 } }, { scale = { offset = 2.0, divisor = 4.0 } }]",
        );
        assert_close(featurize_one(&schema, "10").unwrap(), 2.0);
        assert_close(featurize_one(&schema, "0").unwrap(), -0.5);
        let without_offset =
            numeric_schema("[{ clamp = { min = -1e5, max = 1e5 } }, { scale = { divisor = 8 } }]");
        assert_close(featurize_one(&without_offset, "2").unwrap(), 0.25);
    }

    #[test]
    fn standardize_transform_uses_the_declared_statistics() {
        let schema = numeric_schema(
            "[{ clamp = { min = -1e5, max = 1e5 } }, { standardize = { mean = 1.2, std = 3.4 } }]",
        );
        assert_close(featurize_one(&schema, "1.2").unwrap(), 0.0);
        assert_close(featurize_one(&schema, "4.6").unwrap(), 1.0);
        assert_close(featurize_one(&schema, "-5.6").unwrap(), -2.0);
    }

    #[test]
    fn transforms_run_in_declared_order() {
        let schema = numeric_schema(
            r#"["log1p", { clamp = { min = 0.0, max = 2.0 } }, { scale = { offset = 0.0, divisor = 4.0 } }]"#,
        );
        assert_close(
            featurize_one(&schema, "1").unwrap(),
            std::f64::consts::LN_2 / 4.0,
        );
        assert_close(featurize_one(&schema, "1000").unwrap(), 0.5);
    }

    #[test]
    fn numeric_fields_that_are_not_finite_numbers_are_refused() {
        let schema = numeric_schema(WIDE_CLAMP);
        assert!(
            featurize_one(&schema, "abc")
                .unwrap_err()
                .contains("\"abc\" is not a number")
        );
        assert!(
            featurize_one(&schema, "NaN")
                .unwrap_err()
                .contains("not a finite number")
        );
        assert!(
            featurize_one(&schema, "inf")
                .unwrap_err()
                .contains("not a finite number")
        );
        assert!(
            featurize_one(&schema, "1e400")
                .unwrap_err()
                .contains("not a finite number")
        );
        assert!(
            featurize_one(&schema, "")
                .unwrap_err()
                .contains("no missing value")
        );
        assert_close(featurize_one(&schema, " 2.5 ").unwrap(), 2.5);
    }

    #[test]
    fn missing_values_fill_empty_fields_before_the_transforms() {
        let schema = Schema::from_toml_str(
            r#"
            [[columns]]
            name = "x"
            kind = "numeric"
            transforms = [{ clamp = { min = 0.0, max = 10.0 } }, { scale = { offset = 0.0, divisor = 2.0 } }]
            missing = 3
            [[columns]]
            name = "proto"
            kind = "categorical"
            vocabulary = ["tcp"]
            missing = "tcp"
            [[columns]]
            name = "label"
            kind = "label"
            benign = ["ok"]
            "#,
        )
        .unwrap();
        let record = csv_record(&["", "  ", "ok"]);
        let (features, _) = schema
            .featurize(&RecordFields::CsvPositional(&record))
            .unwrap();
        assert_eq!(features, vec![1.5, 1.0, 0.0]);
    }

    #[test]
    fn positional_rows_must_have_one_field_per_column() {
        let schema = Schema::for_test();
        let record = csv_record(&["1", "tcp", "80"]);
        let reason = schema
            .featurize(&RecordFields::CsvPositional(&record))
            .unwrap_err();
        assert_eq!(
            reason,
            "row has 3 fields, the schema expects 4 (one per column)"
        );
    }

    #[test]
    fn header_rows_are_matched_by_name_in_any_order() {
        let schema = Schema::for_test();
        let header = csv_record(&["label", "extra", "port", "proto", "bytes"]);
        let positions = schema.header_positions(&header, true).unwrap();
        let record = csv_record(&["portscan", "zzz", "22", "udp", "1"]);
        let fields = RecordFields::CsvWithHeader {
            record: &record,
            header: &positions,
        };
        let (features, label) = schema.featurize(&fields).unwrap();
        assert_close(features[0], std::f64::consts::LN_2);
        assert_eq!(&features[1..4], &[0.0, 1.0, 0.0]);
        let label = label.unwrap();
        assert_eq!(
            (label.class, label.raw_label.as_ref()),
            (LabelClass::Class(1), "portscan")
        );
    }

    #[test]
    fn a_header_without_a_feature_column_is_refused_naming_it() {
        let schema = Schema::for_test();
        let header = csv_record(&["bytes", "label"]);
        let mismatch = schema.header_positions(&header, false).unwrap_err();
        assert_eq!(mismatch.missing_columns, ["proto", "port"]);
        assert_eq!(
            mismatch.to_string(),
            "the header has no column named \"proto\", \"port\""
        );
    }

    #[test]
    fn a_header_without_a_column_that_has_a_missing_value_is_refused() {
        let schema = Schema::from_toml_str(
            r#"
            [[columns]]
            name = "bytes"
            kind = "numeric"
            transforms = [{ clamp = { min = 0.0, max = 10.0 } }]
            missing = 0
            [[columns]]
            name = "proto"
            kind = "categorical"
            vocabulary = ["tcp"]
            missing = "tcp"
            [[columns]]
            name = "notes"
            kind = "ignore"
            [[columns]]
            name = "label"
            kind = "label"
            benign = ["ok"]
            "#,
        )
        .unwrap();
        let header = csv_record(&["label"]);
        let mismatch = schema.header_positions(&header, true).unwrap_err();
        assert_eq!(mismatch.missing_columns, ["bytes", "proto"]);
        // An ignored column may be absent; every other column is needed.
        let without_notes = csv_record(&["proto", "bytes", "label"]);
        assert!(schema.header_positions(&without_notes, true).is_ok());
        assert_eq!(
            schema.columns_required_in_input(true),
            ["bytes", "proto", "label"]
        );
        assert_eq!(schema.columns_required_in_input(false), ["bytes", "proto"]);
    }

    #[test]
    fn a_header_without_the_label_gives_unlabelled_rows_unless_labels_are_required() {
        let schema = Schema::for_test();
        let header = csv_record(&["bytes", "proto", "port"]);
        let required = schema.header_positions(&header, true).unwrap_err();
        assert_eq!(required.missing_columns, ["label"]);
        let positions = schema.header_positions(&header, false).unwrap();
        let record = csv_record(&["5", "tcp", "443"]);
        let fields = RecordFields::CsvWithHeader {
            record: &record,
            header: &positions,
        };
        let (features, label) = schema.featurize(&fields).unwrap();
        assert_eq!(features.len(), schema.num_features());
        assert_eq!(label, None);
    }

    #[test]
    fn json_objects_accept_numbers_strings_and_booleans() {
        let schema = Schema::for_test();
        let object =
            json_object(r#"{"bytes": 1, "proto": "udp", "port": 443, "label": "synflood"}"#);
        let (features, label) = schema.featurize(&RecordFields::Json(&object)).unwrap();
        assert_close(features[0], std::f64::consts::LN_2);
        assert_eq!(&features[1..4], &[0.0, 1.0, 0.0]);
        assert_eq!(features[4 + hash_bucket("443", 8) as usize], 1.0);
        assert_eq!(label.unwrap().class, LabelClass::Class(2));

        let with_strings =
            json_object(r#"{"bytes": " 1 ", "proto": "tcp", "port": "443", "label": "ok"}"#);
        let (string_features, string_label) = schema
            .featurize(&RecordFields::Json(&with_strings))
            .unwrap();
        assert_eq!(string_features[0], features[0]);
        assert_eq!(&string_features[4..], &features[4..]);
        assert_eq!(string_label.unwrap().class, LabelClass::Class(0));

        let with_boolean = json_object(r#"{"bytes": true, "proto": false, "port": 1}"#);
        let (boolean_features, no_label) = schema
            .featurize(&RecordFields::Json(&with_boolean))
            .unwrap();
        assert_close(boolean_features[0], std::f64::consts::LN_2);
        assert_eq!(
            boolean_features[3], 1.0,
            "\"false\" is not in the vocabulary"
        );
        assert_eq!(no_label, None);
    }

    #[test]
    fn json_fields_that_are_absent_null_or_nested_are_refused() {
        let schema = Schema::for_test();
        let absent = json_object(r#"{"proto": "tcp", "port": 1, "label": "ok"}"#);
        let null = json_object(r#"{"bytes": null, "proto": "tcp", "port": 1, "label": "ok"}"#);
        let nested = json_object(r#"{"bytes": [1], "proto": "tcp", "port": 1, "label": "ok"}"#);
        for (object, expected) in [
            (
                &absent,
                "column \"bytes\" is empty or absent and has no missing value",
            ),
            (
                &null,
                "column \"bytes\" is empty or absent and has no missing value",
            ),
            (&nested, "column \"bytes\": expected a number, got an array"),
        ] {
            assert_eq!(
                schema.featurize(&RecordFields::Json(object)).unwrap_err(),
                expected
            );
        }
    }

    #[test]
    fn long_values_are_cut_in_reasons() {
        let schema = numeric_schema(WIDE_CLAMP);
        let long_value = "x".repeat(500);
        let reason = featurize_one(&schema, &long_value).unwrap_err();
        assert!(reason.len() < 100, "{reason}");
    }

    #[test]
    fn schema_round_trips_through_canonical_toml() {
        let schema = Schema::from_toml_str(
            r#"
            format = "jsonl"
            [[columns]]
            name = "duration"
            kind = "numeric"
            transforms = ["log1p", { clamp = { min = 0, max = 20 } }, { scale = { divisor = 10 } }, { standardize = { mean = 1.2, std = 3.4 } }]
            missing = 0
            [[columns]]
            name = "service"
            kind = "categorical"
            hash_buckets = 32
            missing = "none"
            [[columns]]
            name = "label"
            kind = "label"
            benign = ["normal"]
            [columns.classes]
            probe = ["satan"]
            dos = ["neptune", "smurf"]
            [[columns]]
            name = "difficulty"
            kind = "ignore"
            "#,
        )
        .unwrap();
        let canonical = schema.to_toml_string();
        let reloaded = Schema::from_toml_str(&canonical).unwrap();
        assert_eq!(reloaded, schema);
        assert_eq!(reloaded.to_toml_string(), canonical);
        assert_eq!(reloaded.sha256(), schema.sha256());
        assert_eq!(
            reloaded.class_names(),
            ["benign", "probe", "dos", "other_attack"]
        );
        assert_eq!(schema.sha256().len(), 64);
        assert_ne!(schema.sha256(), Schema::for_test().sha256());
    }

    #[test]
    fn validation_reports_every_problem_with_its_key_path() {
        let problems = problems_of(
            r#"
            delimiter = ";;"
            [[columns]]
            name = "a"
            kind = "numeric"
            transforms = [{ clamp = { min = 5.0, max = 1.0 } }, { standardize = { mean = 0.0, std = 0.0 } }, { scale = { divisor = 0.0 } }]
            [[columns]]
            name = "a"
            kind = "numric"
            [[columns]]
            name = "proto"
            kind = "categorical"
            vocabulary = []
            [[columns]]
            name = "service"
            kind = "categorical"
            hash_buckets = 0
            [[columns]]
            name = "both"
            kind = "categorical"
            vocabulary = ["x", "x"]
            hash_buckets = 4
            [[columns]]
            name = "flag"
            kind = "numeric"
            vocabulary = ["SF"]
            "#,
        );
        let expected = [
            "delimiter must be one ascii character other than a quote or a line break, got \";;\"",
            "columns[0] (\"a\").transforms[0] (clamp): min 5 is greater than max 1",
            "columns[0] (\"a\").transforms[1] (standardize): std must be greater than 0, got 0",
            "columns[0] (\"a\").transforms[2] (scale): divisor must not be 0",
            "columns[1] (\"a\"): duplicate column name, columns[0] (\"a\") already uses it",
            "columns[1] (\"a\"): unknown kind \"numric\", expected \"numeric\", \"categorical\", \"label\" or \"ignore\"",
            "columns[2] (\"proto\"): vocabulary must not be empty",
            "columns[3] (\"service\"): hash_buckets must be in 1..=65536, got 0",
            "columns[4] (\"both\"): set either vocabulary or hash_buckets, not both",
            "columns[5] (\"flag\"): key \"vocabulary\" does not apply to kind \"numeric\"",
            "columns[5] (\"flag\"): numeric column is unbounded (its transforms give values in -inf..=inf); add a clamp with the column's range, e.g. { clamp = { min = 0.0, max = 1.0 } } for a rate or a flag, or { clamp = { min = 0.0, max = 1e12 } } before \"log1p\" for a byte count",
            "columns: no column has kind \"label\"; exactly one label column is required",
        ];
        assert_eq!(problems, expected);
    }

    #[test]
    fn label_problems_are_reported_with_their_class_paths() {
        let problems = problems_of(
            r#"
            [[columns]]
            name = "x"
            kind = "numeric"
            transforms = [{ clamp = { min = 0.0, max = 1.0 } }]
            [[columns]]
            name = "label"
            kind = "label"
            benign = ["normal"]
            [columns.classes]
            dos = ["neptune", "normal"]
            probe = []
            other_attack = ["x"]
            [[columns]]
            name = "label2"
            kind = "label"
            benign = []
            "#,
        );
        let expected = [
            "columns[1] (\"label\").classes.dos: label value \"normal\" is already listed in benign",
            "columns[1] (\"label\").classes.probe: lists no label values",
            "columns[1] (\"label\").classes.other_attack: the class name \"other_attack\" is reserved",
            "columns[2] (\"label2\"): benign must list at least one label value that means benign",
            "columns[2] (\"label2\"): a second label column; columns[1] (\"label\") is already the label and exactly one is allowed",
        ];
        assert_eq!(problems, expected);
    }

    #[test]
    fn a_schema_without_feature_columns_is_refused() {
        let problems = problems_of(
            r#"
            [[columns]]
            name = "label"
            kind = "label"
            benign = ["ok"]
            "#,
        );
        assert_eq!(
            problems,
            ["columns: the schema has no feature columns (kind \"numeric\" or \"categorical\")"]
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let error = Schema::from_toml_str(
            "[[columns]]\nname = \"x\"\nkind = \"categorical\"\nvocab = [\"a\"]\n",
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("line 4"), "{message}");
        assert!(message.contains("unknown field `vocab`"), "{message}");

        let transform_error = Schema::from_toml_str(
            "[[columns]]\nname = \"x\"\nkind = \"numeric\"\ntransforms = [{ clamp = { min = 0, maxx = 1 } }]\n",
        )
        .unwrap_err();
        assert!(
            transform_error.to_string().contains("maxx"),
            "{transform_error}"
        );

        let missing_error = Schema::from_toml_str(
            "[[columns]]\nname = \"x\"\nkind = \"numeric\"\nmissing = true\n",
        )
        .unwrap_err();
        assert!(
            missing_error
                .to_string()
                .contains("expected a number (numeric columns) or a string"),
            "{missing_error}"
        );

        let top_level_error = Schema::from_toml_str("formt = \"csv\"\n").unwrap_err();
        assert!(
            top_level_error.to_string().contains("formt"),
            "{top_level_error}"
        );
    }

    #[test]
    fn loading_a_missing_schema_file_names_it() {
        let path = Path::new("/nonexistent/fedshield/schema.toml");
        let message = Schema::load(path).unwrap_err().to_string();
        assert!(
            message.contains("/nonexistent/fedshield/schema.toml"),
            "{message}"
        );
    }

    #[test]
    fn the_shipped_nsl_kdd_schema_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/nsl-kdd.toml"
        ));
        let schema = Schema::load(path).unwrap();
        assert_eq!(schema.num_columns(), 43);
        assert_eq!(schema.label_column_name(), "label");
        assert_eq!(
            schema.class_names(),
            ["benign", "dos", "probe", "r2l", "u2r", "other_attack"]
        );
        let names = schema.feature_names();
        assert_eq!(names.len(), schema.num_features());
        assert!(names.contains(&"protocol_type=icmp".to_string()));
        assert!(names.contains(&"flag=<other>".to_string()));
    }

    #[test]
    fn a_numeric_column_without_a_bounding_clamp_is_refused_naming_the_column() {
        let schema_with = |transforms: &str| numeric_schema_text("src_bytes", transforms);
        let unbounded_message = |range: &str| {
            format!(
                "columns[0] (\"src_bytes\"): numeric column is unbounded (its transforms give values in {range}); add a clamp with the column's range, e.g. {{ clamp = {{ min = 0.0, max = 1.0 }} }} for a rate or a flag, or {{ clamp = {{ min = 0.0, max = 1e12 }} }} before \"log1p\" for a byte count"
            )
        };
        for (transforms, range) in [
            ("[]", "-inf..=inf"),
            (r#"["log1p"]"#, "-inf..=inf"),
            (
                r#"["log1p", { scale = { offset = 0.0, divisor = 21.0 } }]"#,
                "-inf..=inf",
            ),
            (
                "[{ clamp = { min = 0.0, max = 1e12 } }, { standardize = { mean = 0.0, std = 1e-300 } }, { scale = { divisor = 1e300 } }]",
                "0..=inf",
            ),
            (
                r#"[{ clamp = { min = -5.0, max = 5.0 } }, "log1p"]"#,
                "-inf..=1.791759469228055",
            ),
        ] {
            assert_eq!(
                problems_of(&schema_with(transforms)),
                [unbounded_message(range)],
                "transforms {transforms}"
            );
        }
        assert_eq!(
            problems_of(&schema_with("[{ clamp = { min = 0.0, max = 1e12 } }]")),
            [
                "columns[0] (\"src_bytes\"): features reach 0..=1000000000000, beyond the limit of 1e6 in magnitude; clamp or scale the column into -1e6..=1e6"
            ]
        );
        for bounded in [
            r#"[{ clamp = { min = 0.0, max = 1e12 } }, "log1p", { scale = { divisor = 21.0 } }]"#,
            r#"["log1p", { scale = { divisor = 21.0 } }, { clamp = { min = 0.0, max = 2.0 } }]"#,
            "[{ clamp = { min = -1e6, max = 1e6 } }]",
            "[{ clamp = { min = 0.0, max = 1e12 } }, { standardize = { mean = 5e11, std = 1e6 } }]",
        ] {
            assert!(
                Schema::from_toml_str(&schema_with(bounded)).is_ok(),
                "transforms {bounded}"
            );
        }
    }

    #[test]
    fn extreme_raw_values_give_bounded_finite_features() {
        let schema = numeric_schema(
            r#"[{ clamp = { min = 0.0, max = 1e12 } }, "log1p", { scale = { divisor = 21.0 } }]"#,
        );
        let largest = ((1e12f64).ln_1p() / 21.0) as f32;
        assert_eq!(featurize_one(&schema, "1e38").unwrap(), largest);
        assert_eq!(featurize_one(&schema, "1.7e308").unwrap(), largest);
        assert_eq!(featurize_one(&schema, "-1e38").unwrap(), 0.0);
        let json = json_object(r#"{"x": 1e38, "label": "ok"}"#);
        let (json_features, _) = schema.featurize(&RecordFields::Json(&json)).unwrap();
        assert_eq!(json_features, [largest]);
        for not_finite in ["inf", "-inf", "NaN", "1e400"] {
            assert_eq!(
                featurize_one(&schema, not_finite).unwrap_err(),
                format!(
                    "column \"x\": {} is not a finite number",
                    not_finite.parse::<f64>().unwrap()
                ),
                "value {not_finite}"
            );
        }
    }

    #[test]
    fn log1p_of_minus_one_or_less_is_malformed_even_when_clamped_after() {
        let schema = numeric_schema(r#"["log1p", { clamp = { min = -3.0, max = 3.0 } }]"#);
        for value in ["-1", "-2", "-1e38"] {
            assert!(
                featurize_one(&schema, value)
                    .unwrap_err()
                    .contains("after the transforms"),
                "value {value}"
            );
        }
        assert_close(featurize_one(&schema, "1e38").unwrap(), 3.0);
    }

    #[test]
    fn every_shipped_schema_bounds_an_extreme_record() {
        for schema_file in ["nsl-kdd.toml", "synthetic-flows.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../schemas")
                .join(schema_file);
            let schema = Schema::load(&path).unwrap();
            let numeric_columns: Vec<usize> = schema
                .columns
                .iter()
                .enumerate()
                .filter(|(_, column)| matches!(column.role, ColumnRole::Numeric { .. }))
                .map(|(index, _)| index)
                .collect();
            assert!(numeric_columns.len() >= 6, "{schema_file}");
            for extreme in ["1e38", "-1e38", "1.7e308", "0"] {
                let fields: Vec<&str> = schema
                    .columns
                    .iter()
                    .map(|column| match column.role {
                        ColumnRole::Numeric { .. } => extreme,
                        ColumnRole::Label => "normal",
                        _ => "x",
                    })
                    .collect();
                let record = csv_record(&fields);
                let (features, _) = schema
                    .featurize(&RecordFields::CsvPositional(&record))
                    .unwrap_or_else(|reason| panic!("{schema_file}, {extreme}: {reason}"));
                // The shipped schemas scale every numeric column into a few units.
                assert!(
                    features.iter().all(|feature| (0.0..=4.0).contains(feature)),
                    "{schema_file}, {extreme}: {features:?}"
                );
            }
        }
    }

    /// The schema of the featurizer property: two numeric columns whose
    /// transforms can fail or overflow, a vocabulary, hash buckets, a label.
    const PROPERTY_SCHEMA: &str = r#"
        [[columns]]
        name = "a"
        kind = "numeric"
        transforms = ["log1p", { clamp = { min = -3.0, max = 3.0 } }]
        [[columns]]
        name = "b"
        kind = "numeric"
        transforms = [{ standardize = { mean = 1.0, std = 1e-30 } }, { clamp = { min = -1e6, max = 1e6 } }]
        [[columns]]
        name = "c"
        kind = "categorical"
        vocabulary = ["x", "y"]
        [[columns]]
        name = "d"
        kind = "categorical"
        hash_buckets = 5
        [[columns]]
        name = "label"
        kind = "label"
        benign = ["ok"]
    "#;

    /// Returns the first column of [`PROPERTY_SCHEMA`] whose field (trimmed;
    /// absent past the end) the featurizer must refuse, or `None` when every
    /// field fits: `a` and `b` need a finite number, `a` one above -1 (log1p),
    /// `c` and `d` a non-empty value. The label never makes a record unfit.
    fn first_unfit_column(fields: &[String]) -> Option<&'static str> {
        let field = |index: usize| fields.get(index).map_or("", |field| field.trim());
        let finite_number = |text: &str| {
            text.parse::<f64>()
                .ok()
                .filter(|value: &f64| value.is_finite())
        };
        if finite_number(field(0)).is_none_or(|value| value <= -1.0) {
            return Some("a");
        }
        if finite_number(field(1)).is_none() {
            return Some("b");
        }
        if field(2).is_empty() {
            return Some("c");
        }
        if field(3).is_empty() {
            return Some("d");
        }
        None
    }

    /// Checks one featurizer outcome of `fields` against
    /// [`first_unfit_column`]: a fitting record gives bounded finite features,
    /// one-hot slots and the label the schema says; an unfit one is refused
    /// naming the column the oracle names. No outcome passes unchecked.
    fn check_featurized(
        schema: &Schema,
        fields: &[String],
        outcome: Result<(Vec<f32>, Option<LabelInfo<'_>>), String>,
    ) -> Result<(), TestCaseError> {
        match (outcome, first_unfit_column(fields)) {
            (Ok((features, label)), None) => {
                prop_assert_eq!(features.len(), schema.num_features());
                prop_assert!(features.iter().all(|feature| feature.is_finite()));
                prop_assert!(
                    features
                        .iter()
                        .all(|feature| f64::from(feature.abs()) <= MAX_FEATURE_MAGNITUDE)
                );
                prop_assert!((-3.0..=3.0).contains(&features[0]));
                prop_assert_eq!(features[2..5].iter().sum::<f32>(), 1.0);
                prop_assert_eq!(features[5..10].iter().sum::<f32>(), 1.0);
                let raw_label = fields.get(4).map_or("", |field| field.trim());
                let expected_label = match raw_label {
                    "" => None,
                    "ok" => Some(LabelClass::Class(0)),
                    _ => Some(LabelClass::UnlistedError),
                };
                prop_assert_eq!(label.as_ref().map(|label| label.class), expected_label);
                if let Some(label) = label {
                    prop_assert_eq!(label.raw_label.as_ref(), raw_label);
                }
            }
            (Err(reason), Some(column)) => {
                let expected_start = format!("column {column:?}");
                prop_assert!(
                    reason.starts_with(&expected_start),
                    "reason {:?} should blame column {:?}",
                    reason,
                    column
                );
            }
            (Ok(_), Some(column)) => {
                return Err(TestCaseError::fail(format!(
                    "column {column:?} should have been refused"
                )));
            }
            (Err(reason), None) => {
                return Err(TestCaseError::fail(format!(
                    "a fitting record was refused: {reason}"
                )));
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn featurize_gives_bounded_features_or_names_the_unfit_column(
            mut fields in proptest::collection::vec(
                ".{0,12}|-?[0-9]{1,40}(\\.[0-9]{0,5})?(e-?[0-9]{1,3})?",
                0..7,
            ),
            label in prop_oneof![Just("ok".to_string()), "[a-z ]{0,4}"],
        ) {
            let schema = Schema::from_toml_str(PROPERTY_SCHEMA).unwrap();
            if let Some(label_field) = fields.get_mut(4) {
                *label_field = label;
            }

            let record = StringRecord::from(fields.clone());
            let csv_outcome = schema.featurize(&RecordFields::CsvPositional(&record));
            if fields.len() == schema.num_columns() {
                check_featurized(&schema, &fields, csv_outcome)?;
            } else {
                prop_assert_eq!(
                    csv_outcome.unwrap_err(),
                    format!(
                        "row has {} fields, the schema expects 5 (one per column)",
                        fields.len()
                    )
                );
            }

            // The same values as JSON strings; keys past the fields are absent.
            let object: serde_json::Map<String, serde_json::Value> = ["a", "b", "c", "d", "label"]
                .iter()
                .zip(&fields)
                .map(|(name, value)| (name.to_string(), serde_json::Value::String(value.clone())))
                .collect();
            let json_outcome = schema.featurize(&RecordFields::Json(&object));
            check_featurized(&schema, &fields, json_outcome)?;
        }
    }
}
