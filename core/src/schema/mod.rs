//! Telemetry schemas (TOML files) and the featurizer that turns one record into
//! a feature vector and a class.
//!
//! - `file`: the schema file's TOML format, as written, and its canonical text.
//! - `transform`: the fixed steps from a numeric column's raw value to a feature.
//! - `labels`: the label column: benign values, attack classes, unlisted values.
//! - `alert_labels`: the `[alert_labels]` table: labels joined from Suricata
//!   alerts by Community ID instead of a label column.
//! - `validate`: every rule of a schema file, each column compiled into its role.
//! - `json_fields`: column lookup in JSON records (flat dotted keys, nested
//!   objects) and the `[filter]` that keeps records.
//! - `featurizer`: one record (csv row, JSON object) into features and a label.
//! - [`diff`]: what differs between two schemas, for the message that declines a round.
//! - [`draft`]: a starting schema drafted from a telemetry file (`fedshield schema draft`).
//!
//! A schema is built once ([`Schema::from_toml_str`], [`Schema::load`]) and then
//! featurizes every record ([`Schema::featurize`]). Every participant featurizes
//! the same way: nothing is computed from local data.
//!
//! A label value that neither `benign` nor `classes` lists is an error by
//! default ([`UnlistedLabels`]), naming the value, the file and the line:
//! write `unlisted_labels = "attack"` to count such values as attacks (the
//! last class), `"benign"`, or `"skip"` to leave their rows out.

mod alert_labels;
pub mod diff;
pub mod draft;
mod featurizer;
mod file;
mod identity;
mod json_fields;
mod labels;
#[cfg(test)]
mod tests;
mod transform;
mod validate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use alert_labels::AlertLabels;
pub use alert_labels::{AlertClassFrom, AlertFlowFields};
pub use featurizer::{HeaderMismatch, HeaderPositions, RecordFields, fnv1a_64, hash_bucket};
pub(crate) use featurizer::{json_kind, quoted, strip_byte_order_mark};
pub use file::FileFormat;
use file::{SchemaFile, describe_toml_error};
pub use identity::{EchoedColumn, IdentityRole};
pub use json_fields::resolve_json_field;
use labels::LabelMapping;
pub use labels::{
    ATTACK_CLASS, BENIGN_CLASS, LabelClass, LabelInfo, OTHER_ATTACK_CLASS, UnlistedLabels,
};
pub use transform::Transform;

/// Largest accepted `hash_buckets`.
pub const MAX_HASH_BUCKETS: i64 = 65_536;

/// Largest magnitude of a numeric feature: every numeric column's transforms
/// must map all values into `-MAX_FEATURE_MAGNITUDE..=MAX_FEATURE_MAGNITUDE`
/// (validation checks it), and the featurizer clamps every numeric feature into
/// that range as a last line of defence. Bounded features keep one extreme
/// record from making a gradient non-finite.
pub const MAX_FEATURE_MAGNITUDE: f64 = 1e6;

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

/// What a validated column contributes.
#[derive(Clone, Debug)]
enum ColumnRole {
    /// One feature: the parsed value through the transforms.
    Numeric {
        transforms: Vec<Transform>,
        missing: Option<f64>,
    },
    /// `vocabulary.len() + 1` features: a one-hot over the vocabulary, the last slot for other values
    /// (a multi-hot over the elements when `set_separator` is set).
    Vocabulary {
        slot_of_value: HashMap<String, usize>,
        values: Vec<String>,
        missing: Option<String>,
        set_separator: Option<String>,
    },
    /// `num_buckets` features: a one-hot at `fnv1a_64(value) % num_buckets`
    /// (a multi-hot over the elements when `set_separator` is set).
    Hashed {
        num_buckets: u32,
        missing: Option<String>,
        set_separator: Option<String>,
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
    /// Set when a detector echoes the column in every verdict: an
    /// `identity` column, or a feature column with a `role`.
    echo: Option<Option<IdentityRole>>,
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
    /// The label column's mapping; `None` for an unlabelled schema, whose
    /// rows all count as class 0.
    label: Option<LabelMapping>,
    /// The `[alert_labels]` table: labels joined from alerts, in a schema
    /// without a label column.
    alert_labels: Option<AlertLabels>,
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

    /// Returns the name of the label column, or `None` for an unlabelled schema.
    pub fn label_column_name(&self) -> Option<&str> {
        let mapping = self.label.as_ref()?;
        Some(&self.columns[mapping.column_index].name)
    }

    /// Returns true if the schema has labels: a label column, or an
    /// `[alert_labels]` table (labels joined from alerts at load time). An
    /// unlabelled schema (neither) reads every row as class 0, benign as far
    /// as training goes: only an autoencoder can learn from such data, and
    /// metrics that need labels cannot be computed on it.
    pub fn is_labelled(&self) -> bool {
        self.label_mapping().is_some()
    }

    /// Returns how label values map to classes: the label column's mapping,
    /// or the `[alert_labels]` table's.
    fn label_mapping(&self) -> Option<&LabelMapping> {
        self.label
            .as_ref()
            .or(self.alert_labels.as_ref().map(|alerts| &alerts.mapping))
    }

    /// Returns why a model that learns from labels (a classifier) cannot
    /// train on data read with this schema, or `None` when it can.
    pub fn classifier_refusal(&self) -> Option<String> {
        if self.is_labelled() {
            return None;
        }
        Some(
            "the schema has no label column, so its data is unlabelled; only the autoencoder \
             trains on unlabelled data (or label the flows from Suricata alerts with --labels-from eve.json)"
                .to_string(),
        )
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
    /// "other_attack"]` when attack classes are declared, else `["benign", "attack"]`;
    /// `["benign"]` for an unlabelled schema.
    pub fn class_names(&self) -> Vec<String> {
        match self.label_mapping() {
            Some(mapping) => mapping.class_names.clone(),
            None => vec![BENIGN_CLASS.to_string()],
        }
    }

    /// Returns the number of classes (including benign); 1 for an unlabelled schema.
    pub fn num_classes(&self) -> usize {
        self.label_mapping()
            .map_or(1, |mapping| mapping.class_names.len())
    }

    /// Returns what a raw label value (trimmed) means: its class (0 = benign),
    /// or, for a value neither `benign` nor `classes` lists, what the label
    /// column's `unlisted_labels` says. An unlabelled schema gives class 0.
    pub fn class_of_label(&self, raw_label: &str) -> LabelClass {
        self.label_mapping()
            .map_or(LabelClass::Class(0), |mapping| {
                mapping.class_of(raw_label, None)
            })
    }

    /// Returns what the label column does with values it does not list (the
    /// default for an unlabelled schema).
    pub fn unlisted_labels(&self) -> UnlistedLabels {
        self.label_mapping()
            .map_or_else(UnlistedLabels::default, LabelMapping::unlisted)
    }

    /// Returns the columns a detector echoes in every verdict, in schema
    /// order: `identity` columns and feature columns with a `role`.
    pub fn echoed_columns(&self) -> Vec<EchoedColumn> {
        self.columns
            .iter()
            .filter_map(|column| {
                column.echo.map(|role| EchoedColumn {
                    name: column.name.clone(),
                    role,
                })
            })
            .collect()
    }

    /// Returns each feature column's name and the range of feature indices
    /// it fills, in feature order: what maps a feature back to the column
    /// (and so the value) it came from.
    pub fn feature_columns(&self) -> Vec<(&str, std::ops::Range<usize>)> {
        let mut start = 0;
        let mut ranges = Vec::new();
        for column in &self.columns {
            let width = column.role.num_features();
            if width > 0 {
                ranges.push((column.name.as_str(), start..start + width));
            }
            start += width;
        }
        ranges
    }

    /// Returns whether the schema has a column named `name`.
    pub fn has_column(&self, name: &str) -> bool {
        self.columns.iter().any(|column| column.name == name)
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
}
