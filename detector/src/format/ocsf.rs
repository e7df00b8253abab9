//! OCSF Detection Finding events (class 2004, category 2 "Findings", OCSF
//! [`OCSF_VERSION`]): a `Create` finding per alert, its severity and
//! confidence from the model's likelihood of attack, the model as the
//! finding's `analytic` (type "Learning (ML/DL)"), the flow as evidence
//! (`src_endpoint`, `dst_endpoint`, `connection_info`), and the rest under
//! `unmapped`. Field by field in docs/ALERT_FORMATS.md;
//! `tests/alert_formats.rs` validates every encoding against the published
//! JSON Schema of the class.

use std::borrow::Cow;

use serde::Serialize;

use super::shared::{AsText, Identity, Severity, extras, rule_name, summary};
use super::{AlertFormat, FormatContext};
use crate::alert::Alert;

/// The OCSF version findings declare (`metadata.version`): the one the
/// tests' vendored JSON Schema is (PyPI `ocsf-json-schema` 1.2.0).
pub const OCSF_VERSION: &str = "1.8.0";

/// Detection Finding.
const CLASS_UID: u32 = 2004;
/// Findings.
const CATEGORY_UID: u32 = 2;
/// Create: a new finding per alert.
const ACTIVITY_CREATE: u32 = 1;
/// Status New.
const STATUS_NEW: u8 = 1;
/// Analytic type "Learning (ML/DL)".
const ANALYTIC_LEARNING: u8 = 4;
/// Connection direction Unknown: the detector does not know the network's inside.
const DIRECTION_UNKNOWN: u8 = 0;

/// The OCSF Detection Finding format.
#[derive(Debug, Clone)]
pub struct OcsfFormat {
    context: FormatContext,
    /// `finding_info.analytic.uid`, the same as ECS `rule.id`.
    analytic_uid: String,
}

impl OcsfFormat {
    /// Returns the format for a run described by `context`.
    pub fn new(context: &FormatContext) -> OcsfFormat {
        OcsfFormat {
            analytic_uid: context.rule_id(),
            context: context.clone(),
        }
    }
}

#[derive(Serialize)]
struct DetectionFinding<'a, X: Serialize> {
    activity_id: u32,
    activity_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    class_uid: u32,
    class_name: &'static str,
    type_uid: u32,
    type_name: &'static str,
    severity_id: u8,
    severity: &'static str,
    status_id: u8,
    status: &'static str,
    confidence_id: u8,
    confidence: &'static str,
    confidence_score: u8,
    is_alert: bool,
    time: i64,
    count: u64,
    message: &'a str,
    metadata: Metadata<'a>,
    finding_info: FindingInfo<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidences: Option<[Evidence<'a>; 1]>,
    unmapped: X,
}

#[derive(Serialize)]
struct Metadata<'a> {
    version: &'static str,
    product: Product<'a>,
    log_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_time: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_event_uid: Option<&'a str>,
    reporter: Reporter<'a>,
}

#[derive(Serialize)]
struct Product<'a> {
    name: &'static str,
    vendor_name: &'static str,
    version: &'a str,
}

#[derive(Serialize)]
struct Reporter<'a> {
    hostname: &'a str,
}

#[derive(Serialize)]
struct FindingInfo<'a> {
    uid: String,
    title: &'a str,
    types: [&'a str; 1],
    analytic: Analytic<'a>,
    created_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seen_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_time: Option<i64>,
    data_sources: [&'a str; 1],
}

#[derive(Serialize)]
struct Analytic<'a> {
    name: &'static str,
    uid: &'a str,
    type_id: u8,
    #[serde(rename = "type")]
    kind: &'static str,
    version: AsText,
    algorithm: &'static str,
}

#[derive(Serialize)]
struct Evidence<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    src_endpoint: Option<NetworkEndpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_endpoint: Option<NetworkEndpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_info: Option<ConnectionInfo<'a>>,
}

/// An endpoint is written only with its address: OCSF requires one of its
/// identifying attributes (`ip`, `uid`, `name`, ...), and a port alone is none.
#[derive(Serialize)]
struct NetworkEndpoint<'a> {
    ip: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

#[derive(Serialize)]
struct ConnectionInfo<'a> {
    direction_id: u8,
    direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol_num: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    community_uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
}

impl AlertFormat for OcsfFormat {
    fn encode(&self, alert: &Alert, out: &mut Vec<u8>) {
        let identity = Identity::of(alert);
        let severity = Severity::of(alert);
        let likelihood = alert.attack_likelihood();
        let (confidence_id, confidence) = confidence(likelihood);
        let event_unix_ms = identity.time.map(|time| time.unix_ms());
        let message = summary(alert);
        let finding_uid = match identity.event_id {
            Some(event_id) => format!("fedshield:{}:{event_id}", alert.model_version),
            None => format!(
                "fedshield:{}:{}:{}",
                alert.model_version, alert.source, alert.line
            ),
        };
        let finding_type = match (&alert.category, alert.model_kind.scores_log_odds()) {
            (Some(category), _) => category.as_str(),
            (None, true) => "Network Attack",
            (None, false) => "Network Anomaly",
        };
        let src_endpoint = identity.source_ip.map(|(ip, _)| NetworkEndpoint {
            ip,
            port: identity.source_port,
        });
        let dst_endpoint = identity.destination_ip.map(|(ip, _)| NetworkEndpoint {
            ip,
            port: identity.destination_port,
        });
        let transport = identity.transport.as_ref().map(Cow::as_ref);
        let connection_info =
            (transport.is_some() || identity.community_id.is_some() || identity.event_id.is_some())
                .then(|| ConnectionInfo {
                    direction_id: DIRECTION_UNKNOWN,
                    direction: "Unknown",
                    protocol_name: transport,
                    protocol_num: identity.iana_number(),
                    community_uid: identity.community_id,
                    uid: identity.event_id,
                });
        let evidences =
            (src_endpoint.is_some() || dst_endpoint.is_some() || connection_info.is_some())
                .then_some([Evidence {
                    src_endpoint,
                    dst_endpoint,
                    connection_info,
                }]);
        let finding = DetectionFinding {
            activity_id: ACTIVITY_CREATE,
            activity_name: "Create",
            category_uid: CATEGORY_UID,
            category_name: "Findings",
            class_uid: CLASS_UID,
            class_name: "Detection Finding",
            type_uid: CLASS_UID * 100 + ACTIVITY_CREATE,
            type_name: "Detection Finding: Create",
            severity_id: severity.id(),
            severity: severity.caption(),
            status_id: STATUS_NEW,
            status: "New",
            confidence_id,
            confidence,
            confidence_score: (likelihood * 100.0).round() as u8,
            is_alert: alert.is_attack,
            time: i64::try_from(alert.detected_unix_ms).unwrap_or(i64::MAX),
            count: alert.count,
            message: &message,
            metadata: Metadata {
                version: OCSF_VERSION,
                product: Product {
                    name: "fedshield",
                    vendor_name: "fedshield",
                    version: &self.context.product_version,
                },
                log_name: &self.context.schema_name,
                original_time: identity.timestamp_text,
                original_event_uid: identity.event_id,
                reporter: Reporter {
                    hostname: &self.context.host_name,
                },
            },
            finding_info: FindingInfo {
                uid: finding_uid,
                title: &message,
                types: [finding_type],
                analytic: Analytic {
                    name: rule_name(alert),
                    uid: &self.analytic_uid,
                    type_id: ANALYTIC_LEARNING,
                    kind: "Learning (ML/DL)",
                    version: AsText(alert.model_version),
                    algorithm: alert.model_kind.as_str(),
                },
                created_time: i64::try_from(alert.detected_unix_ms).unwrap_or(i64::MAX),
                first_seen_time: event_unix_ms,
                last_seen_time: event_unix_ms,
                data_sources: [alert.source.as_str()],
            },
            evidences,
            unmapped: extras(alert, &identity, &self.context.schema_name),
        };
        serde_json::to_writer(out, &finding).expect("a finding serializes to json in memory");
    }
}

/// Returns OCSF's `confidence_id` and caption for a likelihood of attack:
/// low below 0.5, medium below 0.8, high from 0.8 (of a benign verdict too:
/// the confidence is in the likelihood, which is then low).
fn confidence(likelihood: f64) -> (u8, &'static str) {
    if likelihood < 0.5 {
        (1, "Low")
    } else if likelihood < 0.8 {
        (2, "Medium")
    } else {
        (3, "High")
    }
}
