//! Turning lines into feature vectors: csv fields or a JSON object, through
//! the schema's featurizer (the code ingestion uses) into a reused buffer.

use csv::StringRecord;
use fedshield_core::schema::{FileFormat, HeaderPositions, RecordFields, Schema};
use serde::Deserialize;

use crate::error::DetectorError;

/// What a line turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedLine {
    /// An event; its features are in the buffer.
    Event,
    /// A blank line, the csv header, or a JSON record the schema's
    /// `[filter]` leaves out.
    Skipped,
}

/// Why a line was not an event.
#[derive(Debug)]
pub enum LineError {
    /// The line does not fit the schema; it is reported and skipped.
    Malformed(String),
    /// Nothing after it can be read either (a csv header without the schema's columns).
    Fatal(DetectorError),
}

/// Turns lines into feature vectors with the schema's featurizer.
///
/// csv lines are split into fields by the csv crate's rules (a line without
/// quotes is split on the delimiter directly, which is what the csv reader
/// does with it), one record per line. A label field may be absent: from a
/// JSON object, from a csv header, or, in a headerless csv, as the one
/// missing field of a row.
pub struct EventParser {
    schema: Schema,
    format: FileFormat,
    source_name: String,
    /// Column positions from the csv header line, once it has been read
    /// (schemas with `has_header`).
    header: Option<HeaderPositions>,
    /// Positions of headerless csv rows that leave out the label field.
    unlabelled_positions: Option<HeaderPositions>,
    /// Reused csv record.
    record: StringRecord,
}

impl EventParser {
    /// Returns a parser of `format` lines through `schema`; `source_name`
    /// names the input in reports.
    pub fn new(schema: Schema, format: FileFormat, source_name: impl Into<String>) -> Self {
        let unlabelled_positions = if format == FileFormat::Csv && !schema.has_header() {
            unlabelled_positions(&schema)
        } else {
            None
        };
        EventParser {
            schema,
            format,
            source_name: source_name.into(),
            header: None,
            unlabelled_positions,
            record: StringRecord::new(),
        }
    }

    /// Returns the name of the input.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Forgets the csv header: the input starts over (a truncated or rotated file).
    pub fn restart(&mut self) {
        self.header = None;
    }

    /// Featurizes line `line_number` into `features` (cleared first).
    ///
    /// # Errors
    /// [`LineError::Malformed`] with the reason, or [`LineError::Fatal`] for a
    /// csv header that lacks the schema's columns.
    pub fn parse(
        &mut self,
        line_number: u64,
        line: &[u8],
        features: &mut Vec<f32>,
    ) -> Result<ParsedLine, LineError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line)
            .map_err(|error| LineError::Malformed(format!("not valid UTF-8: {error}")))?;
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
            FileFormat::Zeek => Err(LineError::Fatal(DetectorError::UnsupportedEventFormat {
                format: FileFormat::Zeek,
            })),
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
                return Err(LineError::Malformed(format!(
                    "expected a json object, got {kind}"
                )));
            }
            Err(error) => return Err(LineError::Malformed(format!("invalid json: {error}"))),
        };
        if !self.schema.keeps_json_record(&object) {
            return Ok(ParsedLine::Skipped);
        }
        self.schema
            .featurize_into(&RecordFields::Json(&object), features)
            .map(|_label| ParsedLine::Event)
            .map_err(LineError::Malformed)
    }

    fn parse_csv(
        &mut self,
        line_number: u64,
        text: &str,
        features: &mut Vec<f32>,
    ) -> Result<ParsedLine, LineError> {
        split_csv_line(text, self.schema.delimiter(), &mut self.record)
            .map_err(LineError::Malformed)?;
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
            self.header = Some(positions);
            return Ok(ParsedLine::Skipped);
        }
        let fields = match (&self.header, &self.unlabelled_positions) {
            (Some(header), _) => RecordFields::CsvWithHeader {
                record: &self.record,
                header,
            },
            (None, Some(unlabelled)) if self.record.len() + 1 == self.schema.num_columns() => {
                RecordFields::CsvWithHeader {
                    record: &self.record,
                    header: unlabelled,
                }
            }
            _ => RecordFields::CsvPositional(&self.record),
        };
        self.schema
            .featurize_into(&fields, features)
            .map(|_label| ParsedLine::Event)
            .map_err(LineError::Malformed)
    }
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

/// Returns the positions of a headerless csv row that has every column of
/// `schema` but the label, in order.
fn unlabelled_positions(schema: &Schema) -> Option<HeaderPositions> {
    let columns: SchemaColumns = toml::from_str(&schema.to_toml_string()).ok()?;
    let header: StringRecord = columns
        .columns
        .iter()
        .filter(|column| column.kind != "label")
        .map(|column| column.name.as_str())
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
            Err(LineError::Malformed(_))
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
