//! The sink every format reader feeds: featurizes each record through the
//! schema, keeps good rows in the dataset, and counts and reports skipped ones.

use super::{IngestError, IngestOptions, IngestReport, SkipReason, SkippedRow, StopReason};
use crate::model::data::Dataset;
use crate::schema::{LabelClass, LabelInfo, RecordFields, Schema, quoted};

/// How many skipped rows the all-rows-skipped error quotes.
const NUM_QUOTED_PROBLEMS: usize = 3;

/// Accumulates good rows into the dataset and skipped ones into the report.
pub(super) struct Collector<'a> {
    pub(super) schema: &'a Schema,
    pub(super) options: &'a IngestOptions,
    pub(super) dataset: Dataset,
    pub(super) report: IngestReport,
    /// The first skipped rows, kept even when `max_reported_skipped` is 0.
    pub(super) first_problems: Vec<SkippedRow>,
    /// Reused feature buffer.
    pub(super) features: Vec<f32>,
}

impl<'a> Collector<'a> {
    pub(super) fn new(source_name: &str, schema: &'a Schema, options: &'a IngestOptions) -> Self {
        Collector {
            schema,
            options,
            dataset: Dataset::new(schema.num_features()),
            report: IngestReport {
                source: source_name.to_string(),
                ..IngestReport::default()
            },
            first_problems: Vec::new(),
            features: Vec::with_capacity(schema.num_features()),
        }
    }

    /// Returns true, recording why, when a limit says to read no further row;
    /// `num_bytes_read` is how far into the input the reader is.
    pub(super) fn should_stop(&mut self, num_bytes_read: u64) -> bool {
        if self
            .options
            .max_rows
            .is_some_and(|max_rows| self.report.num_rows >= max_rows)
        {
            self.report.stopped_early = Some(StopReason::MaxRows);
            return true;
        }
        if self
            .options
            .max_bytes
            .is_some_and(|max_bytes| num_bytes_read >= max_bytes)
        {
            self.report.stopped_early = Some(StopReason::MaxBytes);
            return true;
        }
        false
    }

    /// Featurizes one record and adds it, or records why it is skipped.
    pub(super) fn add_record(
        &mut self,
        line: u64,
        fields: &RecordFields<'_>,
    ) -> Result<(), IngestError> {
        match self.schema.featurize_into(fields, &mut self.features) {
            Ok(label) => self.add_features(line, label),
            Err(detail) => {
                self.skip(line, SkipReason::Malformed, detail);
                Ok(())
            }
        }
    }

    fn add_features(&mut self, line: u64, label: Option<LabelInfo<'_>>) -> Result<(), IngestError> {
        let (class, raw_label) = match label {
            Some(LabelInfo {
                class: LabelClass::Class(class),
                raw_label,
            }) => (class, raw_label),
            Some(LabelInfo {
                class: LabelClass::UnlistedSkip,
                raw_label,
            }) => {
                let detail = format!(
                    "label value {} is not listed in the schema (unlisted_labels = \"skip\")",
                    quoted(&raw_label)
                );
                self.skip(line, SkipReason::UnlistedLabel, detail);
                return Ok(());
            }
            Some(LabelInfo {
                class: LabelClass::Skipped,
                raw_label,
            }) => {
                let detail = format!(
                    "label value {} is listed in the label column's skip",
                    quoted(&raw_label)
                );
                self.skip(line, SkipReason::SkippedLabel, detail);
                return Ok(());
            }
            Some(LabelInfo {
                class: LabelClass::UnlistedError,
                raw_label,
            }) => {
                return Err(IngestError::UnlistedLabel {
                    source_name: self.report.source.clone(),
                    line,
                    column: self.schema.label_column_name().to_string(),
                    value: raw_label.into_owned(),
                });
            }
            None if self.options.require_labels => {
                let detail = format!(
                    "label column {:?} is empty or absent",
                    self.schema.label_column_name()
                );
                self.skip(line, SkipReason::MissingLabel, detail);
                return Ok(());
            }
            None => {
                self.report.num_unlabelled += 1;
                (0, "".into())
            }
        };
        self.dataset
            .push_labelled(&self.features, class, &raw_label)
            .map_err(|source| IngestError::Dataset {
                source_name: self.report.source.clone(),
                line,
                source,
            })?;
        self.report.num_rows += 1;
        Ok(())
    }

    pub(super) fn skip(&mut self, line: u64, reason: SkipReason, detail: String) {
        self.report.skipped.count(reason);
        let wants_for_report = self.report.skipped_rows.len() < self.options.max_reported_skipped;
        let wants_for_error = self.first_problems.len() < NUM_QUOTED_PROBLEMS;
        if !wants_for_report && !wants_for_error {
            return;
        }
        let row = SkippedRow {
            source: self.report.source.clone(),
            line,
            reason,
            detail,
        };
        if wants_for_error {
            self.first_problems.push(row.clone());
        }
        if wants_for_report {
            self.report.skipped_rows.push(row);
        }
    }

    pub(super) fn finish(self) -> Result<(Dataset, IngestReport), IngestError> {
        if self.report.num_rows == 0 && self.report.skipped.total() > 0 {
            return Err(IngestError::AllRowsSkipped {
                source_name: self.report.source,
                skipped: self.report.skipped,
                first_problems: self.first_problems,
            });
        }
        if self.report.num_rows == 0 && self.report.stopped_early.is_none() {
            return Err(IngestError::NoRows {
                source_name: self.report.source,
            });
        }
        Ok((self.dataset, self.report))
    }
}
