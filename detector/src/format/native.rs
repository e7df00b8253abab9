//! fedshield's own JSON: the verdict line `fedshield detect` has always
//! written (`{"line":2,"score":-4.68,"verdict":"benign","model_version":5}`,
//! plus `category` for multi-class models), extended with where the event
//! came from, the threshold, the echoed columns, the explanation, the
//! repeat count and the detection time. Cheap enough to write for every
//! event, not only alerts: one `serde_json::to_writer` of borrowed values.

use serde::Serialize;

use super::AlertFormat;
use super::shared::{Explanation, FieldMap, ShortFloat};
use super::timestamp::EventTime;
use crate::alert::Alert;

/// The native JSON format.
#[derive(Debug, Clone, Default)]
pub struct NativeFormat;

#[derive(Serialize)]
struct NativeAlert<'a, F: Serialize> {
    line: u64,
    score: ShortFloat,
    verdict: &'static str,
    model_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
    source: &'a str,
    threshold: ShortFloat,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert_fpr: Option<f64>,
    fields: F,
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<Explanation<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    detected_at: EventTime,
}

impl AlertFormat for NativeFormat {
    fn encode(&self, alert: &Alert, out: &mut Vec<u8>) {
        let native = NativeAlert {
            line: alert.line,
            score: ShortFloat(alert.score),
            verdict: alert.verdict(),
            model_version: alert.model_version,
            category: alert.category.as_deref(),
            source: &alert.source,
            threshold: ShortFloat(alert.threshold),
            alert_fpr: alert.alert_fpr,
            fields: FieldMap::new(alert.fields.iter()),
            explanation: (!alert.explanation.is_empty()).then_some(Explanation(&alert.explanation)),
            count: (alert.count != 1).then_some(alert.count),
            detected_at: EventTime::from_unix_ms(alert.detected_unix_ms),
        };
        serde_json::to_writer(out, &native).expect("an alert serializes to json in memory");
    }
}
