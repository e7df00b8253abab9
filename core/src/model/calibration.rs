//! Alert thresholds calibrated to the false-positive rates operators think
//! in: for each of [`STANDARD_ALERT_FPRS`], the score threshold that flags
//! at most that fraction of a set of benign rows, and the fraction it
//! actually flags there. The coordinator computes one on its evaluation
//! set's benign rows for every version it publishes, `fedshield train` on
//! its test split's; both write it into the model card, where
//! `fedshield detect --alert-fpr` finds it.
//!
//! # The rule
//! Scores are those of [`crate::model::inference::score_rows`] (classifiers:
//! log-odds of attack; autoencoders: mean squared reconstruction error), and
//! an event is an alert when `score >= threshold`, as everywhere in fedshield.
//! For `n` benign scores sorted from highest to lowest, `s[0] >= s[1] >= …`,
//! and a target false-positive rate `f`, let `k = ⌊n·f⌋`, the number of
//! benign alerts the target allows. The threshold is the smallest float32
//! value `t` with at most `k` benign scores `>= t`: the float32 just above
//! `s[k]`, the `(k+1)`-th highest score (`f32::next_up`). So:
//!
//! - the realized rate, `|{i : s[i] >= t}| / n`, never exceeds `f`;
//! - ties are never split: when `s[k]` equals higher scores, all of them
//!   fall below `t`, and the realized rate is below `k / n` (with every
//!   benign score equal, it is 0);
//! - a target the data cannot resolve is omitted: when `n·f < 1` (fewer than
//!   `1/f` benign rows: 1,000 for 0.001, 100 for 0.01, 20 for 0.05) the rule
//!   would allow no benign alert at all, and its threshold would only say
//!   where the highest benign score happened to fall. `num_benign` stays in
//!   the calibration so that a reader can judge the rest: with `n` rows a
//!   rate is known to about `sqrt(f(1−f)/n)`;
//! - a target whose `s[k]` is `+inf` is omitted too (no threshold meets it);
//! - a NaN score refuses the whole calibration ([`CoreError::NanScore`]).

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::model::data::{BENIGN, Dataset};
use crate::model::inference::score_rows;
use crate::model::weights::ModelWeights;

/// The false-positive rates every calibration is computed for, and the only
/// values `fedshield detect --alert-fpr` accepts.
pub const STANDARD_ALERT_FPRS: [f64; 3] = [0.001, 0.01, 0.05];

/// Relative difference within which a rate counts as a standard target
/// (`0.01`, `1e-2` and `0.0100000000001` are all 1%).
const FPR_MATCH_TOLERANCE: f64 = 1e-9;

/// Alert thresholds calibrated on a set of benign rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdCalibration {
    /// The data the thresholds were computed on: "coordinator evaluation
    /// set", "train test split", …
    pub source: String,
    /// Benign rows scored. A rate is known to about `sqrt(f(1−f)/num_benign)`.
    pub num_benign: u64,
    /// One entry per standard target the data resolves, in the order of
    /// [`STANDARD_ALERT_FPRS`]; targets with `num_benign · target < 1` are omitted.
    pub thresholds: Vec<CalibratedThreshold>,
}

/// The threshold for one target false-positive rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibratedThreshold {
    /// The false-positive rate asked for, one of [`STANDARD_ALERT_FPRS`].
    pub target_fpr: f64,
    /// Scores at or above it are alerts.
    pub threshold: f64,
    /// Benign rows of the calibration data at or above the threshold.
    pub num_benign_alerts: u64,
    /// `num_benign_alerts / num_benign`: never above `target_fpr`.
    pub realized_fpr: f64,
}

/// Returns the standard target `fpr` stands for (within a relative 1e-9),
/// or `None` when it is none of [`STANDARD_ALERT_FPRS`].
pub fn standard_alert_fpr(fpr: f64) -> Option<f64> {
    STANDARD_ALERT_FPRS
        .into_iter()
        .find(|&target| (fpr - target).abs() <= FPR_MATCH_TOLERANCE * target)
}

impl ThresholdCalibration {
    /// Returns the thresholds for [`STANDARD_ALERT_FPRS`] on `benign_scores`
    /// by the rule of the [module documentation](self), or `None` without
    /// any benign score.
    ///
    /// # Errors
    /// [`CoreError::NanScore`] naming the first NaN score.
    pub fn from_benign_scores(
        source: impl Into<String>,
        benign_scores: &[f32],
    ) -> Result<Option<ThresholdCalibration>> {
        if let Some(index) = benign_scores.iter().position(|score| score.is_nan()) {
            return Err(CoreError::NanScore { index });
        }
        if benign_scores.is_empty() {
            return Ok(None);
        }
        let mut descending = benign_scores.to_vec();
        descending.sort_unstable_by(|a, b| b.total_cmp(a));
        let thresholds = STANDARD_ALERT_FPRS
            .into_iter()
            .filter_map(|target| calibrate_target(&descending, target))
            .collect();
        Ok(Some(ThresholdCalibration {
            source: source.into(),
            num_benign: descending.len() as u64,
            thresholds,
        }))
    }

    /// Returns the calibrated threshold for `fpr`, one of
    /// [`STANDARD_ALERT_FPRS`] (however written: `1e-2` is `0.01`); `None`
    /// for any other rate, or a target this calibration omitted.
    pub fn threshold_for(&self, fpr: f64) -> Option<&CalibratedThreshold> {
        let target = standard_alert_fpr(fpr)?;
        self.thresholds
            .iter()
            .find(|threshold| threshold.target_fpr == target)
    }
}

/// Returns the threshold for `target` on benign scores sorted from highest
/// to lowest (no NaN), or `None` when the data cannot resolve it.
fn calibrate_target(descending: &[f32], target: f64) -> Option<CalibratedThreshold> {
    let num_benign = descending.len();
    // The small slack keeps products like 100 × 0.29 (28.999…) whole.
    let allowed = num_benign as f64 * target + 1e-9;
    if allowed < 1.0 || target >= 1.0 {
        return None;
    }
    let num_allowed = allowed.floor() as usize; // < num_benign, as target < 1
    let pivot = descending[num_allowed];
    if pivot == f32::INFINITY {
        return None;
    }
    let threshold = pivot.next_up();
    // Scores at or above `threshold` are exactly those above `pivot`.
    let num_benign_alerts = descending.partition_point(|&score| score > pivot);
    Some(CalibratedThreshold {
        target_fpr: target,
        threshold: f64::from(threshold),
        num_benign_alerts: num_benign_alerts as u64,
        realized_fpr: num_benign_alerts as f64 / num_benign as f64,
    })
}

/// Returns the calibration of `weights` on the benign rows (label
/// [`BENIGN`]) of `data`, or `None` when it has none. A dataset read with a
/// schema without a label column marks every row benign, so all of its rows
/// count.
///
/// # Errors
/// If the model cannot score the data (feature count mismatch), or a score is NaN.
pub fn calibrate_model(
    weights: &ModelWeights,
    data: &Dataset,
    source: &str,
) -> Result<Option<ThresholdCalibration>> {
    let scores = score_rows(weights, data.features())?;
    let benign_scores: Vec<f32> = scores
        .iter()
        .zip(data.labels())
        .filter(|&(_, &label)| label == BENIGN)
        .map(|(&score, _)| score)
        .collect();
    ThresholdCalibration::from_benign_scores(source, &benign_scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calibrate(scores: &[f32]) -> ThresholdCalibration {
        ThresholdCalibration::from_benign_scores("test", scores)
            .unwrap()
            .unwrap()
    }

    /// Returns the fraction of `scores` at or above `threshold`, as the detector flags them.
    fn flagged_fraction(scores: &[f32], threshold: f64) -> f64 {
        let flagged = scores
            .iter()
            .filter(|&&score| f64::from(score) >= threshold)
            .count();
        flagged as f64 / scores.len() as f64
    }

    #[test]
    fn thresholds_flag_exactly_the_allowed_benign_rows_of_distinct_scores() {
        // 1,000 distinct scores 0..999 in shuffled order.
        let scores: Vec<f32> = (0..1000).map(|i| ((i * 617) % 1000) as f32).collect();
        let calibration = calibrate(&scores);
        assert_eq!(calibration.num_benign, 1000);
        assert_eq!(calibration.thresholds.len(), 3);
        for (entry, (num_alerts, pivot)) in
            calibration
                .thresholds
                .iter()
                .zip([(1u64, 998.0f32), (10, 989.0), (50, 949.0)])
        {
            assert_eq!(entry.num_benign_alerts, num_alerts);
            assert_eq!(entry.threshold, f64::from(pivot.next_up()));
            assert_eq!(entry.realized_fpr, entry.target_fpr);
            assert_eq!(
                flagged_fraction(&scores, entry.threshold),
                entry.realized_fpr
            );
            // The smallest such threshold: the pivot itself flags one row more.
            assert!(flagged_fraction(&scores, f64::from(pivot)) > entry.target_fpr);
        }
    }

    #[test]
    fn ties_at_the_cut_are_never_split() {
        // 100 rows: 95 at 0.0, then 5 at 7.0; 1% allows one alert, but the
        // top five tie, so none may be flagged.
        let mut scores = vec![0.0f32; 95];
        scores.extend([7.0; 5]);
        let calibration = calibrate(&scores);
        let one_percent = calibration.threshold_for(0.01).unwrap();
        assert_eq!(one_percent.threshold, f64::from(7.0f32.next_up()));
        assert_eq!(one_percent.num_benign_alerts, 0);
        assert_eq!(flagged_fraction(&scores, one_percent.threshold), 0.0);
        // 5% allows five: the pivot (6th highest) is 0.0, so the tie at 7.0 alerts.
        let five_percent = calibration.threshold_for(0.05).unwrap();
        assert_eq!(five_percent.threshold, f64::from(0.0f32.next_up()));
        assert_eq!(five_percent.num_benign_alerts, 5);
        assert_eq!(five_percent.realized_fpr, 0.05);
    }

    #[test]
    fn all_equal_scores_give_no_benign_alert() {
        let scores = vec![0.25f32; 2000];
        let calibration = calibrate(&scores);
        assert_eq!(calibration.thresholds.len(), 3);
        for entry in &calibration.thresholds {
            assert_eq!(entry.threshold, f64::from(0.25f32.next_up()));
            assert_eq!(entry.realized_fpr, 0.0);
        }
    }

    #[test]
    fn targets_a_tiny_set_cannot_resolve_are_omitted() {
        let scores: Vec<f32> = (0..40).map(|i| i as f32).collect();
        let calibration = calibrate(&scores);
        assert_eq!(calibration.num_benign, 40);
        let targets: Vec<f64> = calibration
            .thresholds
            .iter()
            .map(|entry| entry.target_fpr)
            .collect();
        assert_eq!(targets, vec![0.05]);
        assert!(calibration.threshold_for(0.01).is_none());
        // Exactly 1/f rows resolve f: 100 rows give 1%, and 20 give 5%.
        let hundred: Vec<f32> = (0..100).map(|i| i as f32).collect();
        assert_eq!(
            calibrate(&hundred)
                .threshold_for(0.01)
                .unwrap()
                .num_benign_alerts,
            1
        );
        let twenty: Vec<f32> = (0..20).map(|i| i as f32).collect();
        assert!(calibrate(&twenty).threshold_for(0.05).is_some());
        let single = calibrate(&[3.0]);
        assert!(single.thresholds.is_empty());
        assert!(
            ThresholdCalibration::from_benign_scores("test", &[])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_nan_score_is_refused_with_its_index() {
        let error =
            ThresholdCalibration::from_benign_scores("test", &[0.5, 1.0, f32::NAN]).unwrap_err();
        assert!(matches!(error, CoreError::NanScore { index: 2 }), "{error}");
        assert!(error.to_string().contains("score 2 is NaN"));
    }

    #[test]
    fn infinite_scores_rank_highest_and_an_infinite_cut_is_omitted() {
        let mut scores: Vec<f32> = (0..100).map(|i| i as f32).collect();
        scores[0] = f32::INFINITY;
        let calibration = calibrate(&scores);
        // Sorted: inf, 99, 98, …; 1% of 100 allows one alert, the infinite one.
        let one_percent = calibration.threshold_for(0.01).unwrap();
        assert_eq!(one_percent.threshold, f64::from(99.0f32.next_up()));
        assert_eq!(one_percent.num_benign_alerts, 1);
        let all_infinite = calibrate(&[f32::INFINITY; 100]);
        assert!(all_infinite.thresholds.is_empty());
    }

    #[test]
    fn thresholds_grow_as_the_target_rate_falls() {
        let scores: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 5000) as f32 / 50.0)
            .collect();
        let calibration = calibrate(&scores);
        let threshold = |fpr| calibration.threshold_for(fpr).unwrap().threshold;
        assert!(threshold(0.001) >= threshold(0.01));
        assert!(threshold(0.01) >= threshold(0.05));
    }

    #[test]
    fn standard_targets_match_however_they_are_written() {
        let calibration = calibrate(&(0..1000).map(|i| i as f32).collect::<Vec<_>>());
        let one_percent: f64 = "1e-2".parse().unwrap();
        assert_eq!(
            calibration.threshold_for(one_percent).unwrap().target_fpr,
            0.01
        );
        assert_eq!(
            calibration
                .threshold_for(0.010_000_000_001)
                .unwrap()
                .target_fpr,
            0.01
        );
        assert_eq!(standard_alert_fpr(5e-2), Some(0.05));
        assert!(calibration.threshold_for(0.02).is_none());
        assert_eq!(standard_alert_fpr(0.011), None);
    }

    #[test]
    fn a_calibration_survives_json() {
        let calibration = calibrate(&(0..1000).map(|i| i as f32 / 7.0).collect::<Vec<_>>());
        let json = serde_json::to_string(&calibration).unwrap();
        let back: ThresholdCalibration = serde_json::from_str(&json).unwrap();
        assert_eq!(back, calibration);
    }
}
