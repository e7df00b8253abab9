//! The native format: one flat JSON object per verdict.

use serde::Serialize;

use super::AlertFormat;
use crate::alert::{Alert, Contribution};

/// The native encoding.
pub struct NativeFormat;

#[derive(Serialize)]
struct NativeVerdict<'a> {
    line: u64,
    /// The model's float32 score, printed as such.
    score: f32,
    verdict: &'static str,
    model_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    explanation: &'a Vec<Contribution>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    fields: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "is_one")]
    count: u64,
}

fn is_one(count: &u64) -> bool {
    *count == 1
}

impl AlertFormat for NativeFormat {
    fn encode(&self, alert: &Alert, out: &mut Vec<u8>) {
        let fields = alert
            .fields
            .iter()
            .map(|field| {
                (
                    field.column.clone(),
                    field
                        .value
                        .clone()
                        .map_or(serde_json::Value::Null, serde_json::Value::String),
                )
            })
            .collect();
        let verdict = NativeVerdict {
            line: alert.line,
            score: alert.score as f32,
            verdict: if alert.is_attack { "attack" } else { "benign" },
            model_version: alert.model_version,
            category: alert.category.as_deref(),
            explanation: &alert.explanation,
            fields,
            count: alert.count,
        };
        serde_json::to_writer(out, &verdict).expect("a verdict serializes to json in memory");
    }
}
