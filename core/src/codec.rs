//! The wire encoding of model parameters and updates: little-endian IEEE-754
//! float32, split into chunks of whole values.
//!
//! Decoding validates as it goes (alignment, count, finiteness), so a hostile
//! stream is refused at the first bad chunk without buffering the rest.

use bytes::Bytes;

use crate::error::{CoreError, Result};

#[cfg(not(target_endian = "little"))]
compile_error!("fedshield's zero-copy codec assumes a little-endian target");

/// Default number of parameters per chunk: 256 Ki float32 = 1 MiB per message,
/// well under gRPC's 4 MiB default limit and large enough to amortize framing.
pub const DEFAULT_CHUNK_PARAMS: usize = 256 * 1024;

/// Largest chunk accepted from the network, in bytes (4 MiB).
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Returns the parameters' little-endian bytes without copying.
pub fn params_as_le_bytes(params: &[f32]) -> &[u8] {
    bytemuck::cast_slice(params)
}

/// Splits parameters into wire chunks of at most `chunk_params` values each.
pub fn encode_chunks(params: &[f32], chunk_params: usize) -> impl Iterator<Item = Bytes> + '_ {
    params
        .chunks(chunk_params.max(1))
        .map(|chunk| Bytes::copy_from_slice(params_as_le_bytes(chunk)))
}

/// Appends the float32 values encoded in `bytes` to `out`.
///
/// # Errors
/// [`CoreError::MisalignedChunk`] if `bytes` is not a whole number of values.
pub fn decode_f32_le_into(bytes: &[u8], out: &mut Vec<f32>) -> Result<()> {
    if bytes.len() % 4 != 0 {
        return Err(CoreError::MisalignedChunk { num_bytes: bytes.len() });
    }
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|value| f32::from_le_bytes([value[0], value[1], value[2], value[3]])),
    );
    Ok(())
}

/// Collects one update or model from a stream of chunks, validating each chunk
/// as it arrives: whole values only, never more than `expected_params`, all
/// finite. Memory is one vector of `expected_params` values, allocated once.
pub struct ChunkAssembler {
    expected_params: usize,
    values: Vec<f32>,
}

impl ChunkAssembler {
    /// Returns an assembler for exactly `expected_params` values.
    pub fn new(expected_params: usize) -> Self {
        ChunkAssembler {
            expected_params,
            values: Vec::with_capacity(expected_params),
        }
    }

    /// Returns how many values have arrived so far.
    pub fn num_received(&self) -> usize {
        self.values.len()
    }

    /// Decodes and appends one chunk.
    ///
    /// # Errors
    /// [`CoreError::MisalignedChunk`], [`CoreError::ParamCountMismatch`] if the
    /// chunk would overflow the expected count, or [`CoreError::NonFiniteParam`].
    /// On error the assembler must be dropped.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        if chunk.len() % 4 != 0 {
            return Err(CoreError::MisalignedChunk { num_bytes: chunk.len() });
        }
        let num_values = chunk.len() / 4;
        let total = self.values.len() + num_values;
        if total > self.expected_params {
            return Err(CoreError::ParamCountMismatch {
                expected: self.expected_params as u64,
                actual: total as u64,
            });
        }
        let start = self.values.len();
        decode_f32_le_into(chunk, &mut self.values)?;
        check_finite(&self.values[start..], start as u64)
    }

    /// Returns the values once all have arrived.
    ///
    /// # Errors
    /// [`CoreError::ParamCountMismatch`] if the stream ended early.
    pub fn finish(self) -> Result<Vec<f32>> {
        if self.values.len() != self.expected_params {
            return Err(CoreError::ParamCountMismatch {
                expected: self.expected_params as u64,
                actual: self.values.len() as u64,
            });
        }
        Ok(self.values)
    }
}

/// Checks that every value is finite; `first_index` is the index of `values[0]`
/// in the whole vector, for the error message.
///
/// # Errors
/// [`CoreError::NonFiniteParam`] naming the first bad index.
pub fn check_finite(values: &[f32], first_index: u64) -> Result<()> {
    // A sum-based fast path: any NaN or infinity makes the sum non-finite, and
    // a finite sum of finite values is the common case. Overflow of a finite
    // sum falls back to the exact scan.
    let sum: f32 = values.iter().sum();
    if sum.is_finite() {
        return Ok(());
    }
    match values.iter().position(|value| !value.is_finite()) {
        Some(position) => Err(CoreError::NonFiniteParam {
            index: first_index + position as u64,
            value: values[position],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble_to_the_original_values() {
        let params: Vec<f32> = (0..1000).map(|i| (i as f32).sin()).collect();
        let mut assembler = ChunkAssembler::new(params.len());
        for chunk in encode_chunks(&params, 64) {
            assembler.push(&chunk).unwrap();
        }
        assert_eq!(assembler.finish().unwrap(), params);
    }

    #[test]
    fn assembler_refuses_misaligned_oversized_short_and_non_finite_input() {
        let mut misaligned = ChunkAssembler::new(4);
        assert!(matches!(misaligned.push(&[0u8; 5]), Err(CoreError::MisalignedChunk { .. })));

        let mut oversized = ChunkAssembler::new(2);
        assert!(matches!(
            oversized.push(params_as_le_bytes(&[1.0, 2.0, 3.0])),
            Err(CoreError::ParamCountMismatch { expected: 2, actual: 3 })
        ));

        let mut short = ChunkAssembler::new(3);
        short.push(params_as_le_bytes(&[1.0])).unwrap();
        assert!(short.finish().is_err());

        let mut non_finite = ChunkAssembler::new(4);
        non_finite.push(params_as_le_bytes(&[1.0, 2.0])).unwrap();
        let error = non_finite.push(params_as_le_bytes(&[f32::NAN, 0.0])).unwrap_err();
        assert!(matches!(error, CoreError::NonFiniteParam { index: 2, .. }));
        let mut infinite = ChunkAssembler::new(1);
        assert!(infinite.push(params_as_le_bytes(&[f32::INFINITY])).is_err());
    }

    #[test]
    fn finite_values_whose_sum_overflows_are_accepted() {
        assert!(check_finite(&[f32::MAX, f32::MAX], 0).is_ok());
    }
}
