//! Validation of a schema file into a [`Schema`]: every rule checked, every
//! problem reported with its key path, and each column compiled into its role.
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

use std::collections::HashMap;

use super::alert_labels::validate_alert_labels;
use super::file::{
    ColumnFile, DEFAULT_SET_SEPARATOR, FileFormat, MissingValue, SchemaFile, default_delimiter,
    without_default_keys,
};
use super::json_fields::FilterValue;
use super::labels::{LabelKeys, LabelMapping, validate_label};
use super::{
    Column, ColumnRole, IdentityRole, MAX_FEATURE_MAGNITUDE, MAX_HASH_BUCKETS, Schema, SchemaError,
    Transform,
};

impl Schema {
    /// Checks every rule and compiles the columns, collecting all problems.
    pub(super) fn validate(file: SchemaFile, origin: &str) -> Result<Schema, SchemaError> {
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
        if file.format == FileFormat::Zeek && file.has_header {
            problems.push(
                "has_header: zeek logs name their columns in the #fields header; leave has_header out"
                    .to_string(),
            );
        }
        if file.format == FileFormat::Zeek && file.delimiter != default_delimiter() {
            problems.push(format!(
                "delimiter: zeek logs give their separator in the #separator header; leave delimiter out, got {:?}",
                file.delimiter
            ));
        }
        if file.format == FileFormat::Zeek {
            for (column_index, column) in file.columns.iter().enumerate() {
                if column.set_separator.is_some() {
                    problems.push(format!(
                        "{}: zeek logs give their set separator in the #set_separator header; leave set_separator out",
                        column_path(column_index, &column.name)
                    ));
                }
            }
        }
        if file.columns.is_empty() {
            problems.push("columns: the schema declares no columns".to_string());
        }
        if !file.filter.is_empty() && file.format != FileFormat::Jsonl {
            problems.push(format!(
                "filter: a record filter applies to format = \"jsonl\", the schema's format is \"{}\"",
                file.format
            ));
        }
        for (name, value) in &file.filter {
            if name.trim().is_empty() {
                problems.push("filter: a field name must not be empty".to_string());
            }
            if matches!(value, FilterValue::Number(number) if !number.is_finite()) {
                problems.push(format!("filter.{name:?}: the number must be finite"));
            }
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
            let echo = validate_echo(column, &path, &mut problems);
            columns.push(Column {
                name: column.name.clone(),
                role,
                echo,
            });
        }

        for &column_index in label_column_indices.iter().skip(1) {
            let first_index = label_column_indices[0];
            problems.push(format!(
                "{}: a second label column; {} is already the label and at most one is allowed",
                column_path(column_index, &file.columns[column_index].name),
                column_path(first_index, &file.columns[first_index].name)
            ));
        }
        if let Some(mapping) = &mut label_mapping
            && let Some(class_column) = &mut mapping.class_column
        {
            let label_index = mapping.column_index;
            match first_index_of_name.get(class_column.name.as_str()) {
                Some(&index) if index != label_index => class_column.column_index = index,
                _ => problems.push(format!(
                    "{}.class_column: {:?} is not another column of the schema",
                    column_path(label_index, &file.columns[label_index].name),
                    class_column.name
                )),
            }
        }
        let alert_labels = file.alert_labels.as_ref().and_then(|table| {
            if !label_column_indices.is_empty() {
                problems.push(
                    "alert_labels: the schema has a label column; label flows from the column or from alerts, not both"
                        .to_string(),
                );
            }
            validate_alert_labels(table, file.format, &first_index_of_name, &mut problems)
        });
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

        if !problems.is_empty() {
            return Err(SchemaError::Invalid {
                origin: origin.to_string(),
                problems,
            });
        }
        Ok(Schema {
            file: without_default_keys(file),
            delimiter,
            columns,
            num_features,
            label: label_mapping,
            alert_labels,
        })
    }
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

/// Returns whether and how a detector echoes `column`: `Some(role)` for an
/// `identity` column and a feature column with a `role`, `None` otherwise;
/// appends a problem for a `role` that names no known field or sits on a
/// column that cannot carry one.
fn validate_echo(
    column: &ColumnFile,
    path: &str,
    problems: &mut Vec<String>,
) -> Option<Option<IdentityRole>> {
    let role = match column.role.as_deref() {
        None => None,
        Some(name) => match IdentityRole::from_ecs_field(name) {
            Some(role) => Some(role),
            None => {
                problems.push(format!(
                    "{path}.role: unknown role {name:?}, expected one of {}",
                    IdentityRole::choices()
                ));
                return None;
            }
        },
    };
    match column.kind.as_str() {
        "identity" => Some(role),
        "numeric" | "categorical" => role.map(Some),
        "ignore" if role.is_some() => {
            problems.push(format!(
                "{path}.role: an ignored column is not echoed; use kind = \"identity\" to echo it"
            ));
            None
        }
        "label" if role.is_some() => {
            problems.push(format!("{path}.role: the label column cannot carry a role"));
            None
        }
        _ => None,
    }
}

/// Validates one column, appending problems prefixed with `path`.
fn validate_column(column: &ColumnFile, path: &str, problems: &mut Vec<String>) -> CompiledColumn {
    let allowed_keys: &[&str] = match column.kind.as_str() {
        "numeric" => &["transforms", "missing"],
        "categorical" => &[
            "vocabulary",
            "hash_buckets",
            "missing",
            "set",
            "set_separator",
        ],
        "label" => &[
            "benign",
            "classes",
            "unlisted_labels",
            "attack",
            "skip",
            "class_column",
        ],
        "ignore" | "identity" => &[],
        unknown => {
            problems.push(format!(
                "{path}: unknown kind {unknown:?}, expected \"numeric\", \"categorical\", \"label\", \"identity\" or \"ignore\""
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
            LabelKeys {
                benign: column.benign.as_deref(),
                benign_required: true,
                classes: column.classes.as_ref(),
                unlisted: column.unlisted_labels,
                attack: column.attack.as_deref(),
                skip: column.skip.as_deref(),
                class_column: column.class_column.as_deref(),
            },
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
    let set_separator = match (column.set, &column.set_separator) {
        (Some(true), separator) => {
            let separator = separator.as_deref().unwrap_or(DEFAULT_SET_SEPARATOR);
            if separator.is_empty() {
                problems.push(format!("{path}: set_separator must not be empty"));
            }
            Some(separator.to_string())
        }
        (_, Some(_)) => {
            problems.push(format!(
                "{path}: set_separator applies to a set-valued column; add set = true or leave set_separator out"
            ));
            None
        }
        (_, None) => None,
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
                set_separator,
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
                set_separator,
            })
        }
    }
}
