//! Labels joined from Suricata alerts: a flow of the log is an attack when an
//! alert (`event_type = "alert"`) in an eve file shares its Community ID
//! (spec v1, seed 0; [`crate::telemetry::community_id_v1`]).
//!
//! The schema's `[alert_labels]` table names the flow log's 5-tuple columns
//! and its optional `community_id` column, and maps the alert's category or
//! signature to a class. A flow's Community ID is its `community_id` field
//! when present, otherwise the one computed from its 5-tuple; an alert's is
//! its `community_id` field, otherwise computed from its `src_ip`,
//! `src_port`, `dest_ip`, `dest_port` and `proto` (`icmp_type` and
//! `icmp_code` standing in for ICMP ports). Flows no alert matches are
//! benign. A flow with several alerts takes the first alert's value that
//! means an attack (else the first alert's value).
//!
//! The join runs where the data is: nothing about the alerts leaves the
//! machine, only the labelled dataset's training does. [`AlertJoinReport`]
//! counts the flows matched, the flows per class, the alerts whose flow is
//! not in the log and the alerts without a usable flow identity.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

use serde_json::{Map, Value};

use super::bounded_lines::{BoundedLines, LineRead};
use super::report::with_digit_groups;
use super::{IngestError, IngestOptions, IngestReport};
use crate::model::data::Dataset;
use crate::schema::{
    AlertFlowFields, FileFormat, LabelClass, LabelInfo, RecordFields, Schema, quoted,
    resolve_json_field,
};
use crate::telemetry::{FlowTuple, community_id_v1};

/// The raw label of a flow that no alert matches.
pub const NO_ALERT_LABEL: &str = "no alert";

/// IP protocol numbers whose ports (or ICMP type and code) are hashed.
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;

/// The alerts of one eve file, by the Community ID of their flow.
#[derive(Clone, Debug, Default)]
pub struct AlertIndex {
    /// The eve file's path, or the name given for a reader.
    source: String,
    /// Community ID → the flow's alerts.
    flows: HashMap<String, AlertedFlow>,
    num_alerts: usize,
    num_alerts_without_flow_id: usize,
}

/// The alerts of one flow.
#[derive(Clone, Debug)]
struct AlertedFlow {
    /// The alert value (category or signature) that labels the flow.
    value: String,
    /// Whether `value` means an attack under the schema.
    value_is_attack: bool,
    num_alerts: usize,
}

impl AlertIndex {
    /// Reads the alerts of the eve file at `path`, their class values taken
    /// as `schema`'s `[alert_labels]` table says.
    ///
    /// # Errors
    /// [`IngestError::Open`] naming the path, and every error of
    /// [`AlertIndex::read_from`].
    pub fn read(path: &Path, schema: &Schema, max_line_bytes: usize) -> Result<Self, IngestError> {
        let (reader, _) = super::open_telemetry(path, FileFormat::Jsonl)?;
        AlertIndex::read_from(reader, &path.display().to_string(), schema, max_line_bytes)
    }

    /// Reads the alerts of eve JSON lines from `reader`, named `source_name`
    /// in errors. Events other than alerts and blank lines are passed over.
    ///
    /// # Errors
    /// [`IngestError::AlertLabelsNotInSchema`] when `schema` has no
    /// `[alert_labels]` table; [`IngestError::AlertEvent`] naming the file,
    /// line and column for a line that is not a JSON object (or is longer
    /// than `max_line_bytes`), an alert without the class field, or an alert
    /// value the table does not list while it says `unlisted_labels =
    /// "error"`; [`IngestError::Read`] when the input fails.
    pub fn read_from(
        reader: impl Read,
        source_name: &str,
        schema: &Schema,
        max_line_bytes: usize,
    ) -> Result<Self, IngestError> {
        let Some(class_from) = schema.alert_class_from() else {
            return Err(IngestError::AlertLabelsNotInSchema {
                source_name: source_name.to_string(),
            });
        };
        let class_field = class_from.eve_field();
        let event_error = |line: u64, column: usize, detail: String| IngestError::AlertEvent {
            source_name: source_name.to_string(),
            line,
            column: column as u64,
            detail,
        };
        let mut index = AlertIndex {
            source: source_name.to_string(),
            ..AlertIndex::default()
        };
        let mut lines = BoundedLines::new(reader, max_line_bytes, source_name);
        let mut line_bytes: Vec<u8> = Vec::new();
        loop {
            let line = match lines.read_line(&mut line_bytes)? {
                LineRead::End => break,
                LineRead::Overlong(line) => {
                    let detail = format!("line is longer than {} bytes", lines.max_line_bytes());
                    return Err(event_error(line, 1, detail));
                }
                LineRead::Line(line) => line,
            };
            let text = line_bytes.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let event = match serde_json::from_slice::<Value>(text) {
                Ok(Value::Object(object)) => object,
                Ok(_) => {
                    return Err(event_error(line, 1, "expected a json object".to_string()));
                }
                Err(error) => {
                    // serde_json ends its message with the position, which
                    // the error names already.
                    let message = error.to_string();
                    let position = format!(" at line {} column {}", error.line(), error.column());
                    let detail = message.strip_suffix(&position).unwrap_or(&message);
                    let detail = format!("invalid json: {detail}");
                    return Err(event_error(line, error.column(), detail));
                }
            };
            if event.get("event_type").and_then(Value::as_str) != Some("alert") {
                continue;
            }
            index.num_alerts += 1;
            let value = match resolve_json_field(&event, class_field) {
                Some(Value::String(value)) if !value.trim().is_empty() => value.trim(),
                _ => {
                    let detail = format!("an alert without a text {class_field} field");
                    return Err(event_error(line, 1, detail));
                }
            };
            let is_attack = match schema.class_of_label(value) {
                LabelClass::Class(class) => class != 0,
                LabelClass::UnlistedSkip | LabelClass::Skipped => true,
                LabelClass::UnlistedError => {
                    let detail = format!(
                        "alert value {} in {class_field} is not listed in the schema's alert_labels benign or classes; list it there, or leave unlisted_labels at \"attack\"",
                        quoted(value)
                    );
                    return Err(event_error(line, 1, detail));
                }
            };
            let Some(community_id) = community_id_of(&eve_flow_fields(&event)) else {
                index.num_alerts_without_flow_id += 1;
                continue;
            };
            let flow = index
                .flows
                .entry(community_id)
                .or_insert_with(|| AlertedFlow {
                    value: value.to_string(),
                    value_is_attack: is_attack,
                    num_alerts: 0,
                });
            flow.num_alerts += 1;
            if is_attack && !flow.value_is_attack {
                flow.value = value.to_string();
                flow.value_is_attack = true;
            }
        }
        Ok(index)
    }

    /// Returns the number of alert events read.
    pub fn num_alerts(&self) -> usize {
        self.num_alerts
    }

    /// Returns the number of distinct flows (Community IDs) the alerts name.
    pub fn num_alerted_flows(&self) -> usize {
        self.flows.len()
    }
}

/// Returns the flow identity fields of an eve event: `community_id`,
/// `src_ip`, `src_port` (or `icmp_type`), `dest_ip`, `dest_port` (or
/// `icmp_code`) and `proto`.
fn eve_flow_fields(event: &Map<String, Value>) -> AlertFlowFields<'_> {
    let text_of = |name: &str| match resolve_json_field(event, name) {
        Some(Value::String(text)) => Some(Cow::Borrowed(text.as_str())),
        Some(Value::Number(number)) => Some(Cow::Owned(number.to_string())),
        _ => None,
    };
    AlertFlowFields {
        community_id: text_of("community_id"),
        src_ip: text_of("src_ip"),
        src_port: text_of("src_port").or_else(|| text_of("icmp_type")),
        dest_ip: text_of("dest_ip"),
        dest_port: text_of("dest_port").or_else(|| text_of("icmp_code")),
        proto: text_of("proto"),
    }
}

/// Returns a flow's Community ID: its `community_id` field when present,
/// else the one computed from its 5-tuple; `None` when neither is usable.
pub fn community_id_of(fields: &AlertFlowFields<'_>) -> Option<String> {
    if let Some(community_id) = &fields.community_id {
        return Some(community_id.trim().to_string());
    }
    flow_tuple(fields).map(|tuple| community_id_v1(&tuple, 0))
}

/// Returns the 5-tuple of `fields`, or `None` when an address or the
/// protocol is missing or unreadable, or a port that the hash needs is.
fn flow_tuple(fields: &AlertFlowFields<'_>) -> Option<FlowTuple> {
    let src: IpAddr = fields.src_ip.as_deref()?.trim().parse().ok()?;
    let dst: IpAddr = fields.dest_ip.as_deref()?.trim().parse().ok()?;
    let proto = protocol_number(fields.proto.as_deref()?.trim(), src.is_ipv6())?;
    let (src_port, dst_port) = if matches!(proto, TCP | UDP | SCTP | ICMP | ICMPV6) {
        (
            port_number(fields.src_port.as_deref()?)?,
            port_number(fields.dest_port.as_deref()?)?,
        )
    } else {
        (0, 0)
    };
    Some(FlowTuple {
        src,
        dst,
        proto,
        src_port,
        dst_port,
    })
}

/// Returns the IP protocol number of a protocol as sensors write it: Zeek's
/// `tcp`/`udp`/`icmp` (ICMP over IPv6 is ICMPv6), Suricata's
/// `TCP`/`UDP`/`ICMP`/`IPv6-ICMP`, or a number.
fn protocol_number(text: &str, is_ipv6: bool) -> Option<u8> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Some(TCP),
        "udp" => Some(UDP),
        "sctp" => Some(SCTP),
        "icmp" if is_ipv6 => Some(ICMPV6),
        "icmp" => Some(ICMP),
        "ipv6-icmp" | "icmpv6" | "icmp6" => Some(ICMPV6),
        other => other.parse().ok(),
    }
}

/// Returns a port (or ICMP type or code) written in decimal, or in hex with
/// `0x` as Argus writes ICMP's.
fn port_number(text: &str) -> Option<u16> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u16::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The join of one load: which alerted flows the log has, and counts.
pub(super) struct AlertJoin<'a> {
    index: &'a AlertIndex,
    /// Community IDs of the alerts that some flow matched.
    matched: HashSet<&'a str>,
    num_flows_matched: usize,
    num_flows_without_flow_id: usize,
}

impl<'a> AlertJoin<'a> {
    pub(super) fn new(index: &'a AlertIndex) -> Self {
        AlertJoin {
            index,
            matched: HashSet::new(),
            num_flows_matched: 0,
            num_flows_without_flow_id: 0,
        }
    }

    /// Returns the label of the flow `record`: its alert's value and class,
    /// or benign with [`NO_ALERT_LABEL`] when no alert matches it.
    pub(super) fn label_of(
        &mut self,
        schema: &Schema,
        record: &RecordFields<'_>,
    ) -> LabelInfo<'static> {
        let benign = LabelInfo {
            class: LabelClass::Class(0),
            raw_label: Cow::Borrowed(NO_ALERT_LABEL),
        };
        let Some(community_id) = schema
            .alert_flow_fields(record)
            .and_then(|fields| community_id_of(&fields))
        else {
            self.num_flows_without_flow_id += 1;
            return benign;
        };
        let Some((alerted_id, flow)) = self.index.flows.get_key_value(&community_id) else {
            return benign;
        };
        self.num_flows_matched += 1;
        self.matched.insert(alerted_id.as_str());
        LabelInfo {
            class: schema.class_of_label(&flow.value),
            raw_label: Cow::Owned(flow.value.clone()),
        }
    }

    /// Returns the join's report, with the flows per class of `dataset`.
    pub(super) fn report(&self, schema: &Schema, dataset: &Dataset) -> AlertJoinReport {
        let class_names = schema.class_names();
        let mut num_flows_of_class = vec![0; class_names.len()];
        for &class in dataset.classes() {
            num_flows_of_class[class as usize] += 1;
        }
        let num_alerts_not_in_log = self
            .index
            .flows
            .iter()
            .filter(|(community_id, _)| !self.matched.contains(community_id.as_str()))
            .map(|(_, flow)| flow.num_alerts)
            .sum();
        AlertJoinReport {
            alerts_source: self.index.source.clone(),
            num_alerts: self.index.num_alerts,
            num_alerted_flows: self.index.flows.len(),
            num_alerts_without_flow_id: self.index.num_alerts_without_flow_id,
            num_alerts_not_in_log,
            num_flows: dataset.len(),
            num_flows_matched: self.num_flows_matched,
            num_flows_without_flow_id: self.num_flows_without_flow_id,
            flows_per_class: class_names.into_iter().zip(num_flows_of_class).collect(),
        }
    }
}

/// What joining alerts to a flow log did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertJoinReport {
    /// The eve file's path, or the name given for a reader.
    pub alerts_source: String,
    /// Alert events read.
    pub num_alerts: usize,
    /// Distinct flows (Community IDs) of those alerts.
    pub num_alerted_flows: usize,
    /// Alerts with neither a `community_id` nor a usable 5-tuple.
    pub num_alerts_without_flow_id: usize,
    /// Alerts (with a flow identity) whose flow no row of the log is.
    pub num_alerts_not_in_log: usize,
    /// Rows of the log loaded.
    pub num_flows: usize,
    /// Rows whose flow an alert names.
    pub num_flows_matched: usize,
    /// Rows with neither a `community_id` nor a usable 5-tuple (benign).
    pub num_flows_without_flow_id: usize,
    /// Rows loaded per class, by class index: (class name, rows).
    pub flows_per_class: Vec<(String, usize)>,
}

impl fmt::Display for AlertJoinReport {
    /// Writes e.g. `alerts from eve.json: 745 alerts on 631 flows (0 without
    /// a usable community_id or 5-tuple); 366 of 3,512 flows matched (0
    /// without a usable community_id or 5-tuple); 265 alerts on flows not in
    /// the log; flows per class: benign 3,146, attack 366`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_class: Vec<String> = self
            .flows_per_class
            .iter()
            .map(|(name, count)| format!("{name} {}", with_digit_groups(*count)))
            .collect();
        write!(
            formatter,
            "alerts from {}: {} alerts on {} flows ({} without a usable community_id or 5-tuple); \
             {} of {} flows matched ({} without a usable community_id or 5-tuple); \
             {} alerts on flows not in the log; flows per class: {}",
            self.alerts_source,
            with_digit_groups(self.num_alerts),
            with_digit_groups(self.num_alerted_flows),
            with_digit_groups(self.num_alerts_without_flow_id),
            with_digit_groups(self.num_flows_matched),
            with_digit_groups(self.num_flows),
            with_digit_groups(self.num_flows_without_flow_id),
            with_digit_groups(self.num_alerts_not_in_log),
            per_class.join(", ")
        )
    }
}

/// Loads the flow log at `path` through `schema`, labelling each flow by
/// the alerts of `alerts` (read with the same schema).
///
/// # Errors
/// [`IngestError::AlertLabelsNotInSchema`] when the schema has no
/// `[alert_labels]` table, and every error of [`super::load_dataset`].
pub fn load_dataset_with_alert_labels(
    path: &Path,
    schema: &Schema,
    options: &IngestOptions,
    alerts: &AlertIndex,
) -> Result<(Dataset, IngestReport, AlertJoinReport), IngestError> {
    let source_name = path.display().to_string();
    if !schema.has_alert_labels() {
        return Err(IngestError::AlertLabelsNotInSchema { source_name });
    }
    let (reader, format) = super::open_telemetry(path, schema.format())?;
    super::load_with_alerts(reader, &source_name, format, schema, options, alerts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(
        src_ip: &'a str,
        src_port: &'a str,
        dest_ip: &'a str,
        dest_port: &'a str,
        proto: &'a str,
    ) -> AlertFlowFields<'a> {
        AlertFlowFields {
            community_id: None,
            src_ip: Some(src_ip.into()),
            src_port: Some(src_port.into()),
            dest_ip: Some(dest_ip.into()),
            dest_port: Some(dest_port.into()),
            proto: Some(proto.into()),
        }
    }

    #[test]
    fn protocols_are_read_as_zeek_and_suricata_write_them() {
        assert_eq!(protocol_number("tcp", false), Some(TCP));
        assert_eq!(protocol_number("UDP", false), Some(UDP));
        assert_eq!(protocol_number("icmp", false), Some(ICMP));
        // Zeek writes ICMPv6 as "icmp" with IPv6 addresses; Suricata as "IPv6-ICMP".
        assert_eq!(protocol_number("icmp", true), Some(ICMPV6));
        assert_eq!(protocol_number("IPv6-ICMP", true), Some(ICMPV6));
        assert_eq!(protocol_number("47", false), Some(47));
        assert_eq!(protocol_number("gre", false), None);
    }

    #[test]
    fn ports_are_decimal_or_argus_hex() {
        assert_eq!(port_number("8080"), Some(8080));
        assert_eq!(port_number("0x0008"), Some(8));
        assert_eq!(port_number("-"), None);
        assert_eq!(port_number("70000"), None);
    }

    #[test]
    fn the_community_id_field_wins_and_the_five_tuple_is_hashed_per_the_spec() {
        // The specification's first TCP test vector (community-id-spec, baseline).
        let tcp = fields("128.232.110.120", "34855", "66.35.250.204", "80", "tcp");
        assert_eq!(
            community_id_of(&tcp).as_deref(),
            Some("1:LQU9qZlK+B5F3KDmev6m5PMibrg=")
        );
        let with_field = AlertFlowFields {
            community_id: Some(" 1:given= ".into()),
            ..tcp.clone()
        };
        assert_eq!(community_id_of(&with_field).as_deref(), Some("1:given="));
        // Zeek's and Suricata's spellings of one IPv6 flow hash alike.
        let zeek = fields("fe80::d2:4591:568e:c3d1", "5353", "ff02::fb", "5353", "udp");
        let suricata = fields(
            "fe80:0000:0000:0000:00d2:4591:568e:c3d1",
            "5353",
            "ff02:0000:0000:0000:0000:0000:0000:00fb",
            "5353",
            "UDP",
        );
        assert_eq!(community_id_of(&zeek), community_id_of(&suricata));
        let without_port = AlertFlowFields {
            src_port: None,
            ..tcp
        };
        assert_eq!(community_id_of(&without_port), None);
    }
}
