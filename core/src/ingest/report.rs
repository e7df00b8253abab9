//! What a load kept and skipped, and why.

use std::fmt;

/// Why a row was left out of the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The row does not fit the schema: a wrong field count, a value that is
    /// not a finite number, an empty field without a `missing` value, invalid
    /// json or UTF-8, an overlong line.
    Malformed,
    /// The label field is empty or absent while labels are required.
    MissingLabel,
    /// The label value is one the schema does not list, and its label column
    /// says `unlisted_labels = "skip"`.
    UnlistedLabel,
    /// The label value is one the label column's `skip` lists (e.g.
    /// `Background`).
    SkippedLabel,
}

impl SkipReason {
    /// Returns how a report describes rows skipped for this reason:
    /// `malformed`, `without a label`, `with an unlisted label`.
    pub fn description(self) -> &'static str {
        match self {
            SkipReason::Malformed => "malformed",
            SkipReason::MissingLabel => "without a label",
            SkipReason::UnlistedLabel => "with an unlisted label",
            SkipReason::SkippedLabel => "with a label the schema skips",
        }
    }
}

/// How many rows a load skipped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipCounts {
    pub num_malformed: usize,
    pub num_missing_label: usize,
    pub num_unlisted_label: usize,
    pub num_skipped_label: usize,
}

impl SkipCounts {
    /// Returns the number of skipped rows, all reasons together.
    pub fn total(&self) -> usize {
        self.num_malformed
            + self.num_missing_label
            + self.num_unlisted_label
            + self.num_skipped_label
    }

    pub(super) fn count(&mut self, reason: SkipReason) {
        match reason {
            SkipReason::Malformed => self.num_malformed += 1,
            SkipReason::MissingLabel => self.num_missing_label += 1,
            SkipReason::UnlistedLabel => self.num_unlisted_label += 1,
            SkipReason::SkippedLabel => self.num_skipped_label += 1,
        }
    }
}

impl fmt::Display for SkipCounts {
    /// Writes the non-zero counts, e.g. `10 malformed, 2 without a label`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            (self.num_malformed, SkipReason::Malformed),
            (self.num_missing_label, SkipReason::MissingLabel),
            (self.num_unlisted_label, SkipReason::UnlistedLabel),
            (self.num_skipped_label, SkipReason::SkippedLabel),
        ]
        .into_iter()
        .filter(|&(count, _)| count > 0)
        .map(|(count, reason)| format!("{} {}", with_digit_groups(count), reason.description()))
        .collect();
        formatter.write_str(&parts.join(", "))
    }
}

/// A row left out of the dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRow {
    /// The file path, or the name given for a reader (e.g. "<stdin>").
    pub source: String,
    /// 1-based physical line where the row starts (a csv header is line 1).
    pub line: u64,
    pub reason: SkipReason,
    /// What is wrong, naming the column (and quoting the value, cut short).
    pub detail: String,
}

impl fmt::Display for SkippedRow {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}: {}", self.source, self.line, self.detail)
    }
}

/// Why a load stopped before the end of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    MaxRows,
    MaxBytes,
}

/// What a load read and skipped.
///
/// [`IngestReport::summary`] is one line of counts, fit for a log; its
/// `Display` adds the first skipped rows with what was wrong with each, which
/// quotes field values, for an operator fixing the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// The file path, or the name given for a reader.
    pub source: String,
    /// Rows added to the dataset.
    pub num_rows: usize,
    /// Rows added without a label (only when labels are not required).
    pub num_unlabelled: usize,
    /// Records the schema's `[filter]` left out (not counted as skipped).
    pub num_filtered: usize,
    /// Rows left out, by reason.
    pub skipped: SkipCounts,
    /// The first skipped rows, at most
    /// [`super::IngestOptions::max_reported_skipped`] (all are counted).
    pub skipped_rows: Vec<SkippedRow>,
    /// Set when a limit stopped the load before the end of the input.
    pub stopped_early: Option<StopReason>,
}

impl IngestReport {
    /// Returns one line of counts, e.g. `loaded 12,345 rows from flows.csv
    /// (skipped 12: 10 malformed, 2 without a label)`.
    pub fn summary(&self) -> String {
        let mut summary = format!(
            "loaded {} {} from {}",
            with_digit_groups(self.num_rows),
            rows_noun(self.num_rows),
            self.source
        );
        if self.num_filtered > 0 {
            summary.push_str(&format!(
                " ({} filtered out)",
                with_digit_groups(self.num_filtered)
            ));
        }
        let num_skipped = self.skipped.total();
        if num_skipped > 0 {
            summary.push_str(&format!(
                " (skipped {}: {})",
                with_digit_groups(num_skipped),
                self.skipped
            ));
        }
        if self.num_unlabelled > 0 {
            summary.push_str(&format!(
                ", {} of them without a label",
                with_digit_groups(self.num_unlabelled)
            ));
        }
        match self.stopped_early {
            Some(StopReason::MaxRows) => summary.push_str(", stopped at the row limit"),
            Some(StopReason::MaxBytes) => summary.push_str(", stopped at the byte limit"),
            None => {}
        }
        summary
    }
}

impl fmt::Display for IngestReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.summary())?;
        for row in &self.skipped_rows {
            write!(formatter, "\n  line {}: {}", row.line, row.detail)?;
        }
        let num_not_shown = self.skipped.total().saturating_sub(self.skipped_rows.len());
        if num_not_shown > 0 {
            write!(
                formatter,
                "\n  ... and {} more skipped {}",
                with_digit_groups(num_not_shown),
                rows_noun(num_not_shown)
            )?;
        }
        Ok(())
    }
}

fn rows_noun(count: usize) -> &'static str {
    if count == 1 { "row" } else { "rows" }
}

/// Returns `count` with a comma between groups of three digits: `12,345`.
fn with_digit_groups(count: usize) -> String {
    let digits = count.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_written_with_digit_groups() {
        let written: Vec<String> = [0, 7, 999, 1_000, 12_345, 1_234_567]
            .into_iter()
            .map(with_digit_groups)
            .collect();
        assert_eq!(written, ["0", "7", "999", "1,000", "12,345", "1,234,567"]);
    }

    #[test]
    fn the_summary_names_every_skip_reason_with_its_count() {
        let report = IngestReport {
            source: "flows.csv".to_string(),
            num_rows: 12_345,
            skipped: SkipCounts {
                num_malformed: 10,
                num_missing_label: 0,
                num_unlisted_label: 2,
                num_skipped_label: 3,
            },
            ..IngestReport::default()
        };
        assert_eq!(
            report.summary(),
            "loaded 12,345 rows from flows.csv (skipped 15: 10 malformed, 2 with an unlisted label, 3 with a label the schema skips)"
        );
        let clean = IngestReport {
            source: "one.csv".to_string(),
            num_rows: 1,
            num_unlabelled: 1,
            stopped_early: Some(StopReason::MaxRows),
            ..IngestReport::default()
        };
        assert_eq!(
            clean.summary(),
            "loaded 1 row from one.csv, 1 of them without a label, stopped at the row limit"
        );
    }
}
