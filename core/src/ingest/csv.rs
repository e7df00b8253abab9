//! Reading csv telemetry: delimited records, with or without a header line,
//! each numbered by its physical line.

use std::io::Read;

use csv::StringRecord;

use super::collector::Collector;
use super::lines::LineCountingReader;
use super::{IngestError, SkipReason};
use crate::schema::{HeaderPositions, RecordFields, strip_byte_order_mark};

/// How many header names a missing-column error lists.
const NUM_QUOTED_HEADER_NAMES: usize = 20;

/// Outcome of reading one csv record.
enum CsvRead {
    Record {
        line: u64,
    },
    /// A record that could not be decoded (invalid UTF-8); the reader moved past it.
    Undecodable {
        line: u64,
        reason: String,
    },
    End,
}

/// Reads the next record into `record`, numbering it by its physical line
/// (see [`super::lines`]).
fn read_csv_record<R: Read>(
    csv_reader: &mut csv::Reader<LineCountingReader<R>>,
    record: &mut StringRecord,
    source_name: &str,
) -> Result<CsvRead, IngestError> {
    let offset_before = csv_reader.position().byte();
    let outcome = csv_reader.read_record(record);
    let line = csv_reader.get_mut().line_at(offset_before);
    match outcome {
        Ok(false) => Ok(CsvRead::End),
        Ok(true) => Ok(CsvRead::Record { line }),
        Err(error) => {
            if !error.is_io_error() {
                return Ok(CsvRead::Undecodable {
                    line,
                    reason: error.to_string(),
                });
            }
            match error.into_kind() {
                csv::ErrorKind::Io(source) => Err(IngestError::Read {
                    source_name: source_name.to_string(),
                    line,
                    source,
                }),
                other => Ok(CsvRead::Undecodable {
                    line,
                    reason: format!("{other:?}"),
                }),
            }
        }
    }
}

/// Removes a UTF-8 byte order mark from the first field of the first record.
fn strip_record_byte_order_mark(record: &mut StringRecord) {
    let Some(first_field) = record.get(0) else {
        return;
    };
    if !first_field.starts_with('\u{feff}') {
        return;
    }
    let stripped: StringRecord = record
        .iter()
        .enumerate()
        .map(|(index, field)| {
            if index == 0 {
                strip_byte_order_mark(field)
            } else {
                field
            }
        })
        .collect();
    let position = record.position().cloned();
    *record = stripped;
    record.set_position(position);
}

pub(super) fn read_csv(
    reader: impl Read,
    collector: &mut Collector<'_>,
) -> Result<(), IngestError> {
    let schema = collector.schema;
    let source_name = collector.report.source.clone();
    let mut csv_reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(schema.delimiter())
        .from_reader(LineCountingReader::new(reader));
    let mut record = StringRecord::new();
    let mut is_first_record = true;

    let header_positions: Option<HeaderPositions> = if schema.has_header() {
        match read_csv_record(&mut csv_reader, &mut record, &source_name)? {
            CsvRead::End => return Ok(()),
            CsvRead::Undecodable { line, reason } => {
                collector.skip(
                    line,
                    SkipReason::Malformed,
                    format!("header line: {reason}"),
                );
                return Ok(());
            }
            CsvRead::Record { .. } => {}
        }
        is_first_record = false;
        let positions = schema
            .header_positions(&record, collector.options.require_labels)
            .map_err(|mismatch| IngestError::MissingHeaderColumns {
                source_name: source_name.clone(),
                missing_columns: mismatch.missing_columns,
                header_names: record
                    .iter()
                    .take(NUM_QUOTED_HEADER_NAMES)
                    .map(|name| strip_byte_order_mark(name).trim().to_string())
                    .collect(),
            })?;
        Some(positions)
    } else {
        None
    };

    loop {
        if collector.should_stop(csv_reader.position().byte()) {
            return Ok(());
        }
        let line = match read_csv_record(&mut csv_reader, &mut record, &source_name)? {
            CsvRead::End => return Ok(()),
            CsvRead::Undecodable { line, reason } => {
                collector.skip(line, SkipReason::Malformed, reason);
                continue;
            }
            CsvRead::Record { line } => line,
        };
        if is_first_record {
            strip_record_byte_order_mark(&mut record);
            is_first_record = false;
        }
        let fields = match &header_positions {
            Some(header) => RecordFields::CsvWithHeader {
                record: &record,
                header,
            },
            None => RecordFields::CsvPositional(&record),
        };
        collector.add_record(line, &fields)?;
    }
}
