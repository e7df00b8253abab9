//! Reading JSON-lines telemetry: one JSON object per line, with overlong
//! lines skipped without being held in memory. Records the schema's
//! `[filter]` leaves out are counted in [`super::IngestReport::num_filtered`]
//! before featurizing; fields resolve as [`crate::schema::resolve_json_field`] says.

use std::io::Read;

use super::bounded_lines::BoundedLines;
use super::collector::Collector;
use super::{IngestError, SkipReason};
use crate::schema::{RecordFields, json_kind, resolve_json_field};

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
    let mut lines = BoundedLines::new(reader, max_line_bytes, &source_name);
    let mut line_bytes: Vec<u8> = Vec::new();
    while let Some(line_number) = lines.next_line(&mut line_bytes, collector)? {
        let text = line_bytes.trim_ascii();
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
                collector.skip(
                    line_number,
                    SkipReason::Malformed,
                    format!("expected a json object, got {}", json_kind(&other)),
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
