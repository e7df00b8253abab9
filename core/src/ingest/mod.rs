//! Reading CSV, JSONL or Zeek TSV telemetry files through a [`Schema`] into a [`Dataset`].
//!
//! - [`alert_labels`]: labels joined from Suricata alerts by Community ID.
//! - `bounded_lines`: numbered lines with overlong ones passed over (jsonl, zeek, eve alerts).
//! - `collector`: the sink every reader feeds (featurizes, keeps, skips, reports).
//! - `csv`: csv records, with or without a header line.
//! - `jsonl`: JSON-lines records.
//! - `lines`: physical line numbers of csv records.
//! - `report`: what a load kept and skipped, and why.
//! - `zeek`: Zeek TSV logs, columns named by their `#fields` header; its
//!   [`ZeekHeader`] (directives fed one line at a time, and the row splitter
//!   they define) is public, for the detector's live events.
//!
//! A new format is one reader file with a `read_…(reader, collector)`
//! function, a [`FileFormat`] variant and one arm in
//! [`load_dataset_from_reader`].
//!
//! Files are streamed record by record (never read whole into memory). A row
//! that does not fit the schema, or lacks a required label, is counted,
//! reported with its file and 1-based physical line number (the header line
//! counts; `\r\n` and `\n` files number alike) and skipped, and so is a row
//! whose label value the schema does not list when the schema says
//! `unlisted_labels = "skip"`.
//!
//! The load fails, changing nothing, when:
//! - the input cannot be read;
//! - a csv header lacks a column the schema needs (every numeric and
//!   categorical column, and the label when labels are required; a `missing`
//!   value fills empty fields, never a whole column);
//! - a JSON-lines key that the schema needs is absent from every record read
//!   (a key absent from some records is filled with `missing` there, or
//!   makes those rows malformed);
//! - a label value is not listed and the schema keeps the default
//!   `unlisted_labels = "error"`: the error names the value, the file and
//!   the line;
//! - the input holds no row, or every row was skipped (which means the schema
//!   does not match the file).
//!
//! The [`IngestReport`] says how many rows were loaded and how many were
//! skipped, by reason.

pub mod alert_labels;
mod bounded_lines;
mod collector;
mod csv;
mod jsonl;
mod lines;
mod report;
mod zeek;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::CoreError;
use crate::model::data::Dataset;
use crate::schema::{FileFormat, Schema, SchemaError, quoted};
use alert_labels::{AlertIndex, AlertJoin, AlertJoinReport};
use collector::Collector;
pub use report::{IngestReport, SkipCounts, SkipReason, SkippedRow, StopReason};
pub use zeek::{ZeekDirective, ZeekHeader, ZeekHeaderError};

/// Errors of loading a telemetry file.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("failed to open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to read {source_name} near line {line}: {source}")]
    Read {
        source_name: String,
        line: u64,
        source: std::io::Error,
    },
    #[error(
        "{source_name}: the header has no column named {}; the header has {}",
        quote_list(missing_columns),
        quote_list(header_names)
    )]
    MissingHeaderColumns {
        source_name: String,
        /// Schema columns the header lacks.
        missing_columns: Vec<String>,
        /// The first header names, for comparison.
        header_names: Vec<String>,
    },
    #[error(
        "{source_name}: no record has the key {} ({num_records_read} records read); a missing value fills the key where one record leaves it out, not in every record",
        quote_list(missing_columns)
    )]
    ColumnsAbsentFromEveryRecord {
        source_name: String,
        /// Schema columns that no record holds.
        missing_columns: Vec<String>,
        num_records_read: usize,
    },
    #[error(
        "{source_name}:{line}: label value {} in column {column:?} is not listed in the schema's benign or classes; list it there, or set unlisted_labels = \"attack\", \"benign\" or \"skip\" in the label column",
        quoted(value)
    )]
    UnlistedLabel {
        source_name: String,
        /// 1-based physical line of the row.
        line: u64,
        /// The label column's name.
        column: String,
        /// The label value as the row has it (trimmed).
        value: String,
    },
    #[error(
        "{source_name}:{line}: a data line comes before any #fields header, so its columns are unknown"
    )]
    ZeekDataBeforeFields {
        source_name: String,
        /// 1-based physical line of the data line.
        line: u64,
    },
    #[error("{source_name}:{line}: {detail}")]
    ZeekHeader {
        source_name: String,
        /// 1-based physical line of the directive.
        line: u64,
        /// What is wrong, starting with the column.
        detail: String,
    },
    #[error("{source_name}:{line}:{column}: {detail}")]
    AlertEvent {
        /// The eve file.
        source_name: String,
        /// 1-based physical line of the event.
        line: u64,
        /// 1-based column (character) where the problem is.
        column: u64,
        detail: String,
    },
    #[error(
        "{source_name}: the schema has no [alert_labels] table, so alerts cannot label its flows; add one (see the schema file's documentation)"
    )]
    AlertLabelsNotInSchema { source_name: String },
    #[error("{source_name} has no rows")]
    NoRows { source_name: String },
    #[error(
        "every row of {source_name} was skipped ({skipped}), so the schema probably does not match the file; first problems: {}",
        first_problems.iter().map(|row| format!("line {}: {}", row.line, row.detail)).collect::<Vec<_>>().join("; ")
    )]
    AllRowsSkipped {
        source_name: String,
        skipped: SkipCounts,
        first_problems: Vec<SkippedRow>,
    },
    #[error("failed to add row {line} of {source_name} to the dataset: {source}")]
    Dataset {
        source_name: String,
        line: u64,
        source: CoreError,
    },
}

fn quote_list(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Limits and policies of one load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestOptions {
    /// Stops after this many good rows.
    pub max_rows: Option<usize>,
    /// Stops before the next row once this many bytes of input have been read
    /// (rows are never cut; the last row may end past the limit).
    pub max_bytes: Option<u64>,
    /// Longest accepted JSONL line in bytes; longer lines are malformed and skipped
    /// without being held in memory.
    pub max_line_bytes: usize,
    /// How many skipped rows to keep in [`IngestReport::skipped_rows`] (all are counted).
    pub max_reported_skipped: usize,
    /// When true, the label column must be in the input (a csv header or
    /// JSON-lines file without it is an error) and a row with an empty or
    /// absent label is skipped ([`SkipReason::MissingLabel`]). When false a
    /// row without a label is kept as class 0 with an empty raw label and
    /// counted in [`IngestReport::num_unlabelled`] (for scoring, where labels
    /// are unused).
    pub require_labels: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_rows: None,
            max_bytes: None,
            max_line_bytes: 1024 * 1024,
            max_reported_skipped: 20,
            require_labels: true,
        }
    }
}

/// Loads the telemetry file at `path` through `schema`.
///
/// The format comes from the extension (`.csv`/`.txt` → csv, `.jsonl`/`.ndjson` →
/// jsonl), else from the schema's `format`.
///
/// # Errors
/// [`IngestError::Open`] naming the path, and every error of
/// [`load_dataset_from_reader`].
pub fn load_dataset(
    path: &Path,
    schema: &Schema,
    options: &IngestOptions,
) -> Result<(Dataset, IngestReport), IngestError> {
    let (reader, format) = open_telemetry(path, schema.format())?;
    load_dataset_from_reader(reader, &path.display().to_string(), format, schema, options)
}

/// Opens the telemetry file at `path` for reading, decompressing it when its
/// name ends in `.gz` (Zeek archives rotated logs as `conn.….log.gz`), and
/// returns the format its name implies (`flows.csv`, `flows.csv.gz` → csv),
/// else `default_format` (the schema's).
///
/// # Errors
/// [`IngestError::Open`] naming the path.
pub fn open_telemetry(
    path: &Path,
    default_format: FileFormat,
) -> Result<(Box<dyn Read>, FileFormat), IngestError> {
    let reader = crate::fsutil::open_maybe_gzip(path).map_err(|source| IngestError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let named = if crate::fsutil::is_gzip_path(path) {
        path.file_stem().map(Path::new)
    } else {
        Some(path)
    };
    let format = named
        .and_then(FileFormat::from_extension)
        .unwrap_or(default_format);
    Ok((reader, format))
}

/// Loads telemetry in `format` from `reader` (a file, stdin, a socket) through
/// `schema`; `source_name` names the input in reports and errors.
///
/// # Errors
/// [`IngestError::Read`] when the input fails,
/// [`IngestError::MissingHeaderColumns`] when a csv header lacks a column the
/// schema needs, [`IngestError::ColumnsAbsentFromEveryRecord`] when no JSONL
/// record holds one, [`IngestError::UnlistedLabel`] for a label value the
/// schema does not list (unless its `unlisted_labels` says otherwise),
/// [`IngestError::NoRows`] when the input holds no row, and
/// [`IngestError::AllRowsSkipped`] when no row fits the schema.
pub fn load_dataset_from_reader(
    reader: impl Read,
    source_name: &str,
    format: FileFormat,
    schema: &Schema,
    options: &IngestOptions,
) -> Result<(Dataset, IngestReport), IngestError> {
    let mut collector = Collector::new(source_name, schema, options);
    read_records(reader, format, &mut collector)?;
    collector.finish()
}

/// Loads as [`load_dataset_from_reader`] does, labelling each row by the
/// alerts of `alerts` ([`alert_labels`]).
fn load_with_alerts(
    reader: impl Read,
    source_name: &str,
    format: FileFormat,
    schema: &Schema,
    options: &IngestOptions,
    alerts: &AlertIndex,
) -> Result<(Dataset, IngestReport, AlertJoinReport), IngestError> {
    let mut collector = Collector::new(source_name, schema, options);
    collector.alert_join = Some(AlertJoin::new(alerts));
    read_records(reader, format, &mut collector)?;
    let join_report = collector
        .alert_join
        .as_ref()
        .map(|join| join.report(schema, &collector.dataset))
        .unwrap_or_default();
    let (dataset, report) = collector.finish()?;
    Ok((dataset, report, join_report))
}

/// Feeds every record of `reader`, read as `format`, to `collector`.
fn read_records(
    reader: impl Read,
    format: FileFormat,
    collector: &mut Collector<'_>,
) -> Result<(), IngestError> {
    match format {
        FileFormat::Csv => csv::read_csv(reader, collector),
        FileFormat::Jsonl => jsonl::read_jsonl(reader, collector),
        FileFormat::Zeek => zeek::read_zeek(reader, collector),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(
        text: &str,
        format: FileFormat,
        schema: &Schema,
        options: &IngestOptions,
    ) -> Result<(Dataset, IngestReport), IngestError> {
        load_dataset_from_reader(text.as_bytes(), "test-input", format, schema, options)
    }

    fn header_schema() -> Schema {
        let text = Schema::for_test()
            .to_toml_string()
            .replace("has_header = false", "has_header = true");
        Schema::from_toml_str(&text).unwrap()
    }

    /// Returns [`Schema::for_test`] whose label column counts values it does
    /// not list as the last attack class.
    fn unlisted_as_attack_schema() -> Schema {
        let text = Schema::for_test().to_toml_string().replace(
            "benign = [\"ok\"]",
            "benign = [\"ok\"]\nunlisted_labels = \"attack\"",
        );
        Schema::from_toml_str(&text).unwrap()
    }

    fn nsl_kdd_schema() -> Schema {
        Schema::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/nsl-kdd.toml"
        )))
        .unwrap()
    }

    #[test]
    fn positional_csv_loads_rows_labels_and_classes() {
        let text = "1,tcp,80,ok\n3,udp,53,portscan\n0,icmp,0,worm\n";
        let (dataset, report) = load_text(
            text,
            FileFormat::Csv,
            &unlisted_as_attack_schema(),
            &IngestOptions::default(),
        )
        .unwrap();
        assert_eq!(dataset.len(), 3);
        assert_eq!(dataset.labels(), [0, 1, 1]);
        assert_eq!(dataset.classes(), [0, 1, 3]);
        assert_eq!(dataset.raw_label(2), "worm");
        assert_eq!(dataset.row(1)[0], 4f32.ln());
        assert_eq!((report.num_rows, report.skipped.total()), (3, 0));
    }

    #[test]
    fn header_csv_and_positional_csv_give_the_same_features() {
        let positional = "1,tcp,80,ok\n3,udp,53,portscan\n";
        let with_header = "label,port,proto,bytes\nok,80,tcp,1\nportscan,53,udp,3\n";
        let options = IngestOptions::default();
        let (positional_dataset, _) =
            load_text(positional, FileFormat::Csv, &Schema::for_test(), &options).unwrap();
        let (header_dataset, _) =
            load_text(with_header, FileFormat::Csv, &header_schema(), &options).unwrap();
        assert_eq!(positional_dataset.features(), header_dataset.features());
        assert_eq!(positional_dataset.classes(), header_dataset.classes());
    }

    #[test]
    fn a_header_missing_a_schema_column_is_an_error_naming_it() {
        let text = "label,port,bytes\nok,80,1\n";
        let error = load_text(
            text,
            FileFormat::Csv,
            &header_schema(),
            &IngestOptions::default(),
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("the header has no column named \"proto\""),
            "{message}"
        );
        assert!(
            message.contains("\"label\", \"port\", \"bytes\""),
            "{message}"
        );
    }

    #[test]
    fn jsonl_loads_numbers_and_strings_and_skips_blank_lines() {
        let text = concat!(
            "{\"bytes\": 1, \"proto\": \"tcp\", \"port\": 80, \"label\": \"ok\"}\n",
            "\n",
            "{\"bytes\": \"3\", \"proto\": \"udp\", \"port\": \"53\", \"label\": \"synflood\"}\n",
        );
        let (dataset, report) = load_text(
            text,
            FileFormat::Jsonl,
            &Schema::for_test(),
            &IngestOptions::default(),
        )
        .unwrap();
        assert_eq!(dataset.len(), 2);
        assert_eq!(dataset.classes(), [0, 2]);
        assert_eq!(dataset.row(1)[0], 4f32.ln());
        assert_eq!(report.skipped.total(), 0);
    }

    #[test]
    fn malformed_csv_rows_are_counted_with_their_line_numbers() {
        let text = concat!(
            "label,port,proto,bytes\n",
            "ok,80,tcp,1\n",
            "ok,80,tcp,abc\n",
            "ok,80,tcp\n",
            "ok,80,tcp,2\n",
            "ok,80,tcp,NaN\n",
            "\"ok\n",
            "split\",80,tcp,\n",
            "ok,80,tcp,3\n",
        );
        let (dataset, report) = load_text(
            text,
            FileFormat::Csv,
            &header_schema(),
            &IngestOptions::default(),
        )
        .unwrap();
        assert_eq!(dataset.len(), 3);
        assert_eq!(report.skipped.num_malformed, 4);
        let lines: Vec<u64> = report.skipped_rows.iter().map(|row| row.line).collect();
        assert_eq!(lines, [3, 4, 6, 7]);
        assert_eq!(
            report.skipped_rows[0].detail,
            "column \"bytes\": \"abc\" is not a number"
        );
        assert_eq!(
            report.skipped_rows[1].detail,
            "row has 3 fields, the header has 4"
        );
        assert_eq!(report.skipped_rows[0].source, "test-input");
        let shown = report.to_string();
        assert!(
            shown.starts_with("loaded 3 rows from test-input (skipped 4: 4 malformed)\n  line 3: "),
            "{shown}"
        );
    }

    #[test]
    fn malformed_jsonl_lines_are_counted_with_their_line_numbers() {
        let text = concat!(
            "{\"bytes\": 1, \"proto\": \"tcp\", \"port\": 80, \"label\": \"ok\"}\n",
            "{\"bytes\": 1, \"proto\": \"tcp\"\n",
            "[1, 2]\n",
            "\n",
            "{\"bytes\": \"x\", \"proto\": \"tcp\", \"port\": 80, \"label\": \"ok\"}\n",
            "{\"bytes\": 2, \"proto\": \"tcp\", \"port\": 80}\n",
            "{\"bytes\": 3, \"proto\": \"udp\", \"port\": 80, \"label\": \"ok\"}",
        );
        let (dataset, report) = load_text(
            text,
            FileFormat::Jsonl,
            &Schema::for_test(),
            &IngestOptions::default(),
        )
        .unwrap();
        assert_eq!(dataset.len(), 2);
        let lines: Vec<u64> = report.skipped_rows.iter().map(|row| row.line).collect();
        assert_eq!(lines, [2, 3, 5, 6]);
        assert!(report.skipped_rows[0].detail.starts_with("invalid json"));
        assert_eq!(
            report.skipped_rows[1].detail,
            "expected a json object, got an array"
        );
        assert_eq!(report.skipped_rows[3].reason, SkipReason::MissingLabel);
        assert_eq!(
            report.skipped_rows[3].detail,
            "label column \"label\" is empty or absent"
        );
        assert_eq!(
            report.skipped,
            SkipCounts {
                num_malformed: 3,
                num_missing_label: 1,
                num_unlisted_label: 0,
                num_skipped_label: 0,
            }
        );
    }

    #[test]
    fn unlabelled_rows_are_kept_when_labels_are_not_required() {
        let text = "{\"bytes\": 2, \"proto\": \"tcp\", \"port\": 80}\n";
        let options = IngestOptions {
            require_labels: false,
            ..IngestOptions::default()
        };
        let (dataset, report) =
            load_text(text, FileFormat::Jsonl, &Schema::for_test(), &options).unwrap();
        assert_eq!((dataset.len(), report.num_unlabelled), (1, 1));
        assert_eq!(dataset.raw_label(0), "");
    }

    #[test]
    fn overlong_jsonl_lines_are_skipped_without_losing_the_next_line() {
        let long_line = format!("{{\"bytes\": 1, \"pad\": \"{}\"}}\n", "x".repeat(300));
        let text = format!(
            "{long_line}{{\"bytes\": 1, \"proto\": \"tcp\", \"port\": 80, \"label\": \"ok\"}}\n"
        );
        let options = IngestOptions {
            max_line_bytes: 100,
            ..IngestOptions::default()
        };
        let (dataset, report) =
            load_text(&text, FileFormat::Jsonl, &Schema::for_test(), &options).unwrap();
        assert_eq!(dataset.len(), 1);
        assert_eq!(report.skipped_rows[0].line, 1);
        assert_eq!(
            report.skipped_rows[0].detail,
            "line is longer than 100 bytes"
        );
    }

    #[test]
    fn max_rows_stops_after_that_many_good_rows() {
        let text = "1,tcp,80,ok\nbad\n2,tcp,80,ok\n3,tcp,80,ok\n4,tcp,80,ok\n";
        let options = IngestOptions {
            max_rows: Some(2),
            ..IngestOptions::default()
        };
        let (dataset, report) =
            load_text(text, FileFormat::Csv, &Schema::for_test(), &options).unwrap();
        assert_eq!(dataset.len(), 2);
        assert_eq!(report.skipped.num_malformed, 1);
        assert_eq!(report.stopped_early, Some(StopReason::MaxRows));
        assert_eq!(dataset.row(1)[0], 3f32.ln());
    }

    #[test]
    fn max_bytes_stops_between_rows() {
        let text = "1,tcp,80,ok\n2,tcp,80,ok\n3,tcp,80,ok\n";
        let options = IngestOptions {
            max_bytes: Some(13),
            ..IngestOptions::default()
        };
        let (dataset, report) =
            load_text(text, FileFormat::Csv, &Schema::for_test(), &options).unwrap();
        assert_eq!(dataset.len(), 2);
        assert_eq!(report.stopped_early, Some(StopReason::MaxBytes));
    }

    #[test]
    fn max_reported_skipped_limits_the_examples_not_the_count() {
        let text = "x\nx\nx\nx\n1,tcp,80,ok\n";
        let options = IngestOptions {
            max_reported_skipped: 2,
            ..IngestOptions::default()
        };
        let (_, report) = load_text(text, FileFormat::Csv, &Schema::for_test(), &options).unwrap();
        assert_eq!(
            (report.skipped.num_malformed, report.skipped_rows.len()),
            (4, 2)
        );
        assert!(report.to_string().ends_with("... and 2 more skipped rows"));
    }

    #[test]
    fn the_wrong_schema_for_a_file_is_a_clear_error() {
        let text = "1,tcp,ok\n2,udp,ok\n3,icmp,ok\n";
        let error = load_text(
            text,
            FileFormat::Csv,
            &nsl_kdd_schema(),
            &IngestOptions::default(),
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(matches!(
            error,
            IngestError::AllRowsSkipped {
                skipped: SkipCounts {
                    num_malformed: 3,
                    num_missing_label: 0,
                    num_unlisted_label: 0,
                    num_skipped_label: 0,
                },
                ..
            }
        ));
        assert!(
            message.starts_with("every row of test-input was skipped (3 malformed)"),
            "{message}"
        );
        assert!(
            message.contains("schema probably does not match"),
            "{message}"
        );
        assert!(
            message.contains("line 1: row has 3 fields, the schema expects 43"),
            "{message}"
        );
    }

    #[test]
    fn empty_input_is_an_error() {
        let error = load_text(
            "",
            FileFormat::Csv,
            &Schema::for_test(),
            &IngestOptions::default(),
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "test-input has no rows");
        let blank = load_text(
            "\n\n",
            FileFormat::Jsonl,
            &Schema::for_test(),
            &IngestOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(blank, IngestError::NoRows { .. }));
    }

    #[test]
    fn invalid_utf8_rows_are_malformed_not_fatal() {
        let mut bytes = b"1,tcp,80,ok\n".to_vec();
        bytes.extend_from_slice(b"2,t\xffp,80,ok\n3,tcp,80,ok\n");
        let (dataset, report) = load_dataset_from_reader(
            bytes.as_slice(),
            "bytes",
            FileFormat::Csv,
            &Schema::for_test(),
            &IngestOptions::default(),
        )
        .unwrap();
        assert_eq!(dataset.len(), 2);
        assert_eq!(report.skipped_rows[0].line, 2);
    }

    #[test]
    fn a_byte_order_mark_does_not_hide_the_first_column() {
        let text = "\u{feff}label,port,proto,bytes\nok,80,tcp,1\n";
        let (dataset, _) = load_text(
            text,
            FileFormat::Csv,
            &header_schema(),
            &IngestOptions::default(),
        )
        .unwrap();
        assert_eq!(dataset.len(), 1);
        let positional = "\u{feff}1,tcp,80,ok\n";
        let (positional_dataset, _) = load_text(
            positional,
            FileFormat::Csv,
            &Schema::for_test(),
            &IngestOptions::default(),
        )
        .unwrap();
        assert_eq!(positional_dataset.len(), 1);
        let json_lines =
            "\u{feff}{\"bytes\": 1, \"proto\": \"tcp\", \"port\": 80, \"label\": \"ok\"}\n";
        let (json_dataset, json_report) = load_text(
            json_lines,
            FileFormat::Jsonl,
            &Schema::for_test(),
            &IngestOptions::default(),
        )
        .unwrap();
        assert_eq!(json_dataset.len(), 1);
        assert_eq!(json_report.skipped.total(), 0);
    }

    #[test]
    fn files_are_read_by_extension_and_missing_files_are_named() {
        let directory = tempfile::tempdir().unwrap();
        let jsonl_path = directory.path().join("events.jsonl");
        std::fs::write(
            &jsonl_path,
            "{\"bytes\": 1, \"proto\": \"tcp\", \"port\": 80, \"label\": \"ok\"}\n",
        )
        .unwrap();
        let (dataset, report) =
            load_dataset(&jsonl_path, &Schema::for_test(), &IngestOptions::default()).unwrap();
        assert_eq!(dataset.len(), 1);
        assert_eq!(report.source, jsonl_path.display().to_string());

        let missing_path = directory.path().join("absent.csv");
        let error = load_dataset(
            &missing_path,
            &Schema::for_test(),
            &IngestOptions::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("absent.csv"), "{error}");
    }
}
