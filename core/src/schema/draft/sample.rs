//! Reading the first records of a telemetry file into named columns of raw
//! values, for [`super::draft_schema_from_reader`]: a Zeek TSV log (its
//! `#fields` and `#types` header), JSON lines (keys flattened into dotted
//! paths) or a csv file with a header line.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use csv::StringRecord;

use super::DraftError;
use crate::ingest::{ZeekDirective, ZeekHeader};
use crate::schema::FileFormat;

/// One field of one record.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum SampleValue {
    /// Absent, empty, JSON null or Zeek's unset marker.
    Absent,
    /// Zeek's empty marker (the empty set).
    EmptySet,
    Text(String),
    Number(f64),
    Bool(bool),
    /// A JSON array of strings, numbers or booleans, as text.
    Elements(Vec<String>),
}

/// One column of the sampled records.
#[derive(Clone, Debug, Default)]
pub(super) struct SampleColumn {
    pub(super) name: String,
    /// The Zeek `#types` entry, for Zeek TSV logs.
    pub(super) zeek_type: Option<String>,
    /// One value per sampled record.
    pub(super) values: Vec<SampleValue>,
}

/// The sampled records of one file, by column.
#[derive(Clone, Debug, Default)]
pub(super) struct Sample {
    pub(super) columns: Vec<SampleColumn>,
    pub(super) num_records: usize,
    /// The csv delimiter found in the header line.
    pub(super) delimiter: u8,
    /// `Some(("event_type", "flow"))` when JSON records were kept by that filter.
    pub(super) filter: Option<(String, String)>,
}

impl Sample {
    /// Returns the column named `name`, adding it (absent in every record so far) if new.
    fn column_mut(&mut self, name: &str, index_of_name: &mut HashMap<String, usize>) -> usize {
        if let Some(&index) = index_of_name.get(name) {
            return index;
        }
        self.columns.push(SampleColumn {
            name: name.to_string(),
            zeek_type: None,
            values: vec![SampleValue::Absent; self.num_records],
        });
        index_of_name.insert(name.to_string(), self.columns.len() - 1);
        self.columns.len() - 1
    }
}

/// Returns the format a file's first non-empty line implies: `#` → zeek,
/// `{` → jsonl, else csv.
pub(super) fn sniff_format(first_line: &str) -> FileFormat {
    match first_line
        .trim_start_matches('\u{feff}')
        .trim_start()
        .chars()
        .next()
    {
        Some('#') => FileFormat::Zeek,
        Some('{') => FileFormat::Jsonl,
        _ => FileFormat::Csv,
    }
}

/// Lines of the input with their 1-based numbers, line ends removed.
struct NumberedLines<R> {
    reader: BufReader<R>,
    line_number: u64,
    source_name: String,
}

impl<R: Read> NumberedLines<R> {
    fn next_line(&mut self, line: &mut String) -> Result<Option<u64>, DraftError> {
        line.clear();
        let num_bytes = self
            .reader
            .read_line(line)
            .map_err(|source| DraftError::Read {
                source_name: self.source_name.clone(),
                line: self.line_number + 1,
                source,
            })?;
        if num_bytes == 0 {
            return Ok(None);
        }
        self.line_number += 1;
        let trimmed_len = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(trimmed_len);
        if self.line_number == 1 && line.starts_with('\u{feff}') {
            line.drain(..'\u{feff}'.len_utf8());
        }
        Ok(Some(self.line_number))
    }
}

/// Reads up to `max_records` records of `reader` in `format`.
pub(super) fn read_sample(
    reader: impl Read,
    source_name: &str,
    format: FileFormat,
    max_records: usize,
) -> Result<Sample, DraftError> {
    let mut lines = NumberedLines {
        reader: BufReader::new(reader),
        line_number: 0,
        source_name: source_name.to_string(),
    };
    let sample = match format {
        FileFormat::Zeek => read_zeek(&mut lines, max_records)?,
        FileFormat::Jsonl => read_jsonl(&mut lines, max_records)?,
        FileFormat::Csv => read_csv(&mut lines, max_records)?,
    };
    if sample.num_records == 0 {
        return Err(DraftError::NoRecords {
            source_name: source_name.to_string(),
            format,
        });
    }
    Ok(sample)
}

fn read_zeek<R: Read>(
    lines: &mut NumberedLines<R>,
    max_records: usize,
) -> Result<Sample, DraftError> {
    let mut sample = Sample::default();
    let mut header = ZeekHeader::new();
    let mut record = StringRecord::new();
    let mut line = String::new();
    while let Some(line_number) = lines.next_line(&mut line)? {
        if sample.num_records >= max_records {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with('#') {
            let directive =
                header
                    .read_directive(&line)
                    .map_err(|error| DraftError::ZeekHeader {
                        source_name: lines.source_name.clone(),
                        line: line_number,
                        detail: error.to_string(),
                    })?;
            match directive {
                // The first log's columns; a rotated log appended after it may differ.
                ZeekDirective::Fields(_) if !sample.columns.is_empty() => break,
                ZeekDirective::Fields(names) => {
                    sample.columns = names
                        .iter()
                        .map(|name| SampleColumn {
                            name: name.to_string(),
                            ..SampleColumn::default()
                        })
                        .collect();
                }
                ZeekDirective::Close | ZeekDirective::Other => {}
            }
            continue;
        }
        if !header.split_row(&line, &mut record) {
            return Err(DraftError::ZeekHeader {
                source_name: lines.source_name.clone(),
                line: line_number,
                detail: "column 1: a data line comes before any #fields header, so its columns are unknown".to_string(),
            });
        }
        if record.len() != sample.columns.len() {
            // A truncated line: the draft reads only whole records.
            continue;
        }
        if let Some(types) = header.field_types() {
            for (column, zeek_type) in sample.columns.iter_mut().zip(types) {
                column
                    .zeek_type
                    .get_or_insert_with(|| zeek_type.to_string());
            }
        }
        for (column, field) in sample.columns.iter_mut().zip(record.iter()) {
            let value = if field.is_empty() {
                SampleValue::Absent
            } else if field == header.empty_field() {
                SampleValue::EmptySet
            } else if is_zeek_set(column) {
                SampleValue::Elements(
                    field
                        .split(header.set_separator())
                        .map(str::trim)
                        .filter(|element| !element.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            } else {
                SampleValue::Text(field.to_string())
            };
            column.values.push(value);
        }
        sample.num_records += 1;
    }
    Ok(sample)
}

/// Returns true for a Zeek set or vector column, and for `service`, whose
/// string Zeek writes as a set (`ssl,quic`).
fn is_zeek_set(column: &SampleColumn) -> bool {
    column.name == "service"
        || column
            .zeek_type
            .as_deref()
            .is_some_and(|kind| kind.starts_with("set[") || kind.starts_with("vector["))
}

/// Adds `value`'s fields to `fields` under dotted paths below `prefix`.
fn flatten(prefix: &str, value: &serde_json::Value, fields: &mut Vec<(String, SampleValue)>) {
    let sample_value = match value {
        serde_json::Value::Object(object) => {
            for (key, nested) in object {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, nested, fields);
            }
            return;
        }
        serde_json::Value::Null => SampleValue::Absent,
        serde_json::Value::String(text) if text.trim().is_empty() => SampleValue::Absent,
        serde_json::Value::String(text) => SampleValue::Text(text.trim().to_string()),
        serde_json::Value::Number(number) => match number.as_f64() {
            Some(float) => SampleValue::Number(float),
            None => SampleValue::Text(number.to_string()),
        },
        serde_json::Value::Bool(flag) => SampleValue::Bool(*flag),
        serde_json::Value::Array(items) => {
            let mut elements = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    serde_json::Value::String(text) => elements.push(text.trim().to_string()),
                    serde_json::Value::Number(number) => elements.push(number.to_string()),
                    serde_json::Value::Bool(flag) => elements.push(flag.to_string()),
                    // Arrays of objects (dns answers) are no feature a schema can read.
                    _ => return,
                }
            }
            SampleValue::Elements(elements)
        }
    };
    fields.push((prefix.to_string(), sample_value));
}

/// The event type eve.json flow records carry; a draft from eve keeps them only.
const FLOW_EVENT_TYPE: &str = "flow";

fn read_jsonl<R: Read>(
    lines: &mut NumberedLines<R>,
    max_records: usize,
) -> Result<Sample, DraftError> {
    let mut records: Vec<(u64, Vec<(String, SampleValue)>)> = Vec::new();
    let mut line = String::new();
    while let Some(line_number) = lines.next_line(&mut line)? {
        if records.len() >= max_records {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|error| DraftError::Json {
                source_name: lines.source_name.clone(),
                line: line_number,
                column: error.column(),
                message: error.to_string(),
            })?;
        if !value.is_object() {
            return Err(DraftError::Json {
                source_name: lines.source_name.clone(),
                line: line_number,
                column: 1,
                message: "expected a json object".to_string(),
            });
        }
        let mut fields = Vec::new();
        flatten("", &value, &mut fields);
        records.push((line_number, fields));
    }
    let is_flow_event = |fields: &[(String, SampleValue)]| {
        fields.iter().any(|(name, value)| {
            name == "event_type" && *value == SampleValue::Text(FLOW_EVENT_TYPE.to_string())
        })
    };
    let mut sample = Sample::default();
    if records.iter().any(|(_, fields)| is_flow_event(fields)) {
        records.retain(|(_, fields)| is_flow_event(fields));
        sample.filter = Some(("event_type".to_string(), FLOW_EVENT_TYPE.to_string()));
    }
    let mut index_of_name = HashMap::new();
    for (_, fields) in records {
        for (name, value) in fields {
            let index = sample.column_mut(&name, &mut index_of_name);
            sample.columns[index].values.push(value);
        }
        sample.num_records += 1;
        for column in &mut sample.columns {
            column
                .values
                .resize(sample.num_records, SampleValue::Absent);
        }
    }
    Ok(sample)
}

/// Delimiters a csv header may use, most likely first.
const CSV_DELIMITERS: [u8; 4] = [b',', b'\t', b';', b'|'];

fn read_csv<R: Read>(
    lines: &mut NumberedLines<R>,
    max_records: usize,
) -> Result<Sample, DraftError> {
    let mut sample = Sample::default();
    let mut line = String::new();
    let Some(header_line) = lines.next_line(&mut line)? else {
        return Ok(sample);
    };
    sample.delimiter = CSV_DELIMITERS
        .into_iter()
        .max_by_key(|delimiter| line.bytes().filter(|byte| byte == delimiter).count())
        .filter(|delimiter| line.as_bytes().contains(delimiter))
        .unwrap_or(b',');
    let header_text = format!("{line}\n");
    let mut csv_reader = csv::ReaderBuilder::new()
        .delimiter(sample.delimiter)
        .flexible(true)
        .from_reader(header_text.as_bytes().chain(&mut lines.reader));
    let header = csv_reader.headers().map_err(|error| DraftError::Csv {
        source_name: lines.source_name.clone(),
        line: header_line,
        message: error.to_string(),
    })?;
    sample.columns = header
        .iter()
        .map(|name| SampleColumn {
            name: name.trim().to_string(),
            ..SampleColumn::default()
        })
        .collect();
    for record in csv_reader.records() {
        if sample.num_records >= max_records {
            break;
        }
        let record = record.map_err(|error| DraftError::Csv {
            source_name: lines.source_name.clone(),
            line: error.position().map_or(0, csv::Position::line),
            message: error.to_string(),
        })?;
        if record.len() != sample.columns.len() {
            continue;
        }
        for (column, field) in sample.columns.iter_mut().zip(record.iter()) {
            let trimmed = field.trim();
            column.values.push(if trimmed.is_empty() {
                SampleValue::Absent
            } else {
                SampleValue::Text(trimmed.to_string())
            });
        }
        sample.num_records += 1;
    }
    Ok(sample)
}
