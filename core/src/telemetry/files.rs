//! Writing synthetic flows as csv or JSON-lines files.

use std::io::Write;

use super::{FLOW_COLUMNS, FlowRecord};

/// Writes flows as CSV with a header line.
///
/// # Errors
/// The writer's I/O error.
pub fn write_csv(
    writer: impl Write,
    flows: impl IntoIterator<Item = FlowRecord>,
) -> std::io::Result<()> {
    let mut csv_writer = csv::Writer::from_writer(writer);
    csv_writer.write_record(FLOW_COLUMNS)?;
    for flow in flows {
        csv_writer.write_record(flow.fields())?;
    }
    csv_writer.flush()
}

/// Writes flows as JSON lines.
///
/// # Errors
/// The writer's I/O error.
pub fn write_jsonl(
    mut writer: impl Write,
    flows: impl IntoIterator<Item = FlowRecord>,
) -> std::io::Result<()> {
    for flow in flows {
        serde_json::to_writer(&mut writer, &flow.to_json())?;
        writer.write_all(b"\n")?;
    }
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{IngestOptions, load_dataset};
    use crate::telemetry::{FlowGenerator, OrgProfile, synthetic_dataset, synthetic_flows_schema};

    #[test]
    fn written_csv_and_jsonl_load_back_through_the_schema_to_the_same_features() {
        let dir = tempfile::tempdir().unwrap();
        let flows = FlowGenerator::new(OrgProfile::for_org(2), 11).flows(300);
        let csv_path = dir.path().join("flows.csv");
        write_csv(std::fs::File::create(&csv_path).unwrap(), flows.clone()).unwrap();
        let jsonl_path = dir.path().join("flows.jsonl");
        write_jsonl(std::fs::File::create(&jsonl_path).unwrap(), flows).unwrap();
        let schema = synthetic_flows_schema();
        let (from_csv, csv_report) =
            load_dataset(&csv_path, &schema, &IngestOptions::default()).unwrap();
        let (from_jsonl, jsonl_report) =
            load_dataset(&jsonl_path, &schema, &IngestOptions::default()).unwrap();
        assert_eq!(
            (csv_report.skipped.total(), jsonl_report.skipped.total()),
            (0, 0)
        );
        assert_eq!(from_csv.len(), 300);
        assert_eq!(from_csv.labels(), from_jsonl.labels());
        for (a, b) in from_csv.features().iter().zip(from_jsonl.features()) {
            assert!((a - b).abs() < 1e-5);
        }
        let in_memory = synthetic_dataset(OrgProfile::for_org(2), 300, 11);
        assert_eq!(in_memory.classes(), from_csv.classes());
    }
}
