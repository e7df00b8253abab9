//! The quantities of differential privacy, each checked once, where it is
//! made: [`Epsilon`], [`Delta`], [`SamplingRate`] and [`NoiseMultiplier`].
//!
//! The limits are the same wherever a value enters, a command-line flag, a
//! config file, a participant's report or the accountant:
//!
//! | quantity           | allowed                         |
//! |--------------------|---------------------------------|
//! | ε                  | finite and > 0                  |
//! | δ                  | in (0, [`MAX_DELTA`]]           |
//! | sampling rate q    | in [0, 1]                       |
//! | noise multiplier σ | finite and > 0                  |
//!
//! A spent ε (what a ledger or a report states) may be 0 and is not an
//! [`Epsilon`]: the type is the ε one asks for.

use std::fmt;
use std::str::FromStr;

use crate::error::CoreError;

/// Largest δ accepted anywhere: δ must be far below 1/N to mean anything.
pub const MAX_DELTA: f64 = 0.01;

/// A privacy quantity outside its range, or text that is not a number. The
/// message names the quantity (or the field it came from), the value and the
/// allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RangeError {
    message: String,
}

impl From<RangeError> for CoreError {
    fn from(error: RangeError) -> Self {
        CoreError::InvalidPrivacy(error.message)
    }
}

/// Defines a validated `f64` newtype: `$name::named(field, value)` checks
/// `$is_valid` and reports `"{field} is {value}, must be {$allowed}"`;
/// `$name::new(value)` does the same under `$default_field`; `FromStr`
/// parses a number and checks it.
macro_rules! privacy_unit {
    (
        $(#[$meta:meta])*
        $name:ident, $default_field:literal, allowed: $allowed:expr, valid: |$value:ident| $is_valid:expr
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
        pub struct $name(f64);

        impl $name {
            /// Returns the value if it is in range.
            ///
            /// # Errors
            /// [`CoreError::InvalidPrivacy`] naming the value and the allowed range.
            pub fn new(value: f64) -> Result<Self, CoreError> {
                Ok(Self::named($default_field, value)?)
            }

            /// Returns the value if it is in range; `field` names it in the error
            /// (a config key such as `privacy.delta`, say).
            ///
            /// # Errors
            /// [`RangeError`] naming `field`, the value and the allowed range.
            pub fn named(field: &str, value: f64) -> Result<Self, RangeError> {
                let $value = value;
                if $is_valid {
                    Ok($name(value))
                } else {
                    Err(RangeError {
                        message: format!("{field} is {value}, must be {}", $allowed),
                    })
                }
            }

            /// Returns the number.
            pub fn get(self) -> f64 {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = RangeError;

            /// Parses a number and checks its range (clap's value parser for flags).
            fn from_str(text: &str) -> Result<Self, RangeError> {
                match text.parse::<f64>() {
                    Ok(value) => Self::named($default_field, value),
                    Err(error) => Err(RangeError {
                        message: format!("{} is {text}, not a number: {error}", $default_field),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(formatter)
            }
        }
    };
}

privacy_unit! {
    /// ε of (ε, δ)-differential privacy, as asked for: finite and positive.
    Epsilon, "epsilon", allowed: "finite and positive", valid: |value| value.is_finite() && value > 0.0
}

privacy_unit! {
    /// δ of (ε, δ)-differential privacy: in (0, [`MAX_DELTA`]].
    Delta, "delta", allowed: format!("in (0, {MAX_DELTA}]"), valid: |value| value > 0.0 && value <= MAX_DELTA
}

privacy_unit! {
    /// q: the probability that a record takes part in a Poisson-sampled
    /// step, in [0, 1]. 1 is the plain (non-subsampled) Gaussian mechanism;
    /// 0 releases nothing.
    SamplingRate, "sampling_rate", allowed: "in [0, 1]", valid: |value| (0.0..=1.0).contains(&value)
}

privacy_unit! {
    /// σ: the noise standard deviation divided by the L2 clipping norm;
    /// finite and positive (without noise there is no privacy).
    NoiseMultiplier, "noise_multiplier", allowed: "finite and positive", valid: |value| value.is_finite() && value > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<T: fmt::Debug>(result: Result<T, RangeError>) -> String {
        result.expect_err("out of range").to_string()
    }

    #[test]
    fn epsilon_is_finite_and_positive() {
        for good in [1e-9, 0.5, 3.0, 1e6] {
            assert_eq!(Epsilon::new(good).unwrap().get(), good);
        }
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Epsilon::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            message(Epsilon::named("privacy.epsilon", -3.0)),
            "privacy.epsilon is -3, must be finite and positive"
        );
    }

    #[test]
    fn delta_is_in_zero_to_max_delta_inclusive() {
        for good in [1e-300, 1e-5, MAX_DELTA] {
            assert_eq!(Delta::new(good).unwrap().get(), good);
        }
        for bad in [0.0, -1e-5, 0.010_000_1, 0.5, 1.0, f64::NAN, f64::INFINITY] {
            assert!(Delta::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            message(Delta::named("delta", 1.0)),
            "delta is 1, must be in (0, 0.01]"
        );
    }

    #[test]
    fn sampling_rate_is_in_zero_to_one_inclusive() {
        for good in [0.0, 1e-300, 0.5, 1.0] {
            assert_eq!(SamplingRate::new(good).unwrap().get(), good);
        }
        for bad in [-1e-300, 1.000_000_1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(SamplingRate::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            message(SamplingRate::named("sampling_rate", 1.5)),
            "sampling_rate is 1.5, must be in [0, 1]"
        );
    }

    #[test]
    fn noise_multiplier_is_finite_and_positive() {
        for good in [1e-300, 1.1, 1e4] {
            assert_eq!(NoiseMultiplier::new(good).unwrap().get(), good);
        }
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(NoiseMultiplier::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_convert_to_invalid_privacy_with_the_same_message() {
        match Delta::new(0.5) {
            Err(CoreError::InvalidPrivacy(message)) => {
                assert_eq!(message, "delta is 0.5, must be in (0, 0.01]");
            }
            other => panic!("expected InvalidPrivacy, got {other:?}"),
        }
    }

    #[test]
    fn flags_parse_numbers_and_check_their_range() {
        assert_eq!("1e-5".parse::<Delta>().unwrap().get(), 1e-5);
        assert_eq!("3".parse::<Epsilon>().unwrap().get(), 3.0);
        assert_eq!("0.25".parse::<SamplingRate>().unwrap().get(), 0.25);
        assert_eq!(
            message("-3".parse::<Epsilon>()),
            "epsilon is -3, must be finite and positive"
        );
        assert_eq!(
            message("2".parse::<Delta>()),
            "delta is 2, must be in (0, 0.01]"
        );
        assert!(message("three".parse::<Epsilon>()).starts_with("epsilon is three, not a number"));
    }
}
