//! Event identity: columns a detector echoes in every verdict so an alert
//! can be joined back to the event that raised it.
//!
//! A column of kind `identity` is read past by the featurizer (it is not a
//! feature) and echoed; its optional `role` says what it means, named as its
//! Elastic Common Schema field (`role = "source.ip"`). A feature column
//! (numeric or categorical) may carry a `role` too, and is then echoed as
//! well (a Zeek `id.resp_p` is both a feature and the destination port).
//! Output formats place a column by its role, never by its name, so any
//! schema's columns land in the right place.

use serde::Serialize;

/// The meaning of an echoed column, named as its Elastic Common Schema field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum IdentityRole {
    /// When the event happened: UNIX seconds (Zeek `ts`) or an RFC 3339 text.
    #[serde(rename = "@timestamp")]
    Timestamp,
    /// The sensor's id of the event or flow (Zeek `uid`, Suricata `flow_id`).
    #[serde(rename = "event.id")]
    EventId,
    /// The Community ID flow hash (`1:…`).
    #[serde(rename = "network.community_id")]
    CommunityId,
    #[serde(rename = "source.ip")]
    SourceIp,
    #[serde(rename = "source.port")]
    SourcePort,
    #[serde(rename = "destination.ip")]
    DestinationIp,
    #[serde(rename = "destination.port")]
    DestinationPort,
    /// The transport protocol (`tcp`, `udp`, `icmp`).
    #[serde(rename = "network.transport")]
    Transport,
}

impl IdentityRole {
    /// Every role, in the order formats list them.
    pub const ALL: [IdentityRole; 8] = [
        IdentityRole::Timestamp,
        IdentityRole::EventId,
        IdentityRole::CommunityId,
        IdentityRole::SourceIp,
        IdentityRole::SourcePort,
        IdentityRole::DestinationIp,
        IdentityRole::DestinationPort,
        IdentityRole::Transport,
    ];

    /// Returns the ECS field name of this role, as schemas spell it (`role = "source.ip"`).
    pub fn ecs_field(self) -> &'static str {
        match self {
            IdentityRole::Timestamp => "@timestamp",
            IdentityRole::EventId => "event.id",
            IdentityRole::CommunityId => "network.community_id",
            IdentityRole::SourceIp => "source.ip",
            IdentityRole::SourcePort => "source.port",
            IdentityRole::DestinationIp => "destination.ip",
            IdentityRole::DestinationPort => "destination.port",
            IdentityRole::Transport => "network.transport",
        }
    }

    /// Returns the role a schema's `role = "…"` names, if any.
    pub fn from_ecs_field(name: &str) -> Option<IdentityRole> {
        IdentityRole::ALL
            .into_iter()
            .find(|role| role.ecs_field() == name)
    }

    /// Returns the accepted `role` values, quoted and comma-separated, for
    /// error messages.
    pub fn choices() -> String {
        IdentityRole::ALL
            .iter()
            .map(|role| format!("{:?}", role.ecs_field()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A column a detector echoes: an `identity` column, or a feature column
/// with a `role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoedColumn {
    /// The column's name (a Zeek field, csv header name or JSON key path).
    pub name: String,
    pub role: Option<IdentityRole>,
}
