//! How alerts are written: native JSON lines, Elastic Common Schema 8.x, or
//! an OCSF Detection Finding (class 2004). One file per format, chosen in
//! [`new_format`]'s one match.
//!
//! - [`native`]: fedshield's own JSON, the `fedshield detect` verdict line extended.
//! - [`ecs`]: Elastic Common Schema documents.
//! - [`ocsf`]: OCSF Detection Findings.
//! - `shared`: identity columns read by role, severities, the `fedshield` extras.
//! - [`timestamp`]: event times (UNIX seconds or RFC 3339) and detection times.
//!
//! docs/ALERT_FORMATS.md maps every field of each format.

pub mod ecs;
pub mod native;
pub mod ocsf;
mod shared;
pub mod timestamp;

use std::fmt;
use std::str::FromStr;

use crate::alert::Alert;
pub use ecs::{ECS_VERSION, EcsFormat};
pub use native::NativeFormat;
pub use ocsf::{OCSF_VERSION, OcsfFormat};
pub use shared::Severity;

/// The detector's version, as formats name the product that wrote an alert.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// An encoding of [`Alert`] records.
pub trait AlertFormat: Send {
    /// Appends `alert`'s encoding (one JSON object, no line feed) to `out`.
    fn encode(&self, alert: &Alert, out: &mut Vec<u8>);
}

/// The alert formats, as `--alert-format` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertFormatName {
    /// fedshield's own JSON (`native`, or `json`).
    Native,
    /// Elastic Common Schema 8.x (`ecs`).
    Ecs,
    /// OCSF Detection Finding, class 2004 (`ocsf`).
    Ocsf,
}

impl AlertFormatName {
    /// Every format, in the order help texts list them.
    pub const ALL: [AlertFormatName; 3] = [
        AlertFormatName::Native,
        AlertFormatName::Ecs,
        AlertFormatName::Ocsf,
    ];

    /// Returns the format's name as flags spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertFormatName::Native => "native",
            AlertFormatName::Ecs => "ecs",
            AlertFormatName::Ocsf => "ocsf",
        }
    }
}

impl fmt::Display for AlertFormatName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A format name that names no format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown alert format {name:?}: choose native (or json), ecs or ocsf")]
pub struct UnknownAlertFormat {
    pub name: String,
}

impl FromStr for AlertFormatName {
    type Err = UnknownAlertFormat;

    /// Reads `native` (or `json`), `ecs` or `ocsf`, in any case.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.trim().to_ascii_lowercase().as_str() {
            "native" | "json" => Ok(AlertFormatName::Native),
            "ecs" => Ok(AlertFormatName::Ecs),
            "ocsf" => Ok(AlertFormatName::Ocsf),
            _ => Err(UnknownAlertFormat {
                name: name.to_owned(),
            }),
        }
    }
}

/// What stays the same for every alert of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatContext {
    /// The detector host's name (ECS `observer.hostname`, OCSF `metadata.reporter.hostname`).
    pub host_name: String,
    /// The events schema's name (`fedshield.schema`, OCSF `metadata.log_name`,
    /// and part of the rule id).
    pub schema_name: String,
    /// The detector's version (ECS `observer.version`, OCSF `metadata.product.version`).
    pub product_version: String,
}

impl FormatContext {
    /// Returns the context of a run on `host_name` scoring events of `schema_name`.
    pub fn new(host_name: impl Into<String>, schema_name: impl Into<String>) -> FormatContext {
        FormatContext {
            host_name: host_name.into(),
            schema_name: schema_name.into(),
            product_version: PRODUCT_VERSION.to_owned(),
        }
    }

    /// Returns a context for tests: host `detector-test`, schema `zeek_conn`.
    pub fn for_test() -> FormatContext {
        FormatContext::new("detector-test", "zeek_conn")
    }

    /// Returns the id of the detection rule: the schema's model, whatever its
    /// version (ECS `rule.id`, OCSF `finding_info.analytic.uid`).
    pub fn rule_id(&self) -> String {
        format!("fedshield-{}", self.schema_name)
    }
}

/// Returns the format `name` names, for a run described by `context`.
pub fn new_format(name: AlertFormatName, context: &FormatContext) -> Box<dyn AlertFormat> {
    match name {
        AlertFormatName::Native => Box::new(NativeFormat),
        AlertFormatName::Ecs => Box::new(EcsFormat::new(context)),
        AlertFormatName::Ocsf => Box::new(OcsfFormat::new(context)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip_through_display() {
        for name in AlertFormatName::ALL {
            assert_eq!(name.to_string().parse::<AlertFormatName>(), Ok(name));
        }
        assert_eq!("JSON".parse(), Ok(AlertFormatName::Native));
    }

    #[test]
    fn unknown_format_name_lists_the_choices() {
        let error = "cef".parse::<AlertFormatName>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown alert format \"cef\": choose native (or json), ecs or ocsf"
        );
    }
}
