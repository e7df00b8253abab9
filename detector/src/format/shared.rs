//! What the ECS and OCSF formats share: an alert's identity read into typed
//! values (addresses that are addresses, ports that are ports), the
//! severity bands, and the `fedshield` object of the data neither standard
//! has a field for. Every type borrows from the [`Alert`], so encoding
//! allocates nothing beyond its output.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::timestamp::EventTime;
use crate::alert::{Alert, Contribution, EchoedField, IdentityRole, ModelKindName};

/// A float written as its shortest text: scores come from `f32`s, and
/// `-4.68f32` written as an `f64` would read `-4.679999828338623`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShortFloat(pub f64);

impl Serialize for ShortFloat {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let narrowed = self.0 as f32;
        if self.0.is_finite() && f64::from(narrowed) == self.0 {
            serializer.serialize_f32(narrowed)
        } else {
            serializer.serialize_f64(self.0)
        }
    }
}

/// Echoed columns as one JSON object, `{column: value}`, null for absent values.
pub(crate) struct FieldMap<'a, I> {
    fields: I,
    _alert: std::marker::PhantomData<&'a Alert>,
}

impl<'a, I> FieldMap<'a, I>
where
    I: Iterator<Item = &'a EchoedField> + Clone,
{
    pub(crate) fn new(fields: I) -> Self {
        FieldMap {
            fields,
            _alert: std::marker::PhantomData,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.fields.clone().next().is_none()
    }
}

impl<'a, I> Serialize for FieldMap<'a, I>
where
    I: Iterator<Item = &'a EchoedField> + Clone,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for field in self.fields.clone() {
            map.serialize_entry(&field.column, &field.value)?;
        }
        map.end()
    }
}

/// An alert's explanation, `[{column, value, weight}]`, weights written short.
pub(crate) struct Explanation<'a>(pub &'a [Contribution]);

impl Serialize for Explanation<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Item<'c> {
            column: &'c str,
            value: Option<&'c str>,
            weight: ShortFloat,
        }
        let mut items = serializer.serialize_seq(Some(self.0.len()))?;
        for contribution in self.0 {
            items.serialize_element(&Item {
                column: &contribution.column,
                value: contribution.value.as_deref(),
                weight: ShortFloat(contribution.weight),
            })?;
        }
        items.end()
    }
}

/// An alert's identity columns read by role, each kept only when its value
/// fits the standard field (an IP address, a port number, a time); the
/// columns that were not placed stay in `fedshield.fields`.
pub(crate) struct Identity<'a> {
    alert: &'a Alert,
    /// The index in `alert.fields` of the column placed for each role of
    /// [`IdentityRole::ALL`], in that order.
    placed: [Option<usize>; IdentityRole::ALL.len()],
    pub timestamp_text: Option<&'a str>,
    pub time: Option<EventTime>,
    pub event_id: Option<&'a str>,
    pub community_id: Option<&'a str>,
    pub source_ip: Option<(&'a str, IpAddr)>,
    pub source_port: Option<u16>,
    pub destination_ip: Option<(&'a str, IpAddr)>,
    pub destination_port: Option<u16>,
    /// The transport protocol in lower case, as ECS and OCSF want it.
    pub transport: Option<Cow<'a, str>>,
}

impl<'a> Identity<'a> {
    /// Reads the first column of each role whose value fits it.
    pub(crate) fn of(alert: &'a Alert) -> Identity<'a> {
        let mut identity = Identity {
            alert,
            placed: [None; IdentityRole::ALL.len()],
            timestamp_text: None,
            time: None,
            event_id: None,
            community_id: None,
            source_ip: None,
            source_port: None,
            destination_ip: None,
            destination_port: None,
            transport: None,
        };
        for (index, field) in alert.fields.iter().enumerate() {
            let (Some(role), Some(value)) = (field.role, field.value.as_deref()) else {
                continue;
            };
            let role_index = role_index(role);
            if identity.placed[role_index].is_some() {
                continue;
            }
            let value = value.trim();
            let fits = match role {
                IdentityRole::Timestamp => EventTime::parse(value)
                    .map(|time| {
                        identity.time = Some(time);
                        identity.timestamp_text = Some(value);
                    })
                    .is_some(),
                IdentityRole::EventId => {
                    set_text(&mut identity.event_id, value);
                    identity.event_id.is_some()
                }
                IdentityRole::CommunityId => {
                    set_text(&mut identity.community_id, value);
                    identity.community_id.is_some()
                }
                IdentityRole::SourceIp => {
                    identity.source_ip = parse_ip(value);
                    identity.source_ip.is_some()
                }
                IdentityRole::DestinationIp => {
                    identity.destination_ip = parse_ip(value);
                    identity.destination_ip.is_some()
                }
                IdentityRole::SourcePort => {
                    identity.source_port = value.parse().ok();
                    identity.source_port.is_some()
                }
                IdentityRole::DestinationPort => {
                    identity.destination_port = value.parse().ok();
                    identity.destination_port.is_some()
                }
                IdentityRole::Transport => {
                    identity.transport = transport(value);
                    identity.transport.is_some()
                }
            };
            if fits {
                identity.placed[role_index] = Some(index);
            }
        }
        identity
    }

    /// Returns the columns not placed in a standard field: those without a
    /// role, with an absent value or one that does not fit their role, and
    /// repeats of a role already placed.
    pub(crate) fn unplaced(&self) -> FieldMap<'a, impl Iterator<Item = &'a EchoedField> + Clone> {
        let placed = self.placed;
        FieldMap::new(
            self.alert
                .fields
                .iter()
                .enumerate()
                .filter(move |(index, _)| !placed.contains(&Some(*index)))
                .map(|(_, field)| field),
        )
    }

    /// Returns `ipv4` or `ipv6`, by the source address (else the destination's).
    pub(crate) fn ip_version(&self) -> Option<&'static str> {
        let (_, address) = self.source_ip.or(self.destination_ip)?;
        Some(if address.is_ipv4() { "ipv4" } else { "ipv6" })
    }

    /// Returns the IANA protocol number of the transport, when it is a known one.
    pub(crate) fn iana_number(&self) -> Option<u8> {
        match self.transport.as_deref()? {
            "icmp" => Some(1),
            "tcp" => Some(6),
            "udp" => Some(17),
            "ipv6-icmp" | "icmpv6" => Some(58),
            "sctp" => Some(132),
            _ => None,
        }
    }
}

fn role_index(role: IdentityRole) -> usize {
    IdentityRole::ALL
        .iter()
        .position(|candidate| *candidate == role)
        .expect("IdentityRole::ALL lists every role")
}

fn set_text<'a>(slot: &mut Option<&'a str>, value: &'a str) {
    if !value.is_empty() {
        *slot = Some(value);
    }
}

fn parse_ip(value: &str) -> Option<(&str, IpAddr)> {
    value.parse().ok().map(|address| (value, address))
}

/// Returns a transport name in lower case, or `None` for one that is empty
/// or holds characters no protocol name has.
fn transport(value: &str) -> Option<Cow<'_, str>> {
    let is_name = !value.is_empty()
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !is_name {
        return None;
    }
    if value.bytes().any(|byte| byte.is_ascii_uppercase()) {
        Some(Cow::Owned(value.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(value))
    }
}

/// The severity of an alert, with OCSF's `severity_id` numbers, which the
/// ECS format writes as `event.severity` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Informational = 1,
    Low = 2,
    Medium = 3,
    High = 4,
    Critical = 5,
}

impl Severity {
    /// Returns the severity of `alert`: informational for benign verdicts;
    /// for attacks by [`Alert::attack_likelihood`]: low below 0.5, medium
    /// below 0.8, high below 0.95, critical from 0.95.
    pub fn of(alert: &Alert) -> Severity {
        if !alert.is_attack {
            return Severity::Informational;
        }
        let likelihood = alert.attack_likelihood();
        if likelihood < 0.5 {
            Severity::Low
        } else if likelihood < 0.8 {
            Severity::Medium
        } else if likelihood < 0.95 {
            Severity::High
        } else {
            Severity::Critical
        }
    }

    /// Returns OCSF's `severity_id`.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// Returns OCSF's caption of the severity (`severity`).
    pub fn caption(self) -> &'static str {
        match self {
            Severity::Informational => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

/// The model that produced a verdict.
#[derive(Serialize)]
pub(crate) struct ModelInfo<'a> {
    pub version: u64,
    pub sha256: &'a str,
    pub kind: &'static str,
}

/// What neither ECS nor OCSF has a field for: `fedshield.*` in ECS,
/// `unmapped` in OCSF.
#[derive(Serialize)]
pub(crate) struct Extras<'a, F: Serialize> {
    pub verdict: &'static str,
    pub score: ShortFloat,
    pub threshold: ShortFloat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_fpr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<&'a str>,
    pub count: u64,
    pub model: ModelInfo<'a>,
    pub schema: &'a str,
    /// The events input and the event's line in it.
    pub source: &'a str,
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<F>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation<'a>>,
}

/// Collects `alert`'s extras, with the columns `identity` did not place.
pub(crate) fn extras<'a>(
    alert: &'a Alert,
    identity: &Identity<'a>,
    schema: &'a str,
) -> Extras<'a, FieldMap<'a, impl Iterator<Item = &'a EchoedField> + Clone>> {
    let unplaced = identity.unplaced();
    Extras {
        verdict: alert.verdict(),
        score: ShortFloat(alert.score),
        threshold: ShortFloat(alert.threshold),
        alert_fpr: alert.alert_fpr,
        category: alert.category.as_deref(),
        count: alert.count,
        model: ModelInfo {
            version: alert.model_version,
            sha256: &alert.model_sha256,
            kind: alert.model_kind.as_str(),
        },
        schema,
        source: &alert.source,
        line: alert.line,
        fields: (!unplaced.is_empty()).then_some(unplaced),
        explanation: (!alert.explanation.is_empty()).then_some(Explanation(&alert.explanation)),
    }
}

/// A `u64` written as a JSON string (ECS `keyword`, OCSF `string_t` fields).
pub(crate) struct AsText(pub u64);

impl Serialize for AsText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// Writes the one-line summary formats give as `message`.
pub(crate) fn summary(alert: &Alert) -> String {
    match (alert.is_attack, alert.category.as_deref()) {
        (true, Some(category)) => format!(
            "fedshield model version {} flagged an attack ({category})",
            alert.model_version
        ),
        (true, None) => format!(
            "fedshield model version {} flagged an attack",
            alert.model_version
        ),
        (false, _) => format!(
            "fedshield model version {} found the event benign",
            alert.model_version
        ),
    }
}

/// Returns the name of the rule (ECS) or analytic (OCSF) that flagged the
/// event: what kind of model scored it.
pub(crate) fn rule_name(alert: &Alert) -> &'static str {
    match alert.model_kind {
        ModelKindName::BinaryClassifier => "fedshield binary classifier",
        ModelKindName::MulticlassClassifier => "fedshield multi-class classifier",
        ModelKindName::Autoencoder => "fedshield autoencoder anomaly detector",
    }
}
