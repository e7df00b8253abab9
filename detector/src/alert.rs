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

impl ModelKindName {
    /// Returns the name as formats write it (`binary_classifier`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKindName::BinaryClassifier => "binary_classifier",
            ModelKindName::MulticlassClassifier => "multiclass_classifier",
            ModelKindName::Autoencoder => "autoencoder",
        }
    }

    /// Returns whether scores are log-odds of attack (classifiers) rather
    /// than reconstruction errors (autoencoders).
    pub fn scores_log_odds(self) -> bool {
        !matches!(self, ModelKindName::Autoencoder)
    }
}

impl Alert {
    /// Returns the verdict as formats write it: `attack` or `benign`.
    pub fn verdict(&self) -> &'static str {
        if self.is_attack { "attack" } else { "benign" }
    }

    /// Returns how likely the event is an attack, in `[0, 1]`, the number
    /// severities and risk scores derive from: for classifiers the model's
    /// probability (the logistic of the log-odds score); for autoencoders
    /// `1 - 2^(-score / threshold)`, which is 0.5 at the threshold and nears
    /// 1 as the reconstruction error grows past it (with no positive
    /// threshold: 1 for attacks, 0 otherwise). A score that is not a number
    /// gives 0.
    pub fn attack_likelihood(&self) -> f64 {
        let likelihood = if self.model_kind.scores_log_odds() {
            1.0 / (1.0 + (-self.score).exp())
        } else if self.threshold > 0.0 {
            1.0 - (-self.score.max(0.0) / self.threshold).exp2()
        } else if self.is_attack {
            1.0
        } else {
            0.0
        };
        if likelihood.is_nan() {
            0.0
        } else {
            likelihood.clamp(0.0, 1.0)
        }
    }

    /// Returns the value of the first echoed field with `role`.
    pub fn role_value(&self, role: IdentityRole) -> Option<&str> {
        self.fields
            .iter()
            .find(|field| field.role == Some(role))
            .and_then(|field| field.value.as_deref())
    }
}
