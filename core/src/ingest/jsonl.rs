//! Reading JSON-lines telemetry: one JSON object per line, with overlong
//! lines skipped without being held in memory. Records the schema's
//! `[filter]` leaves out are counted in [`super::IngestReport::num_filtered`]
//! before featurizing; fields resolve as [`crate::schema::resolve_json_field`] says.

use std::io::{BufRead, BufReader, Read};

use super::collector::Collector;
use super::{IngestError, SkipReason};
use crate::schema::{RecordFields, resolve_json_field};

/// Size of the read buffer for JSONL input.
const READ_BUFFER_BYTES: usize = 64 * 1024;

pub(super) fn read_jsonl(
    reader: impl Read,
    collector: &mut Collector<'_>,
) -> Result<(), IngestError> {
    let schema = collector.schema;
    let source_name = collector.report.source.clone();
    let max_line_bytes = collector.options.max_line_bytes;
    // Keys the schema needs that no record read so far holds.
    let mut absent_columns = schema.columns_required_in_input(collector.options.require_labels);
    let mut num_records_read: usize = 0;
    let mut buffered = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let mut line_bytes: Vec<u8> = Vec::new();
    let mut line_number: u64 = 0;
    let mut num_bytes_read: u64 = 0;
    loop {
        if collector.should_stop(num_bytes_read) {
            break;
        }
        line_bytes.clear();
        let read_error = |source: std::io::Error, line: u64| IngestError::Read {
            source_name: source_name.clone(),
            line,
            source,
        };
        let line_limit = max_line_bytes as u64 + 1;
        let num_read = (&mut buffered)
            .take(line_limit)
            .read_until(b'\n', &mut line_bytes)
            .map_err(|source| read_error(source, line_number + 1))?;
        if num_read == 0 {
            break;
        }
        line_number += 1;
        num_bytes_read += num_read as u64;
        if num_read > max_line_bytes && line_bytes.last() != Some(&b'\n') {
            let num_skipped = buffered
                .skip_until(b'\n')
                .map_err(|source| read_error(source, line_number))?;
            num_bytes_read += num_skipped as u64;
            collector.skip(
                line_number,
                SkipReason::Malformed,
                format!("line is longer than {max_line_bytes} bytes"),
            );
            continue;
        }
        let mut text = line_bytes.trim_ascii();
        if line_number == 1 {
            text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
        }
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(object)) => {
                if !schema.keeps_json_record(&object) {
                    collector.report.num_filtered += 1;
                    continue;
                }
                num_records_read += 1;
                absent_columns.retain(|name| resolve_json_field(&object, name).is_none());
                collector.add_record(line_number, &RecordFields::Json(&object))?;
            }
            Ok(other) => {
                let kind = match other {
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                collector.skip(
                    line_number,
                    SkipReason::Malformed,
                    format!("expected a json object, got {kind}"),
                );
            }
            Err(error) => collector.skip(
                line_number,
                SkipReason::Malformed,
                format!("invalid json: {error}"),
            ),
        }
    }
    if num_records_read > 0 && !absent_columns.is_empty() {
        return Err(IngestError::ColumnsAbsentFromEveryRecord {
            source_name,
            missing_columns: absent_columns.into_iter().map(str::to_string).collect(),
            num_records_read,
        });
    }
    Ok(())
}
