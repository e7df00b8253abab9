//! Reading Zeek TSV logs (`conn.log` and its labelled IoT-23 and Stratosphere
//! copies): header directives, then one record per line, matched to schema
//! columns by the names of the `#fields` header.
//!
//! Directives read: `#separator` (written as an escape such as `\x09`, after a
//! space), `#set_separator`, `#empty_field`, `#unset_field`, `#fields`,
//! `#types` and `#close`; `#path`, `#open` and any other `#` line are passed
//! over (an IoT-23 `#close` line carries an appended label). A field holding
//! the unset marker (`-`) is absent, so the column's `missing` value applies;
//! the empty marker (`(empty)`) is the empty set for a set-valued column and
//! absent for any other. Set-valued fields split on `#set_separator`.
//!
//! Tolerated: CRLF line ends, no `#close` trailer, no final newline, and the
//! IoT-23 tail, where the last `#fields` entry is `tunnel_parents   label
//! detailed-label` (names separated by spaces, not the separator) and every row
//! separates its last three values the same way.
//!
//! Several logs in one file (a rotated log appended): a new header block
//! applies from its first line on, and rows are read by it. `#close` ends a
//! log and `#separator` starts a new block (markers back to Zeek's defaults,
//! fields unknown until its `#fields`); a `#fields` line alone re-maps the
//! columns and keeps the markers. A data line while no `#fields` applies is an
//! error naming the file and line.
//!
//! [`ZeekHeader`] is the streaming part, public for the detector: directives
//! fed one line at a time, and the row splitter they define.

use std::io::Read;

use csv::StringRecord;

use super::bounded_lines::BoundedLines;
use super::collector::Collector;
use super::{IngestError, SkipReason};
use crate::schema::{HeaderPositions, RecordFields};

/// Zeek's default markers, used until a header directive sets them.
const DEFAULT_SEPARATOR: &str = "\t";
const DEFAULT_SET_SEPARATOR: &str = ",";
const DEFAULT_EMPTY_FIELD: &str = "(empty)";
const DEFAULT_UNSET_FIELD: &str = "-";

/// The names of the current `#fields` header.
#[derive(Clone, Debug)]
struct ZeekFields {
    /// All field names, the IoT-23 tail split.
    names: StringRecord,
    /// How many separator-split fields the header has (the IoT-23 tail counts as one).
    num_separated_fields: usize,
    /// How many space-separated names the last separator-split field holds:
    /// 3 in IoT-23 files (`tunnel_parents   label   detailed-label`), else 1.
    num_tail_names: usize,
}

/// What a directive line was, for the reader that fed it to [`ZeekHeader::read_directive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeekDirective<'h> {
    /// A `#fields` line: rows from here on have these names (the IoT-23 tail
    /// split); the reader maps them to its schema's columns.
    Fields(&'h StringRecord),
    /// `#close`: the log ends here. A row after it needs a new header.
    Close,
    /// Any other directive (`#separator`, `#types`, `#path`, `#open`, ...).
    Other,
}

/// A header directive that cannot be read: `column` (1-based, in characters)
/// says where on its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {detail}")]
pub struct ZeekHeaderError {
    pub column: usize,
    pub detail: String,
}

/// The header of a Zeek TSV log, fed one `#` line at a time, and the row
/// splitter it defines: both the training loader and the detector read Zeek
/// logs through it, one line at a time (a followed log grows as it is read).
///
/// A header block starts over at `#separator` (the first line Zeek writes)
/// and at `#close`: the markers go back to Zeek's defaults and the fields are
/// unknown until the block's `#fields` line. A `#fields` line alone (a
/// rotated log appended without its other directives) replaces the names and
/// keeps the markers.
#[derive(Clone, Debug)]
pub struct ZeekHeader {
    separator: String,
    set_separator: String,
    empty_field: String,
    unset_field: String,
    fields: Option<ZeekFields>,
    /// The `#types` entries (the IoT-23 tail split), once read for the current `#fields`.
    field_types: Option<StringRecord>,
}

impl Default for ZeekHeader {
    fn default() -> Self {
        ZeekHeader {
            separator: DEFAULT_SEPARATOR.to_string(),
            set_separator: DEFAULT_SET_SEPARATOR.to_string(),
            empty_field: DEFAULT_EMPTY_FIELD.to_string(),
            unset_field: DEFAULT_UNSET_FIELD.to_string(),
            fields: None,
            field_types: None,
        }
    }
}

impl ZeekHeader {
    /// Returns the header before any directive: Zeek's default markers, no fields.
    pub fn new() -> Self {
        ZeekHeader::default()
    }

    /// Returns the names of the current `#fields` line, if one was read.
    pub fn field_names(&self) -> Option<&StringRecord> {
        self.fields.as_ref().map(|fields| &fields.names)
    }

    /// Returns the entries of the current `#types` line, if one was read.
    pub fn field_types(&self) -> Option<&StringRecord> {
        self.field_types.as_ref()
    }

    /// Returns the `#set_separator` (`,` until one is read).
    pub fn set_separator(&self) -> &str {
        &self.set_separator
    }

    /// Returns the `#empty_field` marker (`(empty)` until one is read).
    pub fn empty_field(&self) -> &str {
        &self.empty_field
    }

    /// Returns a row split by [`ZeekHeader::split_row`] as the featurizer
    /// reads it: matched to columns by `positions`, with this header's set
    /// separator and empty marker.
    pub fn row_fields<'r>(
        &'r self,
        record: &'r StringRecord,
        positions: &'r HeaderPositions,
    ) -> RecordFields<'r> {
        RecordFields::Zeek {
            record,
            header: positions,
            set_separator: &self.set_separator,
            empty_field: &self.empty_field,
        }
    }

    /// Reads one directive line (`text` starts with `#`, its line end removed).
    ///
    /// # Errors
    /// A `#separator` that is not an escape, a `#set_separator`,
    /// `#empty_field` or `#unset_field` without a value, or `#types` and
    /// `#fields` with different numbers of entries; the header is then unchanged.
    pub fn read_directive(&mut self, text: &str) -> Result<ZeekDirective<'_>, ZeekHeaderError> {
        if let Some(rest) = text.strip_prefix("#separator") {
            let escaped = rest.trim_start_matches([' ', '\t']);
            let separator = match unescape_separator(escaped) {
                Some(separator) if !separator.is_empty() => separator,
                _ => {
                    return Err(ZeekHeaderError {
                        column: text.len() - escaped.len() + 1,
                        detail: format!(
                            "#separator {escaped:?} is not a separator (write it as an escape such as \\x09)"
                        ),
                    });
                }
            };
            *self = ZeekHeader {
                separator,
                ..ZeekHeader::default()
            };
            return Ok(ZeekDirective::Other);
        }
        let mut entries = text.split(self.separator.as_str());
        let key = entries.next().unwrap_or_default();
        let values: Vec<&str> = entries.collect();
        let first_value = || -> Result<String, ZeekHeaderError> {
            match values.first() {
                Some(value) if !value.is_empty() => Ok((*value).to_string()),
                _ => Err(ZeekHeaderError {
                    column: key.chars().count() + 1,
                    detail: format!("{key} has no value"),
                }),
            }
        };
        match key {
            "#set_separator" => self.set_separator = first_value()?,
            "#empty_field" => self.empty_field = first_value()?,
            "#unset_field" => self.unset_field = first_value()?,
            "#types" => {
                let types: StringRecord = split_fields(text, &self.separator, TailSplit::Last)
                    .skip(1)
                    .map(|(_, entry)| entry)
                    .collect();
                let num_types = types.len();
                if let Some(fields) = &self.fields
                    && fields.names.len() != num_types
                {
                    return Err(ZeekHeaderError {
                        column: 1,
                        detail: format!(
                            "#types has {num_types} entries, #fields has {} names",
                            fields.names.len()
                        ),
                    });
                }
                self.field_types = Some(types);
            }
            "#fields" => {
                let all_fields = split_fields(text, &self.separator, TailSplit::Last);
                let names: StringRecord = all_fields.skip(1).map(|(_, name)| name).collect();
                let num_separated_fields = values.len();
                // A new #fields line comes with its own #types.
                self.field_types = None;
                let fields = self.fields.insert(ZeekFields {
                    num_tail_names: (names.len() + 1).saturating_sub(num_separated_fields),
                    names,
                    num_separated_fields,
                });
                return Ok(ZeekDirective::Fields(&fields.names));
            }
            "#close" => {
                *self = ZeekHeader::default();
                return Ok(ZeekDirective::Close);
            }
            _ => {}
        }
        Ok(ZeekDirective::Other)
    }

    /// Splits row `text` (its line end removed) into `record` (cleared first),
    /// one field per `#fields` name; the unset marker becomes "" (absent).
    /// The empty marker stays: [`ZeekHeader::row_fields`] tells the
    /// featurizer, which reads it as the empty set or as absent.
    ///
    /// Returns `false`, leaving `record` empty, when no `#fields` line was read.
    pub fn split_row(&self, text: &str, record: &mut StringRecord) -> bool {
        record.clear();
        let Some(fields) = &self.fields else {
            return false;
        };
        for (_, field) in split_fields(text, &self.separator, fields.row_tail_split()) {
            record.push_field(self.value(field));
        }
        true
    }

    /// Returns the column (1-based, in characters) where field `field_index`
    /// of row `text` starts, or where the line ends when it has fewer fields.
    pub fn field_column(&self, text: &str, field_index: usize) -> usize {
        let tail_split = self
            .fields
            .as_ref()
            .map_or(TailSplit::None, ZeekFields::row_tail_split);
        let offset = split_fields(text, &self.separator, tail_split)
            .nth(field_index)
            .map_or(text.len(), |(offset, _)| offset);
        text[..offset].chars().count() + 1
    }

    /// Returns `field`, or "" (absent) when it is the unset marker.
    fn value<'f>(&self, field: &'f str) -> &'f str {
        if field == self.unset_field { "" } else { field }
    }
}

impl ZeekFields {
    /// How rows of this header split their last field.
    fn row_tail_split(&self) -> TailSplit {
        if self.num_tail_names > 1 {
            TailSplit::At(self.num_separated_fields - 1)
        } else {
            TailSplit::None
        }
    }
}

/// Which separator-split field is split again on runs of spaces (the IoT-23 tail).
#[derive(Clone, Copy)]
enum TailSplit {
    None,
    /// The last field, however many there are (a header line: its key counts as field 0).
    Last,
    /// Field `index` (0-based) of a row.
    At(usize),
}

/// Returns the fields of `text` split on `separator`, each with its byte
/// offset, the tail field split again on runs of spaces. A tail that holds
/// only spaces stays one (empty) field.
fn split_fields<'t>(
    text: &'t str,
    separator: &'t str,
    tail_split: TailSplit,
) -> impl Iterator<Item = (usize, &'t str)> + 't {
    let tail_index = match tail_split {
        TailSplit::None => None,
        TailSplit::Last => Some(text.matches(separator).count()),
        TailSplit::At(index) => Some(index),
    };
    let offset_of = move |field: &str| field.as_ptr() as usize - text.as_ptr() as usize;
    text.split(separator)
        .enumerate()
        .flat_map(move |(index, field)| {
            let splits_on_spaces =
                Some(index) == tail_index && field.split(' ').any(|part| !part.is_empty());
            // One type for both cases, so that no field allocates: a field
            // that is not split is the one part of `splitn(1, ..)`.
            let max_parts = if splits_on_spaces { usize::MAX } else { 1 };
            field
                .splitn(max_parts, ' ')
                .filter(move |part| !splits_on_spaces || !part.is_empty())
                .map(move |part| (offset_of(part), part))
        })
}

/// Returns `text` with each `\xHH` escape replaced by its byte, as Zeek writes
/// the `#separator` value, or `None` when an escape is not two hex digits or
/// the result is not UTF-8.
fn unescape_separator(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, after)) = rest.split_first() {
        if byte == b'\\' && after.first() == Some(&b'x') {
            let hex = std::str::from_utf8(after.get(1..3)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &after[3..];
        } else {
            bytes.push(byte);
            rest = after;
        }
    }
    String::from_utf8(bytes).ok()
}

/// Reads the Zeek log in `reader` into `collector`.
pub(super) fn read_zeek(
    reader: impl Read,
    collector: &mut Collector<'_>,
) -> Result<(), IngestError> {
    let source_name = collector.report.source.clone();
    let max_line_bytes = collector.options.max_line_bytes;
    let mut lines = BoundedLines::new(reader, max_line_bytes, &source_name);
    let mut header = ZeekHeader::new();
    let mut positions: Option<HeaderPositions> = None;
    let mut record = StringRecord::new();
    let mut line_bytes: Vec<u8> = Vec::new();
    while let Some(line_number) = lines.next_line(&mut line_bytes, collector)? {
        let without_newline = line_bytes.strip_suffix(b"\n").unwrap_or(&line_bytes);
        let without_line_end = without_newline
            .strip_suffix(b"\r")
            .unwrap_or(without_newline);
        let Ok(text) = std::str::from_utf8(without_line_end) else {
            collector.skip(
                line_number,
                SkipReason::Malformed,
                "line is not valid UTF-8".to_string(),
            );
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        if text.starts_with('#') {
            let directive =
                header
                    .read_directive(text)
                    .map_err(|error| IngestError::ZeekHeader {
                        source_name: source_name.clone(),
                        line: line_number,
                        detail: error.to_string(),
                    })?;
            match directive {
                ZeekDirective::Fields(names) => {
                    let matched = collector
                        .schema
                        .header_positions(names, collector.options.require_labels);
                    positions =
                        Some(
                            matched.map_err(|mismatch| IngestError::MissingHeaderColumns {
                                source_name: format!("{source_name}:{line_number}"),
                                missing_columns: mismatch.missing_columns,
                                header_names: names.iter().map(str::to_string).collect(),
                            })?,
                        );
                }
                ZeekDirective::Close => positions = None,
                ZeekDirective::Other => {}
            }
            continue;
        }
        let Some(header_positions) = &positions else {
            return Err(IngestError::ZeekDataBeforeFields {
                source_name,
                line: line_number,
            });
        };
        header.split_row(text, &mut record);
        let row = header.row_fields(&record, header_positions);
        collector.add_record(line_number, &row)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{IngestOptions, IngestReport, load_dataset_from_reader};
    use crate::model::data::Dataset;
    use crate::schema::{FileFormat, Schema};

    const SCHEMA: &str = r#"
format = "zeek"
columns = [
    { name = "duration", kind = "numeric", missing = 0.0, transforms = [{ clamp = { min = 0.0, max = 1e6 } }, "log1p"] },
    { name = "orig_bytes", kind = "numeric", missing = 0.0, transforms = [{ clamp = { min = 0.0, max = 1e12 } }, "log1p"] },
    { name = "proto", kind = "categorical", vocabulary = ["tcp", "udp", "icmp"] },
    { name = "label", kind = "label", benign = ["Benign", "benign"], classes = { malicious = ["Malicious"] } },
]
"#;

    const HEADER: &str = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#open\t2019-12-05-15-46-36\n#fields\tts\tduration\torig_bytes\tproto\tlabel\n#types\ttime\tinterval\tcount\tenum\tstring\n";

    fn schema() -> Schema {
        Schema::from_toml_str(SCHEMA).unwrap()
    }

    fn load(text: &str) -> Result<(Dataset, IngestReport), IngestError> {
        load_dataset_from_reader(
            text.as_bytes(),
            "conn.log",
            FileFormat::Zeek,
            &schema(),
            &IngestOptions::default(),
        )
    }

    #[test]
    fn rows_are_matched_to_columns_by_the_fields_header() {
        let text =
            format!("{HEADER}1.0\t2.5\t3\tudp\tMalicious\n2.0\t0\t0\ttcp\tBenign\n#close\t2019\n");
        let (dataset, report) = load(&text).unwrap();
        assert_eq!((report.num_rows, report.skipped.total()), (2, 0));
        assert_eq!(dataset.row(0)[0], 3.5f32.ln());
        assert_eq!(dataset.row(0)[1], 4f32.ln());
        assert_eq!(&dataset.row(0)[2..], [0.0, 1.0, 0.0, 0.0]);
        assert_eq!(dataset.classes(), [1, 0]);
    }

    #[test]
    fn unset_and_empty_markers_are_absent_values() {
        let text = format!("{HEADER}1.0\t-\t(empty)\ttcp\tBenign\n");
        let (dataset, report) = load(&text).unwrap();
        assert_eq!(report.skipped.total(), 0);
        assert_eq!(&dataset.row(0)[..2], [0.0, 0.0]);
    }

    #[test]
    fn header_directives_set_the_separator_and_markers() {
        let text = "#separator \\x7c\n#unset_field|NA\n#empty_field|none\n#fields|duration|orig_bytes|proto|label\n-|none|udp|Benign\nNA|7|udp|Benign\n";
        let (dataset, report) = load(text).unwrap();
        assert_eq!(report.skipped.total(), 1, "{report}");
        assert_eq!(
            report.skipped_rows[0].detail,
            "column \"duration\": \"-\" is not a number"
        );
        assert_eq!(dataset.row(0)[..2], [0.0, 8f32.ln()]);
    }

    #[test]
    fn crlf_line_ends_and_a_missing_final_newline_are_read() {
        let text = format!("{HEADER}1.0\t2\t3\tudp\tBenign\n2.0\t4\t5\ttcp\tMalicious")
            .replace('\n', "\r\n");
        let (dataset, report) = load(&text).unwrap();
        assert_eq!((report.num_rows, report.skipped.total()), (2, 0));
        assert_eq!(dataset.classes(), [0, 1]);
        assert_eq!(dataset.raw_label(1), "Malicious");
    }

    #[test]
    fn the_iot23_space_separated_tail_is_split_in_the_header_and_rows() {
        let text = "#separator \\x09\n#fields\tduration\torig_bytes\tproto\ttunnel_parents   label   detailed-label\n#types\tinterval\tcount\tenum\tset[string]   string   string\n1\t2\ttcp\t-   Malicious   C&C\n1\t-\tudp\t(empty)   benign   -\n#close\t2019-12-05-15-46-36   benign   -\n";
        let (dataset, report) = load(text).unwrap();
        assert_eq!(
            (report.num_rows, report.skipped.total()),
            (2, 0),
            "{report}"
        );
        assert_eq!(dataset.classes(), [1, 0]);
        assert_eq!(dataset.raw_label(1), "benign");
    }

    #[test]
    fn a_changed_fields_header_remaps_the_columns() {
        let text = format!(
            "{HEADER}1.0\t2\t3\tudp\tBenign\n#fields\tlabel\tproto\torig_bytes\tduration\nMalicious\ttcp\t3\t2\n"
        );
        let (dataset, report) = load(&text).unwrap();
        assert_eq!(
            (report.num_rows, report.skipped.total()),
            (2, 0),
            "{report}"
        );
        assert_eq!(dataset.row(1)[..2], [3f32.ln(), 4f32.ln()]);
        assert_eq!(dataset.classes(), [0, 1]);
    }

    #[test]
    fn a_changed_fields_header_without_a_schema_column_is_an_error_naming_its_line() {
        let text = format!("{HEADER}1.0\t2\t3\tudp\tBenign\n#fields\tlabel\tproto\n");
        let message = load(&text).unwrap_err().to_string();
        assert!(
            message.starts_with(
                "conn.log:10: the header has no column named \"duration\", \"orig_bytes\""
            ),
            "{message}"
        );
    }

    #[test]
    fn a_data_line_before_any_fields_header_is_an_error() {
        let error = load("#separator \\x09\n1.0\t2\t3\tudp\tBenign\n").unwrap_err();
        assert!(matches!(
            error,
            IngestError::ZeekDataBeforeFields { line: 2, .. }
        ));
        assert_eq!(
            error.to_string(),
            "conn.log:2: a data line comes before any #fields header, so its columns are unknown"
        );
    }

    #[test]
    fn a_truncated_line_is_skipped_with_its_line_number() {
        let text = format!("{HEADER}1.0\t2\t3\tudp\tBenign\n1.0\t2\t3\n");
        let (dataset, report) = load(&text).unwrap();
        assert_eq!(dataset.len(), 1);
        assert_eq!(report.skipped.num_malformed, 1);
        assert_eq!(report.skipped_rows[0].line, 10);
        assert_eq!(
            report.skipped_rows[0].detail,
            "row has 3 fields, the header has 5"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_skipped_naming_the_column() {
        let text = format!("{HEADER}1.0\t2\t3\tudp\tBenign\n1.0\tten\t3\tudp\tBenign\n");
        let (_, report) = load(&text).unwrap();
        assert_eq!(report.skipped_rows[0].line, 10);
        assert_eq!(
            report.skipped_rows[0].detail,
            "column \"duration\": \"ten\" is not a number"
        );
        assert_eq!(report.skipped_rows[0].source, "conn.log");
    }

    #[test]
    fn types_that_disagree_with_fields_are_an_error() {
        let text = "#fields\tduration\torig_bytes\tproto\tlabel\n#types\tinterval\tcount\n";
        let message = load(text).unwrap_err().to_string();
        assert_eq!(
            message,
            "conn.log:2: column 1: #types has 2 entries, #fields has 4 names"
        );
    }

    #[test]
    fn a_separator_that_is_not_an_escape_is_an_error_naming_its_column() {
        let message = load("#separator \\xZZ\n").unwrap_err().to_string();
        assert_eq!(
            message,
            "conn.log:1: column 12: #separator \"\\\\xZZ\" is not a separator (write it as an escape such as \\x09)"
        );
    }

    #[test]
    fn a_zeek_schema_refuses_has_header_and_delimiter() {
        let text = SCHEMA.replace(
            "format = \"zeek\"",
            "format = \"zeek\"\nhas_header = true\ndelimiter = \";\"",
        );
        let message = Schema::from_toml_str(&text).unwrap_err().to_string();
        assert!(
            message.contains("has_header: zeek logs name their columns in the #fields header"),
            "{message}"
        );
        assert!(
            message.contains("delimiter: zeek logs give their separator in the #separator header; leave delimiter out, got \";\""),
            "{message}"
        );
        assert_eq!(schema().format(), FileFormat::Zeek);
    }

    #[test]
    fn the_streaming_header_splits_rows_and_locates_their_fields() {
        let mut header = ZeekHeader::new();
        assert_eq!(
            header.read_directive("#separator \\x09"),
            Ok(ZeekDirective::Other)
        );
        let Ok(ZeekDirective::Fields(names)) =
            header.read_directive("#fields\tts\tproto\ttunnel_parents   label   detailed-label")
        else {
            panic!("a #fields line gives its names");
        };
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            ["ts", "proto", "tunnel_parents", "label", "detailed-label"]
        );
        let mut record = StringRecord::new();
        let row = "1.5\tudp\t-   Malicious   C&C";
        assert!(header.split_row(row, &mut record));
        assert_eq!(
            record.iter().collect::<Vec<_>>(),
            ["1.5", "udp", "", "Malicious", "C&C"]
        );
        assert_eq!(header.field_column(row, 1), 5);
        assert_eq!(header.field_column(row, 3), 13);
        assert_eq!(header.field_column("1.5\tudp", 2), 8);
        assert_eq!(
            header.read_directive("#close\t2019-12-05-15-46-36   benign   -"),
            Ok(ZeekDirective::Close)
        );
        assert!(header.field_names().is_none());
        assert!(!header.split_row(row, &mut record));
    }

    #[test]
    fn a_separator_line_starts_a_new_header_block_with_default_markers() {
        let text = "#separator \\x7c\n#unset_field|NA\n#fields|duration|orig_bytes|proto|label\nNA|1|udp|Benign\n#separator \\x09\n#fields\tduration\torig_bytes\tproto\tlabel\n-\t1\tudp\tBenign\nNA\t1\tudp\tBenign\n";
        let (dataset, report) = load(text).unwrap();
        assert_eq!(
            (report.num_rows, report.skipped.total()),
            (2, 1),
            "{report}"
        );
        assert_eq!(report.skipped_rows[0].line, 8);
        assert_eq!(dataset.row(0)[..2], dataset.row(1)[..2]);
    }

    #[test]
    fn a_row_after_close_without_a_new_header_is_an_error() {
        let text =
            format!("{HEADER}1.0\t2\t3\tudp\tBenign\n#close\t2019\n1.0\t2\t3\tudp\tBenign\n");
        let error = load(&text).unwrap_err();
        assert!(matches!(
            error,
            IngestError::ZeekDataBeforeFields { line: 11, .. }
        ));
    }

    #[test]
    fn escapes_in_the_separator_are_decoded() {
        assert_eq!(unescape_separator("\\x09").as_deref(), Some("\t"));
        assert_eq!(unescape_separator("\\x2c;").as_deref(), Some(",;"));
        assert_eq!(unescape_separator("\\x0"), None);
    }
}
