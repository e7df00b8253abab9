//! Detection metrics from attack scores and labels.

use serde::Serialize;

use crate::data::BENIGN;

/// Binary detection metrics at a 0.5 threshold, plus threshold-free ROC-AUC.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BinaryMetrics {
    pub num_examples: usize,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Area under the ROC curve; 0.5 when only one class is present.
    pub roc_auc: f64,
}

impl BinaryMetrics {
    /// Returns the metrics of `scores` (probability of attack) against `labels`
    /// (any non-benign label is an attack).
    ///
    /// # Panics
    /// If `scores` and `labels` have different lengths (a caller bug).
    pub fn compute(scores: &[f32], labels: &[u32]) -> BinaryMetrics {
        assert_eq!(scores.len(), labels.len(), "one score per label");
        let (mut true_positives, mut false_positives, mut true_negatives, mut false_negatives) =
            (0usize, 0usize, 0usize, 0usize);
        for (&score, &label) in scores.iter().zip(labels) {
            let predicted_attack = score >= 0.5;
            let is_attack = label != BENIGN;
            match (predicted_attack, is_attack) {
                (true, true) => true_positives += 1,
                (true, false) => false_positives += 1,
                (false, false) => true_negatives += 1,
                (false, true) => false_negatives += 1,
            }
        }
        let ratio = |numerator: usize, denominator: usize| {
            if denominator == 0 {
                0.0
            } else {
                numerator as f64 / denominator as f64
            }
        };
        let precision = ratio(true_positives, true_positives + false_positives);
        let recall = ratio(true_positives, true_positives + false_negatives);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        BinaryMetrics {
            num_examples: scores.len(),
            accuracy: ratio(true_positives + true_negatives, scores.len()),
            precision,
            recall,
            f1,
            roc_auc: roc_auc(scores, labels),
        }
    }
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
    }

    #[test]
    fn tied_scores_count_half() {
        assert!((roc_auc(&[0.5, 0.5], &[1, 0]) - 0.5).abs() < 1e-12);
        assert!((roc_auc(&[0.2, 0.8], &[0, 1]) - 1.0).abs() < 1e-12);
        assert_eq!(roc_auc(&[0.2, 0.8], &[1, 1]), 0.5);
    }
}
