//! Mask expansion: a 32-byte seed stretched by ChaCha20 into one u32 word per
//! vector element, added or subtracted modulo 2^32.

use rand::rngs::ChaCha20Rng;
use rand::{Rng, SeedableRng};

/// Whether a mask is added to or subtracted from the vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskSign {
    /// vector += PRG(seed)
    Add,
    /// vector -= PRG(seed)
    Subtract,
}

impl MaskSign {
    /// Returns the opposite sign, which removes a mask applied with `self`.
    pub fn opposite(self) -> MaskSign {
        match self {
            MaskSign::Add => MaskSign::Subtract,
            MaskSign::Subtract => MaskSign::Add,
        }
    }
}

/// Words expanded per ChaCha20 call: 16 KiB, in L1 on current CPUs.
const BLOCK_WORDS: usize = 4096;

/// Adds (or subtracts) the ChaCha20 stream of `seed`, read as little-endian
/// u32 words, to `vector` with wrapping arithmetic. The same seed always gives
/// the same words, so a mask added by a participant is removed exactly by the
/// coordinator.
pub fn apply_mask(vector: &mut [u32], seed: &[u8; 32], sign: MaskSign) {
    apply_mask_at(vector, 0, seed, sign);
}

/// Applies words `first_word..first_word + chunk.len()` of the mask of `seed`
/// to `chunk`: [`apply_mask`] on a window of a longer vector, so that
/// several threads can each take a window.
pub fn apply_mask_at(chunk: &mut [u32], first_word: usize, seed: &[u8; 32], sign: MaskSign) {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    rng.set_word_pos(first_word as u128);
    let vector = chunk;
    let mut block = [0u32; BLOCK_WORDS];
    for chunk in vector.chunks_mut(BLOCK_WORDS) {
        let words = &mut block[..chunk.len()];
        rng.fill_bytes(bytemuck::cast_slice_mut(words));
        match sign {
            MaskSign::Add => {
                for (value, word) in chunk.iter_mut().zip(words.iter()) {
                    *value = value.wrapping_add(u32::from_le(*word));
                }
            }
            MaskSign::Subtract => {
                for (value, word) in chunk.iter_mut().zip(words.iter()) {
                    *value = value.wrapping_sub(u32::from_le(*word));
                }
            }
        }
    }
    zeroize::Zeroize::zeroize(&mut block);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracting_a_mask_removes_it() {
        let original: Vec<u32> = (0..10_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let mut vector = original.clone();
        apply_mask(&mut vector, &[3; 32], MaskSign::Add);
        assert_ne!(vector, original);
        apply_mask(&mut vector, &[3; 32], MaskSign::Subtract);
        assert_eq!(vector, original);
    }

    #[test]
    fn a_mask_applied_window_by_window_equals_the_whole_mask() {
        let mut whole = vec![7u32; 3 * BLOCK_WORDS + 5];
        apply_mask(&mut whole, &[9; 32], MaskSign::Add);
        let mut windows = vec![7u32; 3 * BLOCK_WORDS + 5];
        let mut first_word = 0;
        for window in windows.chunks_mut(1000) {
            let length = window.len();
            apply_mask_at(window, first_word, &[9; 32], MaskSign::Add);
            first_word += length;
        }
        assert_eq!(whole, windows);
    }

    #[test]
    fn the_mask_does_not_depend_on_block_boundaries() {
        let mut long = vec![0u32; BLOCK_WORDS + 10];
        apply_mask(&mut long, &[5; 32], MaskSign::Add);
        let mut short = vec![0u32; 10];
        apply_mask(&mut short, &[5; 32], MaskSign::Add);
        assert_eq!(&long[..10], &short[..]);
        let mut reference = ChaCha20Rng::from_seed([5; 32]);
        let expected: Vec<u32> = (0..BLOCK_WORDS + 10)
            .map(|_| reference.next_u32())
            .collect();
        assert_eq!(long, expected);
    }
}
