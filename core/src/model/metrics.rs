//! Detection metrics from attack scores and labels.

use serde::{Deserialize, Serialize};

use crate::model::data::BENIGN;

/// False-positive rate at which [`BinaryMetrics::detection_rate_at_1pct_fpr`] is measured.
pub const REFERENCE_FPR: f64 = 0.01;

/// Binary detection metrics: threshold metrics at an operating threshold,
/// plus the threshold-free ROC-AUC, PR-AUC and detection rate at 1% FPR.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    pub num_examples: usize,
    pub num_attacks: usize,
    /// Scores at or above it are flagged as attacks.
    pub threshold: f64,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// False-positive rate at the threshold.
    pub false_positive_rate: f64,
    /// Area under the ROC curve; 0.5 when only one class is present.
    pub roc_auc: f64,
    /// Area under the precision-recall curve (average precision).
    pub pr_auc: f64,
    /// Fraction of attacks flagged at the threshold that flags 1% of benign traffic.
    pub detection_rate_at_1pct_fpr: f64,
}

impl BinaryMetrics {
    /// Returns the metrics of `scores` (probability of attack) against `labels`
    /// (any non-benign label is an attack) at threshold 0.5.
    ///
    /// # Panics
    /// If `scores` and `labels` have different lengths (a caller bug).
    pub fn compute(scores: &[f32], labels: &[u32]) -> BinaryMetrics {
        Self::compute_at(scores, labels, 0.5)
    }

    /// Returns the metrics of `scores` against `labels` at `threshold`.
    ///
    /// # Panics
    /// If `scores` and `labels` have different lengths (a caller bug).
    pub fn compute_at(scores: &[f32], labels: &[u32], threshold: f64) -> BinaryMetrics {
        assert_eq!(scores.len(), labels.len(), "one score per label");
        let (mut true_positives, mut false_positives, mut true_negatives, mut false_negatives) =
            (0usize, 0usize, 0usize, 0usize);
        for (&score, &label) in scores.iter().zip(labels) {
            let predicted_attack = f64::from(score) >= threshold;
            let is_attack = label != BENIGN;
            match (predicted_attack, is_attack) {
                (true, true) => true_positives += 1,
                (true, false) => false_positives += 1,
                (false, false) => true_negatives += 1,
                (false, true) => false_negatives += 1,
            }
        }
        let precision = ratio(true_positives, true_positives + false_positives);
        let recall = ratio(true_positives, true_positives + false_negatives);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        let reference = threshold_at_fpr(scores, labels, REFERENCE_FPR);
        BinaryMetrics {
            num_examples: scores.len(),
            num_attacks: true_positives + false_negatives,
            threshold,
            accuracy: ratio(true_positives + true_negatives, scores.len()),
            precision,
            recall,
            f1,
            false_positive_rate: ratio(false_positives, false_positives + true_negatives),
            roc_auc: roc_auc(scores, labels),
            pr_auc: average_precision(scores, labels),
            detection_rate_at_1pct_fpr: reference.map_or(0.0, |threshold| {
                detection_rate_above(scores, labels, threshold)
            }),
        }
    }
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Returns the score threshold `t` such that at most a fraction `fpr` of
/// benign rows score strictly above `t` (the `1 − fpr` quantile of benign
/// scores); `None` without benign rows.
pub fn threshold_at_fpr(scores: &[f32], labels: &[u32], fpr: f64) -> Option<f32> {
    let mut benign: Vec<f32> = scores
        .iter()
        .zip(labels)
        .filter(|&(_, &label)| label == BENIGN)
        .map(|(&score, _)| score)
        .collect();
    if benign.is_empty() {
        return None;
    }
    benign.sort_by(|a, b| b.total_cmp(a));
    let allowed = ((benign.len() as f64) * fpr.clamp(0.0, 1.0)).floor() as usize;
    Some(benign[allowed.min(benign.len() - 1)])
}

/// Returns the fraction of attack rows scoring strictly above `threshold`.
pub fn detection_rate_above(scores: &[f32], labels: &[u32], threshold: f32) -> f64 {
    let (mut detected, mut attacks) = (0usize, 0usize);
    for (&score, &label) in scores.iter().zip(labels) {
        if label != BENIGN {
            attacks += 1;
            if score > threshold {
                detected += 1;
            }
        }
    }
    ratio(detected, attacks)
}

/// Returns the average precision, `Σ (Rₙ − Rₙ₋₁) · Pₙ` over the distinct
/// score thresholds from high to low (as scikit-learn's
/// `average_precision_score`); 0 without attacks.
pub fn average_precision(scores: &[f32], labels: &[u32]) -> f64 {
    let num_positive = labels.iter().filter(|&&label| label != BENIGN).count();
    if num_positive == 0 {
        return 0.0;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut true_positives, mut seen) = (0usize, 0usize);
    let mut previous_recall = 0.0;
    let mut area = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        true_positives += order[start..end]
            .iter()
            .filter(|&&index| labels[index] != BENIGN)
            .count();
        seen += end - start;
        let recall = true_positives as f64 / num_positive as f64;
        let precision = true_positives as f64 / seen as f64;
        area += (recall - previous_recall) * precision;
        previous_recall = recall;
        start = end;
    }
    area
}

/// Detection of one attack type (or the false-positive rate of benign rows).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryMetrics {
    pub category: String,
    pub num_examples: usize,
    /// Fraction flagged at the operating threshold (for benign rows: the
    /// false-positive rate).
    pub flagged_rate: f64,
    /// Fraction flagged at the threshold of 1% false positives.
    pub flagged_rate_at_1pct_fpr: f64,
}

/// Returns per-category flag rates, one entry per distinct category (by
/// `categories[i]`, e.g. raw label values), sorted by name.
pub fn per_category(
    scores: &[f32],
    labels: &[u32],
    categories: &[&str],
    threshold: f64,
) -> Vec<CategoryMetrics> {
    let reference = threshold_at_fpr(scores, labels, REFERENCE_FPR);
    let mut names: Vec<&str> = categories.to_vec();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let (mut count, mut flagged, mut flagged_reference) = (0usize, 0usize, 0usize);
            for (index, &category) in categories.iter().enumerate() {
                if category == name {
                    count += 1;
                    flagged += usize::from(f64::from(scores[index]) >= threshold);
                    flagged_reference +=
                        usize::from(reference.is_some_and(|reference| scores[index] > reference));
                }
            }
            CategoryMetrics {
                category: name.to_string(),
                num_examples: count,
                flagged_rate: ratio(flagged, count),
                flagged_rate_at_1pct_fpr: ratio(flagged_reference, count),
            }
        })
        .collect()
}

/// Returns the area under the ROC curve by the rank-sum (Mann–Whitney U)
/// formula, with tied scores given their average rank; 0.5 if either class is absent.
pub fn roc_auc(scores: &[f32], labels: &[u32]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let num_positive = labels.iter().filter(|&&label| label != BENIGN).count();
    let num_negative = labels.len() - num_positive;
    if num_positive == 0 || num_negative == 0 {
        return 0.5;
    }
    let mut positive_rank_sum = 0.0f64;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start..end (0-based) share the average 1-based rank.
        let average_rank = (start + end + 1) as f64 / 2.0;
        let positives_in_tie = order[start..end]
            .iter()
            .filter(|&&index| labels[index] != BENIGN)
            .count();
        positive_rank_sum += average_rank * positives_in_tie as f64;
        start = end;
    }
    let num_positive = num_positive as f64;
    (positive_rank_sum - num_positive * (num_positive + 1.0) / 2.0)
        / (num_positive * num_negative as f64)
}

/// Returns the metrics of `weights` on `data` (scored by
/// [`crate::model::inference::score_rows`]): classifiers at log-odds 0 (P = 0.5),
/// autoencoders at `threshold` or, without one, at the threshold that flags
/// [`REFERENCE_FPR`] of the data's benign rows.
///
/// # Errors
/// If the model cannot score the data (feature count mismatch).
pub fn evaluate_model(
    weights: &crate::model::weights::ModelWeights,
    data: &crate::model::data::Dataset,
    threshold: Option<f64>,
) -> crate::error::Result<BinaryMetrics> {
    let scores = crate::model::inference::score_rows(weights, data.features())?;
    let threshold = threshold.unwrap_or_else(|| {
        if weights.spec.is_autoencoder() {
            threshold_at_fpr(&scores, data.labels(), REFERENCE_FPR)
                .map_or(f64::INFINITY, |value| f64::from(value).next_up())
        } else {
            crate::model::inference::CLASSIFIER_THRESHOLD
        }
    });
    Ok(BinaryMetrics::compute_at(&scores, data.labels(), threshold))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computed_values() {
        // TP: 0.9, 0.6; FN: 0.4; FP: 0.7; TN: 0.1, 0.2
        let scores = [0.9, 0.6, 0.4, 0.7, 0.1, 0.2];
        let labels = [1, 1, 1, 0, 0, 0];
        let metrics = BinaryMetrics::compute(&scores, &labels);
        assert!((metrics.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert!((metrics.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((metrics.recall - 2.0 / 3.0).abs() < 1e-12);
        // Positive scores 0.9, 0.6, 0.4 vs negatives 0.7, 0.1, 0.2:
        // pairs won = 3 + 2 + 2 = 7 of 9.
        assert!((metrics.roc_auc - 7.0 / 9.0).abs() < 1e-12);
        assert!((metrics.false_positive_rate - 1.0 / 3.0).abs() < 1e-12);
        // Descending: 0.9+ 0.7- 0.6+ 0.4+ ...: AP = 1/3·1 + 1/3·2/3 + 1/3·3/4.
        let expected_ap = (1.0 + 2.0 / 3.0 + 3.0 / 4.0) / 3.0;
        assert!((metrics.pr_auc - expected_ap).abs() < 1e-12);
    }

    #[test]
    fn detection_rate_at_fixed_fpr_uses_the_benign_score_quantile() {
        // 100 benign scores 0.00..0.99, attacks at 0.985, 0.995 and 0.5.
        let mut scores: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let mut labels = vec![0u32; 100];
        scores.extend([0.985, 0.995, 0.5]);
        labels.extend([1, 1, 1]);
        // 1% of 100 benign = 1 allowed above the threshold: the threshold is
        // the second-highest benign score, 0.98.
        assert_eq!(threshold_at_fpr(&scores, &labels, 0.01), Some(0.98));
        assert!((detection_rate_above(&scores, &labels, 0.98) - 2.0 / 3.0).abs() < 1e-12);
        let metrics = BinaryMetrics::compute_at(&scores, &labels, 0.9);
        assert!((metrics.detection_rate_at_1pct_fpr - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn per_category_rates_split_by_category() {
        let scores = [0.9, 0.2, 0.8, 0.1];
        let labels = [1, 1, 1, 0];
        let categories = ["scan", "flood", "scan", "benign"];
        let rates = per_category(&scores, &labels, &categories, 0.5);
        assert_eq!(rates.len(), 3);
        let scan = rates.iter().find(|rate| rate.category == "scan").unwrap();
        assert_eq!((scan.num_examples, scan.flagged_rate), (2, 1.0));
        let flood = rates.iter().find(|rate| rate.category == "flood").unwrap();
        assert_eq!(flood.flagged_rate, 0.0);
    }

    #[test]
    fn tied_scores_count_half() {
        assert!((roc_auc(&[0.5, 0.5], &[1, 0]) - 0.5).abs() < 1e-12);
        assert!((roc_auc(&[0.2, 0.8], &[0, 1]) - 1.0).abs() < 1e-12);
        assert_eq!(roc_auc(&[0.2, 0.8], &[1, 1]), 0.5);
    }
}
