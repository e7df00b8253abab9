//! Shamir secret sharing of 32-byte secrets over GF(2^8), byte by byte.
//!
//! Each of the 32 bytes of the secret is the constant term of its own random
//! polynomial of degree `threshold - 1` over GF(2^8) with the AES reduction
//! polynomial x^8 + x^4 + x^3 + x + 1 (0x11b); share `x` holds the 32
//! evaluations at `x`. Any `threshold` shares give the secret back by Lagrange
//! interpolation at 0; fewer are consistent with every secret (A. Shamir, "How
//! to share a secret", CACM 1979).
//!
//! Multiplication is a fixed sequence of shifts and masks (no table lookups
//! indexed by secret bytes), so its timing does not depend on the data.

use rand::CryptoRng;
use zeroize::Zeroize;

use super::error::{Result, SecAggError};

/// One share of a 32-byte secret: the evaluations at `x` of the 32 byte
/// polynomials. `Debug` shows `x` only.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    /// Evaluation point, 1..=255 (0 would be the secret itself).
    pub x: u8,
    /// The 32 evaluations at `x`, one per secret byte.
    pub y: [u8; 32],
}

impl std::fmt::Debug for Share {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Share")
            .field("x", &self.x)
            .finish_non_exhaustive()
    }
}

/// Returns a·b in GF(2^8) modulo 0x11b, in constant time.
fn gf_mul(a: u8, b: u8) -> u8 {
    let mut product = 0u8;
    let mut multiplicand = a;
    let mut multiplier = b;
    for _ in 0..8 {
        // All ones when the low bit of the multiplier is set, else zero.
        let take = (multiplier & 1).wrapping_neg();
        product ^= multiplicand & take;
        let carry = (multiplicand >> 7).wrapping_neg();
        multiplicand = (multiplicand << 1) ^ (0x1b & carry);
        multiplier >>= 1;
    }
    product
}

/// Returns a^-1 in GF(2^8) as a^254 (0 for 0, which callers never pass).
fn gf_inv(a: u8) -> u8 {
    let mut result = 1u8;
    let mut base = a;
    let mut exponent = 254u8;
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = gf_mul(result, base);
        }
        base = gf_mul(base, base);
        exponent >>= 1;
    }
    result
}

/// Splits `secret` into `num_shares` shares with x = 1..=num_shares, any
/// `threshold` of which reconstruct it.
///
/// # Errors
/// [`SecAggError::InvalidSetup`] unless 1 ≤ threshold ≤ num_shares ≤ 255.
pub fn split<R: CryptoRng + ?Sized>(
    secret: &[u8; 32],
    threshold: usize,
    num_shares: usize,
    rng: &mut R,
) -> Result<Vec<Share>> {
    if threshold == 0 || threshold > num_shares || num_shares > 255 {
        return Err(SecAggError::InvalidSetup(format!(
            "cannot split a secret into {num_shares} shares with threshold {threshold}: need 1 <= threshold <= shares <= 255"
        )));
    }
    // coefficients[k] holds the degree-k coefficients of the 32 polynomials.
    let mut coefficients = vec![[0u8; 32]; threshold];
    coefficients[0] = *secret;
    for coefficient in coefficients.iter_mut().skip(1) {
        rng.fill_bytes(coefficient);
    }
    let shares = (1..=num_shares)
        .map(|x_index| {
            let x = u8::try_from(x_index).expect("num_shares <= 255 was checked");
            let mut y = [0u8; 32];
            // Horner's rule from the highest coefficient down.
            for coefficient in coefficients.iter().rev() {
                for (value, &c) in y.iter_mut().zip(coefficient) {
                    *value = gf_mul(*value, x) ^ c;
                }
            }
            Share { x, y }
        })
        .collect();
    for coefficient in &mut coefficients {
        coefficient.zeroize();
    }
    Ok(shares)
}

/// Reconstructs the secret from at least `threshold` shares with distinct
/// nonzero x (the first `threshold` distinct ones are used).
///
/// # Errors
/// [`SecAggError::Reconstruction`] with fewer than `threshold` distinct
/// shares, a share at x = 0, or two different shares at the same x.
pub fn combine(shares: &[Share], threshold: usize) -> Result<[u8; 32]> {
    if threshold == 0 {
        return Err(SecAggError::Reconstruction(
            "threshold must be at least 1".to_string(),
        ));
    }
    let mut chosen: Vec<&Share> = Vec::with_capacity(threshold);
    for share in shares {
        if share.x == 0 {
            return Err(SecAggError::Reconstruction("a share has x = 0".to_string()));
        }
        match chosen.iter().find(|other| other.x == share.x) {
            Some(other) if other.y != share.y => {
                return Err(SecAggError::Reconstruction(format!(
                    "two different shares have x = {}",
                    share.x
                )));
            }
            Some(_) => {}
            None if chosen.len() < threshold => chosen.push(share),
            None => {}
        }
    }
    if chosen.len() < threshold {
        return Err(SecAggError::Reconstruction(format!(
            "{} distinct shares, {threshold} needed",
            chosen.len()
        )));
    }
    let mut secret = [0u8; 32];
    for (i, share_i) in chosen.iter().enumerate() {
        // Lagrange basis polynomial i at 0: prod_{j != i} x_j / (x_j - x_i);
        // subtraction is xor in characteristic 2.
        let mut numerator = 1u8;
        let mut denominator = 1u8;
        for (j, share_j) in chosen.iter().enumerate() {
            if i != j {
                numerator = gf_mul(numerator, share_j.x);
                denominator = gf_mul(denominator, share_j.x ^ share_i.x);
            }
        }
        let basis_at_zero = gf_mul(numerator, gf_inv(denominator));
        for (byte, &y) in secret.iter_mut().zip(&share_i.y) {
            *byte ^= gf_mul(y, basis_at_zero);
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::ChaCha20Rng;

    use super::*;

    #[test]
    fn multiplication_matches_the_aes_field() {
        // FIPS-197 §4.2: {57} • {83} = {c1}, {57} • {13} = {fe}.
        assert_eq!(gf_mul(0x57, 0x83), 0xc1);
        assert_eq!(gf_mul(0x57, 0x13), 0xfe);
        for a in 1..=255u8 {
            assert_eq!(gf_mul(a, gf_inv(a)), 1, "inverse of {a}");
        }
    }

    proptest! {
        #[test]
        fn any_threshold_subset_reconstructs_the_secret(
            secret in any::<[u8; 32]>(),
            num_shares in 1usize..=12,
            threshold_seed in any::<usize>(),
            subset_seed in any::<u64>(),
            rng_seed in any::<[u8; 32]>(),
        ) {
            let threshold = 1 + threshold_seed % num_shares;
            let mut rng = ChaCha20Rng::from_seed(rng_seed);
            let shares = split(&secret, threshold, num_shares, &mut rng).expect("valid parameters");
            // Pick `threshold` shares by a seeded shuffle.
            let mut order: Vec<usize> = (0..num_shares).collect();
            let mut state = subset_seed;
            for index in (1..order.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let other = usize::try_from(state >> 33).expect("fits") % (index + 1);
                order.swap(index, other);
            }
            let subset: Vec<Share> = order[..threshold].iter().map(|&i| shares[i].clone()).collect();
            prop_assert_eq!(combine(&subset, threshold).expect("enough shares"), secret);
        }
    }

    #[test]
    fn fewer_than_threshold_shares_are_consistent_with_every_secret_byte() {
        let mut rng = ChaCha20Rng::from_seed([11; 32]);
        let secret = [0x42u8; 32];
        for threshold in 2..=5 {
            let shares = split(&secret, threshold, 8, &mut rng).expect("valid parameters");
            let known = &shares[..threshold - 1];
            // Complete the known shares with one more point at an unused x:
            // as its value runs over all 256 bytes, the interpolated secret
            // byte takes every value exactly once, so the known shares rule
            // out no secret.
            let mut seen = [false; 256];
            for candidate in 0..=255u8 {
                let mut completed = known.to_vec();
                completed.push(Share {
                    x: 200,
                    y: [candidate; 32],
                });
                let reconstructed = combine(&completed, threshold).expect("enough shares");
                seen[usize::from(reconstructed[0])] = true;
            }
            assert!(seen.iter().all(|&hit| hit), "threshold {threshold}");
        }
    }

    #[test]
    fn combining_too_few_or_conflicting_shares_is_refused() {
        let mut rng = ChaCha20Rng::from_seed([12; 32]);
        let shares = split(&[7; 32], 3, 5, &mut rng).expect("valid parameters");
        assert!(combine(&shares[..2], 3).is_err());
        let duplicated = vec![shares[0].clone(), shares[0].clone(), shares[1].clone()];
        assert!(combine(&duplicated, 3).is_err());
        let mut conflicting = shares[..3].to_vec();
        conflicting.push(Share {
            x: shares[0].x,
            y: [0; 32],
        });
        conflicting.swap(1, 3);
        assert!(combine(&conflicting, 3).is_err());
        assert!(split(&[0; 32], 0, 5, &mut rng).is_err());
        assert!(split(&[0; 32], 6, 5, &mut rng).is_err());
        assert!(split(&[0; 32], 2, 256, &mut rng).is_err());
    }
}
