//! Drafting a starting schema from a telemetry file: `fedshield schema draft`.
//!
//! - `render`: the drafted columns as TOML text with `# why:` comments.
//! - `sample`: the first records of a Zeek TSV log, a JSON-lines file or a csv
//!   file, read into named columns of raw values.
//!
//! Each column's choice follows its name, its Zeek `#types` entry and its
//! values, and a `# why:` comment above it says which:
//! - identifiers and times are no features (`uid`, `ts`, addresses, `community_id`,
//!   `flow_id`, source ports, timestamps): the flow's time, id, Community ID
//!   and addresses and source port become `identity` columns with their role,
//!   echoed in every verdict; other identifiers, and `local_orig` and
//!   `local_resp`, which leak the label in real captures, are ignored;
//! - the most label-like column (`label`, `class`, `attack_cat`,
//!   `detailed-label`, ...) becomes the label, other label-like columns are ignored;
//! - numbers become numeric columns with fixed constants chosen from the
//!   field's meaning (bytes, packets, durations, ports, counts);
//! - Zeek sets (and JSON arrays) become set-valued categoricals, booleans a
//!   two-value vocabulary, known Zeek enums (`proto`, `conn_state`) their
//!   vocabulary, other text hashed buckets.
//!
//! With `fit`, numeric columns get `standardize` constants (population mean
//! and standard deviation, over the values present in the sampled records,
//! after `clamp` and `log1p`) and text columns a vocabulary of their most
//! frequent values, all computed from the file. The schema's header comment
//! then names the file: those constants describe its traffic, and the
//! operator decides whether to share them.

mod render;
mod sample;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use render::render;
use sample::{Sample, SampleColumn, SampleValue, read_sample, sniff_format};

use super::FileFormat;

/// How many records a draft reads by default.
pub const DEFAULT_MAX_DRAFT_RECORDS: usize = 100_000;

/// Most values a fitted vocabulary keeps (the most frequent; the rest share the other slot).
const MAX_FITTED_VOCABULARY: usize = 20;

/// Hash buckets of a text column drafted without `fit`.
const TEXT_HASH_BUCKETS: i64 = 32;

/// Zeek's `conn_state` values (Zeek `base/protocols/conn/main.zeek`).
const ZEEK_CONN_STATES: [&str; 13] = [
    "S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH",
];

/// Zeek's transport protocols (`transport_proto`, less `unknown_transport`).
const ZEEK_PROTOCOLS: [&str; 3] = ["tcp", "udp", "icmp"];

/// Label-like column names (lowercase), most preferred first.
const LABEL_NAMES: [&str; 10] = [
    "label",
    "class",
    "attack_cat",
    "attack_type",
    "category",
    "detailed-label",
    "detailedlabel",
    "detailed_label",
    "labels",
    "alerted",
];

/// Label values that usually mean benign (compared without case).
const BENIGN_LIKE: [&str; 3] = ["benign", "normal", "false"];

/// Label values that mean "no rule matched" (compared without case): skipped, not attacks.
const UNKNOWN_LIKE: [&str; 4] = ["background", "unknown", "-", "(empty)"];

/// Errors of drafting a schema.
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
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
    #[error("{source_name} is empty: there is nothing to draft a schema from")]
    Empty { source_name: String },
    #[error("{source_name} holds no {format} records to draft a schema from")]
    NoRecords {
        source_name: String,
        format: FileFormat,
    },
    #[error("{source_name}:{line}: {detail}")]
    ZeekHeader {
        source_name: String,
        line: u64,
        /// What is wrong, starting with the column.
        detail: String,
    },
    #[error("{source_name}:{line}: column {column}: {message}")]
    Json {
        source_name: String,
        line: u64,
        column: usize,
        message: String,
    },
    #[error("{source_name}:{line}: {message}")]
    Csv {
        source_name: String,
        line: u64,
        message: String,
    },
}

/// What a draft reads and computes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DraftOptions {
    /// The file's format; `None` guesses it from the first line (`#` zeek,
    /// `{` jsonl, else csv).
    pub format: Option<FileFormat>,
    /// Compute standardize constants and vocabularies from the file.
    pub fit: bool,
    /// Most records read.
    pub max_records: usize,
}

impl Default for DraftOptions {
    fn default() -> Self {
        DraftOptions {
            format: None,
            fit: false,
            max_records: DEFAULT_MAX_DRAFT_RECORDS,
        }
    }
}

/// Returns a drafted schema (TOML text with `# why:` comments) for the file at `path`.
///
/// # Errors
/// [`DraftError::Open`] naming the path, and every error of [`draft_schema_from_reader`].
pub fn draft_schema(path: &Path, options: &DraftOptions) -> Result<String, DraftError> {
    let open = || {
        crate::fsutil::open_maybe_gzip(path).map_err(|source| DraftError::Open {
            path: path.to_path_buf(),
            source,
        })
    };
    let source_name = path.display().to_string();
    let format = match options.format {
        Some(format) => format,
        None => guess_format(open()?, &source_name)?,
    };
    let options = DraftOptions {
        format: Some(format),
        ..options.clone()
    };
    draft_schema_from_reader(open()?, &source_name, &options)
}

/// Returns the format the first non-empty line of `reader` implies.
fn guess_format(reader: impl std::io::Read, source_name: &str) -> Result<FileFormat, DraftError> {
    use std::io::BufRead;
    for (index, line) in std::io::BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(|source| DraftError::Read {
            source_name: source_name.to_string(),
            line: index as u64 + 1,
            source,
        })?;
        if !line.trim().is_empty() {
            return Ok(sniff_format(&line));
        }
    }
    Err(DraftError::Empty {
        source_name: source_name.to_string(),
    })
}

/// Returns a drafted schema for the telemetry in `reader`; `source_name`
/// names it in errors and in the schema's header comment. Without a format
/// in `options`, csv is assumed.
///
/// # Errors
/// [`DraftError::Read`] when the input fails, [`DraftError::NoRecords`] when
/// it holds no record, and a header, JSON or csv error naming the line.
pub fn draft_schema_from_reader(
    reader: impl std::io::Read,
    source_name: &str,
    options: &DraftOptions,
) -> Result<String, DraftError> {
    let format = options.format.unwrap_or(FileFormat::Csv);
    let sample = read_sample(reader, source_name, format, options.max_records)?;
    let label_index = choose_label(&sample);
    let columns: Vec<DraftColumn> = sample
        .columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let is_filter_key = sample
                .filter
                .as_ref()
                .is_some_and(|(key, _)| *key == column.name);
            if is_filter_key {
                return DraftColumn {
                    name: column.name.clone(),
                    why: "the record filter keeps one value of it, so it tells records nothing"
                        .to_string(),
                    body: ColumnBody::Ignore,
                };
            }
            // A JSON string stays text even when it reads as a number
            // (Suricata's hex tcp_flags "02"); csv and Zeek fields are all text.
            let facts = ColumnFacts::of(column, format != FileFormat::Jsonl);
            draft_column(column, &facts, Some(index) == label_index, options.fit)
        })
        .collect();
    Ok(render(&sample, format, source_name, &columns, options))
}

/// What the sampled values of one column hold.
#[derive(Debug, Default)]
struct ColumnFacts {
    num_present: usize,
    num_absent: usize,
    /// Text values that parse as numbers, and JSON numbers.
    numbers: Vec<f64>,
    num_not_numbers: usize,
    num_bools: usize,
    num_sets: usize,
    /// Every text value (set elements one by one) with its count.
    text_counts: HashMap<String, usize>,
    /// The first text value, for the address and time check.
    first_text: Option<String>,
    /// The first text value that is not a number, for an example in a comment.
    first_non_number: Option<String>,
}

impl ColumnFacts {
    /// Returns the facts of `column`'s values; with `text_may_be_number`, a
    /// text value that parses as a finite number counts as a number.
    fn of(column: &SampleColumn, text_may_be_number: bool) -> ColumnFacts {
        let mut facts = ColumnFacts::default();
        let count_text = |facts: &mut ColumnFacts, text: &str| {
            *facts.text_counts.entry(text.to_string()).or_insert(0) += 1;
            if facts.first_text.is_none() {
                facts.first_text = Some(text.to_string());
            }
        };
        for value in &column.values {
            match value {
                SampleValue::Absent => facts.num_absent += 1,
                SampleValue::EmptySet => {
                    facts.num_present += 1;
                    facts.num_sets += 1;
                }
                SampleValue::Text(text) => {
                    facts.num_present += 1;
                    let number = text
                        .parse::<f64>()
                        .ok()
                        .filter(|number| text_may_be_number && number.is_finite());
                    match number {
                        Some(number) => facts.numbers.push(number),
                        _ => {
                            facts.num_not_numbers += 1;
                            if facts.first_non_number.is_none() {
                                facts.first_non_number = Some(text.clone());
                            }
                        }
                    }
                    count_text(&mut facts, text);
                }
                SampleValue::Number(number) => {
                    facts.num_present += 1;
                    facts.numbers.push(*number);
                    count_text(&mut facts, &number.to_string());
                }
                SampleValue::Bool(flag) => {
                    facts.num_present += 1;
                    facts.num_bools += 1;
                    count_text(&mut facts, if *flag { "true" } else { "false" });
                }
                SampleValue::Elements(elements) => {
                    facts.num_present += 1;
                    facts.num_sets += 1;
                    for element in elements {
                        count_text(&mut facts, element);
                    }
                }
            }
        }
        facts
    }

    fn all_numbers(&self) -> bool {
        self.num_present > 0
            && self.num_not_numbers == 0
            && self.num_bools == 0
            && self.num_sets == 0
    }

    /// Returns the text values, most frequent first (ties by value).
    fn values_by_frequency(&self) -> Vec<(&str, usize)> {
        let mut values: Vec<(&str, usize)> = self
            .text_counts
            .iter()
            .map(|(value, count)| (value.as_str(), *count))
            .collect();
        values.sort_by(|left, right| right.1.cmp(&left.1).then(left.0.cmp(right.0)));
        values
    }
}

/// Returns the index of the column to propose as the label: the
/// most-preferred label-like name with a value in some record.
fn choose_label(sample: &Sample) -> Option<usize> {
    sample
        .columns
        .iter()
        .enumerate()
        .filter_map(|(index, column)| {
            let preference = label_preference(&column.name)?;
            let has_value = column
                .values
                .iter()
                .any(|value| !matches!(value, SampleValue::Absent));
            has_value.then_some((preference, index))
        })
        .min()
        .map(|(_, index)| index)
}

/// Returns where `name` stands in [`LABEL_NAMES`] (its last dotted part, without case).
fn label_preference(name: &str) -> Option<usize> {
    let lowercase = name.to_ascii_lowercase();
    let last_part = lowercase.rsplit('.').next().unwrap_or(&lowercase);
    LABEL_NAMES.iter().position(|label| *label == last_part)
}

/// The numeric meanings a column's constants are chosen from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct NumericRange {
    /// What the column holds and how it is bounded.
    meaning: &'static str,
    /// How the bounded value is scaled without `fit`.
    scaling: &'static str,
    min: f64,
    max: f64,
    log1p: bool,
    /// Divides the (log1p'd) value into about 0..=1.
    divisor: f64,
}

const BYTES: NumericRange = NumericRange {
    meaning: "a byte count, clamped to 0..=1e12 (1 TB) then log1p",
    scaling: "divided by 28 (about log1p(1e12)) into 0..=1",
    min: 0.0,
    max: 1e12,
    log1p: true,
    divisor: 28.0,
};
const PACKETS: NumericRange = NumericRange {
    meaning: "a packet count, clamped to 0..=1e9 then log1p",
    scaling: "divided by 21 (about log1p(1e9)) into 0..=1",
    min: 0.0,
    max: 1e9,
    log1p: true,
    divisor: 21.0,
};
const DURATION: NumericRange = NumericRange {
    meaning: "a duration in seconds, clamped to 0..=1e6 (11.6 days) then log1p",
    scaling: "divided by 14 (about log1p(1e6)) into 0..=1",
    min: 0.0,
    max: 1e6,
    log1p: true,
    divisor: 14.0,
};
const PORT: NumericRange = NumericRange {
    meaning: "a port, clamped to 0..=65535",
    scaling: "divided by 65535 into 0..=1",
    min: 0.0,
    max: 65535.0,
    log1p: false,
    divisor: 65535.0,
};
const COUNT: NumericRange = NumericRange {
    meaning: "a count, clamped to 0..=1e9 then log1p",
    scaling: "divided by 21 (about log1p(1e9)) into 0..=1",
    min: 0.0,
    max: 1e9,
    log1p: true,
    divisor: 21.0,
};
const SIGNED: NumericRange = NumericRange {
    meaning: "a number that can be negative, clamped to -1e6..=1e6",
    scaling: "divided by 1e6 into -1..=1",
    min: -1e6,
    max: 1e6,
    log1p: false,
    divisor: 1e6,
};

/// Returns the range of a numeric column from its name, Zeek type and values.
fn numeric_range(name: &str, zeek_type: Option<&str>, facts: &ColumnFacts) -> NumericRange {
    let lowercase = name.to_ascii_lowercase();
    if lowercase.contains("bytes") {
        BYTES
    } else if lowercase.contains("pkts") || lowercase.contains("packets") {
        PACKETS
    } else if zeek_type == Some("interval")
        || lowercase.contains("duration")
        || lowercase == "dur"
        || lowercase.ends_with(".age")
    {
        DURATION
    } else if zeek_type == Some("port") || is_port_name(&lowercase) {
        PORT
    } else if matches!(zeek_type, Some("count"))
        || facts.numbers.iter().all(|number| *number >= 0.0)
    {
        COUNT
    } else {
        SIGNED
    }
}

fn is_port_name(lowercase: &str) -> bool {
    lowercase.ends_with("port") || lowercase.ends_with("_p")
}

/// Returns the role (an ECS field name) of an identifier column a detector
/// should echo: the flow's time, id, Community ID and 5-tuple ends. Other
/// identifiers (file ids, tunnel parents, sensor names) get none.
fn identity_role(name: &str, zeek_type: Option<&str>) -> Option<&'static str> {
    let lowercase = name.to_ascii_lowercase();
    let last_part = lowercase.rsplit('.').next().unwrap_or(&lowercase);
    let role = match last_part {
        "ts" | "timestamp" | "start" | "stime" | "starttime" => "@timestamp",
        "uid" | "flow_id" => "event.id",
        "community_id" => "network.community_id",
        "orig_h" | "src_ip" | "srcaddr" | "saddr" | "src_addr" => "source.ip",
        "resp_h" | "dest_ip" | "dst_ip" | "dstaddr" | "daddr" | "dst_addr" => "destination.ip",
        "orig_p" | "src_port" | "sport" => "source.port",
        _ if matches!(zeek_type, Some("time")) => "@timestamp",
        _ => return None,
    };
    Some(role)
}

/// Returns why a column is an identifier, a time or a label leak, if it is one.
fn identifier_reason(name: &str, zeek_type: Option<&str>, facts: &ColumnFacts) -> Option<String> {
    let lowercase = name.to_ascii_lowercase();
    let last_part = lowercase.rsplit('.').next().unwrap_or(&lowercase);
    if matches!(lowercase.as_str(), "local_orig" | "local_resp") {
        return Some(
            "local_orig/local_resp say which side is local; in real captures they leak the label (CTU-50's inbound rows are exactly its attacks)"
                .to_string(),
        );
    }
    if matches!(zeek_type, Some("time")) || is_time_name(&lowercase, last_part) {
        return Some(
            "a timestamp: when a flow happened is no property of the traffic that carries over"
                .to_string(),
        );
    }
    if matches!(zeek_type, Some("addr" | "subnet"))
        || last_part.ends_with("_h")
        || last_part.ends_with("_ip")
        || last_part.ends_with("addr")
    {
        return Some("an address: it names a host, and a model that learns hosts does not carry over to other networks".to_string());
    }
    if matches!(
        last_part,
        "uid"
            | "fuid"
            | "uids"
            | "community_id"
            | "flow_id"
            | "tunnel_parents"
            | "pcap_cnt"
            | "tx_id"
            | "host"
    ) {
        return Some("an identifier (of a flow, a record or a sensor): unique or arbitrary values, no feature".to_string());
    }
    if matches!(last_part, "orig_p" | "src_port" | "sport") {
        return Some(
            "the originator's port is mostly an ephemeral port chosen at random".to_string(),
        );
    }
    if facts.num_not_numbers > 0
        && facts
            .first_text
            .as_deref()
            .is_some_and(looks_like_address_or_time)
    {
        return Some("its values look like addresses or timestamps".to_string());
    }
    None
}

fn is_time_name(lowercase: &str, last_part: &str) -> bool {
    matches!(last_part, "ts" | "timestamp" | "start" | "end" | "time")
        || lowercase.ends_with("time")
        || lowercase.ends_with("timestamp")
}

/// Returns true for an IPv4 or IPv6 address or an ISO-like date (`2021-06-06T…`, `2019/04/04 …`).
fn looks_like_address_or_time(text: &str) -> bool {
    if text.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let bytes = text.as_bytes();
    bytes.len() >= 10
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && matches!(bytes[4], b'-' | b'/')
        && bytes[5..7].iter().all(u8::is_ascii_digit)
}

/// One drafted column.
#[derive(Debug)]
struct DraftColumn {
    name: String,
    why: String,
    body: ColumnBody,
}

#[derive(Debug)]
enum ColumnBody {
    Ignore,
    /// Not a feature, echoed in every verdict of `fedshield detect` by its
    /// role (an ECS field name).
    Identity {
        role: &'static str,
    },
    Numeric {
        range: NumericRange,
        /// Population mean and standard deviation after clamp (and log1p), with `fit`.
        fitted: Option<(f64, f64)>,
        missing: bool,
    },
    Categorical {
        vocabulary: Option<Vec<String>>,
        hash_buckets: i64,
        set: bool,
        missing: Option<&'static str>,
    },
    Label {
        benign: Vec<String>,
        /// Attack values seen in the file (with `fit`).
        attacks: Vec<String>,
        /// Unknown-like values seen in the file (with `fit`), skipped.
        unknown: Vec<String>,
    },
}

fn draft_column(
    column: &SampleColumn,
    facts: &ColumnFacts,
    is_label: bool,
    fit: bool,
) -> DraftColumn {
    let (why, body) = choose_body(column, facts, is_label, fit);
    DraftColumn {
        name: column.name.clone(),
        why,
        body,
    }
}

fn choose_body(
    column: &SampleColumn,
    facts: &ColumnFacts,
    is_label: bool,
    fit: bool,
) -> (String, ColumnBody) {
    let zeek_type = column.zeek_type.as_deref();
    let lowercase = column.name.to_ascii_lowercase();
    if is_label {
        return label_body(facts, fit);
    }
    if label_preference(&column.name).is_some() {
        let why = if facts.num_present == 0 {
            "label-like, but empty in every sampled record, so the file is unlabelled"
        } else {
            "label-like, but another column is proposed as the label; as a feature it would leak the label"
        };
        return (why.to_string(), ColumnBody::Ignore);
    }
    if let Some(reason) = identifier_reason(&column.name, zeek_type, facts) {
        return match identity_role(&column.name, zeek_type) {
            Some(role) => (
                format!(
                    "{reason}; echoed in every verdict as {role}, so an alert can be joined back to its event"
                ),
                ColumnBody::Identity { role },
            ),
            None => (reason, ColumnBody::Ignore),
        };
    }
    if facts.num_present == 0 {
        return ("no sampled record sets it".to_string(), ColumnBody::Ignore);
    }
    let is_zeek_set =
        zeek_type.is_some_and(|kind| kind.starts_with("set[") || kind.starts_with("vector["));
    if is_zeek_set || facts.num_sets > 0 || lowercase == "service" {
        let why = if lowercase == "service" && !is_zeek_set {
            "Zeek joins the services it detects on one connection with the set separator (ssl,quic): a multi-hot set"
        } else {
            "a set of values: a multi-hot set, each element setting its slot"
        };
        return (why.to_string(), categorical_body(facts, true, fit, None));
    }
    let is_bool =
        zeek_type == Some("bool") || (facts.num_bools > 0 && facts.num_bools == facts.num_present);
    if is_bool {
        let values = if zeek_type == Some("bool") {
            ["T", "F"]
        } else {
            ["true", "false"]
        };
        let vocabulary = values.iter().map(ToString::to_string).collect();
        return (
            "a boolean: a two-value vocabulary".to_string(),
            categorical_body(facts, false, false, Some(vocabulary)),
        );
    }
    let zeek_numeric = matches!(
        zeek_type,
        Some("count" | "int" | "double" | "interval" | "port")
    );
    if zeek_numeric || (zeek_type.is_none() && facts.all_numbers()) {
        let range = numeric_range(&column.name, zeek_type, facts);
        let fitted = fit.then(|| mean_and_std(&facts.numbers, range));
        let scaling = if fit {
            "standardized with this file's mean and std"
        } else {
            range.scaling
        };
        let why = format!("{}, {scaling}", range.meaning);
        return (
            why,
            ColumnBody::Numeric {
                range,
                fitted,
                missing: facts.num_absent > 0,
            },
        );
    }
    let known = match lowercase.as_str() {
        "proto" => Some(&ZEEK_PROTOCOLS[..]),
        "conn_state" => Some(&ZEEK_CONN_STATES[..]),
        _ => None,
    };
    if let Some(known) = known.filter(|known| {
        facts
            .text_counts
            .keys()
            .all(|value| known.contains(&value.as_str()))
    }) {
        let vocabulary = known.iter().map(ToString::to_string).collect();
        return (
            format!(
                "a Zeek enum with known values: the vocabulary of all {} of them",
                known.len()
            ),
            categorical_body(facts, false, false, Some(vocabulary)),
        );
    }
    let why = match facts.first_non_number.as_deref() {
        Some(example) if facts.numbers.len() < facts.num_present && !facts.numbers.is_empty() => {
            format!("text (not every value is a number, e.g. {example:?}): a categorical")
        }
        _ => "text: a categorical".to_string(),
    };
    (why, categorical_body(facts, false, fit, None))
}

fn categorical_body(
    facts: &ColumnFacts,
    set: bool,
    fit: bool,
    vocabulary: Option<Vec<String>>,
) -> ColumnBody {
    let vocabulary = vocabulary.or_else(|| {
        fit.then(|| {
            facts
                .values_by_frequency()
                .into_iter()
                .take(MAX_FITTED_VOCABULARY)
                .map(|(value, _)| value.to_string())
                .collect()
        })
    });
    let missing = match (facts.num_absent > 0, set) {
        (false, _) => None,
        (true, true) => Some(""),
        (true, false) => Some("-"),
    };
    ColumnBody::Categorical {
        vocabulary: vocabulary.filter(|values: &Vec<String>| !values.is_empty()),
        hash_buckets: TEXT_HASH_BUCKETS,
        set,
        missing,
    }
}

fn label_body(facts: &ColumnFacts, fit: bool) -> (String, ColumnBody) {
    let is_benign = |value: &str| {
        BENIGN_LIKE
            .iter()
            .any(|benign| benign.eq_ignore_ascii_case(value))
    };
    let is_unknown = |value: &str| {
        UNKNOWN_LIKE
            .iter()
            .any(|unknown| unknown.eq_ignore_ascii_case(value))
    };
    if !fit {
        let benign = if facts.num_bools == facts.num_present {
            vec!["false".to_string()]
        } else {
            ["Benign", "benign", "normal"]
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let why = "label-like: proposed as the label. benign is a guess not checked against the file, and every other value counts as an attack (Background and Unknown too): check it, or draft with --fit";
        return (
            why.to_string(),
            ColumnBody::Label {
                benign,
                attacks: Vec::new(),
                unknown: Vec::new(),
            },
        );
    }
    let values = facts.values_by_frequency();
    let benign: Vec<String> = values
        .iter()
        .filter(|(value, _)| is_benign(value))
        .map(|(value, _)| value.to_string())
        .collect();
    let unknown: Vec<String> = values
        .iter()
        .filter(|(value, _)| is_unknown(value))
        .map(|(value, _)| value.to_string())
        .collect();
    let attacks: Vec<String> = values
        .iter()
        .filter(|(value, _)| !is_benign(value) && !is_unknown(value))
        .map(|(value, _)| value.to_string())
        .collect();
    let why = "label-like: proposed as the label, its values read from the file: benign-like values are benign, the others attacks, and rows with an unknown-like value (Background, Unknown) or a value not listed are skipped and counted";
    (
        why.to_string(),
        ColumnBody::Label {
            benign,
            attacks,
            unknown,
        },
    )
}

/// Returns the population mean and standard deviation of `numbers` after the
/// range's clamp and log1p; a standard deviation of 0 (a constant column) becomes 1.
fn mean_and_std(numbers: &[f64], range: NumericRange) -> (f64, f64) {
    let transformed: Vec<f64> = numbers
        .iter()
        .map(|number| {
            let clamped = number.clamp(range.min, range.max);
            if range.log1p {
                clamped.ln_1p()
            } else {
                clamped
            }
        })
        .collect();
    if transformed.is_empty() {
        return (0.0, 1.0);
    }
    let count = transformed.len() as f64;
    let mean = transformed.iter().sum::<f64>() / count;
    let variance = transformed
        .iter()
        .map(|value| (value - mean).powi(2))
        .sum::<f64>()
        / count;
    let std = variance.sqrt();
    (mean, if std > 1e-6 { std } else { 1.0 })
}

#[cfg(test)]
mod tests;
