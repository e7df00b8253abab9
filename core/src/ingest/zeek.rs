//! Reading Zeek TSV logs (`conn.log` and its labelled IoT-23 and Stratosphere
//! copies): header directives, then one record per line, matched to schema
//! columns by the names of the `#fields` header.
//!
//! Directives read: `#separator` (written as an escape such as `\x09`, after a
//! space), `#set_separator`, `#empty_field`, `#unset_field`, `#fields` and
//! `#types`; `#path`, `#open`, `#close` and any other `#` line are passed over
//! (an IoT-23 `#close` line carries an appended label). A field holding the
//! unset marker (`-`) is absent, so the column's `missing` value applies; the
//! empty marker (`(empty)`) is the empty set for a set-valued column and
//! absent for any other. Set-valued fields split on `#set_separator`.
//!
//! Tolerated: CRLF line ends, no `#close` trailer, no final newline, and the
//! IoT-23 tail, where the last `#fields` entry is `tunnel_parents   label
//! detailed-label` (names separated by spaces, not the separator) and every row
//! separates its last three values the same way. A `#fields` line later in the
//! file (a rotated log appended) re-maps the columns from there on. A data
//! line before any `#fields` line is an error naming the file and line.

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

/// The columns of the current `#fields` header.
struct ZeekFields {
    /// Where each schema column sits in a row split into all its fields.
    positions: HeaderPositions,
    /// How many separator-split fields the header has (the IoT-23 tail counts as one).
    num_separated_fields: usize,
    /// How many space-separated names the last separator-split field holds:
    /// 3 in IoT-23 files (`tunnel_parents   label   detailed-label`), else 1.
    num_tail_names: usize,
    /// All field names, the tail split.
    num_names: usize,
}

/// The header directives read so far.
struct ZeekHeader {
    separator: String,
    set_separator: String,
    empty_field: String,
    unset_field: String,
    fields: Option<ZeekFields>,
    /// The `#types` line's entry count, the tail split, once read.
    num_types: Option<usize>,
}

impl Default for ZeekHeader {
    fn default() -> Self {
        ZeekHeader {
            separator: DEFAULT_SEPARATOR.to_string(),
            set_separator: DEFAULT_SET_SEPARATOR.to_string(),
            empty_field: DEFAULT_EMPTY_FIELD.to_string(),
            unset_field: DEFAULT_UNSET_FIELD.to_string(),
            fields: None,
            num_types: None,
        }
    }
}

impl ZeekHeader {
    /// Returns `field`, or "" (absent) when it is the unset marker. The
    /// featurizer reads the empty marker (see [`RecordFields::Zeek`]).
    fn value<'f>(&self, field: &'f str) -> &'f str {
        if field == self.unset_field { "" } else { field }
    }
}

/// Splits `entries`' last entry on runs of spaces (the IoT-23 tail) and
/// returns every entry with how many the last one became.
pub(crate) fn split_tail<'t>(entries: &[&'t str]) -> (Vec<&'t str>, usize) {
    let Some((last, leading)) = entries.split_last() else {
        return (Vec::new(), 0);
    };
    let tail: Vec<&str> = last.split(' ').filter(|part| !part.is_empty()).collect();
    let num_tail = tail.len().max(1);
    let mut all = leading.to_vec();
    if tail.is_empty() {
        all.push(last);
    } else {
        all.extend(tail);
    }
    (all, num_tail)
}

/// Returns `text` with each `\xHH` escape replaced by its byte, as Zeek writes
/// the `#separator` value, or `None` when an escape is not two hex digits or
/// the result is not UTF-8.
pub(crate) fn unescape_separator(text: &str) -> Option<String> {
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
    let mut header = ZeekHeader::default();
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
            read_directive(text, line_number, &mut header, collector)?;
            continue;
        }
        let Some(fields) = &header.fields else {
            return Err(IngestError::ZeekDataBeforeFields {
                source_name,
                line: line_number,
            });
        };
        record.clear();
        for (index, field) in text.split(header.separator.as_str()).enumerate() {
            if fields.num_tail_names > 1 && index + 1 == fields.num_separated_fields {
                for part in field.split(' ').filter(|part| !part.is_empty()) {
                    record.push_field(header.value(part));
                }
            } else {
                record.push_field(header.value(field));
            }
        }
        let row = RecordFields::Zeek {
            record: &record,
            header: &fields.positions,
            set_separator: &header.set_separator,
            empty_field: &header.empty_field,
        };
        collector.add_record(line_number, &row)?;
    }
    Ok(())
}

/// Reads one `#` line into `header`.
fn read_directive(
    text: &str,
    line: u64,
    header: &mut ZeekHeader,
    collector: &Collector<'_>,
) -> Result<(), IngestError> {
    let header_error = |detail: String| IngestError::ZeekHeader {
        source_name: collector.report.source.clone(),
        line,
        detail,
    };
    if let Some(rest) = text.strip_prefix("#separator") {
        let escaped = rest.trim_start_matches([' ', '\t']);
        header.separator = match unescape_separator(escaped) {
            Some(separator) if !separator.is_empty() => separator,
            _ => {
                return Err(header_error(format!(
                    "column {}: #separator {escaped:?} is not a separator (write it as an escape such as \\x09)",
                    text.len() - escaped.len() + 1
                )));
            }
        };
        return Ok(());
    }
    let mut entries = text.split(header.separator.as_str());
    let key = entries.next().unwrap_or_default();
    let values: Vec<&str> = entries.collect();
    let first_value = || -> Result<String, IngestError> {
        match values.first() {
            Some(value) if !value.is_empty() => Ok((*value).to_string()),
            _ => Err(header_error(format!(
                "column {}: {key} has no value",
                key.len() + 1
            ))),
        }
    };
    match key {
        "#set_separator" => header.set_separator = first_value()?,
        "#empty_field" => header.empty_field = first_value()?,
        "#unset_field" => header.unset_field = first_value()?,
        "#types" => {
            let (types, _) = split_tail(&values);
            header.num_types = Some(types.len());
            check_types_match_fields(header).map_err(header_error)?;
        }
        "#fields" => {
            let (names, num_tail_names) = split_tail(&values);
            let names_record: StringRecord = names.iter().copied().collect();
            let positions = collector
                .schema
                .header_positions(&names_record, collector.options.require_labels)
                .map_err(|mismatch| IngestError::MissingHeaderColumns {
                    source_name: format!("{}:{line}", collector.report.source),
                    missing_columns: mismatch.missing_columns,
                    header_names: names.iter().map(|name| name.to_string()).collect(),
                })?;
            header.fields = Some(ZeekFields {
                positions,
                num_separated_fields: values.len(),
                num_tail_names,
                num_names: names.len(),
            });
            // A new #fields line (a rotated log) comes with its own #types.
            header.num_types = None;
        }
        _ => {}
    }
    Ok(())
}

/// Returns why `#types` and `#fields` disagree on the number of columns, if they do.
fn check_types_match_fields(header: &ZeekHeader) -> Result<(), String> {
    match (&header.fields, header.num_types) {
        (Some(fields), Some(num_types)) if fields.num_names != num_types => Err(format!(
            "column 1: #types has {num_types} entries, #fields has {} names",
            fields.num_names
        )),
        _ => Ok(()),
    }
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
    fn escapes_in_the_separator_are_decoded() {
        assert_eq!(unescape_separator("\\x09").as_deref(), Some("\t"));
        assert_eq!(unescape_separator("\\x2c;").as_deref(), Some(",;"));
        assert_eq!(unescape_separator("\\x0"), None);
    }
}
