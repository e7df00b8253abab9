//! How alerts are written: native JSON lines, Elastic Common Schema 8.x, or
//! an OCSF Detection Finding (class 2004). One file per format, chosen in
//! [`AlertFormatName`]'s one match.

use crate::alert::Alert;

/// An encoding of [`Alert`] records.
pub trait AlertFormat: Send {
    /// Appends `alert`'s encoding (one JSON object, no line feed) to `out`.
    fn encode(&self, alert: &Alert, out: &mut Vec<u8>);
}

pub mod native;
