//! Turning lines into feature vectors: csv fields, a JSON object or a Zeek
//! TSV row, through the schema's featurizer (the code ingestion uses) into a
//! reused buffer.
//!
//! A line that does not fit is [`LineError::Malformed`]: the detector reports
//! it as `FILE:LINE:COLUMN: malformed event skipped: REASON` and goes on.
//! The column (1-based, in characters) is where the fault is: the field of
//! the column a reason names (a wrong type), the end of a row with too few
//! fields, the first extra field of one with too many, or where a JSON
//! parser stopped. For csv lines with quoted fields it counts the delimiters
//! inside quotes too.

use csv::StringRecord;
use fedshield_core::ingest::{ZeekDirective, ZeekHeader};
use fedshield_core::schema::{
    FileFormat, HeaderPositions, RecordFields, Schema, resolve_json_field,
};
use serde::Deserialize;

use crate::error::DetectorError;

/// What a line turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedLine {
    /// An event; its features are in the buffer.
    Event,
    /// A blank line, the csv header, a Zeek directive (`#fields`, `#close`,
    /// ...), or a JSON record the schema's `[filter]` leaves out.
    Skipped,
}

/// Why a line was not an event.
#[derive(Debug)]
pub enum LineError {
    /// The line does not fit the schema; it is reported and skipped.
    /// `column` (1-based, in characters) says where.
    Malformed { column: usize, reason: String },
    /// Nothing after it can be read either (a csv header or a Zeek `#fields`
    /// header without the schema's columns).
    Fatal(DetectorError),
}

impl LineError {
    /// Returns a malformed-line error at the start of the line.
    fn at_line_start(reason: impl Into<String>) -> Self {
        LineError::Malformed {
            column: 1,
            reason: reason.into(),
        }
    }
}

/// Turns lines into feature vectors with the schema's featurizer.
///
/// csv lines are split into fields by the csv crate's rules (a line without
/// quotes is split on the delimiter directly, which is what the csv reader
/// does with it), one record per line. A label field may be absent: from a
/// JSON object, from a csv header, from a Zeek `#fields` header, or, in a
/// headerless csv, as the one missing field of a row.
///
/// Zeek lines go through core's [`ZeekHeader`], as training reads them: each
/// input (a file, and the new file after a rotation) has its own header, and
/// within one input a new header block applies from its first line on
/// (`#close` ends a log, `#separator` starts a block, `#fields` re-maps the
/// columns), so a rotated log appended to the file is read by its own header.
pub struct EventParser {
    schema: Schema,
    format: FileFormat,
    source_name: String,
    /// Schema column names, in schema order: positional csv fields, and the
    /// column a featurizer reason names.
    column_names: Vec<String>,
    /// Each schema column's kind, in schema order.
    column_kinds: Vec<String>,
    /// The csv header line's names and column positions, once it has been
    /// read (schemas with `has_header`).
    header: Option<(StringRecord, HeaderPositions)>,
    /// Positions of headerless csv rows that leave out the label field.
    unlabelled_positions: Option<HeaderPositions>,
    /// The Zeek header read so far, and where its `#fields` put each schema column.
    zeek_header: ZeekHeader,
    zeek_positions: Option<HeaderPositions>,
    /// Reused record.
    record: StringRecord,
}

impl EventParser {
    /// Returns a parser of `format` lines through `schema`; `source_name`
    /// names the input in reports.
    pub fn new(schema: Schema, format: FileFormat, source_name: impl Into<String>) -> Self {
        let column_names = schema_columns(&schema);
        let unlabelled_positions = if format == FileFormat::Csv && !schema.has_header() {
            unlabelled_positions(&schema, &column_names)
        } else {
            None
        };
        EventParser {
            schema,
            format,
            source_name: source_name.into(),
            column_kinds: column_names.iter().map(|(_, kind)| kind.clone()).collect(),
            column_names: column_names.into_iter().map(|(name, _)| name).collect(),
            header: None,
            unlabelled_positions,
            zeek_header: ZeekHeader::new(),
            zeek_positions: None,
            record: StringRecord::new(),
        }
    }

    /// Returns the schema events are featurized with.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Returns the events' format.
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// Returns the name of the input.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Forgets the csv header and the Zeek header: the input starts over (a
    /// truncated or rotated file), and the new file brings its own.
    pub fn restart(&mut self) {
        self.header = None;
        self.zeek_header = ZeekHeader::new();
        self.zeek_positions = None;
    }

    /// Featurizes line `line_number` into `features` (cleared first).
    ///
    /// # Errors
    /// [`LineError::Malformed`] with the reason and column, or
    /// [`LineError::Fatal`] for a csv or Zeek header that lacks the schema's
    /// columns.
    pub fn parse(
        &mut self,
        line_number: u64,
        line: &[u8],
        features: &mut Vec<f32>,
    ) -> Result<ParsedLine, LineError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|error| {
            let valid = String::from_utf8_lossy(&line[..error.valid_up_to()]);
            LineError::Malformed {
                column: valid.chars().count() + 1,
                reason: format!("not valid UTF-8: {error}"),
            }
        })?;
        let text = if line_number == 1 {
            text.strip_prefix('\u{feff}').unwrap_or(text)
        } else {
            text
        };
        if text.trim().is_empty() {
            return Ok(ParsedLine::Skipped);
        }
        match self.format {
            FileFormat::Jsonl => self.parse_json(text, features),
            FileFormat::Csv => self.parse_csv(line_number, text, features),
            FileFormat::Zeek => self.parse_zeek(line_number, text, features),
        }
    }

    fn parse_json(&self, text: &str, features: &mut Vec<f32>) -> Result<ParsedLine, LineError> {
        let object = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(object)) => object,
            Ok(other) => {
                let kind = match other {
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                return Err(LineError::at_line_start(format!(
                    "expected a json object, got {kind}"
                )));
            }
            Err(error) => {
                let message = error.to_string();
                let position = format!(" at line {} column {}", error.line(), error.column());
                let reason = message.strip_suffix(&position).unwrap_or(&message);
                return Err(LineError::Malformed {
                    column: error.column().max(1),
                    reason: format!("invalid json: {reason}"),
                });
            }
        };
        if !self.schema.keeps_json_record(&object) {
            return Ok(ParsedLine::Skipped);
        }
        self.schema
            .featurize_into(&RecordFields::Json(&object), features)
            .map(|_label| ParsedLine::Event)
            .map_err(|reason| {
                let column = self
                    .column_named_in(&reason)
                    .and_then(|name| json_key_column(text, name))
                    .unwrap_or(1);
                LineError::Malformed { column, reason }
            })
    }

    fn parse_csv(
        &mut self,
        line_number: u64,
        text: &str,
        features: &mut Vec<f32>,
    ) -> Result<ParsedLine, LineError> {
        let delimiter = self.schema.delimiter();
        split_csv_line(text, delimiter, &mut self.record).map_err(LineError::at_line_start)?;
        if self.schema.has_header() && self.header.is_none() {
            // Events need no label: a header may leave the label column out.
            let matched = self.schema.header_positions(&self.record, false);
            let positions = matched.map_err(|mismatch| {
                LineError::Fatal(DetectorError::CsvHeader {
                    input_name: self.source_name.clone(),
                    line_number,
                    mismatch,
                })
            })?;
            self.header = Some((self.record.clone(), positions));
            return Ok(ParsedLine::Skipped);
        }
        let (fields, names): (RecordFields<'_>, Vec<&str>) =
            match (&self.header, &self.unlabelled_positions) {
                (Some((names, header)), _) => (
                    RecordFields::CsvWithHeader {
                        record: &self.record,
                        header,
                    },
                    names.iter().collect(),
                ),
                (None, Some(unlabelled)) if self.record.len() + 1 == self.schema.num_columns() => (
                    RecordFields::CsvWithHeader {
                        record: &self.record,
                        header: unlabelled,
                    },
                    Vec::new(),
                ),
                _ => (
                    RecordFields::CsvPositional(&self.record),
                    self.column_names.iter().map(String::as_str).collect(),
                ),
            };
        let result = self.schema.featurize_into(&fields, features);
        result.map(|_label| ParsedLine::Event).map_err(|reason| {
            let field_index = self.field_index_in(&reason, &names, self.record.len());
            let column = field_index.map_or(1, |index| {
                delimited_field_column(text, char::from(delimiter), index)
            });
            LineError::Malformed { column, reason }
        })
    }

    fn parse_zeek(
        &mut self,
        line_number: u64,
        text: &str,
        features: &mut Vec<f32>,
    ) -> Result<ParsedLine, LineError> {
        if text.starts_with('#') {
            let directive =
                self.zeek_header
                    .read_directive(text)
                    .map_err(|error| LineError::Malformed {
                        column: error.column,
                        reason: error.detail,
                    })?;
            match directive {
                ZeekDirective::Fields(names) => {
                    // Events need no label: #fields may leave the label column out.
                    let matched = self.schema.header_positions(names, false);
                    let positions = matched.map_err(|mismatch| {
                        LineError::Fatal(DetectorError::ZeekFields {
                            input_name: self.source_name.clone(),
                            line_number,
                            mismatch,
                        })
                    })?;
                    self.zeek_positions = Some(positions);
                }
                ZeekDirective::Close => self.zeek_positions = None,
                ZeekDirective::Other => {}
            }
            return Ok(ParsedLine::Skipped);
        }
        let Some(positions) = &self.zeek_positions else {
            return Err(LineError::at_line_start(
                "no #fields header applies to this line (a zeek log starts with its header, and #close ends it), so its columns are unknown",
            ));
        };
        self.zeek_header.split_row(text, &mut self.record);
        let fields = self.zeek_header.row_fields(&self.record, positions);
        let result = self.schema.featurize_into(&fields, features);
        result.map(|_label| ParsedLine::Event).map_err(|reason| {
            let names: Vec<&str> = self
                .zeek_header
                .field_names()
                .map(|names| names.iter().collect())
                .unwrap_or_default();
            let field_index = self.field_index_in(&reason, &names, self.record.len());
            let column = field_index.map_or(1, |index| self.zeek_header.field_column(text, index));
            LineError::Malformed { column, reason }
        })
    }

    /// Writes the values of the fields `names` of an event line (one this
    /// parser read as an event, under the header in force now) into
    /// `values` (cleared first), one per name: `None` for a field the line
    /// leaves out, unset (Zeek's `-`), empty or JSON `null`, or that its
    /// header does not name. Names are csv header names, Zeek `#fields`
    /// names or JSON keys (literal, then a nested path); a headerless csv
    /// row is read by the schema's column order.
    ///
    /// Only alerts are echoed, so this parses the line a second time rather
    /// than keeping every event's fields.
    pub fn extract_fields(&self, line: &[u8], names: &[String], values: &mut Vec<Option<String>>) {
        values.clear();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let present = |value: &str| (!value.is_empty()).then(|| value.to_string());
        match self.format {
            FileFormat::Jsonl => {
                let object = match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(serde_json::Value::Object(object)) => object,
                    _ => serde_json::Map::new(),
                };
                values.extend(
                    names
                        .iter()
                        .map(|name| match resolve_json_field(&object, name)? {
                            serde_json::Value::Null => None,
                            serde_json::Value::String(text) => present(text),
                            other => Some(other.to_string()),
                        }),
                );
            }
            FileFormat::Csv => {
                let mut record = StringRecord::new();
                if split_csv_line(text, self.schema.delimiter(), &mut record).is_err() {
                    values.extend(names.iter().map(|_| None));
                    return;
                }
                let header_names: Vec<&str> = match &self.header {
                    Some((header, _)) => header.iter().map(str::trim).collect(),
                    None if record.len() + 1 == self.column_names.len() => self
                        .column_names
                        .iter()
                        .zip(&self.column_kinds)
                        .filter(|(_, kind)| kind.as_str() != "label")
                        .map(|(name, _)| name.as_str())
                        .collect(),
                    None => self.column_names.iter().map(String::as_str).collect(),
                };
                values.extend(names.iter().map(|name| {
                    let position = header_names
                        .iter()
                        .position(|candidate| candidate == name)?;
                    present(record.get(position)?.trim())
                }));
            }
            FileFormat::Zeek => {
                let mut record = StringRecord::new();
                let field_names = self.zeek_header.field_names();
                if !self.zeek_header.split_row(text, &mut record) || field_names.is_none() {
                    values.extend(names.iter().map(|_| None));
                    return;
                }
                let field_names = field_names.expect("checked above");
                let empty_marker = self.zeek_header.empty_field();
                values.extend(names.iter().map(|name| {
                    let position = field_names.iter().position(|candidate| candidate == name)?;
                    let value = record.get(position)?;
                    if value == empty_marker {
                        return None;
                    }
                    present(value)
                }));
            }
        }
    }

    /// Returns the schema column a featurizer reason is about (`column "x": ...`).
    fn column_named_in(&self, reason: &str) -> Option<&str> {
        let about = reason.strip_prefix("label ").unwrap_or(reason);
        self.column_names
            .iter()
            .map(String::as_str)
            .find(|name| about.starts_with(&format!("column {name:?}")))
    }

    /// Returns the index of the row field a featurizer reason is about: the
    /// field of the column it names in `names` (the row's field names), or,
    /// when the row's field count is wrong, the first field too many or the
    /// end of the row.
    fn field_index_in(&self, reason: &str, names: &[&str], num_fields: usize) -> Option<usize> {
        if !names.is_empty() && num_fields != names.len() {
            return Some(num_fields.min(names.len()));
        }
        let name = self.column_named_in(reason)?;
        names.iter().position(|candidate| candidate.trim() == name)
    }
}

/// Returns the column (1-based, in characters) where field `field_index` of
/// `text` split on `delimiter` starts, or where the line ends when it has fewer.
fn delimited_field_column(text: &str, delimiter: char, field_index: usize) -> usize {
    let offset = if field_index == 0 {
        0
    } else {
        text.match_indices(delimiter)
            .nth(field_index - 1)
            .map_or(text.len(), |(position, _)| position + delimiter.len_utf8())
    };
    text[..offset].chars().count() + 1
}

/// Returns the column (1-based, in characters) of the key of JSON column
/// `name` in `text`: the literal key, else its last dotted segment.
fn json_key_column(text: &str, name: &str) -> Option<usize> {
    let last_segment = name.rsplit('.').next().unwrap_or(name);
    [name, last_segment].iter().find_map(|key| {
        let quoted = serde_json::to_string(key).ok()?;
        let offset = text.find(&quoted)?;
        Some(text[..offset].chars().count() + 1)
    })
}

/// Splits one csv line into `record` (cleared first).
fn split_csv_line(text: &str, delimiter: u8, record: &mut StringRecord) -> Result<(), String> {
    record.clear();
    if !text.bytes().any(|byte| byte == b'"' || byte == b'\r') {
        for field in text.split(char::from(delimiter)) {
            record.push_field(field);
        }
        return Ok(());
    }
    // Quoted fields: the csv crate's reader, as ingestion uses.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    match reader.read_record(record) {
        Ok(_) => {}
        Err(error) => return Err(format!("invalid csv: {error}")),
    }
    let mut rest = StringRecord::new();
    if matches!(reader.read_record(&mut rest), Ok(true)) {
        return Err("the line holds more than one csv record".to_string());
    }
    Ok(())
}

/// Column names and kinds, read back from a schema's canonical TOML.
#[derive(Deserialize)]
struct SchemaColumns {
    #[serde(default)]
    columns: Vec<SchemaColumn>,
}

#[derive(Deserialize)]
struct SchemaColumn {
    name: String,
    kind: String,
}

/// Returns the name and kind of each column of `schema`, in order.
fn schema_columns(schema: &Schema) -> Vec<(String, String)> {
    toml::from_str::<SchemaColumns>(&schema.to_toml_string())
        .map(|columns| {
            columns
                .columns
                .into_iter()
                .map(|column| (column.name, column.kind))
                .collect()
        })
        .unwrap_or_default()
}

/// Returns the positions of a headerless csv row that has every column of
/// `schema` but the label, in order.
fn unlabelled_positions(schema: &Schema, columns: &[(String, String)]) -> Option<HeaderPositions> {
    let header: StringRecord = columns
        .iter()
        .filter(|(_, kind)| kind != "label")
        .map(|(name, _)| name.as_str())
        .collect();
    schema.header_positions(&header, false).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_csv_fields_split_like_the_csv_reader() {
        let mut record = StringRecord::new();
        split_csv_line("a,\"b,c\",d", b',', &mut record).unwrap();
        assert_eq!(record.iter().collect::<Vec<_>>(), ["a", "b,c", "d"]);
        split_csv_line("a,,c", b',', &mut record).unwrap();
        assert_eq!(record.iter().collect::<Vec<_>>(), ["a", "", "c"]);
    }

    #[test]
    fn headerless_rows_may_leave_out_the_label_field() {
        let mut parser = EventParser::new(Schema::for_test(), FileFormat::Csv, "test");
        let mut labelled = Vec::new();
        let mut unlabelled = Vec::new();
        assert_eq!(
            parser
                .parse(1, b"3,udp,53,portscan", &mut labelled)
                .unwrap(),
            ParsedLine::Event
        );
        assert_eq!(
            parser.parse(2, b"3,udp,53", &mut unlabelled).unwrap(),
            ParsedLine::Event
        );
        assert_eq!(labelled, unlabelled);
        assert!(matches!(
            parser.parse(3, b"3,udp", &mut unlabelled),
            Err(LineError::Malformed { .. })
        ));
    }

    #[test]
    fn a_csv_header_without_the_label_column_gives_unlabelled_events() {
        let text = Schema::for_test()
            .to_toml_string()
            .replace("has_header = false", "has_header = true");
        let schema = Schema::from_toml_str(&text).unwrap();
        let mut parser = EventParser::new(schema, FileFormat::Csv, "test");
        let mut features = Vec::new();
        assert_eq!(
            parser.parse(1, b"port,proto,bytes", &mut features).unwrap(),
            ParsedLine::Skipped
        );
        assert_eq!(
            parser.parse(2, b"53,udp,3\r", &mut features).unwrap(),
            ParsedLine::Event
        );
        assert_eq!(features[0], 4f32.ln());
        let missing_column = EventParser::new(
            Schema::from_toml_str(&text).unwrap(),
            FileFormat::Csv,
            "test",
        )
        .parse(1, b"port,bytes", &mut features);
        assert!(matches!(missing_column, Err(LineError::Fatal(_))));
    }

    #[test]
    fn zeek_directive_errors_are_skipped_with_their_column_and_rows_still_read() {
        let text = r#"
            format = "zeek"
            [[columns]]
            name = "orig_bytes"
            kind = "numeric"
            missing = 0.0
            transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"]
            [[columns]]
            name = "label"
            kind = "label"
            benign = ["Benign"]
        "#;
        let schema = Schema::from_toml_str(text).unwrap();
        let mut parser = EventParser::new(schema, FileFormat::Zeek, "conn.log");
        let mut features = Vec::new();
        let fields = b"#fields\tts\torig_bytes";
        assert_eq!(
            parser.parse(1, fields, &mut features).unwrap(),
            ParsedLine::Skipped
        );
        let Err(LineError::Malformed { column, reason }) =
            parser.parse(2, b"#types\ttime", &mut features)
        else {
            panic!("a #types line that disagrees with #fields is malformed");
        };
        assert_eq!(
            (column, reason.as_str()),
            (1, "#types has 1 entries, #fields has 2 names")
        );
        assert_eq!(
            parser.parse(3, b"1.0\t3\r", &mut features).unwrap(),
            ParsedLine::Event
        );
        assert_eq!(features, [4f32.ln()]);
        let Err(LineError::Malformed { column, .. }) = parser.parse(4, b"1.0\tmany", &mut features)
        else {
            panic!("text in a numeric column is malformed");
        };
        assert_eq!(column, 5);
        let missing = parser.parse(5, b"#fields\tts", &mut features);
        assert!(matches!(
            missing,
            Err(LineError::Fatal(DetectorError::ZeekFields {
                line_number: 5,
                ..
            }))
        ));
    }

    #[test]
    fn json_events_use_nested_fields_and_the_schema_filter() {
        let text = r#"
            format = "jsonl"
            [filter]
            event_type = "flow"
            [[columns]]
            name = "flow.bytes_toserver"
            kind = "numeric"
            transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"]
            [[columns]]
            name = "label"
            kind = "label"
            benign = ["ok"]
        "#;
        let schema = Schema::from_toml_str(text).unwrap();
        let mut parser = EventParser::new(schema, FileFormat::Jsonl, "eve.json");
        let mut features = Vec::new();
        let flow = br#"{"event_type": "flow", "flow": {"bytes_toserver": 3}}"#;
        assert_eq!(
            parser.parse(1, flow, &mut features).unwrap(),
            ParsedLine::Event
        );
        assert_eq!(features, [4f32.ln()]);
        let alert = br#"{"event_type": "alert", "flow": {"bytes_toserver": 3}}"#;
        assert_eq!(
            parser.parse(2, alert, &mut features).unwrap(),
            ParsedLine::Skipped
        );
    }
}
