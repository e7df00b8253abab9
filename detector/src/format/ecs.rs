//! Elastic Common Schema 8.x documents (`ecs.version` [`ECS_VERSION`]):
//! `event.kind: alert` for attacks (`event` for benign verdicts, when every
//! event is written), the flow's `source.*`, `destination.*` and
//! `network.*`, the model as the `rule` that fired, the detector as the
//! `observer`, and what ECS has no field for under the custom `fedshield`
//! object. Field by field in docs/ALERT_FORMATS.md; `tests/alert_formats.rs`
//! checks every field against the published ECS definitions.

use std::borrow::Cow;

use serde::Serialize;

use super::shared::{AsText, Identity, Severity, extras, rule_name, summary};
use super::timestamp::EventTime;
use super::{AlertFormat, FormatContext};
use crate::alert::Alert;

/// The ECS version documents declare: the one the tests' vendored field
/// definitions are (npm `@elastic/ecs` 8.11.5).
pub const ECS_VERSION: &str = "8.11.0";

/// The Elastic Common Schema format.
#[derive(Debug, Clone)]
pub struct EcsFormat {
    context: FormatContext,
    /// `rule.id`: the detection rule is the schema's model, whatever its version.
    rule_id: String,
}

impl EcsFormat {
    /// Returns the format for a run described by `context`.
    pub fn new(context: &FormatContext) -> EcsFormat {
        EcsFormat {
            rule_id: context.rule_id(),
            context: context.clone(),
        }
    }
}

#[derive(Serialize)]
struct EcsDocument<'a, X: Serialize> {
    #[serde(rename = "@timestamp")]
    timestamp: EventTime,
    ecs: Ecs,
    message: String,
    event: Event<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<Endpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<Endpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<Network<'a>>,
    rule: Rule<'a>,
    observer: Observer<'a>,
    agent: Agent<'a>,
    fedshield: X,
}

#[derive(Serialize)]
struct Ecs {
    version: &'static str,
}

#[derive(Serialize)]
struct Event<'a> {
    kind: &'static str,
    category: [&'static str; 2],
    #[serde(rename = "type")]
    kind_of_event: [&'static str; 1],
    module: &'static str,
    dataset: &'static str,
    created: EventTime,
    risk_score: f64,
    severity: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

#[derive(Serialize)]
struct Endpoint<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

impl<'a> Endpoint<'a> {
    fn of(ip: Option<&'a str>, port: Option<u16>) -> Option<Endpoint<'a>> {
        (ip.is_some() || port.is_some()).then_some(Endpoint { ip, port })
    }
}

#[derive(Serialize)]
struct Network<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    transport: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iana_number: Option<AsText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    community_id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    ip_version: Option<&'static str>,
}

#[derive(Serialize)]
struct Rule<'a> {
    id: &'a str,
    uuid: &'a str,
    name: &'static str,
    version: AsText,
    ruleset: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
}

#[derive(Serialize)]
struct Observer<'a> {
    hostname: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    vendor: &'static str,
    product: &'static str,
    version: &'a str,
}

#[derive(Serialize)]
struct Agent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'a str,
}

impl AlertFormat for EcsFormat {
    fn encode(&self, alert: &Alert, out: &mut Vec<u8>) {
        let identity = Identity::of(alert);
        let detected_at = EventTime::from_unix_ms(alert.detected_unix_ms);
        let severity = Severity::of(alert);
        let transport = identity.transport.as_ref().map(Cow::as_ref);
        let network = (transport.is_some()
            || identity.community_id.is_some()
            || identity.ip_version().is_some())
        .then(|| Network {
            transport,
            iana_number: identity
                .iana_number()
                .map(|number| AsText(u64::from(number))),
            community_id: identity.community_id,
            ip_version: identity.ip_version(),
        });
        let document = EcsDocument {
            timestamp: identity.time.unwrap_or(detected_at),
            ecs: Ecs {
                version: ECS_VERSION,
            },
            message: summary(alert),
            event: Event {
                kind: if alert.is_attack { "alert" } else { "event" },
                category: ["network", "intrusion_detection"],
                kind_of_event: ["info"],
                module: "fedshield",
                dataset: "fedshield.alert",
                created: detected_at,
                risk_score: (alert.attack_likelihood() * 10_000.0).round() / 100.0,
                severity: severity.id(),
                id: identity.event_id,
            },
            source: Endpoint::of(
                identity.source_ip.map(|(text, _)| text),
                identity.source_port,
            ),
            destination: Endpoint::of(
                identity.destination_ip.map(|(text, _)| text),
                identity.destination_port,
            ),
            network,
            rule: Rule {
                id: &self.rule_id,
                uuid: &alert.model_sha256,
                name: rule_name(alert),
                version: AsText(alert.model_version),
                ruleset: "fedshield",
                category: alert.category.as_deref(),
            },
            observer: Observer {
                hostname: &self.context.host_name,
                kind: "ids",
                vendor: "fedshield",
                product: "fedshield",
                version: &self.context.product_version,
            },
            agent: Agent {
                kind: "fedshield-detector",
                version: &self.context.product_version,
            },
            fedshield: extras(alert, &identity, &self.context.schema_name),
        };
        serde_json::to_writer(out, &document).expect("an alert serializes to json in memory");
    }
}
