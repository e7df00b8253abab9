//! Exact sampling of the discrete Gaussian `N_Z(0, σ²)` over rationals
//! (C. Canonne, G. Kamath, T. Steinke, "The Discrete Gaussian for
//! Differential Privacy", NeurIPS 2020, <https://arxiv.org/abs/2004.00010>,
//! Algorithms 1–3, as OpenDP implements them).
//!
//! No floating point enters the sampling path: every probability is a ratio
//! of integers, and every coin is a uniform integer compared with a
//! numerator. A float sampler (Box–Muller, then rounding) would leak through
//! its low-order bits (Mironov, CCS 2012), which exact sampling rules out.
//!
//! - [`sample_bernoulli_exp`]: `Bernoulli(exp(−n/d))` (Algorithm 1).
//! - [`sample_discrete_laplace`]: the discrete Laplace `P(x) ∝ exp(−|x|/scale)` (Algorithm 2).
//! - [`DiscreteGaussian`]: the discrete Gaussian by rejection from a discrete
//!   Laplace of scale `t = ⌊σ⌋ + 1` (Algorithm 3, the fast variant of §5.3).

use rand::{CryptoRng, Rng, RngExt};

use crate::error::{CoreError, Result};

/// [`DiscreteGaussian::from_variance`] refuses variances below this one
/// (σ = 0.1): smaller ones quantize nothing and only slow the sampler down.
pub const MIN_DISCRETE_GAUSSIAN_VARIANCE: f64 = 0.01;

/// [`DiscreteGaussian::from_variance`] refuses variances above this one
/// (σ ≈ 1.07e9), so that every intermediate product fits in 128 bits.
pub const MAX_DISCRETE_GAUSSIAN_VARIANCE: f64 = (1u64 << 60) as f64;

/// The rational approximation of a variance `v` is `round(v · 2^k) / 2^k`
/// with the largest `k ≤ 50` such that `v · 2^k ≤ 2^40`.
const VARIANCE_NUMERATOR_TARGET_BITS: i32 = 40;
const MAX_VARIANCE_DENOMINATOR_BITS: i32 = 50;

/// Returns `true` with probability `numerator / denominator` (clamped to 1).
///
/// Assumes `denominator > 0`.
fn sample_bernoulli_fraction<R: Rng + CryptoRng + ?Sized>(
    numerator: u128,
    denominator: u128,
    rng: &mut R,
) -> bool {
    if numerator == 0 {
        return false;
    }
    if numerator >= denominator {
        return true;
    }
    match u64::try_from(denominator) {
        Ok(small_denominator) => u128::from(rng.random_range(0..small_denominator)) < numerator,
        Err(_) => rng.random_range(0..denominator) < numerator,
    }
}

/// Returns `true` with probability `exp(−numerator/denominator)` for a ratio
/// in `[0, 1]` (CKS20 Algorithm 1, first case): draws `A_k ~ Bernoulli(γ/k)`
/// for `k = 1, 2, …` until one fails and returns whether that `k` is odd.
fn sample_bernoulli_exp_at_most_one<R: Rng + CryptoRng + ?Sized>(
    numerator: u128,
    denominator: u128,
    rng: &mut R,
) -> bool {
    let mut k: u128 = 1;
    loop {
        // Bernoulli(γ/k): one draw when γ's denominator times k fits, else the
        // product of the independent Bernoulli(γ) and Bernoulli(1/k).
        let success = match denominator.checked_mul(k) {
            Some(product) => sample_bernoulli_fraction(numerator, product, rng),
            None => {
                sample_bernoulli_fraction(numerator, denominator, rng)
                    && sample_bernoulli_fraction(1, k, rng)
            }
        };
        if !success {
            return k % 2 == 1;
        }
        k += 1;
    }
}

/// Returns `true` with probability `exp(−numerator/denominator)`, exactly
/// (CKS20 Algorithm 1): `exp(−γ) = exp(−1)^⌊γ⌋ · exp(−(γ − ⌊γ⌋))`, each
/// factor an independent coin.
///
/// # Panics
/// If `denominator` is 0.
pub fn sample_bernoulli_exp<R: Rng + CryptoRng + ?Sized>(
    numerator: u128,
    denominator: u128,
    rng: &mut R,
) -> bool {
    assert!(
        denominator > 0,
        "the denominator of exp(-n/d) must be positive"
    );
    let num_whole = numerator / denominator;
    for _ in 0..num_whole {
        if !sample_bernoulli_exp_at_most_one(1, 1, rng) {
            return false;
        }
    }
    sample_bernoulli_exp_at_most_one(numerator % denominator, denominator, rng)
}

/// Returns `true` with probability `exp(−q − r/denominator)` where the
/// whole part `q = quotient_high · 2^128 + quotient_low`.
fn sample_bernoulli_exp_wide<R: Rng + CryptoRng + ?Sized>(
    quotient_high: u128,
    quotient_low: u128,
    remainder: u128,
    denominator: u128,
    rng: &mut R,
) -> bool {
    // Counting down a 256-bit whole part: each step fails with probability
    // 1 − e⁻¹, so the loop ends after a few steps whatever its length.
    let mut high = quotient_high;
    let mut low = quotient_low;
    while high > 0 || low > 0 {
        if !sample_bernoulli_exp_at_most_one(1, 1, rng) {
            return false;
        }
        if low == 0 {
            high -= 1;
            low = u128::MAX;
        } else {
            low -= 1;
        }
    }
    sample_bernoulli_exp_at_most_one(remainder, denominator, rng)
}

/// Returns a sample of the discrete Laplace distribution with scale
/// `scale_num / scale_den`, `P(x) ∝ exp(−|x| · scale_den / scale_num)` over
/// the integers (CKS20 Algorithm 2, with `t = scale_num`, `s = scale_den`).
///
/// # Panics
/// If `scale_num` or `scale_den` is 0.
pub fn sample_discrete_laplace<R: Rng + CryptoRng + ?Sized>(
    scale_num: u64,
    scale_den: u64,
    rng: &mut R,
) -> i64 {
    assert!(
        scale_num > 0 && scale_den > 0,
        "the discrete Laplace scale must be positive"
    );
    loop {
        // X = U + t·V is geometric with success probability 1 − e^(−1/t).
        let remainder = rng.random_range(0..scale_num);
        if !sample_bernoulli_exp(u128::from(remainder), u128::from(scale_num), rng) {
            continue;
        }
        let mut num_whole: u128 = 0;
        while sample_bernoulli_exp_at_most_one(1, 1, rng) {
            num_whole += 1;
        }
        let geometric = u128::from(remainder) + u128::from(scale_num) * num_whole;
        let magnitude = geometric / u128::from(scale_den);
        let negative = rng.random::<bool>();
        if negative && magnitude == 0 {
            // Rejecting −0 keeps 0 from being counted twice.
            continue;
        }
        // A magnitude past i64 has probability below exp(−2^62 / scale).
        let Ok(magnitude) = i64::try_from(magnitude) else {
            continue;
        };
        return if negative { -magnitude } else { magnitude };
    }
}

/// Returns `value²` as a 256-bit number `(high, low)`.
fn square_wide(value: u128) -> (u128, u128) {
    let mask = u128::from(u64::MAX);
    let value_high = value >> 64;
    let value_low = value & mask;
    let low_low = value_low * value_low;
    let high_low = value_high * value_low;
    let high_high = value_high * value_high;
    // value² = high_high·2^128 + high_low·2^65 + low_low.
    let (low, carry) = low_low.overflowing_add(high_low << 65);
    let high = high_high + (high_low >> 63) + u128::from(carry);
    (high, low)
}

/// Returns `((high·2^128 + low) / divisor, remainder)` as
/// `(quotient_high, quotient_low, remainder)`, for `0 < divisor < 2^127`.
fn divide_wide(high: u128, low: u128, divisor: u128) -> (u128, u128, u128) {
    if high == 0 {
        return (0, low / divisor, low % divisor);
    }
    let mut remainder: u128 = 0;
    let mut quotient_high: u128 = 0;
    let mut quotient_low: u128 = 0;
    for bit in (0..256).rev() {
        let next_bit = if bit >= 128 {
            (high >> (bit - 128)) & 1
        } else {
            (low >> bit) & 1
        };
        // remainder < divisor < 2^127, so the shift cannot overflow.
        remainder = (remainder << 1) | next_bit;
        if remainder >= divisor {
            remainder -= divisor;
            if bit >= 128 {
                quotient_high |= 1 << (bit - 128);
            } else {
                quotient_low |= 1 << bit;
            }
        }
    }
    (quotient_high, quotient_low, remainder)
}

/// The discrete Gaussian `N_Z(0, σ²)`: `P(x) ∝ exp(−x²/(2σ²))` over the
/// integers, with `σ² = sigma_squared_num / sigma_squared_den` exactly.
///
/// Its variance is below σ² (and within a relative `e^(−2π²σ²)`-ish of it for
/// σ ≥ 1); it is σ²-subgaussian (CKS20 Corollary 9), and adding it to an
/// integer query of L2 sensitivity Δ is `Δ²/(2σ²)`-zCDP (CKS20 Theorem 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscreteGaussian {
    /// Numerator of σ², positive.
    sigma_squared_num: u128,
    /// Denominator of σ², positive.
    sigma_squared_den: u128,
    /// The Laplace scale `t = ⌊σ⌋ + 1` of the proposal.
    laplace_scale: u64,
    /// `2 · num · den · t²`: the denominator of the rejection exponent.
    rejection_den: u128,
}

impl DiscreteGaussian {
    /// Returns the discrete Gaussian of variance parameter
    /// `sigma_squared_num / sigma_squared_den`.
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] if either is 0 or the parameters are so
    /// large that the sampler's integers could overflow 128 bits.
    pub fn from_rational(sigma_squared_num: u128, sigma_squared_den: u128) -> Result<Self> {
        if sigma_squared_num == 0 || sigma_squared_den == 0 {
            return Err(CoreError::InvalidPrivacy(format!(
                "discrete gaussian variance is {sigma_squared_num}/{sigma_squared_den}, \
                 both must be positive"
            )));
        }
        let too_large = || {
            CoreError::InvalidPrivacy(format!(
                "discrete gaussian variance {sigma_squared_num}/{sigma_squared_den} has too \
                 large a numerator or denominator for 128-bit sampling"
            ))
        };
        let whole = sigma_squared_num / sigma_squared_den;
        let sigma_floor = whole.isqrt();
        let laplace_scale = u64::try_from(sigma_floor + 1).map_err(|_| too_large())?;
        let scale = u128::from(laplace_scale);
        // |y|·t·den must fit for |y| < 2^63: t·den ≤ 2^64.
        let scale_times_den = scale
            .checked_mul(sigma_squared_den)
            .filter(|product| *product <= 1u128 << 64)
            .ok_or_else(too_large)?;
        let rejection_den = sigma_squared_num
            .checked_mul(2)
            .and_then(|value| value.checked_mul(scale_times_den))
            .and_then(|value| value.checked_mul(scale))
            .filter(|value| *value < 1u128 << 127)
            .ok_or_else(too_large)?;
        Ok(DiscreteGaussian {
            sigma_squared_num,
            sigma_squared_den,
            laplace_scale,
            rejection_den,
        })
    }

    /// Returns the discrete Gaussian whose σ² is `variance` rounded to a
    /// dyadic rational: `round(variance · 2^k) / 2^k` with the largest
    /// `k ≤ 50` such that `variance · 2^k ≤ 2^40` (k = 0 above 2^40). The
    /// relative error of σ² is at most 2^−41, far below anything the
    /// accounting resolves; [`Self::variance`] returns the exact value used.
    ///
    /// # Errors
    /// [`CoreError::InvalidPrivacy`] if `variance` is not finite or not in
    /// [[`MIN_DISCRETE_GAUSSIAN_VARIANCE`], [`MAX_DISCRETE_GAUSSIAN_VARIANCE`]].
    pub fn from_variance(variance: f64) -> Result<Self> {
        if !(variance.is_finite()
            && (MIN_DISCRETE_GAUSSIAN_VARIANCE..=MAX_DISCRETE_GAUSSIAN_VARIANCE)
                .contains(&variance))
        {
            return Err(CoreError::InvalidPrivacy(format!(
                "discrete gaussian variance is {variance}, must be finite and in \
                 [{MIN_DISCRETE_GAUSSIAN_VARIANCE}, {MAX_DISCRETE_GAUSSIAN_VARIANCE}]"
            )));
        }
        let mut denominator_bits = 0;
        while denominator_bits < MAX_VARIANCE_DENOMINATOR_BITS
            && variance * 2f64.powi(denominator_bits + 1)
                <= 2f64.powi(VARIANCE_NUMERATOR_TARGET_BITS)
        {
            denominator_bits += 1;
        }
        // Exact: a power of two times a double, rounded to an integer < 2^61.
        let numerator = (variance * 2f64.powi(denominator_bits)).round() as u128;
        Self::from_rational(numerator, 1u128 << denominator_bits)
    }

    /// Returns σ² as a float (the exact rational, rounded once).
    pub fn variance(&self) -> f64 {
        self.sigma_squared_num as f64 / self.sigma_squared_den as f64
    }

    /// Returns σ² as `(numerator, denominator)`.
    pub fn variance_rational(&self) -> (u128, u128) {
        (self.sigma_squared_num, self.sigma_squared_den)
    }

    /// Returns one sample (CKS20 Algorithm 3 with `t = ⌊σ⌋ + 1`): draws
    /// `Y` from the discrete Laplace of scale `t` and accepts it with
    /// probability `exp(−(|Y| − σ²/t)² / (2σ²))`.
    pub fn sample<R: Rng + CryptoRng + ?Sized>(&self, rng: &mut R) -> i64 {
        let scale = u128::from(self.laplace_scale);
        loop {
            let candidate = sample_discrete_laplace(self.laplace_scale, 1, rng);
            let magnitude = u128::from(candidate.unsigned_abs());
            // (|y| − num/(den·t))² / (2·num/den) = (|y|·t·den − num)² / (2·num·den·t²).
            // |y| < 2^63 and t·den ≤ 2^64 (checked at construction): no overflow.
            let shifted =
                (magnitude * scale * self.sigma_squared_den).abs_diff(self.sigma_squared_num);
            let accept = if shifted <= u128::from(u64::MAX) {
                let squared = shifted * shifted;
                sample_bernoulli_exp(squared, self.rejection_den, rng)
            } else {
                let (high, low) = square_wide(shifted);
                let (quotient_high, quotient_low, remainder) =
                    divide_wide(high, low, self.rejection_den);
                sample_bernoulli_exp_wide(
                    quotient_high,
                    quotient_low,
                    remainder,
                    self.rejection_den,
                    rng,
                )
            };
            if accept {
                return candidate;
            }
        }
    }

    /// Fills `out` with independent samples.
    pub fn fill<R: Rng + CryptoRng + ?Sized>(&self, out: &mut [i64], rng: &mut R) {
        for value in out {
            *value = self.sample(rng);
        }
    }

    /// Adds an independent sample to each value, wrapping at 2^64 (which
    /// commutes with the later reduction mod 2^32).
    pub fn add_to<R: Rng + CryptoRng + ?Sized>(&self, values: &mut [i64], rng: &mut R) {
        for value in values {
            *value = value.wrapping_add(self.sample(rng));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_square_and_division_agree_with_narrow_arithmetic() {
        for value in [
            0u128,
            1,
            3,
            u128::from(u64::MAX),
            1 << 70,
            (1 << 100) + 12345,
        ] {
            let (high, low) = square_wide(value);
            if value <= u128::from(u64::MAX) {
                assert_eq!((high, low), (0, value * value));
            }
            let divisor = (1u128 << 90) + 7;
            let (quotient_high, quotient_low, remainder) = divide_wide(high, low, divisor);
            assert!(remainder < divisor);
            // Check q·d + r == value² in 256 bits via value² / divisor ≈ quotient.
            if high == 0 {
                assert_eq!(quotient_low, low / divisor);
            } else {
                let approx = (value as f64).powi(2) / divisor as f64;
                let quotient = quotient_high as f64 * 2f64.powi(128) + quotient_low as f64;
                assert!((quotient / approx - 1.0).abs() < 1e-12);
            }
        }
        // (2^100)² = 2^200: high = 2^72, low = 0.
        assert_eq!(square_wide(1 << 100), (1 << 72, 0));
        // (2^128 − 1)² = 2^256 − 2^129 + 1.
        assert_eq!(square_wide(u128::MAX), (u128::MAX - 1, 1));
    }

    #[test]
    fn wide_bernoulli_exp_matches_exp_of_the_whole_part_plus_remainder() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::ChaCha20Rng::seed_from_u64(5);
        let num_samples = 100_000;
        let denominator = 1u128 << 100;
        for (quotient_low, expected) in [(0u128, (-0.5f64).exp()), (1, (-1.5f64).exp())] {
            let num_successes = (0..num_samples)
                .filter(|_| {
                    sample_bernoulli_exp_wide(
                        0,
                        quotient_low,
                        denominator / 2,
                        denominator,
                        &mut rng,
                    )
                })
                .count();
            let observed = num_successes as f64 / f64::from(num_samples);
            let standard_error = (expected * (1.0 - expected) / f64::from(num_samples)).sqrt();
            assert!(
                (observed - expected).abs() <= 5.0 * standard_error,
                "{observed} vs {expected}"
            );
        }
        assert!(!sample_bernoulli_exp_wide(1, 0, 0, 1, &mut rng));
    }
}
