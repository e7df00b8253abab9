//! What the detector says about one event: the [`Alert`] record that output
//! formats encode (native JSON lines, ECS, OCSF) and sinks deliver.
//!
//! An alert carries the event's identity (the schema's `identity` columns and
//! `--include-fields`, by their roles: timestamp, flow id, Community ID,
//! 5-tuple), the verdict with the model version and threshold that produced
//! it, a repeat count when a suppression window rolled repeats into it, and
//! for attacks the top contributing input columns.

use serde::Serialize;

pub use fedshield_core::schema::IdentityRole;

/// One column echoed from the event: its schema name, its role if it has
/// one, and its value as the event wrote it (`None` when the event left it
/// out or unset).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EchoedField {
    pub column: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<IdentityRole>,
    pub value: Option<String>,
}

/// One input column's share of why an event was flagged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contribution {
    /// The schema column.
    pub column: String,
    /// The event's value of that column (for a one-hot slot, the category
    /// the slot stands for: `service = ssh`).
    pub value: Option<String>,
    /// Its contribution: gradient × input on the attack logit for
    /// classifiers, the column's squared reconstruction error for
    /// autoencoders. Larger means more to blame.
    pub weight: f64,
}

/// The kind of model that scored an event, as formats name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKindName {
    BinaryClassifier,
    MulticlassClassifier,
    Autoencoder,
}

/// The verdict on one event, with everything a SIEM needs to act on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The events input (a file path, or `-` for standard input).
    pub source: String,
    /// The event's line number in its input (1-based).
    pub line: u64,
    /// The model's score: log-odds of attack for classifiers, mean squared
    /// reconstruction error for autoencoders.
    pub score: f64,
    /// The threshold the score was compared with.
    pub threshold: f64,
    /// The false-positive rate the threshold was calibrated for
    /// (`--alert-fpr`), when it came from the model card.
    pub alert_fpr: Option<f64>,
    /// Whether the score is at or above the threshold.
    pub is_attack: bool,
    /// A multi-class classifier's most likely attack class.
    pub category: Option<String>,
    pub model_version: u64,
    /// The model version's sha256 (hex), as its card gives it.
    pub model_sha256: String,
    pub model_kind: ModelKindName,
    /// The identity columns and `--include-fields`, in schema order.
    pub fields: Vec<EchoedField>,
    /// Top contributing columns, largest first; empty for benign events.
    pub explanation: Vec<Contribution>,
    /// Events this alert stands for: 1, or more when a suppression window
    /// rolled repeats of the same key into it.
    pub count: u64,
    /// When the detector scored the event (UNIX milliseconds).
    pub detected_unix_ms: u64,
}

impl Alert {
    /// Returns the value of the first echoed field with `role`.
    pub fn role_value(&self, role: IdentityRole) -> Option<&str> {
        self.fields
            .iter()
            .find(|field| field.role == Some(role))
            .and_then(|field| field.value.as_deref())
    }
}
