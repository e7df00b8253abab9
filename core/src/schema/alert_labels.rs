//! The `[alert_labels]` table: a flow log whose rows carry no label is
//! labelled by Suricata alerts that share a flow's Community ID (the join
//! itself is [`crate::ingest::alert_labels`]).
//!
//! ```toml
//! [alert_labels]
//! src_ip = "id.orig_h"       # the columns of the flow's 5-tuple (defaults below)
//! src_port = "id.orig_p"
//! dest_ip = "id.resp_h"
//! dest_port = "id.resp_p"
//! proto = "proto"
//! community_id = "community_id"  # optional: a column holding the flow's Community ID
//! class_from = "category"    # the alert field that names the class: "category" (the
//!                            # default) or "signature"
//! benign = ["Generic Protocol Command Decode"]  # optional: alert values that do not
//!                            # make a flow an attack
//! unlisted_labels = "attack" # an alert value that benign and classes do not list:
//!                            # "attack" (the default), "error", "benign" or "skip"
//! [alert_labels.classes]     # optional attack classes, numbered 1, 2, ... as for a label column
//! scan = ["Detection of a Network Scan"]
//! ```
//!
//! Why a table and not a label column with a source key: the alert's class is
//! not a field of the flow log, and the join needs up to six columns of the
//! log (the 5-tuple and the Community ID), none of which is a label. A
//! schema with this table has no label column, and the values it maps are
//! alert categories or signatures, with the numbering and the
//! `unlisted_labels` rules of a label column ([`super::labels`]). Its
//! default for `unlisted_labels` is `"attack"`, not `"error"`: any alert is
//! evidence of an attack, and with no `classes` every alert is class 1.
//!
//! Column defaults: for `format = "zeek"` Zeek's `id.orig_h`, `id.orig_p`,
//! `id.resp_h`, `id.resp_p` and `proto`; for `format = "jsonl"` Suricata
//! eve's `src_ip`, `src_port`, `dest_ip`, `dest_port` and `proto` (Zeek JSON
//! logs name Zeek's columns); a csv schema names all five. `community_id`
//! defaults to the column named `community_id` when the schema declares one.
//! Every column named here must be a column of the schema (`kind = "ignore"`
//! for identifiers), so that header and positional formats can find it.
//!
//! A row's Community ID is its `community_id` field when present, else the
//! one computed from its 5-tuple; a row with neither is counted and stays
//! benign. Flows that no alert matches are benign (class 0).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::featurizer::FieldValue;
use super::file::FileFormat;
use super::labels::{ClassTable, LabelKeys, LabelMapping, UnlistedLabels, validate_label};
use super::{RecordFields, Schema};

/// The 5-tuple keys of the table, in [`AlertLabels::tuple_columns`] order.
const TUPLE_KEYS: [&str; 5] = ["src_ip", "src_port", "dest_ip", "dest_port", "proto"];

/// Default 5-tuple columns of a Zeek log (TSV or JSON).
const ZEEK_TUPLE_COLUMNS: [&str; 5] = ["id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto"];

/// Default 5-tuple columns of Suricata eve records.
const EVE_TUPLE_COLUMNS: [&str; 5] = ["src_ip", "src_port", "dest_ip", "dest_port", "proto"];

/// Name of the column `community_id` defaults to.
const COMMUNITY_ID_COLUMN: &str = "community_id";

/// The alert field (under eve's `alert` object) whose value names the class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertClassFrom {
    /// `alert.category`, e.g. `Misc Attack`.
    #[default]
    Category,
    /// `alert.signature`, e.g. `ET SCAN Suspicious inbound to MSSQL port 1433`.
    Signature,
}

impl AlertClassFrom {
    /// Returns the path of the field in an eve alert event.
    pub fn eve_field(self) -> &'static str {
        match self {
            AlertClassFrom::Category => "alert.category",
            AlertClassFrom::Signature => "alert.signature",
        }
    }
}

/// The `[alert_labels]` table as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertLabelsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    src_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    src_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dest_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dest_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    community_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    class_from: Option<AlertClassFrom>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    benign: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unlisted_labels: Option<UnlistedLabels>,
    /// Last, because TOML writes a table after the plain keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    classes: Option<ClassTable>,
}

/// A validated `[alert_labels]` table.
#[derive(Clone, Debug)]
pub(super) struct AlertLabels {
    /// Schema column indices of the source address, source port,
    /// destination address, destination port and protocol.
    tuple_columns: [usize; 5],
    /// Schema column index of the flow's Community ID, if the log has one.
    community_id_column: Option<usize>,
    class_from: AlertClassFrom,
    /// Alert values to classes.
    pub(super) mapping: LabelMapping,
}

/// Validates the table against the schema's columns (`column_index_of`:
/// name to index), appending problems prefixed with `alert_labels`.
pub(super) fn validate_alert_labels(
    file: &AlertLabelsFile,
    format: FileFormat,
    column_index_of: &HashMap<&str, usize>,
    problems: &mut Vec<String>,
) -> Option<AlertLabels> {
    let num_problems_before = problems.len();
    let default_columns = match format {
        FileFormat::Zeek => Some(ZEEK_TUPLE_COLUMNS),
        FileFormat::Jsonl => Some(EVE_TUPLE_COLUMNS),
        FileFormat::Csv => None,
    };
    let written = [
        &file.src_ip,
        &file.src_port,
        &file.dest_ip,
        &file.dest_port,
        &file.proto,
    ];
    let mut tuple_columns = [0; 5];
    for (slot, key) in TUPLE_KEYS.iter().enumerate() {
        let name = match (written[slot], default_columns) {
            (Some(name), _) => name.as_str(),
            (None, Some(defaults)) => defaults[slot],
            (None, None) => {
                problems.push(format!(
                    "alert_labels.{key}: a csv schema must name the column that holds the flow's {key}"
                ));
                continue;
            }
        };
        match column_index_of.get(name) {
            Some(&index) => tuple_columns[slot] = index,
            None => problems.push(format!(
                "alert_labels.{key}: the schema has no column named {name:?}; declare it (kind = \"ignore\" for an identifier)"
            )),
        }
    }
    let community_id_column = match &file.community_id {
        Some(name) => match column_index_of.get(name.as_str()) {
            Some(&index) => Some(index),
            None => {
                problems.push(format!(
                    "alert_labels.community_id: the schema has no column named {name:?}; declare it (kind = \"ignore\")"
                ));
                None
            }
        },
        None => column_index_of.get(COMMUNITY_ID_COLUMN).copied(),
    };
    let mapping = validate_label(
        LabelKeys {
            benign: file.benign.as_deref(),
            benign_required: false,
            classes: file.classes.as_ref(),
            unlisted: Some(file.unlisted_labels.unwrap_or(UnlistedLabels::Attack)),
            attack: None,
            skip: None,
            class_column: None,
        },
        "alert_labels",
        problems,
    );
    if problems.len() > num_problems_before {
        return None;
    }
    Some(AlertLabels {
        tuple_columns,
        community_id_column,
        class_from: file.class_from.unwrap_or_default(),
        mapping,
    })
}

/// The fields of one record that identify its flow, as text (absent,
/// empty and non-text fields are `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertFlowFields<'r> {
    pub community_id: Option<Cow<'r, str>>,
    pub src_ip: Option<Cow<'r, str>>,
    pub src_port: Option<Cow<'r, str>>,
    pub dest_ip: Option<Cow<'r, str>>,
    pub dest_port: Option<Cow<'r, str>>,
    pub proto: Option<Cow<'r, str>>,
}

impl Schema {
    /// Returns true if the schema labels flows from alerts (`[alert_labels]`).
    pub fn has_alert_labels(&self) -> bool {
        self.alert_labels.is_some()
    }

    /// Returns the alert field that names a flow's class, or `None` without
    /// an `[alert_labels]` table.
    pub fn alert_class_from(&self) -> Option<AlertClassFrom> {
        self.alert_labels.as_ref().map(|alerts| alerts.class_from)
    }

    /// Returns the fields of `record` that identify its flow for the alert
    /// join, or `None` without an `[alert_labels]` table.
    pub fn alert_flow_fields<'r>(&self, record: &RecordFields<'r>) -> Option<AlertFlowFields<'r>> {
        let alerts = self.alert_labels.as_ref()?;
        let text_of = |column_index: usize| {
            let column = &self.columns[column_index];
            match record.field(column_index, &column.name).scalar() {
                FieldValue::Text(text) => Some(Cow::Borrowed(text)),
                FieldValue::Number(number) => Some(Cow::Owned(number.to_string())),
                FieldValue::Absent | FieldValue::Bool(_) | FieldValue::Unsupported(_) => None,
            }
        };
        let [src_ip, src_port, dest_ip, dest_port, proto] = alerts.tuple_columns;
        Some(AlertFlowFields {
            community_id: alerts.community_id_column.and_then(text_of),
            src_ip: text_of(src_ip),
            src_port: text_of(src_port),
            dest_ip: text_of(dest_ip),
            dest_port: text_of(dest_port),
            proto: text_of(proto),
        })
    }
}
