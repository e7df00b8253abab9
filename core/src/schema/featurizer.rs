//! The featurizer: one record (a csv row or a JSON object) through a
//! [`Schema`] into a feature vector and a label.
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

use std::borrow::Cow;
use std::collections::HashMap;

use super::json_fields::resolve_json_field;
use super::labels::LabelInfo;
use super::{ColumnRole, MAX_FEATURE_MAGNITUDE, Schema, Transform};

/// Longest field value, in characters, quoted in a malformed-row reason.
const MAX_QUOTED_VALUE_CHARS: usize = 40;

impl Schema {
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
                ColumnRole::Label => {
                    label = self.label_of(record, field.scalar(), &column.name)?;
                }
                ColumnRole::Numeric {
                    transforms,
                    missing,
                } => {
                    let value =
                        numeric_feature(field.scalar(), transforms, *missing, &column.name)?;
                    features.push(value);
                }
                ColumnRole::Vocabulary {
                    slot_of_value,
                    values,
                    missing,
                    set_separator,
                } => {
                    let other_slot = values.len();
                    let slot_of =
                        |text: &str| slot_of_value.get(text).copied().unwrap_or(other_slot);
                    let categorical = Categorical {
                        field,
                        missing: missing.as_deref(),
                        set_separator: set_separator.as_deref(),
                        column_name: &column.name,
                    };
                    categorical.push_slots(record, features, other_slot + 1, slot_of)?;
                }
                ColumnRole::Hashed {
                    num_buckets,
                    missing,
                    set_separator,
                } => {
                    let slot_of = |text: &str| hash_bucket(text, *num_buckets) as usize;
                    let categorical = Categorical {
                        field,
                        missing: missing.as_deref(),
                        set_separator: set_separator.as_deref(),
                        column_name: &column.name,
                    };
                    categorical.push_slots(record, features, *num_buckets as usize, slot_of)?;
                }
            }
        }
        debug_assert_eq!(features.len(), self.num_features);
        Ok(label)
    }

    fn label_of<'r>(
        &self,
        record: &RecordFields<'r>,
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
        let with_class_column = self.label.as_ref().and_then(|mapping| {
            let class_column = mapping.class_column.as_ref()?;
            Some((mapping, class_column))
        });
        let class = match with_class_column {
            None => self.class_of_label(&raw_label),
            Some((mapping, class_column)) => {
                let class_value = match record
                    .field(class_column.column_index, &class_column.name)
                    .scalar()
                {
                    FieldValue::Text(text) => Some(Cow::Borrowed(text)),
                    FieldValue::Number(number) => Some(Cow::Owned(number.to_string())),
                    FieldValue::Bool(flag) => {
                        Some(Cow::Borrowed(if flag { "true" } else { "false" }))
                    }
                    FieldValue::Absent | FieldValue::Unsupported(_) => None,
                };
                mapping.class_of(&raw_label, class_value.as_deref())
            }
        };
        Ok(Some(LabelInfo { class, raw_label }))
    }
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
    /// A JSON object: fields by column name, a literal key first, then a
    /// dotted path through nested objects ([`super::resolve_json_field`]).
    /// Strings, numbers and booleans are accepted (numeric strings too, for
    /// numeric columns), and arrays of them by set-valued columns; null counts
    /// as absent.
    Json(&'a serde_json::Map<String, serde_json::Value>),
    /// A Zeek TSV row, matched to columns by its `#fields` header as
    /// [`RecordFields::CsvWithHeader`] is. Fields holding the unset marker are
    /// empty (absent); a field equal to `empty_field` (the `#empty_field`
    /// marker) is the empty set for a set-valued column and absent for any
    /// other, and set-valued fields split on `set_separator` (the
    /// `#set_separator` directive).
    Zeek {
        record: &'a csv::StringRecord,
        header: &'a HeaderPositions,
        set_separator: &'a str,
        empty_field: &'a str,
    },
}

/// One field of a record, as the featurizer sees it.
#[derive(Clone, Copy, Debug)]
pub(super) enum FieldValue<'a> {
    /// Absent, empty (after trimming) or JSON null.
    Absent,
    Text(&'a str),
    Number(&'a serde_json::Number),
    Bool(bool),
    /// A JSON array or object, described for the error message.
    Unsupported(&'static str),
}

/// One field of a record, as a set-valued column sees it.
#[derive(Clone, Copy, Debug)]
pub(super) enum RawField<'a> {
    Scalar(FieldValue<'a>),
    /// A JSON array: a set's elements.
    Array(&'a [serde_json::Value]),
    /// Zeek's empty marker: the empty set.
    EmptySet,
}

impl<'a> RawField<'a> {
    /// Returns the field as a single-valued column sees it: the empty-set
    /// marker is absent and an array is unsupported.
    pub(super) fn scalar(self) -> FieldValue<'a> {
        match self {
            RawField::Scalar(value) => value,
            RawField::EmptySet => FieldValue::Absent,
            RawField::Array(_) => FieldValue::Unsupported("an array"),
        }
    }
}

impl<'a> RecordFields<'a> {
    fn check_field_count(&self, num_columns: usize) -> Result<(), String> {
        match self {
            RecordFields::CsvPositional(record) if record.len() != num_columns => Err(format!(
                "row has {} fields, the schema expects {num_columns} (one per column)",
                record.len()
            )),
            RecordFields::CsvWithHeader { record, header }
            | RecordFields::Zeek { record, header, .. }
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

    pub(super) fn field(&self, column_index: usize, column_name: &str) -> RawField<'a> {
        let text = match *self {
            RecordFields::CsvPositional(record) => record.get(column_index),
            RecordFields::CsvWithHeader { record, header }
            | RecordFields::Zeek { record, header, .. } => header
                .positions
                .get(column_index)
                .copied()
                .flatten()
                .and_then(|position| record.get(position)),
            RecordFields::Json(object) => match resolve_json_field(object, column_name) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(text)) => Some(text.as_str()),
                Some(serde_json::Value::Number(number)) => {
                    return RawField::Scalar(FieldValue::Number(number));
                }
                Some(serde_json::Value::Bool(flag)) => {
                    return RawField::Scalar(FieldValue::Bool(*flag));
                }
                Some(serde_json::Value::Array(items)) => return RawField::Array(items),
                Some(serde_json::Value::Object(_)) => {
                    return RawField::Scalar(FieldValue::Unsupported("an object"));
                }
            },
        };
        match (text.map(str::trim), self) {
            (None | Some(""), _) => RawField::Scalar(FieldValue::Absent),
            (Some(trimmed), RecordFields::Zeek { empty_field, .. }) if trimmed == *empty_field => {
                RawField::EmptySet
            }
            (Some(trimmed), _) => RawField::Scalar(FieldValue::Text(trimmed)),
        }
    }

    /// Returns the separator of set elements the record itself declares (a
    /// Zeek log's `#set_separator`), which wins over the column's.
    fn set_separator(&self) -> Option<&'a str> {
        match *self {
            RecordFields::Zeek { set_separator, .. } => Some(set_separator),
            _ => None,
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

/// One categorical field and what its column says about it.
struct Categorical<'f, 'c> {
    field: RawField<'f>,
    missing: Option<&'c str>,
    /// `Some` for a set-valued column: what splits a text value into elements.
    set_separator: Option<&'c str>,
    column_name: &'c str,
}

impl Categorical<'_, '_> {
    /// Appends `num_slots` features: a one-hot at `slot_of(value)` for a
    /// single-valued column, and for a set-valued one a multi-hot with
    /// `slot_of(element)` set for every element (each slot at most once; the
    /// empty set leaves every slot zero).
    fn push_slots(
        &self,
        record: &RecordFields<'_>,
        features: &mut Vec<f32>,
        num_slots: usize,
        slot_of: impl Fn(&str) -> usize,
    ) -> Result<(), String> {
        let start = features.len();
        features.resize(start + num_slots, 0.0);
        let mut set_slot = |text: &str| features[start + slot_of(text)] = 1.0;
        let Some(column_separator) = self.set_separator else {
            let text = categorical_text(self.field.scalar(), self.missing, self.column_name)?;
            set_slot(&text);
            return Ok(());
        };
        let record_separator = record.set_separator();
        let split_text = |text: &str, separator: &str, set_slot: &mut dyn FnMut(&str)| {
            text.split(separator)
                .map(str::trim)
                .filter(|element| !element.is_empty())
                .for_each(set_slot);
        };
        match self.field {
            RawField::EmptySet => {}
            RawField::Scalar(FieldValue::Text(text)) => split_text(
                text,
                record_separator.unwrap_or(column_separator),
                &mut set_slot,
            ),
            RawField::Scalar(FieldValue::Absent) => {
                let missing = self.missing.ok_or_else(|| {
                    format!(
                        "column {:?} is empty or absent and has no missing value",
                        self.column_name
                    )
                })?;
                split_text(missing, column_separator, &mut set_slot);
            }
            RawField::Array(items) => {
                for item in items {
                    match item {
                        serde_json::Value::String(text) => set_slot(text.trim()),
                        serde_json::Value::Number(number) => set_slot(&number.to_string()),
                        serde_json::Value::Bool(flag) => {
                            set_slot(if *flag { "true" } else { "false" })
                        }
                        other => {
                            return Err(format!(
                                "column {:?}: set elements must be strings or numbers, got {}",
                                self.column_name,
                                json_kind(other)
                            ));
                        }
                    }
                }
            }
            RawField::Scalar(scalar) => {
                let text = categorical_text(scalar, self.missing, self.column_name)?;
                set_slot(&text);
            }
        }
        Ok(())
    }
}

/// Returns what kind of JSON value `value` is, for a message.
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
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
