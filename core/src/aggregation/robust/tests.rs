//! Tests of the robust rules: each rule on small examples, against naive
//! references, at the float32 limits, and their parsing and checks.

use proptest::prelude::*;

use super::trimmed_mean::trim_count;
use super::*;
use crate::aggregation::kernels::{
    BLOCK_COORDS, MIN_COORDS_PER_THREAD, coordinate_wise, sorting_network,
};

fn aggregate(rule: &AggregationRule, base: &[f32], updates: &[(&[f32], f64)]) -> AggregateOutcome {
    let mut aggregator = RobustAggregator::new(rule, base.len()).unwrap();
    for (delta, weight) in updates {
        aggregator.add(delta.to_vec(), *weight).unwrap();
    }
    aggregator.finish(base).unwrap()
}

fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len());
    for (index, (actual_value, expected_value)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (actual_value - expected_value).abs() <= tolerance,
            "coordinate {index}: {actual_value} vs {expected_value} (actual {actual:?}, expected {expected:?})"
        );
    }
}

/// Five updates of three parameters; per coordinate the extremes are
/// 1 and 100, −100 and 40, −3 and 5.
const FIVE_UPDATES: [[f32; 3]; 5] = [
    [1.0, 10.0, -3.0],
    [2.0, 20.0, 0.0],
    [3.0, -100.0, 1.0],
    [4.0, 30.0, 2.0],
    [100.0, 40.0, 5.0],
];

fn five_updates() -> Vec<(&'static [f32], f64)> {
    // Very different weights: the coordinate-wise rules must ignore them.
    FIVE_UPDATES
        .iter()
        .zip([1.0, 1000.0, 3.0, 0.5, 7.0])
        .map(|(delta, weight)| (delta.as_slice(), weight))
        .collect()
}

#[test]
fn trimmed_mean_drops_the_largest_and_smallest_value_of_each_coordinate() {
    let rule = AggregationRule::TrimmedMean { trim_fraction: 0.2 };
    let outcome = aggregate(&rule, &[1.0, 1.0, 1.0], &five_updates());
    // ⌊0.2·5⌋ = 1 per side: mean(2,3,4) = 3, mean(10,20,30) = 20, mean(0,1,2) = 1.
    assert_eq!(outcome.params, vec![4.0, 21.0, 2.0]);
    assert_eq!(outcome.num_updates, 5);
    assert_eq!(outcome.num_clipped, 0);
    assert!(outcome.rejected.is_empty());
}

#[test]
fn sorting_networks_sort_every_input_of_zeros_and_ones() {
    // The 0-1 principle (Knuth, TAOCP vol. 3, §5.3.4): a comparator network
    // sorts every input if it sorts every input of zeros and ones.
    for num_values in 1..=16 {
        let comparators = sorting_network(num_values);
        for pattern in 0u32..(1 << num_values) {
            let mut values: Vec<u32> = (0..num_values).map(|bit| (pattern >> bit) & 1).collect();
            for (lower, upper) in &comparators {
                if values[*upper] < values[*lower] {
                    values.swap(*lower, *upper);
                }
            }
            assert!(
                values.is_sorted(),
                "{num_values} inputs, pattern {pattern:b}"
            );
        }
    }
    assert_eq!(sorting_network(8).len(), 19);
    assert_eq!(sorting_network(32).len(), 191);
}

#[test]
fn trimmed_mean_with_zero_fraction_is_the_unweighted_mean() {
    let rule = AggregationRule::TrimmedMean { trim_fraction: 0.0 };
    let outcome = aggregate(&rule, &[0.0, 0.0, 0.0], &five_updates());
    assert_close(&outcome.params, &[22.0, 0.0, 1.0], 1e-5);
}

#[test]
fn median_of_an_odd_number_of_updates_is_the_middle_value() {
    let outcome = aggregate(&AggregationRule::Median, &[0.0, -1.0, 0.5], &five_updates());
    assert_eq!(outcome.params, vec![3.0, 19.0, 1.5]);
}

#[test]
fn median_of_an_even_number_of_updates_is_the_mean_of_the_two_middle_values() {
    let updates: [(&[f32], f64); 4] = [
        (&[1.0, 5.0], 1.0),
        (&[2.0, -1.0], 2.0),
        (&[10.0, 3.0], 3.0),
        (&[4.0, 0.0], 4.0),
    ];
    let outcome = aggregate(&AggregationRule::Median, &[0.0, 0.0], &updates);
    // Sorted: 1 2 | 4 10 → 3; −1 0 | 3 5 → 1.5.
    assert_eq!(outcome.params, vec![3.0, 1.5]);
}

#[test]
fn norm_bounding_scales_large_updates_down_and_leaves_small_ones_untouched() {
    let rule = AggregationRule::NormBounded { max_norm: 5.0 };
    let mut aggregator = RobustAggregator::new(&rule, 2).unwrap();
    // Norm 10 → scaled to norm 5; the buffer comes back clipped, for reuse.
    let clipped = aggregator.add(vec![6.0, 8.0], 1.0).unwrap();
    assert_close(&clipped.unwrap(), &[3.0, 4.0], 1e-6);
    // Norm 0.5 → unchanged.
    let untouched = aggregator.add(vec![0.3, 0.4], 3.0).unwrap();
    assert_eq!(untouched, Some(vec![0.3, 0.4]));
    let outcome = aggregator.finish(&[1.0, 1.0]).unwrap();
    // (1·[3, 4] + 3·[0.3, 0.4]) / 4 = [0.975, 1.3]
    assert_close(&outcome.params, &[1.975, 2.3], 1e-6);
    assert_eq!(outcome.num_updates, 2);
    assert_eq!(outcome.num_clipped, 1);
    assert!(outcome.rejected.is_empty());
}

#[test]
fn multi_krum_rejects_a_far_outlier_and_averages_the_others() {
    let updates: [(&[f32], f64); 5] = [
        (&[1.0, 1.0, 1.0], 1.0),
        (&[1.1, 0.9, 1.0], 1.0),
        (&[100.0, -100.0, 100.0], 1.0),
        (&[0.9, 1.1, 1.0], 1.0),
        (&[1.0, 1.0, 1.2], 1.0),
    ];
    let rule = AggregationRule::MultiKrum {
        num_byzantine: 1,
        num_selected: None,
    };
    let outcome = aggregate(&rule, &[0.0, 0.0, 0.0], &updates);
    assert_eq!(outcome.rejected, vec![2]);
    assert_eq!(outcome.num_updates, 5);
    assert_close(&outcome.params, &[1.0, 1.0, 1.05], 1e-6);
}

#[test]
fn multi_krum_weights_the_selected_updates_and_honours_num_selected() {
    let updates: [(&[f32], f64); 5] = [
        (&[0.0], 1.0),
        (&[0.1], 3.0),
        (&[50.0], 1.0),
        (&[-0.1], 1.0),
        (&[-40.0], 1.0),
    ];
    // f = 1: scores use the K−f−2 = 2 nearest others. Selecting 2: the
    // lowest scores are 0 (0.01 + 0.01) and 0.1 (0.01 + 0.04), tied with −0.1;
    // the earlier arrival wins the tie.
    let rule = AggregationRule::MultiKrum {
        num_byzantine: 1,
        num_selected: Some(2),
    };
    let outcome = aggregate(&rule, &[1.0], &updates);
    assert_eq!(outcome.rejected, vec![2, 3, 4]);
    // (1·0 + 3·0.1) / 4 = 0.075
    assert_close(&outcome.params, &[1.075], 1e-6);
}

#[test]
fn fedavg_through_the_robust_aggregator_equals_the_streaming_fedavg_bit_for_bit() {
    let num_params = 1000;
    let updates: Vec<(Vec<f32>, f64)> = (0..6)
        .map(|seed| {
            let delta = (0..num_params)
                .map(|index| (((index * 37 + seed * 101) % 997) as f32 - 498.0) * 1e-3)
                .collect();
            (delta, 1.0 + seed as f64 * 13.0)
        })
        .collect();
    let base: Vec<f32> = (0..num_params).map(|index| index as f32 * 1e-2).collect();
    let mut reference = FedAvg::new(num_params);
    let mut robust = RobustAggregator::new(&AggregationRule::FedAvg, num_params).unwrap();
    for (delta, weight) in &updates {
        reference.add(delta, *weight).unwrap();
        let returned = robust.add(delta.clone(), *weight).unwrap();
        assert_eq!(returned.as_ref(), Some(delta));
    }
    let outcome = robust.finish(&base).unwrap();
    assert_eq!(outcome.params, reference.finish(&base).unwrap());
    assert_eq!(outcome.num_updates, 6);
    assert_eq!(outcome.num_clipped, 0);
}

#[test]
fn norm_bounding_with_a_bound_no_update_reaches_equals_fedavg() {
    let updates = five_updates();
    let bounded = aggregate(
        &AggregationRule::NormBounded { max_norm: 1e6 },
        &[0.0; 3],
        &updates,
    );
    let plain = aggregate(&AggregationRule::FedAvg, &[0.0; 3], &updates);
    assert_eq!(bounded.params, plain.params);
    assert_eq!(bounded.num_clipped, 0);
}

/// Returns the rule's result by sorting each coordinate's values, the slow
/// obvious way.
fn naive_coordinate_wise(
    base: &[f32],
    deltas: &[Vec<f32>],
    num_trimmed: Option<usize>,
) -> Vec<f32> {
    let num_updates = deltas.len();
    (0..base.len())
        .map(|coordinate| {
            let mut values: Vec<f64> = deltas
                .iter()
                .map(|delta| f64::from(delta[coordinate]))
                .collect();
            values.sort_by(f64::total_cmp);
            let statistic = match num_trimmed {
                Some(num_trimmed) => {
                    let kept = &values[num_trimmed..num_updates - num_trimmed];
                    kept.iter().sum::<f64>() / kept.len() as f64
                }
                None if num_updates % 2 == 1 => values[num_updates / 2],
                None => (values[num_updates / 2 - 1] + values[num_updates / 2]) / 2.0,
            };
            base[coordinate] + statistic as f32
        })
        .collect()
}

#[test]
fn coordinate_wise_rules_match_a_naive_reference_for_every_update_count_up_to_40() {
    let num_params = BLOCK_COORDS + 37;
    let base: Vec<f32> = (0..num_params).map(|index| (index % 5) as f32).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next_value = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // Few distinct values, so ties (and ±0) are common.
        ((state >> 33) % 41) as f32 * 0.25 - 5.0
    };
    for num_updates in 1..=40 {
        let deltas: Vec<Vec<f32>> = (0..num_updates)
            .map(|_| (0..num_params).map(|_| next_value()).collect())
            .collect();
        let trim_counts = [
            0,
            trim_count(0.2, num_updates),
            trim_count(0.45, num_updates),
        ];
        for num_trimmed in trim_counts {
            assert_close(
                &coordinate_wise(&base, &deltas, num_trimmed),
                &naive_coordinate_wise(&base, &deltas, Some(num_trimmed)),
                1e-5,
            );
        }
        assert_close(
            &coordinate_wise(&base, &deltas, (num_updates - 1) / 2),
            &naive_coordinate_wise(&base, &deltas, None),
            1e-5,
        );
    }
}

#[test]
fn large_models_match_a_naive_reference_across_blocks_and_threads() {
    // Enough coordinates for several threads and a partial last block.
    let num_params = 2 * MIN_COORDS_PER_THREAD + 3 * BLOCK_COORDS + 17;
    let num_updates = 6;
    let deltas: Vec<Vec<f32>> = (0..num_updates)
        .map(|seed| {
            (0..num_params)
                .map(|index| (((index * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) * 1e-3)
                .collect()
        })
        .collect();
    let base: Vec<f32> = (0..num_params).map(|index| (index % 13) as f32).collect();
    let run = |rule: &AggregationRule| {
        let mut aggregator = RobustAggregator::new(rule, num_params).unwrap();
        for delta in &deltas {
            aggregator.add(delta.clone(), 2.0).unwrap();
        }
        aggregator.finish(&base).unwrap()
    };

    let trimmed = run(&AggregationRule::TrimmedMean {
        trim_fraction: 0.34,
    });
    assert_close(
        &trimmed.params,
        &naive_coordinate_wise(&base, &deltas, Some(2)),
        1e-5,
    );
    let median = run(&AggregationRule::Median);
    assert_close(
        &median.params,
        &naive_coordinate_wise(&base, &deltas, None),
        1e-5,
    );

    // f = 1, m = K − f = 5: one update rejected, the result is the mean of the rest.
    let krum = run(&AggregationRule::MultiKrum {
        num_byzantine: 1,
        num_selected: None,
    });
    assert_eq!(krum.rejected.len(), 1);
    let selected: Vec<Vec<f32>> = (0..num_updates)
        .filter(|index| !krum.rejected.contains(index))
        .map(|index| deltas[index].clone())
        .collect();
    let mut reference = FedAvg::new(num_params);
    for delta in &selected {
        reference.add(delta, 1.0).unwrap();
    }
    assert_close(&krum.params, &reference.finish(&base).unwrap(), 1e-5);
    // The rejected update is the one with the largest score, computed naively.
    let distance = |left: &[f32], right: &[f32]| -> f64 {
        left.iter()
            .zip(right)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum()
    };
    let scores: Vec<f64> = (0..num_updates)
        .map(|index| {
            let mut others: Vec<f64> = (0..num_updates)
                .filter(|other| *other != index)
                .map(|other| distance(&deltas[index], &deltas[other]))
                .collect();
            others.sort_by(f64::total_cmp);
            others[..num_updates - 3].iter().sum()
        })
        .collect();
    let worst = (0..num_updates)
        .max_by(|left, right| scores[*left].total_cmp(&scores[*right]))
        .unwrap();
    assert_eq!(krum.rejected, vec![worst]);
}

fn all_rules() -> Vec<AggregationRule> {
    vec![
        AggregationRule::FedAvg,
        AggregationRule::NormBounded { max_norm: 5.0 },
        AggregationRule::NormBounded { max_norm: 0.125 },
        AggregationRule::TrimmedMean { trim_fraction: 0.2 },
        AggregationRule::TrimmedMean { trim_fraction: 0.0 },
        AggregationRule::Median,
        AggregationRule::MultiKrum {
            num_byzantine: 1,
            num_selected: None,
        },
        AggregationRule::MultiKrum {
            num_byzantine: 1,
            num_selected: Some(3),
        },
    ]
}

/// Five updates of three parameters: three colluders at the float32
/// limits with enormous weights, two honest ones.
fn updates_at_the_float32_limits() -> Vec<(Vec<f32>, f64)> {
    vec![
        (vec![0.01, -0.02, 0.03], 1500.0),
        (vec![f32::MAX, -f32::MAX, f32::MAX], 1e12),
        (vec![f32::MAX, -f32::MAX, -f32::MAX], 1e12),
        (vec![-0.01, 0.02, 0.01], 1200.0),
        (vec![f32::MAX, -f32::MAX, f32::MAX], 1e12),
    ]
}

#[test]
fn no_rule_overflows_on_colluding_updates_at_the_float32_limits_with_huge_weights() {
    for rule in all_rules() {
        let mut aggregator = RobustAggregator::new(&rule, 3).unwrap();
        for (delta, weight) in updates_at_the_float32_limits() {
            aggregator.add(delta, weight).unwrap();
        }
        let outcome = aggregator.finish(&[0.5, -0.5, 0.0]).unwrap();
        assert!(
            outcome.params.iter().all(|value| value.is_finite()),
            "{rule}: {:?}",
            outcome.params
        );
    }
}

#[test]
fn every_rule_refuses_to_return_an_aggregate_that_overflows_the_base() {
    let base = [0.0f32, 3.0e38, 0.0];
    for rule in all_rules() {
        let mut aggregator = RobustAggregator::new(&rule, 3).unwrap();
        for _ in 0..5 {
            aggregator.add(vec![0.0, 3.0e38, 0.0], 1.0).unwrap();
        }
        match (aggregator.finish(&base), &rule) {
            // A small enough norm bound clips the deltas back into range.
            (Ok(outcome), AggregationRule::NormBounded { .. }) => {
                assert!(outcome.params.iter().all(|value| value.is_finite()));
            }
            (Err(CoreError::NonFiniteAggregate { index, .. }), _) => assert_eq!(index, 1),
            (other, _) => panic!("{rule}: expected a non-finite aggregate, got {other:?}"),
        }
    }
}

#[test]
fn cli_forms_parse_to_rules_and_display_round_trips() {
    let parsed: Vec<AggregationRule> = [
        "fedavg",
        "norm-bound:5.0",
        "norm-bound:0.125",
        "trimmed-mean:0.2",
        "trimmed-mean:0",
        "median",
        "multi-krum:1",
        "multi-krum:1:3",
    ]
    .iter()
    .map(|text| text.parse().unwrap())
    .collect();
    assert_eq!(parsed, all_rules());
    for rule in all_rules() {
        let text = rule.to_string();
        assert_eq!(text.parse::<AggregationRule>().unwrap(), rule, "{text}");
    }
    assert_eq!(AggregationRule::default(), AggregationRule::FedAvg);
    assert_eq!(
        AggregationRule::NormBounded { max_norm: 5.0 }.to_string(),
        "norm-bound:5"
    );
}

#[test]
fn malformed_cli_forms_are_refused_with_the_expected_form() {
    let cases = [
        ("krum:1", "expected one of fedavg"),
        ("", "unknown aggregation rule"),
        ("FedAvg", "unknown aggregation rule"),
        ("fedavg:1", "takes no arguments"),
        ("median:0.5", "takes no arguments"),
        ("norm-bound", "norm-bound:<max_norm>"),
        ("norm-bound:1:2", "norm-bound:<max_norm>"),
        ("norm-bound:abc", "unparsable max_norm \"abc\""),
        (
            "norm-bound:0",
            "max_norm must be positive and finite, got 0",
        ),
        (
            "norm-bound:NaN",
            "max_norm must be positive and finite, got NaN",
        ),
        ("trimmed-mean", "trimmed-mean:<trim_fraction>"),
        (
            "trimmed-mean:0.5",
            "trim_fraction must be in [0, 0.5), got 0.5",
        ),
        ("multi-krum", "multi-krum:<num_byzantine>"),
        ("multi-krum:-1", "unparsable num_byzantine \"-1\""),
        (
            "multi-krum:1:2:3",
            "multi-krum:<num_byzantine>:<num_selected>",
        ),
        ("multi-krum:1:0", "num_selected must be at least 1, got 0"),
    ];
    for (text, expected) in cases {
        let error = text.parse::<AggregationRule>().unwrap_err();
        assert!(
            matches!(error, CoreError::InvalidAggregation(_)),
            "{text}: {error}"
        );
        assert!(error.to_string().contains(expected), "{text}: {error}");
    }
}

#[test]
fn validate_rejects_out_of_range_parameters() {
    let invalid_rules = [
        AggregationRule::NormBounded { max_norm: 0.0 },
        AggregationRule::NormBounded { max_norm: -1.0 },
        AggregationRule::NormBounded { max_norm: f64::NAN },
        AggregationRule::NormBounded {
            max_norm: f64::INFINITY,
        },
        AggregationRule::TrimmedMean { trim_fraction: 0.5 },
        AggregationRule::TrimmedMean { trim_fraction: 0.7 },
        AggregationRule::TrimmedMean {
            trim_fraction: -0.1,
        },
        AggregationRule::TrimmedMean {
            trim_fraction: f64::NAN,
        },
        AggregationRule::MultiKrum {
            num_byzantine: 1,
            num_selected: Some(0),
        },
        AggregationRule::MultiKrum {
            num_byzantine: usize::MAX / 2,
            num_selected: None,
        },
    ];
    for rule in invalid_rules {
        let error = rule.validate().unwrap_err();
        assert!(
            matches!(error, CoreError::InvalidAggregation(_)),
            "{rule:?}"
        );
        assert!(RobustAggregator::new(&rule, 3).is_err(), "{rule:?}");
    }
    for rule in all_rules() {
        rule.validate().unwrap();
    }
}

#[test]
fn min_updates_follows_each_rules_breakdown_condition() {
    let cases = [
        (AggregationRule::FedAvg, 1),
        (AggregationRule::NormBounded { max_norm: 1.0 }, 1),
        (AggregationRule::TrimmedMean { trim_fraction: 0.0 }, 1),
        (AggregationRule::TrimmedMean { trim_fraction: 0.1 }, 10),
        (AggregationRule::TrimmedMean { trim_fraction: 0.2 }, 5),
        (AggregationRule::TrimmedMean { trim_fraction: 0.3 }, 4),
        (
            AggregationRule::TrimmedMean {
                trim_fraction: 0.49,
            },
            3,
        ),
        (AggregationRule::Median, 3),
        (
            AggregationRule::MultiKrum {
                num_byzantine: 1,
                num_selected: None,
            },
            5,
        ),
        (
            AggregationRule::MultiKrum {
                num_byzantine: 2,
                num_selected: Some(9),
            },
            9,
        ),
    ];
    for (rule, expected) in cases {
        assert_eq!(rule.min_updates(), expected, "{rule}");
        assert_eq!(
            rule.is_streaming(),
            matches!(
                rule,
                AggregationRule::FedAvg | AggregationRule::NormBounded { .. }
            )
        );
    }
}

#[test]
fn finishing_with_fewer_updates_than_the_rule_needs_is_refused() {
    let four_updates = &five_updates()[..4];
    let cases = [
        (AggregationRule::TrimmedMean { trim_fraction: 0.2 }, 5),
        (
            AggregationRule::MultiKrum {
                num_byzantine: 1,
                num_selected: None,
            },
            5,
        ),
        (
            AggregationRule::MultiKrum {
                num_byzantine: 0,
                num_selected: Some(6),
            },
            6,
        ),
    ];
    for (rule, expected_required) in cases {
        let mut aggregator = RobustAggregator::new(&rule, 3).unwrap();
        for (delta, weight) in four_updates {
            aggregator.add(delta.to_vec(), *weight).unwrap();
        }
        match aggregator.finish(&[0.0; 3]) {
            Err(CoreError::TooFewUpdates {
                rule: rule_text,
                required,
                actual,
            }) => {
                assert_eq!(rule_text, rule.to_string());
                assert_eq!((required, actual), (expected_required, 4));
            }
            other => panic!("{rule}: expected too few updates, got {other:?}"),
        }
    }
    let mut median = RobustAggregator::new(&AggregationRule::Median, 1).unwrap();
    median.add(vec![1.0], 1.0).unwrap();
    median.add(vec![2.0], 1.0).unwrap();
    let error = median.finish(&[0.0]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "aggregation rule median needs at least 3 updates, got 2"
    );
}

#[test]
fn wrong_length_and_non_finite_updates_are_refused_and_leave_the_aggregator_unchanged() {
    for rule in all_rules() {
        let empty = RobustAggregator::new(&rule, 3).unwrap();
        assert!(matches!(
            empty.finish(&[0.0; 3]),
            Err(CoreError::EmptyAggregate)
        ));
        let mut aggregator = RobustAggregator::new(&rule, 3).unwrap();
        for (delta, weight) in five_updates() {
            aggregator.add(delta.to_vec(), weight).unwrap();
            let refused = [
                (vec![1.0, 2.0], 1.0),
                (vec![1.0, 2.0, 3.0, 4.0], 1.0),
                (vec![1e30, f32::NAN, 1.0], 1.0),
                (vec![1.0, 2.0, f32::INFINITY], 1.0),
                (vec![f32::NEG_INFINITY, 0.0, 0.0], 1.0),
                (vec![1.0, 2.0, 3.0], 0.0),
                (vec![1.0, 2.0, 3.0], -1.0),
                (vec![1.0, 2.0, 3.0], f64::NAN),
                (vec![1.0, 2.0, 3.0], f64::INFINITY),
            ];
            let num_before = aggregator.num_updates();
            for (bad_delta, bad_weight) in refused {
                let error = aggregator.add(bad_delta.clone(), bad_weight).unwrap_err();
                assert!(
                    matches!(
                        error,
                        CoreError::ParamCountMismatch { .. }
                            | CoreError::NonFiniteParam { .. }
                            | CoreError::InvalidWeight(_)
                    ),
                    "{rule}: {bad_delta:?} {bad_weight}: {error}"
                );
            }
            assert_eq!(aggregator.num_updates(), num_before, "{rule}");
        }
        let with_refusals = aggregator.finish(&[0.0; 3]).unwrap();
        assert_eq!(
            with_refusals,
            aggregate(&rule, &[0.0; 3], &five_updates()),
            "{rule}"
        );
    }
}

#[test]
fn non_finite_values_are_reported_with_their_index() {
    let mut aggregator = RobustAggregator::new(&AggregationRule::Median, 20).unwrap();
    let mut delta = vec![0.5f32; 20];
    delta[13] = f32::NAN;
    delta[17] = f32::INFINITY;
    match aggregator.add(delta, 1.0) {
        Err(CoreError::NonFiniteParam { index, value }) => {
            assert_eq!(index, 13);
            assert!(value.is_nan());
        }
        other => panic!("expected a non-finite parameter, got {other:?}"),
    }
    let base_error = {
        let mut aggregator = RobustAggregator::new(&AggregationRule::FedAvg, 2).unwrap();
        aggregator.add(vec![1.0, 1.0], 1.0).unwrap();
        aggregator.finish(&[0.0]).unwrap_err()
    };
    assert!(matches!(
        base_error,
        CoreError::ParamCountMismatch {
            expected: 2,
            actual: 1
        }
    ));
}

#[test]
fn rules_deserialize_from_tagged_tables_and_refuse_unknown_fields() {
    for rule in all_rules() {
        let json = serde_json::to_string(&rule).unwrap();
        assert_eq!(
            serde_json::from_str::<AggregationRule>(&json).unwrap(),
            rule,
            "{json}"
        );
    }
    let krum: AggregationRule =
        serde_json::from_str(r#"{"rule": "multi-krum", "num_byzantine": 2}"#).unwrap();
    assert_eq!(
        krum,
        AggregationRule::MultiKrum {
            num_byzantine: 2,
            num_selected: None
        }
    );
    let norm_bound: AggregationRule =
        serde_json::from_str(r#"{"rule": "norm-bound", "max_norm": 5.0}"#).unwrap();
    assert_eq!(norm_bound, AggregationRule::NormBounded { max_norm: 5.0 });
    assert_eq!(
        serde_json::to_string(&AggregationRule::FedAvg).unwrap(),
        r#"{"rule":"fedavg"}"#
    );
    assert!(
        serde_json::from_str::<AggregationRule>(
            r#"{"rule": "trimmed-mean", "trim_fraction": 0.2, "beta": 0.1}"#
        )
        .is_err()
    );
    assert!(serde_json::from_str::<AggregationRule>(r#"{"rule": "krum"}"#).is_err());
}

/// How the adversaries in the robustness property build their updates.
#[derive(Debug, Clone, Copy)]
enum Attack {
    /// An honest update scaled by 100 (model replacement).
    Scaled,
    /// An honest update negated and scaled by 10.
    SignFlipped,
    /// Noise of magnitude 100 to 1000 per coordinate.
    HugeNoise,
}

const NUM_ROBUSTNESS_PARAMS: usize = 12;
const NUM_HONEST: usize = 7;

fn honest_round() -> impl Strategy<Value = (Vec<f32>, Vec<Vec<f32>>, Vec<f64>)> {
    (
        // A common direction of magnitude 0.5 to 1 per coordinate.
        proptest::collection::vec(
            (any::<bool>(), 0.5f32..1.0).prop_map(
                |(negative, magnitude)| {
                    if negative { -magnitude } else { magnitude }
                },
            ),
            NUM_ROBUSTNESS_PARAMS,
        ),
        proptest::collection::vec(
            proptest::collection::vec(-0.05f32..0.05, NUM_ROBUSTNESS_PARAMS),
            NUM_HONEST,
        ),
        proptest::collection::vec(1.0f64..10.0, NUM_HONEST),
    )
        .prop_map(|(center, noises, weights)| {
            let honest = noises
                .iter()
                .map(|noise| center.iter().zip(noise).map(|(c, n)| c + n).collect())
                .collect();
            (center, honest, weights)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn robust_rules_stay_near_the_honest_mean_while_fedavg_is_pulled_away(
        (_center, honest, honest_weights) in honest_round(),
        attack in prop_oneof![Just(Attack::Scaled), Just(Attack::SignFlipped), Just(Attack::HugeNoise)],
        num_adversaries in 1usize..=2,
        noise in proptest::collection::vec(
            proptest::collection::vec((any::<bool>(), 100.0f32..1000.0), NUM_ROBUSTNESS_PARAMS),
            2,
        ),
        insert_at in 0usize..=NUM_HONEST,
    ) {
        let adversarial: Vec<Vec<f32>> = (0..num_adversaries)
            .map(|adversary| match attack {
                Attack::Scaled => honest[adversary].iter().map(|value| value * 100.0).collect(),
                Attack::SignFlipped => honest[adversary].iter().map(|value| value * -10.0).collect(),
                Attack::HugeNoise => noise[adversary]
                    .iter()
                    .map(|(negative, magnitude)| if *negative { -magnitude } else { *magnitude })
                    .collect(),
            })
            .collect();
        // Adversaries claim the largest weight; they arrive somewhere in the middle.
        let mut updates: Vec<(Vec<f32>, f64)> =
            honest.iter().cloned().zip(honest_weights.iter().copied()).collect();
        for delta in adversarial {
            updates.insert(insert_at.min(updates.len()), (delta, 10.0));
        }
        let honest_mean: Vec<f32> = (0..NUM_ROBUSTNESS_PARAMS)
            .map(|coordinate| honest.iter().map(|delta| delta[coordinate]).sum::<f32>() / NUM_HONEST as f32)
            .collect();
        let base = vec![0.0f32; NUM_ROBUSTNESS_PARAMS];
        let distance_to_honest_mean = |rule: &AggregationRule| -> (f32, f32, AggregateOutcome) {
            let mut aggregator = RobustAggregator::new(rule, NUM_ROBUSTNESS_PARAMS).unwrap();
            for (delta, weight) in &updates {
                aggregator.add(delta.clone(), *weight).unwrap();
            }
            let outcome = aggregator.finish(&base).unwrap();
            let differences = outcome.params.iter().zip(&honest_mean).map(|(a, b)| (a - b).abs());
            let max_abs = differences.clone().fold(0.0f32, f32::max);
            let l2 = differences.map(|difference| difference * difference).sum::<f32>().sqrt();
            (max_abs, l2, outcome)
        };
        // Every honest value lies within 0.05 of the center, so a result
        // inside the honest values' range is within 0.1 of their mean.
        let robust_rules = [
            AggregationRule::TrimmedMean { trim_fraction: 0.3 },
            AggregationRule::Median,
            AggregationRule::MultiKrum { num_byzantine: 2, num_selected: None },
        ];
        for rule in &robust_rules {
            let (max_abs, _, outcome) = distance_to_honest_mean(rule);
            prop_assert!(max_abs <= 0.1 + 1e-5, "{rule}: {max_abs} from the honest mean");
            if let AggregationRule::MultiKrum { .. } = rule {
                let adversary_indices: Vec<usize> =
                    (insert_at.min(NUM_HONEST)..insert_at.min(NUM_HONEST) + num_adversaries).collect();
                prop_assert!(
                    adversary_indices.iter().all(|index| outcome.rejected.contains(index)),
                    "{rule}: rejected {:?}, adversaries {adversary_indices:?}", outcome.rejected
                );
            }
        }
        let (_, fedavg_l2, _) = distance_to_honest_mean(&AggregationRule::FedAvg);
        let honest_spread_l2 = 0.1 * (NUM_ROBUSTNESS_PARAMS as f32).sqrt();
        prop_assert!(
            fedavg_l2 > 3.0 * honest_spread_l2,
            "fedavg is only {fedavg_l2} from the honest mean"
        );
    }
}
