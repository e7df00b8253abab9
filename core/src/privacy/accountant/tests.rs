//! Tests of the accountant: values from TF Privacy and closed forms, edge
//! cases, and properties.

use std::time::Instant;

use proptest::prelude::*;

use super::calibration::MIN_CALIBRATED_NOISE_MULTIPLIER;
use super::rdp::{
    LOG_ERFC_ASYMPTOTIC_FROM, log_a_fractional, log_a_integer, log_erfc, log_erfc_asymptotic,
};
use super::*;
use std::f64::consts::LN_2;

const DELTA: f64 = 1e-5;

/// Returns the ε of one run over the default orders.
fn spent(
    sampling_rate: f64,
    noise_multiplier: f64,
    num_steps: u64,
    conversion: Conversion,
) -> PrivacySpent {
    let mut accountant = RdpAccountant::new();
    accountant
        .compose(&SubsampledGaussian {
            sampling_rate,
            noise_multiplier,
            num_steps,
        })
        .expect("the test mechanism is valid");
    accountant
        .epsilon(DELTA, conversion)
        .expect("the test delta is valid")
}

fn assert_relatively_close(actual: f64, expected: f64, tolerance: f64) {
    let error = (actual - expected).abs() / expected.abs().max(f64::MIN_POSITIVE);
    assert!(
        error <= tolerance,
        "{actual} is not within {tolerance} (relative) of {expected}"
    );
}

fn invalid_privacy_message(result: Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(CoreError::InvalidPrivacy(message)) => message,
        other => panic!("expected InvalidPrivacy, got {other:?}"),
    }
}

#[test]
fn default_orders_are_tf_privacys_grid_up_to_1024() {
    let orders = default_orders();
    assert_eq!(orders.len(), 99 + 53 + 4);
    assert_eq!(orders[0], 1.1);
    assert_eq!(orders[9], 2.0);
    assert_eq!(orders[98], 10.9);
    assert_eq!(orders[99], 11.0);
    assert_eq!(orders[151], 63.0);
    assert_eq!(&orders[152..], &[128.0, 256.0, 512.0, 1024.0]);
    assert!(orders.windows(2).all(|pair| pair[0] < pair[1]));
}

#[test]
fn abadi_mnist_example_matches_tf_privacy_with_both_conversions() {
    // Abadi et al. 2016: N = 60,000, lot size 256, σ = 1.1, 60 epochs.
    let sampling_rate = 256.0 / 60_000.0;
    let classic = spent(sampling_rate, 1.1, 14_063, Conversion::Classic);
    let tight = spent(sampling_rate, 1.1, 14_063, Conversion::Tight);
    println!("abadi mnist: classic {classic:?}, tight {tight:?}");
    assert!((classic.epsilon - 3.01).abs() <= 0.03, "{classic:?}");
    assert!((tight.epsilon - 2.60).abs() <= 0.03, "{tight:?}");
    assert!(tight.epsilon < classic.epsilon);
}

#[test]
fn abadi_section_3_1_example_gives_classic_epsilon_1_26() {
    let classic = spent(0.01, 4.0, 10_000, Conversion::Classic);
    let tight = spent(0.01, 4.0, 10_000, Conversion::Tight);
    println!("abadi section 3.1: classic {classic:?}, tight {tight:?}");
    assert!((classic.epsilon - 1.26).abs() <= 0.02, "{classic:?}");
    assert!(tight.epsilon < classic.epsilon);
}

#[test]
fn tf_privacy_reference_rdp_values_are_reproduced() {
    // rdp_accountant_test.py, test_compute_rdp_sequence and _scalar.
    let mut accountant =
        RdpAccountant::with_orders(vec![1.5, 2.5, 5.0, 50.0, 100.0]).expect("valid orders");
    accountant
        .compose(&SubsampledGaussian {
            sampling_rate: 0.01,
            noise_multiplier: 2.5,
            num_steps: 50,
        })
        .expect("valid mechanism");
    let expected = [0.00065, 0.001085, 0.00218075, 0.023846, 167.416307];
    for (actual, expected) in accountant.rdp().iter().zip(expected) {
        assert!((actual - expected).abs() <= 1e-5, "{actual} vs {expected}");
    }

    let mut scalar = RdpAccountant::with_orders(vec![5.0]).expect("valid orders");
    scalar
        .compose(&SubsampledGaussian {
            sampling_rate: 0.1,
            noise_multiplier: 2.0,
            num_steps: 10,
        })
        .expect("valid mechanism");
    assert!(
        (scalar.rdp()[0] - 0.07737).abs() <= 5e-6,
        "{:?}",
        scalar.rdp()
    );
}

#[test]
fn log_a_matches_multi_precision_integration() {
    // ln A_α by mpmath quadrature (TF Privacy's test_compute_log_a_equals_mp
    // cases), computed offline.
    let cases = [
        (1e-6, 0.1, 256.0, 3_260_463.229_297),
        (1e-5, 0.1, 256.1, 3_263_607.039_788),
        (1e-6, 1.0, 27.0, 8.769_511_304_848e-10),
        (1e-4, 1.0, 1.5, 6.442_686_953_837e-9),
        (1e-3, 1.0, 2.0, 1.718_280_352_215e-6),
        (0.01, 10.0, 20.0, 1.912_969_991_284e-4),
        (0.1, 100.0, 20.5, 1.999_181_845_807e-4),
        (0.99, 0.1, 256.0, 3_263_997.427_114),
        (0.999, 100.0, 256.1, 3.260_108_037_973),
    ];
    for (sampling_rate, sigma, order, expected) in cases {
        let mechanism = SubsampledGaussian {
            sampling_rate,
            noise_multiplier: sigma,
            num_steps: 1,
        };
        let log_a = mechanism.rdp_of_one_step(order) * (order - 1.0);
        assert_relatively_close(log_a, expected, 1e-4);
    }
}

#[test]
fn plain_gaussian_rdp_is_order_over_twice_sigma_squared() {
    let sigma = 1.3;
    let num_steps = 700;
    let mut accountant = RdpAccountant::new();
    accountant
        .compose(&SubsampledGaussian {
            sampling_rate: 1.0,
            noise_multiplier: sigma,
            num_steps,
        })
        .expect("valid mechanism");
    for (order, rdp) in accountant.orders().iter().zip(accountant.rdp()) {
        assert_eq!(*rdp, order / (2.0 * sigma * sigma) * num_steps as f64);
    }

    let closed_form_minimum = default_orders()
        .into_iter()
        .map(|order| {
            num_steps as f64 * order / (2.0 * sigma * sigma) + (1.0 / DELTA).ln() / (order - 1.0)
        })
        .fold(f64::INFINITY, f64::min);
    let classic = accountant
        .epsilon(DELTA, Conversion::Classic)
        .expect("valid delta");
    assert_relatively_close(classic.epsilon, closed_form_minimum, 1e-12);
}

#[test]
fn integer_and_fractional_routines_agree_at_an_integer_order() {
    for (sampling_rate, sigma) in [(0.01, 1.1), (256.0 / 60_000.0, 0.7), (0.2, 3.0), (0.5, 1.0)] {
        let integer = log_a_integer(sampling_rate, sigma, 3);
        let fractional = log_a_fractional(sampling_rate, sigma, 3.0);
        assert_relatively_close(fractional, integer, 1e-9);
    }
}

#[test]
fn rdp_is_continuous_around_an_integer_order() {
    let (sampling_rate, sigma) = (0.01, 1.1);
    let rdp_at = |order: f64| log_a_fractional(sampling_rate, sigma, order) / (order - 1.0);
    let at_three = rdp_at(3.0);
    assert_relatively_close(rdp_at(2.9999), at_three, 1e-3);
    assert_relatively_close(rdp_at(3.0001), at_three, 1e-3);
    assert!(rdp_at(2.9999) <= at_three && at_three <= rdp_at(3.0001));
}

#[test]
fn order_two_rdp_matches_its_closed_form_for_small_sampling_rates() {
    // A_2 = 1 + q² (e^{1/σ²} − 1), so ε_RDP(2) = ln(1 + q² (e^{1/σ²} − 1)).
    for (sampling_rate, sigma) in [(1e-3, 5.0), (0.01, 2.0), (0.001, 20.0)] {
        let mechanism = SubsampledGaussian {
            sampling_rate,
            noise_multiplier: sigma,
            num_steps: 1,
        };
        let rdp = mechanism.rdp_of_one_step(2.0);
        let closed_form =
            (sampling_rate * sampling_rate * (1.0 / (sigma * sigma)).exp_m1()).ln_1p();
        assert_relatively_close(rdp, closed_form, 1e-9);
        // ≈ q² times the plain Gaussian's α/(2σ²).
        let small_q_approximation = sampling_rate * sampling_rate * 2.0 / (2.0 * sigma * sigma);
        assert_relatively_close(rdp, small_q_approximation, 0.2);
    }
}

#[test]
fn every_order_is_finite_for_usual_parameters() {
    // q = 0.5 with σ = 1e4 is the slowest series: ~87,000 terms at α = 1.1.
    for sampling_rate in [1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9] {
        for sigma in [0.5, 1.0, 2.0, 10.0, 100.0, 1e4] {
            let mechanism = SubsampledGaussian {
                sampling_rate,
                noise_multiplier: sigma,
                num_steps: 1,
            };
            for order in default_orders() {
                let rdp = mechanism.rdp_of_one_step(order);
                // Below ~1e-16, ln(A_α) is lost to rounding of A_α ≈ 1.
                let resolvable = sampling_rate * sampling_rate / (sigma * sigma) > 1e-12;
                assert!(
                    rdp.is_finite() && rdp >= 0.0 && (rdp > 0.0 || !resolvable),
                    "q {sampling_rate} σ {sigma} α {order}: {rdp}"
                );
            }
        }
    }
}

#[test]
fn log_erfc_is_continuous_where_the_asymptotic_expansion_takes_over() {
    for x in [20.0, 24.0, LOG_ERFC_ASYMPTOTIC_FROM, 26.0] {
        assert_relatively_close(log_erfc_asymptotic(x), libm::erfc(x).ln(), 1e-13);
    }
    // ln erfc(40) by mpmath.
    assert_relatively_close(log_erfc(40.0), -1_604.261_556_653_274, 1e-14);
    assert_eq!(log_erfc(f64::INFINITY), f64::NEG_INFINITY);
    assert_relatively_close(log_erfc(f64::NEG_INFINITY), LN_2, 1e-15);
}

#[test]
fn zero_sampling_rate_or_zero_steps_spend_nothing() {
    let mut accountant = RdpAccountant::new();
    for mechanism in [
        SubsampledGaussian {
            sampling_rate: 0.0,
            noise_multiplier: 1.0,
            num_steps: 1000,
        },
        SubsampledGaussian {
            sampling_rate: 0.5,
            noise_multiplier: 1e-300,
            num_steps: 0,
        },
    ] {
        accountant.compose(&mechanism).expect("valid mechanism");
    }
    assert!(accountant.rdp().iter().all(|rdp| *rdp == 0.0));
    for conversion in [Conversion::Classic, Conversion::Tight] {
        let spent = accountant.epsilon(DELTA, conversion).expect("valid delta");
        assert!(spent.epsilon >= 0.0 && spent.epsilon.is_finite());
    }
    assert_eq!(
        accountant
            .epsilon(DELTA, Conversion::Tight)
            .expect("valid")
            .epsilon,
        0.0
    );
}

#[test]
fn extreme_noise_multipliers_give_a_sound_epsilon() {
    for sigma in [1e-300, 1e-160, 1e-5] {
        let tight = spent(0.01, sigma, 10, Conversion::Tight);
        assert!(tight.epsilon > 100.0, "σ = {sigma}: {tight:?}");
    }
    let no_noise_to_speak_of = spent(1.0, 1e-300, 1, Conversion::Classic);
    assert_eq!(no_noise_to_speak_of.epsilon, f64::INFINITY);
    let lots_of_noise = spent(0.5, 1e6, 1_000_000, Conversion::Tight);
    assert!(lots_of_noise.epsilon < 0.1, "{lots_of_noise:?}");
}

#[test]
fn bad_inputs_are_refused_with_the_field_named() {
    let valid = SubsampledGaussian {
        sampling_rate: 0.01,
        noise_multiplier: 1.0,
        num_steps: 10,
    };
    let message = invalid_privacy_message(
        SubsampledGaussian {
            sampling_rate: 1.5,
            ..valid
        }
        .validate(),
    );
    assert_eq!(message, "sampling_rate is 1.5, must be in [0, 1]");
    let message = invalid_privacy_message(
        SubsampledGaussian {
            noise_multiplier: 0.0,
            ..valid
        }
        .validate(),
    );
    assert_eq!(
        message,
        "noise_multiplier is 0, must be finite and positive"
    );
    let message = invalid_privacy_message(
        SubsampledGaussian {
            noise_multiplier: f64::NAN,
            ..valid
        }
        .validate(),
    );
    assert_eq!(
        message,
        "noise_multiplier is NaN, must be finite and positive"
    );
    let message = invalid_privacy_message(epsilon(
        &SubsampledGaussian {
            sampling_rate: f64::NAN,
            ..valid
        },
        DELTA,
    ));
    assert!(message.starts_with("sampling_rate is NaN"), "{message}");

    let accountant = RdpAccountant::new();
    for bad_delta in [0.0, 1.0, f64::NAN, -1e-5] {
        let message = invalid_privacy_message(accountant.epsilon(bad_delta, Conversion::Tight));
        assert!(message.starts_with("delta is "), "{message}");
    }
    assert_eq!(
        invalid_privacy_message(epsilon(&valid, 0.0)),
        "delta is 0, must be in (0, 0.01]"
    );
    assert_eq!(
        invalid_privacy_message(epsilon(&valid, 1.0)),
        "delta is 1, must be in (0, 0.01]"
    );

    let message = invalid_privacy_message(calibrate_noise_multiplier(0.01, 100, -1.0, DELTA));
    assert_eq!(message, "target_epsilon is -1, must be finite and positive");
    for bad_target in [0.0, f64::NAN, f64::INFINITY] {
        let message =
            invalid_privacy_message(calibrate_noise_multiplier(0.01, 100, bad_target, DELTA));
        assert!(message.starts_with("target_epsilon is "), "{message}");
    }
    let message = invalid_privacy_message(calibrate_noise_multiplier(1.5, 100, 1.0, DELTA));
    assert!(message.starts_with("sampling_rate is 1.5"), "{message}");
    let message = invalid_privacy_message(calibrate_noise_multiplier(0.01, 100, 1.0, 0.0));
    assert!(message.starts_with("delta is 0"), "{message}");
    let message = invalid_privacy_message(calibrate_noise_multiplier(1.0, 1_000_000, 1e-6, DELTA));
    assert!(message.contains("target_epsilon is 0.000001"), "{message}");

    for bad_orders in [
        vec![],
        vec![2.0, 1.0],
        vec![0.5],
        vec![f64::NAN],
        vec![f64::INFINITY],
    ] {
        let message = invalid_privacy_message(RdpAccountant::with_orders(bad_orders));
        assert!(message.starts_with("order"), "{message}");
    }
}

#[test]
fn calibration_meets_the_abadi_mnist_epsilon_with_sigma_near_1_1() {
    let sampling_rate = 256.0 / 60_000.0;
    let target = spent(sampling_rate, 1.1, 14_063, Conversion::Tight).epsilon;
    let sigma =
        calibrate_noise_multiplier(sampling_rate, 14_063, target, DELTA).expect("reachable");
    assert!((1.1..=1.1 * (1.0 + 1e-4)).contains(&sigma), "σ = {sigma}");
}

#[test]
fn calibration_returns_the_floor_when_nothing_is_spent() {
    let sigma = calibrate_noise_multiplier(0.0, 100, 1.0, DELTA).expect("reachable");
    assert_eq!(sigma, MIN_CALIBRATED_NOISE_MULTIPLIER);
    let sigma = calibrate_noise_multiplier(0.3, 0, 1.0, DELTA).expect("reachable");
    assert_eq!(sigma, MIN_CALIBRATED_NOISE_MULTIPLIER);
}

/// Prints the cost of one ε and one calibration; run with
/// `cargo test --release -p fedshield-core accountant -- --ignored --nocapture`.
#[test]
#[ignore = "timing report, run in release"]
fn timing_of_one_epsilon_and_one_calibration() {
    let mechanism = SubsampledGaussian {
        sampling_rate: 256.0 / 60_000.0,
        noise_multiplier: 1.1,
        num_steps: 14_063,
    };
    let num_repeats = 100;
    let started = Instant::now();
    for _ in 0..num_repeats {
        std::hint::black_box(epsilon(std::hint::black_box(&mechanism), DELTA).expect("valid"));
    }
    let per_epsilon = started.elapsed() / num_repeats;
    let started = Instant::now();
    let sigma =
        calibrate_noise_multiplier(256.0 / 60_000.0, 14_063, 2.0, DELTA).expect("reachable");
    let calibration = started.elapsed();
    println!("one epsilon: {per_epsilon:?}; one calibration: {calibration:?} (σ = {sigma})");
    for sampling_rate in [0.01, 0.1, 0.5, 0.9] {
        for sigma in [0.5, 1.0, 10.0, 1000.0] {
            let started = Instant::now();
            let tight = epsilon(
                &SubsampledGaussian {
                    sampling_rate,
                    noise_multiplier: sigma,
                    num_steps: 1000,
                },
                DELTA,
            )
            .expect("valid");
            println!(
                "q {sampling_rate} σ {sigma}: ε {tight:.4} in {:?}",
                started.elapsed()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn epsilon_grows_with_steps_and_sampling_rate_and_falls_with_noise(
        sampling_rate in 1e-4..0.3f64,
        sampling_rate_factor in 1.0..3.0f64,
        sigma in 0.5..5.0f64,
        sigma_factor in 1.0..3.0f64,
        num_steps in 1..20_000u64,
        extra_steps in 0..20_000u64,
    ) {
        let base = spent(sampling_rate, sigma, num_steps, Conversion::Tight).epsilon;
        let more_steps = spent(sampling_rate, sigma, num_steps + extra_steps, Conversion::Tight).epsilon;
        let higher_rate = spent(
            (sampling_rate * sampling_rate_factor).min(1.0),
            sigma,
            num_steps,
            Conversion::Tight,
        )
        .epsilon;
        let more_noise = spent(sampling_rate, sigma * sigma_factor, num_steps, Conversion::Tight).epsilon;
        let slack = 1e-9 * (1.0 + base);
        prop_assert!(more_steps >= base - slack, "{more_steps} < {base}");
        prop_assert!(higher_rate >= base - slack, "{higher_rate} < {base}");
        prop_assert!(more_noise <= base + slack, "{more_noise} > {base}");
    }

    #[test]
    fn composing_two_runs_equals_one_run_of_their_summed_steps(
        sampling_rate in 1e-4..1.0f64,
        sigma in 0.3..10.0f64,
        first_steps in 0..50_000u64,
        second_steps in 0..50_000u64,
    ) {
        let run = |num_steps| SubsampledGaussian { sampling_rate, noise_multiplier: sigma, num_steps };
        let mut twice = RdpAccountant::new();
        twice.compose(&run(first_steps)).expect("valid mechanism");
        twice.compose(&run(second_steps)).expect("valid mechanism");
        let mut once = RdpAccountant::new();
        once.compose(&run(first_steps + second_steps)).expect("valid mechanism");
        for (composed, single) in twice.rdp().iter().zip(once.rdp()) {
            prop_assert!((composed - single).abs() <= 1e-12 * single.abs(), "{composed} vs {single}");
        }
        for conversion in [Conversion::Classic, Conversion::Tight] {
            let composed = twice.epsilon(DELTA, conversion).expect("valid delta").epsilon;
            let single = once.epsilon(DELTA, conversion).expect("valid delta").epsilon;
            prop_assert!((composed - single).abs() <= 1e-12 * single.abs(), "{composed} vs {single}");
        }
    }

    #[test]
    fn calibrated_noise_multiplier_meets_the_target_tightly(
        sampling_rate in 1e-3..0.1f64,
        num_steps in 1..5_000u64,
        target_epsilon in 0.5..10.0f64,
    ) {
        let sigma = calibrate_noise_multiplier(sampling_rate, num_steps, target_epsilon, DELTA)
            .expect("reachable target");
        let epsilon_at = |noise_multiplier| {
            epsilon(&SubsampledGaussian { sampling_rate, noise_multiplier, num_steps }, DELTA)
                .expect("valid mechanism")
        };
        prop_assert!(epsilon_at(sigma) <= target_epsilon);
        prop_assert!(epsilon_at(sigma * (1.0 - 1e-3)) > target_epsilon, "σ = {sigma} is not tight");
    }

    #[test]
    fn arbitrary_inputs_never_panic_nor_give_nan(
        sampling_rate in prop_oneof![Just(f64::NAN), Just(0.0), Just(1.0), -1.0..2.0f64, 1e-300..1e-3f64],
        noise_multiplier in prop_oneof![Just(f64::NAN), Just(0.0), Just(f64::INFINITY), 1e-300..1e-3f64, 1e-3..1e6f64],
        num_steps in prop_oneof![Just(0u64), Just(u64::MAX), 1..1_000_000u64],
        delta in prop_oneof![Just(f64::NAN), -1.0..2.0f64, 1e-300..1e-3f64],
    ) {
        let mechanism = SubsampledGaussian { sampling_rate, noise_multiplier, num_steps };
        let mut accountant = RdpAccountant::new();
        if accountant.compose(&mechanism).is_ok() {
            prop_assert!(accountant.rdp().iter().all(|rdp| *rdp >= 0.0));
            for conversion in [Conversion::Classic, Conversion::Tight] {
                if let Ok(spent) = accountant.epsilon(delta, conversion) {
                    prop_assert!(spent.epsilon >= 0.0, "{spent:?}");
                }
            }
        }
    }
}
